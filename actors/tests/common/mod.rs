//! What the scheduler tests in this folder share: a real `SchedulerActor`
//! over a real sled store, with the test playing the worker end of an
//! in-process link (hello, ping, started, finished).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffrtmp_actors::link::{in_process_pair, LinkEnd};
use ffrtmp_actors::scheduler::SchedulerMsg;
use ffrtmp_os::store::Store;
use ffrtmp_runtime::model::{JobSpec, JobState};
use ffrtmp_runtime::spec::{parse_job_request, MediaRoots};
use ffrtmp_runtime::wire::{self, Capabilities, ToMaster, ToWorker};
use ractor::ActorRef;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A temporary master directory: the directory (removed when dropped), its
/// media root and the job store in it.
pub fn master_dir() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).expect("media");
    let store = Store::open(&dir.path().join("master.sled")).expect("store");
    (dir, media, store)
}

/// Polls until the scheduler has `n` nodes.
pub async fn joined(sched: &ActorRef<SchedulerMsg>, n: usize) {
    let start = Instant::now();
    while ractor::call!(sched, SchedulerMsg::Nodes)
        .expect("scheduler answers")
        .len()
        < n
    {
        assert!(start.elapsed() < DEADLINE, "the node never joined");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A scheduler over `store` (default settings) with one simulated worker
/// (`sim-1`) joined: the scheduler, its end, the worker's end of the link.
pub async fn scheduler_with_worker(
    store: &Store,
) -> (ActorRef<SchedulerMsg>, tokio::task::JoinHandle<()>, LinkEnd) {
    let (sched, done) = ffrtmp_actors::embed::spawn_scheduler(
        ffrtmp_actors::scheduler::SchedulerArgs::new(store.clone()),
        None,
    )
    .await
    .expect("scheduler");
    let worker = attach_worker(&sched).await;
    joined(&sched, 1).await;
    (sched, done, worker)
}

pub fn spec(media: &Path) -> JobSpec {
    let roots = MediaRoots::new(&[media.to_path_buf()]).expect("media root");
    let body = br#"{"scenario": "480p30-h264", "width": 160, "height": 90,
        "preset": "ultrafast", "input": {"type": "testsrc", "duration_s": 0.2},
        "output": {"type": "null"}}"#;
    parse_job_request(body, &roots).expect("valid job")
}

/// Poll `cond` until it holds (panics after [`DEADLINE`]).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn state_of(store: &Store, id: &str) -> JobState {
    store.get(id).expect("read").expect("stored").state
}

/// The next frame from the master to the worker.
pub async fn next_frame(worker: &mut LinkEnd) -> ToWorker {
    let frame = tokio::time::timeout(DEADLINE, worker.rx.recv())
        .await
        .expect("a frame from the master in time")
        .expect("the link is open");
    wire::decode(&frame).expect("a valid frame")
}

pub async fn send(worker: &LinkEnd, msg: &ToMaster) {
    worker
        .tx
        .send(wire::encode(msg).expect("encode"))
        .await
        .expect("link open");
}

/// The worker says the attempt `(job_id, token)` started.
pub async fn send_started(worker: &LinkEnd, job_id: &str, token: u64) {
    send(
        worker,
        &ToMaster::Started {
            job_id: job_id.into(),
            token,
            isolation: ffrtmp_runtime::model::Isolation::None,
        },
    )
    .await;
}

/// The worker reports the attempt `(job_id, token)` succeeded (6 frames).
pub async fn send_succeeded(worker: &LinkEnd, job_id: &str, token: u64) {
    send(
        worker,
        &ToMaster::Finished {
            job_id: job_id.into(),
            token,
            outcome: ffrtmp_runtime::model::Outcome::Succeeded {
                result: ffrtmp_runtime::model::JobResult {
                    exit_code: 0,
                    frames: 6,
                    ..Default::default()
                },
            },
            energy: None,
        },
    )
    .await;
}

/// A simulated worker (`sim-1`, one slot, `libx264`) linked to `sched`: its hello
/// sent, the master's end attached. Returns the worker's end of the link.
pub async fn attach_worker(sched: &ActorRef<SchedulerMsg>) -> LinkEnd {
    attach_worker_as(sched, "sim-1").await
}

/// [`attach_worker`] with another node id.
pub async fn attach_worker_as(sched: &ActorRef<SchedulerMsg>, node_id: &str) -> LinkEnd {
    let (master_end, worker) = in_process_pair();
    send(
        &worker,
        &ToMaster::Hello {
            node_id: node_id.into(),
            protocol_version: wire::PROTOCOL_VERSION,
            slots: 1,
            capabilities: Capabilities {
                encoders: vec!["libx264".into()],
                cores: 1,
                memory_bytes: 1 << 30,
                unavailable_encoders: Vec::new(),
                metrics: Vec::new(),
            },
            running: Vec::new(),
            unacked: Vec::new(),
        },
    )
    .await;
    sched
        .cast(SchedulerMsg::AttachLink(master_end))
        .expect("attach");
    worker
}
