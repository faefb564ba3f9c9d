//! The events the tests drive the core with, as the driver and the
//! workers would make them.

use super::*;

impl World {
    // ---- events -------------------------------------------------------

    /// A submission as the driver makes it: written, then accepted.
    pub(super) fn submit(&mut self) -> Option<String> {
        let seq = self.core.store_mut().next_seq().ok()?;
        let id = format!("job-{seq:04}");
        let job = Job::new(id.clone(), seq, spec(), self.clock.now_ms);
        self.core.store_mut().submit(&job).ok()?;
        let (mark, r) = self.core.accept(vec![job], self.clock);
        self.accepted.push((id.clone(), mark));
        self.settle(r);
        Some(id)
    }

    pub(super) fn cancel(&mut self, id: &str) -> u64 {
        self.next_ticket += 1;
        let t = self.next_ticket;
        let r = self.core.cancel(&id.to_string(), t, self.clock);
        self.settle(r);
        t
    }

    pub(super) fn retry(&mut self, id: &str) -> u64 {
        self.next_ticket += 1;
        let t = self.next_ticket;
        let r = self.core.retry(&id.to_string(), t, self.clock);
        self.settle(r);
        t
    }

    /// A worker (re)connects. `fresh`: its process restarted and runs
    /// nothing (its outbox survives). Its outbox's results follow the hello.
    pub(super) fn node_up(&mut self, node: &str, slots: u32, fresh: bool) {
        self.next_link += 1;
        let link = self.next_link;
        let w = self.workers.entry(node.to_string()).or_default();
        if fresh {
            w.running.clear();
        }
        w.link = Some(link);
        w.lease_end = None;
        let refs = |s: &mut dyn Iterator<Item = &(String, u64)>| -> Vec<AttemptRef> {
            s.map(|(j, t)| AttemptRef {
                job_id: j.clone(),
                token: *t,
            })
            .collect()
        };
        let hello = Hello {
            node_id: node.to_string(),
            slots,
            capabilities: caps(),
            running: refs(&mut w.running.iter()),
            unacked: refs(&mut w.outbox.keys()),
        };
        let results: Vec<((String, u64), Outcome)> = w
            .outbox
            .iter()
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        // Fenced attempts the worker reports running within their fence.
        let now = self.clock.mono_ms;
        let adopt: Vec<(String, u64)> = hello
            .running
            .iter()
            .filter(|a| {
                self.core
                    .fenced(&a.job_id)
                    .is_some_and(|(n, t, until)| n == node && t == a.token && now < until)
            })
            .map(|a| (a.job_id.clone(), a.token))
            .collect();
        // The node says it does not hold the others: their fences may end now.
        let held: BTreeSet<(String, u64)> = hello
            .running
            .iter()
            .map(|a| (a.job_id.clone(), a.token))
            .collect();
        let store = self.core.store();
        self.expected_fences.retain(|id, (t, _)| {
            let on_node = store
                .get(id)
                .ok()
                .flatten()
                .is_some_and(|j| j.node.as_deref() == Some(node));
            !on_node || held.contains(&(id.clone(), *t))
        });
        let r = self.core.node_up(hello, link, self.clock);
        self.settle(r);
        // 5. Adopted, not rerun: same attempt, now on this node again.
        for (id, token) in adopt {
            let job = self.core.store().get(&id).ok().flatten();
            assert!(
                job.as_ref()
                    .is_some_and(|j| j.token == token && !j.state.is_terminal()),
                "{id}: a fenced attempt reported within its fence was not adopted: {job:?}"
            );
            assert_eq!(
                self.core.running_on(&id),
                vec![node.to_string()],
                "{id} adopted"
            );
        }
        for ((job_id, token), outcome) in results {
            self.send(
                node,
                ToMaster::Finished {
                    job_id,
                    token,
                    outcome,
                    energy: None,
                },
            );
        }
    }

    /// A worker's link ends (last heard now).
    pub(super) fn node_lost(&mut self, node: &str) {
        let Some(w) = self.workers.get_mut(node) else {
            return;
        };
        let Some(link) = w.link.take() else { return };
        w.lease_end = Some(self.clock.mono_ms + LEASE_MS);
        let running: Vec<String> = self.core.running_on_node(node);
        let r = self
            .core
            .link_ended(link, self.clock.mono_ms, "test", self.clock);
        let until = lease::fence_deadline(self.clock.mono_ms, LEASE_MS);
        for id in running {
            if let Ok(Some(j)) = self.core.store().get(&id) {
                if j.node.as_deref() == Some(node) && !j.state.is_terminal() {
                    self.expected_fences.insert(id, (j.token, until));
                }
            }
        }
        self.settle(r);
    }

    /// A message from a connected worker.
    pub(super) fn send(&mut self, node: &str, msg: ToMaster) {
        if self.workers.get(node).is_none_or(|w| w.link.is_none()) {
            return;
        }
        let result = match &msg {
            ToMaster::Finished { job_id, token, .. } => Some((job_id.clone(), *token)),
            _ => None,
        };
        let before = result
            .as_ref()
            .and_then(|(j, _)| self.core.store().get(j).ok().flatten());
        let written = self.core.store().written();
        let r = self.core.from_worker(&node.to_string(), msg, self.clock);
        if let Some((j, t)) = result {
            // The result's write is the first one of this call that changed the job.
            let changed = self
                .core
                .store()
                .log()
                .iter()
                .find(|(w, job)| {
                    *w > written
                        && job.id == j
                        && job.state != JobState::Assigned
                        && Some(job) != before.as_ref()
                })
                .map(|(w, _)| *w);
            if let Some(w) = changed {
                self.results_written.entry((j, t)).or_insert(w);
            }
        }
        self.settle(r);
    }

    /// The worker starts, reports progress on, or finishes an attempt.
    pub(super) fn work(&mut self, node: &str, pick: usize, what: u8) {
        let Some(w) = self.workers.get_mut(node) else {
            return;
        };
        if w.link.is_none() {
            return;
        }
        let Some((job_id, token)) = w.running.iter().nth(pick % w.running.len().max(1)).cloned()
        else {
            return;
        };
        let msg = match what % 4 {
            0 => ToMaster::Started {
                job_id,
                token,
                isolation: Isolation::None,
            },
            1 => ToMaster::Progress {
                job_id,
                token,
                progress: Progress {
                    frame: 1,
                    ..Progress::default()
                },
            },
            n => {
                let outcome = if n == 2 { succeeded() } else { transient() };
                w.running.remove(&(job_id.clone(), token));
                w.outbox.insert((job_id.clone(), token), outcome.clone());
                ToMaster::Finished {
                    job_id,
                    token,
                    outcome,
                    energy: None,
                }
            }
        };
        self.send(node, msg);
    }

    /// Time passes; disconnected workers whose lease ended stop their
    /// jobs; due timers fire.
    pub(super) fn advance(&mut self, ms: u64) {
        self.clock.now_ms += ms;
        self.clock.mono_ms += ms;
        let now = self.clock.mono_ms;
        for w in self.workers.values_mut() {
            if w.lease_end.is_some_and(|e| e <= now) {
                w.running.clear();
            }
        }
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(t, _)| *t)
            .collect();
        self.timers.retain(|(_, at)| *at > now);
        let (fence, wake) = (due.contains(&Timer::Fence), due.contains(&Timer::Wake));
        if fence {
            let live = |w: &World, id: &str| {
                w.core.store().get(id).ok().flatten().map(|j| {
                    (
                        j.token,
                        matches!(j.state, JobState::Assigned | JobState::Running),
                    )
                })
            };
            let before: Vec<(String, Option<(u64, bool)>)> = self
                .expected_fences
                .keys()
                .map(|id| (id.clone(), live(self, id)))
                .collect();
            let full = self.core.store().full;
            let r = self.core.fence(self.clock);
            self.settle(r);
            for (id, was) in before {
                let Some((etok, until)) = self.expected_fences.get(&id).copied() else {
                    continue;
                };
                let is = live(self, &id);
                // 5. Never requeued before the deadline...
                if was == Some((etok, true)) && is != was {
                    assert!(
                        now >= until,
                        "{id} requeued at {now}, before its fence {until}"
                    );
                }
                // ...and requeued at the first tick after it (unless the
                // node came back and holds it, or the disk refused).
                let held = !self.core.running_on(&id).is_empty();
                // A refused requeue is tried again FENCE_RETRY_MS later.
                let retried = self
                    .full_until
                    .is_none_or(|t| now >= t + super::super::nodes::FENCE_RETRY_MS);
                if now >= until && is == Some((etok, true)) && !held && !full && retried {
                    panic!(
                        "{id} still live at {now}, past its fence {until}: fenced {:?}, job {:?}",
                        self.core.fenced(&id),
                        self.core
                            .store()
                            .get(&id)
                            .ok()
                            .flatten()
                            .map(|j| (j.state, j.node, j.token))
                    );
                }
            }
        }
        if wake {
            let r = self.core.wake(self.clock);
            self.settle(r);
        }
    }

    /// The store completes a flush up to `upto` writes past what is durable.
    pub(super) fn flush(&mut self, upto: u64) {
        let target = self.core.store().durable() + upto;
        self.core.store_mut().make_durable(target);
    }

    /// The waiter reports its mark, if durable by now.
    pub(super) fn report(&mut self) {
        if let Some(m) = self.waiter {
            if self.core.store().is_durable(m) {
                self.waiter = None;
                self.core.waiter_done();
                self.core.durable(m);
                self.settle(Ok(()));
            }
        }
    }

    /// Flush everything and report it.
    pub(super) fn flush_all(&mut self) {
        while self.waiter.is_some() {
            let w = self.core.store().written();
            self.core.store_mut().make_durable(w);
            self.report();
        }
    }

    pub(super) fn set_full(&mut self, full: bool) {
        if self.core.store().full && !full {
            self.full_until = Some(self.clock.mono_ms);
        }
        self.core.store_mut().full = full;
    }
}
