//! What the API asks of the scheduler: accept submitted jobs, cancel,
//! retry, drain a node, list the nodes.

use std::collections::HashMap;
use std::time::Duration;

use crate::model::{Job, JobId, JobState, NodeId};
use crate::state::{self, CancelAction};
use crate::wire::{Capabilities, ToWorker};

use super::core::{node_info, queued, Core};
use super::durable::{JobStore, WriteMark};
use super::{CancelReply, Clock, Effect, Metric, NodeInfo, RetryReply, Ticket, UpdateKind};

impl<S: JobStore> Core<S> {
    /// Jobs already written (not yet durably) by the submission path: queue
    /// them, place what fits, and return the mark whose flush makes the
    /// submissions and any assignment durable (one flush for both), with
    /// the dispatch's result. Their `queued` updates and the assignments
    /// are held until then; a flush is requested last.
    pub fn accept(&mut self, jobs: Vec<Job>, clock: Clock) -> (WriteMark, Result<(), S::Error>) {
        // The submissions were written before: a mark taken now covers
        // them. No flush yet, so that the assignments below share it.
        self.mark_accepted(jobs.len());
        let mut any_queued = false;
        for job in &jobs {
            self.publish(UpdateKind::State, job);
            if job.state == JobState::Queued {
                self.queue.push(queued(job));
                any_queued = true;
            }
        }
        let dispatched = if any_queued {
            self.dispatch(clock)
        } else {
            Ok(())
        };
        self.emit(Effect::RequestFlush);
        (self.last_mark(), dispatched)
    }

    /// Cancel a job: a queued one at once (answered once durable), a
    /// running one by telling its worker (answered after what is held).
    pub fn cancel(&mut self, job_id: &JobId, ticket: Ticket, clock: Clock) -> Result<(), S::Error> {
        let Some(mut job) = self.store.get(job_id)? else {
            self.emit(Effect::CancelReply(ticket, CancelReply::NotFound));
            return Ok(());
        };
        if job.state.is_terminal() {
            // As it is once durable (it may have just finished).
            self.hold(Effect::CancelReply(
                ticket,
                CancelReply::AlreadyFinished(Box::new(job)),
            ));
            return Ok(());
        }
        match state::cancel(&mut job, clock.now_ms) {
            Ok(CancelAction::CancelledWhileQueued) => {
                let was_queued = self.queue.remove(job_id);
                if let Err(e) = self.put(&job) {
                    // Not stored: still queued, so back in the queue.
                    if was_queued {
                        if let Ok(Some(stored)) = self.store.get(job_id) {
                            self.queue.push(queued(&stored));
                        }
                    }
                    return Err(e);
                }
                self.emit(Effect::Metric(Metric::Finished(JobState::Cancelled)));
                self.publish(UpdateKind::State, &job);
                self.gauges();
                // Answered once the cancellation is durable.
                self.hold(Effect::CancelReply(
                    ticket,
                    CancelReply::Cancelled(Box::new(job)),
                ));
            }
            Ok(CancelAction::NotifyWorker { node, token }) => {
                self.tell(
                    &node,
                    ToWorker::Cancel {
                        job_id: job_id.clone(),
                        token,
                    },
                );
                self.hold(Effect::CancelReply(
                    ticket,
                    CancelReply::Requested(Box::new(job)),
                ));
            }
            Err(e) => {
                tracing::warn!(job = %job_id, error = ?e, "cancel refused");
                self.hold(Effect::CancelReply(
                    ticket,
                    CancelReply::AlreadyFinished(Box::new(job)),
                ));
            }
        }
        Ok(())
    }

    /// Re-queue a job that ended without success through `state::retry`,
    /// answered once durable, then place it like a new submission.
    pub fn retry(&mut self, job_id: &JobId, ticket: Ticket, clock: Clock) -> Result<(), S::Error> {
        let Some(mut job) = self.store.get(job_id)? else {
            self.emit(Effect::RetryReply(ticket, RetryReply::NotFound));
            return Ok(());
        };
        // Refused before a queue place is drawn for it, with the job as it
        // is once durable (it may have just changed).
        if state::transition(job.state, state::JobEvent::Retry).is_err() {
            self.hold(Effect::RetryReply(
                ticket,
                RetryReply::NotRetryable(Box::new(job)),
            ));
            return Ok(());
        }
        let queue_seq = self.store.next_seq()?;
        let from = job.state;
        if let Err(e) = state::retry(&mut job, queue_seq, clock.now_ms) {
            tracing::warn!(job = %job_id, error = ?e, "retry refused");
            self.hold(Effect::RetryReply(
                ticket,
                RetryReply::NotRetryable(Box::new(job)),
            ));
            return Ok(());
        }
        self.put(&job)?;
        tracing::info!(job = %job_id, from = from.as_str(), attempts = job.attempt, "re-queued by a retry");
        self.emit(Effect::Metric(Metric::Retried("manual".into())));
        self.queue.push(queued(&job));
        self.publish(UpdateKind::State, &job);
        // Answered once the re-queue is durable, like every transition.
        self.hold(Effect::RetryReply(
            ticket,
            RetryReply::Requeued(Box::new(job)),
        ));
        // As for a submission: place it now if a slot is free (the
        // assignment is held behind the re-queue's write).
        self.dispatch(clock)
    }

    /// Drain a node: no new assignments; its worker is told (after what is
    /// held for it). `None` if no such node is connected.
    pub fn drain(&mut self, node_id: &NodeId, deadline: Duration) -> Option<NodeInfo> {
        let n = self.nodes.get_mut(node_id)?;
        n.draining = true;
        tracing::info!(node = %node_id, ?deadline, "drain requested");
        let info = node_info(node_id, n);
        self.tell(
            node_id,
            ToWorker::Drain {
                deadline_ms: deadline.as_millis() as u64,
            },
        );
        Some(info)
    }

    /// Every node, connected or gone but still holding fenced attempts,
    /// sorted by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = self.nodes.iter().map(|(id, n)| node_info(id, n)).collect();
        // Nodes that are gone but may still run fenced attempts.
        let mut gone: HashMap<&NodeId, Vec<JobId>> = HashMap::new();
        for (job_id, f) in &self.fenced {
            if !self.nodes.contains_key(&f.node) {
                gone.entry(&f.node).or_default().push(job_id.clone());
            }
        }
        for (id, mut running) in gone {
            running.sort();
            nodes.push(NodeInfo {
                id: id.clone(),
                slots: 0,
                running,
                capabilities: Capabilities::default(),
                draining: false,
                connected: false,
                power: None,
            });
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }
}
