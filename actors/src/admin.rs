//! `AdminActor`: owns the HTTP API (axum) under the scheduler's supervision.
//!
//! The actor binds the listener in `pre_start` and serves until it stops;
//! if the server task dies, the actor stops and the scheduler's restart
//! policy applies. Handlers read jobs straight from the store (sled is safe
//! for concurrent readers) and send every change to the `SchedulerActor`, the
//! single writer of job transitions. Submissions are stored by the handler
//! itself so concurrent requests share one disk flush (group commit).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use ffrtmp_runtime::error::FieldError;
use ffrtmp_runtime::model::{Job, JobState, Priority};
use ffrtmp_runtime::spec::{self, MediaRoots};
use ffrtmp_runtime::store::{ListFilter, Store};
use futures::Stream;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::events::JobEvents;
use crate::metrics as m;
use crate::scheduler::{CancelReply, SchedulerMsg};

/// Default request body limit (a job request is well under 4 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Page size of `GET /v1/jobs` when none is asked for, and the most it returns.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// How long an API call waits for the scheduler.
const SCHEDULER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How the HTTP API is set up.
#[derive(Clone)]
pub struct AdminArgs {
    pub bind: SocketAddr,
    pub store: Store,
    pub events: JobEvents,
    pub media_roots: Arc<MediaRoots>,
    /// Bearer key required on every route but `/healthz` and `/readyz`.
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    pub metrics: Option<PrometheusHandle>,
    /// Filled in by the scheduler that supervises this actor.
    pub scheduler: Option<ActorRef<SchedulerMsg>>,
    /// The local worker, for the test-only panic hook (used only when the
    /// `fault-injection` feature is compiled in).
    pub fault_node: Option<ActorRef<crate::node::NodeMsg>>,
}

pub enum AdminMsg {
    LocalAddr(RpcReplyPort<SocketAddr>),
    /// The server task ended on its own.
    ServerDied(String),
}

pub struct AdminState {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Drop for AdminState {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.abort();
    }
}

pub struct AdminActor;

impl Actor for AdminActor {
    type Msg = AdminMsg;
    type State = AdminState;
    type Arguments = AdminArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AdminMsg>,
        args: AdminArgs,
    ) -> Result<AdminState, ActorProcessingErr> {
        let scheduler = args
            .scheduler
            .clone()
            .ok_or("AdminActor needs its scheduler")?;
        let listener = tokio::net::TcpListener::bind(args.bind).await?;
        let addr = listener.local_addr()?;
        let app = router(Arc::new(Api {
            store: args.store.clone(),
            events: args.events.clone(),
            roots: args.media_roots.clone(),
            api_key: args.api_key.clone(),
            metrics: args.metrics.clone(),
            scheduler,
            #[cfg(feature = "fault-injection")]
            fault_node: args.fault_node.clone(),
        }))
        .layer(DefaultBodyLimit::max(args.max_body_bytes));
        let (tx, rx) = oneshot::channel::<()>();
        let me = myself.clone();
        let server = tokio::spawn(async move {
            let res = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            let why = match res {
                Ok(()) => "server stopped".to_string(),
                Err(e) => format!("server error: {e}"),
            };
            let _ = me.cast(AdminMsg::ServerDied(why));
        });
        tracing::info!(%addr, "HTTP API listening");
        Ok(AdminState {
            addr,
            shutdown: Some(tx),
            server,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AdminMsg>,
        msg: AdminMsg,
        state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AdminMsg::LocalAddr(reply) => {
                let _ = reply.send(state.addr);
            }
            AdminMsg::ServerDied(why) => {
                if state.shutdown.is_some() {
                    myself.stop(Some(why));
                }
            }
        }
        Ok(())
    }
}

struct Api {
    store: Store,
    events: JobEvents,
    roots: Arc<MediaRoots>,
    api_key: Option<String>,
    metrics: Option<PrometheusHandle>,
    scheduler: ActorRef<SchedulerMsg>,
    #[cfg(feature = "fault-injection")]
    fault_node: Option<ActorRef<crate::node::NodeMsg>>,
}

/// An API error: a status and `{"error": {"code", "message", "field"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: FieldError,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: FieldError::new(code, None, message),
        }
    }

    fn field(status: StatusCode, error: FieldError) -> ApiError {
        ApiError { status, error }
    }

    fn not_found(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no job {id}"))
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error serving a request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            metrics::counter!(m::REQUESTS_REJECTED, "code" => self.error.code.clone()).increment(1);
        }
        let body = json!({ "error": {
            "code": self.error.code,
            "message": self.error.message,
            "field": self.error.field,
        }});
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// One route of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// As axum writes it: `{id}` is a path parameter.
    pub path: &'static str,
    /// Behind the API key (when one is set).
    pub needs_key: bool,
}

/// Every route with its handler. The router is built from this table and
/// [`routes`] lists it, so a route cannot be served without being listed
/// (tests/security.rs checks each listed route's authentication).
fn table() -> Vec<(Route, MethodRouter<Arc<Api>>)> {
    let public = |method, path| Route {
        method,
        path,
        needs_key: false,
    };
    let keyed = |method, path| Route {
        method,
        path,
        needs_key: true,
    };
    #[cfg(feature = "fault-injection")]
    let debug = [(
        keyed("POST", "/v1/debug/jobs/{id}/panic"),
        post(inject_panic),
    )];
    #[cfg(not(feature = "fault-injection"))]
    let debug: [(Route, MethodRouter<Arc<Api>>); 0] = [];
    let t: Vec<(Route, MethodRouter<Arc<Api>>)> = vec![
        (
            public("GET", "/healthz"),
            get(|| async { Json(json!({"status": "ok"})) }),
        ),
        (public("GET", "/readyz"), get(readyz)),
        (keyed("POST", "/v1/jobs"), post(submit)),
        (keyed("GET", "/v1/jobs"), get(list)),
        (keyed("GET", "/v1/jobs/{id}"), get(get_job)),
        (keyed("POST", "/v1/jobs/{id}/cancel"), post(cancel)),
        (keyed("GET", "/v1/jobs/{id}/events"), get(events)),
        (keyed("GET", "/v1/nodes"), get(nodes)),
        (keyed("POST", "/v1/nodes/{id}/drain"), post(drain)),
        (keyed("GET", "/v1/reports/efficiency"), get(efficiency)),
        (keyed("GET", "/metrics"), get(metrics_text)),
    ];
    t.into_iter().chain(debug).collect()
}

/// Every route the HTTP API serves, and whether it needs the API key.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(r, _)| r).collect()
}

fn router(api: Arc<Api>) -> Router {
    let mut public = Router::new();
    let mut protected = Router::new();
    for (r, handler) in table() {
        if r.needs_key {
            protected = protected.route(r.path, handler);
        } else {
            public = public.route(r.path, handler);
        }
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(api.clone(), auth));
    public
        .merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route") })
        .with_state(api)
}

async fn auth(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    if let Some(key) = &api.api_key {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = presented.as_bytes().ct_eq(key.as_bytes()).into();
        if !ok {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong API key (Authorization: Bearer KEY)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn readyz(State(api): State<Arc<Api>>) -> Response {
    let ready = api.scheduler.get_status() == ractor::ActorStatus::Running;
    if ready {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready"})),
        )
            .into_response()
    }
}

async fn submit(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body.map_err(|rej| {
        let status = rej.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        ApiError::new(status, code, rej.body_text())
    })?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the job as application/json",
            ));
        }
    }
    let spec = spec::parse_job_request(&body, &api.roots)
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, e))?;
    let id = uuid::Uuid::now_v7().to_string();
    let seq = api.store.next_seq().map_err(ApiError::internal)?;
    let job = Job::new(id.clone(), seq, spec, crate::now_ms());
    // 201 means on disk.
    api.store
        .put_durable(&job)
        .await
        .map_err(ApiError::internal)?;
    metrics::counter!(m::JOBS_SUBMITTED).increment(1);
    api.events.publish(crate::events::UpdateKind::State, &job);
    if let Err(e) = api.scheduler.cast(SchedulerMsg::Enqueued(id.clone())) {
        // Stored, so not lost: the scheduler queues it on its next start.
        tracing::error!(job = %id, error = %e, "scheduler unreachable after storing a job");
    }
    let location = format!("/v1/jobs/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    priority: Option<String>,
    limit: Option<usize>,
    cursor: Option<u64>,
}

async fn list(
    State(api): State<Arc<Api>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(q) = query.map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            FieldError::new("invalid_query", None, e.body_text()),
        )
    })?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                FieldError::invalid("state", format!("unknown state {s:?}")),
            )
        })?),
    };
    let priority = match q.priority.as_deref() {
        None => None,
        Some(p) => Some(
            Priority::ALL
                .into_iter()
                .find(|x| x.as_str() == p)
                .ok_or_else(|| {
                    ApiError::field(
                        StatusCode::BAD_REQUEST,
                        FieldError::invalid("priority", format!("unknown priority {p:?}")),
                    )
                })?,
        ),
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            FieldError::invalid("limit", format!("limit must be 1..={MAX_PAGE}")),
        ));
    }
    let page = api
        .store
        .list(&ListFilter {
            state,
            priority,
            after_seq: q.cursor,
            limit,
        })
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({ "jobs": page.jobs, "next_cursor": page.next_cursor }),
    ))
}

async fn get_job(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    match api.store.get(&id).map_err(ApiError::internal)? {
        Some(job) => Ok(Json(job)),
        None => Err(ApiError::not_found(&id)),
    }
}

async fn cancel(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult<Response> {
    let reply = ractor::call_t!(
        api.scheduler,
        SchedulerMsg::Cancel,
        SCHEDULER_CALL_TIMEOUT.as_millis() as u64,
        id.clone()
    )
    .map_err(ApiError::internal)?;
    match reply {
        CancelReply::Cancelled(job) => Ok((StatusCode::OK, Json(*job)).into_response()),
        CancelReply::Requested(job) => Ok((StatusCode::ACCEPTED, Json(*job)).into_response()),
        CancelReply::AlreadyFinished(job) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("job {} is already {}", job.id, job.state.as_str()),
        )),
        CancelReply::NotFound => Err(ApiError::not_found(&id)),
    }
}

async fn nodes(State(api): State<Arc<Api>>) -> ApiResult<Json<serde_json::Value>> {
    let nodes = ractor::call_t!(
        api.scheduler,
        SchedulerMsg::Nodes,
        SCHEDULER_CALL_TIMEOUT.as_millis() as u64
    )
    .map_err(ApiError::internal)?;
    Ok(Json(json!({ "nodes": nodes })))
}

/// `GET /v1/reports/efficiency`: configurations (scenario × encoder × node)
/// ranked by median joules per output minute over their succeeded jobs;
/// estimates are labelled and ranked after measurements.
async fn efficiency(
    State(api): State<Arc<Api>>,
) -> ApiResult<Json<ffrtmp_runtime::report::EfficiencyReport>> {
    let store = api.store.clone();
    // A scan of every succeeded job: off the async workers.
    let jobs = tokio::task::spawn_blocking(move || store.in_states(&[JobState::Succeeded]))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(ffrtmp_runtime::report::efficiency(&jobs)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainQuery {
    deadline_s: Option<u64>,
}

/// Longest drain deadline accepted, and the default.
const MAX_DRAIN_DEADLINE_S: u64 = 24 * 3600;
const DEFAULT_DRAIN_DEADLINE_S: u64 = 600;

/// `POST /v1/nodes/{id}/drain?deadline_s=N`: the node takes no new jobs,
/// finishes its running ones within N seconds (then they are requeued), and
/// leaves. `202` with the node, `404` if no such node is connected.
async fn drain(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    query: Result<Query<DrainQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            FieldError::new("invalid_query", None, e.body_text()),
        )
    })?;
    let deadline_s = q.deadline_s.unwrap_or(DEFAULT_DRAIN_DEADLINE_S);
    if deadline_s > MAX_DRAIN_DEADLINE_S {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            FieldError::invalid(
                "deadline_s",
                format!("deadline_s must be 0..={MAX_DRAIN_DEADLINE_S}"),
            ),
        ));
    }
    let node = ractor::call_t!(
        api.scheduler,
        SchedulerMsg::Drain,
        SCHEDULER_CALL_TIMEOUT.as_millis() as u64,
        id.clone(),
        Duration::from_secs(deadline_s)
    )
    .map_err(ApiError::internal)?;
    match node {
        Some(n) => Ok((StatusCode::ACCEPTED, Json(n)).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no connected node {id}"),
        )),
    }
}

async fn metrics_text(State(api): State<Arc<Api>>) -> Response {
    match &api.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "this process exports no Prometheus metrics",
        )
        .into_response(),
    }
}

/// `GET /v1/jobs/{id}/events`: the job now, then every change, ending with
/// the terminal state.
async fn events(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Subscribe before reading, so no change falls between the two.
    let mut rx = api.events.subscribe();
    let first = api
        .store
        .get(&id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(&id))?;
    let store = api.store.clone();
    let stream = async_stream(move |tx| async move {
        let done = first.state.is_terminal();
        if tx.send(job_event("state", &first)).await.is_err() || done {
            return;
        }
        loop {
            let job = match rx.recv().await {
                Ok(u) if u.job.id == id => {
                    let kind = match u.kind {
                        crate::events::UpdateKind::State => "state",
                        crate::events::UpdateKind::Progress => "progress",
                    };
                    if tx.send(job_event(kind, &u.job)).await.is_err() {
                        return;
                    }
                    u.job.state.is_terminal().then_some(())
                }
                Ok(_) => None,
                // Too slow a reader: re-read the truth and carry on.
                Err(broadcast::error::RecvError::Lagged(_)) => match store.get(&id) {
                    Ok(Some(job)) => {
                        if tx.send(job_event("state", &job)).await.is_err() {
                            return;
                        }
                        job.state.is_terminal().then_some(())
                    }
                    _ => return,
                },
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if job.is_some() {
                return;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn job_event(kind: &str, job: &Job) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(kind)
        .data(serde_json::to_string(job).unwrap_or_else(|_| "{}".into())))
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(feature = "fault-injection")]
async fn inject_panic(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if std::env::var_os("FFRTMP_FAULT_INJECTION").is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fault_injection_disabled",
            "set FFRTMP_FAULT_INJECTION=1 to enable fault injection",
        ));
    }
    let node = api
        .fault_node
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no_local_node", "no local worker"))?;
    node.cast(crate::node::NodeMsg::InjectJobPanic(id))
        .map_err(ApiError::internal)?;
    Ok(StatusCode::ACCEPTED)
}
