//! ffrtmp's pure core: the parts of the system that are plain Rust over
//! plain data — the job model, validation of submissions, the job state
//! machine, the scheduling decisions, retry and lease rules, FFmpeg argv
//! building and `-progress` parsing, energy attribution, the efficiency
//! report and experiment matrices.
//!
//! **Architecture invariant:** nothing here depends on tokio, sled, nix,
//! cgroups or NVML (Cargo enforces it: they are not dependencies), spawns a
//! task or reads a clock inside a decision: time is passed in as data. The
//! edges that touch the operating system are `ffrtmp-os` (store, outbox,
//! cgroups, confinement, power sources, probes) and `ffrtmp-spawn`
//! (starting FFmpeg, all of the project's `unsafe`).
#![forbid(unsafe_code)]

pub mod encoders;
pub mod energy;
pub mod error;
pub mod experiment;
pub mod ffmpeg;
pub mod go_compat;
pub mod lease;
pub mod model;
pub mod quality;
pub mod report;
pub mod retry;
pub mod sched;
pub mod scheduler;
pub mod spec;
pub mod state;
pub mod supervision;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod wire;
pub mod worker;
