//! Following jobs to their end over `GET /v1/jobs/{id}/events` (server-sent
//! events, each `data:` the whole job): live progress bars for people, one
//! JSON object per event for scripts, and the outcome of each job.

use std::io::BufRead;
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::Duration;

use ffrtmp_runtime::model::{Job, JobState, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{CliError, Client, Exit};
use crate::output::{self, Format, Table};

/// Broken streams in a row before a job is given up on (each retry
/// re-reads the job first, so nothing is missed).
const MAX_RECONNECTS: u32 = 5;

/// How a job ended, as far as the CLI could follow it.
pub struct Followed {
    pub id: String,
    /// The last event's job, as the API sent it and parsed.
    pub last: Option<(Value, Job)>,
    pub error: Option<CliError>,
}

impl Followed {
    /// The job's final state, if it reached one.
    pub fn state(&self) -> Option<JobState> {
        self.last
            .as_ref()
            .map(|(_, j)| j.state)
            .filter(|s| s.is_terminal())
    }
}

/// How events are shown while they arrive.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Progress bars on stderr (drawn only on a terminal).
    Bars,
    /// One JSON object per event on stdout.
    JsonLines,
    /// Nothing.
    Quiet,
}

enum Msg {
    Event {
        idx: usize,
        kind: String,
        raw: Value,
        job: Box<Job>,
    },
    Done {
        idx: usize,
        error: Option<CliError>,
    },
}

/// Follow every job in `ids` to its end, all at once.
pub fn follow_all(client: &Client, ids: &[String], show: Show) -> Vec<Followed> {
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for (idx, id) in ids.iter().enumerate() {
        let (client, id, tx) = (client.clone(), id.clone(), tx.clone());
        threads.push(std::thread::spawn(move || {
            let events = tx.clone();
            let result = follow(&client, &id, |kind, raw, job| {
                let _ = events.send(Msg::Event {
                    idx,
                    kind: kind.to_string(),
                    raw,
                    job: Box::new(job),
                });
            });
            let _ = tx.send(Msg::Done {
                idx,
                error: result.err(),
            });
        }));
    }
    drop(tx);

    let mut out: Vec<Followed> = ids
        .iter()
        .map(|id| Followed {
            id: id.clone(),
            last: None,
            error: None,
        })
        .collect();
    let bars = Bars::new(ids, show == Show::Bars);
    for msg in rx {
        match msg {
            Msg::Event {
                idx,
                kind,
                raw,
                job,
            } => {
                match show {
                    Show::Bars => bars.update(idx, &job),
                    Show::JsonLines => output::json(&event_line(&kind, &job)),
                    Show::Quiet => {}
                }
                out[idx].last = Some((raw, *job));
            }
            Msg::Done { idx, error } => {
                let f = &mut out[idx];
                f.error = error;
                match show {
                    Show::Bars => bars.finish(idx, f),
                    Show::JsonLines => output::json(&end_line(f)),
                    Show::Quiet => {}
                }
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    out
}

/// Follow one job until its terminal state, calling `on_event` for each
/// event. A stream cut before the end is reopened (its first event is the
/// job as it is then).
pub fn follow(
    client: &Client,
    id: &str,
    mut on_event: impl FnMut(&str, Value, Job),
) -> Result<(), CliError> {
    let mut broken = 0;
    let mut connected = false;
    loop {
        let resp = match client.events(id) {
            Ok(r) => r,
            // Not found, refused key, or no master to begin with: no
            // point in trying again.
            Err(e) if e.exit != Exit::Unreachable || !connected => return Err(e),
            Err(e) => {
                broken += 1;
                if broken > MAX_RECONNECTS {
                    return Err(e);
                }
                backoff(broken);
                continue;
            }
        };
        connected = true;
        let mut ended = false;
        let mut bad: Option<CliError> = None;
        let read = read_events(std::io::BufReader::new(resp), |kind, data| {
            let raw: Value = match serde_json::from_str(data) {
                Ok(v) => v,
                Err(e) => {
                    bad = Some(not_a_job(id, &e));
                    return ControlFlow::Break(());
                }
            };
            let job: Job = match serde_json::from_value(raw.clone()) {
                Ok(j) => j,
                Err(e) => {
                    bad = Some(not_a_job(id, &e));
                    return ControlFlow::Break(());
                }
            };
            broken = 0;
            ended = job.state.is_terminal();
            on_event(kind, raw, job);
            if ended {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Some(e) = bad {
            return Err(e);
        }
        if ended {
            return Ok(());
        }
        // The stream ended or broke before the job did (the master
        // restarted, a proxy timed out): open it again.
        broken += 1;
        if broken > MAX_RECONNECTS {
            let why = match read {
                Err(e) => e.to_string(),
                Ok(()) => "the stream closed before the job ended".to_string(),
            };
            return Err(CliError::new(
                Exit::Unreachable,
                format!(
                    "lost the event stream of job {id} from {} ({why}); set --master or FFRTMP_MASTER",
                    client.base()
                ),
            ));
        }
        backoff(broken);
    }
}

fn backoff(n: u32) {
    std::thread::sleep(Duration::from_millis((200u64 << n.min(4)).min(2_000)));
}

fn not_a_job(id: &str, e: &serde_json::Error) -> CliError {
    CliError::new(
        Exit::Server,
        format!("an event of job {id} is not a job ({e}); is the master the same version?"),
    )
}

/// Read server-sent events: `on_event(kind, data)` for each one (`kind` is
/// `message` when the event names none), until the stream ends or
/// `on_event` breaks. Comments (`:` lines, the server's keep-alive) and
/// unknown fields are skipped.
pub fn read_events<R: BufRead>(
    mut reader: R,
    mut on_event: impl FnMut(&str, &str) -> ControlFlow<()>,
) -> std::io::Result<()> {
    let mut kind = String::new();
    let mut data = String::new();
    let mut has_data = false;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        let text = line.trim_end_matches(['\n', '\r']);
        if n == 0 || text.is_empty() {
            if has_data {
                let k = if kind.is_empty() { "message" } else { &kind };
                if on_event(k, &data).is_break() {
                    return Ok(());
                }
            }
            kind.clear();
            data.clear();
            has_data = false;
            if n == 0 {
                return Ok(());
            }
            continue;
        }
        if text.starts_with(':') {
            continue;
        }
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text, ""),
        };
        match field {
            "event" => kind = value.to_string(),
            "data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
}

/// Time left, from the media position, the percent done and the speed.
pub fn eta_s(p: &Progress) -> Option<f64> {
    let pct = p.percent?;
    let speed = p.speed?;
    if !(pct > 0.0 && pct < 100.0 && speed > 0.0 && p.out_time_s > 0.0) {
        return None;
    }
    let total = p.out_time_s * 100.0 / pct;
    Some((total - p.out_time_s).max(0.0) / speed)
}

/// One watch line: the state and progress of one event.
fn event_line(kind: &str, job: &Job) -> Value {
    json!({
        "event": kind,
        "id": job.id,
        "state": job.state,
        "attempt": job.attempt,
        "node": job.node,
        "progress": job.progress,
        "eta_s": job.progress.as_ref().and_then(eta_s),
    })
}

/// The last watch line of a job: its outcome and energy (or why it could
/// not be followed).
fn end_line(f: &Followed) -> Value {
    let job = f.last.as_ref().map(|(_, j)| j);
    json!({
        "event": "end",
        "id": f.id,
        "state": f.state(),
        "outcome": f.state().map(|s| s.as_str()).unwrap_or("unknown"),
        "failure": job.and_then(|j| j.failure.as_ref()).map(|x| json!({"reason": x.reason, "message": x.message})),
        "energy": job.and_then(|j| j.energy.as_ref()).map(|e| json!({
            "joules": e.energy_joules,
            "source": e.energy_source,
            "estimate": e.estimate,
            "mean_power_watts": e.mean_power_watts,
        })),
        "error": f.error.as_ref().map(|e| e.message.clone()),
        "job": f.last.as_ref().map(|(raw, _)| raw),
    })
}

/// The progress bars, one per job.
struct Bars {
    _multi: MultiProgress,
    bars: Vec<ProgressBar>,
}

impl Bars {
    fn new(ids: &[String], visible: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let style =
            ProgressStyle::with_template("{prefix:.bold}\n  [{bar:32.cyan/blue}] {pos:>3}%  {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bars = ids
            .iter()
            .map(|id| {
                let pb = multi.add(ProgressBar::new(100));
                pb.set_style(style.clone());
                pb.set_prefix(id.clone());
                pb.set_message("connecting");
                pb
            })
            .collect();
        Bars {
            _multi: multi,
            bars,
        }
    }

    fn update(&self, idx: usize, job: &Job) {
        let pb = &self.bars[idx];
        pb.set_prefix(format!("{} {}", job.id, label(job)));
        let pct = job.progress.as_ref().and_then(|p| p.percent).unwrap_or(0.0);
        pb.set_position(pct.clamp(0.0, 100.0) as u64);
        pb.set_message(progress_text(job));
    }

    fn finish(&self, idx: usize, f: &Followed) {
        let pb = &self.bars[idx];
        if f.state() == Some(JobState::Succeeded) {
            pb.set_position(100);
        }
        pb.finish_with_message(outcome_text(f));
    }
}

/// What the job encodes, in a few characters.
pub fn label(job: &Job) -> String {
    let e = &job.spec.encode;
    match &job.spec.scenario {
        Some(s) => s.clone(),
        None => format!("{}x{}p{}-{}", e.width, e.height, e.fps, e.codec.as_str()),
    }
}

/// The line under a running job's bar.
fn progress_text(job: &Job) -> String {
    match (job.state, &job.progress) {
        (JobState::Running, Some(p)) => format!(
            "{}  frame {}  {:.1} fps  speed {}  ETA {}",
            job.state.as_str(),
            p.frame,
            p.fps,
            p.speed
                .map(|s| format!("{s:.2}x"))
                .unwrap_or_else(output::dash),
            eta_s(p).map(output::duration).unwrap_or_else(output::dash),
        ),
        (state, _) => {
            let mut s = state.as_str().to_string();
            if job.attempt > 1 {
                s.push_str(&format!(" (attempt {})", job.attempt));
            }
            s
        }
    }
}

/// The final line of a job: its state, and energy or failure.
pub fn outcome_text(f: &Followed) -> String {
    if let Some(e) = &f.error {
        return format!("error: {e}");
    }
    let Some((_, job)) = &f.last else {
        return "no events".to_string();
    };
    let mut s = job.state.as_str().to_string();
    if let Some(r) = &job.result {
        s.push_str(&format!(
            "  {} frames in {:.2}s ({:.1} fps)",
            r.frames, r.wall_s, r.avg_fps
        ));
    }
    if let Some(fl) = &job.failure {
        s.push_str(&format!("  {}: {}", output::name(&fl.reason), fl.message));
    }
    match &job.energy {
        Some(e) => s.push_str(&format!(
            "  energy {:.1} J ({})",
            e.energy_joules,
            energy_source(&e.energy_source, e.estimate)
        )),
        None if job.state.is_terminal() => s.push_str("  energy -"),
        None => {}
    }
    s
}

/// `rapl, measured`, `estimate`, `rapl+estimate, partly estimated`.
pub fn energy_source(source: &str, estimate: bool) -> String {
    match (estimate, source) {
        (false, s) => format!("{s}, measured"),
        (true, "estimate") => "estimate".to_string(),
        (true, s) => format!("{s}, partly estimated"),
    }
}

/// The summary table after a watch.
pub fn summary(followed: &[Followed]) -> Table {
    let mut t = Table::new(&[
        "ID", "STATE", ">FRAMES", ">WALL S", ">FPS", ">JOULES", "SOURCE", "ESTIMATE", "DETAIL",
    ]);
    for f in followed {
        let job = f.last.as_ref().map(|(_, j)| j);
        let r = job.and_then(|j| j.result.as_ref());
        let e = job.and_then(|j| j.energy.as_ref());
        let detail = match (&f.error, job.and_then(|j| j.failure.as_ref())) {
            (Some(err), _) => err.message.clone(),
            (None, Some(fl)) => format!("{}: {}", output::name(&fl.reason), fl.message),
            (None, None) => String::new(),
        };
        t.row(vec![
            f.id.clone(),
            job.map(|j| j.state.as_str().to_string())
                .unwrap_or_else(|| "unknown".to_string()),
            r.map(|r| r.frames.to_string()).unwrap_or_else(output::dash),
            output::num(r.map(|r| r.wall_s), 2),
            output::num(r.map(|r| r.avg_fps), 1),
            output::num(e.map(|e| e.energy_joules), 1),
            e.map(|e| e.energy_source.clone())
                .unwrap_or_else(output::dash),
            e.map(|e| if e.estimate { "yes" } else { "no" }.to_string())
                .unwrap_or_else(output::dash),
            detail,
        ]);
    }
    t
}

/// The exit status of a watch: the first error's, else 1 if a job did not
/// succeed, else 0. Errors are printed here, one line each.
pub fn exit_of(followed: &[Followed]) -> Exit {
    let mut exit = Exit::Ok;
    for f in followed {
        if let Some(e) = &f.error {
            eprintln!("ffrtmp: error: job {}: {e}", f.id);
            if exit == Exit::Ok || exit == Exit::JobFailed {
                exit = e.exit;
            }
        } else if f.state() != Some(JobState::Succeeded) && exit == Exit::Ok {
            exit = Exit::JobFailed;
        }
    }
    exit
}

/// `ffrtmp jobs watch`: follow `ids` and print how each ended.
pub fn watch(client: &Client, ids: &[String], format: Format) -> Exit {
    let show = match format {
        Format::Table => Show::Bars,
        Format::Json => Show::JsonLines,
    };
    let followed = follow_all(client, ids, show);
    if format == Format::Table {
        summary(&followed).print();
    }
    exit_of(&followed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_and_comments_skipped() {
        let text = ": keep-alive\n\nevent: state\ndata: {\"a\":1}\n\nevent: progress\ndata: x\ndata: y\n\ndata: tail";
        let mut seen = Vec::new();
        read_events(text.as_bytes(), |k, d| {
            seen.push((k.to_string(), d.to_string()));
            ControlFlow::Continue(())
        })
        .expect("read");
        assert_eq!(
            seen,
            vec![
                ("state".to_string(), "{\"a\":1}".to_string()),
                ("progress".to_string(), "x\ny".to_string()),
                ("message".to_string(), "tail".to_string()),
            ]
        );
    }

    #[test]
    fn sse_reading_stops_when_asked() {
        let text = "data: 1\n\ndata: 2\n\n";
        let mut n = 0;
        read_events(text.as_bytes(), |_, _| {
            n += 1;
            ControlFlow::Break(())
        })
        .expect("read");
        assert_eq!(n, 1);
    }

    #[test]
    fn eta_from_position_percent_and_speed() {
        let p = Progress {
            frame: 150,
            fps: 60.0,
            speed: Some(2.0),
            out_time_s: 5.0,
            percent: Some(50.0),
            bitrate_kbps: None,
            total_size_bytes: None,
        };
        assert_eq!(eta_s(&p), Some(2.5));
        assert_eq!(
            eta_s(&Progress {
                speed: None,
                ..p.clone()
            }),
            None
        );
        assert_eq!(
            eta_s(&Progress {
                percent: Some(100.0),
                ..p
            }),
            None
        );
    }
}
