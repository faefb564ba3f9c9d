//! The OpenAPI document (`GET /v1/openapi.json`), generated from the
//! `#[utoipa::path]` attribute on each handler and the types' derives. The
//! tests (`http/tests/openapi.rs`) fail if it and [`super::routes`] disagree.

use axum::Json;
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

/// The name of the API-key security scheme in the document.
pub(super) const API_KEY_SCHEME: &str = "api_key";

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
        super::health::healthz,
        super::health::readyz,
        openapi_json,
        super::jobs::submit,
        super::jobs::submit_seed,
        super::jobs::list,
        super::jobs::get_job,
        super::jobs::cancel,
        super::jobs::retry,
        super::jobs::logs,
        super::sse::events,
        super::nodes::nodes,
        super::nodes::drain,
        super::report::efficiency,
        super::experiments::submit_experiment,
        super::experiments::list_experiments,
        super::experiments::get_experiment,
        super::experiments::cancel_experiment,
        super::health::metrics_text
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
#[openapi(paths(super::debug::inject_panic))]
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
pub(super) async fn openapi_json() -> Json<&'static serde_json::Value> {
    Json(openapi_value())
}
