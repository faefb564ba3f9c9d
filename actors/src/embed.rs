//! Running ffrtmp's scheduler and a worker node inside another ractor
//! application, under that application's own supervisor.
//!
//! The pieces, in the order an application uses them (`actors/examples/embed.rs`
//! does exactly this):
//!
//! 1. [`spawn_scheduler`]: the master tree's root, [`SchedulerActor`], over a
//!    job store ([`Store::open`](ffrtmp_os::store::Store::open), [`SchedulerArgs::new`]). No HTTP API unless you give it
//!    [`AdminArgs`](crate::admin::AdminArgs).
//! 2. [`node_config`], [`open_outbox`] and [`spawn_node`]: a worker,
//!    [`NodeActor`], which runs each job's FFmpeg in its own process group
//!    and cgroup.
//! 3. [`link_in_process`]: connects the two in memory, without QUIC or
//!    certificates. The scheduler and node exchange the same wire messages
//!    as over a cluster link (hello, leases, results and their
//!    acknowledgements). A node in another process joins over QUIC instead
//!    ([`crate::cluster::run_worker`]).
//! 4. [`submit`] a job and [`subscribe`] to its updates.
//! 5. [`stop_node`], then [`stop_scheduler`].
//!
//! # Supervision
//!
//! Pass your supervisor's cell (`myself.get_cell()`) to [`spawn_scheduler`]
//! and [`spawn_node`]; your `handle_supervisor_evt` then receives
//! `ActorTerminated`/`ActorFailed` for them. Override it: ractor's default
//! stops the supervisor when any child ends. Neither actor restarts itself;
//! what to do is yours to decide:
//!
//! - **Scheduler failed** (its store failed, or its HTTP API failed more
//!   than [`ADMIN_MAX_RESTARTS`](crate::scheduler::ADMIN_MAX_RESTARTS)
//!   times in a minute): spawn a new one over the same [`Store`](ffrtmp_os::store::Store) (keep a
//!   clone) and call [`link_in_process`] again. The node keeps running its
//!   jobs while its lease lasts, and the new scheduler adopts them when the
//!   node says hello on the new link.
//! - **Node failed** (its `pre_start` failed, e.g. a mandatory power source
//!   is missing, or it panicked): its jobs' process groups and cgroups are
//!   gone with it. Stop it for good, or spawn a new one with the same node
//!   id and outbox and link it again; the scheduler requeues the attempts
//!   the node comes back without.
//!
//! ractor does not stop children with their supervisor: stop them yourself,
//! in your supervisor's `post_stop`, node first ([`stop_node`]: its jobs are
//! killed, their cgroups removed) and then the scheduler ([`stop_scheduler`]).
//!
//! # Features
//!
//! Nothing here needs ractor's `cluster` feature, and this crate does not
//! enable it (`cargo tree -p ffrtmp-actors -e features` lists only ractor's
//! defaults): the actors are local, and a remote worker is reached over
//! ffrtmp's own QUIC link, not ractor's distributed actors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_os::cgroup::CgroupManager;
use ffrtmp_runtime::encoders;
use ffrtmp_runtime::ffmpeg::EncoderProbe;
use ffrtmp_runtime::model::{Isolation, Job, JobSpec, NodeId};
use ffrtmp_runtime::wire;
use ractor::{Actor, ActorCell, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::events::JobUpdates;
use crate::link::in_process_pair;
use crate::node::{NodeActor, NodeArgs, NodeConfig, NodeMsg};
use crate::power::PowerConfig;
use crate::scheduler::{SchedulerActor, SchedulerArgs, SchedulerMsg};

/// Why an embedding call failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// An actor could not be spawned: its `pre_start` failed (the message
    /// says why), or its name is taken (a node with the same id runs).
    #[error("spawning the {0}")]
    Spawn(String),
    /// The scheduler did not answer: it is not running, or stopped before
    /// it replied.
    #[error("the scheduler is not running: {0}")]
    SchedulerGone(String),
    /// The node did not answer: it is not running.
    #[error("the node is not running: {0}")]
    NodeGone(String),
    /// The job store failed (the job was not stored, or could not be read).
    #[error("job store: {0}")]
    Store(String),
    /// No job has this id.
    #[error("no job {0}")]
    NoSuchJob(String),
    /// The link could not be set up (the node's hello did not encode).
    #[error("link: {0}")]
    Link(String),
}

/// How long [`stop_node`] and [`stop_scheduler`] wait for an actor and its
/// children to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A node's default kill grace: SIGTERM, then SIGKILL this much later, when
/// a job is cancelled, times out, or its lease runs out.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// The `nice` value jobs run at by default.
pub const DEFAULT_NICE: i32 = 10;

/// Default slots (jobs a node runs at once): half the cores, at least one.
pub fn default_slots() -> u32 {
    (crate::node::cores() / 2).max(1)
}

/// Which encoders of [`encoders::ENCODERS`] (software, NVENC, QSV, VAAPI)
/// pass a real test encode with `ffmpeg_path` on this machine, and why the
/// others do not; limited to `allow` when given. One short FFmpeg run per
/// candidate, all at once.
pub async fn probe_encoders(ffmpeg_path: &Path, allow: Option<&[String]>) -> EncoderProbe {
    let candidates: Vec<&str> = encoders::ENCODERS
        .iter()
        .map(|e| e.name)
        .filter(|e| allow.is_none_or(|a| a.iter().any(|x| x == e)))
        .collect();
    ffrtmp_os::probe::probe_encoders(ffmpeg_path, &candidates).await
}

/// A worker node's configuration with `ffrtmp-node`'s defaults: job cgroups
/// under `<cgroup_parent>/<node_id>` (created now; with no permission the
/// node runs jobs with `nice` only and says `isolation: none`), the encoders
/// that pass a test encode (limited to `encoder_allowlist`), energy measured
/// by the best source found ([`PowerConfig::new`]), [`default_slots`],
/// [`DEFAULT_NICE`], [`DEFAULT_KILL_GRACE`], no run log, no media roots (set
/// `media_roots` for file jobs). Change the fields
/// before spawning the node to differ.
pub async fn node_config(
    node_id: NodeId,
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
    cgroup_parent: &str,
    encoder_allowlist: Option<&[String]>,
) -> NodeConfig {
    let cgroups = Arc::new(CgroupManager::detect(&format!("{cgroup_parent}/{node_id}")));
    tracing::info!(isolation = ?cgroups.isolation(), "job isolation");
    let probe = probe_encoders(&ffmpeg, encoder_allowlist).await;
    tracing::info!(encoders = ?probe.available, "encoders that passed a test encode");
    let vmaf_bin = find_vmaf(None).await;
    let metrics = ffrtmp_os::probe::probe_metrics(&ffmpeg, vmaf_bin.is_some()).await;
    tracing::info!(?metrics, "quality metrics this node computes");
    NodeConfig {
        node_id,
        slots: default_slots(),
        ffmpeg,
        ffprobe,
        vmaf_bin,
        metrics,
        work_dir: None,
        cgroups,
        nice: DEFAULT_NICE,
        kill_grace: DEFAULT_KILL_GRACE,
        encoders: probe.available,
        unavailable_encoders: probe.unavailable,
        drained: Default::default(),
        power: Some(PowerConfig::new(crate::node::cores())),
        run_log: None,
        media_roots: Vec::new(),
    }
}

/// The `ffrtmp-vmaf` a node uses: `flag` (`--vmaf-bin`) when given, else
/// the one beside this executable, else the first on `PATH`; only one that
/// passes its self-test. `None` (logged with the reason): the node does
/// not compute VMAF.
pub async fn find_vmaf(flag: Option<&std::path::Path>) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    let path = std::env::var_os("PATH");
    let candidates =
        ffrtmp_runtime::quality::vmaf_candidates(flag, exe.as_deref(), path.as_deref());
    let (found, why) = ffrtmp_os::probe::probe_vmaf(&candidates).await;
    match &found {
        Some(bin) => {
            tracing::info!(bin = %bin.display(), "VMAF available (ffrtmp-vmaf passed its self-test)")
        }
        None => tracing::info!(reason = %why.join("; "), "VMAF not available on this node"),
    }
    found
}

pub use crate::cluster::open_outbox;

/// Spawns a [`SchedulerActor`], linked under `supervisor` when given (an
/// embedding application's; `None` leaves it unsupervised, as the
/// `ffrtmp-node` binary does). Returns its ref and the handle that completes
/// when it stops.
pub async fn spawn_scheduler(
    args: SchedulerArgs,
    supervisor: Option<ActorCell>,
) -> Result<(ActorRef<SchedulerMsg>, JoinHandle<()>), EmbedError> {
    let spawned = match supervisor {
        Some(sup) => Actor::spawn_linked(None, SchedulerActor, args, sup).await,
        None => Actor::spawn(None, SchedulerActor, args).await,
    };
    spawned.map_err(|e| EmbedError::Spawn(format!("scheduler: {e}")))
}

/// Spawns a [`NodeActor`] named `ffrtmp-node-<node id>`, linked under
/// `supervisor` when given. It first kills and removes whatever an earlier
/// run of the same node left in its cgroups. It runs nothing until linked
/// to a scheduler ([`link_in_process`], or a QUIC link).
pub async fn spawn_node(
    args: NodeArgs,
    supervisor: Option<ActorCell>,
) -> Result<(ActorRef<NodeMsg>, JoinHandle<()>), EmbedError> {
    let name = format!("ffrtmp-node-{}", args.config.node_id);
    let spawned = match supervisor {
        Some(sup) => Actor::spawn_linked(Some(name), NodeActor, args, sup).await,
        None => Actor::spawn(Some(name), NodeActor, args).await,
    };
    spawned.map_err(|e| EmbedError::Spawn(format!("node: {e}")))
}

/// A link made by [`link_in_process`].
#[derive(Debug)]
pub struct InProcessLink {
    down: oneshot::Receiver<()>,
}

impl InProcessLink {
    /// Completes when the node lets go of the link: the scheduler's side
    /// ended (the scheduler stopped, or dropped the link), or the node
    /// stopped or was handed another link. Call [`link_in_process`] again
    /// to reconnect.
    pub async fn closed(self) {
        let _ = self.down.await;
    }
}

/// Connects `node` to `scheduler` in memory: the node's hello goes first,
/// then the scheduler spawns a `NodeLink` for it and the node starts
/// renewing its lease over it. Jobs are placed on the node once the
/// scheduler has the hello; the node starts them once its first lease
/// renewal is answered (a round trip through both actors).
pub async fn link_in_process(
    scheduler: &ActorRef<SchedulerMsg>,
    node: &ActorRef<NodeMsg>,
) -> Result<InProcessLink, EmbedError> {
    let hello = ractor::call_t!(node, NodeMsg::Hello, 10_000)
        .map_err(|e| EmbedError::NodeGone(e.to_string()))?;
    let frame = wire::encode(&hello).map_err(|e| EmbedError::Link(e.to_string()))?;
    let (master_end, worker_end) = in_process_pair();
    // The channel is new and empty: this cannot wait.
    worker_end
        .tx
        .send(frame)
        .await
        .map_err(|e| EmbedError::Link(e.to_string()))?;
    scheduler
        .cast(SchedulerMsg::AttachLink(master_end))
        .map_err(|e| EmbedError::SchedulerGone(e.to_string()))?;
    let (down, down_rx) = oneshot::channel();
    node.cast(NodeMsg::LinkUp {
        link: worker_end,
        down,
    })
    .map_err(|e| EmbedError::NodeGone(e.to_string()))?;
    Ok(InProcessLink { down: down_rx })
}

/// Submits a job: the scheduler stores it durably and queues it. Returns
/// the job as stored (state `queued`; its `id` names it from now on) once it
/// is on disk. The spec is trusted as given: build it with
/// `ffrtmp_runtime::spec::parse_job_request`, which checks every field and
/// keeps file paths inside the media roots.
pub async fn submit(scheduler: &ActorRef<SchedulerMsg>, spec: JobSpec) -> Result<Job, EmbedError> {
    ractor::call!(scheduler, SchedulerMsg::Submit, Box::new(spec))
        .map_err(|e| EmbedError::SchedulerGone(e.to_string()))?
        .map_err(EmbedError::Store)
}

/// The updates of job `job_id`: the job as it is now, then every change
/// (state changes and progress reports) until it reaches a terminal state.
/// Subscribe right after [`submit`] to see every step.
///
/// The updates hold a handle on the scheduler's job store: drop them before
/// opening that store again.
pub async fn subscribe(
    scheduler: &ActorRef<SchedulerMsg>,
    job_id: &str,
) -> Result<JobUpdates, EmbedError> {
    ractor::call!(scheduler, SchedulerMsg::Subscribe, job_id.to_string())
        .map_err(|e| EmbedError::SchedulerGone(e.to_string()))?
        .map_err(EmbedError::Store)?
        .ok_or_else(|| EmbedError::NoSuchJob(job_id.to_string()))
}

/// Stops `node` and waits (up to [`STOP_TIMEOUT`]): each running job's
/// FFmpeg process group is killed and its cgroup removed (the master
/// requeues those attempts); then removes the node's own, now empty, cgroup
/// (`cgroups` is its [`NodeConfig::cgroups`]). A node already stopped is
/// fine.
pub async fn stop_node(node: &ActorRef<NodeMsg>, cgroups: Arc<CgroupManager>) {
    let _ = node
        .stop_and_wait(Some("shutdown".into()), Some(STOP_TIMEOUT))
        .await;
    if cgroups.isolation() == Isolation::None {
        return;
    }
    match tokio::task::spawn_blocking(move || cgroups.remove_parent()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "node cgroup parent not removed"),
        Err(e) => tracing::warn!(error = %e, "cgroup cleanup task failed"),
    }
}

/// Stops `scheduler` and waits (up to [`STOP_TIMEOUT`]) for it and its
/// children (links to nodes, HTTP API). Jobs still running on a node stay
/// stored as they are and are reconciled on the scheduler's next start. A
/// scheduler already stopped is fine.
pub async fn stop_scheduler(scheduler: &ActorRef<SchedulerMsg>) {
    let _ = scheduler
        .stop_and_wait(Some("shutdown".into()), Some(STOP_TIMEOUT))
        .await;
}
