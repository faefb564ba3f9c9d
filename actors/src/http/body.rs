//! Request bodies: JSON only, within the size limit and the body timeout;
//! a refused body closes the connection.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::{Api, ApiError};

/// `201 Created` with `Location` and the body.
pub(super) fn created(body: impl Serialize, location: String) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// A JSON request body read whole, or the response refusing it (the wrong
/// media type, too large, too slow).
pub(super) async fn read_json_body(api: &Api, req: Request) -> Result<Bytes, Response> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        if !is_json_media_type(ct.to_str().unwrap_or("")) {
            return Err(closing(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the job as application/json",
            )));
        }
    }
    // The whole body within the body timeout: a client trickling it is
    // answered 408 and, its body left unread, disconnected by hyper.
    let body = tokio::time::timeout(api.body_timeout, Bytes::from_request(req, &())).await;
    let Ok(body) = body else {
        return Err(closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                api.body_timeout.as_secs_f64()
            ),
        )));
    };
    body.map_err(|rej: BytesRejection| {
        let status = rej.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        // Cut off part way: the rest of the body is never read.
        closing(ApiError::new(status, code, rej.body_text()))
    })
}

/// `application/json`, any case, optionally with parameters
/// (`; charset=utf-8`): media types compare case-insensitively (RFC 9110
/// 8.3.1), and nothing else is JSON here (`application/jsonx`,
/// `application/json-patch+json` are not).
pub(super) fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("");
    essence.trim().eq_ignore_ascii_case("application/json")
}

/// `413` before the body is read when its `Content-Length` is over the
/// limit; bodies without one are cut off at the limit as they are read.
pub(super) async fn refuse_announced_oversize(
    State(api): State<Arc<Api>>,
    req: Request,
    next: Next,
) -> Response {
    let max_body_bytes = api.max_body_bytes;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(n) if n > max_body_bytes as u64 => closing(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body ({n} bytes) is over the limit of {max_body_bytes} bytes"),
        )),
        _ => next.run(req).await,
    }
}

/// An answer sent with the request's body left unread: hyper closes the
/// connection after it, and `Connection: close` tells the client so, lest it
/// send its next request on a connection that is going away.
pub(super) fn closing(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}
