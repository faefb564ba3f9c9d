//! The HTTP layer's tests: the OpenAPI document against the route table,
//! query and media-type refusals, server-sent events, and routes served by a
//! real scheduler over a real store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_os::store::Store;
use ffrtmp_runtime::model::{FailureReason, Job, Outcome};
use ffrtmp_runtime::spec::{self, MediaRoots};
use ractor::ActorRef;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::AdminArgs;
use crate::events::JobEvents;
use crate::scheduler::SchedulerMsg;

use super::{HttpLimits, DEFAULT_MAX_BODY_BYTES};

mod api;
mod openapi;
mod queries;
mod sse;

/// The API's settings for a test: no media roots, the default limits.
pub(super) fn test_admin(store: &Store, events: &JobEvents, api_key: Option<&str>) -> AdminArgs {
    AdminArgs {
        bind: "127.0.0.1:0".parse().expect("addr"),
        store: store.clone(),
        events: events.clone(),
        media_roots: Arc::new(MediaRoots::new(&[]).expect("no roots")),
        ffprobe: None,
        api_key: api_key.map(str::to_string),
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        max_experiment_jobs: ffrtmp_runtime::experiment::DEFAULT_MAX_JOBS,
        limits: HttpLimits::default(),
        standalone_worker: None,
        metrics: None,
        scheduler: None,
        fault_node: None,
    }
}

/// A scheduler (no workers) serving `admin`: it, its end, the API's address.
pub(super) async fn start_api(
    store: &Store,
    events: &JobEvents,
    admin: AdminArgs,
) -> (
    ActorRef<SchedulerMsg>,
    tokio::task::JoinHandle<()>,
    SocketAddr,
) {
    let mut args = crate::scheduler::SchedulerArgs::new(store.clone());
    args.events = events.clone();
    args.admin = Some(Arc::new(admin));
    args.lease = Duration::from_secs(5);
    let (scheduler, done) = crate::embed::spawn_scheduler(args, None)
        .await
        .expect("master");
    let addr = ractor::call_t!(scheduler, SchedulerMsg::HttpAddr, 10_000)
        .expect("scheduler answers")
        .expect("the API listens");
    (scheduler, done, addr)
}

/// A bare HTTP/1.1 GET: (status, content type, body).
pub(super) async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let (status, head, body) = request(addr, "GET", path).await;
    let ct = header_value(&head, "content-type").unwrap_or_default();
    (status, ct, body)
}

pub(super) fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// A bare HTTP/1.1 request without a body: (status, header block, body).
pub(super) async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, head.to_string(), body.to_string())
}

/// A new `queued` job `id` (a 1 s test pattern to nowhere), not stored.
pub(super) fn queued_job(store: &Store, id: &str) -> Job {
    let roots = MediaRoots::new(&[]).expect("no roots");
    let body = json!({"scenario": "480p30-h264", "output": {"type": "null"},
                      "input": {"type": "testsrc", "duration_s": 1}});
    let spec = spec::parse_job_request(body.to_string().as_bytes(), &roots).expect("spec");
    let seq = store.next_seq().expect("seq");
    Job::new(id.into(), seq, spec, 1_000)
}

/// A job as a run that failed on its own leaves it: attempt 1 on `n1`,
/// FFmpeg's stderr lines kept.
pub(super) fn failed_job(store: &Store) -> Job {
    use ffrtmp_runtime::model::{Failure, Isolation};
    use ffrtmp_runtime::state;
    let mut job = queued_job(store, "job-failed");
    let token = store.next_token().expect("token");
    state::assign(&mut job, &"n1".to_string(), token, 1_000).expect("assign");
    state::start(&mut job, token, Isolation::None, 1_100).expect("start");
    let mut f = Failure::new(FailureReason::FfmpegError, "ffmpeg exited with 1");
    f.exit_code = Some(1);
    f.stderr_tail = vec!["in.mp4: Invalid data found when processing input".into()];
    let policy = ffrtmp_runtime::retry::RetryPolicy::default();
    let outcome = Outcome::Failed { failure: f };
    state::finish(&mut job, token, outcome, None, 2_000, &policy, 0.5).expect("finish");
    job
}
