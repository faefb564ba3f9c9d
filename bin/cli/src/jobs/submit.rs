//! `ffrtmp jobs submit`: the request body from a spec file and the flags,
//! the `POST`, and following the job when asked to.

use std::io::Read;
use std::path::Path;

use ffrtmp_runtime::model::Job;
use serde_json::{json, Map, Value};

use crate::client::{CliError, CliResult, Client, Exit};
use crate::output::{self, Format};
use crate::watch::{self, Show};

use super::existing::parse_job;
use super::*;

pub(super) fn submit(client: &Client, args: &SubmitArgs, format: Format) -> CliResult<Exit> {
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
pub(super) fn post_job(client: &Client, body: &Value) -> CliResult<(Job, Value)> {
    let (_, raw) = client.post(&["v1", "jobs"], &[], Some(body))?;
    let job = parse_job(&raw)?;
    Ok((job, raw))
}

/// Print a job the master just queued, `headline` in table mode (and follow
/// it with `--wait`).
pub(super) fn follow_job(
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
pub(super) fn read_spec(path: &Path) -> CliResult<Value> {
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
pub(super) fn bitrate_value(s: &str) -> Value {
    match s.parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(s),
    }
}

pub(super) fn input_value(s: &str) -> CliResult<Value> {
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

pub(super) fn output_value(s: &str) -> Value {
    if s == "null" {
        json!({"type": "null"})
    } else if s.starts_with("rtmp://") || s.starts_with("rtmps://") {
        json!({"type": "rtmp", "url": s})
    } else {
        json!({"type": "file", "path": s})
    }
}
