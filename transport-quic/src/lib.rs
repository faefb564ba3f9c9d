//! ffrtmp's QUIC transport. No actors: the actors crate turns a connection
//! into a link (frames in, frames out).
//!
//! - [`pki`]: the cluster CA, node certificates, join tokens, files on disk.
//! - [`tls`]: rustls configs (ring provider only, TLS 1.3, mutual TLS, ALPN).
//! - [`frame`]: length-prefixed frames with a maximum size.
//! - [`endpoint`]: quinn endpoints, liveness timers, stable reset keys, and
//!   the versioned handshake.
//! - [`join`]: a token and a CSR in, a node certificate out.
//! - [`bridge`]: a handshaken link as two channels of frames.

// Lints of issue 17 point 5, here until they become workspace lints in the
// root Cargo.toml. This crate has no `unsafe`; tests may unwrap.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod endpoint;
pub mod frame;
pub mod join;
pub mod pki;
pub mod tls;
