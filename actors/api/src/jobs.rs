//! Jobs: a page of the list, and a job's FFmpeg logs.

use ffrtmp_runtime::model::{FailureReason, Job, JobState, NodeId, Outcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One page of `GET /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// In submission order.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<u64>,
}

/// `GET /v1/jobs/{id}/logs`: what the store keeps of FFmpeg's output, per
/// attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobLogs {
    /// The job's id.
    pub id: String,
    /// The job's state now.
    pub state: JobState,
    /// Every attempt, oldest first (attempts before a retry included).
    pub attempts: Vec<AttemptLog>,
}

/// One attempt in [`JobLogs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttemptLog {
    /// The attempt's number (1-based; numbering continues across retries).
    pub attempt: u32,
    /// The node it ran on.
    #[schema(value_type = String)]
    pub node: NodeId,
    /// How it ended: `succeeded`, `failed`, `transient`, `timed_out` or
    /// `cancelled`; `null` while it is in flight.
    pub outcome: Option<String>,
    /// Why it did not succeed (`ffmpeg_error`, `stalled`, ...), when it did
    /// not.
    pub reason: Option<FailureReason>,
    /// The failure's message, when it did not succeed.
    pub message: Option<String>,
    /// FFmpeg's exit code, when it exited with one.
    pub exit_code: Option<i32>,
    /// The signal that ended FFmpeg, when one did.
    pub signal: Option<i32>,
    /// The last lines FFmpeg wrote to stderr (at most 40 lines, 16 KiB), as
    /// the worker reported them with a failed, transient or timed-out
    /// outcome. Empty for an attempt that succeeded, was cancelled, is in
    /// flight, or was lost without a report.
    pub stderr_tail: Vec<String>,
}

impl JobLogs {
    /// The logs view of `job`.
    pub fn of(job: &Job) -> JobLogs {
        let attempts = job
            .attempts
            .iter()
            .map(|a| {
                let (outcome, failure) = match &a.outcome {
                    None => (None, None),
                    Some(Outcome::Succeeded { .. }) => (Some("succeeded"), None),
                    Some(Outcome::Cancelled) => (Some("cancelled"), None),
                    Some(Outcome::Failed { failure }) => (Some("failed"), Some(failure)),
                    Some(Outcome::Transient { failure }) => (Some("transient"), Some(failure)),
                    Some(Outcome::TimedOut { failure }) => (Some("timed_out"), Some(failure)),
                };
                AttemptLog {
                    attempt: a.attempt,
                    node: a.node.clone(),
                    outcome: outcome.map(str::to_string),
                    reason: failure.map(|f| f.reason),
                    message: failure.map(|f| f.message.clone()),
                    exit_code: failure.and_then(|f| f.exit_code),
                    signal: failure.and_then(|f| f.signal),
                    stderr_tail: failure.map(|f| f.stderr_tail.clone()).unwrap_or_default(),
                }
            })
            .collect();
        JobLogs {
            id: job.id.clone(),
            state: job.state,
            attempts,
        }
    }
}
