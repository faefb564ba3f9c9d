//! ffrtmp's actors, as a library other ractor applications can embed.
//!
//! - [`scheduler::SchedulerActor`]: master root; queue, placement, retries;
//!   supervises one [`node_link::NodeLink`] per worker and the
//!   [`admin::AdminActor`] (HTTP API).
//! - [`node::NodeActor`]: worker root; supervises one [`job::JobActor`] per
//!   running attempt.
//! - [`job::JobActor`]: owns one FFmpeg process group and its cgroup.
//!
//! [`standalone`] wires a master and a worker together in one process; an
//! embedding application uses [`embed`] to spawn [`scheduler::SchedulerActor`]
//! and [`node::NodeActor`] linked under its own supervisor.

pub mod admin;
pub mod cluster;
pub mod embed;
pub mod events;
pub mod job;
pub mod link;
pub mod metrics;
pub mod node;
pub mod node_link;
pub mod power;
pub mod scheduler;
pub mod standalone;

/// The runtime crate the actors are built on (job model and spec parsing,
/// store, FFmpeg, cgroups, energy), re-exported so an embedding application
/// uses the same version.
pub use ffrtmp_runtime as runtime;

/// Wall-clock milliseconds since the Unix epoch: read here, at the edge, and
/// passed into the pure runtime as data.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds on this process's monotonic clock (since its first reading).
/// Leases are measured with it: never compared across processes.
pub fn mono_ms() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}
