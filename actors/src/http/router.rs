//! The route table: every route with its handler and whether it needs the
//! API key. The router is built from it and [`routes`] lists it, so a route
//! cannot be served without being listed (tests/security.rs checks each
//! listed route's authentication; the OpenAPI tests check the document
//! against it).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, MethodRouter};
use axum::Router;

use super::auth::auth;
use super::body::refuse_announced_oversize;
#[cfg(feature = "fault-injection")]
use super::debug::inject_panic;
use super::experiments::{cancel_experiment, get_experiment, list_experiments, submit_experiment};
use super::health::{healthz, metrics_text, readyz};
use super::jobs::{cancel, get_job, list, logs, retry, submit, submit_seed};
use super::nodes::{drain, nodes};
use super::openapi::openapi_json;
use super::report::efficiency;
use super::sse::events;
use super::{Api, ApiError};

/// One route of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// As axum writes it: `{id}` is a path parameter.
    pub path: &'static str,
    /// Behind the API key (when one is set).
    pub needs_key: bool,
}

/// Every route with its handler. The router is built from this table and
/// [`routes`] lists it, so a route cannot be served without being listed
/// (tests/security.rs checks each listed route's authentication).
fn table() -> Vec<(Route, MethodRouter<Arc<Api>>)> {
    let public = |method, path| Route {
        method,
        path,
        needs_key: false,
    };
    let keyed = |method, path| Route {
        method,
        path,
        needs_key: true,
    };
    #[cfg(feature = "fault-injection")]
    let debug = [(
        keyed("POST", "/v1/debug/jobs/{id}/panic"),
        post(inject_panic),
    )];
    #[cfg(not(feature = "fault-injection"))]
    let debug: [(Route, MethodRouter<Arc<Api>>); 0] = [];
    let t: Vec<(Route, MethodRouter<Arc<Api>>)> = vec![
        (public("GET", "/healthz"), get(healthz)),
        (public("GET", "/readyz"), get(readyz)),
        (public("GET", "/v1/openapi.json"), get(openapi_json)),
        (keyed("POST", "/v1/jobs"), post(submit)),
        (keyed("POST", "/jobs"), post(submit_seed)),
        (keyed("GET", "/v1/jobs"), get(list)),
        (keyed("GET", "/v1/jobs/{id}"), get(get_job)),
        (keyed("POST", "/v1/jobs/{id}/cancel"), post(cancel)),
        (keyed("POST", "/v1/jobs/{id}/retry"), post(retry)),
        (keyed("GET", "/v1/jobs/{id}/logs"), get(logs)),
        (keyed("GET", "/v1/jobs/{id}/events"), get(events)),
        (keyed("GET", "/v1/nodes"), get(nodes)),
        (keyed("POST", "/v1/nodes/{id}/drain"), post(drain)),
        (keyed("GET", "/v1/reports/efficiency"), get(efficiency)),
        (keyed("POST", "/v1/experiments"), post(submit_experiment)),
        (keyed("GET", "/v1/experiments"), get(list_experiments)),
        (keyed("GET", "/v1/experiments/{id}"), get(get_experiment)),
        (
            keyed("POST", "/v1/experiments/{id}/cancel"),
            post(cancel_experiment),
        ),
        (keyed("GET", "/metrics"), get(metrics_text)),
    ];
    t.into_iter().chain(debug).collect()
}

/// Every route the HTTP API serves, and whether it needs the API key.
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(r, _)| r).collect()
}

pub(crate) fn router(api: Arc<Api>) -> Router {
    let mut public = Router::new();
    let mut protected = Router::new();
    for (r, handler) in table() {
        if r.needs_key {
            protected = protected.route(r.path, handler);
        } else {
            public = public.route(r.path, handler);
        }
    }
    // The key first (401 whatever the size), then a body announced too
    // large is refused before anything waits for it.
    let protected = protected
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            refuse_announced_oversize,
        ))
        .route_layer(middleware::from_fn_with_state(api.clone(), auth));
    public
        .merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route") })
        // axum still sets `Allow`; the body is the one error shape.
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method (see the Allow header)",
            )
        })
        .with_state(api)
}
