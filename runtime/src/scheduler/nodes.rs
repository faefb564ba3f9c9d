//! Nodes coming and going: recovery at start, a worker's hello (adopt what
//! it still runs, requeue what it lost, kill what is not current), a lost
//! link (fence its attempts until its lease has certainly run out) and
//! fence expiry (requeue as a new attempt).

use std::collections::HashSet;

use crate::lease;
use crate::model::{Failure, FailureReason, JobId, JobState, NodeId};
use crate::state;
use crate::wire::{AttemptRef, ToWorker};

use super::core::{queued, Core, Fenced, NodeEntry};
use super::durable::JobStore;
use super::{Clock, Effect, Hello, LinkId};

/// How long a fenced attempt whose requeue could not be stored waits before
/// it is tried again.
pub(crate) const FENCE_RETRY_MS: u64 = 1_000;

impl<S: JobStore> Core<S> {
    /// Recovery at start: queued jobs go back in the queue; attempts left
    /// `assigned`/`running` are fenced until every lease the previous run
    /// may have granted has ended (their workers report them when they
    /// reconnect, and they are adopted); `lost` (a crash between losing and
    /// requeueing) is finished off. The driver then waits for
    /// [`Core::commit_mark`] before anything else.
    pub fn recover(&mut self, clock: Clock) -> Result<(), S::Error> {
        for job in self.store.in_states(&[JobState::Queued])? {
            self.queue.push(queued(&job));
        }
        let granted = self.store.granted_lease()?.unwrap_or(0).max(self.lease_ms);
        self.store.set_granted_lease(granted)?;
        let until_ms = lease::fence_deadline(clock.mono_ms, granted);
        self.recovery_until_ms = Some(until_ms);
        for job in self
            .store
            .in_states(&[JobState::Assigned, JobState::Running])?
        {
            if let Some(node) = &job.node {
                tracing::info!(job = %job.id, node = %node, "attempt in flight at start-up: waiting for its node");
                self.fenced.insert(
                    job.id.clone(),
                    Fenced {
                        node: node.clone(),
                        token: job.token,
                        until_ms,
                    },
                );
            }
        }
        for job in self.store.in_states(&[JobState::Lost])? {
            let node = job.node.clone().unwrap_or_default();
            self.requeue_attempt(
                &job.id,
                job.token,
                &node,
                FailureReason::WorkerCrash,
                "interrupted while being requeued",
                clock,
            )?;
        }
        self.arm_fence_timer(clock);
        self.gauges();
        Ok(())
    }

    /// A worker said hello on `link`: compare what it holds with what we
    /// believe it holds, adopt what still runs, requeue what it does not
    /// have, kill what is not current; then place jobs.
    pub fn node_up(&mut self, hello: Hello, link: LinkId, clock: Clock) -> Result<(), S::Error> {
        self.node_up_inner(hello, link, clock)?;
        self.dispatch(clock)
    }

    fn node_up_inner(&mut self, hello: Hello, link: LinkId, clock: Clock) -> Result<(), S::Error> {
        let node_id = hello.node_id.clone();
        let mut candidates: HashSet<JobId> = HashSet::new();
        if let Some(old) = self.nodes.remove(&node_id) {
            // The same node again on a new link: the old link is dead.
            self.emit(Effect::StopLink(old.link, "replaced by a new link".into()));
            candidates.extend(old.running);
        }
        candidates.extend(
            self.fenced
                .iter()
                .filter(|(_, f)| f.node == node_id)
                .map(|(j, _)| j.clone()),
        );
        let mut believed = Vec::new();
        for job_id in &candidates {
            if let Some(job) = self.store.get(job_id)? {
                if job.node.as_deref() == Some(node_id.as_str())
                    && matches!(job.state, JobState::Assigned | JobState::Running)
                {
                    believed.push(AttemptRef {
                        job_id: job.id.clone(),
                        token: job.token,
                    });
                }
            }
        }
        let r = lease::reconcile(&believed, &hello.running, &hello.unacked);
        let mut running = HashSet::new();
        for a in r.adopt.iter().chain(&r.awaiting_result) {
            self.fenced.remove(&a.job_id);
            running.insert(a.job_id.clone());
        }
        if !r.adopt.is_empty() {
            tracing::info!(node = %node_id, jobs = ?r.adopt.iter().map(|a| &a.job_id).collect::<Vec<_>>(), "adopted running attempts");
        }
        let mut refused = None;
        for a in &r.requeue {
            let requeued = self.requeue_attempt(
                &a.job_id,
                a.token,
                &node_id,
                FailureReason::WorkerCrash,
                "its node came back without it (the worker restarted, or never got the assignment)",
                clock,
            );
            match requeued {
                Ok(()) => {
                    self.fenced.remove(&a.job_id);
                }
                Err(e) => {
                    // Not stored (a full disk refuses the write whole):
                    // fenced and tried again at a later fence tick, never
                    // forgotten; the node is still taken up below.
                    self.fenced.insert(
                        a.job_id.clone(),
                        Fenced {
                            node: node_id.clone(),
                            token: a.token,
                            until_ms: clock.mono_ms.saturating_add(FENCE_RETRY_MS),
                        },
                    );
                    self.arm_fence_timer(clock);
                    refused.get_or_insert(e);
                }
            }
        }
        tracing::info!(node = %node_id, slots = hello.slots, encoders = ?hello.capabilities.encoders, "node up");
        self.by_link.insert(link, node_id.clone());
        self.nodes.insert(
            node_id.clone(),
            NodeEntry {
                link,
                slots: hello.slots,
                capabilities: hello.capabilities,
                running,
                draining: false,
                power: None,
            },
        );
        for a in r.kill {
            tracing::warn!(job = %a.job_id, node = %node_id, token = a.token, "node runs an attempt that is not current: killing it");
            self.tell(
                &node_id,
                ToWorker::Kill {
                    job_id: a.job_id,
                    token: a.token,
                },
            );
        }
        refused.map_or(Ok(()), Err)
    }

    /// A link ended (`last_heard_ms`: when it last heard from its worker,
    /// monotonic). If it is its node's current link, the node is lost: its
    /// attempts are fenced until its lease has certainly run out, then
    /// jobs are placed elsewhere.
    pub fn link_ended(
        &mut self,
        link: LinkId,
        last_heard_ms: u64,
        why: &str,
        clock: Clock,
    ) -> Result<(), S::Error> {
        let Some(node_id) = self.by_link.remove(&link) else {
            return Ok(());
        };
        // Only if this link is still the node's current one.
        if self.nodes.get(&node_id).is_some_and(|n| n.link == link) {
            self.lose_node(&node_id, last_heard_ms, why, clock)?;
            self.dispatch(clock)?;
        }
        Ok(())
    }

    fn lose_node(
        &mut self,
        node_id: &NodeId,
        last_heard_ms: u64,
        why: &str,
        clock: Clock,
    ) -> Result<(), S::Error> {
        let Some(entry) = self.nodes.remove(node_id) else {
            return Ok(());
        };
        let until_ms = lease::fence_deadline(last_heard_ms, self.lease_ms);
        if entry.running.is_empty() {
            tracing::info!(node = %node_id, "node gone: {why}");
        } else {
            tracing::warn!(
                node = %node_id,
                jobs = entry.running.len(),
                fence_s = until_ms.saturating_sub(clock.mono_ms) as f64 / 1000.0,
                "node lost: {why}; its attempts are held until its lease has run out"
            );
        }
        for job_id in entry.running {
            let Some(job) = self.store.get(&job_id)? else {
                continue;
            };
            if job.node.as_deref() != Some(node_id.as_str()) || job.state.is_terminal() {
                continue;
            }
            self.fenced.insert(
                job_id,
                Fenced {
                    node: node_id.clone(),
                    token: job.token,
                    until_ms,
                },
            );
        }
        self.arm_fence_timer(clock);
        Ok(())
    }

    /// The fence timer fired: requeue every fenced attempt whose fence has
    /// passed (and lower the granted lease once the previous run's have
    /// ended), then place jobs.
    pub fn fence(&mut self, clock: Clock) -> Result<(), S::Error> {
        self.expire_fences(clock)?;
        self.dispatch(clock)
    }

    fn expire_fences(&mut self, clock: Clock) -> Result<(), S::Error> {
        let now = clock.mono_ms;
        self.clear_fence_timer();
        let mut expired: Vec<(JobId, Fenced)> = self
            .fenced
            .iter()
            .filter(|(_, f)| f.until_ms <= now)
            .map(|(j, f)| (j.clone(), f.clone()))
            .collect();
        // In a fixed order, so a run is reproducible.
        expired.sort_by(|a, b| a.0.cmp(&b.0));
        for (job_id, f) in expired {
            self.fenced.remove(&job_id);
            let why = format!("node {} lost and its lease ran out", f.node);
            if let Err(e) = self.requeue_attempt(
                &job_id,
                f.token,
                &f.node,
                FailureReason::NodeLost,
                &why,
                clock,
            ) {
                // Not stored (a full disk refuses the write whole): held
                // again, with the others not reached yet, and tried at a
                // later tick — never forgotten, and no busy loop meanwhile.
                self.fenced.insert(job_id, f);
                let retry_at = now.saturating_add(FENCE_RETRY_MS);
                for held in self.fenced.values_mut() {
                    if held.until_ms <= now {
                        held.until_ms = retry_at;
                    }
                }
                self.arm_fence_timer(clock);
                return Err(e);
            }
        }
        if self.recovery_until_ms.is_some_and(|t| t <= now) {
            // Leases granted by the previous run have all ended.
            match self.store.set_granted_lease(self.lease_ms) {
                Ok(()) => self.recovery_until_ms = None,
                Err(e) if S::is_storage_full(&e) => {
                    // The value stored stands (never below the leases
                    // granted): tried again at a later tick, and the
                    // fences above keep their timer meanwhile.
                    tracing::warn!(error = %e, "granted lease not lowered yet");
                    self.recovery_until_ms = Some(now.saturating_add(FENCE_RETRY_MS));
                }
                Err(e) => {
                    self.arm_fence_timer(clock);
                    return Err(e);
                }
            }
        }
        self.arm_fence_timer(clock);
        Ok(())
    }

    /// The attempt `token` of `job_id` no longer runs on `node`: `lost`, and
    /// requeued as a new attempt while attempts remain.
    fn requeue_attempt(
        &mut self,
        job_id: &JobId,
        token: u64,
        node: &NodeId,
        reason: FailureReason,
        why: &str,
        clock: Clock,
    ) -> Result<(), S::Error> {
        let Some(mut job) = self.store.get(job_id)? else {
            return Ok(());
        };
        if job.token != token
            || job.node.as_deref() != Some(node.as_str())
            || job.state.is_terminal()
        {
            return Ok(());
        }
        let failure = Failure::new(reason, why);
        let jitter = self.jitter();
        match state::lose(&mut job, failure, clock.now_ms, &self.retry, jitter) {
            Ok(applied) => {
                self.put(&job)?;
                tracing::info!(job = %job_id, state = job.state.as_str(), "attempt lost: {why}");
                self.after_applied(&job, &applied);
            }
            Err(e) => tracing::error!(job = %job_id, error = ?e, "cannot mark lost"),
        }
        Ok(())
    }
}
