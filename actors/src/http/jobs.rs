//! Jobs: submit (ours and the Go master's shape), list, get, cancel, retry,
//! logs. (A job's live updates are [`super::sse`].)

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ffrtmp_api::{ErrorBody, JobLogs, JobPage};
use ffrtmp_os::store::ListFilter;
use ffrtmp_runtime::error::FieldError;
use ffrtmp_runtime::go_compat::SeedRequest;
use ffrtmp_runtime::model::{Job, JobState, Priority};
use ffrtmp_runtime::spec::{self, JobRequest, MediaRoots};
use utoipa::IntoParams;

use super::body::{created, read_json_body};
use super::error::ApiResult;
use super::query::{query_number, query_params_repeatable, QueryPairs};
use super::{Api, ApiError, SCHEDULER_CALL_TIMEOUT};
use crate::output_claims::{output_path, InUse};
use crate::scheduler::{CancelReply, RetryReply, SchedulerMsg};

/// Page size of `GET /v1/jobs` when none is asked for, and the most it returns.
pub(super) const DEFAULT_PAGE: usize = 100;
pub(super) const MAX_PAGE: usize = 1000;

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
pub(super) async fn submit(State(api): State<Arc<Api>>, req: Request) -> ApiResult<Response> {
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
pub(super) async fn submit_seed(State(api): State<Arc<Api>>, req: Request) -> ApiResult<Response> {
    store_submission(api, req, ffrtmp_runtime::go_compat::parse_go_job).await
}

/// Parse a submission with `parse`, store it durably, queue it: `201` with
/// the job once it is on disk.
pub(super) async fn store_submission(
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

/// The query of `GET /v1/jobs` (the names here are the document's).
#[derive(Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>, nullable = false)]
    pub(super) state: Option<String>,
    /// Only jobs of this priority.
    #[param(value_type = Option<Priority>, nullable = false)]
    pub(super) priority: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    pub(super) limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[param(schema_with = cursor_schema)]
    pub(super) cursor: Option<u64>,
    /// Only jobs carrying this label, as `key=value`; repeat it for several
    /// (every one must match).
    #[param(value_type = Option<Vec<String>>, nullable = false)]
    pub(super) label: Vec<(String, String)>,
    /// Only jobs of this experiment.
    #[param(nullable = false)]
    pub(super) experiment: Option<String>,
}

/// Any `u64`: utoipa's default (`int64`) would promise at most `i64::MAX`.
pub(super) fn cursor_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0u64))
        .maximum(Some(u64::MAX))
        .build()
}

impl ListQuery {
    pub(super) const NAMES: [&'static str; 6] = [
        "state",
        "priority",
        "limit",
        "cursor",
        "label",
        "experiment",
    ];

    pub(super) fn parse(query: QueryPairs) -> ApiResult<ListQuery> {
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
pub(super) async fn list(
    State(api): State<Arc<Api>>,
    query: QueryPairs,
) -> ApiResult<Json<JobPage>> {
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
pub(super) async fn get_job(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
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
pub(super) async fn cancel(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
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
pub(super) async fn retry(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
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
pub(super) async fn logs(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobLogs>> {
    match api.store.get(&id).map_err(ApiError::internal)? {
        Some(job) => Ok(Json(JobLogs::of(&job))),
        None => Err(ApiError::not_found(&id)),
    }
}
