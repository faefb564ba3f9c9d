//! Tests of the scheduling core against [`MemStore`]: a harness that plays
//! the driver (executes effects, waits for marks, fires timers) and the
//! workers (a model of what each runs and what results wait in its
//! outbox), and checks the invariants after every step (`check`).

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
        ..crate::model::test_spec()
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
    fn check_licensed(&self, m: WriteMark, effect: &Effect) {
        let log = self.core.store().log();
        let written_by = |job: &Job| log.iter().find(|(_, j)| j == job).map(|(w, _)| *w);
        match effect {
            Effect::Send {
                msg: ToWorker::Assign(a),
                ..
            } => {
                let w = log
                    .iter()
                    .find(|(_, j)| {
                        j.id == a.job_id && j.token == a.token && j.state == JobState::Assigned
                    })
                    .map(|(w, _)| *w);
                assert!(
                    w.is_some_and(|w| w <= m),
                    "assignment {a:?} not licensed by a write before mark {m}"
                );
            }
            Effect::Send {
                msg: ToWorker::Ack(a),
                ..
            } => {
                if let Some(w) = self.results_written.get(&(a.job_id.clone(), a.token)) {
                    assert!(
                        *w <= self.core.store().durable(),
                        "Ack {a:?} before its result (write {w}) is durable"
                    );
                }
            }
            Effect::Publish(UpdateKind::State, job)
            | Effect::CancelReply(_, CancelReply::Cancelled(job))
            | Effect::RetryReply(_, RetryReply::Requeued(job)) => {
                let w = written_by(job);
                assert!(
                    w.is_some_and(|w| w <= m),
                    "{} ({:?}) released before its write",
                    job.id,
                    job.state
                );
            }
            _ => {}
        }
    }

    fn worker_of_link(&mut self, link: LinkId) -> Option<(&String, &mut Worker)> {
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
                .find(|(w, job)| *w > written && job.id == j && Some(job) != before.as_ref())
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
                if now >= until && is == Some((etok, true)) && !held && !full {
                    panic!("{id} still live at {now}, past its fence {until}");
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
        self.core.store_mut().full = full;
    }

    // ---- invariants ---------------------------------------------------

    /// The invariants that hold between any two steps.
    pub(super) fn check(&self) {
        let store = self.core.store();
        let jobs = store.in_states(&JobState::ALL).unwrap_or_default();
        for job in &jobs {
            let on = self.core.running_on(&job.id);
            let fenced = self.core.fenced(&job.id);
            // 4. Never two live attempts: one node at most believes it runs it,
            // and no worker runs another attempt of it meanwhile.
            assert!(on.len() <= 1, "{} on several nodes: {on:?}", job.id);
            let holders: Vec<(&String, u64)> = self
                .workers
                .iter()
                .flat_map(|(n, w)| {
                    w.running
                        .iter()
                        .filter(|(j, _)| j == &job.id)
                        .map(move |(_, t)| (n, *t))
                })
                .collect();
            assert!(holders.len() <= 1, "{} runs twice: {holders:?}", job.id);
            // 6. Not lost: queued ⇒ in the queue; assigned/running ⇒ a node
            // holds it or it is fenced.
            match job.state {
                JobState::Queued => assert!(
                    self.core.is_queued(&job.id),
                    "{} queued but not in the queue",
                    job.id
                ),
                JobState::Assigned | JobState::Running => assert!(
                    on.len() == 1 || fenced.is_some(),
                    "{} {:?} but neither on a node nor fenced",
                    job.id,
                    job.state
                ),
                _ => {}
            }
            // 5. A fence is the one the lease rule gives.
            if let (Some((_, tok, until)), Some((etok, euntil))) =
                (fenced, self.expected_fences.get(&job.id))
            {
                if tok == *etok {
                    assert!(
                        until >= *euntil,
                        "{} fenced until {until}, before {euntil}",
                        job.id
                    );
                }
            }
        }
        // 6. Every accepted job whose acceptance is durable is on disk.
        let durable = store.durable_jobs();
        for (id, mark) in &self.accepted {
            if store.is_durable(*mark) {
                assert!(durable.contains_key(id), "accepted job {id} lost");
            }
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
