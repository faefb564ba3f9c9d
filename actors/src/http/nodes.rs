//! Worker nodes: the list, and draining one.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ffrtmp_api::{ErrorBody, NodeInfo, NodeList};
use ffrtmp_runtime::error::FieldError;
use utoipa::IntoParams;

use super::error::ApiResult;
use super::query::{query_number, query_params, QueryPairs};
use super::{Api, ApiError, SCHEDULER_CALL_TIMEOUT};
use crate::scheduler::SchedulerMsg;

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
pub(super) async fn nodes(State(api): State<Arc<Api>>) -> ApiResult<Json<NodeList>> {
    let nodes = ractor::call_t!(
        api.scheduler,
        SchedulerMsg::Nodes,
        SCHEDULER_CALL_TIMEOUT.as_millis() as u64
    )
    .map_err(ApiError::internal)?;
    Ok(Json(NodeList { nodes }))
}

/// The query of `POST /v1/nodes/{id}/drain` (the names here are the document's).
#[derive(Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DrainQuery {
    /// Seconds the running jobs get to finish before they are stopped and
    /// requeued (default 600).
    #[param(minimum = 0, maximum = 86400, nullable = false)]
    pub(super) deadline_s: Option<u64>,
}

impl DrainQuery {
    pub(super) const NAMES: [&'static str; 1] = ["deadline_s"];

    pub(super) fn parse(query: QueryPairs) -> ApiResult<DrainQuery> {
        let mut q = DrainQuery::default();
        for (name, value) in query_params(query, &DrainQuery::NAMES)? {
            q.deadline_s = Some(query_number(&name, &value)?);
        }
        Ok(q)
    }
}

/// Longest drain deadline accepted, and the default.
pub(super) const MAX_DRAIN_DEADLINE_S: u64 = 24 * 3600;
pub(super) const DEFAULT_DRAIN_DEADLINE_S: u64 = 600;

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
pub(super) async fn drain(
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
