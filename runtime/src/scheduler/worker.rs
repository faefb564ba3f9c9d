//! What a worker's message does (docs/PROTOCOL.md, "Stale messages"): a
//! message about the current attempt from the node it was assigned to is
//! applied through `state`; one about an attempt the master does not hold
//! live (a stale token, an unknown job, an attempt that ended, another
//! node's attempt) changes nothing and is answered with `Kill`, or, for a
//! result, with the `Ack` that lets the worker forget it.

use crate::model::{JobState, NodeId};
use crate::state::{self, JobOpError};
use crate::wire::{AttemptRef, ToMaster, ToWorker};

use super::core::Core;
use super::durable::JobStore;
use super::{Clock, Effect, Metric, UpdateKind};

impl<S: JobStore> Core<S> {
    /// A message from the worker `node_id`; after a result, jobs are placed.
    pub fn from_worker(
        &mut self,
        node_id: &NodeId,
        msg: ToMaster,
        clock: Clock,
    ) -> Result<(), S::Error> {
        let finished = matches!(msg, ToMaster::Finished { .. });
        self.on_worker_message(node_id, msg, clock)?;
        if finished {
            self.dispatch(clock)?;
        }
        Ok(())
    }

    fn on_worker_message(
        &mut self,
        node_id: &NodeId,
        msg: ToMaster,
        clock: Clock,
    ) -> Result<(), S::Error> {
        let now = clock.now_ms;
        let (job_id, token) = match &msg {
            ToMaster::Hello { .. } | ToMaster::Ping { .. } => return Ok(()),
            ToMaster::Draining => {
                if let Some(n) = self.nodes.get_mut(node_id) {
                    n.draining = true;
                    tracing::info!(node = %node_id, "node is draining");
                }
                return Ok(());
            }
            ToMaster::Power(power) => {
                self.emit(Effect::Metric(Metric::NodePower(
                    node_id.clone(),
                    power.clone(),
                )));
                if let Some(n) = self.nodes.get_mut(node_id) {
                    n.power = Some(power.clone());
                }
                return Ok(());
            }
            ToMaster::Started { job_id, token, .. }
            | ToMaster::Progress { job_id, token, .. }
            | ToMaster::Finished { job_id, token, .. } => (job_id.clone(), *token),
        };
        let is_result = matches!(msg, ToMaster::Finished { .. });
        let ack = AttemptRef {
            job_id: job_id.clone(),
            token,
        };
        let Some(mut job) = self.store.get(&job_id)? else {
            if is_result {
                tracing::warn!(job = %job_id, node = %node_id, "result for an unknown job dropped");
                self.tell(node_id, ToWorker::Ack(ack));
            } else {
                tracing::warn!(job = %job_id, node = %node_id, "worker reported an unknown job; telling it to kill");
                self.tell(node_id, ToWorker::Kill { job_id, token });
            }
            return Ok(());
        };
        // The current attempt's token from a node it was not assigned to:
        // another worker's job. (A stale token takes the paths below.)
        if token == job.token && job.node.as_deref() != Some(node_id.as_str()) {
            tracing::warn!(job = %job_id, node = %node_id, assigned = ?job.node, token, "message about an attempt assigned to another node ignored");
            if is_result {
                self.tell(node_id, ToWorker::Ack(ack));
            } else {
                self.tell(node_id, ToWorker::Kill { job_id, token });
            }
            return Ok(());
        }
        let result = match msg {
            ToMaster::Hello { .. }
            | ToMaster::Ping { .. }
            | ToMaster::Draining
            | ToMaster::Power(_) => return Ok(()),
            // Resent on every new link in case the first one was lost.
            ToMaster::Started { .. } if job.state == JobState::Running && job.token == token => {
                return Ok(())
            }
            ToMaster::Started { isolation, .. } => {
                state::start(&mut job, token, isolation, now).map(|()| None)
            }
            ToMaster::Progress { progress, .. } => {
                match state::progress(&mut job, token, progress, now) {
                    Ok(()) => {
                        // Not waited for: progress licenses nothing. Its
                        // update still goes in order after held ones.
                        self.store.put(&job)?;
                        self.publish(UpdateKind::Progress, &job);
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            ToMaster::Finished {
                outcome, energy, ..
            } => {
                let jitter = self.jitter();
                state::finish(&mut job, token, outcome, energy, now, &self.retry, jitter).map(Some)
            }
        };
        match result {
            Ok(applied) => {
                self.put(&job)?;
                if let Some(applied) = applied {
                    if let Some(n) = self.nodes.get_mut(node_id) {
                        n.running.remove(&job_id);
                    }
                    tracing::info!(job = %job_id, state = job.state.as_str(), "attempt finished");
                    if let Some(e) = job.attempts.last().and_then(|a| a.energy.clone()) {
                        self.emit(Effect::Metric(Metric::Energy {
                            scenario: job.spec.scenario.clone(),
                            codec: job.spec.encode.codec,
                            energy: e,
                        }));
                    }
                    self.after_applied(&job, &applied);
                } else {
                    self.publish(UpdateKind::State, &job);
                }
            }
            // A result for an attempt that is over (applied before: this is
            // a resend from the outbox) only needs its acknowledgement.
            Err(e) if is_result => {
                tracing::info!(job = %job_id, node = %node_id, token, error = %e, "result not applied (a resend, or a fenced attempt); acknowledged");
            }
            Err(JobOpError::StaleToken { current, got }) => {
                tracing::warn!(job = %job_id, node = %node_id, current, got, "stale token: telling the worker to kill that attempt");
                self.tell(node_id, ToWorker::Kill { job_id, token });
            }
            // The attempt is not live on the master (ended, or never
            // started as the message says): whatever runs there for it must
            // stop, as for a stale token (docs/PROTOCOL.md, "Stale messages").
            Err(e) => {
                tracing::warn!(job = %job_id, node = %node_id, error = ?e, "message about an attempt that is not live: telling the worker to kill it");
                self.tell(node_id, ToWorker::Kill { job_id, token });
            }
        }
        if is_result {
            // Held until the outcome is durable: then the worker may forget it.
            self.tell(node_id, ToWorker::Ack(ack));
        }
        Ok(())
    }
}
