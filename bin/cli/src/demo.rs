//! The demo (`ffrtmp demo`, and `ffrtmp-node demo`): a throw-away
//! standalone node in a temporary directory, sample jobs submitted through
//! its real HTTP API, live progress bars, and a table of results. What a new
//! user runs first.
//!
//! [`run`] drives the node over HTTP only; how the node is started is the
//! caller's: `ffrtmp demo` runs `ffrtmp-node --role standalone` as a child
//! process ([`crate::node_process`]), `ffrtmp-node demo` starts one in its
//! own process with its own flags.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::ffmpeg_check;

/// The cgroup parent of the demo's jobs.
pub const DEMO_CGROUP_PARENT: &str = "ffrtmp-demo";

/// What the demo's node is to be started with.
#[derive(Debug, Clone)]
pub struct DemoSetup {
    /// The temporary data directory (the node's store goes in it).
    pub data_dir: PathBuf,
    /// The node's only media root, `DATA_DIR/media` (created).
    pub media: PathBuf,
    /// The `ffrtmp-vmaf` binary the node is to use, when there is one.
    pub vmaf_bin: Option<PathBuf>,
}

/// A started demo node, as the demo drives it.
pub trait DemoNode {
    /// Its HTTP API, `http://127.0.0.1:PORT` (a free loopback port).
    fn base_url(&self) -> String;
    /// Its first media root: where the sample output file is written.
    fn media_root(&self) -> PathBuf;
    /// Stops it: its running jobs are killed and their cgroups removed.
    fn shutdown(self) -> impl Future<Output = ()>;
}

/// Run the demo: `start` starts the node for a [`DemoSetup`], listening on a
/// free loopback port, its jobs under [`DEMO_CGROUP_PARENT`]. Jobs encode
/// `duration` seconds of video each.
pub async fn run<N, F, Fut>(duration: f64, keep: bool, start: F) -> anyhow::Result<()>
where
    N: DemoNode,
    F: FnOnce(DemoSetup) -> Fut,
    Fut: Future<Output = anyhow::Result<N>>,
{
    if !(0.5..=600.0).contains(&duration) {
        anyhow::bail!("--duration must be between 0.5 and 600 seconds");
    }
    ffmpeg_check::ensure_installed()?;
    // Removed when the demo ends (or fails), unless `keep`: then its output
    // file can be played afterwards.
    let temp = tempfile::Builder::new()
        .prefix("ffrtmp-demo-")
        .tempdir()
        .context("creating a temporary data dir")?;
    let dir: PathBuf = temp.path().to_path_buf();
    let media = dir.join("media");
    std::fs::create_dir_all(&media).with_context(|| format!("creating {}", media.display()))?;
    let mut setup = DemoSetup {
        data_dir: dir.clone(),
        media,
        vmaf_bin: None,
    };
    // VMAF where the node can have it; PSNR and SSIM in any case.
    let vmaf = match ffmpeg_check::ensure_vmaf() {
        Ok(bin) => {
            setup.vmaf_bin = Some(bin);
            true
        }
        Err(why) => {
            println!(
                "VMAF: not available ({why}); the sample jobs measure PSNR and SSIM only. \
                 To add VMAF: {}",
                ffmpeg_check::vmaf_commands()
            );
            false
        }
    };
    let metrics = if vmaf {
        json!(["vmaf", "psnr", "ssim"])
    } else {
        json!(["psnr", "ssim"])
    };
    let node = start(setup).await?;
    let base = node.base_url();
    let media = node.media_root();
    println!(
        "ffrtmp demo: standalone node on {base} (data in {})",
        dir.display()
    );
    if vmaf {
        // The node runs the binary's self-test; without it a VMAF job would
        // wait for a node that can compute VMAF. Its worker links up just
        // after the start: wait for it to be listed.
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        let offers = loop {
            let nodes: Value = reqwest::get(format!("{base}/v1/nodes"))
                .await?
                .json()
                .await?;
            if let Some(m) = nodes["nodes"][0]["capabilities"]["metrics"].as_array() {
                break m.iter().any(|x| x == "vmaf");
            }
            if tokio::time::Instant::now() > until {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if !offers {
            node.shutdown().await;
            anyhow::bail!(
                "ffrtmp-vmaf failed its self-test (see the log above); to rebuild it: {}",
                ffmpeg_check::vmaf_commands()
            );
        }
    }

    let jobs = [
        json!({"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":duration},"output":{"type":"null"},"priority":"high"}),
        json!({"scenario":"480p30-h265","input":{"type":"testsrc","duration_s":duration},"output":{"type":"null"}}),
        json!({"scenario":"480p30-vp9","input":{"type":"testsrc","duration_s":duration},"output":{"type":"null"},"priority":"low"}),
        json!({"scenario":"480p30-av1","input":{"type":"testsrc","duration_s":duration},"output":{"type":"null"},"priority":"batch"}),
        json!({"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":duration},
               "output":{"type":"file","path":"demo-720p.mp4"},"overwrite":true,
               "resource_limits":{"max_cpu_percent":50}}),
    ];
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for mut body in jobs {
        body["quality"] = json!({ "metrics": metrics });
        let body = &body;
        let resp = http
            .post(format!("{base}/v1/jobs"))
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let job: Value = resp.json().await?;
        if status != reqwest::StatusCode::CREATED {
            anyhow::bail!("submission refused ({status}): {job}");
        }
        let id = job["id"].as_str().context("job without id")?.to_string();
        ids.push((id, body["scenario"].as_str().unwrap_or("?").to_string()));
    }

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos:>3}% {msg}")?
        .progress_chars("=> ");
    let mut progress: Vec<ProgressBar> = Vec::new();
    for (_, scenario) in &ids {
        let pb = bars.add(ProgressBar::new(100));
        pb.set_style(style.clone());
        pb.set_prefix(scenario.clone());
        pb.set_message("queued");
        progress.push(pb);
    }
    let mut finals: Vec<Option<Value>> = vec![None; ids.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(120.0 + duration * 20.0);
    while finals.iter().any(Option::is_none) {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("jobs did not finish in time");
        }
        for (i, (id, _)) in ids.iter().enumerate() {
            if finals[i].is_some() {
                continue;
            }
            let job: Value = http
                .get(format!("{base}/v1/jobs/{id}"))
                .send()
                .await?
                .json()
                .await?;
            let state = job["state"].as_str().unwrap_or("?").to_string();
            let p = &job["progress"];
            let pct = p["percent"].as_f64().unwrap_or(0.0);
            progress[i].set_position(pct as u64);
            progress[i].set_message(format!(
                "{state:<9} frame {:>5}  fps {:>6.1}  speed {}",
                p["frame"].as_u64().unwrap_or(0),
                p["fps"].as_f64().unwrap_or(0.0),
                p["speed"]
                    .as_f64()
                    .map(|s| format!("{s:.2}x"))
                    .unwrap_or_else(|| "-".into()),
            ));
            if matches!(
                state.as_str(),
                "succeeded" | "failed" | "cancelled" | "timed_out"
            ) {
                if state == "succeeded" {
                    progress[i].set_position(100);
                }
                progress[i].finish();
                finals[i] = Some(job);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    println!();
    println!(
        "{:<14} {:<10} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:<10} {:>8} {:>7} {:>9} {:<8}",
        "scenario",
        "state",
        "wall s",
        "fps",
        "speed",
        "cpu s",
        "peak MB",
        "out bytes",
        "isolation",
        "joules",
        "watts",
        "J/out min",
        "source"
    );
    let mut failed = 0;
    for ((_, scenario), job) in ids.iter().zip(finals.iter().flatten()) {
        let r = &job["result"];
        let num = |v: &Value, prec: usize| {
            v.as_f64()
                .map(|x| format!("{x:.prec$}"))
                .unwrap_or_else(|| "-".into())
        };
        if job["state"] != "succeeded" {
            failed += 1;
        }
        let e = &job["energy"];
        println!(
            "{:<14} {:<10} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:<10} {:>8} {:>7} {:>9} {:<8}",
            scenario,
            job["state"].as_str().unwrap_or("?"),
            num(&r["wall_s"], 2),
            num(&r["avg_fps"], 1),
            num(&r["speed"], 2),
            num(&r["cpu_s"], 2),
            r["peak_memory_bytes"]
                .as_u64()
                .map(|b| format!("{:.1}", b as f64 / 1e6))
                .unwrap_or_else(|| "-".into()),
            r["output_bytes"]
                .as_u64()
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            job["isolation"].as_str().unwrap_or("-"),
            num(&e["energy_joules"], 1),
            num(&e["mean_power_watts"], 1),
            num(&e["joules_per_output_minute"], 0),
            e["energy_source"].as_str().unwrap_or("-"),
        );
    }
    println!();
    // The quality pass of each job: its scores, and its own time and energy.
    println!(
        "{:<14} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "scenario", "VMAF", "VMAF p5", "PSNR dB", "SSIM", "quality s", "quality J"
    );
    for ((_, scenario), job) in ids.iter().zip(finals.iter().flatten()) {
        let q = &job["result"]["quality"];
        let num = |v: &Value, prec: usize| {
            v.as_f64()
                .map(|x| format!("{x:.prec$}"))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<14} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9}",
            scenario,
            num(&q["vmaf"]["mean"], 1),
            num(&q["vmaf"]["p5"], 1),
            num(&q["psnr"]["mean"], 1),
            num(&q["ssim"]["mean"], 4),
            num(&q["wall_s"], 2),
            num(&q["quality_energy_joules"], 1),
        );
        if let Some(e) = q["error"].as_str() {
            println!("{:<14} quality: {e}", "");
        }
    }
    if !vmaf {
        println!("(No VMAF on this node: PSNR and SSIM only, as said above.)");
    }
    println!();
    // Say where the figures came from, and whether they are measurements.
    if let Some(j) = finals.iter().flatten().find(|j| j["energy"].is_object()) {
        if j["energy"]["estimate"] == true {
            println!(
                "Energy source: estimate (no readable RAPL counters here; the figures come from \
                 CPU utilisation and ffrtmp-node's --estimate-idle-watts/--estimate-max-watts, not a meter)."
            );
        } else {
            println!(
                "Energy source: {} (measured).",
                j["energy"]["energy_source"].as_str().unwrap_or("?")
            );
        }
    }
    if keep {
        println!(
            "Output file: {} (play it with ffplay; remove {} when done)",
            media.join("demo-720p.mp4").display(),
            dir.display()
        );
    } else {
        println!(
            "Removing {} (run `ffrtmp demo --keep` to keep it and the encoded file).",
            dir.display()
        );
    }
    node.shutdown().await;
    if keep {
        let _ = temp.keep();
    } else {
        temp.close()
            .with_context(|| format!("removing {}", dir.display()))?;
    }
    if failed > 0 {
        anyhow::bail!("{failed} sample job(s) did not succeed");
    }
    Ok(())
}
