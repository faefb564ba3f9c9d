//! Prometheus metric names (`ffrtmp_*`, base units, bounded labels: never a
//! job id or a URL) and the recorder installed by the binaries.
//!
//! The library only emits through the `metrics` facade, so an embedding
//! application's own recorder receives them; [`install_prometheus`] is for
//! processes that want ours.

use std::sync::OnceLock;

use ffrtmp_runtime::model::{JobState, Priority};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const JOBS_SUBMITTED: &str = "ffrtmp_jobs_submitted_total";
/// Label `outcome`: a terminal state name.
pub const JOBS_FINISHED: &str = "ffrtmp_jobs_finished_total";
/// Transient failures that were requeued, label `reason`.
pub const JOBS_RETRIED: &str = "ffrtmp_jobs_retried_total";
/// Label `priority`.
pub const QUEUE_DEPTH: &str = "ffrtmp_queue_depth";
pub const JOBS_RUNNING: &str = "ffrtmp_jobs_running";
pub const JOB_WALL_SECONDS: &str = "ffrtmp_job_wall_seconds";
pub const SPAWN_FAILURES: &str = "ffrtmp_ffmpeg_spawn_failures_total";
/// HTTP requests rejected by validation, label `code`.
pub const REQUESTS_REJECTED: &str = "ffrtmp_http_requests_rejected_total";

const WALL_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder for this process (once) and return its handle.
/// If another recorder is already installed, returns `None`.
pub fn install_prometheus() -> Option<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Some(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(JOB_WALL_SECONDS.to_string()),
            &WALL_BUCKETS,
        )
        .ok()?;
    let handle = builder.install_recorder().ok()?;
    describe();
    Some(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    metrics::describe_counter!(JOBS_SUBMITTED, "Jobs accepted (stored) by the master.");
    metrics::describe_counter!(
        JOBS_FINISHED,
        "Jobs that reached a terminal state, by outcome."
    );
    metrics::describe_counter!(
        JOBS_RETRIED,
        "Attempts that failed transiently and were requeued."
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Jobs waiting to be placed, by priority.");
    metrics::describe_gauge!(JOBS_RUNNING, "Jobs assigned to or running on a node.");
    metrics::describe_histogram!(
        JOB_WALL_SECONDS,
        metrics::Unit::Seconds,
        "Wall time of finished attempts."
    );
    metrics::describe_counter!(
        SPAWN_FAILURES,
        "FFmpeg processes that could not be started."
    );
    metrics::describe_counter!(REQUESTS_REJECTED, "HTTP requests rejected, by error code.");
}

pub fn job_finished(state: JobState) {
    metrics::counter!(JOBS_FINISHED, "outcome" => state.as_str()).increment(1);
}

pub fn queue_depth(depths: &[(Priority, usize)]) {
    for (p, n) in depths {
        metrics::gauge!(QUEUE_DEPTH, "priority" => p.as_str()).set(*n as f64);
    }
}
