//! The API key: `Authorization: Bearer KEY` on every keyed route, compared
//! in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{Api, ApiError};

pub(super) async fn auth(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    if let Some(key) = &api.api_key {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = presented.as_bytes().ct_eq(key.as_bytes()).into();
        if !ok {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong API key (Authorization: Bearer KEY)",
            )
            .into_response();
        }
    }
    next.run(req).await
}
