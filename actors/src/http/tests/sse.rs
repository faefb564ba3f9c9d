//! Server-sent events: an event that does not serialise; a job's stream
//! served from the job-update subscription.

use ffrtmp_os::store::Store;
use ffrtmp_runtime::model::{Job, JobState};

use super::super::sse::{json_event, send_event};
use super::{failed_job, queued_job, request, start_api, test_admin};
use crate::events::JobEvents;

/// A value that does not serialise became `data: {}` on the stream;
/// now it is an error event, and the stream ends after it.
#[tokio::test]
async fn an_event_that_does_not_serialise_ends_the_stream_with_an_error() {
    let bad: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let ev = json_event("state", &bad);
    let Err(shown) = &ev else {
        panic!("serialised: {ev:?}")
    };
    let shown = format!("{shown:?}");
    assert!(shown.contains("event: error"), "{shown}");
    assert!(shown.contains("internal"), "{shown}");
    assert!(!shown.contains("data: {}"), "{shown}");
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    assert!(!send_event(&tx, ev).await, "the stream goes on");
    assert!(rx.recv().await.is_some(), "the error event was sent");
    let fine = json_event("state", &serde_json::json!({"id": "j"}));
    assert!(send_event(&tx, fine).await);
}

/// The `(event, job)` pairs of a whole event stream's body.
fn events_of(body: &str) -> Vec<(String, Job)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = Some(k.to_string());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Job>(d).expect("a job as data"));
                }
            }
            Some((kind?, data?))
        })
        .collect()
}

/// `GET /v1/jobs/{id}/events` over a real scheduler and store: a finished
/// job is one `state` event and the end; a queued job's stream ends with
/// its cancellation; an unknown job is 404 with the error body.
#[tokio::test]
async fn a_jobs_event_stream_ends_after_its_terminal_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("master.sled")).expect("store");
    let failed = failed_job(&store);
    store.put_durable(&failed).await.expect("put");
    let queued = queued_job(&store, "job-queued");
    store.put_durable(&queued).await.expect("put");
    let events = JobEvents::default();
    let admin = test_admin(&store, &events, None);
    let (scheduler, done, addr) = start_api(&store, &events, admin).await;

    let (status, head, body) = request(addr, "GET", "/v1/jobs/job-failed/events").await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("text/event-stream"), "{head}");
    let seen = events_of(&body);
    assert_eq!(seen.len(), 1, "{body}");
    assert_eq!(seen[0].0, "state");
    assert_eq!(seen[0].1, failed);

    // The stream of the queued job, and its cancellation: whether the
    // cancellation lands before or after the stream subscribes, the
    // stream's last event is the job cancelled, and then it ends.
    let watch = tokio::spawn(request(addr, "GET", "/v1/jobs/job-queued/events"));
    let (status, _, body) = request(addr, "POST", "/v1/jobs/job-queued/cancel").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = watch.await.expect("the watcher");
    assert_eq!(status, 200, "{body}");
    let seen = events_of(&body);
    assert!(
        seen.iter()
            .all(|(kind, job)| kind == "state" && job.id == "job-queued"),
        "{body}"
    );
    let last = seen.last().expect("at least one event");
    assert_eq!(last.1.state, JobState::Cancelled, "{body}");
    assert_eq!(
        Some(&last.1),
        store.get("job-queued").expect("get").as_ref()
    );

    let (status, _, body) = request(addr, "GET", "/v1/jobs/nope/events").await;
    assert_eq!(status, 404, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(err["error"]["code"], "not_found", "{err}");

    scheduler.stop(None);
    let _ = done.await;
}
