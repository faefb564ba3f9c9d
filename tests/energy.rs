//! Energy per job, end to end: a real `ffrtmp-node --role standalone`, real
//! FFmpeg encodes in real cgroups, and RAPL counters from a FAKE powercap
//! tree written by this test (the one hardware edge we fake: this machine
//! has no RAPL). The test feeds the counters at a known constant power —
//! wrapping them at `max_energy_range_uj` during the run — and checks that
//! what the node reports adds up.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(180);
/// Seconds of video each job encodes.
const DURATION_S: f64 = 8.0;

/// One fake RAPL zone: where its counter lives, its power and wrap point.
struct Zone {
    dir: PathBuf,
    watts: f64,
    max_uj: u64,
    start_uj: u64,
}

/// A FAKE powercap tree (labelled as such): two packages, each with a
/// `core` subzone (part of the package: must not be counted) and a `dram`
/// subzone, the subzones also linked at the top level as on real hosts, a
/// `psys` zone overlapping everything, and an `intel-rapl-mmio` duplicate of
/// package 0. A thread advances the counters at constant power while
/// feeding is on.
struct FakeRapl {
    root: PathBuf,
    feeding: Arc<AtomicBool>,
    /// Set by the feeder in a round where it saw `feeding` off (it writes
    /// nothing after that until feeding resumes).
    paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Energy written into the counted zones (packages + DRAM), in µJ.
    fed_uj: Arc<Mutex<f64>>,
    thread: Option<JoinHandle<()>>,
}

/// Write a counter in place, as the kernel's files change (the sampler
/// keeps them open: a file renamed over would not be seen), in one
/// fixed-width write so that a read never sees a half-written number.
fn write_counter(path: &Path, uj: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open fake counter");
    f.write_all_at(format!("{uj:020}\n").as_bytes(), 0)
        .expect("write fake counter");
}

fn make_zone(dir: &Path, name: &str, max_uj: u64, start_uj: u64) {
    std::fs::create_dir_all(dir).expect("zone dir");
    std::fs::write(dir.join("name"), format!("{name}\n")).expect("name");
    std::fs::write(dir.join("max_energy_range_uj"), format!("{max_uj}\n")).expect("max");
    write_counter(&dir.join("energy_uj"), start_uj);
}

impl FakeRapl {
    /// Package 0 at 30 W, package 1 at 20 W, each DRAM at 5 W: 60 W counted.
    /// Counters start close to their wrap point, so they wrap early on.
    fn start(root: &Path) -> FakeRapl {
        let counted = [
            ("intel-rapl:0", "package-0", 30.0, 120_000_000u64),
            ("intel-rapl:0/intel-rapl:0:1", "dram", 5.0, 12_000_000),
            ("intel-rapl:1", "package-1", 20.0, 100_000_000),
            ("intel-rapl:1/intel-rapl:1:1", "dram", 5.0, 12_000_000),
        ];
        let mut zones = Vec::new();
        for (rel, name, watts, max_uj) in counted {
            let dir = root.join(rel);
            // 1.5 s of energy before the wrap point.
            let start_uj = max_uj - (watts * 1.5e6) as u64;
            make_zone(&dir, name, max_uj, start_uj);
            zones.push(Zone {
                dir,
                watts,
                max_uj,
                start_uj,
            });
        }
        // Not counted: core subzones (inside the packages), psys, mmio. They
        // get large counters that move, so counting one would show.
        let uncounted = [
            ("intel-rapl:0/intel-rapl:0:0", "core", 25.0),
            ("intel-rapl:1/intel-rapl:1:0", "core", 15.0),
            ("intel-rapl:2", "psys", 90.0),
            ("intel-rapl-mmio:0", "package-0", 30.0),
        ];
        for (rel, name, watts) in uncounted {
            let dir = root.join(rel);
            make_zone(&dir, name, 1u64 << 40, 0);
            zones.push(Zone {
                dir,
                watts,
                max_uj: 1u64 << 40,
                start_uj: 0,
            });
        }
        for sub in ["0:0", "0:1", "1:0", "1:1"] {
            let (pkg, _) = sub.split_once(':').expect("sub");
            std::os::unix::fs::symlink(
                root.join(format!("intel-rapl:{pkg}/intel-rapl:{sub}")),
                root.join(format!("intel-rapl:{sub}")),
            )
            .expect("top-level subzone link");
        }
        let counted_watts: f64 = zones.iter().take(4).map(|z| z.watts).sum();
        let feeding = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let fed_uj = Arc::new(Mutex::new(0.0));
        let thread = {
            let (feeding, paused, stop, fed_uj) = (
                feeding.clone(),
                paused.clone(),
                stop.clone(),
                fed_uj.clone(),
            );
            std::thread::spawn(move || {
                // Seconds of feeding so far; counters are a function of it.
                let mut fed_s = 0.0f64;
                let mut last = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    let on = feeding.load(Ordering::SeqCst);
                    if on {
                        fed_s += now.duration_since(last).as_secs_f64();
                        for z in &zones {
                            let uj =
                                (z.start_uj as f64 + z.watts * fed_s * 1e6) as u64 % (z.max_uj + 1);
                            write_counter(&z.dir.join("energy_uj"), uj);
                        }
                        // Record what was written (whole µJ, as the counters hold).
                        let total: f64 = zones
                            .iter()
                            .take(4)
                            .map(|z| {
                                ((z.start_uj as f64 + z.watts * fed_s * 1e6) as u64 - z.start_uj)
                                    as f64
                            })
                            .sum();
                        *fed_uj.lock().unwrap_or_else(|e| e.into_inner()) = total;
                    }
                    paused.store(!on, Ordering::SeqCst);
                    last = now;
                    // The feeder's own pace (a hardware counter's update
                    // rate), not a wait for a condition.
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        assert_eq!(counted_watts, 60.0);
        FakeRapl {
            root: root.to_path_buf(),
            feeding,
            paused,
            stop,
            fed_uj,
            thread: Some(thread),
        }
    }

    fn feed(&self) {
        self.feeding.store(true, Ordering::SeqCst);
    }

    /// Stop feeding; returns once the feeder has written its last value.
    fn pause(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.feeding.store(false, Ordering::SeqCst);
        wait_for("the feeder to pause", Duration::from_secs(10), || {
            self.paused.load(Ordering::SeqCst).then_some(())
        });
    }

    fn fed_joules(&self) -> f64 {
        *self.fed_uj.lock().unwrap_or_else(|e| e.into_inner()) / 1e6
    }
}

impl Drop for FakeRapl {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn power_of(node: &Node) -> Value {
    let (status, nodes) = node.get("/v1/nodes");
    assert_eq!(status, 200, "{nodes}");
    nodes["nodes"][0]["power"].clone()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Two real encodes at once on a node whose RAPL counters (fake) run at a
/// constant 60 W: the jobs' energy plus idle equals the node's total, the
/// total equals what was fed within 1 %, and the job with more CPU time
/// gets more energy. Also: no zone counted twice, wraps handled, figures
/// in the job, the node list, the efficiency report and Prometheus.
#[test]
fn job_energy_plus_idle_equals_the_fed_total() {
    let _g = serial();
    let tree = tempfile::Builder::new()
        .prefix("ffrtmp-fake-powercap-")
        .tempdir()
        .expect("tempdir");
    let rapl = FakeRapl::start(tree.path());
    let node = Node::start(
        "energy",
        NodeOpts {
            slots: 2,
            extra: vec![
                "--power-source".into(),
                "rapl".into(),
                "--powercap-root".into(),
                rapl.root.display().to_string(),
            ],
            ..NodeOpts::default()
        },
    );
    // The sampler has its baseline once the node reports power.
    let p = wait_for("the first power report", LONG, || {
        let p = power_of(&node);
        (f(&p["samples"]) > 0.0).then_some(p)
    });
    let domains: Vec<(String, String)> = p["domains"]
        .as_array()
        .expect("domains")
        .iter()
        .map(|d| {
            (
                d["domain"].as_str().unwrap_or("").to_string(),
                d["source"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = ["dram-0", "dram-1", "package-0", "package-1"]
        .iter()
        .map(|d| (d.to_string(), "rapl".to_string()))
        .collect();
    assert_eq!(domains, expected, "each package and DRAM zone once: {p}");
    assert_eq!(f(&p["joules_total"]), 0.0, "nothing fed yet: {p}");

    rapl.feed();
    // Submitted together, run at once (two slots). More CPU: 1280x720 at
    // a slow preset; less: 320x180 at ultrafast.
    let heavy = node.submit(json!({
        "scenario": "720p30-h264", "preset": "medium",
        "input": {"type": "testsrc", "duration_s": DURATION_S},
        "output": {"type": "null"}
    }));
    let light = node.submit(json!({
        "scenario": "480p30-h264", "width": 320, "height": 180, "preset": "ultrafast",
        "input": {"type": "testsrc", "duration_s": DURATION_S},
        "output": {"type": "null"}
    }));
    let during = wait_for("power while the heavy job runs", LONG, || {
        let p = power_of(&node);
        let running = node.job(&heavy)["state"] == "running";
        (running && f(&p["joules_total"]) > 0.0).then_some(p)
    });
    let watts = f(&during["watts"]);
    assert!(
        (30.0..=90.0).contains(&watts),
        "about 60 W while fed: {during}"
    );
    let heavy = node.wait_state(&heavy, &["succeeded", "failed"], LONG);
    let light = node.wait_state(&light, &["succeeded", "failed"], LONG);
    assert_eq!(heavy["state"], "succeeded", "{heavy}");
    assert_eq!(light["state"], "succeeded", "{light}");
    rapl.pause();
    let fed = rapl.fed_joules();
    // Reports from 1.5 s of samples after the last write.
    let samples_then = f(&power_of(&node)["samples"]);
    let settled = wait_for("a report after feeding stopped", LONG, || {
        let p = power_of(&node);
        (f(&p["samples"]) >= samples_then + 15.0).then_some(p)
    });

    let total = f(&settled["joules_total"]);
    let idle = f(&settled["idle_joules_total"]);
    let attributed = f(&settled["attributed_joules_total"]);
    let e_heavy = &heavy["energy"];
    let e_light = &light["energy"];
    let jobs = f(&e_heavy["energy_joules"]) + f(&e_light["energy_joules"]);
    eprintln!(
        "fed {fed:.3} J, node total {total:.3} J, jobs {jobs:.3} J (heavy {:.3}, light {:.3}), idle {idle:.3} J",
        f(&e_heavy["energy_joules"]),
        f(&e_light["energy_joules"])
    );
    assert!(fed > 60.0, "at least a second of feeding: {fed}");
    let conservation = ((jobs + idle) - total).abs() / total;
    assert!(
        conservation < 0.01,
        "jobs + idle = node total within 1 %: {jobs} + {idle} vs {total} ({conservation})"
    );
    assert!(
        (attributed - jobs).abs() / total < 0.01,
        "attributed {attributed} = the jobs' {jobs}"
    );
    let vs_fed = (total - fed).abs() / fed;
    eprintln!(
        "conservation error {conservation:.2e} (jobs + idle vs node total), node total vs fed {vs_fed:.2e}"
    );
    assert!(
        vs_fed < 0.01,
        "node total {total} = fed {fed} within 1 % ({vs_fed})"
    );

    // The job with more CPU time got more energy.
    let cpu_heavy = f(&heavy["result"]["cpu_s"]);
    let cpu_light = f(&light["result"]["cpu_s"]);
    assert!(cpu_heavy > cpu_light, "{cpu_heavy} vs {cpu_light}");
    assert!(
        f(&e_heavy["energy_joules"]) > f(&e_light["energy_joules"]),
        "more CPU, more energy: {e_heavy} vs {e_light}"
    );
    assert!(f(&e_light["energy_joules"]) > 0.0, "{e_light}");

    // Per-job figures.
    for (job, e) in [(&heavy, e_heavy), (&light, e_light)] {
        assert_eq!(e["energy_source"], "rapl", "{e}");
        assert_eq!(e["estimate"], false, "{e}");
        let joules = f(&e["energy_joules"]);
        let frames = f(&job["result"]["frames"]);
        assert_eq!(frames, DURATION_S * 30.0, "all frames at 30 fps");
        assert!(
            (f(&e["joules_per_frame"]) - joules / frames).abs() < 1e-9,
            "{e}"
        );
        assert_eq!(f(&job["result"]["output_duration_s"]), DURATION_S, "{job}");
        let per_minute = joules / (DURATION_S / 60.0);
        assert!(
            (f(&e["joules_per_output_minute"]) - per_minute).abs() / per_minute < 1e-9,
            "{e}"
        );
        assert!(
            (f(&e["mean_power_watts"]) - joules / f(&e["measured_s"])).abs() < 1e-6,
            "{e}"
        );
        let attempt = &job["attempts"][0]["energy"];
        assert_eq!(attempt["energy_joules"], e["energy_joules"], "one attempt");
        let names: Vec<&str> = e["domains"]
            .as_array()
            .expect("domains")
            .iter()
            .filter_map(|d| d["domain"].as_str())
            .collect();
        assert_eq!(names, ["dram-0", "dram-1", "package-0", "package-1"], "{e}");
    }

    // The efficiency report ranks the two configurations, measured.
    let (status, report) = node.get("/v1/reports/efficiency");
    assert_eq!(status, 200, "{report}");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{report}");
    assert!(rows
        .iter()
        .all(|r| r["estimate"] == false && r["samples"] == 1));
    assert!(
        f(&rows[0]["median_joules_per_output_minute"])
            <= f(&rows[1]["median_joules_per_output_minute"])
    );
    assert_eq!(
        rows[0]["scenario"], "480p30-h264",
        "the light job is cheaper: {report}"
    );

    // Prometheus: node power and energy by domain and source, job energy.
    let (status, text) = node.get_text("/metrics");
    assert_eq!(status, 200);
    for needle in [
        "ffrtmp_node_power_watts{",
        "domain=\"package-0\"",
        "source=\"rapl\"",
        "ffrtmp_node_energy_joules_total{",
        "ffrtmp_node_idle_energy_joules_total{",
        "ffrtmp_job_energy_joules_total{",
        "encoder=\"libx264\"",
        "ffrtmp_power_sampler_cycle_seconds_bucket",
    ] {
        assert!(text.contains(needle), "{needle} in /metrics:\n{text}");
    }
}

/// With no measured source, figures are labelled `estimate`, never shown
/// as a measurement.
#[test]
fn an_estimate_is_labelled_as_one() {
    let _g = serial();
    let node = Node::start(
        "estimate",
        NodeOpts {
            extra: vec![
                "--power-source".into(),
                "estimate".into(),
                "--estimate-idle-watts".into(),
                "5".into(),
                "--estimate-max-watts".into(),
                "25".into(),
            ],
            ..NodeOpts::default()
        },
    );
    let id = node.submit(small_job(2.0));
    let job = node.wait_state(&id, &["succeeded", "failed"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    let e = &job["energy"];
    assert_eq!(e["energy_source"], "estimate", "{e}");
    assert_eq!(e["estimate"], true, "{e}");
    assert!(f(&e["energy_joules"]) > 0.0, "{e}");
    assert!(f(&e["mean_power_watts"]) <= 25.0, "{e}");
    let p = wait_for("a power report", LONG, || {
        let p = power_of(&node);
        (f(&p["samples"]) > 0.0).then_some(p)
    });
    assert_eq!(p["domains"][0]["domain"], "cpu", "{p}");
    assert_eq!(p["domains"][0]["source"], "estimate", "{p}");
    let (_, report) = node.get("/v1/reports/efficiency");
    assert_eq!(report["rows"][0]["estimate"], true, "{report}");
}

/// `--power-source rapl` where there is no RAPL: the node does not start,
/// and says why.
#[test]
fn rapl_asked_for_but_missing_is_a_clear_error() {
    let empty = tempfile::tempdir().expect("tempdir");
    let data = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(BIN)
        .args(["--role", "standalone", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--power-source", "rapl", "--powercap-root"])
        .arg(empty.path())
        .args([
            "--cgroup-parent",
            &format!("ffrtmp-test-{}-norapl", std::process::id()),
        ])
        .env("FFRTMP_LOG", "info")
        .output()
        .expect("run ffrtmp-node");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--power-source rapl") && err.contains("no RAPL"),
        "{err}"
    );
    cleanup_cgroups(&format!("ffrtmp-test-{}-norapl", std::process::id()));
}
