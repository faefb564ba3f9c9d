//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ffrtmp_api::{ErrorBody, Status};

use super::{Api, ApiError};

/// The process answers (no API key needed).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Status))
)]
pub(super) async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
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
pub(super) async fn readyz(State(api): State<Arc<Api>>) -> Response {
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
            status: "ready".into(),
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "not_ready".into(),
                reason: Some(reason),
            }),
        )
            .into_response(),
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
pub(super) async fn metrics_text(State(api): State<Arc<Api>>) -> Response {
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
