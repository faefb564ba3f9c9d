//! Experiments: submit a matrix, list, progress (with the report once
//! done), cancel.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use ffrtmp_api::{
    ConfigurationProgress, ErrorBody, ExperimentList, ExperimentStatus, ExperimentSummary,
};
use ffrtmp_os::store::{Store, StoreError};
use ffrtmp_runtime::error::FieldError;
use ffrtmp_runtime::experiment::{Experiment, ExperimentRequest};
use ffrtmp_runtime::model::{Job, JobState};
use ffrtmp_runtime::report::EfficiencyReport;

use super::body::{created, read_json_body};
use super::error::ApiResult;
use super::{Api, ApiError, SCHEDULER_CALL_TIMEOUT};
use crate::scheduler::{ExperimentRefused, SchedulerMsg};

/// The efficiency report over an experiment's jobs. One call, so that the
/// report's own rules (runtime `report`) stay in one place.
pub(super) fn experiment_report(jobs: &[Job]) -> EfficiencyReport {
    ffrtmp_runtime::report::efficiency(jobs)
}

/// An experiment's record and its jobs' states, read by id.
pub(super) fn experiment_status(
    store: &Store,
    record: Experiment,
) -> Result<ExperimentStatus, StoreError> {
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

pub(super) fn experiment_not_found(name: &str) -> ApiError {
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
pub(super) async fn submit_experiment(
    State(api): State<Arc<Api>>,
    req: Request,
) -> ApiResult<Response> {
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

pub(super) fn experiment_exists(name: &str) -> ApiError {
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
pub(super) async fn list_experiments(
    State(api): State<Arc<Api>>,
) -> ApiResult<Json<ExperimentList>> {
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
pub(super) async fn get_experiment(
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
pub(super) async fn cancel_experiment(
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
