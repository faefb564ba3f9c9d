//! Routes served by a real scheduler over a real store (no workers).

use ffrtmp_api::JobLogs;
use ffrtmp_os::store::Store;
use ffrtmp_runtime::experiment::Experiment;
use ffrtmp_runtime::model::{FailureReason, Job, JobState, Outcome};
use serde_json::{json, Value};

use super::super::experiments::experiment_status;
use super::openapi::doc;
use super::{failed_job, get, header_value, request, start_api, test_admin};
use crate::events::JobEvents;
use crate::scheduler::SchedulerMsg;

/// A standalone node's own worker is its only one: draining it is
/// refused with 409 and the reason; any other id is still looked up.
#[tokio::test]
async fn draining_a_standalone_nodes_own_worker_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("master.sled")).expect("store");
    let events = JobEvents::default();
    let mut admin = test_admin(&store, &events, None);
    admin.standalone_worker = Some("node-own".into());
    let (scheduler, done, addr) = start_api(&store, &events, admin).await;
    let (status, _, body) = request(addr, "POST", "/v1/nodes/node-own/drain").await;
    assert_eq!(status, 409, "{body}");
    let err: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(err["error"]["code"], "only_worker", "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("only"), "{message}");
    let (status, _, body) = request(addr, "POST", "/v1/nodes/node-other/drain").await;
    assert_eq!(status, 404, "{body}");
    scheduler.stop(None);
    let _ = done.await;
}

/// An experiment whose master stopped while storing its jobs: the
/// record lists three, one landed. Its progress says so, and it is done
/// once the jobs that landed have ended (the others never will).
#[tokio::test]
async fn an_incomplete_experiment_shows_what_landed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("master.sled")).expect("store");
    let job = failed_job(&store);
    store.put_durable(&job).await.expect("put");
    let record = Experiment {
        name: "cut".into(),
        created_ms: 1,
        request: json!({"name": "cut"}),
        job_ids: vec![
            job.id.clone(),
            "never-stored-1".into(),
            "never-stored-2".into(),
        ],
        complete: false,
        cancelled_ms: None,
    };
    assert!(store.insert_experiment(&record).expect("insert"));
    let s = experiment_status(&store, record).expect("status");
    assert_eq!((s.total, s.stored, s.complete), (3, 1, false));
    assert_eq!(s.states["failed"], 1);
    assert_eq!(s.states.values().sum::<u64>(), 1);
    assert!(s.done);
    assert!(s.report.is_some());
    assert_eq!(s.configurations.len(), 1);
    assert_eq!(
        (s.configurations[0].total, s.configurations[0].ended),
        (1, 1)
    );
}

/// The retry and logs routes against a real scheduler and store, with no
/// worker attached (so a re-queued job stays `queued`).
#[tokio::test]
async fn retry_requeues_once_and_logs_show_the_stderr_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("master.sled")).expect("store");
    let failed = failed_job(&store);
    store
        .put_durable(&failed)
        .await
        .expect("store the failed job");
    let events = JobEvents::default();
    let admin = test_admin(&store, &events, None);
    let (scheduler, done, addr) = start_api(&store, &events, admin).await;
    let path = "/v1/jobs/job-failed/retry";

    // The logs of the failed attempt.
    let (status, _, body) = get(addr, "/v1/jobs/job-failed/logs").await;
    assert_eq!(status, 200, "{body}");
    let logs: JobLogs = serde_json::from_str(&body).expect("logs");
    assert_eq!(logs, JobLogs::of(&failed));
    assert_eq!(logs.state, JobState::Failed);
    assert_eq!(logs.attempts.len(), 1);
    let a = &logs.attempts[0];
    assert_eq!(
        (
            a.attempt,
            a.node.as_str(),
            a.outcome.as_deref(),
            a.exit_code
        ),
        (1, "n1", Some("failed"), Some(1))
    );
    assert_eq!(a.reason, Some(FailureReason::FfmpegError));
    assert_eq!(
        a.stderr_tail,
        vec!["in.mp4: Invalid data found when processing input".to_string()]
    );

    // Two retries at once: exactly one re-queues.
    let mut watcher = events.subscribe();
    let (one, two) = tokio::join!(request(addr, "POST", path), request(addr, "POST", path));
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{one:?} {two:?}");
    let (ok, refused) = if one.0 == 200 { (one, two) } else { (two, one) };
    let job: Job = serde_json::from_str(&ok.2).expect("the job");
    assert_eq!(job.id, "job-failed");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempts, failed.attempts, "the history is kept");
    assert_eq!((job.attempt, job.token), (failed.attempt, failed.token));
    assert_eq!((&job.failure, &job.node), (&None, &None));
    let requeue = job.requeue.clone().expect("requeue recorded");
    assert_eq!((requeue.count, requeue.after_attempt), (1, 1));
    assert!(requeue.queue_seq > failed.seq, "{requeue:?}");
    let err: Value = serde_json::from_str(&refused.2).expect("a JSON error");
    assert_eq!(err["error"]["code"], "not_retryable", "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("queued"), "names the state: {message}");
    // Durable before the reply: the store has it as answered.
    assert_eq!(store.get("job-failed").expect("get"), Some(job.clone()));
    // Watchers saw it go back to `queued`.
    let update = watcher.try_recv().expect("an update was published");
    assert_eq!(update.job.id, "job-failed");
    assert_eq!(update.job.state, JobState::Queued);

    // A late result of the attempt before the retry changes nothing.
    let late = ffrtmp_runtime::wire::ToMaster::Finished {
        job_id: "job-failed".into(),
        token: failed.token,
        outcome: Outcome::Succeeded {
            result: ffrtmp_runtime::model::JobResult::default(),
        },
        energy: None,
    };
    scheduler
        .cast(SchedulerMsg::FromWorker {
            node_id: "n1".into(),
            msg: late,
        })
        .expect("cast");
    ractor::call_t!(scheduler, SchedulerMsg::Sync, 10_000).expect("sync");
    assert_eq!(store.get("job-failed").expect("get"), Some(job.clone()));

    // A queued job is not retried again; nothing changes.
    let (status, _, body) = request(addr, "POST", path).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(store.get("job-failed").expect("get"), Some(job));
    // Unknown ids.
    for (method, p) in [
        ("POST", "/v1/jobs/nope/retry"),
        ("GET", "/v1/jobs/nope/logs"),
    ] {
        let (status, _, body) = request(addr, method, p).await;
        assert_eq!(status, 404, "{method} {p}: {body}");
        let err: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(err["error"]["code"], "not_found", "{err}");
    }

    scheduler.stop(None);
    let _ = done.await;
}

#[tokio::test]
async fn the_document_is_served_without_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("master.sled")).expect("store");
    let events = JobEvents::default();
    let admin = test_admin(&store, &events, Some("doc-key"));
    let (scheduler, done, addr) = start_api(&store, &events, admin).await;

    let (status, ct, body) = get(addr, "/v1/openapi.json").await;
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let served: Value = serde_json::from_str(&body).expect("valid JSON");
    let version = served["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi: {version:?}");
    assert_eq!(served, doc(), "the served document is openapi()");
    // The key is on: a keyed route refuses the same request.
    let (status, _, body) = get(addr, "/v1/jobs").await;
    assert_eq!(status, 401, "{body}");
    // A method a route does not take: 405, `Allow`, and the error shape.
    let (status, head, body) = request(addr, "DELETE", "/v1/openapi.json").await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(
        header_value(&head, "allow").as_deref(),
        Some("GET,HEAD"),
        "{head}"
    );
    let err: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(err["error"]["code"], "method_not_allowed", "{body}");

    scheduler.stop(None);
    let _ = done.await;
}
