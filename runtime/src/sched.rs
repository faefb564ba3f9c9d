//! The pure scheduling core: which queued job goes to which node next.
//!
//! The [`ReadyQueue`] holds the queued jobs; [`ReadyQueue::pick`] answers
//! "what is the next placement, given these nodes at time `now`" without
//! changing anything. The caller (the scheduler actor) then assigns the job
//! through [`crate::state::assign`], stores it, removes it from the queue and
//! counts the slot as used in its next [`NodeView`]s.
//!
//! Jobs are kept in one `BTreeMap` per class — their encoder requirement (an
//! encoder's name, or "any hardware encoder for this codec":
//! [`crate::encoders::requirement`]) and the quality metrics they ask for —
//! ordered by `(priority rank, seq)`. A pick looks only at classes that some
//! free node can run (the requirement, and every metric: a VMAF job only on
//! a node that computes VMAF), and in each only
//! at the first job whose `not_before` has passed, so jobs that nobody can
//! run now cost nothing and never block the jobs behind them (no
//! head-of-line blocking).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::model::{JobId, NodeId, Priority, QualityMetric, UnixMs};

/// A job waiting in the queue: what the scheduler needs to place it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// The job.
    pub id: JobId,
    /// Its priority; lower rank goes first.
    pub priority: Priority,
    /// Submission order; FIFO within a priority.
    pub seq: u64,
    /// Not eligible before this time (retry backoff).
    pub not_before_ms: Option<UnixMs>,
    /// What the job needs of a node's encoders: an FFmpeg encoder name
    /// (`libx264`, `hevc_nvenc`), or any hardware encoder for a codec
    /// ([`crate::encoders::requirement`], read by
    /// [`crate::encoders::satisfies`]).
    pub encoder: String,
    /// The quality metrics it asks for (sorted): only a node that computes
    /// every one of them runs it.
    pub metrics: Vec<QualityMetric>,
}

/// What the scheduler knows of a node when placing work, borrowed from the
/// caller's own node table: a pick runs for every assignment, so building
/// the views must not copy ids and encoder lists (it did: 16 % of the
/// master's CPU at 4,000 jobs/s with 100 workers, docs/BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView<'a> {
    /// The node.
    pub id: &'a str,
    /// How many jobs it may run at once.
    pub slots: u32,
    /// How many it runs (or has been assigned) now.
    pub running: u32,
    /// Encoders it advertised (probed by a real encode).
    pub encoders: &'a [String],
    /// Quality metrics it computes (probed at its start).
    pub metrics: &'a [QualityMetric],
    /// A draining node takes no new work.
    pub draining: bool,
}

impl NodeView<'_> {
    /// Not draining and with a free slot.
    pub fn has_free_slot(&self) -> bool {
        !self.draining && self.running < self.slots
    }

    /// Free, and able to meet `requirement` (an encoder, or any hardware
    /// encoder for a codec: [`crate::encoders::satisfies`]).
    pub fn can_run(&self, requirement: &str) -> bool {
        self.has_free_slot() && crate::encoders::satisfies(requirement, self.encoders)
    }

    /// Computes every one of `metrics`.
    pub fn can_measure(&self, metrics: &[QualityMetric]) -> bool {
        metrics.iter().all(|m| self.metrics.contains(m))
    }

    /// Order by load (`running / slots`, compared exactly), then by id.
    fn cmp_load(&self, other: &NodeView<'_>) -> Ordering {
        let a = u64::from(self.running) * u64::from(other.slots);
        let b = u64::from(other.running) * u64::from(self.slots);
        a.cmp(&b).then_with(|| self.id.cmp(other.id))
    }
}

/// Queue order: priority rank, then seq, then id (ids break ties only if two
/// jobs were given the same seq). The id is shared (`Arc<str>`) by a job's
/// entries in the queue, the index and the delay set: one allocation per
/// queued job, not one per structure (docs/BENCHMARKS.md, footprint).
type Key = (u8, u64, Arc<str>);

/// The queued jobs, indexed for placement.
///
/// Per queued job: one `Arc<str>` id, an entry in its encoder's `BTreeMap`
/// (key and `not_before`), an index entry (encoder number and key), and a
/// delay-set entry only while it is delayed. Encoders are interned: a job
/// holds its encoder's number, not a copy of its name.
#[derive(Debug, Clone, Default)]
pub struct ReadyQueue {
    /// The classes seen (encoder, metrics asked), by number (never
    /// shrinks: there are a handful).
    encoders: Vec<(String, Vec<QualityMetric>)>,
    /// Per encoder number, jobs in `(rank, seq)` order → `not_before`.
    by_encoder: Vec<BTreeMap<Key, Option<UnixMs>>>,
    /// Where each job is: its encoder number and key.
    index: HashMap<Arc<str>, (usize, Key)>,
    /// Delayed jobs by `not_before`, for [`ReadyQueue::next_wakeup`].
    delayed: BTreeSet<(UnixMs, Key)>,
    /// Jobs per priority rank.
    depth: [usize; 5],
}

impl ReadyQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of the class `(encoder, metrics)`, interned on first sight.
    fn encoder_number(&mut self, encoder: &str, metrics: &[QualityMetric]) -> usize {
        if let Some(n) = self
            .encoders
            .iter()
            .position(|(e, m)| e == encoder && m == metrics)
        {
            return n;
        }
        self.encoders.push((encoder.to_string(), metrics.to_vec()));
        self.by_encoder.push(BTreeMap::new());
        self.encoders.len() - 1
    }

    /// Add a job. Idempotent per id: pushing an id that is already queued
    /// replaces its entry (so pushing the same job twice leaves one entry).
    pub fn push(&mut self, job: QueuedJob) {
        self.remove(&job.id);
        let encoder = self.encoder_number(&job.encoder, &job.metrics);
        let id: Arc<str> = Arc::from(job.id);
        let rank = job.priority.rank();
        let key: Key = (rank, job.seq, id.clone());
        if let Some(nb) = job.not_before_ms {
            self.delayed.insert((nb, key.clone()));
        }
        self.depth[usize::from(rank)] += 1;
        self.index.insert(id, (encoder, key.clone()));
        if let Some(queue) = self.by_encoder.get_mut(encoder) {
            queue.insert(key, job.not_before_ms);
        }
    }

    /// Remove a job; `false` if it was not queued.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some((encoder, key)) = self.index.remove(id) else {
            return false;
        };
        let Some(queue) = self.by_encoder.get_mut(encoder) else {
            return false;
        };
        if let Some(not_before) = queue.remove(&key) {
            if let Some(nb) = not_before {
                self.delayed.remove(&(nb, key.clone()));
            }
            let rank = usize::from(key.0);
            self.depth[rank] = self.depth[rank].saturating_sub(1);
        }
        true
    }

    /// Whether a job is queued.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// The number of queued jobs (delayed ones included).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no job is queued.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Queued jobs per priority, most urgent first.
    pub fn depth_by_priority(&self) -> [(Priority, usize); 5] {
        Priority::ALL.map(|p| (p, self.depth[usize::from(p.rank())]))
    }

    /// The next placement: the highest-priority, oldest (FIFO by seq) job
    /// whose `not_before` has passed (`<= now`) and that some non-draining
    /// node with a free slot, the job's encoder and its quality metrics can
    /// run. Jobs nobody can
    /// run now are skipped, never blocking the ones behind. Among capable
    /// nodes the least loaded (`running / slots`) wins, ties by node id.
    /// Does not remove the job. The order of `nodes` does not matter.
    ///
    /// Cost: for each encoder with a capable node, the delayed jobs ahead of
    /// its first eligible one; encoders no free node has are never visited.
    pub fn pick(&self, now: UnixMs, nodes: &[NodeView<'_>]) -> Option<(JobId, NodeId)> {
        let mut best: Option<(&Key, &NodeView<'_>)> = None;
        for ((encoder, metrics), queue) in self.encoders.iter().zip(&self.by_encoder) {
            if queue.is_empty() {
                continue;
            }
            let Some(node) = nodes
                .iter()
                .filter(|n| n.can_run(encoder) && n.can_measure(metrics))
                .min_by(|a, b| a.cmp_load(b))
            else {
                continue;
            };
            let first = queue.iter().find(|(_, nb)| nb.is_none_or(|nb| nb <= now));
            if let Some((key, _)) = first {
                if best.is_none_or(|(k, _)| key < k) {
                    best = Some((key, node));
                }
            }
        }
        best.map(|(key, node)| (key.2.to_string(), node.id.to_string()))
    }

    /// The earliest `not_before` among queued jobs that is still in the
    /// future (`> now`), to arm a timer; `None` if no job is waiting on one.
    pub fn next_wakeup(&self, now: UnixMs) -> Option<UnixMs> {
        let from = now.checked_add(1)?;
        self.delayed
            .range((
                Bound::Included((from, (0, 0, Arc::from("")))),
                Bound::Unbounded,
            ))
            .next()
            .map(|(nb, _)| *nb)
    }
}

#[cfg(test)]
mod tests;
