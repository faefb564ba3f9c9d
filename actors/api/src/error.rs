//! The error body every refusal carries, and the health answers.

use ffrtmp_runtime::error::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error response: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was refused and, where one field is to blame, which.
    pub error: FieldError,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// `ok` (`/healthz`), `ready` or `not_ready` (`/readyz`).
    pub status: String,
    /// Why it is `not_ready` (e.g. `storage_full: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
