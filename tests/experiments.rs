//! Experiments against a real standalone node (real FFmpeg, cgroups, sled):
//! `ffrtmp experiment run FILE --wait` runs a 6-configuration matrix to its
//! report and prints the table; the jobs carry the experiment and its
//! labels and filter by them in `GET /v1/jobs`; cancelling an experiment
//! stops its queued and running jobs; bad experiments are refused with the
//! field named and nothing stored.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use common::cli::{run, Out, LONG};
use common::*;
use serde_json::{json, Value};

/// Six configurations (2 codecs x 3 frame rates) of a small, short encode;
/// no scenario, so each frame rate is a configuration of its own.
fn six_configurations(name: &str) -> Value {
    json!({
        "name": name,
        "base": {
            "width": 320, "height": 180, "preset": "ultrafast", "bitrate": "300k",
            "input": {"type": "testsrc", "duration_s": 1},
            "output": {"type": "null"},
            "quality": {"metrics": ["psnr", "ssim"]}
        },
        "matrix": {"codec": ["h264", "h265"], "fps": [10, 15, 20]},
        "labels": {"study": "test"}
    })
}

fn experiment(node: &Node, name: &str) -> Value {
    let (status, body) = node.get(&format!("/v1/experiments/{name}"));
    assert_eq!(status, 200, "{body}");
    body
}

fn jobs(node: &Node, query: &str) -> Vec<Value> {
    let (status, page) = node.get(&format!("/v1/jobs?{query}"));
    assert_eq!(status, 200, "{page}");
    page["jobs"].as_array().expect("jobs").clone()
}

fn cli(node: &Node, args: &[&str]) -> Out {
    run(args, &[("FFRTMP_MASTER", node.base.as_str())], "", LONG * 3)
}

#[test]
fn a_matrix_runs_to_its_report_through_the_cli() {
    let _g = serial();
    // The estimate, so every job has an energy figure on any host.
    let node = Node::start(
        "experiment",
        NodeOpts {
            extra: ["--power-source", "estimate", "--estimate-idle-watts", "5"]
                .into_iter()
                .chain(["--estimate-max-watts", "25"])
                .map(String::from)
                .collect(),
            ..NodeOpts::default()
        },
    );
    let file = node.dir.path().join("six.json");
    std::fs::write(&file, six_configurations("six").to_string()).expect("write");

    let out = cli(
        &node,
        &["experiment", "run", file.to_str().expect("utf-8"), "--wait"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    // The report table: a header and one line per configuration.
    let table: Vec<&str> = out.stdout.lines().collect();
    let header = table
        .iter()
        .position(|l| l.contains("J/OUT MIN"))
        .unwrap_or_else(|| panic!("no report table: {out:?}"));
    assert_eq!(table.len() - header - 1, 6, "{out:?}");
    assert!(out.stdout.contains("succeeded 6"), "{out:?}");

    let e = experiment(&node, "six");
    assert_eq!(
        (e["total"].as_u64(), e["stored"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(e["complete"], true);
    assert_eq!(e["done"], true);
    assert_eq!(e["states"]["succeeded"], 6, "{e}");
    let rows = e["report"]["rows"].as_array().expect("report rows");
    assert_eq!(rows.len(), 6, "{e}");
    // Progress per configuration, in expansion order (codec, then fps).
    let configs = e["configurations"].as_array().expect("configurations");
    assert_eq!(configs.len(), 6, "{e}");
    assert_eq!(configs[0]["values"], json!({"codec": "h264", "fps": "10"}));
    assert_eq!(configs[5]["values"], json!({"codec": "h265", "fps": "20"}));
    for c in configs {
        assert_eq!(
            (c["total"].as_u64(), c["succeeded"].as_u64()),
            (Some(1), Some(1)),
            "{c}"
        );
    }

    // Every job was scored, and the report's plot (energy against PSNR, no
    // VMAF asked) is an SVG naming every configuration.
    for row in rows {
        let psnr = row["psnr"]["median"]
            .as_f64()
            .unwrap_or_else(|| panic!("{row}"));
        assert!((10.0..=100.0).contains(&psnr), "{row}");
    }
    let plot = node.dir.path().join("six.svg");
    let out = cli(
        &node,
        &[
            "report",
            "efficiency",
            "--experiment",
            "six",
            "--plot",
            plot.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::trim))
        .collect();
    for row in rows {
        let label = row["label"].as_str().expect("a row label");
        assert!(texts.contains(&label), "{label} not in {texts:?}");
    }
    assert!(texts.iter().any(|t| t.starts_with("PSNR")), "{texts:?}");

    // Every job carries the experiment, its labels and its matrix values.
    let all = jobs(&node, "experiment=six");
    assert_eq!(all.len(), 6);
    for j in &all {
        let spec = &j["spec"];
        assert_eq!(spec["experiment"], "six");
        assert_eq!(spec["labels"]["study"], "test");
        assert_eq!(spec["labels"]["fps"], spec["encode"]["fps"].to_string());
        assert_eq!(spec["labels"]["codec"], spec["encode"]["codec"]);
    }
    assert_eq!(jobs(&node, "label=codec=h265").len(), 3);
    let one = jobs(&node, "label=codec=h265&label=fps=10");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["spec"]["encode"]["fps"], 10);
    assert_eq!(jobs(&node, "experiment=other").len(), 0);
    let (status, err) = node.get("/v1/jobs?label=nokey");
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (400, Some("label"))
    );

    // The name is taken now; the list shows it; `show` prints the table.
    let (status, err) = node.post_json("/v1/experiments", &six_configurations("six"));
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "experiment_exists");
    assert_eq!(jobs(&node, "limit=1000").len(), 6, "nothing more stored");
    let (_, list) = node.get("/v1/experiments");
    assert_eq!(list["experiments"][0]["name"], "six");
    assert_eq!(list["experiments"][0]["total"], 6);
    let listed = cli(
        &node,
        &[
            "jobs",
            "list",
            "--experiment",
            "six",
            "--label",
            "codec=h265",
            "-o",
            "json",
        ],
    );
    assert_eq!(listed.code, 0, "{listed:?}");
    assert_eq!(
        listed.json()["jobs"].as_array().map(Vec::len),
        Some(3),
        "{listed:?}"
    );
    let shown = cli(&node, &["experiment", "show", "six"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stdout.contains("J/OUT MIN"), "{shown:?}");
}

#[test]
fn cancelling_an_experiment_stops_its_queued_and_running_jobs() {
    let _g = serial();
    let node = Node::start(
        "experiment-cancel",
        NodeOpts {
            slots: 1,
            ..NodeOpts::default()
        },
    );
    let body = json!({
        "name": "long",
        "base": long_job(600.0),
        "matrix": {"preset": ["medium", "slow"]},
        "repeat": 2
    });
    let (status, created) = node.post_json("/v1/experiments", &body);
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["total"], 4);
    wait_for("a job to run", LONG, || {
        (experiment(&node, "long")["states"]["running"] == 1).then_some(())
    });

    let out = cli(&node, &["experiment", "cancel", "long"]);
    assert_eq!(out.code, 0, "{out:?}");
    let e = wait_for("every job to end", LONG, || {
        let e = experiment(&node, "long");
        (e["done"] == true).then_some(e)
    });
    assert_eq!(e["states"]["cancelled"], 4, "{e}");
    assert!(e["cancelled_ms"].is_u64(), "{e}");
    assert_eq!(e["report"]["rows"], json!([]));
    for j in jobs(&node, "experiment=long") {
        assert!(node.job_pids(j["id"].as_str().expect("id")).is_empty());
    }
}

#[test]
fn bad_experiments_are_refused_naming_the_field_and_store_nothing() {
    let _g = serial();
    let node = Node::start(
        "experiment-bad",
        NodeOpts {
            extra: vec!["--max-experiment-jobs".into(), "5".into()],
            ..NodeOpts::default()
        },
    );
    let good = six_configurations("bad");
    let with = |path: &[&str], v: Value| {
        let mut b = good.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = v;
        b
    };
    let cases = [
        // Over --max-experiment-jobs (6 > 5).
        (good.clone(), "too_many_jobs", "matrix"),
        (
            with(&["matrix"], json!({"fps": [10, 15, 20, 24, 25, 30]})),
            "too_many_jobs",
            "matrix",
        ),
        (
            with(
                &["matrix"],
                json!({"codec": ["h264"], "fps": [10], "preset": ["fast", "warp"]}),
            ),
            "invalid_field",
            "matrix.preset[1]",
        ),
        (
            with(&["matrix"], json!({"preset": []})),
            "invalid_field",
            "matrix.preset",
        ),
        (
            with(
                &["matrix"],
                json!({"codec": ["h264"], "fps": [10], "colour": ["red"]}),
            ),
            "unknown_field",
            "matrix.colour[0]",
        ),
        (with(&["repeat"], json!(0)), "invalid_field", "repeat"),
        (with(&["extra"], json!(1)), "unknown_field", "extra"),
        (with(&["name"], json!("No Spaces")), "invalid_field", "name"),
        (
            with(&["labels"], json!({"experiment": "x"})),
            "invalid_field",
            "labels.experiment",
        ),
        (
            with(&["labels"], json!({"k": "x".repeat(129)})),
            "invalid_field",
            "labels.k",
        ),
        (
            {
                let mut b = with(&["base", "width"], json!(321));
                b["matrix"] = json!({"codec": ["h264"], "fps": [10]});
                b
            },
            "invalid_field",
            "base.width",
        ),
    ];
    for (body, code, field) in cases {
        let (status, err) = node.post_json("/v1/experiments", &body);
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(
            (
                err["error"]["code"].as_str(),
                err["error"]["field"].as_str()
            ),
            (Some(code), Some(field)),
            "{body}: {err}"
        );
    }
    // Labels on a single job are bounded too.
    let mut job = small_job(1.0);
    job["labels"] = json!({"Bad": "x"});
    let (status, err) = node.post_json("/v1/jobs", &job);
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (400, Some("labels.Bad"))
    );

    let (_, list) = node.get("/v1/experiments");
    assert_eq!(list["experiments"], json!([]), "no experiment stored");
    assert_eq!(jobs(&node, "").len(), 0, "no job stored");
    // At the bound it is accepted.
    let ok = with(
        &["matrix"],
        json!({"codec": ["h264"], "fps": [10, 15, 20, 24, 25]}),
    );
    let (status, created) = node.post_json("/v1/experiments", &ok);
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["total"], 5);
}
