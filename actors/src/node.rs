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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_os::cgroup::CgroupManager;
use ffrtmp_os::outbox::Outbox;
use ffrtmp_runtime::ffmpeg::UnavailableEncoder;
use ffrtmp_runtime::lease::WorkerLease;
use ffrtmp_runtime::model::{
    Energy, Failure, FailureReason, Isolation, JobId, NodeId, NodePower, Outcome, Progress,
    QualityMetric,
};
use ffrtmp_runtime::wire::{
    self, Assignment, AttemptRef, Capabilities, ToMaster, ToWorker, PROTOCOL_VERSION,
};
use ffrtmp_runtime::worker::{self, Admission};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort,
    SupervisionEvent,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::job::{JobActor, JobArgs, JobMsg};
use crate::link::LinkEnd;
use crate::mono_ms;
use crate::power::{PowerArgs, PowerConfig, PowerMsg, PowerSamplerActor};

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

/// The messages a [`NodeActor`] handles. Its owner sends `Hello`,
/// `LinkUp` and `Drain`; its `JobActor`s send `JobStarted`, `JobProgress`
/// and `JobFinished`; its sampler sends `Power`; the rest come from its own
/// link reader and timers.
pub enum NodeMsg {
    /// A new link to the master, whose handshake carried the hello from
    /// [`NodeMsg::Hello`]. `down` is dropped when the node is done with it.
    LinkUp {
        /// The worker's end of the link; replaces the current one.
        link: LinkEnd,
        /// Dropped when the node lets go of this link (it ended, was
        /// replaced, or the node stopped): the owner's cue to reconnect.
        down: oneshot::Sender<()>,
    },
    /// The link of generation `gen` ended.
    LinkDown(u64),
    /// A frame from the master on the link of generation `gen`.
    Inbound(u64, ToWorker),
    /// The hello for the next link: identity, capabilities, and the attempts
    /// this node holds (running, and finished but unacknowledged).
    Hello(RpcReplyPort<ToMaster>),
    /// Periodic: ping, and stop the jobs when the lease runs out.
    Tick,
    /// From a `JobActor`: FFmpeg is running; forwarded to the master (and
    /// resent on every new link while the attempt runs).
    JobStarted {
        /// The job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// How FFmpeg was isolated (a cgroup, or `nice` only).
        isolation: Isolation,
    },
    /// From a `JobActor`: FFmpeg's latest progress; forwarded to the master
    /// if linked (dropped otherwise: the next one supersedes it).
    JobProgress {
        /// The job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// The figures FFmpeg reported.
        progress: Progress,
    },
    /// From a `JobActor`, once, just before it stops: the attempt's
    /// outcome. Written to the outbox, then sent to the master, and resent
    /// until the master acknowledges it.
    JobFinished {
        /// The job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// How the attempt ended.
        outcome: Outcome,
        /// What the attempt cost, when this node samples power.
        energy: Option<Energy>,
    },
    /// Drain: take no new jobs, let the running ones finish for at most
    /// `deadline`, then stop them (reported transient) and stop the node.
    Drain {
        /// How long running jobs may still take.
        deadline: Duration,
    },
    /// The drain deadline passed.
    DrainDeadline,
    /// The node's power, from its `PowerSamplerActor` (about once a second):
    /// forwarded to the master.
    Power(NodePower),
    /// A `JobActor`'s `pre_start` failed (or panicked): it reported nothing
    /// and is not linked under the node. Reported as a transient
    /// `worker_crash` if the attempt is still the node's.
    JobStartFailed {
        /// The job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// What ractor said.
        why: String,
    },
    /// Test-only: make the JobActor of `job_id` panic.
    #[cfg(feature = "fault-injection")]
    InjectJobPanic(JobId),
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

impl NodeState {
    fn grace_ms(&self) -> u64 {
        self.config.kill_grace.as_millis() as u64
    }

    async fn begin_drain(&mut self, myself: &ActorRef<NodeMsg>, deadline: Duration) {
        if self.draining {
            return;
        }
        self.draining = true;
        tracing::info!(jobs = self.running.len(), ?deadline, "draining");
        self.send(ToMaster::Draining);
        for a in std::mem::take(&mut self.pending) {
            self.report_crash(a.job_id, a.token, "node is draining".into())
                .await;
        }
        myself.send_after(deadline, || NodeMsg::DrainDeadline);
        self.stop_if_drained(myself);
    }

    /// A drained node stops once nothing runs and every result is acknowledged.
    fn stop_if_drained(&self, myself: &ActorRef<NodeMsg>) {
        if self.draining && self.running.is_empty() && self.all_acknowledged() {
            self.config
                .drained
                .store(true, std::sync::atomic::Ordering::SeqCst);
            myself.stop(Some("drained".into()));
        }
    }

    /// The attempt ended here without FFmpeg being at fault: a transient
    /// `worker_crash`, so the master retries it while attempts remain.
    async fn report_crash(&mut self, job_id: JobId, token: u64, why: String) {
        let failure = Failure::new(FailureReason::WorkerCrash, why);
        self.finished(job_id, token, Outcome::Transient { failure }, None)
            .await;
    }

    /// Into the outbox (durably), then to the master if linked.
    async fn finished(
        &mut self,
        job_id: JobId,
        token: u64,
        outcome: Outcome,
        energy: Option<Energy>,
    ) {
        let attempt = AttemptRef {
            job_id: job_id.clone(),
            token,
        };
        let frame = match wire::encode(&ToMaster::Finished {
            job_id,
            token,
            outcome,
            energy,
        }) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a result");
                return;
            }
        };
        if let Err(e) = self.outbox.put(&attempt, frame.clone()).await {
            // Kept in memory instead, sent and resent until acknowledged;
            // only a crash of this process before then loses it.
            tracing::error!(job = %attempt.job_id, error = %e, "cannot write the outbox; the result is kept in memory until the master acknowledges it");
            self.unstored.insert(attempt.clone(), frame.clone());
        }
        self.send_frame(frame);
        if self.link.is_some() {
            self.sent_at.insert(attempt, mono_ms());
        }
    }

    fn send(&mut self, msg: ToMaster) {
        match wire::encode(&msg) {
            Ok(frame) => self.send_frame(frame),
            Err(e) => tracing::error!(error = %e, "cannot encode message to master"),
        }
    }

    /// Sends on the current link without waiting: the node must keep
    /// ticking (its lease) even if the link is stuck. Without a link, or with
    /// a full one, the frame is dropped; results are in the outbox and are
    /// resent ([`OUTBOX_RESEND`], and on every new link).
    fn send_frame(&mut self, frame: Vec<u8>) {
        let Some(link) = &self.link else {
            return;
        };
        match link.tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("link to master is full; message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("link to master closed; message dropped");
                self.link = None;
            }
        }
    }

    /// Send the outbox's results again: all of them (a new link), or only
    /// those sent at least `min_age_ms` ago.
    fn resend_outbox(&mut self, min_age_ms: Option<u64>) {
        let mut frames = self.outbox.pending().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the outbox");
            Vec::new()
        });
        frames.extend(self.unstored.iter().map(|(a, f)| (a.clone(), f.clone())));
        let now = mono_ms();
        for (attempt, frame) in frames {
            if worker::resend_due(self.sent_at.get(&attempt).copied(), now, min_age_ms) {
                self.send_frame(frame);
                self.sent_at.insert(attempt, now);
            }
        }
    }

    /// Every result is acknowledged: none in the outbox or in memory.
    fn all_acknowledged(&self) -> bool {
        self.outbox.is_empty() && self.unstored.is_empty()
    }

    fn attempts(&self) -> Vec<AttemptRef> {
        let mut v: Vec<AttemptRef> = self
            .running
            .iter()
            .map(|(job_id, r)| AttemptRef {
                job_id: job_id.clone(),
                token: r.token,
            })
            .collect();
        v.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        v
    }

    async fn on_pong(&mut self, myself: &ActorRef<NodeMsg>, sent_ms: u64, lease_ms: u64) {
        let now = mono_ms();
        self.granted_ms = Some(lease_ms);
        if let Some(until) = self.lease.on_pong(sent_ms, lease_ms, now) {
            self.lease_end.store(until, Ordering::SeqCst);
            let remaining = Duration::from_millis(until.saturating_sub(now));
            self.lease_stop_sent = false;
            for r in self.running.values() {
                let _ = r.actor.cast(JobMsg::RenewLease(remaining));
            }
        }
        if self.lease.can_start(now, self.grace_ms()) || self.lease_too_short().is_some() {
            for a in std::mem::take(&mut self.pending) {
                self.assign(myself, a).await;
            }
        }
    }

    /// Why no job can ever start here ([`worker::lease_too_short`]).
    fn lease_too_short(&self) -> Option<String> {
        worker::lease_too_short(self.granted_ms, self.grace_ms())
    }

    async fn assign(&mut self, myself: &ActorRef<NodeMsg>, a: Assignment) {
        // Timestamps the dispatch-latency benchmark splits the path with.
        tracing::debug!(job = %a.job_id, token = a.token, "assignment received");
        let now = mono_ms();
        let admission = worker::admit(
            &a,
            self.running.contains_key(&a.job_id),
            worker::NodeNow {
                running: self.running.len(),
                slots: self.config.slots,
                draining: self.draining,
                encoders: &self.config.encoders,
                lease: &self.lease,
                granted_ms: self.granted_ms,
                grace_ms: self.grace_ms(),
                now_ms: now,
            },
        );
        let mut a = a;
        match admission {
            Admission::Duplicate => {
                tracing::warn!(job = %a.job_id, "duplicate assignment ignored");
                return;
            }
            Admission::Refuse { why, lease } => {
                if lease {
                    tracing::error!("{why}; refusing jobs");
                }
                self.report_crash(a.job_id, a.token, why).await;
                return;
            }
            Admission::Wait { encoder } => {
                a.spec.encode.encoder = Some(encoder);
                // Before the first Pong of this link: start once it arrives.
                self.pending.push(a);
                return;
            }
            Admission::Start { encoder } => a.spec.encode.encoder = Some(encoder),
        }
        let lease = self.lease.remaining(now).map(Duration::from_millis);
        let (job_id, token) = (a.job_id.clone(), a.token);
        let args = JobArgs {
            assignment: a,
            node: myself.clone(),
            ffmpeg: self.config.ffmpeg.clone(),
            ffprobe: self.config.ffprobe.clone(),
            vmaf_bin: self.config.vmaf_bin.clone(),
            work_dir: self.config.work_dir.clone(),
            cgroups: self.config.cgroups.clone(),
            nice: self.config.nice,
            kill_grace: self.config.kill_grace,
            lease_end_ms: lease.is_some().then(|| self.lease_end.clone()),
            lease,
            power: self.power.clone(),
            run_log: self.config.run_log.clone(),
            media_roots: self.config.media_roots.clone(),
        };
        // Not awaited here: see the module docs.
        match ractor::ActorRuntime::spawn_linked_instant(
            Some(JobActor::name(&job_id, token)),
            JobActor,
            args,
            myself.get_cell(),
        ) {
            Ok((actor, started)) => {
                let (me, job, actor_id) = (myself.clone(), job_id.clone(), actor.get_id());
                tokio::spawn(async move {
                    let why = match started.await {
                        Ok(Ok(_)) => return,
                        Ok(Err(e)) => format!("job actor failed to start: {e}"),
                        Err(e) => format!("job actor failed to start: {e}"),
                    };
                    tracing::error!(job = %job, actor = %actor_id, "{why}");
                    let _ = me.cast(NodeMsg::JobStartFailed {
                        job_id: job,
                        token,
                        why,
                    });
                });
                self.by_actor
                    .insert(actor.get_id(), (job_id.clone(), token));
                self.running.insert(
                    job_id,
                    Running {
                        token,
                        actor,
                        isolation: None,
                    },
                );
            }
            Err(e) => {
                self.report_crash(job_id, token, format!("job actor failed to start: {e}"))
                    .await;
            }
        }
    }

    fn link_up(&mut self, myself: &ActorRef<NodeMsg>, link: LinkEnd, down: oneshot::Sender<()>) {
        let LinkEnd { tx, mut rx } = link;
        self.next_gen += 1;
        let gen = self.next_gen;
        let me = myself.clone();
        let reader = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                match wire::decode::<ToWorker>(&frame) {
                    Ok(msg) => {
                        if me.cast(NodeMsg::Inbound(gen, msg)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "malformed frame from master; closing link");
                        break;
                    }
                }
            }
            let _ = me.cast(NodeMsg::LinkDown(gen));
        });
        self.link = Some(CurrentLink {
            gen,
            tx,
            reader,
            _down: down,
        });
        self.pending.clear();
        tracing::info!(gen, running = self.running.len(), "linked to the master");
        // Renew at once, then resend every unacknowledged result.
        self.ping();
        let started: Vec<ToMaster> = self
            .running
            .iter()
            .filter_map(|(job_id, r)| {
                r.isolation.map(|isolation| ToMaster::Started {
                    job_id: job_id.clone(),
                    token: r.token,
                    isolation,
                })
            })
            .collect();
        for msg in started {
            self.send(msg);
        }
        if !self.all_acknowledged() {
            tracing::info!("resending the outbox");
        }
        self.resend_outbox(None);
        self.last_resend_ms = mono_ms();
        if self.draining {
            self.send(ToMaster::Draining);
        }
    }

    fn ping(&mut self) {
        let now = mono_ms();
        self.last_ping_ms = Some(now);
        self.send(ToMaster::Ping { sent_ms: now });
    }

    /// After sled failed to write the outbox's log: reopen it once its
    /// disk has room, and move the results kept in memory meanwhile into it.
    async fn mend_outbox(&mut self) {
        if !self.outbox.needs_reopen() {
            return;
        }
        if let Err(e) = self.outbox.reopen() {
            tracing::debug!(error = %e, "outbox not reopened yet");
            return;
        }
        tracing::warn!(
            results = self.unstored.len(),
            "outbox reopened after a failed write; results kept in memory go back into it"
        );
        let unstored: Vec<(AttemptRef, Vec<u8>)> = self.unstored.drain().collect();
        for (attempt, frame) in unstored {
            if let Err(e) = self.outbox.put(&attempt, frame.clone()).await {
                tracing::error!(job = %attempt.job_id, error = %e, "cannot write the outbox; the result stays in memory");
                self.unstored.insert(attempt, frame);
            }
        }
    }

    async fn tick(&mut self) {
        let now = mono_ms();
        let plan = worker::tick(worker::TickInput {
            now_ms: now,
            last_mend_ms: self.last_mend_ms,
            outbox_check_ms: OUTBOX_CHECK.as_millis() as u64,
            linked: self.link.is_some(),
            last_ping_ms: self.last_ping_ms,
            all_acknowledged: self.all_acknowledged(),
            last_resend_ms: self.last_resend_ms,
            jobs_running: !self.running.is_empty(),
            stop_sent: self.lease_stop_sent,
            lease: &self.lease,
            grace_ms: self.grace_ms(),
        });
        if plan.mend_outbox {
            self.last_mend_ms = now;
            self.mend_outbox().await;
        }
        if plan.ping {
            self.ping();
        }
        if plan.resend {
            self.last_resend_ms = now;
            self.resend_outbox(Some(OUTBOX_RESEND.as_millis() as u64));
        }
        if plan.stop_jobs {
            self.lease_stop_sent = true;
            tracing::warn!(
                jobs = self.running.len(),
                "the lease with the master runs out: stopping every job"
            );
            for r in self.running.values() {
                let _ = r.actor.cast(JobMsg::LeaseExpired);
            }
        }
    }
}

/// Start the node's `PowerSamplerActor` under it.
async fn spawn_sampler(
    node: &ActorRef<NodeMsg>,
    config: PowerConfig,
) -> Result<ActorRef<PowerMsg>, ActorProcessingErr> {
    let args = PowerArgs {
        config,
        report_to: Some(node.clone()),
    };
    let (actor, _) = Actor::spawn_linked(None, PowerSamplerActor, args, node.get_cell()).await?;
    Ok(actor)
}

/// The hello a worker opens its link with: whoever establishes the link
/// sends it (the QUIC handshake carries it; the in-process link sends it as
/// its first frame), so the master sees the same first message either way.
/// `running` and `unacked` are empty here; [`NodeMsg::Hello`] fills them.
pub fn hello(config: &NodeConfig) -> ToMaster {
    ToMaster::Hello {
        node_id: config.node_id.clone(),
        protocol_version: PROTOCOL_VERSION,
        slots: config.slots,
        capabilities: Capabilities {
            encoders: config.encoders.clone(),
            cores: cores(),
            memory_bytes: memory_bytes(),
            unavailable_encoders: config.unavailable_encoders.clone(),
            metrics: config.metrics.clone(),
        },
        running: Vec::new(),
        unacked: Vec::new(),
    }
}

/// The number of CPU cores this process may use.
pub fn cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

fn memory_bytes() -> u64 {
    nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .unwrap_or(0)
}

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
