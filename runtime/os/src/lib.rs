//! ffrtmp's edges to the operating system, with no actor in them: the
//! master's sled store and the worker's outbox (with their checked side
//! files), job cgroups (v1 and v2), media confinement (every file a job
//! touches opened beneath a media root, no symlink followed), the node's
//! power sources (RAPL, NVML, `/proc/stat`, a job's CPU time) and the probes
//! of the machine's FFmpeg.
//!
//! The decisions these edges serve are pure and live in `ffrtmp-runtime`;
//! starting FFmpeg itself (fork, exec, the guard) is `ffrtmp-spawn`.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod confine;
pub mod energy;
pub mod outbox;
pub mod probe;
pub mod sidefile;
pub mod store;
