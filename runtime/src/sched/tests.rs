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
