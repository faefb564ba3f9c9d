//! The demo (`ffrtmp demo`, and `ffrtmp-node demo`): a throw-away
//! standalone node in a temporary directory, sample jobs submitted through
//! its real HTTP API, live progress bars, and a table of results. What a new
//! user runs first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ffrtmp_actors::standalone::{self, StandaloneConfig};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::ffmpeg_check;

/// The demo node's configuration when no daemon flags are at hand (`ffrtmp
/// demo`): the daemon's defaults, FFmpeg from `PATH`, media in
/// `DATA_DIR/media`.
pub fn default_config(data_dir: &Path) -> anyhow::Result<StandaloneConfig> {
    let media = data_dir.join("media");
    std::fs::create_dir_all(&media).with_context(|| format!("creating {}", media.display()))?;
    let power = ffrtmp_actors::power::PowerConfig::new(ffrtmp_actors::node::cores());
    power.validate().map_err(anyhow::Error::msg)?;
    Ok(StandaloneConfig {
        data_dir: data_dir.to_path_buf(),
        http: "127.0.0.1:0".parse()?,
        media_roots: vec![media],
        slots: standalone::default_slots().max(1),
        api_key: None,
        max_body_bytes: ffrtmp_actors::admin::DEFAULT_MAX_BODY_BYTES,
        max_experiment_jobs: ffrtmp_runtime::experiment::DEFAULT_MAX_JOBS,
        http_limits: ffrtmp_actors::admin::HttpLimits::default(),
        ffmpeg: ffmpeg_check::locate(Path::new("ffmpeg"))?,
        ffprobe: ffmpeg_check::locate(Path::new("ffprobe"))?,
        vmaf_bin: None,
        cgroup_parent: DEMO_CGROUP_PARENT.to_string(),
        nice: 10,
        kill_grace: Duration::from_secs(2),
        retry: ffrtmp_runtime::retry::RetryPolicy::default(),
        lease: Duration::from_millis(ffrtmp_runtime::lease::DEFAULT_LEASE_MS),
        max_commit_batch: ffrtmp_actors::scheduler::DEFAULT_MAX_COMMIT_BATCH,
        commit_interval: ffrtmp_actors::scheduler::DEFAULT_COMMIT_INTERVAL,
        store_reserve: ffrtmp_os::sidefile::DISK_RESERVE,
        metrics: None,
        encoder_allowlist: None,
        power: Some(power),
        run_log: None,
    })
}

/// The cgroup parent of the demo's jobs.
const DEMO_CGROUP_PARENT: &str = "ffrtmp-demo";

/// Run the demo: `config` builds the node's configuration for a data dir
/// (the demo then listens on a free loopback port, under its own cgroup
/// parent). Jobs encode `duration` seconds of video each.
pub async fn run(
    duration: f64,
    keep: bool,
    config: impl FnOnce(&Path) -> anyhow::Result<StandaloneConfig>,
) -> anyhow::Result<()> {
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
    let mut cfg = config(&dir)?;
    // VMAF where the node can have it; PSNR and SSIM in any case.
    let vmaf = match ffmpeg_check::ensure_vmaf() {
        Ok(bin) => {
            cfg.vmaf_bin = Some(bin);
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
    cfg.http = "127.0.0.1:0".parse()?;
    cfg.cgroup_parent = DEMO_CGROUP_PARENT.to_string();
    let media = cfg
        .media_roots
        .first()
        .context("the demo node has no media root")?
        .clone();
    let node = standalone::start(cfg).await?;
    let base = format!("http://{}", node.http);
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
