//! The fault-injection hook (`fault-injection` builds only): make a job's
//! `JobActor` panic.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use ffrtmp_api::ErrorBody;

use super::error::ApiResult;
use super::{Api, ApiError};

/// Test builds only: make the job's JobActor panic.
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
pub(super) async fn inject_panic(
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
