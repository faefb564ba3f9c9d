//! What the `NodeActor` does with its state: drain, report, send and resend
//! through the outbox, answer pongs, take assignments, bring a link up and
//! tick; and the hello that describes the node to the master.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ffrtmp_runtime::model::{Energy, Failure, FailureReason, JobId, Outcome};
use ffrtmp_runtime::wire::{
    self, Assignment, AttemptRef, Capabilities, ToMaster, ToWorker, PROTOCOL_VERSION,
};
use ffrtmp_runtime::worker::{self, Admission};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};

use crate::job::{JobActor, JobArgs, JobMsg};
use crate::link::LinkEnd;
use crate::mono_ms;
use crate::power::{PowerArgs, PowerConfig, PowerMsg, PowerSamplerActor};

use super::{CurrentLink, NodeConfig, NodeMsg, NodeState, Running, OUTBOX_CHECK, OUTBOX_RESEND};

impl NodeState {
    pub(super) fn grace_ms(&self) -> u64 {
        self.config.kill_grace.as_millis() as u64
    }

    pub(super) async fn begin_drain(&mut self, myself: &ActorRef<NodeMsg>, deadline: Duration) {
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
    pub(super) fn stop_if_drained(&self, myself: &ActorRef<NodeMsg>) {
        if self.draining && self.running.is_empty() && self.all_acknowledged() {
            self.config
                .drained
                .store(true, std::sync::atomic::Ordering::SeqCst);
            myself.stop(Some("drained".into()));
        }
    }

    /// The attempt ended here without FFmpeg being at fault: a transient
    /// `worker_crash`, so the master retries it while attempts remain.
    pub(super) async fn report_crash(&mut self, job_id: JobId, token: u64, why: String) {
        let failure = Failure::new(FailureReason::WorkerCrash, why);
        self.finished(job_id, token, Outcome::Transient { failure }, None)
            .await;
    }

    /// Into the outbox (durably), then to the master if linked.
    pub(super) async fn finished(
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

    pub(super) fn send(&mut self, msg: ToMaster) {
        match wire::encode(&msg) {
            Ok(frame) => self.send_frame(frame),
            Err(e) => tracing::error!(error = %e, "cannot encode message to master"),
        }
    }

    /// Sends on the current link without waiting: the node must keep
    /// ticking (its lease) even if the link is stuck. Without a link, or with
    /// a full one, the frame is dropped; results are in the outbox and are
    /// resent ([`OUTBOX_RESEND`], and on every new link).
    pub(super) fn send_frame(&mut self, frame: Vec<u8>) {
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
    pub(super) fn resend_outbox(&mut self, min_age_ms: Option<u64>) {
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
    pub(super) fn all_acknowledged(&self) -> bool {
        self.outbox.is_empty() && self.unstored.is_empty()
    }

    pub(super) fn attempts(&self) -> Vec<AttemptRef> {
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

    pub(super) async fn on_pong(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        sent_ms: u64,
        lease_ms: u64,
    ) {
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
    pub(super) fn lease_too_short(&self) -> Option<String> {
        worker::lease_too_short(self.granted_ms, self.grace_ms())
    }

    pub(super) async fn assign(&mut self, myself: &ActorRef<NodeMsg>, a: Assignment) {
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

    pub(super) fn link_up(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        link: LinkEnd,
        down: oneshot::Sender<()>,
    ) {
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

    pub(super) fn ping(&mut self) {
        let now = mono_ms();
        self.last_ping_ms = Some(now);
        self.send(ToMaster::Ping { sent_ms: now });
    }

    /// After sled failed to write the outbox's log: reopen it once its
    /// disk has room, and move the results kept in memory meanwhile into it.
    pub(super) async fn mend_outbox(&mut self) {
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

    pub(super) async fn tick(&mut self) {
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
pub(super) async fn spawn_sampler(
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

pub(super) fn memory_bytes() -> u64 {
    nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .unwrap_or(0)
}
