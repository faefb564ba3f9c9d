use super::*;
use ractor::Actor;
use std::os::unix::fs::PermissionsExt;

use ffrtmp_runtime::model::{Codec, EncodeParams, JobSpec, Priority, ResourceLimits};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

/// What the fake node hears from its job.
#[derive(Debug)]
enum Heard {
    Started,
    Finished(Outcome),
}

/// Stands in for the `NodeActor`: forwards the job's reports.
struct FakeNode;

impl Actor for FakeNode {
    type Msg = NodeMsg;
    type State = mpsc::UnboundedSender<Heard>;
    type Arguments = mpsc::UnboundedSender<Heard>;

    async fn pre_start(
        &self,
        _: ActorRef<NodeMsg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _: ActorRef<NodeMsg>,
        msg: NodeMsg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::JobStarted { .. } => {
                let _ = tx.send(Heard::Started);
            }
            NodeMsg::JobFinished { outcome, .. } => {
                let _ = tx.send(Heard::Finished(outcome));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A job whose "ffmpeg" is a script that runs until signalled and, like
/// FFmpeg, exits 255 on SIGTERM. (No real encode: nothing to wait for.)
struct Harness {
    _dir: tempfile::TempDir,
    node: ActorRef<NodeMsg>,
    job: ActorRef<JobMsg>,
    heard: mpsc::UnboundedReceiver<Heard>,
}

impl Harness {
    async fn start(lease: Option<Duration>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ffmpeg = dir.path().join("fake-ffmpeg");
        std::fs::write(
            &ffmpeg,
            "#!/bin/sh\ntrap 'exit 255' TERM\nsleep 1000 &\nwait\n",
        )
        .unwrap();
        std::fs::set_permissions(&ffmpeg, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (tx, heard) = mpsc::unbounded_channel();
        let (node, _) = Actor::spawn(None, FakeNode, tx).await.unwrap();
        let spec = JobSpec {
            scenario: None,
            encode: EncodeParams::new(64, 64, 1, Codec::H264, 100, "veryfast".into()),
            input: ffrtmp_runtime::model::Input::Testsrc { duration_s: 3600.0 },
            output: Output::Null,
            priority: Priority::Medium,
            resource_limits: ResourceLimits::default(),
            max_retries: 3,
            overwrite: false,
            quality: None,
            labels: Default::default(),
            experiment: None,
        };
        let args = JobArgs {
            assignment: Assignment {
                job_id: "job-lease".into(),
                attempt: 1,
                token: 7,
                spec,
            },
            node: node.clone(),
            ffmpeg,
            ffprobe: "ffprobe".into(),
            vmaf_bin: None,
            work_dir: None,
            // An unusable parent: no cgroup, nice only.
            cgroups: Arc::new(CgroupManager::detect("../no-cgroups")),
            nice: 0,
            kill_grace: Duration::from_secs(5),
            lease,
            lease_end_ms: None,
            power: None,
            run_log: None,
            media_roots: Vec::new(),
        };
        let (job, _) = Actor::spawn(None, JobActor, args).await.unwrap();
        let mut h = Harness {
            _dir: dir,
            node,
            job,
            heard,
        };
        assert!(matches!(h.next().await, Heard::Started));
        h
    }

    async fn next(&mut self) -> Heard {
        tokio::time::timeout(DEADLINE, self.heard.recv())
            .await
            .expect("the job reported nothing in time")
            .expect("the fake node went away")
    }

    async fn outcome(&mut self) -> Outcome {
        match self.next().await {
            Heard::Finished(outcome) => outcome,
            other => panic!("expected an outcome, got {other:?}"),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Stopping the job actor drops its ProcessGuard: the group is killed.
        self.job.stop(None);
        self.node.stop(None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expired_stops_the_job_as_a_transient_worker_crash() {
    let mut h = Harness::start(None).await;
    h.job.cast(JobMsg::LeaseExpired).unwrap();
    match h.outcome().await {
        Outcome::Transient { failure } => {
            assert_eq!(failure.reason, FailureReason::WorkerCrash, "{failure:?}");
            assert_eq!(failure.message, "the node's lease with the master expired");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_enforces_the_initial_lease() {
    let mut h = Harness::start(Some(Duration::from_millis(300))).await;
    // Nobody renews: the guard process SIGKILLs the job by itself.
    match h.outcome().await {
        Outcome::Transient { failure } => {
            assert_eq!(failure.signal, Some(Signal::SIGKILL as i32), "{failure:?}");
            assert_eq!(failure.reason, FailureReason::ResourceKilled, "{failure:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_lease_keeps_the_job_running() {
    let mut h = Harness::start(Some(Duration::from_millis(300))).await;
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(50));
    while start.elapsed() < Duration::from_millis(1500) {
        every.tick().await;
        h.job
            .cast(JobMsg::RenewLease(Duration::from_secs(1)))
            .unwrap();
    }
    assert!(h.heard.try_recv().is_err(), "the job ended while renewed");
    // Still running (or the guard would have killed it): cancel it.
    h.job.cast(JobMsg::Cancel).unwrap();
    assert!(matches!(h.outcome().await, Outcome::Cancelled));
}
