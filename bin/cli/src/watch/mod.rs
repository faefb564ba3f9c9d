//! Following jobs to their end over `GET /v1/jobs/{id}/events` (server-sent
//! events, each `data:` the whole job): live progress bars for people, one
//! JSON object per event for scripts, and the outcome of each job.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use ffrtmp_runtime::model::{Job, JobState, Progress};
use serde_json::Value;

use crate::client::{CliError, CliResult, Client, Exit};
use crate::output::{self, Format};

mod new_jobs;
mod render;

use new_jobs::watch_new;
use render::{end_line, event_line, Bars};
pub(crate) use render::{energy_source, exit_of, label, summary};

/// Broken streams in a row before a job is given up on (each retry
/// re-reads the job first, so nothing is missed).
const MAX_RECONNECTS: u32 = 5;

/// How a job ended, as far as the CLI could follow it.
pub(crate) struct Followed {
    pub id: String,
    /// The last event's job, as the API sent it and parsed.
    pub last: Option<(Value, Job)>,
    pub error: Option<CliError>,
}

impl Followed {
    /// The job's final state, if it reached one.
    pub(crate) fn state(&self) -> Option<JobState> {
        self.last
            .as_ref()
            .map(|(_, j)| j.state)
            .filter(|s| s.is_terminal())
    }
}

/// How events are shown while they arrive.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Show {
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

/// How often `jobs watch` with no ids lists the master's jobs to find new
/// ones (the API has no event stream over all jobs).
const POLL: Duration = Duration::from_secs(1);

/// `ffrtmp jobs watch [ID...] [--follow]`.
#[derive(clap::Args, Debug)]
pub(crate) struct WatchArgs {
    /// Jobs to watch until they end. Default: every job queued, assigned or running, and every
    /// job submitted while watching, until none is left.
    pub ids: Vec<String>,
    /// With no ids: keep watching for new jobs when none is left, until interrupted (Ctrl-C).
    #[arg(long, short = 'f', conflicts_with = "ids")]
    pub follow: bool,
}

/// Jobs being followed, one thread each, their bars and what each did.
struct Watcher<'a> {
    client: &'a Client,
    show: Show,
    tx: mpsc::Sender<Msg>,
    out: Vec<Followed>,
    index: HashMap<String, usize>,
    /// Followed jobs whose stream has not ended yet.
    live: usize,
    done: HashSet<String>,
    bars: Bars,
    threads: HashMap<usize, JoinHandle<()>>,
    /// Keep no document of a job that ended (`--follow` runs for days and
    /// prints no summary).
    forget: bool,
}

impl<'a> Watcher<'a> {
    /// `scroll`: a job that ends leaves the bars for the scrollback (when
    /// jobs keep coming, the live region holds only those under way).
    fn new(
        client: &'a Client,
        show: Show,
        scroll: bool,
        forget: bool,
    ) -> (Watcher<'a>, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel();
        let w = Watcher {
            client,
            show,
            tx,
            out: Vec::new(),
            index: HashMap::new(),
            live: 0,
            done: HashSet::new(),
            bars: Bars::new(show == Show::Bars, scroll),
            threads: HashMap::new(),
            forget,
        };
        (w, rx)
    }

    fn knows(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Start following `id` (once).
    fn add(&mut self, id: &str) {
        if self.knows(id) {
            return;
        }
        let idx = self.out.len();
        self.index.insert(id.to_string(), idx);
        self.out.push(Followed {
            id: id.to_string(),
            last: None,
            error: None,
        });
        self.bars.add(id);
        self.live += 1;
        let (client, id, tx) = (self.client.clone(), id.to_string(), self.tx.clone());
        let thread = std::thread::spawn(move || {
            let events = tx.clone();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                follow(&client, &id, |kind, raw, job| {
                    let _ = events.send(Msg::Event {
                        idx,
                        kind: kind.to_string(),
                        raw,
                        job: Box::new(job),
                    });
                })
            }));
            let error = match result {
                Ok(r) => r.err(),
                Err(_) => Some(CliError::new(
                    Exit::Server,
                    format!("following job {id} stopped on an internal error"),
                )),
            };
            let _ = tx.send(Msg::Done { idx, error });
        });
        self.threads.insert(idx, thread);
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Event {
                idx,
                kind,
                raw,
                job,
            } => {
                match self.show {
                    Show::Bars => self.bars.update(idx, &job),
                    Show::JsonLines => output::json(&event_line(&kind, &job)),
                    Show::Quiet => {}
                }
                self.out[idx].last = Some((raw, *job));
            }
            Msg::Done { idx, error } => {
                let f = &mut self.out[idx];
                f.error = error;
                match self.show {
                    Show::Bars => self.bars.finish(idx, f),
                    Show::JsonLines => output::json(&end_line(f)),
                    Show::Quiet => {}
                }
                self.done.insert(f.id.clone());
                if self.forget {
                    f.last = None;
                }
                self.live = self.live.saturating_sub(1);
                // Its last act was this message.
                if let Some(t) = self.threads.remove(&idx) {
                    let _ = t.join();
                }
            }
        }
    }

    fn finish(self) -> Vec<Followed> {
        for t in self.threads.into_values() {
            let _ = t.join();
        }
        self.out
    }
}

/// Follow every job in `ids` to its end, all at once.
pub(crate) fn follow_all(client: &Client, ids: &[String], show: Show) -> Vec<Followed> {
    let (mut w, rx) = Watcher::new(client, show, false, false);
    for id in ids {
        w.add(id);
    }
    while w.live > 0 {
        match rx.recv() {
            Ok(msg) => w.handle(msg),
            Err(_) => break,
        }
    }
    w.finish()
}

/// Follow one job until its terminal state, calling `on_event` for each
/// event. A stream cut before the end is reopened (its first event is the
/// job as it is then).
pub(crate) fn follow(
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
pub(crate) fn read_events<R: BufRead>(
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
pub(crate) fn eta_s(p: &Progress) -> Option<f64> {
    let pct = p.percent?;
    let speed = p.speed?;
    if !(pct > 0.0 && pct < 100.0 && speed > 0.0 && p.out_time_s > 0.0) {
        return None;
    }
    let total = p.out_time_s * 100.0 / pct;
    Some((total - p.out_time_s).max(0.0) / speed)
}

/// `ffrtmp jobs watch`: follow `ids` (or, with none, every job under way
/// and each new one) and print how each ended.
pub(crate) fn run(client: &Client, args: WatchArgs, format: Format) -> CliResult<Exit> {
    if args.ids.is_empty() {
        return watch_new(client, format, args.follow);
    }
    let show = match format {
        Format::Table => Show::Bars,
        Format::Json => Show::JsonLines,
    };
    let followed = follow_all(client, &args.ids, show);
    if format == Format::Table {
        summary(&followed).print();
    }
    Ok(exit_of(&followed))
}

#[cfg(test)]
mod tests;
