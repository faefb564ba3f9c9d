//! `NodeActor`: the root of a worker's tree. Holds the link to the master,
//! supervises one `JobActor` per running attempt.
//!
//! Restart policy (DESIGN.md §3): a `JobActor` is never restarted in place.
//! When one stops without having reported (it panicked, or its `pre_start`
//! failed), the node reports the attempt to the master as a transient
//! `worker_crash`, and the master decides whether to retry (a new attempt,
//! new token, new actor). The node itself carries on; only the loss of its
//! link to the master stops it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_runtime::cgroup::CgroupManager;
use ffrtmp_runtime::model::{Failure, FailureReason, Isolation, JobId, NodeId, Outcome, Progress};
use ffrtmp_runtime::wire::{self, Capabilities, ToMaster, ToWorker, PROTOCOL_VERSION};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::job::{JobActor, JobArgs, JobMsg};
use crate::link::LinkEnd;

/// How a worker node is set up.
#[derive(Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub slots: u32,
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    pub cgroups: Arc<CgroupManager>,
    pub nice: i32,
    pub kill_grace: Duration,
    /// Encoders this node advertises (already probed by a real encode).
    pub encoders: Vec<String>,
    /// Set when the node stopped because it finished draining: its owner
    /// should leave rather than reconnect.
    pub drained: Arc<std::sync::atomic::AtomicBool>,
}

pub struct NodeArgs {
    pub config: NodeConfig,
    pub link: LinkEnd,
}

pub enum NodeMsg {
    /// A frame from the master.
    Inbound(ToWorker),
    JobStarted {
        job_id: JobId,
        token: u64,
        isolation: Isolation,
    },
    JobProgress {
        job_id: JobId,
        token: u64,
        progress: Progress,
    },
    JobFinished {
        job_id: JobId,
        token: u64,
        outcome: Outcome,
    },
    /// Drain: take no new jobs, let the running ones finish for at most
    /// `deadline`, then stop them (reported transient) and stop the node.
    Drain { deadline: Duration },
    /// The drain deadline passed.
    DrainDeadline,
    /// Test-only: make the JobActor of `job_id` panic.
    #[cfg(feature = "fault-injection")]
    InjectJobPanic(JobId),
}

struct Running {
    token: u64,
    actor: ActorRef<JobMsg>,
}

pub struct NodeState {
    config: NodeConfig,
    to_master: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
    running: HashMap<JobId, Running>,
    by_actor: HashMap<ActorId, (JobId, u64)>,
    draining: bool,
}

impl Drop for NodeState {
    fn drop(&mut self) {
        self.reader.abort();
        // ractor does not stop children with their supervisor. `post_stop`
        // stops them and waits; this covers the paths that skip it (a panic).
        for r in self.running.values() {
            r.actor.stop(Some("node stopped".into()));
        }
    }
}

/// How long a stopping node waits for its JobActors to clean up.
const STOP_CHILDREN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct NodeActor;

impl NodeState {
    async fn begin_drain(&mut self, myself: &ActorRef<NodeMsg>, deadline: Duration) {
        if self.draining {
            return;
        }
        self.draining = true;
        tracing::info!(jobs = self.running.len(), ?deadline, "draining");
        self.send(ToMaster::Draining).await;
        myself.send_after(deadline, || NodeMsg::DrainDeadline);
        self.stop_if_drained(myself);
    }

    fn stop_if_drained(&self, myself: &ActorRef<NodeMsg>) {
        if self.draining && self.running.is_empty() {
            self.config
                .drained
                .store(true, std::sync::atomic::Ordering::SeqCst);
            myself.stop(Some("drained".into()));
        }
    }

    /// The attempt ended here without FFmpeg being at fault: a transient
    /// `worker_crash`, so the master retries it while attempts remain.
    async fn report_crash(&self, job_id: JobId, token: u64, why: String) {
        let failure = Failure::new(FailureReason::WorkerCrash, why);
        self.send(ToMaster::Finished {
            job_id,
            token,
            outcome: Outcome::Transient { failure },
        })
        .await;
    }

    async fn send(&self, msg: ToMaster) {
        match wire::encode(&msg) {
            Ok(frame) => {
                if self.to_master.send(frame).await.is_err() {
                    tracing::warn!("link to master closed; message dropped");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode message to master"),
        }
    }
}

/// The hello a worker opens its link with: whoever establishes the link
/// sends it (the QUIC handshake carries it; the in-process link sends it as
/// its first frame), so the master sees the same first message either way.
pub fn hello(config: &NodeConfig) -> ToMaster {
    ToMaster::Hello {
        node_id: config.node_id.clone(),
        protocol_version: PROTOCOL_VERSION,
        slots: config.slots,
        capabilities: Capabilities {
            encoders: config.encoders.clone(),
            cores: cores(),
            memory_bytes: memory_bytes(),
        },
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
        let NodeArgs { config, link } = args;
        let LinkEnd { tx, mut rx } = link;

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

        let me = myself.clone();
        let reader = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                match wire::decode::<ToWorker>(&frame) {
                    Ok(msg) => {
                        if me.cast(NodeMsg::Inbound(msg)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "malformed frame from master; closing link");
                        break;
                    }
                }
            }
            me.stop(Some("link to master closed".into()));
        });

        let state = NodeState {
            config,
            to_master: tx,
            reader,
            running: HashMap::new(),
            by_actor: HashMap::new(),
            draining: false,
        };
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Inbound(ToWorker::Assign(a)) => {
                if state.running.contains_key(&a.job_id) {
                    tracing::warn!(job = %a.job_id, "duplicate assignment ignored");
                    return Ok(());
                }
                if state.draining {
                    state
                        .report_crash(a.job_id, a.token, "node is draining".into())
                        .await;
                    return Ok(());
                }
                if state.running.len() as u32 >= state.config.slots {
                    state
                        .report_crash(a.job_id, a.token, "no free slot on node".into())
                        .await;
                    return Ok(());
                }
                let (job_id, token) = (a.job_id.clone(), a.token);
                let args = JobArgs {
                    assignment: a,
                    node: myself.clone(),
                    ffmpeg: state.config.ffmpeg.clone(),
                    ffprobe: state.config.ffprobe.clone(),
                    cgroups: state.config.cgroups.clone(),
                    nice: state.config.nice,
                    kill_grace: state.config.kill_grace,
                    lease: None,
                };
                match Actor::spawn_linked(
                    Some(JobActor::name(&job_id, token)),
                    JobActor,
                    args,
                    myself.get_cell(),
                )
                .await
                {
                    Ok((actor, _)) => {
                        state
                            .by_actor
                            .insert(actor.get_id(), (job_id.clone(), token));
                        state.running.insert(job_id, Running { token, actor });
                    }
                    Err(e) => {
                        state
                            .report_crash(job_id, token, format!("job actor failed to start: {e}"))
                            .await;
                    }
                }
            }
            NodeMsg::Inbound(ToWorker::Cancel { job_id, token })
            | NodeMsg::Inbound(ToWorker::Kill { job_id, token }) => {
                match state.running.get(&job_id) {
                    Some(r) if r.token == token => {
                        let _ = r.actor.cast(JobMsg::Cancel);
                    }
                    _ => tracing::debug!(job = %job_id, token, "cancel for no running attempt"),
                }
            }
            NodeMsg::Inbound(ToWorker::Drain { deadline_ms }) => {
                state
                    .begin_drain(&myself, Duration::from_millis(deadline_ms))
                    .await;
            }
            NodeMsg::Drain { deadline } => state.begin_drain(&myself, deadline).await,
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
                state
                    .send(ToMaster::Started {
                        job_id,
                        token,
                        isolation,
                    })
                    .await
            }
            NodeMsg::JobProgress {
                job_id,
                token,
                progress,
            } => {
                state
                    .send(ToMaster::Progress {
                        job_id,
                        token,
                        progress,
                    })
                    .await
            }
            NodeMsg::JobFinished {
                job_id,
                token,
                outcome,
            } => {
                if let Some(r) = state.running.get(&job_id) {
                    if r.token == token {
                        let r = state.running.remove(&job_id);
                        if let Some(r) = r {
                            state.by_actor.remove(&r.actor.get_id());
                        }
                    }
                }
                state
                    .send(ToMaster::Finished {
                        job_id,
                        token,
                        outcome,
                    })
                    .await;
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
        _state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // Every JobActor's state is dropped: its process group killed, its cgroup removed.
        myself
            .stop_children_and_wait(Some("node stopping".into()), Some(STOP_CHILDREN_TIMEOUT))
            .await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<NodeMsg>,
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
