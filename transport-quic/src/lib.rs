//! ffrtmp's QUIC transport. No actors: the actors crate turns a connection
//! into a link (frames in, frames out).
//!
//! - [`pki`]: the cluster CA, node certificates, join tokens, files on disk.
pub mod pki;
