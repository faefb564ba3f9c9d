//! ffrtmp's runtime: the parts of the system that are plain Rust over plain
//! data (job model, validation, state machine, scheduling core, retry policy,
//! FFmpeg argv building and progress parsing) and the edges that touch the OS
//! without any actor (process control, cgroups, the sled store).
//!
//! Nothing in this crate spawns an actor or reads a clock inside a decision:
//! time is passed in as data.

pub mod cgroup;
pub mod confine;
pub mod encoders;
pub mod energy;
pub mod error;
pub mod experiment;
pub mod ffmpeg;
pub mod lease;
pub mod model;
pub mod outbox;
pub mod process;
pub mod quality;
pub mod report;
pub mod retry;
pub mod sched;
pub mod scheduler;
pub mod seed;
pub mod sidefile;
pub mod spec;
pub mod state;
pub mod store;
pub mod supervision;
pub mod wire;
pub mod worker;
