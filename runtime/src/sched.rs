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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The queue order of a job (the queue's `Key`, with an owned id).
    fn key_of(job: &QueuedJob) -> (u8, u64, JobId) {
        (job.priority.rank(), job.seq, job.id.clone())
    }

    fn qj(id: &str, p: Priority, seq: u64, nb: Option<u64>, enc: &str) -> QueuedJob {
        QueuedJob {
            id: id.into(),
            priority: p,
            seq,
            not_before_ms: nb,
            encoder: enc.into(),
            metrics: Vec::new(),
        }
    }

    /// A node table entry the tests own; [`NodeView`]s borrow from it.
    #[derive(Debug, Clone)]
    struct Node {
        id: String,
        slots: u32,
        running: u32,
        encoders: Vec<String>,
        metrics: Vec<QualityMetric>,
        draining: bool,
    }

    impl Node {
        fn view(&self) -> NodeView<'_> {
            NodeView {
                id: &self.id,
                slots: self.slots,
                running: self.running,
                encoders: &self.encoders,
                metrics: &self.metrics,
                draining: self.draining,
            }
        }
    }

    fn views(nodes: &[Node]) -> Vec<NodeView<'_>> {
        nodes.iter().map(Node::view).collect()
    }

    fn node(id: &str, slots: u32, running: u32, encs: &[&str]) -> Node {
        Node {
            id: id.into(),
            slots,
            running,
            encoders: encs.iter().map(|e| e.to_string()).collect(),
            metrics: vec![QualityMetric::Psnr, QualityMetric::Ssim],
            draining: false,
        }
    }

    fn pick_id(q: &ReadyQueue, now: u64, nodes: &[Node]) -> Option<(String, String)> {
        q.pick(now, &views(nodes))
    }

    #[test]
    fn hardware_jobs_go_only_where_a_probe_passed_and_block_nobody() {
        use crate::model::{Codec, EncodeParams, HardwarePref};
        let encode = |hardware, encoder: Option<&str>| EncodeParams {
            width: 640,
            height: 360,
            fps: 30,
            codec: Codec::H264,
            bitrate_kbps: 1000,
            preset: "veryfast".into(),
            encoder: encoder.map(String::from),
            hardware,
            crf: None,
            pix_fmt: None,
        };
        let req = |h, e| crate::encoders::requirement(&encode(h, e));
        let mut q = ReadyQueue::new();
        // Older and more urgent, but nobody here has a GPU.
        q.push(qj(
            "hw",
            Priority::Live,
            1,
            None,
            &req(HardwarePref::Required, None),
        ));
        q.push(qj(
            "nv",
            Priority::Live,
            2,
            None,
            &req(HardwarePref::None, Some("h264_nvenc")),
        ));
        q.push(qj(
            "pref",
            Priority::High,
            3,
            None,
            &req(HardwarePref::Preferred, None),
        ));
        q.push(qj(
            "sw",
            Priority::Low,
            4,
            None,
            &req(HardwarePref::None, None),
        ));
        let cpu = [node("cpu", 4, 0, &["libx264"])];
        assert_eq!(pick_id(&q, 0, &cpu), Some(("pref".into(), "cpu".into())));
        q.remove("pref");
        assert_eq!(pick_id(&q, 0, &cpu), Some(("sw".into(), "cpu".into())));
        q.remove("sw");
        assert_eq!(pick_id(&q, 0, &cpu), None);
        // A node whose VAAPI probe passed takes `required`, not the NVENC job.
        let gpu = [
            node("cpu", 4, 0, &["libx264"]),
            node("va", 1, 0, &["h264_vaapi"]),
        ];
        assert_eq!(pick_id(&q, 0, &gpu), Some(("hw".into(), "va".into())));
        q.remove("hw");
        assert_eq!(pick_id(&q, 0, &gpu), None);
        let nv = [node("nv", 1, 0, &["libx264", "h264_nvenc"])];
        assert_eq!(pick_id(&q, 0, &nv), Some(("nv".into(), "nv".into())));
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = ReadyQueue::new();
        q.push(qj("batch", Priority::Batch, 1, None, "x"));
        q.push(qj("m2", Priority::Medium, 3, None, "x"));
        q.push(qj("m1", Priority::Medium, 2, None, "x"));
        let nodes = [node("n1", 1, 0, &["x"])];
        assert_eq!(pick_id(&q, 0, &nodes), Some(("m1".into(), "n1".into())));
        q.push(qj("live", Priority::Live, 9, None, "x"));
        assert_eq!(pick_id(&q, 0, &nodes).unwrap().0, "live");
        assert_eq!(
            q.depth_by_priority(),
            [
                (Priority::Live, 1),
                (Priority::High, 0),
                (Priority::Medium, 2),
                (Priority::Low, 0),
                (Priority::Batch, 1)
            ]
        );
    }

    #[test]
    fn no_head_of_line_blocking() {
        let mut q = ReadyQueue::new();
        q.push(qj("av1", Priority::Live, 1, None, "libsvtav1"));
        q.push(qj("later", Priority::Live, 2, Some(500), "libx264"));
        q.push(qj("x264", Priority::Batch, 3, None, "libx264"));
        let nodes = [node("n1", 2, 0, &["libx264"])];
        assert_eq!(pick_id(&q, 100, &nodes).unwrap().0, "x264");
        assert_eq!(pick_id(&q, 500, &nodes).unwrap().0, "later");
        assert_eq!(q.next_wakeup(100), Some(500));
        assert_eq!(q.next_wakeup(500), None);
    }

    #[test]
    fn a_vmaf_job_waits_for_a_node_that_computes_vmaf_without_blocking_others() {
        let mut q = ReadyQueue::new();
        let mut vmaf = qj("vmaf", Priority::Live, 1, None, "x");
        vmaf.metrics = vec![QualityMetric::Vmaf, QualityMetric::Psnr];
        q.push(vmaf);
        let mut psnr = qj("psnr", Priority::Batch, 2, None, "x");
        psnr.metrics = vec![QualityMetric::Psnr];
        q.push(psnr);
        q.push(qj("plain", Priority::Batch, 3, None, "x"));
        let without = [node("a", 4, 0, &["x"])];
        // The live VMAF job waits; the batch jobs behind it are placed.
        assert_eq!(pick_id(&q, 0, &without), Some(("psnr".into(), "a".into())));
        assert!(q.remove("psnr"));
        assert_eq!(pick_id(&q, 0, &without), Some(("plain".into(), "a".into())));
        assert!(q.remove("plain"));
        assert_eq!(pick_id(&q, 0, &without), None);
        // A node that computes VMAF takes it, even busier than the other.
        let mut with = node("b", 4, 3, &["x"]);
        with.metrics = QualityMetric::ALL.to_vec();
        let nodes = [node("a", 4, 0, &["x"]), with];
        assert_eq!(pick_id(&q, 0, &nodes), Some(("vmaf".into(), "b".into())));
    }

    #[test]
    fn least_loaded_capable_node_ties_by_id() {
        let mut q = ReadyQueue::new();
        q.push(qj("j", Priority::High, 1, None, "x"));
        let mut drained = node("a", 8, 0, &["x"]);
        drained.draining = true;
        let nodes = [
            drained,
            node("b", 4, 2, &["x"]), // 1/2
            node("d", 2, 0, &["y"]), // idle, wrong encoder
            node("e", 3, 1, &["x"]), // 1/3
            node("c", 6, 2, &["x"]), // 1/3, smaller id
            node("f", 1, 1, &["x"]), // full
        ];
        assert_eq!(pick_id(&q, 0, &nodes), Some(("j".into(), "c".into())));
        assert_eq!(pick_id(&q, 0, &nodes[5..]), None);
        assert_eq!(pick_id(&q, 0, &nodes[2..3]), None);
        assert_eq!(pick_id(&q, 0, &[]), None);
    }

    #[test]
    fn push_is_idempotent_and_remove_reports() {
        let mut q = ReadyQueue::new();
        let j = qj("j", Priority::Low, 1, Some(10), "x");
        q.push(j.clone());
        q.push(j.clone());
        assert_eq!(q.len(), 1);
        assert_eq!(q.depth_by_priority()[3], (Priority::Low, 1));
        // A re-push replaces: new priority, encoder and delay.
        q.push(qj("j", Priority::High, 1, None, "y"));
        assert_eq!(q.len(), 1);
        assert_eq!(q.depth_by_priority()[3], (Priority::Low, 0));
        assert_eq!(q.depth_by_priority()[1], (Priority::High, 1));
        assert_eq!(q.next_wakeup(0), None);
        assert!(q.contains("j"));
        assert!(q.remove("j"));
        assert!(!q.remove("j"));
        assert!(q.is_empty());
        assert_eq!(q.next_wakeup(0), None);
        assert!(q.by_encoder.iter().all(BTreeMap::is_empty));
        assert!(q.delayed.is_empty());
    }

    #[test]
    fn next_wakeup_at_the_end_of_time() {
        let mut q = ReadyQueue::new();
        q.push(qj("j", Priority::Low, 1, Some(u64::MAX), "x"));
        assert_eq!(q.next_wakeup(0), Some(u64::MAX));
        assert_eq!(q.next_wakeup(u64::MAX), None);
    }

    const ENCODERS: [&str; 3] = ["a", "b", "c"];

    fn jobs_strategy() -> impl Strategy<Value = Vec<QueuedJob>> {
        proptest::collection::vec(
            (
                proptest::sample::select(Priority::ALL.to_vec()),
                0u64..50,
                proptest::option::of(0u64..200),
                proptest::sample::select(ENCODERS.to_vec()),
                proptest::bool::weighted(0.3),
            ),
            0..40,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (p, seq, nb, enc, vmaf))| {
                    let mut j = qj(&format!("j{i}"), p, seq, nb, enc);
                    if vmaf {
                        j.metrics = vec![QualityMetric::Vmaf];
                    }
                    j
                })
                .collect()
        })
    }

    fn nodes_strategy() -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::vec(
            (
                0u32..4,
                0u32..5,
                proptest::sample::subsequence(ENCODERS.to_vec(), 0..=3),
                proptest::bool::weighted(0.2),
                proptest::bool::weighted(0.5),
            ),
            0..6,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (slots, running, encs, draining, vmaf))| Node {
                    id: format!("n{}", 9 - i),
                    slots,
                    running,
                    encoders: encs.into_iter().map(String::from).collect(),
                    metrics: if vmaf {
                        QualityMetric::ALL.to_vec()
                    } else {
                        Vec::new()
                    },
                    draining,
                })
                .collect()
        })
    }

    /// The obvious quadratic answer.
    fn reference(jobs: &[QueuedJob], now: u64, nodes: &[Node]) -> Option<(JobId, NodeId)> {
        let mut sorted: Vec<&QueuedJob> = jobs.iter().collect();
        sorted.sort_by_key(|j| key_of(j));
        for j in sorted {
            if j.not_before_ms.is_some_and(|nb| nb > now) {
                continue;
            }
            let mut capable: Vec<&Node> = nodes
                .iter()
                .filter(|n| {
                    !n.draining
                        && n.running < n.slots
                        && n.encoders.contains(&j.encoder)
                        && j.metrics.iter().all(|m| n.metrics.contains(m))
                })
                .collect();
            capable.sort_by(|a, b| {
                let la = f64::from(a.running) / f64::from(a.slots);
                let lb = f64::from(b.running) / f64::from(b.slots);
                la.total_cmp(&lb).then(a.id.cmp(&b.id))
            });
            if let Some(n) = capable.first() {
                return Some((j.id.clone(), n.id.clone()));
            }
        }
        None
    }

    proptest! {
        #[test]
        fn pick_matches_the_reference(
            jobs in jobs_strategy(),
            nodes in nodes_strategy(),
            now in 0u64..250,
        ) {
            let mut q = ReadyQueue::new();
            for j in &jobs {
                q.push(j.clone());
            }
            let picked = q.pick(now, &views(&nodes));
            prop_assert_eq!(&picked, &reference(&jobs, now, &nodes));
            if let Some((jid, nid)) = picked {
                let j = jobs.iter().find(|j| j.id == jid).unwrap();
                let n = nodes.iter().find(|n| n.id == nid).unwrap();
                // Never a delayed job, never a node without a slot or encoder.
                prop_assert!(j.not_before_ms.is_none_or(|nb| nb <= now));
                prop_assert!(!n.draining && n.running < n.slots);
                prop_assert!(n.encoders.contains(&j.encoder));
                prop_assert!(n.view().can_measure(&j.metrics));
                // Strict priority and FIFO: no runnable job is ahead of it.
                for other in &jobs {
                    let runnable = other.not_before_ms.is_none_or(|nb| nb <= now)
                        && nodes.iter().any(|n| n.view().can_run(&other.encoder) && n.view().can_measure(&other.metrics));
                    if runnable {
                        prop_assert!(key_of(j) <= key_of(other));
                    }
                }
            } else {
                for j in &jobs {
                    let runnable = j.not_before_ms.is_none_or(|nb| nb <= now)
                        && nodes.iter().any(|n| n.view().can_run(&j.encoder) && n.view().can_measure(&j.metrics));
                    prop_assert!(!runnable, "{:?} was runnable", j);
                }
            }
        }

        #[test]
        fn draining_the_queue_places_in_order(
            jobs in jobs_strategy(),
            slots in 1u32..4,
        ) {
            // One node that runs everything, with `slots` free slots per round:
            // repeated picks (removing each) come out in strict (rank, seq) order.
            let all: Vec<String> = ENCODERS.iter().map(|e| e.to_string()).collect();
            let nodes = [Node { id: "n".into(), slots, running: 0, encoders: all, metrics: QualityMetric::ALL.to_vec(), draining: false }];
            let mut q = ReadyQueue::new();
            for j in &jobs {
                q.push(j.clone());
            }
            let mut order = Vec::new();
            while let Some((id, _)) = q.pick(u64::MAX, &views(&nodes)) {
                prop_assert!(q.remove(&id));
                order.push(id);
            }
            prop_assert!(q.is_empty());
            let mut expected: Vec<&QueuedJob> = jobs.iter().collect();
            expected.sort_by_key(|j| key_of(j));
            let expected: Vec<String> = expected.into_iter().map(|j| j.id.clone()).collect();
            prop_assert_eq!(order, expected);
        }

        #[test]
        fn bookkeeping_matches_a_model(
            ops in proptest::collection::vec((any::<bool>(), 0usize..10, jobs_strategy()), 0..30),
            now in 0u64..250,
        ) {
            let mut q = ReadyQueue::new();
            let mut model: HashMap<String, QueuedJob> = HashMap::new();
            for (is_push, n, pool) in ops {
                let id = format!("j{n}");
                if is_push {
                    if let Some(j) = pool.into_iter().find(|j| j.id == id) {
                        model.insert(id, j.clone());
                        q.push(j);
                    }
                } else {
                    prop_assert_eq!(q.remove(&id), model.remove(&id).is_some());
                }
                prop_assert_eq!(q.len(), model.len());
                for p in Priority::ALL {
                    let want = model.values().filter(|j| j.priority == p).count();
                    prop_assert_eq!(q.depth_by_priority()[usize::from(p.rank())], (p, want));
                }
                let wake = model.values().filter_map(|j| j.not_before_ms).filter(|nb| *nb > now).min();
                prop_assert_eq!(q.next_wakeup(now), wake);
                for j in model.keys() {
                    prop_assert!(q.contains(j));
                }
            }
        }
    }
}
