//! The HTTP API: routes, handlers, auth, server-sent events and the OpenAPI
//! document, one file per resource (docs/API.md). The request and response
//! types are the `ffrtmp-api` crate's, shared with the CLI.
//!
//! Handlers read jobs straight from the store (sled is safe for concurrent
//! readers) and send every change to the `SchedulerActor`, the single writer
//! of job transitions. Submissions are stored by the handler itself so
//! concurrent requests share one disk flush (group commit).
//!
//! - [`router`]: the route table (and [`routes`]), the fallbacks;
//! - [`auth`]: the API key; [`body`]: JSON bodies, their size and time
//!   limits; [`query`]: query strings; [`error`]: the error shape;
//! - [`jobs`], [`sse`] (a job's live updates), [`nodes`], [`report`],
//!   [`experiments`], [`health`] (`/healthz`, `/readyz`, `/metrics`), and
//!   `debug` (the fault-injection hook, test builds only): the handlers;
//! - [`openapi`]: the document, generated from the handlers' attributes;
//! - [`server`]: the connection loop (connection cap, read timeouts).
//!
//! The actor that runs all this is [`crate::admin::AdminActor`]. This layer
//! depends on the scheduler's messages; the scheduler knows it only as a
//! [`crate::supervised::ServingChild`], so there is no import cycle.

use std::sync::Arc;
use std::time::Duration;

use ffrtmp_os::store::Store;
use ffrtmp_runtime::spec::MediaRoots;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;

use crate::events::JobEvents;
use crate::output_claims::OutputClaims;
use crate::scheduler::SchedulerMsg;

mod auth;
mod body;
#[cfg(feature = "fault-injection")]
mod debug;
mod error;
mod experiments;
mod health;
mod jobs;
mod nodes;
mod openapi;
mod query;
mod report;
mod router;
pub(crate) mod server;
mod sse;
#[cfg(test)]
mod tests;

/// How long an API call waits for the scheduler.
const SCHEDULER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) use error::ApiError;
pub use ffrtmp_api::{
    AttemptLog, ConfigurationProgress, ErrorBody, ExperimentList, ExperimentStatus,
    ExperimentSummary, JobLogs, JobPage, NodeList, Status,
};
pub use openapi::openapi;
pub(crate) use router::router;
pub use router::{routes, Route};
pub use sse::JobEventSchema;
/// Default request body limit (a job request is well under 4 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default cap on open HTTP connections ([`HttpLimits::max_connections`]).
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 512;
/// Default time a client has to send a request's head, and its body.
pub const DEFAULT_HTTP_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of the process the HTTP API's clients may hold, and for how long
/// (docs/API.md, "Connections").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections at most; at the cap the oldest connection that has
    /// sent nothing is closed to make room, or the new one is refused.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this long after
    /// hyper started waiting for one (idle keep-alive included) is closed.
    pub header_timeout: Duration,
    /// A request whose body has not arrived whole this long after its head
    /// gets `408` and the connection is closed.
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
            header_timeout: DEFAULT_HTTP_READ_TIMEOUT,
            body_timeout: DEFAULT_HTTP_READ_TIMEOUT,
        }
    }
}

/// What every handler shares: the store, the scheduler, the settings.
/// Built by [`crate::admin::AdminActor`] from its arguments.
pub(crate) struct Api {
    pub(crate) store: Store,
    pub(crate) events: JobEvents,
    pub(crate) roots: Arc<MediaRoots>,
    pub(crate) ffprobe: Option<std::path::PathBuf>,
    pub(crate) api_key: Option<String>,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) scheduler: ActorRef<SchedulerMsg>,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_experiment_jobs: u64,
    pub(crate) body_timeout: Duration,
    pub(crate) standalone_worker: Option<String>,
    /// Which live job writes each file output (`409 output_in_use`).
    pub(crate) claims: OutputClaims,
    #[cfg(feature = "fault-injection")]
    pub(crate) fault_node: Option<ActorRef<crate::node::NodeMsg>>,
}
