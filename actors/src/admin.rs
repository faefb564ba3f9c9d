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
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use ffrtmp_os::store::{ListFilter, Store, StoreError};
use ffrtmp_runtime::error::FieldError;
use ffrtmp_runtime::model::{FailureReason, Job, JobState, NodeId, Outcome, Priority};
use ffrtmp_runtime::report::{EfficiencyReport, ReportQuery};
use ffrtmp_runtime::seed::SeedRequest;
use ffrtmp_runtime::spec::{self, JobRequest, MediaRoots};
use futures::Stream;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::events::JobEvents;
use crate::metrics as m;
use crate::output_claims::{output_path, InUse, OutputClaims};
use crate::scheduler::{CancelReply, ExperimentRefused, NodeInfo, RetryReply, SchedulerMsg};
use ffrtmp_runtime::experiment::{Experiment, ExperimentRequest};

/// Default request body limit (a job request is well under 4 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default cap on open HTTP connections ([`HttpLimits::max_connections`]).
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 512;
/// Default time a client has to send a request's head, and its body.
pub const DEFAULT_HTTP_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size of `GET /v1/jobs` when none is asked for, and the most it returns.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// How long an API call waits for the scheduler.
const SCHEDULER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How the HTTP API is set up.
#[derive(Clone)]
pub struct AdminArgs {
    /// Where to listen (port 0: any; [`AdminMsg::LocalAddr`] tells which).
    pub bind: SocketAddr,
    /// The scheduler's job store; handlers read it directly and store new
    /// submissions themselves (group commit), never transitions.
    pub store: Store,
    /// The scheduler's update channel, for the SSE route.
    pub events: JobEvents,
    /// The only folders job inputs and outputs may name.
    pub media_roots: Arc<MediaRoots>,
    /// The ffprobe binary: a file input's container is probed at
    /// submission and refused unless on the allow-list
    /// (`spec::check_input_format`); `None`: only the worker probes.
    pub ffprobe: Option<std::path::PathBuf>,
    /// Bearer key required on every route but `/healthz` and `/readyz`.
    pub api_key: Option<String>,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// The most jobs one experiment may expand to (`--max-experiment-jobs`).
    pub max_experiment_jobs: u64,
    /// Connection cap and read timeouts.
    pub limits: HttpLimits,
    /// The node id of a standalone node's own worker, the only worker it can
    /// have: draining it is refused (`409`).
    pub standalone_worker: Option<String>,
    /// What `GET /metrics` renders; without it the route answers 404.
    pub metrics: Option<PrometheusHandle>,
    /// Filled in by the scheduler that supervises this actor.
    pub scheduler: Option<ActorRef<SchedulerMsg>>,
    /// The local worker, for the test-only panic hook (used only when the
    /// `fault-injection` feature is compiled in).
    pub fault_node: Option<ActorRef<crate::node::NodeMsg>>,
}

/// How much of the process the HTTP API's clients may hold, and for how long
/// (docs/API.md, "Connections").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections at most; at the cap the oldest connection that has
    /// sent nothing is closed to make room, or the new one is refused.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this long after
    /// hyper started waiting for one (idle keep-alive included) is closed.
    pub header_timeout: Duration,
    /// A request whose body has not arrived whole this long after its head
    /// gets `408` and the connection is closed.
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
            header_timeout: DEFAULT_HTTP_READ_TIMEOUT,
            body_timeout: DEFAULT_HTTP_READ_TIMEOUT,
        }
    }
}

/// Messages the [`AdminActor`] handles.
pub enum AdminMsg {
    /// Replies with the address the API listens on.
    LocalAddr(RpcReplyPort<SocketAddr>),
    /// The server task ended on its own.
    ServerDied(String),
}

/// The admin actor's state (public only because ractor's `Actor` trait
/// names it): the listener's address and the server task.
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

/// Serves the HTTP API ([`routes`]) on [`AdminArgs::bind`]. Spawned by the
/// `SchedulerActor` under itself when the scheduler is given
/// [`AdminArgs`]; it stops when its server task dies, and the scheduler
/// restarts it (at most [`crate::scheduler::ADMIN_MAX_RESTARTS`] times a
/// minute).
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
            ffprobe: args.ffprobe.clone(),
            api_key: args.api_key.clone(),
            metrics: args.metrics.clone(),
            scheduler,
            max_body_bytes: args.max_body_bytes,
            max_experiment_jobs: args.max_experiment_jobs,
            body_timeout: args.limits.body_timeout,
            standalone_worker: args.standalone_worker.clone(),
            claims: OutputClaims::load(&args.store)?,
            #[cfg(feature = "fault-injection")]
            fault_node: args.fault_node.clone(),
        }))
        .layer(DefaultBodyLimit::max(args.max_body_bytes));
        let (tx, rx) = oneshot::channel::<()>();
        let me = myself.clone();
        let limits = args.limits;
        let server = tokio::spawn(async move {
            crate::http_server::serve(listener, app, limits, async {
                let _ = rx.await;
            })
            .await;
            let _ = me.cast(AdminMsg::ServerDied("server stopped".to_string()));
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
    ffprobe: Option<std::path::PathBuf>,
    api_key: Option<String>,
    metrics: Option<PrometheusHandle>,
    scheduler: ActorRef<SchedulerMsg>,
    max_body_bytes: usize,
    max_experiment_jobs: u64,
    body_timeout: Duration,
    standalone_worker: Option<String>,
    /// Which live job writes each file output (`409 output_in_use`).
    claims: OutputClaims,
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

    /// A store error: `503 storage_full` when the store refused the write
    /// for want of space or while it reopens after a failed log write
    /// (nothing was stored), else `500 internal`.
    fn store(e: StoreError) -> ApiError {
        match e {
            e if e.is_storage_full() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                format!("{e}; nothing was stored, try again later"),
            ),
            e => ApiError::internal(e),
        }
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
        (self.status, Json(ErrorBody { error: self.error })).into_response()
    }
}

/// Every error response: `{"error": {"code", "message", "field"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was refused and, where one field is to blame, which.
    pub error: FieldError,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` (`/healthz`), `ready` or `not_ready` (`/readyz`).
    pub status: &'static str,
    /// Why it is `not_ready` (e.g. `storage_full: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One page of `GET /v1/jobs`.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    /// In submission order.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<u64>,
}

/// `GET /v1/jobs/{id}/logs`: what the store keeps of FFmpeg's output, per
/// attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobLogs {
    /// The job's id.
    pub id: String,
    /// The job's state now.
    pub state: JobState,
    /// Every attempt, oldest first (attempts before a retry included).
    pub attempts: Vec<AttemptLog>,
}

/// One attempt in [`JobLogs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptLog {
    /// The attempt's number (1-based; numbering continues across retries).
    pub attempt: u32,
    /// The node it ran on.
    #[schema(value_type = String)]
    pub node: NodeId,
    /// How it ended: `succeeded`, `failed`, `transient`, `timed_out` or
    /// `cancelled`; `null` while it is in flight.
    pub outcome: Option<String>,
    /// Why it did not succeed (`ffmpeg_error`, `stalled`, ...), when it did
    /// not.
    pub reason: Option<FailureReason>,
    /// The failure's message, when it did not succeed.
    pub message: Option<String>,
    /// FFmpeg's exit code, when it exited with one.
    pub exit_code: Option<i32>,
    /// The signal that ended FFmpeg, when one did.
    pub signal: Option<i32>,
    /// The last lines FFmpeg wrote to stderr (at most 40 lines, 16 KiB), as
    /// the worker reported them with a failed, transient or timed-out
    /// outcome. Empty for an attempt that succeeded, was cancelled, is in
    /// flight, or was lost without a report.
    pub stderr_tail: Vec<String>,
}

impl JobLogs {
    /// The logs view of `job`.
    pub fn of(job: &Job) -> JobLogs {
        let attempts = job
            .attempts
            .iter()
            .map(|a| {
                let (outcome, failure) = match &a.outcome {
                    None => (None, None),
                    Some(Outcome::Succeeded { .. }) => (Some("succeeded"), None),
                    Some(Outcome::Cancelled) => (Some("cancelled"), None),
                    Some(Outcome::Failed { failure }) => (Some("failed"), Some(failure)),
                    Some(Outcome::Transient { failure }) => (Some("transient"), Some(failure)),
                    Some(Outcome::TimedOut { failure }) => (Some("timed_out"), Some(failure)),
                };
                AttemptLog {
                    attempt: a.attempt,
                    node: a.node.clone(),
                    outcome: outcome.map(str::to_string),
                    reason: failure.map(|f| f.reason),
                    message: failure.map(|f| f.message.clone()),
                    exit_code: failure.and_then(|f| f.exit_code),
                    signal: failure.and_then(|f| f.signal),
                    stderr_tail: failure.map(|f| f.stderr_tail.clone()).unwrap_or_default(),
                }
            })
            .collect();
        JobLogs {
            id: job.id.clone(),
            state: job.state,
            attempts,
        }
    }
}

/// `GET /v1/nodes`.
#[derive(Serialize, ToSchema)]
pub struct NodeList {
    /// Sorted by id; nodes gone but holding fenced attempts included.
    pub nodes: Vec<NodeInfo>,
}

/// One server-sent event of `GET /v1/jobs/{id}/events`, as the fields of the
/// event (OpenAPI 3.2's reading of `text/event-stream`): `event` is `state` or
/// `progress`, `data` the whole job as JSON.
pub struct JobEvent;

impl ToSchema for JobEvent {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("JobEvent")
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            Job::name().into_owned(),
            <Job as utoipa::PartialSchema>::schema(),
        ));
        Job::schemas(schemas);
    }
}

impl utoipa::PartialSchema for JobEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::extensions::Extensions;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // `contentSchema` (JSON Schema 2020-12) says what the JSON in `data`
        // is; utoipa has no field for it, so it goes in as an extra key.
        let job = format!("#/components/schemas/{}", Job::name());
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("The job, as JSON (`Job`)."))
            .content_media_type("application/json")
            .extensions(Some(Extensions::from_iter([(
                "contentSchema",
                json!({ "$ref": job }),
            )])));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "One server-sent event: `event` is `state` (the first event, and \
                 every state change) or `progress`; `data` is the whole job.",
            ))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["state", "progress"])),
            )
            .required("event")
            .property("data", data)
            .required("data")
            .into()
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
        (public("GET", "/healthz"), get(healthz)),
        (public("GET", "/readyz"), get(readyz)),
        (public("GET", "/v1/openapi.json"), get(openapi_json)),
        (keyed("POST", "/v1/jobs"), post(submit)),
        (keyed("POST", "/jobs"), post(submit_seed)),
        (keyed("GET", "/v1/jobs"), get(list)),
        (keyed("GET", "/v1/jobs/{id}"), get(get_job)),
        (keyed("POST", "/v1/jobs/{id}/cancel"), post(cancel)),
        (keyed("POST", "/v1/jobs/{id}/retry"), post(retry)),
        (keyed("GET", "/v1/jobs/{id}/logs"), get(logs)),
        (keyed("GET", "/v1/jobs/{id}/events"), get(events)),
        (keyed("GET", "/v1/nodes"), get(nodes)),
        (keyed("POST", "/v1/nodes/{id}/drain"), post(drain)),
        (keyed("GET", "/v1/reports/efficiency"), get(efficiency)),
        (keyed("POST", "/v1/experiments"), post(submit_experiment)),
        (keyed("GET", "/v1/experiments"), get(list_experiments)),
        (keyed("GET", "/v1/experiments/{id}"), get(get_experiment)),
        (
            keyed("POST", "/v1/experiments/{id}/cancel"),
            post(cancel_experiment),
        ),
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
    // The key first (401 whatever the size), then a body announced too
    // large is refused before anything waits for it.
    let protected = protected
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            refuse_announced_oversize,
        ))
        .route_layer(middleware::from_fn_with_state(api.clone(), auth));
    public
        .merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route") })
        // axum still sets `Allow`; the body is the one error shape.
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method (see the Allow header)",
            )
        })
        .with_state(api)
}

// ---------------------------------------------------------------------------
// The OpenAPI document (`GET /v1/openapi.json`), generated from the
// `#[utoipa::path]` attribute on each handler below and the types' derives.
// The tests at the end of this file fail if it and [`routes`] disagree.

/// The name of the API-key security scheme in the document.
const API_KEY_SCHEME: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ffrtmp HTTP API",
        description = "FFmpeg transcode jobs across a cluster (docs/API.md). Errors are \
            `{\"error\": {\"code\", \"message\", \"field\"}}`; `field` is the dotted path of \
            the offending field, or `null`. With an API key configured every operation but \
            `/healthz`, `/readyz` and `/v1/openapi.json` needs `Authorization: Bearer KEY`."
    ),
    paths(
        healthz,
        readyz,
        openapi_json,
        submit,
        submit_seed,
        list,
        get_job,
        cancel,
        retry,
        logs,
        events,
        nodes,
        drain,
        efficiency,
        submit_experiment,
        list_experiments,
        get_experiment,
        cancel_experiment,
        metrics_text
    ),
    modifiers(&ApiKeyScheme),
    tags(
        (name = "jobs", description = "Submit, list, watch, cancel and retry jobs, and read their FFmpeg logs."),
        (name = "nodes", description = "Worker nodes."),
        (name = "reports", description = "Reports over finished jobs."),
        (name = "experiments", description = "Matrices of jobs (a base request and lists of values), their progress and report."),
        (name = "operations", description = "Health, readiness, metrics and this document.")
    )
)]
struct ApiDoc;

#[cfg(feature = "fault-injection")]
#[derive(OpenApi)]
#[openapi(paths(inject_panic))]
struct FaultInjectionDoc;

struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The node's API key (`--api-key`, `FFRTMP_API_KEY`), \
                         sent as `Authorization: Bearer KEY`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3 document of every route [`routes`] lists.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[allow(unused_mut)]
    let mut doc = ApiDoc::openapi();
    #[cfg(feature = "fault-injection")]
    doc.merge(FaultInjectionDoc::openapi());
    doc
}

/// The document as served, built once.
fn openapi_value() -> &'static serde_json::Value {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(openapi()).unwrap_or_else(|_| json!({})))
}

/// This API's OpenAPI 3 document (no API key needed).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document.", body = serde_json::Value))
)]
async fn openapi_json() -> Json<&'static serde_json::Value> {
    Json(openapi_value())
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

/// The process answers (no API key needed).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Status))
)]
async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok",
        reason: None,
    })
}

/// The scheduler runs and the store can write (no API key needed).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = Status),
        (status = 503, description = "`{\"status\": \"not_ready\", \"reason\": \"…\"}`: the scheduler is not running, or `storage_full: …`.", body = Status)
    )
)]
async fn readyz(State(api): State<Arc<Api>>) -> Response {
    let reason = if api.scheduler.get_status() != ractor::ActorStatus::Running {
        Some("the scheduler is not running".to_string())
    } else {
        api.store
            .writable()
            .err()
            .map(|e| format!("storage_full: {e}"))
    };
    match reason {
        None => Json(Status {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "not_ready",
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

/// Submit a job. `201` means it is on disk.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body(content = JobRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored and queued: the job.", body = Job,
            headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 400, description = "Refused, naming the field: `invalid_json`, `unknown_field`, \
            `missing_field`, `invalid_field`, `path_outside_media_root`, `file_not_found`, \
            `unknown_scenario`, `output_exists`, `input_format_not_allowed`, `bad_body`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 409, description = "`output_in_use`: a queued, assigned or running job \
            already writes this `output.path`.", body = ErrorBody),
        (status = 408, description = "`body_timeout`: the body did not arrive whole within \
            `--http-body-timeout-s`; the connection is closed.", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over `--max-body-bytes` (a `Content-Length` \
            over it is refused before the body is read).", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a `Content-Type` other than JSON.", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody),
        (status = 503, description = "`storage_full`: the master's data filesystem is below its free-space reserve; nothing was stored, try again later.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn submit(State(api): State<Arc<Api>>, req: Request) -> ApiResult<Response> {
    store_submission(api, req, spec::parse_job_request).await
}

/// A job in the Go `ffmpeg-rtmp` master's shape (for clients moving over):
/// mapped onto a job spec — scenario to size, rate and codec, `parameters`
/// to a test pattern of that length and its bitrate, `queue`/`priority` to
/// our priority — then handled exactly as `POST /v1/jobs` (docs/API.md).
#[utoipa::path(
    post,
    path = "/jobs",
    tag = "jobs",
    request_body(content = SeedRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored and queued: the job, as `POST /v1/jobs` answers.",
            body = Job, headers(("Location" = String, description = "`/v1/jobs/{id}`"))),
        (status = 400, description = "Refused, naming the field in the Go shape \
            (`scenario`, `parameters.duration`, `queue`, ...).", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 408, description = "`body_timeout`: the body did not arrive whole within \
            `--http-body-timeout-s`; the connection is closed.", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over `--max-body-bytes` (a `Content-Length` \
            over it is refused before the body is read).", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a `Content-Type` other than JSON.", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody),
        (status = 503, description = "`storage_full`: the master's data filesystem is below its free-space reserve; nothing was stored, try again later.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn submit_seed(State(api): State<Arc<Api>>, req: Request) -> ApiResult<Response> {
    store_submission(api, req, ffrtmp_runtime::seed::parse_seed_request).await
}

/// Parse a submission with `parse`, store it durably, queue it: `201` with
/// the job once it is on disk.
async fn store_submission(
    api: Arc<Api>,
    req: Request,
    parse: fn(&[u8], &MediaRoots) -> Result<ffrtmp_runtime::model::JobSpec, FieldError>,
) -> ApiResult<Response> {
    let body = match read_json_body(&api, req).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    // Validation canonicalises and stats the request's paths: filesystem
    // work, kept off the async workers (as an experiment's expansion is).
    let roots = api.roots.clone();
    let spec = tokio::task::spawn_blocking(move || parse(&body, &roots))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, e))?;
    if let (Some(ffprobe), ffrtmp_runtime::model::Input::File { path }) =
        (&api.ffprobe, &spec.input)
    {
        ffrtmp_os::probe::check_input_format(ffprobe, path, &api.roots)
            .await
            .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, e))?;
    }
    let id = uuid::Uuid::now_v7().to_string();
    let seq = api.store.next_seq().map_err(ApiError::internal)?;
    let job = Job::new(id.clone(), seq, spec, crate::now_ms());
    // Two live jobs never write one output: claimed before it is stored.
    let claimed = output_path(&job);
    if let Some(path) = claimed {
        api.claims
            .claim(&api.store, path, &id)
            .map_err(|InUse { owner }| {
                ApiError::field(
                    StatusCode::CONFLICT,
                    FieldError::new(
                        "output_in_use",
                        Some("output.path"),
                        format!(
                            "job {owner} is queued or running with the same output {}; \
                             submit again when it has finished, or choose another path",
                            path.display()
                        ),
                    ),
                )
            })?;
    }
    // 201 means on disk.
    let stored = crate::scheduler::store_new_job(&api.store, &api.scheduler, &job).await;
    if let (Err(_), Some(path)) = (&stored, claimed) {
        api.claims.release(path, &id);
    }
    stored.map_err(ApiError::store)?;
    Ok(created(job, format!("/v1/jobs/{id}")))
}

/// `201 Created` with `Location` and the body.
fn created(body: impl Serialize, location: String) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// A JSON request body read whole, or the response refusing it (the wrong
/// media type, too large, too slow).
async fn read_json_body(api: &Api, req: Request) -> Result<Bytes, Response> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        if !is_json_media_type(ct.to_str().unwrap_or("")) {
            return Err(closing(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the job as application/json",
            )));
        }
    }
    // The whole body within the body timeout: a client trickling it is
    // answered 408 and, its body left unread, disconnected by hyper.
    let body = tokio::time::timeout(api.body_timeout, Bytes::from_request(req, &())).await;
    let Ok(body) = body else {
        return Err(closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                api.body_timeout.as_secs_f64()
            ),
        )));
    };
    body.map_err(|rej: BytesRejection| {
        let status = rej.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        // Cut off part way: the rest of the body is never read.
        closing(ApiError::new(status, code, rej.body_text()))
    })
}

/// `application/json`, any case, optionally with parameters
/// (`; charset=utf-8`): media types compare case-insensitively (RFC 9110
/// 8.3.1), and nothing else is JSON here (`application/jsonx`,
/// `application/json-patch+json` are not).
fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("");
    essence.trim().eq_ignore_ascii_case("application/json")
}

/// `413` before the body is read when its `Content-Length` is over the
/// limit; bodies without one are cut off at the limit as they are read.
async fn refuse_announced_oversize(
    State(api): State<Arc<Api>>,
    req: Request,
    next: Next,
) -> Response {
    let max_body_bytes = api.max_body_bytes;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(n) if n > max_body_bytes as u64 => closing(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body ({n} bytes) is over the limit of {max_body_bytes} bytes"),
        )),
        _ => next.run(req).await,
    }
}

/// An answer sent with the request's body left unread: hyper closes the
/// connection after it, and `Connection: close` tells the client so, lest it
/// send its next request on a connection that is going away.
fn closing(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// A query string as (name, value) pairs, percent-decoded.
type QueryPairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The pairs of a query string, each name at most once and one of `known`.
/// Refusals name the parameter, like a body's refusals name the field.
fn query_params(query: QueryPairs, known: &[&str]) -> ApiResult<Vec<(String, String)>> {
    query_params_repeatable(query, known, &[])
}

/// [`query_params`], where the names in `repeatable` may come more than once.
fn query_params_repeatable(
    query: QueryPairs,
    known: &[&str],
    repeatable: &[&str],
) -> ApiResult<Vec<(String, String)>> {
    let bad = |e: FieldError| ApiError::field(StatusCode::BAD_REQUEST, e);
    let Query(pairs) = query.map_err(|e| {
        bad(FieldError::new(
            "invalid_query",
            None,
            format!("the query string cannot be read: {}", e.body_text()),
        ))
    })?;
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in &pairs {
        // An empty name is named as the JSON it would be, as in bodies.
        let field = if name.is_empty() { "\"\"" } else { name };
        if !known.contains(&name.as_str()) {
            return Err(bad(FieldError::new(
                "unknown_field",
                Some(field),
                format!(
                    "unknown query parameter `{field}`; known: {}",
                    known.join(", ")
                ),
            )));
        }
        if seen.contains(&name.as_str()) && !repeatable.contains(&name.as_str()) {
            return Err(bad(FieldError::invalid(
                field,
                format!("query parameter `{field}` is given twice"),
            )));
        }
        seen.push(name);
    }
    Ok(pairs)
}

/// A whole non-negative number in a query parameter.
fn query_number<T: std::str::FromStr>(name: &str, value: &str) -> ApiResult<T> {
    value.parse().map_err(|_| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            FieldError::invalid(
                name,
                format!("`{name}` must be a whole number in range, got {value:?}"),
            ),
        )
    })
}

/// The query of `GET /v1/jobs` (the names here are the document's).
#[derive(Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>, nullable = false)]
    state: Option<String>,
    /// Only jobs of this priority.
    #[param(value_type = Option<Priority>, nullable = false)]
    priority: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[param(schema_with = cursor_schema)]
    cursor: Option<u64>,
    /// Only jobs carrying this label, as `key=value`; repeat it for several
    /// (every one must match).
    #[param(value_type = Option<Vec<String>>, nullable = false)]
    label: Vec<(String, String)>,
    /// Only jobs of this experiment.
    #[param(nullable = false)]
    experiment: Option<String>,
}

/// Any `u64`: utoipa's default (`int64`) would promise at most `i64::MAX`.
fn cursor_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0u64))
        .maximum(Some(u64::MAX))
        .build()
}

impl ListQuery {
    const NAMES: [&'static str; 6] = [
        "state",
        "priority",
        "limit",
        "cursor",
        "label",
        "experiment",
    ];

    fn parse(query: QueryPairs) -> ApiResult<ListQuery> {
        let mut q = ListQuery::default();
        for (name, value) in query_params_repeatable(query, &ListQuery::NAMES, &["label"])? {
            match name.as_str() {
                "state" => q.state = Some(value),
                "priority" => q.priority = Some(value),
                "limit" => q.limit = Some(query_number(&name, &value)?),
                "experiment" => q.experiment = Some(value),
                "label" => {
                    let pair = value
                        .split_once('=')
                        .filter(|(k, _)| spec::label_key_ok(k))
                        .ok_or_else(|| {
                            ApiError::field(
                                StatusCode::BAD_REQUEST,
                                FieldError::invalid(
                                    "label",
                                    format!("`label` must be `key=value` with a valid label key, got {value:?}"),
                                ),
                            )
                        })?;
                    q.label.push((pair.0.to_string(), pair.1.to_string()));
                }
                _ => q.cursor = Some(query_number(&name, &value)?),
            }
        }
        Ok(q)
    }
}

/// Jobs in submission order, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs.", body = JobPage),
        (status = 400, description = "`unknown_field` (an unknown parameter) or `invalid_field` \
            (a bad or repeated one), naming the parameter.", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn list(State(api): State<Arc<Api>>, query: QueryPairs) -> ApiResult<Json<JobPage>> {
    let q = ListQuery::parse(query)?;
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
    // A page of up to 1,000 jobs is milliseconds of sled reads and
    // decoding: off the async workers.
    let store = api.store.clone();
    let filter = ListFilter {
        state,
        priority,
        after_seq: q.cursor,
        limit,
        labels: q.label,
        experiment: q.experiment,
    };
    let page = tokio::task::spawn_blocking(move || store.list(&filter))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(JobPage {
        jobs: page.jobs,
        next_cursor: page.next_cursor,
    }))
}

/// One job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job.", body = Job),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn get_job(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    match api.store.get(&id).map_err(ApiError::internal)? {
        Some(job) => Ok(Json(job)),
        None => Err(ApiError::not_found(&id)),
    }
}

/// Cancel a job.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "It was queued and is now `cancelled`.", body = Job),
        (status = 202, description = "It is running: its process is being stopped; the state \
            becomes `cancelled` when the worker reports.", body = Job),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_finished`", body = ErrorBody),
        (status = 500, description = "`internal`: the scheduler did not answer.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
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

/// Re-queue a job that ended without success: the same job (same id), its
/// attempts kept, a fresh `max_retries` budget; placed like a new
/// submission. Stored before the reply.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "Queued again: the job as `GET /v1/jobs/{id}` shows it \
            (`state` `queued`, `requeue` set).", body = Job),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_retryable`: the job is not `failed`, `cancelled`, \
            `timed_out` or `lost` (the message names its state); nothing changed.", body = ErrorBody),
        (status = 500, description = "`internal`: the scheduler did not answer, or the store \
            failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn retry(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    let reply = ractor::call_t!(
        api.scheduler,
        SchedulerMsg::Retry,
        SCHEDULER_CALL_TIMEOUT.as_millis() as u64,
        id.clone()
    )
    .map_err(ApiError::internal)?;
    match reply {
        RetryReply::Requeued(job) => Ok(Json(*job)),
        RetryReply::NotRetryable(job) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "job {} is {}; only a failed, cancelled, timed_out or lost job can be retried",
                job.id,
                job.state.as_str()
            ),
        )),
        RetryReply::NotFound => Err(ApiError::not_found(&id)),
    }
}

/// FFmpeg's last stderr lines of each attempt, as the store keeps them.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/logs",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "Per attempt: how it ended and FFmpeg's last stderr lines.",
            body = JobLogs),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn logs(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult<Json<JobLogs>> {
    match api.store.get(&id).map_err(ApiError::internal)? {
        Some(job) => Ok(Json(JobLogs::of(&job))),
        None => Err(ApiError::not_found(&id)),
    }
}

/// The worker nodes the master knows.
#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "nodes",
    responses(
        (status = 200, description = "The nodes.", body = NodeList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`: the scheduler did not answer.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn nodes(State(api): State<Arc<Api>>) -> ApiResult<Json<NodeList>> {
    let nodes = ractor::call_t!(
        api.scheduler,
        SchedulerMsg::Nodes,
        SCHEDULER_CALL_TIMEOUT.as_millis() as u64
    )
    .map_err(ApiError::internal)?;
    Ok(Json(NodeList { nodes }))
}

/// The query of `GET /v1/reports/efficiency` (the names here are the
/// document's; parsed and checked by [`ReportQuery::set`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // the document's shape only
struct EfficiencyQuery {
    /// Only the jobs of this experiment.
    #[param(nullable = false, min_length = 1)]
    experiment: Option<String>,
    /// `KEY=VALUE`: only jobs carrying this label; repeatable, every one
    /// must match.
    #[param(schema_with = label_filter_schema)]
    label: Option<Vec<String>>,
    /// Answer "the cheapest configuration reaching this median VMAF"
    /// (0–100), per codec and overall.
    #[param(minimum = 0, maximum = 100, nullable = false)]
    min_vmaf: Option<f64>,
    /// The same for PSNR (dB, 0–100); with `min_vmaf` too, both must hold.
    #[param(minimum = 0, maximum = 100, nullable = false)]
    min_psnr: Option<f64>,
}

/// The report's question from its query string (`label` repeatable).
fn report_query(query: QueryPairs) -> ApiResult<ReportQuery> {
    let mut q = ReportQuery::default();
    for (name, value) in query_params_repeatable(query, &ReportQuery::PARAMS, &["label"])? {
        q.set(&name, &value)
            .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, e))?;
    }
    Ok(q)
}

/// `label`: any number of `KEY=VALUE` strings (a non-empty key).
fn label_filter_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[^=]+=")),
        )
        .build()
}

/// Configurations — every setting that changes the encode, on a node, from
/// one energy source — ranked by median joules per output minute over their
/// succeeded jobs, with spreads and quality medians; estimates are labelled
/// and ranked after measurements. Optionally filtered by experiment and
/// labels, with the cheapest configuration reaching a VMAF or PSNR and the
/// Pareto frontier of energy against quality.
#[utoipa::path(
    get,
    path = "/v1/reports/efficiency",
    tag = "reports",
    params(EfficiencyQuery),
    responses(
        (status = 200, description = "The report.", body = EfficiencyReport),
        (status = 400, description = "`invalid_field` (a `min_vmaf` or `min_psnr` outside 0–100, \
            a `label` not `KEY=VALUE`, a repeated parameter other than `label`) or \
            `unknown_field`, naming the parameter.", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn efficiency(
    State(api): State<Arc<Api>>,
    query: QueryPairs,
) -> ApiResult<Json<EfficiencyReport>> {
    let q = report_query(query)?;
    let store = api.store.clone();
    // A scan of every succeeded job, off the async workers. There is no
    // index by experiment or label: a filter reads (and decodes) every
    // succeeded job and keeps the matching ones, as the unfiltered report
    // already did.
    let jobs = tokio::task::spawn_blocking(move || store.in_states(&[JobState::Succeeded]))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(ffrtmp_runtime::report::efficiency_filtered(&jobs, &q)))
}

/// An experiment's progress (`GET /v1/experiments/{id}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentStatus {
    /// The experiment's id.
    pub name: String,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// Jobs the matrix expanded to.
    pub total: u64,
    /// Of those, jobs found in the store. Less than `total` only when the
    /// master stopped while storing them (`complete` is then false).
    pub stored: u64,
    /// Every job was stored.
    pub complete: bool,
    /// When it was cancelled, if it was.
    pub cancelled_ms: Option<u64>,
    /// Jobs per state (every state, zeros included).
    pub states: std::collections::BTreeMap<String, u64>,
    /// Every stored job is in a final state.
    pub done: bool,
    /// Progress per configuration (one combination of the matrix's
    /// values), in expansion order.
    pub configurations: Vec<ConfigurationProgress>,
    /// The efficiency report over its jobs, once `done`.
    pub report: Option<EfficiencyReport>,
    /// The request as submitted.
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
}

/// One configuration of an experiment: its matrix values and its jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigurationProgress {
    /// The matrix field of each value, and the value as its label says it.
    pub values: std::collections::BTreeMap<String, String>,
    /// Its stored jobs (`repeat` of them when all landed).
    pub total: u64,
    /// Of those, jobs in a final state.
    pub ended: u64,
    /// Of those, jobs that succeeded.
    pub succeeded: u64,
}

/// One experiment in `GET /v1/experiments`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentSummary {
    /// The experiment's id.
    pub name: String,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// Jobs the matrix expanded to.
    pub total: u64,
    /// Every job was stored.
    pub complete: bool,
    /// When it was cancelled, if it was.
    pub cancelled_ms: Option<u64>,
}

/// `GET /v1/experiments`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentList {
    /// By name.
    pub experiments: Vec<ExperimentSummary>,
}

/// The efficiency report over an experiment's jobs. One call, so that the
/// report's own rules (runtime `report`) stay in one place.
fn experiment_report(jobs: &[Job]) -> EfficiencyReport {
    ffrtmp_runtime::report::efficiency(jobs)
}

/// An experiment's record and its jobs' states, read by id.
fn experiment_status(store: &Store, record: Experiment) -> Result<ExperimentStatus, StoreError> {
    let mut states: std::collections::BTreeMap<String, u64> = JobState::ALL
        .into_iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    let mut jobs = Vec::with_capacity(record.job_ids.len());
    for id in &record.job_ids {
        if let Some(job) = store.get(id)? {
            *states.entry(job.state.as_str().to_string()).or_default() += 1;
            jobs.push(job);
        }
    }
    let done = jobs.iter().all(|j| j.state.is_terminal());
    // A configuration is the job's labels for the matrix's fields.
    let keys: Vec<&String> = record
        .request
        .get("matrix")
        .and_then(serde_json::Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let mut configurations: Vec<ConfigurationProgress> = Vec::new();
    let mut index: std::collections::HashMap<Vec<(String, String)>, usize> = Default::default();
    for job in &jobs {
        let values: Vec<(String, String)> = keys
            .iter()
            .filter_map(|k| job.spec.labels.get(*k).map(|v| ((*k).clone(), v.clone())))
            .collect();
        let i = *index.entry(values.clone()).or_insert_with(|| {
            configurations.push(ConfigurationProgress {
                values: values.into_iter().collect(),
                total: 0,
                ended: 0,
                succeeded: 0,
            });
            configurations.len() - 1
        });
        let c = &mut configurations[i];
        c.total += 1;
        c.ended += u64::from(job.state.is_terminal());
        c.succeeded += u64::from(job.state == JobState::Succeeded);
    }
    Ok(ExperimentStatus {
        configurations,
        name: record.name,
        created_ms: record.created_ms,
        total: record.job_ids.len() as u64,
        stored: jobs.len() as u64,
        complete: record.complete,
        cancelled_ms: record.cancelled_ms,
        states,
        done,
        report: done.then(|| experiment_report(&jobs)),
        request: record.request,
    })
}

fn experiment_not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no experiment {name}"),
    )
}

/// Expand a matrix into jobs and store them all: the experiment's id is its
/// `name`. Every job is validated as `POST /v1/jobs` validates one; one
/// invalid job, an empty value list, an unknown field or a matrix over
/// `--max-experiment-jobs` refuses the whole experiment and stores nothing.
#[utoipa::path(
    post,
    path = "/v1/experiments",
    tag = "experiments",
    request_body(content = ExperimentRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Every job is on disk and queued: the experiment's progress.",
            body = ExperimentStatus, headers(("Location" = String, description = "`/v1/experiments/{name}`"))),
        (status = 400, description = "Refused, naming the field (`matrix.preset[3]`, `base.width`, \
            `labels.<key>`); `too_many_jobs` on `matrix` over `--max-experiment-jobs`. Nothing stored.", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 409, description = "`experiment_exists`: the name is taken; nothing stored.", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody),
        (status = 503, description = "`storage_full`: nothing was stored.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn submit_experiment(State(api): State<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let body = match read_json_body(&api, req).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    let (roots, max) = (api.roots.clone(), api.max_experiment_jobs);
    // Up to --max-experiment-jobs validations: off the async workers.
    let expanded = tokio::task::spawn_blocking(move || {
        ffrtmp_runtime::experiment::parse_experiment(&body, &roots, max)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, e))?;
    if let Some(ffprobe) = &api.ffprobe {
        let mut probed = std::collections::BTreeSet::new();
        for job in &expanded.jobs {
            if let ffrtmp_runtime::model::Input::File { path } = &job.input {
                if probed.insert(path.clone()) {
                    ffrtmp_os::probe::check_input_format(ffprobe, path, &api.roots)
                        .await
                        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, e))?;
                }
            }
        }
    }
    if api
        .store
        .get_experiment(&expanded.name)
        .map_err(ApiError::store)?
        .is_some()
    {
        return Err(experiment_exists(&expanded.name));
    }
    let record = Experiment {
        name: expanded.name.clone(),
        created_ms: crate::now_ms(),
        request: expanded.request,
        job_ids: Vec::new(),
        complete: false,
        cancelled_ms: None,
    };
    let name = expanded.name;
    let reply = ractor::call!(
        api.scheduler,
        SchedulerMsg::SubmitExperiment,
        Box::new(record),
        expanded.jobs
    )
    .map_err(ApiError::internal)?;
    let record = match reply {
        Ok(record) => record,
        Err(ExperimentRefused::Exists) => return Err(experiment_exists(&name)),
        Err(ExperimentRefused::Store {
            message,
            full: true,
        }) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                format!("{message}; try again later"),
            ))
        }
        Err(ExperimentRefused::Store { message, .. }) => return Err(ApiError::internal(message)),
    };
    let store = api.store.clone();
    let status = tokio::task::spawn_blocking(move || experiment_status(&store, record))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::store)?;
    Ok(created(status, format!("/v1/experiments/{name}")))
}

fn experiment_exists(name: &str) -> ApiError {
    ApiError::field(
        StatusCode::CONFLICT,
        FieldError::new(
            ffrtmp_runtime::experiment::EXPERIMENT_EXISTS,
            Some("name"),
            format!("an experiment named {name:?} exists; choose another name"),
        ),
    )
}

/// Every experiment, by name (no per-job figures: see `GET /v1/experiments/{id}`).
#[utoipa::path(
    get,
    path = "/v1/experiments",
    tag = "experiments",
    responses(
        (status = 200, description = "The experiments.", body = ExperimentList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn list_experiments(State(api): State<Arc<Api>>) -> ApiResult<Json<ExperimentList>> {
    let store = api.store.clone();
    let records = tokio::task::spawn_blocking(move || store.experiments())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(ExperimentList {
        experiments: records
            .into_iter()
            .map(|e| ExperimentSummary {
                total: e.job_ids.len() as u64,
                name: e.name,
                created_ms: e.created_ms,
                complete: e.complete,
                cancelled_ms: e.cancelled_ms,
            })
            .collect(),
    }))
}

/// An experiment's progress and, once every job is final, its efficiency
/// report.
#[utoipa::path(
    get,
    path = "/v1/experiments/{id}",
    tag = "experiments",
    params(("id" = String, Path, description = "The experiment's name.")),
    responses(
        (status = 200, description = "Its progress (and report when done).", body = ExperimentStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn get_experiment(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ExperimentStatus>> {
    let store = api.store.clone();
    let name = id.clone();
    let status = tokio::task::spawn_blocking(move || {
        store
            .get_experiment(&name)?
            .map(|r| experiment_status(&store, r))
            .transpose()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    status.map(Json).ok_or_else(|| experiment_not_found(&id))
}

/// Cancel an experiment: its queued jobs are cancelled at once, its running
/// ones are stopped (each becomes `cancelled` when its worker reports);
/// finished jobs keep their results.
#[utoipa::path(
    post,
    path = "/v1/experiments/{id}/cancel",
    tag = "experiments",
    params(("id" = String, Path, description = "The experiment's name.")),
    responses(
        (status = 200, description = "Its progress after the cancellation was sent.", body = ExperimentStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the store or the scheduler failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn cancel_experiment(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ExperimentStatus>> {
    let Some(mut record) = api.store.get_experiment(&id).map_err(ApiError::internal)? else {
        return Err(experiment_not_found(&id));
    };
    if record.cancelled_ms.is_none() {
        record.cancelled_ms = Some(crate::now_ms());
        api.store.put_experiment(&record).map_err(ApiError::store)?;
        api.store.flush().await.map_err(ApiError::store)?;
    }
    // Last first: the queued jobs are cancelled before a running one's slot
    // frees, so none of them is started on the way.
    for job_id in record.job_ids.iter().rev() {
        let live = api
            .store
            .get(job_id)
            .map_err(ApiError::internal)?
            .is_some_and(|j| !j.state.is_terminal());
        if live {
            ractor::call_t!(
                api.scheduler,
                SchedulerMsg::Cancel,
                SCHEDULER_CALL_TIMEOUT.as_millis() as u64,
                job_id.clone()
            )
            .map_err(ApiError::internal)?;
        }
    }
    let store = api.store.clone();
    let status = tokio::task::spawn_blocking(move || experiment_status(&store, record))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(status))
}

/// The query of `POST /v1/nodes/{id}/drain` (the names here are the document's).
#[derive(Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct DrainQuery {
    /// Seconds the running jobs get to finish before they are stopped and
    /// requeued (default 600).
    #[param(minimum = 0, maximum = 86400, nullable = false)]
    deadline_s: Option<u64>,
}

impl DrainQuery {
    const NAMES: [&'static str; 1] = ["deadline_s"];

    fn parse(query: QueryPairs) -> ApiResult<DrainQuery> {
        let mut q = DrainQuery::default();
        for (name, value) in query_params(query, &DrainQuery::NAMES)? {
            q.deadline_s = Some(query_number(&name, &value)?);
        }
        Ok(q)
    }
}

/// Longest drain deadline accepted, and the default.
const MAX_DRAIN_DEADLINE_S: u64 = 24 * 3600;
const DEFAULT_DRAIN_DEADLINE_S: u64 = 600;

/// Drain a node: it takes no new jobs, finishes its running ones within
/// `deadline_s` seconds (then they are requeued), and leaves.
#[utoipa::path(
    post,
    path = "/v1/nodes/{id}/drain",
    tag = "nodes",
    params(("id" = String, Path, description = "The node's id."), DrainQuery),
    responses(
        (status = 202, description = "Draining: the node.", body = NodeInfo),
        (status = 400, description = "`unknown_field` (an unknown parameter) or `invalid_field` \
            (a bad or repeated `deadline_s`), naming the parameter.", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such node is connected.", body = ErrorBody),
        (status = 409, description = "`only_worker`: the node is a standalone node's own \
            worker, its only one; drained, the node would take jobs it can never run.", body = ErrorBody),
        (status = 500, description = "`internal`: the scheduler did not answer.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
async fn drain(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> ApiResult<Response> {
    let q = DrainQuery::parse(query)?;
    if api.standalone_worker.as_deref() == Some(id.as_str()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "only_worker",
            format!(
                "{id} is this standalone node's own worker, its only one: drained, the node \
                 would accept jobs it can never run (to stop the node, send it SIGTERM)"
            ),
        ));
    }
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

/// Prometheus metrics (`ffrtmp_*`, docs/ARCHITECTURE.md).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String,
            content_type = "text/plain"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`metrics_disabled`: this process exports none.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
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

/// Live job updates as server-sent events: the job now (`event: state`),
/// then `progress` and `state` events as it changes; the stream ends after
/// the terminal state. Each event's `data` is the whole job (`Job`).
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "An event stream; each event's `data` is a `Job` as JSON.",
            body = JobEvent, content_type = "text/event-stream"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the store failed.", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
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
        if !send_event(&tx, json_event("state", &first)).await || done {
            return;
        }
        loop {
            let job = match rx.recv().await {
                Ok(u) if u.job.id == id => {
                    let kind = match u.kind {
                        crate::events::UpdateKind::State => "state",
                        crate::events::UpdateKind::Progress => "progress",
                    };
                    if !send_event(&tx, json_event(kind, &*u.job)).await {
                        return;
                    }
                    u.job.state.is_terminal().then_some(())
                }
                Ok(_) => None,
                // Too slow a reader: re-read the truth and carry on.
                Err(broadcast::error::RecvError::Lagged(_)) => match store.get(&id) {
                    Ok(Some(job)) => {
                        if !send_event(&tx, json_event("state", &job)).await {
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

/// The server-sent event `kind` whose data is `value` as JSON. A value that
/// does not serialise is logged and becomes an `error` event
/// (`{"error":{"code":"internal",...}}`, the `Err`), after which the stream
/// ends: never an empty object passed off as the data.
fn json_event<T: Serialize>(kind: &str, value: &T) -> Result<Event, Event> {
    match serde_json::to_string(value) {
        Ok(data) => Ok(Event::default().event(kind).data(data)),
        Err(e) => {
            tracing::error!(error = %e, kind, "an event could not be serialised; ending the stream");
            let body = serde_json::json!({"error": {
                "code": "internal",
                "message": format!("a `{kind}` event could not be serialised: {e}"),
                "field": null,
            }});
            Err(Event::default().event("error").data(body.to_string()))
        }
    }
}

/// Send an event from [`json_event`]; `false` when the stream must end:
/// the client is gone, or the event was an error event.
async fn send_event(
    tx: &tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
    event: Result<Event, Event>,
) -> bool {
    let (event, go_on) = match event {
        Ok(e) => (e, true),
        Err(e) => (e, false),
    };
    tx.send(Ok(event)).await.is_ok() && go_on
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

/// Test builds only: make the job's JobActor panic.
#[cfg(feature = "fault-injection")]
#[utoipa::path(
    post,
    path = "/v1/debug/jobs/{id}/panic",
    tag = "operations",
    params(("id" = String, Path, description = "The job's id.")),
    responses(
        (status = 202, description = "Injected."),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`fault_injection_disabled`", body = ErrorBody),
        (status = 404, description = "`no_local_node`", body = ErrorBody),
        (status = 500, description = "`internal`", body = ErrorBody)
    ),
    security(("api_key" = []))
)]
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

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

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn doc() -> Value {
        serde_json::to_value(openapi()).expect("the document serialises")
    }

    /// Every operation in `doc`: (method, path, needs the API key, operation).
    fn operations(doc: &Value) -> Vec<(String, String, bool, Value)> {
        let mut out = Vec::new();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let keyed = op["security"]
                    .as_array()
                    .is_some_and(|reqs| reqs.iter().any(|r| r.get(API_KEY_SCHEME).is_some()));
                out.push((method.to_uppercase(), path.clone(), keyed, op.clone()));
            }
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_routes_served_with_their_authentication() {
        let served: BTreeSet<(String, String, bool)> = routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string(), r.needs_key))
            .collect();
        let doc = doc();
        let documented: BTreeSet<(String, String, bool)> = operations(&doc)
            .into_iter()
            .map(|(m, p, k, _)| (m, p, k))
            .collect();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "(method, path, needs key) served but not documented: {undocumented:?}; \
             documented but not served: {unserved:?}"
        );
        // The openapi.json route itself is public, like health.
        assert!(served.contains(&("GET".into(), "/v1/openapi.json".into(), false)));
    }

    #[test]
    fn every_operation_documents_its_parameters_and_errors() {
        let doc = doc();
        let scheme = &doc["components"]["securitySchemes"][API_KEY_SCHEME];
        assert_eq!(scheme["type"], "http", "{scheme}");
        assert_eq!(scheme["scheme"], "bearer", "{scheme}");
        for (method, path, keyed, op) in operations(&doc) {
            let what = format!("{method} {path}");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what}: no success response"
            );
            if keyed {
                assert!(responses.contains_key("401"), "{what}: no 401");
            }
            // Every error is the one error shape.
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    if path == "/readyz" {
                        continue;
                    }
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{what} {status}"
                    );
                }
            }
            // Each `{name}` in the path is a documented path parameter.
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            {
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{what}: path parameter {name} is not documented"
                );
                assert!(responses.contains_key("404"), "{what}: no 404");
            }
        }
    }

    /// The query parameters are the ones the handlers read, with their bounds.
    #[test]
    fn query_parameters_match_the_handlers() {
        let doc = doc();
        let names = |path: &str, method: &str| -> BTreeSet<String> {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query")
                        .filter_map(|p| p["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let set = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(names("/v1/jobs", "get"), set(&ListQuery::NAMES));
        assert_eq!(
            names("/v1/nodes/{id}/drain", "post"),
            set(&DrainQuery::NAMES)
        );
        let param = |path: &str, method: &str, name: &str| -> Value {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name && p["in"] == "query"))
                .cloned()
                .unwrap_or_else(|| panic!("{method} {path}: no query parameter {name}"))
        };
        assert_eq!(
            names("/v1/reports/efficiency", "get"),
            set(&ReportQuery::PARAMS)
        );
        let label = param("/v1/reports/efficiency", "get", "label");
        assert_eq!(label["schema"]["type"], "array", "{label}");
        assert_eq!(label["schema"]["items"]["pattern"], "^[^=]+=", "{label}");
        for name in ["min_vmaf", "min_psnr"] {
            let p = param("/v1/reports/efficiency", "get", name);
            assert_eq!(p["schema"]["minimum"], 0, "{p}");
            assert_eq!(p["schema"]["maximum"], 100, "{p}");
        }
        let limit = param("/v1/jobs", "get", "limit");
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], MAX_PAGE);
        let deadline = param("/v1/nodes/{id}/drain", "post", "deadline_s");
        assert_eq!(deadline["schema"]["maximum"], MAX_DRAIN_DEADLINE_S);
        let cursor = param("/v1/jobs", "get", "cursor");
        assert_eq!(cursor["schema"]["maximum"], u64::MAX, "{cursor}");
        for name in ["state", "priority", "cursor"] {
            assert_eq!(param("/v1/jobs", "get", name)["required"], false);
        }
    }

    fn pairs(p: &[(&str, &str)]) -> QueryPairs {
        Ok(Query(
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[track_caller]
    fn refused(r: ApiResult<impl Sized>, code: &str, field: &str) {
        match r {
            Ok(_) => panic!("accepted; expected {code} naming {field}"),
            Err(e) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                assert_eq!(e.error.code, code, "{e:?}");
                assert_eq!(e.error.field.as_deref(), Some(field), "{e:?}");
            }
        }
    }

    #[test]
    fn query_refusals_name_the_parameter() {
        let q = ListQuery::parse(pairs(&[
            ("state", "queued"),
            ("limit", "5"),
            ("cursor", "7"),
        ]))
        .expect("valid");
        assert_eq!(
            (q.state.as_deref(), q.limit, q.cursor),
            (Some("queued"), Some(5), Some(7))
        );
        refused(
            ListQuery::parse(pairs(&[("nope", "1")])),
            "unknown_field",
            "nope",
        );
        refused(
            ListQuery::parse(pairs(&[("", "1")])),
            "unknown_field",
            "\"\"",
        );
        refused(
            ListQuery::parse(pairs(&[("limit", "x")])),
            "invalid_field",
            "limit",
        );
        refused(
            ListQuery::parse(pairs(&[("cursor", "-1")])),
            "invalid_field",
            "cursor",
        );
        refused(
            ListQuery::parse(pairs(&[("limit", "1"), ("limit", "2")])),
            "invalid_field",
            "limit",
        );
        let q = DrainQuery::parse(pairs(&[("deadline_s", "0")])).expect("valid");
        assert_eq!(q.deadline_s, Some(0));
        refused(
            DrainQuery::parse(pairs(&[("deadline_s", "99999999999999999999999")])),
            "invalid_field",
            "deadline_s",
        );
        refused(
            DrainQuery::parse(pairs(&[("limit", "1")])),
            "unknown_field",
            "limit",
        );
        // The report: `label` repeats, nothing else does.
        let q = report_query(pairs(&[
            ("experiment", "sweep"),
            ("label", "clip=park"),
            ("label", "run=2"),
            ("min_vmaf", "93"),
        ]))
        .expect("valid");
        assert_eq!(q.labels.len(), 2);
        assert_eq!(q.min_vmaf, Some(93.0));
        for (p, code, field) in [
            (&[("min_vmaf", "101")][..], "invalid_field", "min_vmaf"),
            (&[("min_psnr", "-3")][..], "invalid_field", "min_psnr"),
            (&[("label", "nokey")][..], "invalid_field", "label"),
            (
                &[("min_vmaf", "90"), ("min_vmaf", "91")][..],
                "invalid_field",
                "min_vmaf",
            ),
            (&[("vmaf", "90")][..], "unknown_field", "vmaf"),
        ] {
            refused(report_query(pairs(p)), code, field);
        }
    }

    /// Every `$ref` in the document names a schema it has.
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &Value, refs: &mut BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        refs.insert(r.clone());
                    }
                    m.values().for_each(|x| walk(x, refs));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, refs)),
                _ => {}
            }
        }
        let doc = doc();
        let mut refs = BTreeSet::new();
        walk(&doc, &mut refs);
        assert!(refs.len() > 10, "{refs:?}");
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} does not resolve"
            );
        }
    }

    /// The API's settings for a test: no media roots, the default limits.
    fn test_admin(store: &Store, events: &JobEvents, api_key: Option<&str>) -> AdminArgs {
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
    async fn start_api(
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
        args.admin = Some(admin);
        args.lease = Duration::from_secs(5);
        let (scheduler, done) = crate::embed::spawn_scheduler(args, None)
            .await
            .expect("master");
        let addr = ractor::call_t!(scheduler, SchedulerMsg::HttpAddr, 10_000)
            .expect("scheduler answers")
            .expect("the API listens");
        (scheduler, done, addr)
    }

    #[test]
    fn json_media_types_match_exactly_and_in_any_case() {
        for ok in [
            "application/json",
            "Application/JSON",
            "APPLICATION/JSON; charset=utf-8",
            "application/json ;charset=UTF-8",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for refused in [
            "application/jsonx",
            "application/json-patch+json",
            "application/merge-patch+json",
            "text/json",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json_media_type(refused), "{refused}");
        }
    }

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

    /// A bare HTTP/1.1 GET: (status, content type, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let (status, head, body) = request(addr, "GET", path).await;
        let ct = header_value(&head, "content-type").unwrap_or_default();
        (status, ct, body)
    }

    fn header_value(head: &str, name: &str) -> Option<String> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// A bare HTTP/1.1 request without a body: (status, header block, body).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
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

    /// A job as a run that failed on its own leaves it: attempt 1 on `n1`,
    /// FFmpeg's stderr lines kept.
    fn failed_job(store: &Store) -> Job {
        use ffrtmp_runtime::model::{Failure, Isolation};
        use ffrtmp_runtime::state;
        let roots = MediaRoots::new(&[]).expect("no roots");
        let body = json!({"scenario": "480p30-h264", "output": {"type": "null"},
                          "input": {"type": "testsrc", "duration_s": 1}});
        let spec = spec::parse_job_request(body.to_string().as_bytes(), &roots).expect("spec");
        let seq = store.next_seq().expect("seq");
        let mut job = Job::new("job-failed".into(), seq, spec, 1_000);
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
}
