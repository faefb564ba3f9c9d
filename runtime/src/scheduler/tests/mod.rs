//! Tests of the scheduling core against [`MemStore`]: a harness that plays
//! the driver (executes effects, waits for marks, fires timers) and the
//! workers (a model of what each runs and what results wait in its
//! outbox), and checks the invariants after every step (`check`).

mod events;
mod invariants;
mod prop;
mod unit;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::encoders;
use crate::lease;
use crate::model::{
    Failure, FailureReason, Isolation, Job, JobResult, JobState, Outcome, Progress,
};
use crate::retry::RetryPolicy;
use crate::wire::{AttemptRef, Capabilities, ToMaster, ToWorker};

use super::{
    CancelReply, Clock, Config, Core, Effect, Hello, JobStore, LinkId, MemStore, RetryReply, Timer,
    UpdateKind, WriteMark,
};

pub(super) const LEASE_MS: u64 = 10_000;

/// A worker as the harness models it.
#[derive(Debug, Default, Clone)]
pub(super) struct Worker {
    /// Its current link while connected.
    pub(super) link: Option<LinkId>,
    /// Attempts whose FFmpeg runs there.
    pub(super) running: BTreeSet<(String, u64)>,
    /// Results in its outbox, not yet acknowledged.
    pub(super) outbox: BTreeMap<(String, u64), Outcome>,
    /// While disconnected: when its lease ends (then it stops its jobs).
    pub(super) lease_end: Option<u64>,
}

/// The driver and the workers around one core.
pub(super) struct World {
    pub(super) core: Core<MemStore>,
    pub(super) clock: Clock,
    pub(super) workers: BTreeMap<String, Worker>,
    next_link: LinkId,
    next_ticket: u64,
    /// The durability waiter's mark, until reported.
    pub(super) waiter: Option<WriteMark>,
    timers: Vec<(Timer, u64)>,
    /// Every `Assign` released, as (job, token).
    pub(super) assigns_released: BTreeSet<(String, u64)>,
    /// Every `Kill`/`Cancel`/`Ack` released, in order, with the node.
    pub(super) stops_released: Vec<(String, ToWorker)>,
    /// Replies released, by ticket.
    pub(super) cancel_replies: HashMap<u64, CancelReply>,
    pub(super) retry_replies: HashMap<u64, RetryReply>,
    /// Accepted jobs and the mark their acceptance returned.
    pub(super) accepted: Vec<(String, WriteMark)>,
    /// A result applied: the write that recorded it.
    pub(super) results_written: HashMap<(String, u64), WriteMark>,
    /// The last mark released (held effects go in the order made).
    last_released: WriteMark,
    /// The store's last write when this master started: check 2 is about
    /// the assignments this master made (one a crashed master wrote but
    /// never sent may be cancelled: the worker ignores it).
    run_base: WriteMark,
    /// When the disk last stopped refusing writes.
    pub(super) full_until: Option<u64>,
    /// Fences the core must hold: job → (token, deadline), computed here
    /// from `lease::fence_deadline`, not read from the core.
    pub(super) expected_fences: HashMap<String, (u64, u64)>,
}

pub(super) fn config(seed: u64) -> Config {
    Config {
        lease_ms: LEASE_MS,
        max_commit_batch: 4,
        retry: RetryPolicy {
            base_ms: 100,
            max_ms: 1_000,
        },
        seed,
    }
}

pub(super) fn spec() -> crate::model::JobSpec {
    crate::model::JobSpec {
        max_retries: 2,
        ..crate::test_util::test_spec()
    }
}

pub(super) fn caps() -> Capabilities {
    Capabilities {
        encoders: vec![encoders::requirement(&spec().encode)],
        ..Capabilities::default()
    }
}

pub(super) fn succeeded() -> Outcome {
    Outcome::Succeeded {
        result: JobResult {
            exit_code: 0,
            wall_s: 1.0,
            frames: 30,
            avg_fps: 30.0,
            speed: None,
            output_bytes: None,
            output_bitrate_kbps: None,
            cpu_s: None,
            peak_memory_bytes: None,
            output_duration_s: None,
            quality: None,
            encoder: None,
        },
    }
}

pub(super) fn transient() -> Outcome {
    Outcome::Transient {
        failure: Failure::new(FailureReason::WorkerCrash, "test"),
    }
}

impl World {
    pub(super) fn new(seed: u64) -> World {
        World::over(
            MemStore::new(),
            seed,
            Clock {
                now_ms: 1_000_000,
                mono_ms: 5_000,
            },
        )
    }

    /// A master starting (or restarting) over `store` at `clock`.
    pub(super) fn over(store: MemStore, seed: u64, clock: Clock) -> World {
        let mut w = World {
            core: Core::new(store.clone(), config(seed)),
            clock,
            workers: BTreeMap::new(),
            next_link: 0,
            next_ticket: 0,
            waiter: None,
            timers: Vec::new(),
            assigns_released: BTreeSet::new(),
            stops_released: Vec::new(),
            cancel_replies: HashMap::new(),
            retry_replies: HashMap::new(),
            accepted: Vec::new(),
            results_written: HashMap::new(),
            last_released: 0,
            run_base: store_written(&store),
            expected_fences: HashMap::new(),
            full_until: None,
        };
        let granted = w
            .core
            .store()
            .granted_lease()
            .ok()
            .flatten()
            .unwrap_or(0)
            .max(LEASE_MS);
        let until = lease::fence_deadline(clock.mono_ms, granted);
        for j in w
            .core
            .store()
            .in_states(&[JobState::Assigned, JobState::Running])
            .unwrap_or_default()
        {
            w.expected_fences.insert(j.id.clone(), (j.token, until));
        }
        let r = w.core.recover(clock);
        w.settle(r);
        // The driver waits for recovery's writes before it starts.
        let mark = w.core.commit_mark();
        w.core.store_mut().make_durable(mark);
        w.core.durable(mark);
        w.settle(Ok(()));
        w
    }

    /// A crash of the master and a new one over what was durable; the
    /// workers keep running (their leases counted from now).
    pub(super) fn restart(&mut self, seed: u64) {
        let store = self.core.store().after_crash();
        let mut next = World::over(store, seed, self.clock);
        let mut workers = std::mem::take(&mut self.workers);
        for w in workers.values_mut() {
            if w.link.take().is_some() {
                w.lease_end = Some(self.clock.mono_ms + LEASE_MS);
            }
        }
        next.workers = workers;
        next.next_link = self.next_link + 1_000;
        next.next_ticket = self.next_ticket;
        next.full_until = if self.core.store().full {
            Some(self.clock.mono_ms)
        } else {
            self.full_until
        };
        next.assigns_released = std::mem::take(&mut self.assigns_released);
        next.stops_released = std::mem::take(&mut self.stops_released);
        next.results_written = std::mem::take(&mut self.results_written);
        // A submission not durable at the crash was never answered: it
        // may be gone (kept, never to be durable, for picking ids).
        let old = self.core.store();
        next.accepted = self
            .accepted
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    if old.is_durable(*m) {
                        *m
                    } else {
                        WriteMark::MAX
                    },
                )
            })
            .collect();
        *self = next;
    }

    /// What the driver does after a core call: execute effects, wait in line
    /// at the batch limit, start a waiter.
    pub(super) fn settle(&mut self, r: Result<(), crate::scheduler::MemStoreError>) {
        self.release();
        let mut r = r;
        while let Some(mark) = self.core.take_commit_due() {
            self.core.store_mut().make_durable(mark);
            self.core.durable(mark);
            self.release();
            if r.is_ok() {
                r = self.core.resume(self.clock);
                self.release();
            }
        }
        if let Some(m) = self.core.start_waiter() {
            self.waiter = Some(m);
        }
        if let Err(e) = r {
            assert!(MemStore::is_storage_full(&e), "unexpected store error {e}");
        }
    }

    /// Execute the released effects and check invariant 1 and 2 on each.
    fn release(&mut self) {
        for (mark, effect) in self.core.take_effects_marked() {
            if let Some(m) = mark {
                // 1. Nothing a write licenses goes before the write is durable,
                // and held effects go in the order they were made.
                assert!(
                    self.core.store().is_durable(m),
                    "{effect:?} released with mark {m} not durable ({})",
                    self.core.store().durable()
                );
                assert!(m >= self.last_released, "{effect:?} released out of order");
                self.last_released = m;
                self.check_licensed(m, &effect);
            }
            self.execute(effect);
        }
    }

    /// 1 (semantic): the write that licenses the effect is at or before
    /// its mark, so durable now.
    pub(super) fn worker_of_link(&mut self, link: LinkId) -> Option<(&String, &mut Worker)> {
        self.workers.iter_mut().find(|(_, w)| w.link == Some(link))
    }

    fn execute(&mut self, effect: Effect) {
        match effect {
            Effect::Send { link, msg } => {
                let assigned = &self.assigns_released;
                match &msg {
                    ToWorker::Assign(a) => {
                        self.assigns_released.insert((a.job_id.clone(), a.token));
                    }
                    ToWorker::Kill { job_id, token } | ToWorker::Cancel { job_id, token } => {
                        // 2. The assignment of an attempt the core made
                        // went before any stop of it.
                        let base = self.run_base;
                        let made = self.core.store().log().iter().any(|(w, j)| {
                            *w > base
                                && &j.id == job_id
                                && j.token == *token
                                && j.state == JobState::Assigned
                        });
                        assert!(
                            !made || assigned.contains(&(job_id.clone(), *token)),
                            "{msg:?} released before the assignment of that attempt"
                        );
                    }
                    _ => {}
                }
                let Some((name, w)) = self.worker_of_link(link) else {
                    return;
                };
                let name = name.clone();
                match msg {
                    ToWorker::Assign(a) => {
                        w.running.insert((a.job_id, a.token));
                    }
                    ToWorker::Kill { job_id, token } => {
                        w.running.remove(&(job_id.clone(), token));
                        self.stops_released
                            .push((name, ToWorker::Kill { job_id, token }));
                    }
                    ToWorker::Cancel { job_id, token } => {
                        if w.running.remove(&(job_id.clone(), token)) {
                            w.outbox.insert((job_id.clone(), token), Outcome::Cancelled);
                        }
                        self.stops_released
                            .push((name, ToWorker::Cancel { job_id, token }));
                    }
                    ToWorker::Ack(a) => {
                        w.outbox.remove(&(a.job_id.clone(), a.token));
                        self.stops_released.push((name, ToWorker::Ack(a)));
                    }
                    _ => {}
                }
            }
            Effect::CancelReply(t, r) => {
                self.cancel_replies.insert(t, r);
            }
            Effect::RetryReply(t, r) => {
                self.retry_replies.insert(t, r);
            }
            Effect::Timer(t, ms) => self.timers.push((t, self.clock.mono_ms + ms)),
            Effect::StopLink(link, _) => {
                if let Some((_, w)) = self.worker_of_link(link) {
                    w.link = None;
                }
            }
            Effect::Publish(..) | Effect::RequestFlush | Effect::Metric(_) => {}
        }
    }
}

fn store_written(s: &MemStore) -> WriteMark {
    s.written()
}

impl Core<MemStore> {
    /// The jobs the core believes `node` runs.
    pub(super) fn running_on_node(&self, node: &str) -> Vec<String> {
        self.nodes
            .get(node)
            .map(|n| n.running.iter().cloned().collect())
            .unwrap_or_default()
    }
}
