//! The request and response types of ffrtmp's HTTP API (docs/API.md).
//!
//! The server (`ffrtmp_actors::http`) answers with these types and the
//! `ffrtmp` CLI reads them, so both sides share one definition of every
//! JSON shape, and the OpenAPI document (`GET /v1/openapi.json`) is derived
//! from them. This crate is plain data: serde, utoipa and the pure job
//! model of `ffrtmp-runtime` (jobs, specs, reports, experiments); no actors,
//! no store, no HTTP stack, so a client links none of the server's.
//!
//! The request bodies themselves are the runtime's: `JobRequest` and
//! `SeedRequest` (`ffrtmp_runtime::spec`, `ffrtmp_runtime::seed`) and
//! `ExperimentRequest` (`ffrtmp_runtime::experiment`), re-exported here.

#![forbid(unsafe_code)]

mod error;
mod experiments;
mod jobs;
mod nodes;

pub use error::{ErrorBody, Status};
pub use experiments::{ConfigurationProgress, ExperimentList, ExperimentStatus, ExperimentSummary};
pub use jobs::{AttemptLog, JobLogs, JobPage};
pub use nodes::{NodeInfo, NodeList};

/// The error shape's inner object: `{"code", "message", "field"}`.
pub use ffrtmp_runtime::error::FieldError;
/// The body of `POST /v1/experiments`.
pub use ffrtmp_runtime::experiment::ExperimentRequest;
/// The body of `POST /jobs` (the Go master's shape).
pub use ffrtmp_runtime::go_compat::SeedRequest;
/// A job as every route shows it.
pub use ffrtmp_runtime::model::Job;
/// `GET /v1/reports/efficiency` (and an experiment's report).
pub use ffrtmp_runtime::report::EfficiencyReport;
/// The body of `POST /v1/jobs`.
pub use ffrtmp_runtime::spec::JobRequest;
