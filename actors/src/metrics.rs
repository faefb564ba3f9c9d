//! Prometheus metric names (`ffrtmp_*`, base units, bounded labels: never a
//! job id or a URL) and the recorder installed by the binaries.
//!
//! The library only emits through the `metrics` facade, so an embedding
//! application's own recorder receives them; [`install_prometheus`] is for
//! processes that want ours.

use std::sync::OnceLock;

use ffrtmp_runtime::model::{Codec, Energy, JobState, NodePower, Priority};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Jobs accepted and stored (HTTP or [`crate::embed::submit`]).
pub const JOBS_SUBMITTED: &str = "ffrtmp_jobs_submitted_total";
/// Label `outcome`: a terminal state name.
pub const JOBS_FINISHED: &str = "ffrtmp_jobs_finished_total";
/// Jobs requeued, label `reason`: a transient failure's reason
/// (`stalled`, `worker_crash`, ...), or `manual` for a user's
/// `POST /v1/jobs/{id}/retry`.
pub const JOBS_RETRIED: &str = "ffrtmp_jobs_retried_total";
/// Label `priority`.
pub const QUEUE_DEPTH: &str = "ffrtmp_queue_depth";
/// Attempts assigned to connected nodes and not finished (gauge).
pub const JOBS_RUNNING: &str = "ffrtmp_jobs_running";
/// FFmpeg's wall time of succeeded jobs (histogram).
pub const JOB_WALL_SECONDS: &str = "ffrtmp_job_wall_seconds";
/// Attempts whose FFmpeg could not be started (worker side).
pub const SPAWN_FAILURES: &str = "ffrtmp_ffmpeg_spawn_failures_total";
/// HTTP requests rejected by validation, label `code`.
pub const REQUESTS_REJECTED: &str = "ffrtmp_http_requests_rejected_total";
/// A node's power, labels `node`, `domain`, `source` (master side, from the
/// nodes' reports).
pub const NODE_POWER_WATTS: &str = "ffrtmp_node_power_watts";
/// A node's energy since its sampler started, labels `node`, `domain`, `source`.
pub const NODE_ENERGY_JOULES: &str = "ffrtmp_node_energy_joules_total";
/// The part of a node's energy no job was charged for, label `node`.
pub const NODE_IDLE_ENERGY_JOULES: &str = "ffrtmp_node_idle_energy_joules_total";
/// Energy of finished attempts, labels `scenario` (a preset name or
/// `custom`), `encoder`, `source`.
pub const JOB_ENERGY_JOULES: &str = "ffrtmp_job_energy_joules_total";
/// A node's mean sampling cycle, as the node reports it, label `node`
/// (master side).
pub const NODE_SAMPLER_CYCLE_SECONDS: &str = "ffrtmp_node_power_sampler_cycle_seconds";
/// Duration of one power sampling cycle (worker side).
pub const SAMPLER_CYCLE_SECONDS: &str = "ffrtmp_power_sampler_cycle_seconds";
/// Flushes of the master's job store (group commit), emitted by the store.
pub const STORE_FLUSHES: &str = ffrtmp_os::store::STORE_FLUSHES;
/// Durable writes covered by those flushes; over [`STORE_FLUSHES`], the
/// mean batch of a flush.
pub const STORE_FLUSHED_WRITES: &str = ffrtmp_os::store::STORE_FLUSHED_WRITES;

const SAMPLER_BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1,
];

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
        .ok()?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(SAMPLER_CYCLE_SECONDS.to_string()),
            &SAMPLER_BUCKETS,
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
        "Jobs requeued: after a transient failure (reason = the failure), or by a user's retry (reason = manual)."
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
    metrics::describe_gauge!(
        NODE_POWER_WATTS,
        "Node power over the last sampling interval, by domain and source (watts)."
    );
    metrics::describe_counter!(
        NODE_ENERGY_JOULES,
        "Node energy since its sampler started, by domain and source (joules)."
    );
    metrics::describe_counter!(
        NODE_IDLE_ENERGY_JOULES,
        "Node energy not attributed to any job (joules)."
    );
    metrics::describe_counter!(
        JOB_ENERGY_JOULES,
        "Energy of finished attempts, by scenario, encoder and source (joules)."
    );
    metrics::describe_gauge!(
        NODE_SAMPLER_CYCLE_SECONDS,
        "A node's mean power sampling cycle over its last report (seconds)."
    );
    metrics::describe_histogram!(
        SAMPLER_CYCLE_SECONDS,
        metrics::Unit::Seconds,
        "Duration of one power sampling cycle."
    );
    metrics::describe_counter!(STORE_FLUSHES, "Flushes (fsyncs) of the master's job store.");
    metrics::describe_counter!(
        STORE_FLUSHED_WRITES,
        "Durable writes made durable by those flushes (their sum of batch sizes)."
    );
}

/// A node's running total as reported, made monotonic across the node's
/// restarts: its sampler's totals start again from zero when the worker
/// process does, and a counter set with `absolute()` never goes down.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Carry {
    /// The last total the node reported.
    last: f64,
    /// The totals of the node's earlier runs, added to what it reports now.
    offset: f64,
}

impl Carry {
    /// Take a reported total; the node's energy since it was first seen.
    /// A total below the last one is a restart (Prometheus' counter-reset
    /// rule): the last total is carried into the offset.
    fn update(&mut self, reported: f64) -> f64 {
        if reported < self.last {
            self.offset += self.last;
        }
        self.last = reported;
        self.offset + reported
    }
}

/// The carried totals of every node's series, by series key.
static CARRIES: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Carry>>> =
    OnceLock::new();

fn carried(key: &str, reported: f64) -> f64 {
    let map = CARRIES.get_or_init(Default::default);
    // A panic elsewhere while holding the lock leaves plain numbers: usable.
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key.to_string()).or_default().update(reported)
}

/// A node's power report (master side).
pub fn node_power(node: &str, p: &NodePower) {
    for d in &p.domains {
        let labels = [
            ("node", node.to_string()),
            ("domain", d.domain.clone()),
            ("source", d.source.as_str().to_string()),
        ];
        metrics::gauge!(NODE_POWER_WATTS, &labels).set(d.watts);
        let key = format!("{node}\0{}\0{}", d.domain, d.source.as_str());
        let total = carried(&key, d.joules_total);
        metrics::counter!(NODE_ENERGY_JOULES, &labels).absolute(total as u64);
    }
    let total = carried(&format!("{node}\0idle"), p.idle_joules_total);
    metrics::counter!(NODE_IDLE_ENERGY_JOULES, "node" => node.to_string()).absolute(total as u64);
    metrics::gauge!(NODE_SAMPLER_CYCLE_SECONDS, "node" => node.to_string()).set(p.cycle_seconds);
}

/// A finished attempt's energy (master side).
pub fn job_energy(scenario: Option<&str>, codec: Codec, e: &Energy) {
    let scenario = scenario.unwrap_or("custom").to_string();
    for d in &e.domains {
        // Counters are integers: whole joules, the rest is dropped per attempt.
        metrics::counter!(
            JOB_ENERGY_JOULES,
            "scenario" => scenario.clone(),
            "encoder" => codec.encoder(),
            "source" => d.source.as_str(),
        )
        .increment(d.joules.round() as u64);
    }
}

/// Counts a job that reached terminal `state` ([`JOBS_FINISHED`]).
pub fn job_finished(state: JobState) {
    metrics::counter!(JOBS_FINISHED, "outcome" => state.as_str()).increment(1);
}

/// Sets [`QUEUE_DEPTH`] for each priority listed.
pub fn queue_depth(depths: &[(Priority, usize)]) {
    for (p, n) in depths {
        metrics::gauge!(QUEUE_DEPTH, "priority" => p.as_str()).set(*n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::Carry;

    #[test]
    fn a_restarted_nodes_total_continues_from_where_it_was() {
        let mut c = Carry::default();
        assert_eq!(c.update(10.0), 10.0);
        assert_eq!(c.update(25.0), 25.0);
        // The worker restarted: its sampler counts from zero again.
        assert_eq!(c.update(3.0), 28.0);
        assert_eq!(c.update(7.0), 32.0);
        // And again.
        assert_eq!(c.update(1.0), 33.0);
    }

    #[test]
    fn an_unchanged_total_adds_nothing() {
        let mut c = Carry::default();
        assert_eq!(c.update(5.0), 5.0);
        assert_eq!(c.update(5.0), 5.0);
        assert_eq!(c.update(0.0), 5.0);
        assert_eq!(c.update(0.0), 5.0);
    }
}
