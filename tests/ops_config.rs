//! The operations kit in `config/` names only metrics a node really exports.
//!
//! The Grafana dashboard and the Prometheus scrape config are plain files;
//! nothing else would notice a metric renamed in `actors/src/metrics.rs`, or
//! a typo in a panel's query: the panel would just stay empty. Here every
//! `ffrtmp_*` name in either file is checked against what a real
//! `ffrtmp-node --role standalone` serves on `/metrics` after it has run a
//! job (retried once), measured its energy and refused a request.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const DASHBOARD: &str = include_str!("../config/grafana/ffrtmp-dashboard.json");
const PROMETHEUS: &str = include_str!("../config/prometheus.yml");
/// Where the names are declared, for the check that needs no node.
const METRICS_RS: &str = include_str!("../actors/src/metrics.rs");
const DS_UID: &str = "${DS_PROMETHEUS}";
const KEY: &str = "ops-config-test-key";
const LONG: Duration = Duration::from_secs(120);

/// Every `ffrtmp_…` identifier in `text` (a whole word: `[a-z0-9_]`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("ffrtmp_") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| word(c) || c.is_ascii_uppercase())
        {
            continue;
        }
        let name: String = text[i..].chars().take_while(|&c| word(c)).collect();
        if !name.ends_with('_') {
            out.insert(name);
        }
    }
    out
}

/// The names a Prometheus text exposition offers to a query: every sample's
/// name (a histogram's `_bucket`, `_sum` and `_count` series as they are),
/// and every `# TYPE` name (a histogram's base name).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                out.insert(name.to_string());
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_string());
        }
    }
    out
}

/// The names the dashboard and the scrape config use.
fn wanted_names() -> BTreeSet<String> {
    let mut names = metric_names(DASHBOARD);
    names.extend(metric_names(PROMETHEUS));
    names
}

/// Every panel that shows data (rows excluded), nested rows included.
fn data_panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dash["panels"].as_array().into_iter().flatten().collect();
    while let Some(p) = stack.pop() {
        if p["type"] == "row" {
            stack.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// The checks that need no node: the dashboard is JSON Grafana can import,
/// every panel queries the `${DS_PROMETHEUS}` data source with a non-empty
/// expression, the scrape config sends the key, and every name either file
/// uses is declared in `actors/src/metrics.rs`.
#[test]
fn the_dashboard_is_importable_and_every_panel_has_a_query() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let version = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&version), "schemaVersion {version}");
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS data source input: {inputs:?}"
    );
    assert!(!dash["uid"].as_str().unwrap_or("").is_empty(), "a uid");

    let panels = data_panels(&dash);
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(titles.insert(title), "two panels titled {title:?}");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "{title}: id"
        );
        assert!(
            p["gridPos"]["w"].as_u64().unwrap_or(0) > 0,
            "{title}: gridPos"
        );
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}: datasource");
        assert_eq!(p["datasource"]["uid"], DS_UID, "{title}: datasource");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "{title}: an empty expr");
            assert!(
                !metric_names(expr).is_empty(),
                "{title}: {expr:?} reads no ffrtmp metric"
            );
            assert_eq!(t["datasource"]["uid"], DS_UID, "{title}: {expr}");
            assert!(
                !t["refId"].as_str().unwrap_or("").is_empty(),
                "{title}: refId"
            );
        }
    }
    for var in dash["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            assert_eq!(var["datasource"]["uid"], DS_UID, "variable {}", var["name"]);
        }
    }

    // Prometheus: the master's /metrics, with the API key from a file.
    assert!(
        PROMETHEUS.contains("metrics_path: /metrics"),
        "{PROMETHEUS}"
    );
    assert!(
        PROMETHEUS.contains("credentials_file:") && PROMETHEUS.contains("type: Bearer"),
        "the scrape sends the API key: {PROMETHEUS}"
    );

    // Declared names (histograms also as their three series).
    let mut declared = BTreeSet::new();
    for name in metric_names(METRICS_RS) {
        for suffix in ["", "_bucket", "_sum", "_count"] {
            declared.insert(format!("{name}{suffix}"));
        }
    }
    let undeclared: Vec<_> = wanted_names().difference(&declared).cloned().collect();
    assert!(
        undeclared.is_empty(),
        "config/ names metrics actors/src/metrics.rs does not declare: {undeclared:?}"
    );
}

/// Every `ffrtmp_*` name in the dashboard and the scrape config is on a
/// live node's `/metrics`. The node runs one small job, which is made to
/// fail once (the fault-injection hook panics its JobActor) so that the
/// retry counter exists too, and refuses two requests.
#[test]
fn the_dashboard_and_scrape_config_name_only_metrics_a_live_node_exports() {
    let _g = serial();
    let wanted = wanted_names();
    assert!(!wanted.is_empty());
    let node = Node::start(
        "ops-metrics",
        NodeOpts {
            api_key: Some(KEY.into()),
            extra: vec!["--power-source".into(), "estimate".into()],
            ..NodeOpts::default()
        },
    );

    // A job long enough to be caught running, made to panic once: retried
    // as `worker_crash`, then it succeeds.
    let id = node.submit(json!({
        "scenario": "720p30-h264",
        "preset": "medium",
        "input": {"type": "testsrc", "duration_s": 4},
        "output": {"type": "null"}
    }));
    node.wait_state(&id, &["running"], LONG);
    let (status, body) = node.post(&format!("/v1/debug/jobs/{id}/panic"));
    assert_eq!(status, 202, "fault injection hook: {body}");
    let job = node.wait_state(&id, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 2, "retried once: {job}");

    // Refusals: no key (401), and a body that is not JSON (400).
    let http = reqwest::blocking::Client::new();
    let resp = http.get(node.url("/v1/jobs")).send().expect("GET");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http
        .post(node.url("/v1/jobs"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 400);

    // Node power arrives about once a second: poll until every wanted name
    // is there, or report what is missing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (exported, text) = loop {
        let (status, text) = node.get_text("/metrics");
        assert_eq!(status, 200, "/metrics with the key: {text}");
        let exported = exported_names(&text);
        if wanted.is_subset(&exported) || Instant::now() > deadline {
            break (exported, text);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let missing: Vec<_> = wanted.difference(&exported).cloned().collect();
    assert!(
        missing.is_empty(),
        "config/grafana/ffrtmp-dashboard.json or config/prometheus.yml names metrics \
         the node does not export: {missing:?}\nexported: {exported:?}\n/metrics:\n{text}"
    );
    // Label values the dashboard and docs/OPERATIONS.md describe.
    for needle in [
        "ffrtmp_jobs_retried_total{reason=\"worker_crash\"}",
        "ffrtmp_jobs_finished_total{outcome=\"succeeded\"}",
        "ffrtmp_http_requests_rejected_total{code=\"unauthorized\"}",
        "ffrtmp_http_requests_rejected_total{code=\"invalid_json\"}",
        "source=\"estimate\"",
    ] {
        assert!(text.contains(needle), "{needle} in /metrics:\n{text}");
    }
}

/// An operator mistake refused by the API: a standalone node's worker is its
/// only one, so draining it would leave a node that accepts jobs it can never
/// run. `409` with the reason; the node keeps running jobs.
#[test]
fn draining_a_standalone_nodes_only_worker_is_refused_with_409() {
    let node = Node::start("drain-own", NodeOpts::default());
    let nodes = wait_for("the local worker to be listed", LONG, || {
        let (status, v) = node.get("/v1/nodes");
        (status == 200 && v["nodes"].as_array().is_some_and(|a| !a.is_empty())).then_some(v)
    });
    let id = nodes["nodes"][0]["id"].as_str().expect("a node id");
    let (status, err) = node.post(&format!("/v1/nodes/{id}/drain"));
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "only_worker", "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(id) && message.contains("only"),
        "{message}"
    );
    let job = node.submit(small_job(0.5));
    let done = node.wait_state(&job, &["succeeded", "failed"], LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
}
