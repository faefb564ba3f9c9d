//! The client-facing error shape: `{"error": {"code", "message", "field"}}`.

use serde::Serialize;

/// A rejected request, naming the offending field where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[error("{code}: {message}")]
pub struct FieldError {
    /// Stable machine-readable code, e.g. `invalid_field`, `unknown_field`.
    pub code: String,
    /// A human-readable explanation, naming the field and the rule broken.
    pub message: String,
    /// Dotted path of the offending field (`resource_limits.timeout_s`), if any.
    pub field: Option<String>,
}

impl FieldError {
    /// An error with code `code` on `field` (`None`: the request as a whole).
    pub fn new(code: &str, field: Option<&str>, message: impl Into<String>) -> FieldError {
        FieldError {
            code: code.to_string(),
            message: message.into(),
            field: field.map(str::to_string),
        }
    }

    /// An invalid value in a named field.
    pub fn invalid(field: &str, message: impl Into<String>) -> FieldError {
        FieldError::new("invalid_field", Some(field), message)
    }
}
