//! The commands on jobs that exist: `list`, `get` (and how a job is
//! described), `cancel`, `retry` and `logs`.

use std::collections::HashSet;

use ffrtmp_api::JobLogs;
use ffrtmp_runtime::model::{Input, Job, JobState, Output};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{CliError, CliResult, Client, Exit};
use crate::output::{self, Format, Table};
use crate::watch::{self};

use super::submit::follow_job;
use super::*;

pub(super) fn list(client: &Client, a: &ListArgs, format: Format) -> CliResult<Exit> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(s) = &a.state {
        query.push(("state", s.clone()));
    }
    if let Some(p) = &a.priority {
        query.push(("priority", p.clone()));
    }
    if let Some(l) = a.limit {
        query.push(("limit", l.to_string()));
    }
    query.extend(a.label.iter().map(|l| ("label", l.clone())));
    if let Some(e) = &a.experiment {
        query.push(("experiment", e.clone()));
    }
    let mut cursor = a.cursor;
    let mut seen_cursors = HashSet::new();
    let mut jobs: Vec<Value> = Vec::new();
    let next = loop {
        let mut q = query.clone();
        if let Some(c) = cursor {
            q.push(("cursor", c.to_string()));
        }
        let page = client.get(&["v1", "jobs"], &q)?;
        let Some(items) = page["jobs"].as_array() else {
            return Err(unexpected("GET /v1/jobs", "no `jobs` array"));
        };
        jobs.extend(
            items
                .iter()
                .filter(|j| a.node.is_none() || j["node"].as_str() == a.node.as_deref())
                .cloned(),
        );
        let next = page["next_cursor"].as_u64();
        match next {
            Some(n) if a.all => {
                if !seen_cursors.insert(n) {
                    return Err(unexpected("GET /v1/jobs", "next_cursor repeats"));
                }
                cursor = Some(n);
            }
            _ => break next,
        }
    };
    match format {
        Format::Json => output::json(&json!({"jobs": jobs, "next_cursor": next})),
        Format::Table => {
            let now = crate::now_ms();
            let mut t = Table::new(&[
                "ID",
                "STATE",
                "PRIORITY",
                "ENCODE",
                "NODE",
                ">PROGRESS",
                ">ATTEMPT",
                ">AGE",
            ]);
            for raw in &jobs {
                let j = parse_job(raw)?;
                let progress = match (&j.progress, j.state) {
                    (_, JobState::Succeeded) => "100%".to_string(),
                    (Some(p), _) => p
                        .percent
                        .map(|x| format!("{x:.0}%"))
                        .unwrap_or_else(|| format!("frame {}", p.frame)),
                    (None, _) => output::dash(),
                };
                t.row(vec![
                    j.id.clone(),
                    j.state.as_str().to_string(),
                    j.spec.priority.as_str().to_string(),
                    watch::label(&j),
                    j.node.clone().unwrap_or_else(output::dash),
                    progress,
                    j.attempt.to_string(),
                    output::duration(now.saturating_sub(j.created_ms) as f64 / 1000.0),
                ]);
            }
            if t.is_empty() {
                eprintln!("no jobs");
            } else {
                t.print();
            }
            if let Some(n) = next {
                eprintln!("more: --cursor {n} (or --all)");
            }
        }
    }
    Ok(Exit::Ok)
}

pub(super) fn get_job(client: &Client, id: &str) -> CliResult<(Job, Value)> {
    let raw = client.get(&["v1", "jobs", id], &[])?;
    Ok((parse_job(&raw)?, raw))
}

pub(super) fn get(client: &Client, id: &str, format: Format) -> CliResult<Exit> {
    let (job, raw) = get_job(client, id)?;
    match format {
        Format::Json => output::json(&raw),
        Format::Table => describe(&job),
    }
    Ok(Exit::Ok)
}

/// A job for people, one `key  value` line per aspect.
pub(super) fn describe(j: &Job) {
    let mut rows: Vec<(&str, String)> = Vec::new();
    let e = &j.spec.encode;
    let mut state = j.state.as_str().to_string();
    if j.attempt > 0 {
        state.push_str(&format!(" (attempt {})", j.attempt));
    }
    if let Some(n) = &j.node {
        state.push_str(&format!(" on {n}"));
    }
    rows.push(("id", j.id.clone()));
    rows.push(("state", state));
    rows.push(("priority", j.spec.priority.as_str().to_string()));
    rows.push((
        "encode",
        format!(
            "{}: {}x{} {} fps {} {} kbit/s preset {}",
            j.spec.scenario.as_deref().unwrap_or("custom"),
            e.width,
            e.height,
            e.fps,
            e.codec.as_str(),
            e.bitrate_kbps,
            e.preset
        ),
    ));
    rows.push((
        "input",
        match &j.spec.input {
            Input::Testsrc { duration_s } => format!("testsrc, {duration_s} s"),
            Input::File { path } => format!("file {}", path.display()),
        },
    ));
    rows.push((
        "output",
        match &j.spec.output {
            Output::Null => "null (discarded)".to_string(),
            Output::File { path } => format!("file {}", path.display()),
            Output::Rtmp { url } => format!("rtmp {url}"),
        },
    ));
    let l = &j.spec.resource_limits;
    let mut limits = Vec::new();
    if let Some(v) = l.max_cpu_percent {
        limits.push(format!("cpu {v}%"));
    }
    if let Some(v) = l.max_memory_mb {
        limits.push(format!("memory {v} MB"));
    }
    if let Some(v) = l.timeout_s {
        limits.push(format!("timeout {v} s"));
    }
    if let Some(v) = l.stall_timeout_s {
        limits.push(format!("stall {v} s"));
    }
    rows.push((
        "limits",
        if limits.is_empty() {
            "none".to_string()
        } else {
            limits.join(", ")
        },
    ));
    rows.push(("retries", format!("up to {}", j.spec.max_retries)));
    if let Some(r) = &j.requeue {
        let ago = crate::now_ms().saturating_sub(r.at_ms) as f64 / 1000.0;
        rows.push((
            "requeued",
            format!(
                "{} time(s) by a retry, the last {} ago, after attempt {}",
                r.count,
                output::duration(ago),
                r.after_attempt
            ),
        ));
    }
    if let Some(i) = &j.isolation {
        rows.push(("isolation", output::name(i)));
    }
    if let Some(p) = &j.progress {
        rows.push((
            "progress",
            format!(
                "{}  frame {}  {:.1} fps  speed {}  ETA {}",
                p.percent
                    .map(|x| format!("{x:.1}%"))
                    .unwrap_or_else(output::dash),
                p.frame,
                p.fps,
                p.speed
                    .map(|s| format!("{s:.2}x"))
                    .unwrap_or_else(output::dash),
                watch::eta_s(p)
                    .map(output::duration)
                    .unwrap_or_else(output::dash),
            ),
        ));
    }
    if let Some(r) = &j.result {
        rows.push((
            "result",
            format!(
                "exit {}, {} frames in {:.2} s ({:.1} fps, speed {}), output {}, cpu {} s, peak memory {}",
                r.exit_code,
                r.frames,
                r.wall_s,
                r.avg_fps,
                r.speed.map(|s| format!("{s:.2}x")).unwrap_or_else(output::dash),
                output::bytes(r.output_bytes),
                output::num(r.cpu_s, 2),
                output::bytes(r.peak_memory_bytes),
            ),
        ));
    }
    if let Some(f) = &j.failure {
        rows.push((
            "failure",
            format!("{}: {}", output::name(&f.reason), f.message),
        ));
    }
    if let Some(en) = &j.energy {
        rows.push((
            "energy",
            format!(
                "{:.1} J, {:.1} W mean, {} J/frame, {} J/output min ({})",
                en.energy_joules,
                en.mean_power_watts,
                output::num(en.joules_per_frame, 3),
                output::num(en.joules_per_output_minute, 1),
                watch::energy_source(&en.energy_source, en.estimate),
            ),
        ));
    }
    rows.push(("attempts", j.attempts.len().to_string()));
    for (k, v) in rows {
        output::line(&format!("{k:<10} {v}"));
    }
}

pub(super) fn cancel(client: &Client, id: &str, format: Format) -> CliResult<Exit> {
    let (status, raw) = client.post(&["v1", "jobs", id, "cancel"], &[], None)?;
    match format {
        Format::Json => output::json(&raw),
        Format::Table if status == StatusCode::ACCEPTED => output::line(&format!(
            "cancelling {id}: it is running; it becomes cancelled when its worker has stopped it \
             (ffrtmp jobs watch {id})"
        )),
        Format::Table => output::line(&format!("cancelled {id}")),
    }
    Ok(Exit::Ok)
}

/// POST /v1/jobs/{id}/retry: the same job, queued again. A job that is not
/// failed, cancelled or timed out is refused by the master (409, exit 6).
pub(super) fn retry(client: &Client, id: &str, wait: bool, format: Format) -> CliResult<Exit> {
    let (_, raw) = client.post(&["v1", "jobs", id, "retry"], &[], None)?;
    let job = parse_job(&raw)?;
    let headline = format!(
        "job {} is queued again (retry {}; its attempt {} comes next)",
        job.id,
        job.requeue.as_ref().map_or(1, |r| r.count),
        job.attempt.saturating_add(1)
    );
    follow_job(client, job, raw, wait, format, &headline)
}

/// GET /v1/jobs/{id}/logs: each attempt's outcome and FFmpeg's last stderr
/// lines, as the master keeps them.
pub(super) fn logs(client: &Client, id: &str, format: Format) -> CliResult<Exit> {
    let raw = client.get(&["v1", "jobs", id, "logs"], &[])?;
    if format == Format::Json {
        output::json(&raw);
        return Ok(Exit::Ok);
    }
    let logs: JobLogs = serde_json::from_value(raw)
        .map_err(|e| unexpected("GET /v1/jobs/{id}/logs", &format!("it does not parse: {e}")))?;
    let mut any_lines = false;
    for a in &logs.attempts {
        let what = match a.outcome.as_deref() {
            None => "in progress",
            Some("transient") => "failed (transient)",
            Some("timed_out") => "timed out",
            Some(other) => other,
        };
        let mut head = format!("attempt {} on {}: {what}", a.attempt, a.node);
        if let (Some(reason), Some(message)) = (&a.reason, &a.message) {
            head.push_str(&format!(": {}: {message}", output::name(reason)));
        }
        if let Some(c) = a.exit_code {
            head.push_str(&format!(" (exit {c})"));
        }
        if let Some(s) = a.signal {
            head.push_str(&format!(" (signal {s})"));
        }
        output::line(&head);
        for l in &a.stderr_tail {
            output::line(&format!("  | {l}"));
            any_lines = true;
        }
    }
    if !any_lines {
        eprintln!(
            "no FFmpeg output kept for job {id}: the master keeps the last stderr lines of \
             failed, transient and timed-out attempts only"
        );
    }
    Ok(Exit::Ok)
}

pub(super) fn parse_job(raw: &Value) -> CliResult<Job> {
    serde_json::from_value(raw.clone())
        .map_err(|e| unexpected("a job", &format!("it does not parse: {e}")))
}

pub(super) fn unexpected(what: &str, why: &str) -> CliError {
    CliError::new(
        Exit::Server,
        format!("unexpected answer for {what} ({why}); is the master the same version?"),
    )
}
