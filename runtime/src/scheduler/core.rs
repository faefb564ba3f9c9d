//! [`Core`]: its state, group commit (held effects released in order once
//! their write is durable) and the placement loop.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::encoders;
use crate::lease;
use crate::model::{Job, JobId, JobState, NodeId, NodePower, Outcome};
use crate::retry::RetryPolicy;
use crate::sched::{NodeView, QueuedJob, ReadyQueue};
use crate::state::{self, Applied};
use crate::wire::{Capabilities, ToWorker};

use super::durable::{JobStore, WriteMark};
use super::{Clock, Effect, LinkId, Metric, NodeInfo, Timer, UpdateKind};

/// What a [`Core`] is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The lease granted to workers (already clamped to
    /// [`lease::MIN_LEASE_MS`]..=[`lease::MAX_LEASE_MS`] by the core).
    pub lease_ms: u64,
    /// At most this many writes wait for a flush; then the driver waits
    /// for one in line ([`Core::take_commit_due`]). 0 counts as 1.
    pub max_commit_batch: usize,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// Seed of the retry jitter (the driver draws it once).
    pub seed: u64,
}

pub(super) struct NodeEntry {
    pub(super) link: LinkId,
    pub(super) slots: u32,
    pub(super) capabilities: Capabilities,
    pub(super) running: HashSet<JobId>,
    pub(super) draining: bool,
    pub(super) power: Option<NodePower>,
}

/// An attempt that may still run on a node the master cannot reach.
#[derive(Debug, Clone)]
pub(super) struct Fenced {
    pub(super) node: NodeId,
    pub(super) token: u64,
    /// Monotonic ms after which it certainly does not.
    pub(super) until_ms: u64,
}

/// The scheduling core: see the module docs. Every method that changes
/// something returns the store's error if a read or write failed; a write
/// refused for want of space ([`JobStore::is_storage_full`]) changed
/// nothing and the driver carries on.
pub struct Core<S: JobStore> {
    pub(super) store: S,
    pub(super) retry: RetryPolicy,
    pub(super) lease_ms: u64,
    pub(super) queue: ReadyQueue,
    pub(super) nodes: HashMap<NodeId, NodeEntry>,
    pub(super) by_link: HashMap<LinkId, NodeId>,
    pub(super) fenced: HashMap<JobId, Fenced>,
    /// Until then (monotonic), a lease from the previous run may be
    /// outstanding.
    pub(super) recovery_until_ms: Option<u64>,
    wake_at: Option<u64>,
    fence_timer_at: Option<u64>,
    /// Effects waiting for the writes before their mark to be durable, in
    /// the order they were made.
    held: VecDeque<(WriteMark, Effect)>,
    /// Effects ready for the driver, in order, each with the mark it waited
    /// for (`None`: licensed by no write).
    out: Vec<(Option<WriteMark>, Effect)>,
    last_mark: WriteMark,
    unflushed: usize,
    waiting_for: Option<WriteMark>,
    max_commit_batch: usize,
    commit_due: bool,
    /// A dispatch stopped at the batch limit, to go on once it is durable.
    dispatch_cut: bool,
    rng: u64,
}

pub(super) fn queued(job: &Job) -> QueuedJob {
    QueuedJob {
        id: job.id.clone(),
        priority: job.spec.priority,
        seq: job.queue_seq(),
        not_before_ms: job.not_before_ms,
        encoder: encoders::requirement(&job.spec.encode),
        metrics: job
            .spec
            .quality
            .as_ref()
            .map(|q| q.metrics.clone())
            .unwrap_or_default(),
    }
}

pub(super) fn node_info(id: &NodeId, n: &NodeEntry) -> NodeInfo {
    let mut running: Vec<JobId> = n.running.iter().cloned().collect();
    running.sort();
    NodeInfo {
        id: id.clone(),
        slots: n.slots,
        running,
        capabilities: n.capabilities.clone(),
        draining: n.draining,
        connected: true,
        power: n.power.clone(),
    }
}

impl<S: JobStore> Core<S> {
    /// A core over `store`, with nothing queued yet: call [`Core::recover`].
    pub fn new(store: S, config: Config) -> Core<S> {
        Core {
            store,
            retry: config.retry,
            lease_ms: config
                .lease_ms
                .clamp(lease::MIN_LEASE_MS, lease::MAX_LEASE_MS),
            queue: ReadyQueue::new(),
            nodes: HashMap::new(),
            by_link: HashMap::new(),
            fenced: HashMap::new(),
            recovery_until_ms: None,
            wake_at: None,
            fence_timer_at: None,
            held: VecDeque::new(),
            out: Vec::new(),
            last_mark: 0,
            unflushed: 0,
            waiting_for: None,
            max_commit_batch: config.max_commit_batch.max(1),
            commit_due: false,
            dispatch_cut: false,
            rng: config.seed,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, to change it (tests: durability, refusals).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The lease granted to workers.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// The mark of the core's last write.
    pub fn last_mark(&self) -> WriteMark {
        self.last_mark
    }

    /// The effects ready now, in order; the driver executes them before it
    /// waits for anything.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.take_effects_marked()
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// [`Core::take_effects`], each with the mark it waited for (`None`
    /// for an effect no write licenses): what the tests check against the
    /// store's durability.
    pub fn take_effects_marked(&mut self) -> Vec<(Option<WriteMark>, Effect)> {
        std::mem::take(&mut self.out)
    }

    /// The effects held back for durability, with their marks, in order.
    pub fn held(&self) -> impl Iterator<Item = &(WriteMark, Effect)> {
        self.held.iter()
    }

    /// Whether the ready queue holds `id`.
    pub fn is_queued(&self, id: &str) -> bool {
        self.queue.contains(id)
    }

    /// The node (connected) that the core believes runs `id`.
    pub fn running_on(&self, id: &str) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.running.contains(id))
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// A fenced attempt of `id`: its node, token and deadline (monotonic).
    pub fn fenced(&self, id: &str) -> Option<(NodeId, u64, u64)> {
        self.fenced
            .get(id)
            .map(|f| (f.node.clone(), f.token, f.until_ms))
    }

    /// After a call: the mark a durability waiter should wait for, if
    /// effects are held and none waits yet. The driver reports it with
    /// [`Core::durable`].
    pub fn start_waiter(&mut self) -> Option<WriteMark> {
        if self.waiting_for.is_some() || self.held.is_empty() {
            return None;
        }
        self.waiting_for = Some(self.last_mark);
        self.waiting_for
    }

    /// After a call: the batch limit was reached; the driver waits for this
    /// mark in line, then calls [`Core::durable`] and [`Core::resume`].
    pub fn take_commit_due(&mut self) -> Option<WriteMark> {
        std::mem::take(&mut self.commit_due).then_some(self.last_mark)
    }

    /// Every write up to `mark` is durable: release what waited for them.
    /// (A failed flush is never reported here: the driver fails instead.)
    pub fn durable(&mut self, mark: WriteMark) {
        if mark >= self.last_mark {
            self.unflushed = 0;
        }
        while self.held.front().is_some_and(|(m, _)| *m <= mark) {
            if let Some((m, effect)) = self.held.pop_front() {
                self.out.push((Some(m), effect));
            }
        }
    }

    /// The durability waiter ended (call before [`Core::durable`] with its
    /// mark; on a failed flush the driver fails instead): the next call may
    /// start another.
    pub fn waiter_done(&mut self) {
        self.waiting_for = None;
    }

    /// Everything written so far: the mark to wait for before stopping
    /// (what is durable may still go).
    pub fn commit_mark(&self) -> WriteMark {
        self.last_mark
    }

    /// After an in-line commit: go on with a dispatch cut short.
    pub fn resume(&mut self, clock: Clock) -> Result<(), S::Error> {
        if std::mem::take(&mut self.dispatch_cut) {
            self.dispatch(clock)?;
        }
        Ok(())
    }

    /// A draw in [0, 1) for the retry jitter (SplitMix64 over the seed).
    pub(super) fn jitter(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An effect that needs no write: now.
    pub(super) fn emit(&mut self, effect: Effect) {
        self.out.push((None, effect));
    }

    /// Run `effect` once every write made so far is durable: now if they
    /// are (and nothing is held before it), else in order after them.
    pub(super) fn hold(&mut self, effect: Effect) {
        if self.held.is_empty() && self.store.is_durable(self.last_mark) {
            self.unflushed = 0;
            self.out.push((Some(self.last_mark), effect));
        } else {
            self.held.push_back((self.last_mark, effect));
        }
    }

    /// Publish a job update once every write made so far is durable.
    pub(super) fn publish(&mut self, kind: UpdateKind, job: &Job) {
        self.hold(Effect::Publish(kind, Box::new(job.clone())));
    }

    /// Send `msg` to the node's current link, in order after every held
    /// effect (an `Ack` goes once the result it acknowledges is durable).
    pub(super) fn tell(&mut self, node_id: &NodeId, msg: ToWorker) {
        if let Some(n) = self.nodes.get(node_id) {
            let link = n.link;
            self.hold(Effect::Send { link, msg });
        }
    }

    /// Write a job without waiting for the flush; what the write licenses
    /// goes through `hold`. At `max_commit_batch` unflushed writes the
    /// driver is asked to wait for the flush in line.
    pub(super) fn put(&mut self, job: &Job) -> Result<(), S::Error> {
        self.last_mark = self.store.put_marked(job)?;
        self.unflushed += 1;
        if self.unflushed >= self.max_commit_batch {
            self.commit_due = true;
        }
        Ok(())
    }

    /// Submissions written before the call: a mark covering them, no flush.
    pub(super) fn mark_accepted(&mut self, n: usize) {
        self.last_mark = self.store.mark_unflushed();
        self.unflushed += n;
    }

    pub(super) fn gauges(&mut self) {
        let running = self.nodes.values().map(|n| n.running.len()).sum();
        let depth = self.queue.depth_by_priority();
        self.emit(Effect::Metric(Metric::Gauges { depth, running }));
    }

    /// After a terminal transition or a requeue: metrics, queue, events.
    pub(super) fn after_applied(&mut self, job: &Job, applied: &Applied) {
        match applied {
            Applied::Terminal(st) => {
                self.emit(Effect::Metric(Metric::Finished(*st)));
                if let Some(r) = &job.result {
                    self.emit(Effect::Metric(Metric::WallSeconds(r.wall_s)));
                }
            }
            Applied::Requeued { .. } => {
                let reason = job
                    .attempts
                    .last()
                    .and_then(|a| match &a.outcome {
                        Some(Outcome::Transient { failure }) => Some(failure.reason),
                        _ => None,
                    })
                    // The API's name for it (`worker_crash`), not the Debug one.
                    .and_then(|r| serde_json::to_value(r).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "node_lost".into());
                self.emit(Effect::Metric(Metric::Retried(reason)));
                self.queue.push(queued(job));
            }
        }
        self.publish(UpdateKind::State, job);
    }

    /// The nodes as placement sees them, borrowed.
    fn views(&self) -> Vec<NodeView<'_>> {
        self.nodes
            .iter()
            .map(|(id, n)| NodeView {
                id,
                slots: n.slots,
                running: u32::try_from(n.running.len()).unwrap_or(u32::MAX),
                encoders: &n.capabilities.encoders,
                metrics: &n.capabilities.metrics,
                draining: n.draining,
            })
            .collect()
    }

    /// Place every job that can run now (stopping early at the commit
    /// batch limit: [`Core::resume`] goes on).
    pub(super) fn dispatch(&mut self, clock: Clock) -> Result<(), S::Error> {
        let now = clock.now_ms;
        loop {
            if self.commit_due {
                self.dispatch_cut = true;
                break;
            }
            let Some((job_id, node_id)) = self.queue.pick(now, &self.views()) else {
                break;
            };
            self.queue.remove(&job_id);
            let Some(mut job) = self.store.get(&job_id)? else {
                tracing::warn!(job = %job_id, "queued job missing from the store");
                continue;
            };
            if job.state != JobState::Queued {
                continue;
            }
            let token = match self.store.next_token() {
                Ok(t) => t,
                Err(e) => {
                    self.queue.push(queued(&job));
                    return Err(e);
                }
            };
            let assignment = match state::assign(&mut job, &node_id, token, now) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(job = %job_id, error = ?e, "cannot assign");
                    continue;
                }
            };
            // The token is on disk before the worker hears of it: the
            // assignment is held until the write is durable.
            if let Err(e) = self.put(&job) {
                // Not assigned (the write was refused, e.g. storage full):
                // back into the queue as it is stored.
                if let Ok(Some(stored)) = self.store.get(&job_id) {
                    self.queue.push(queued(&stored));
                }
                return Err(e);
            }
            let Some(node) = self.nodes.get_mut(&node_id) else {
                continue;
            };
            node.running.insert(job_id.clone());
            let link = node.link;
            self.hold(Effect::Send {
                link,
                msg: ToWorker::Assign(Box::new(assignment)),
            });
            tracing::info!(job = %job_id, node = %node_id, attempt = job.attempt, "assigned");
            self.publish(UpdateKind::State, &job);
        }
        if let Some(at) = self.queue.next_wakeup(now) {
            if self.wake_at.is_none_or(|w| at < w || w <= now) {
                self.wake_at = Some(at);
                self.emit(Effect::Timer(Timer::Wake, at.saturating_sub(now)));
            }
        }
        self.gauges();
        Ok(())
    }

    /// The retry timer fired.
    pub fn wake(&mut self, clock: Clock) -> Result<(), S::Error> {
        self.wake_at = None;
        self.dispatch(clock)
    }

    pub(super) fn arm_fence_timer(&mut self, clock: Clock) {
        let now = clock.mono_ms;
        let next = self
            .fenced
            .values()
            .map(|f| f.until_ms)
            .chain(self.recovery_until_ms)
            .min();
        if let Some(at) = next {
            if self.fence_timer_at.is_none_or(|t| at < t || t <= now) {
                self.fence_timer_at = Some(at);
                self.emit(Effect::Timer(Timer::Fence, at.saturating_sub(now)));
            }
        }
    }

    pub(super) fn clear_fence_timer(&mut self) {
        self.fence_timer_at = None;
    }
}
