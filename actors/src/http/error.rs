//! The one error shape of every refusal: a status and
//! `{"error": {"code", "message", "field"}}` ([`ffrtmp_api::ErrorBody`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ffrtmp_api::ErrorBody;
use ffrtmp_os::store::StoreError;
use ffrtmp_runtime::error::FieldError;

use crate::metrics as m;

/// An API error: a status and `{"error": {"code", "message", "field"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) error: FieldError,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: FieldError::new(code, None, message),
        }
    }

    pub(super) fn field(status: StatusCode, error: FieldError) -> ApiError {
        ApiError { status, error }
    }

    /// A store error: `503 storage_full` when the store refused the write
    /// for want of space or while it reopens after a failed log write
    /// (nothing was stored), else `500 internal`.
    pub(super) fn store(e: StoreError) -> ApiError {
        match e {
            e if e.is_storage_full() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                format!("{e}; nothing was stored, try again later"),
            ),
            e => ApiError::internal(e),
        }
    }

    pub(super) fn not_found(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no job {id}"))
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
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

pub(super) type ApiResult<T> = Result<T, ApiError>;
