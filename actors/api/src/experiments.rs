//! Experiments: a matrix's progress, and the list of them.

use std::collections::BTreeMap;

use ffrtmp_runtime::report::EfficiencyReport;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An experiment's progress (`GET /v1/experiments/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExperimentStatus {
    /// The experiment's id.
    pub name: String,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// Jobs the matrix expanded to.
    pub total: u64,
    /// Of those, jobs found in the store. Less than `total` only when the
    /// master stopped while storing them (`complete` is then false).
    pub stored: u64,
    /// Every job was stored.
    pub complete: bool,
    /// When it was cancelled, if it was.
    pub cancelled_ms: Option<u64>,
    /// Jobs per state (every state, zeros included).
    pub states: BTreeMap<String, u64>,
    /// Every stored job is in a final state.
    pub done: bool,
    /// Progress per configuration (one combination of the matrix's
    /// values), in expansion order.
    pub configurations: Vec<ConfigurationProgress>,
    /// The efficiency report over its jobs, once `done`.
    pub report: Option<EfficiencyReport>,
    /// The request as submitted.
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
}

/// One configuration of an experiment: its matrix values and its jobs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigurationProgress {
    /// The matrix field of each value, and the value as its label says it.
    pub values: BTreeMap<String, String>,
    /// Its stored jobs (`repeat` of them when all landed).
    pub total: u64,
    /// Of those, jobs in a final state.
    pub ended: u64,
    /// Of those, jobs that succeeded.
    pub succeeded: u64,
}

/// One experiment in `GET /v1/experiments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExperimentSummary {
    /// The experiment's id.
    pub name: String,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// Jobs the matrix expanded to.
    pub total: u64,
    /// Every job was stored.
    pub complete: bool,
    /// When it was cancelled, if it was.
    pub cancelled_ms: Option<u64>,
}

/// `GET /v1/experiments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExperimentList {
    /// By name.
    pub experiments: Vec<ExperimentSummary>,
}
