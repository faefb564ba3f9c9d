//! `GET /v1/reports/efficiency`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ffrtmp_api::ErrorBody;
use ffrtmp_runtime::model::JobState;
use ffrtmp_runtime::report::{EfficiencyReport, ReportQuery};
use utoipa::IntoParams;

use super::error::ApiResult;
use super::query::{query_params_repeatable, QueryPairs};
use super::{Api, ApiError};

/// The query of `GET /v1/reports/efficiency` (the names here are the
/// document's; parsed and checked by [`ReportQuery::set`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // the document's shape only
pub(super) struct EfficiencyQuery {
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
pub(super) fn report_query(query: QueryPairs) -> ApiResult<ReportQuery> {
    let mut q = ReportQuery::default();
    for (name, value) in query_params_repeatable(query, &ReportQuery::PARAMS, &["label"])? {
        q.set(&name, &value)
            .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, e))?;
    }
    Ok(q)
}

/// `label`: any number of `KEY=VALUE` strings (a non-empty key).
pub(super) fn label_filter_schema() -> utoipa::openapi::schema::Array {
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
pub(super) async fn efficiency(
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
