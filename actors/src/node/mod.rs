//! `NodeActor`: the root of a worker's tree. Holds the link to the master
//! (replaced on every reconnection), the lease, and the outbox, and
//! supervises one `JobActor` per running attempt.
//!
//! Links come and go; the node and its jobs outlive them, for as long as the
//! lease lasts (docs/PROTOCOL.md, "Leases"). The owner (the worker's
//! connector, or standalone) asks for a [`NodeMsg::Hello`] and hands each new
//! link over with [`NodeMsg::LinkUp`]. While linked, the node pings every
//! [`PING_INTERVAL_MS`](ffrtmp_runtime::lease::PING_INTERVAL_MS); each
//! `Pong` extends the lease and is passed on to every job's guard process.
//! One kill grace before the lease ends, the node stops its jobs; the
//! guards SIGKILL whatever is left when it ends, even if this process is
//! frozen. The decisions (whether an assignment starts, waits for the
//! lease or is refused; what a tick does) are the pure
//! `ffrtmp_runtime::worker`'s, tested there; this actor acts on them.
//!
//! Every `Finished` goes to the on-disk outbox before it is sent, and leaves
//! it when the master acknowledges it; on each new link the outbox is sent
//! again.
//!
//! Restart policy: a `JobActor` is never restarted in place.
//! When one stops without having reported (it panicked, or its `pre_start`
//! failed), the node reports the attempt to the master as a transient
//! `worker_crash`, and the master decides whether to retry (a new attempt,
//! new token, new actor).
//!
//! Starting a job never blocks the node. A `JobActor`'s `pre_start` does
//! the slow and fallible part of an attempt (the cgroup's set-up, the
//! input's probe, the guard's fork), each step with its own timeout, and an
//! input can make the probe hang (a playlist whose segment is a FIFO). So
//! the node spawns it with ractor's `spawn_linked_instant`: `pre_start` runs
//! in the job's own task, and the node goes on with its lease, its links and
//! its other jobs meanwhile. The attempt is in `running` (it takes a slot,
//! it is in the hello) from the moment it is assigned; messages for it
//! (`Cancel`, `RenewLease`, `LeaseExpired`, `DrainStop`) wait in its
//! mailbox and are handled as soon as `pre_start` returns (the fork reads
//! the node's lease as it is then, through `lease_end`, not as it was at
//! assignment). ractor links the actor under the node only once `pre_start`
//! returns, so a small task awaits the start and turns a failed one into
//! [`NodeMsg::JobStartFailed`], which the node reports as `worker_crash`.
//! One result per attempt still holds: a `pre_start` that reports (a probe
//! timeout, a spawn failure) returns `Ok` and stops, one that fails reports
//! nothing, and a linked actor reports as before. A stopping node kills the
//! actors still starting (their `pre_start` is dropped: the probe killed,
//! the cgroup removed, a late fork's group killed) and stops the others.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_os::cgroup::CgroupManager;
use ffrtmp_os::outbox::Outbox;
use ffrtmp_runtime::ffmpeg::UnavailableEncoder;
use ffrtmp_runtime::lease::WorkerLease;
use ffrtmp_runtime::model::{Isolation, JobId, NodeId, QualityMetric};
use ffrtmp_runtime::wire::{Assignment, AttemptRef, ToMaster, ToWorker};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::job::JobMsg;
use crate::mono_ms;
use crate::power::{PowerConfig, PowerMsg};

mod state;

pub use crate::node_msg::NodeMsg;
use state::spawn_sampler;
pub use state::{cores, hello};

/// How a worker node is set up.
#[derive(Clone)]
pub struct NodeConfig {
    /// The node's id, stable across restarts: the master knows the node's
    /// attempts by it (and checks it against the certificate over QUIC).
    pub node_id: NodeId,
    /// Jobs it runs at once; an assignment beyond them is refused
    /// (reported transient, so the master places it again).
    pub slots: u32,
    /// The FFmpeg binary jobs run (a path, or a name looked up in `PATH`).
    pub ffmpeg: PathBuf,
    /// The ffprobe binary (measures a file output).
    pub ffprobe: PathBuf,
    /// `ffrtmp-vmaf`, when it passed its self-test at start: the node can
    /// compute VMAF (`None`: it cannot).
    pub vmaf_bin: Option<PathBuf>,
    /// Quality metrics it advertises (probed at start; VMAF only with
    /// `vmaf_bin`).
    pub metrics: Vec<QualityMetric>,
    /// Where a job's scratch files go (a `null` output encoded for its
    /// quality pass: anonymous, gone when closed); created when first
    /// needed. `None`: the system's temporary directory.
    pub work_dir: Option<PathBuf>,
    /// Creates each attempt's cgroup under the node's parent; its sweep
    /// runs when the node starts.
    pub cgroups: Arc<CgroupManager>,
    /// The `nice` value FFmpeg runs at.
    pub nice: i32,
    /// SIGTERM, then SIGKILL this much later, when a job must stop; also how
    /// long before its lease ends the node stops its jobs.
    pub kill_grace: Duration,
    /// Encoders this node advertises (already probed by a real encode).
    pub encoders: Vec<String>,
    /// Encoders that failed their test encode, with FFmpeg's reason
    /// (shown in `GET /v1/nodes`; never used).
    pub unavailable_encoders: Vec<UnavailableEncoder>,
    /// Set when the node stopped because it finished draining: its owner
    /// should leave rather than reconnect.
    pub drained: Arc<std::sync::atomic::AtomicBool>,
    /// How the node measures energy; `None`: no `PowerSamplerActor`, and
    /// jobs report no energy.
    pub power: Option<PowerConfig>,
    /// Record every attempt's FFmpeg start and stop here (see
    /// `ffrtmp_spawn::RunLog`); `None`: no record.
    pub run_log: Option<PathBuf>,
    /// The media roots (canonical, `--media-root`): every file a job reads
    /// or writes is opened beneath one of them, following no symlink; none:
    /// file jobs fail (`path_outside_media_root`).
    pub media_roots: Vec<PathBuf>,
}

/// What a [`NodeActor`] is started with.
pub struct NodeArgs {
    /// How the node is set up.
    pub config: NodeConfig,
    /// Results not yet acknowledged by the master (on disk).
    pub outbox: Outbox,
}

struct Running {
    token: u64,
    actor: ActorRef<JobMsg>,
    /// Set once FFmpeg started (resent on every new link, in case the
    /// `Started` was lost with the old one).
    isolation: Option<Isolation>,
}

struct CurrentLink {
    gen: u64,
    tx: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
    _down: oneshot::Sender<()>,
}

impl Drop for CurrentLink {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The node's state (private; public only because ractor's `Actor` trait
/// names it).
pub struct NodeState {
    config: NodeConfig,
    outbox: Outbox,
    link: Option<CurrentLink>,
    next_gen: u64,
    lease: WorkerLease,
    /// The jobs were told to stop because the lease ran out (reset on renewal).
    lease_stop_sent: bool,
    last_ping_ms: Option<u64>,
    last_resend_ms: u64,
    /// When the outbox was last looked at for a reopen ([`NodeState::mend_outbox`]).
    last_mend_ms: u64,
    /// When each unacknowledged result was last sent on the current link:
    /// only those older than [`OUTBOX_RESEND`] are sent again.
    sent_at: HashMap<AttemptRef, u64>,
    /// Results the outbox could not take (its disk full): kept here, sent
    /// and resent like the outbox's until the master acknowledges them.
    /// Lost only if this process dies before that.
    unstored: HashMap<AttemptRef, Vec<u8>>,
    /// The lease length the master grants (from its last `Pong`).
    granted_ms: Option<u64>,
    /// Assignments that arrived before this link's first `Pong`.
    pending: Vec<Assignment>,
    running: HashMap<JobId, Running>,
    by_actor: HashMap<ActorId, (JobId, u64)>,
    /// Where the lease ends (`mono_ms`; `0`: none), for the jobs to read
    /// when they fork (see the module docs).
    lease_end: Arc<AtomicU64>,
    draining: bool,
    power: Option<ActorRef<PowerMsg>>,
}

impl Drop for NodeState {
    fn drop(&mut self) {
        // ractor does not stop children with their supervisor. `post_stop`
        // stops them and waits; this covers the paths that skip it (a panic).
        for r in self.running.values() {
            r.actor.stop(Some("node stopped".into()));
        }
    }
}

/// How long a stopping node waits for its JobActors to clean up.
const STOP_CHILDREN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the node looks at its lease.
const TICK: Duration = Duration::from_millis(100);
/// An unacknowledged result is sent again once it has waited this long for
/// its `Ack` on the current link (the master acknowledges duplicates and
/// applies each result once).
const OUTBOX_RESEND: Duration = Duration::from_secs(5);
/// How often the outbox is looked at for results due a resend.
const OUTBOX_CHECK: Duration = Duration::from_secs(1);

/// The root of a worker's tree: runs each assignment from the master in a
/// `JobActor` linked under it, keeps the lease, and keeps every result in
/// its outbox until the master acknowledges it. Spawn it with
/// [`crate::embed::spawn_node`], then give it a link
/// ([`crate::embed::link_in_process`], or [`crate::cluster::maintain_link`]
/// over QUIC). Stopping it stops its jobs (each process group killed, each
/// cgroup removed).
pub struct NodeActor;

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let NodeArgs { config, outbox } = args;

        // Anything left from an earlier run of this node dies now.
        let cgroups = config.cgroups.clone();
        let report = tokio::task::spawn_blocking(move || cgroups.sweep()).await?;
        if !report.killed_pids.is_empty() || !report.removed.is_empty() {
            tracing::warn!(
                killed = report.killed_pids.len(),
                removed = report.removed.len(),
                "start-up sweep cleaned leftovers of an earlier run"
            );
        }
        let power = match &config.power {
            Some(p) => Some(spawn_sampler(&myself, p.clone()).await?),
            None => None,
        };
        myself.send_interval(TICK, || NodeMsg::Tick);
        Ok(NodeState {
            config,
            outbox,
            link: None,
            next_gen: 0,
            lease: WorkerLease::default(),
            lease_stop_sent: false,
            last_ping_ms: None,
            last_resend_ms: 0,
            last_mend_ms: 0,
            sent_at: HashMap::new(),
            unstored: HashMap::new(),
            granted_ms: None,
            pending: Vec::new(),
            running: HashMap::new(),
            by_actor: HashMap::new(),
            lease_end: Arc::new(AtomicU64::new(0)),
            draining: false,
            power,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::LinkUp { link, down } => state.link_up(&myself, link, down),
            NodeMsg::LinkDown(gen) => {
                if state.link.as_ref().is_some_and(|l| l.gen == gen) {
                    state.link = None;
                    state.pending.clear();
                    let left = state.lease.remaining(mono_ms()).unwrap_or(0);
                    tracing::warn!(
                        jobs = state.running.len(),
                        lease_left_ms = left,
                        "link to the master lost; jobs keep running while the lease lasts"
                    );
                }
            }
            NodeMsg::Inbound(gen, msg) => {
                if state.link.as_ref().is_none_or(|l| l.gen != gen) {
                    tracing::debug!(gen, "frame from an old link ignored");
                    return Ok(());
                }
                match msg {
                    ToWorker::Assign(a) => state.assign(&myself, *a).await,
                    ToWorker::Cancel { job_id, token } | ToWorker::Kill { job_id, token } => {
                        match state.running.get(&job_id) {
                            Some(r) if r.token == token => {
                                let _ = r.actor.cast(JobMsg::Cancel);
                            }
                            _ => {
                                tracing::debug!(job = %job_id, token, "cancel for no running attempt")
                            }
                        }
                    }
                    ToWorker::Drain { deadline_ms } => {
                        state
                            .begin_drain(&myself, Duration::from_millis(deadline_ms))
                            .await;
                    }
                    ToWorker::Pong { sent_ms, lease_ms } => {
                        state.on_pong(&myself, sent_ms, lease_ms).await
                    }
                    ToWorker::Ack(attempt) => {
                        state.sent_at.remove(&attempt);
                        state.unstored.remove(&attempt);
                        if let Err(e) = state.outbox.remove(&attempt) {
                            tracing::error!(job = %attempt.job_id, error = %e, "cannot clear the outbox");
                        }
                        state.stop_if_drained(&myself);
                    }
                }
            }
            NodeMsg::Hello(reply) => {
                let mut h = hello(&state.config);
                if let ToMaster::Hello {
                    running, unacked, ..
                } = &mut h
                {
                    *running = state.attempts();
                    *unacked = match state.outbox.pending() {
                        Ok(p) => p.into_iter().map(|(a, _)| a).collect(),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the outbox");
                            Vec::new()
                        }
                    };
                    unacked.extend(state.unstored.keys().cloned());
                }
                let _ = reply.send(h);
            }
            NodeMsg::Tick => state.tick().await,
            NodeMsg::Power(p) => state.send(ToMaster::Power(p)),
            NodeMsg::Drain { deadline } => state.begin_drain(&myself, deadline).await,
            NodeMsg::JobStartFailed { job_id, token, why } => {
                if state.running.get(&job_id).is_some_and(|r| r.token == token) {
                    if let Some(r) = state.running.remove(&job_id) {
                        state.by_actor.remove(&r.actor.get_id());
                    }
                    state.report_crash(job_id, token, why).await;
                    state.stop_if_drained(&myself);
                }
            }
            NodeMsg::DrainDeadline => {
                for r in state.running.values() {
                    let _ = r.actor.cast(JobMsg::DrainStop);
                }
            }
            NodeMsg::JobStarted {
                job_id,
                token,
                isolation,
            } => {
                if let Some(r) = state.running.get_mut(&job_id) {
                    if r.token == token {
                        r.isolation = Some(isolation);
                    }
                }
                state.send(ToMaster::Started {
                    job_id,
                    token,
                    isolation,
                })
            }
            NodeMsg::JobProgress {
                job_id,
                token,
                progress,
            } => state.send(ToMaster::Progress {
                job_id,
                token,
                progress,
            }),
            NodeMsg::JobFinished {
                job_id,
                token,
                outcome,
                energy,
            } => {
                if state.running.get(&job_id).is_some_and(|r| r.token == token) {
                    if let Some(r) = state.running.remove(&job_id) {
                        state.by_actor.remove(&r.actor.get_id());
                    }
                }
                state.finished(job_id, token, outcome, energy).await;
                state.stop_if_drained(&myself);
            }
            #[cfg(feature = "fault-injection")]
            NodeMsg::InjectJobPanic(job_id) => {
                if let Some(r) = state.running.get(&job_id) {
                    let _ = r.actor.cast(JobMsg::InjectPanic);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // JobActors still in `pre_start` are not linked yet: kill them (their
        // `pre_start` is dropped; see the module docs) and wait for them.
        let starting: Vec<ActorRef<JobMsg>> = state
            .running
            .values()
            .filter(|r| r.actor.get_status() == ActorStatus::Starting)
            .map(|r| r.actor.clone())
            .collect();
        for a in &starting {
            a.kill();
        }
        for a in &starting {
            if a.wait(Some(STOP_CHILDREN_TIMEOUT)).await.is_err() {
                tracing::warn!(actor = %a.get_id(), "a starting job actor did not stop in time");
            }
        }
        // Every JobActor's state is dropped: its process group killed, its cgroup removed.
        myself
            .stop_children_and_wait(Some("node stopping".into()), Some(STOP_CHILDREN_TIMEOUT))
            .await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        evt: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // Only a failure needs handling here. A JobActor that stops cleanly has
        // always cast `JobFinished` first; ractor delivers supervision events
        // ahead of ordinary messages, so acting on `ActorTerminated` could
        // overtake that report.
        let (cell, why): (&ActorCell, String) = match &evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("job actor failed: {err}")),
            _ => return Ok(()),
        };
        // The sampler failed: start a fresh one (totals restart from zero;
        // the jobs it tracked report no energy).
        if let (Some(p), Some(cfg)) = (&state.power, &state.config.power) {
            if p.get_id() == cell.get_id() {
                tracing::error!("power sampler failed ({why}); starting a new one");
                state.power = spawn_sampler(&myself, cfg.clone()).await.ok();
                return Ok(());
            }
        }
        // Its state was dropped (process group killed,
        // cgroup removed) and the attempt goes back to the master as transient.
        if let Some((job_id, token)) = state.by_actor.remove(&cell.get_id()) {
            state.running.remove(&job_id);
            tracing::error!(job = %job_id, "{why}");
            state.report_crash(job_id, token, why).await;
        }
        Ok(())
    }
}
