//! `ffrtmp jobs ...`: submit, list, get, cancel, retry, logs, watch.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use ffrtmp_api::JobLogs;
use ffrtmp_runtime::model::{Codec, Input, Job, JobState, Output, Priority};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};

use crate::client::{CliError, CliResult, Client, Exit};
use crate::output::{self, Format, Table};
use crate::watch::{self, Show};

#[derive(Subcommand, Debug)]
pub(crate) enum JobsCmd {
    /// Submit a job (flags, or --file with the JSON body); prints its id.
    Submit(Box<SubmitArgs>),
    /// Jobs in submission order, a page at a time.
    List(ListArgs),
    /// One job: spec, state, progress, result or failure, energy.
    Get {
        /// The job's id.
        id: String,
    },
    /// Cancel a job: a queued one at once, a running one when its worker has stopped it.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Queue a failed, cancelled or timed-out job again: the same job (same id), a fresh retry budget.
    Retry {
        /// The job's id.
        id: String,
        /// Follow the job to its end (exit 1 if it does not succeed).
        #[arg(long)]
        wait: bool,
    },
    /// FFmpeg's last stderr lines of each attempt (what the master keeps: failed attempts only).
    Logs {
        /// The job's id.
        id: String,
    },
    /// Live progress of jobs until they end, then their outcome and energy.
    Watch(watch::WatchArgs),
}

#[derive(Args, Debug, Default)]
pub(crate) struct SubmitArgs {
    /// The job as JSON, the body of POST /v1/jobs (`-`: stdin). Flags given too override its fields.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A preset: {480p30,720p30,1080p30,1080p60,2160p30}-{h264,h265,vp9,av1}.
    #[arg(long)]
    pub scenario: Option<String>,
    /// The codec (required without --scenario).
    #[arg(long, value_parser = PossibleValuesParser::new(Codec::ALL.map(Codec::as_str)))]
    pub codec: Option<String>,
    /// Frame width (even, 16-7680).
    #[arg(long, conflicts_with = "size")]
    pub width: Option<u64>,
    /// Frame height (even, 16-4320).
    #[arg(long, conflicts_with = "size")]
    pub height: Option<u64>,
    /// Frame size as WIDTHxHEIGHT, e.g. 1280x720.
    #[arg(long, value_parser = parse_size, value_name = "WxH")]
    pub size: Option<Size>,
    /// Frames per second (1-240).
    #[arg(long)]
    pub fps: Option<u64>,
    /// Video bitrate: kbit/s (3000), or 2500k, 6M.
    #[arg(long)]
    pub bitrate: Option<String>,
    /// Encoder preset (x264/x265 ultrafast..veryslow, vp9 realtime/good/best, av1 0..13).
    #[arg(long)]
    pub preset: Option<String>,
    /// testsrc:SECONDS (a synthetic pattern), or a file path inside a media root.
    #[arg(long, value_name = "SRC")]
    pub input: Option<String>,
    /// null (encode and discard; the default), a file path inside a media root, or rtmp[s]://host/app/key.
    #[arg(long = "to", visible_alias = "dest", value_name = "DST")]
    pub to: Option<String>,
    /// Queue priority (default medium).
    #[arg(long, value_parser = PossibleValuesParser::new(Priority::ALL.map(Priority::as_str)))]
    pub priority: Option<String>,
    /// CPU quota, percent of one core.
    #[arg(long, value_name = "PERCENT")]
    pub max_cpu_percent: Option<u64>,
    /// Memory (and swap) limit.
    #[arg(long, value_name = "MB")]
    pub max_memory_mb: Option<u64>,
    /// Wall-clock limit; the job then ends `timed_out`.
    #[arg(long, value_name = "SECONDS")]
    pub timeout_s: Option<u64>,
    /// No progress this long: killed and retried.
    #[arg(long, value_name = "SECONDS")]
    pub stall_timeout_s: Option<u64>,
    /// Extra attempts after transient failures (0-10, default 3).
    #[arg(long, visible_alias = "retries", value_name = "N")]
    pub max_retries: Option<u64>,
    /// Follow the job to its end; exit 1 if it does not succeed.
    #[arg(long)]
    pub wait: bool,
}

/// `--size WxH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Size {
    pub width: u64,
    pub height: u64,
}

fn parse_size(s: &str) -> Result<Size, String> {
    let bad = || format!("{s:?} is not WIDTHxHEIGHT (e.g. 1280x720)");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok(Size {
        width: w.trim().parse().map_err(|_| bad())?,
        height: h.trim().parse().map_err(|_| bad())?,
    })
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// Only jobs in this state.
    #[arg(long, value_parser = PossibleValuesParser::new(JobState::ALL.map(JobState::as_str)))]
    pub state: Option<String>,
    /// Only jobs of this priority.
    #[arg(long, value_parser = PossibleValuesParser::new(Priority::ALL.map(Priority::as_str)))]
    pub priority: Option<String>,
    /// Only jobs on this node. The API has no such filter: the CLI filters each page, so a page
    /// may hold fewer than --limit jobs.
    #[arg(long)]
    pub node: Option<String>,
    /// Jobs per page (1-1000; the master's default is 100).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Start after this cursor (a previous page's `next_cursor`).
    #[arg(long)]
    pub cursor: Option<u64>,
    /// Follow `next_cursor` to the last page.
    #[arg(long)]
    pub all: bool,
    /// Only jobs carrying this label (`KEY=VALUE`); repeat it for several (all must match).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Only jobs of this experiment.
    #[arg(long, value_name = "ID")]
    pub experiment: Option<String>,
}

pub(crate) fn run(client: &Client, cmd: JobsCmd, format: Format) -> CliResult<Exit> {
    match cmd {
        JobsCmd::Submit(args) => submit(client, &args, format),
        JobsCmd::List(args) => list(client, &args, format),
        JobsCmd::Get { id } => get(client, &id, format),
        JobsCmd::Cancel { id } => cancel(client, &id, format),
        JobsCmd::Retry { id, wait } => retry(client, &id, wait, format),
        JobsCmd::Logs { id } => logs(client, &id, format),
        JobsCmd::Watch(args) => watch::run(client, args, format),
    }
}

// ---------------------------------------------------------------------------
// submit

fn submit(client: &Client, args: &SubmitArgs, format: Format) -> CliResult<Exit> {
    let base = match &args.file {
        Some(path) => Some(read_spec(path)?),
        None => None,
    };
    let body = build_body(base, args)?;
    let (job, raw) = post_job(client, &body)?;
    let headline = job.id.clone();
    follow_job(client, job, raw, args.wait, format, &headline)
}

/// POST /v1/jobs: the new job.
fn post_job(client: &Client, body: &Value) -> CliResult<(Job, Value)> {
    let (_, raw) = client.post(&["v1", "jobs"], &[], Some(body))?;
    let job = parse_job(&raw)?;
    Ok((job, raw))
}

/// Print a job the master just queued, `headline` in table mode (and follow
/// it with `--wait`).
fn follow_job(
    client: &Client,
    job: Job,
    raw: Value,
    wait: bool,
    format: Format,
    headline: &str,
) -> CliResult<Exit> {
    if !wait {
        match format {
            Format::Table => output::line(headline),
            Format::Json => output::json(&raw),
        }
        return Ok(Exit::Ok);
    }
    let ids = [job.id.clone()];
    match format {
        Format::Table => {
            output::line(headline);
            let followed = watch::follow_all(client, &ids, Show::Bars);
            watch::summary(&followed).print();
            Ok(watch::exit_of(&followed))
        }
        Format::Json => {
            let followed = watch::follow_all(client, &ids, Show::Quiet);
            // One document: the job as it ended.
            if let Some((raw, _)) = followed.first().and_then(|f| f.last.as_ref()) {
                output::json(raw);
            }
            Ok(watch::exit_of(&followed))
        }
    }
}

/// A `--file` (or stdin) as a JSON object.
fn read_spec(path: &Path) -> CliResult<Value> {
    let (name, text) = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::usage(format!("--file -: cannot read stdin: {e}")))?;
        ("stdin".to_string(), s)
    } else {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("--file {name}: {e}")))?;
        (name, text)
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("--file {name}: not JSON: {e}")))?;
    if !v.is_object() {
        return Err(CliError::usage(format!(
            "--file {name}: a job is a JSON object (docs/API.md, POST /v1/jobs)"
        )));
    }
    Ok(v)
}

/// The POST /v1/jobs body: the file's object (if any) with the flags on top.
/// Values are not checked here: the master checks them and names the field.
pub(crate) fn build_body(base: Option<Value>, a: &SubmitArgs) -> CliResult<Value> {
    let mut body: Map<String, Value> = match base {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(CliError::usage("--file: a job is a JSON object")),
        None => Map::new(),
    };
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.to_string(), v);
        }
    };
    set("scenario", a.scenario.clone().map(Value::from));
    set("codec", a.codec.clone().map(Value::from));
    set(
        "width",
        a.size.map(|s| s.width).or(a.width).map(Value::from),
    );
    set(
        "height",
        a.size.map(|s| s.height).or(a.height).map(Value::from),
    );
    set("fps", a.fps.map(Value::from));
    set("bitrate", a.bitrate.as_deref().map(bitrate_value));
    set("preset", a.preset.clone().map(Value::from));
    set("input", a.input.as_deref().map(input_value).transpose()?);
    set("output", a.to.as_deref().map(output_value));
    set("priority", a.priority.clone().map(Value::from));
    set("max_retries", a.max_retries.map(Value::from));
    let limits = [
        ("max_cpu_percent", a.max_cpu_percent),
        ("max_memory_mb", a.max_memory_mb),
        ("timeout_s", a.timeout_s),
        ("stall_timeout_s", a.stall_timeout_s),
    ];
    if limits.iter().any(|(_, v)| v.is_some()) {
        let entry = body
            .entry("resource_limits")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(obj) = entry else {
            return Err(CliError::usage(
                "--file: `resource_limits` is not an object, so the limit flags cannot go in it",
            ));
        };
        for (k, v) in limits {
            if let Some(v) = v {
                obj.insert(k.to_string(), Value::from(v));
            }
        }
    }
    // Encode and discard unless told otherwise.
    body.entry("output")
        .or_insert_with(|| json!({"type": "null"}));
    Ok(Value::Object(body))
}

/// `3000` is a number (kbit/s); `2500k`, `6M` go as the strings the API parses.
fn bitrate_value(s: &str) -> Value {
    match s.parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(s),
    }
}

fn input_value(s: &str) -> CliResult<Value> {
    match s.strip_prefix("testsrc:") {
        Some(d) => {
            let secs: f64 = d.parse().map_err(|_| {
                CliError::usage(format!(
                    "--input {s:?}: testsrc:SECONDS takes a number of seconds, e.g. testsrc:10"
                ))
            })?;
            Ok(json!({"type": "testsrc", "duration_s": secs}))
        }
        None if s == "testsrc" => Err(CliError::usage(
            "--input testsrc needs a duration: testsrc:SECONDS, e.g. testsrc:10",
        )),
        None => Ok(json!({"type": "file", "path": s})),
    }
}

fn output_value(s: &str) -> Value {
    if s == "null" {
        json!({"type": "null"})
    } else if s.starts_with("rtmp://") || s.starts_with("rtmps://") {
        json!({"type": "rtmp", "url": s})
    } else {
        json!({"type": "file", "path": s})
    }
}

// ---------------------------------------------------------------------------
// list

fn list(client: &Client, a: &ListArgs, format: Format) -> CliResult<Exit> {
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

// ---------------------------------------------------------------------------
// get, cancel, retry, logs

fn get_job(client: &Client, id: &str) -> CliResult<(Job, Value)> {
    let raw = client.get(&["v1", "jobs", id], &[])?;
    Ok((parse_job(&raw)?, raw))
}

fn get(client: &Client, id: &str, format: Format) -> CliResult<Exit> {
    let (job, raw) = get_job(client, id)?;
    match format {
        Format::Json => output::json(&raw),
        Format::Table => describe(&job),
    }
    Ok(Exit::Ok)
}

/// A job for people, one `key  value` line per aspect.
fn describe(j: &Job) {
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

fn cancel(client: &Client, id: &str, format: Format) -> CliResult<Exit> {
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
fn retry(client: &Client, id: &str, wait: bool, format: Format) -> CliResult<Exit> {
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
fn logs(client: &Client, id: &str, format: Format) -> CliResult<Exit> {
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

fn parse_job(raw: &Value) -> CliResult<Job> {
    serde_json::from_value(raw.clone())
        .map_err(|e| unexpected("a job", &format!("it does not parse: {e}")))
}

fn unexpected(what: &str, why: &str) -> CliError {
    CliError::new(
        Exit::Server,
        format!("unexpected answer for {what} ({why}); is the master the same version?"),
    )
}

#[cfg(test)]
mod tests;
