//! ffrtmp's actors, as a library other ractor applications can embed.
//!
//! - [`scheduler::SchedulerActor`]: master root; queue, placement, retries;
//!   supervises one [`node_link::NodeLink`] per worker and the
//!   [`admin::AdminActor`], which serves the HTTP API ([`http`]).
//! - [`node::NodeActor`]: worker root; supervises one [`job::JobActor`] per
//!   running attempt and the node's [`power::PowerSamplerActor`].
//! - [`job::JobActor`]: owns one FFmpeg process group and its cgroup.
//!
//! [`standalone`] wires a master and a worker together in one process over
//! loopback QUIC (`ffrtmp-node --role standalone`); [`cluster`] holds the
//! QUIC edges of a real cluster.
//!
//! # Embedding
//!
//! [`embed`] is the API for running a scheduler and a worker node under
//! your own supervisor: spawn both linked to it, connect them in memory,
//! submit jobs through the scheduler's `ActorRef` and follow their
//! progress. Read its module docs for the supervision it expects;
//! `actors/examples/embed.rs` is a complete application
//! (`cargo run -p ffrtmp-actors --example embed`).
//!
//! ```no_run
//! use std::path::Path;
//!
//! use ffrtmp_actors::embed;
//! use ffrtmp_actors::node::NodeArgs;
//! use ffrtmp_actors::runtime::spec::{parse_job_request, MediaRoots};
//! use ffrtmp_actors::os::store::Store;
//! use ffrtmp_actors::scheduler::SchedulerArgs;
//! use ractor::ActorCell;
//!
//! /// Runs one job under `supervisor`, keeping state in `dir`.
//! async fn encode_once(
//!     supervisor: ActorCell,
//!     dir: &Path,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     let store = Store::open(&dir.join("master.sled"))?;
//!     let args = SchedulerArgs::new(store);
//!     let (scheduler, _) = embed::spawn_scheduler(args, Some(supervisor.clone())).await?;
//!
//!     let config = embed::node_config(
//!         "node-a".into(),
//!         "ffmpeg".into(),
//!         "ffprobe".into(),
//!         "my-app",
//!         None,
//!     )
//!     .await;
//!     let cgroups = config.cgroups.clone();
//!     let outbox = embed::open_outbox(dir, &config.node_id)?;
//!     let (node, _) = embed::spawn_node(NodeArgs { config, outbox }, Some(supervisor)).await?;
//!     embed::link_in_process(&scheduler, &node).await?;
//!
//!     let spec = parse_job_request(
//!         br#"{"codec": "h264", "width": 320, "height": 240, "fps": 25,
//!              "input": {"type": "testsrc", "duration_s": 1},
//!              "output": {"type": "null"}}"#,
//!         &MediaRoots::new(&[])?,
//!     )?;
//!     let job = embed::submit(&scheduler, spec).await?;
//!     let mut updates = embed::subscribe(&scheduler, &job.id).await?;
//!     while let Some(update) = updates.next().await {
//!         println!("{} {:?}", update.job.state.as_str(), update.job.progress);
//!     }
//!
//!     embed::stop_node(&node, cgroups).await;
//!     embed::stop_scheduler(&scheduler).await;
//!     Ok(())
//! }
//! ```
//!
//! This crate does not enable ractor's `cluster` feature and needs none of
//! it: every actor is local to its process, and master and workers in
//! different processes talk over ffrtmp's own QUIC link.
//!
//! # Metrics
//!
//! The actors emit through the `metrics` facade ([`metrics`] lists the
//! names): an embedding application's recorder receives them.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cluster;
pub mod embed;
pub mod events;
pub mod http;
pub mod job;
pub mod link;
pub mod metrics;
pub mod node;
pub mod node_link;
mod node_msg;
pub mod output_claims;
pub mod power;
mod quality_pass;
pub mod scheduler;
pub mod standalone;
pub mod supervised;

/// The OS edges the actors drive (the store, cgroups, confinement, power
/// sources, probes), re-exported for the same reason.
pub use ffrtmp_os as os;
/// The pure core the actors are built on (job model, spec parsing, state
/// machine, FFmpeg argv, energy attribution), re-exported so an embedding
/// application uses the same version.
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
