//! Following jobs to their end over `GET /v1/jobs/{id}/events` (server-sent
//! events, each `data:` the whole job): live progress bars for people, one
//! JSON object per event for scripts, and the outcome of each job.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ffrtmp_runtime::model::{Job, JobState, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{CliError, CliResult, Client, Exit};
use crate::output::{self, Format, Table};

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

/// What one look at the master's job lists found.
#[derive(Debug, Default)]
struct Seen {
    /// Jobs submitted since the last look: id and state.
    new: Vec<(String, JobState)>,
    /// Every queued job.
    queued: Vec<String>,
    /// Every assigned or running job.
    active: Vec<String>,
}

/// Jobs to start following after a look, and whether any job is left to
/// wait for. Queued jobs are not followed yet (a long queue would be a
/// stream each), only remembered in `pending`: they are followed once they
/// leave the queue, whichever state they are in then, so a job that ran
/// and ended between two looks still shows up (as it ended). `known`: being
/// followed or followed already; `done`: its stream ended.
fn plan(
    seen: &Seen,
    pending: &mut HashSet<String>,
    known: impl Fn(&str) -> bool,
    done: impl Fn(&str) -> bool,
) -> (Vec<String>, bool) {
    let queued: HashSet<&str> = seen.queued.iter().map(String::as_str).collect();
    let mut start: Vec<String> = Vec::new();
    let begin = |id: &str, start: &mut Vec<String>| {
        if !known(id) && !start.iter().any(|s| s == id) {
            start.push(id.to_string());
        }
    };
    for (id, state) in &seen.new {
        if *state == JobState::Queued {
            pending.insert(id.clone());
        } else {
            begin(id, &mut start);
        }
    }
    for id in &seen.queued {
        if !known(id) {
            pending.insert(id.clone());
        }
    }
    for id in &seen.active {
        begin(id, &mut start);
    }
    let left: Vec<String> = pending
        .iter()
        .filter(|id| !queued.contains(id.as_str()))
        .cloned()
        .collect();
    for id in left {
        pending.remove(&id);
        begin(&id, &mut start);
    }
    pending.retain(|id| !known(id));
    let busy = !start.is_empty() || seen.queued.iter().chain(&seen.active).any(|id| !done(id));
    (start, busy)
}

/// Looks at the master's job lists: where the last one ended, and the
/// queued jobs not followed yet.
struct Discovery {
    /// The highest submission seq seen (jobs after it are new).
    high: u64,
    pending: HashSet<String>,
}

impl Discovery {
    fn new(client: &Client) -> CliResult<Discovery> {
        Ok(Discovery {
            high: latest_seq(client)?,
            pending: HashSet::new(),
        })
    }

    fn look(&mut self, client: &Client) -> CliResult<Seen> {
        let mut seen = Seen::default();
        // New submissions first, then the states in the order jobs move
        // through them, so a job that moves during the look is still seen.
        for (seq, id, state) in list(client, None, Some(self.high))? {
            self.high = self.high.max(seq);
            seen.new.push((id, state));
        }
        seen.queued = list(client, Some(JobState::Queued), None)?
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        for state in [JobState::Assigned, JobState::Running] {
            seen.active.extend(
                list(client, Some(state), None)?
                    .into_iter()
                    .map(|(_, id, _)| id),
            );
        }
        Ok(seen)
    }
}

/// Every job in `state` (any, if `None`) submitted after `after`, as (seq,
/// id, state), following `next_cursor` page by page.
fn list(
    client: &Client,
    state: Option<JobState>,
    after: Option<u64>,
) -> CliResult<Vec<(u64, String, JobState)>> {
    let mut out = Vec::new();
    let mut cursor = after;
    let mut seen_cursors = HashSet::new();
    loop {
        let mut q = vec![("limit", "1000".to_string())];
        if let Some(s) = state {
            q.push(("state", s.as_str().to_string()));
        }
        if let Some(c) = cursor {
            q.push(("cursor", c.to_string()));
        }
        let page = client.get(&["v1", "jobs"], &q)?;
        for j in page["jobs"].as_array().into_iter().flatten() {
            let parsed = (
                j["seq"].as_u64(),
                j["id"].as_str(),
                serde_json::from_value::<JobState>(j["state"].clone()).ok(),
            );
            if let (Some(seq), Some(id), Some(st)) = parsed {
                out.push((seq, id.to_string(), st));
            }
        }
        match page["next_cursor"].as_u64() {
            Some(n) if seen_cursors.insert(n) => cursor = Some(n),
            _ => break,
        }
    }
    Ok(out)
}

/// The highest submission seq on the master (0 if it has no job). The list
/// runs oldest first, so this asks "any job after N?" (`limit=1`) for a
/// doubling N, then halves the gap: about 2·log2(seq) tiny requests instead
/// of reading every job ever submitted.
fn latest_seq(client: &Client) -> CliResult<u64> {
    let any_after = |n: u64| -> CliResult<bool> {
        let page = client.get(
            &["v1", "jobs"],
            &[("limit", "1".to_string()), ("cursor", n.to_string())],
        )?;
        Ok(page["jobs"].as_array().is_some_and(|a| !a.is_empty()))
    };
    if !any_after(0)? {
        return Ok(0);
    }
    // any_after(lo) holds, any_after(hi) does not.
    let mut lo = 0u64;
    let mut hi = 1u64;
    while any_after(hi)? {
        lo = hi;
        if hi == u64::MAX {
            return Ok(hi);
        }
        hi = hi.saturating_mul(2);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if any_after(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// `jobs watch` with no ids: the jobs under way and queued, then each new
/// one, until none is left (or, with `follow`, until interrupted).
fn watch_new(client: &Client, format: Format, follow: bool) -> CliResult<Exit> {
    let show = match format {
        Format::Table => Show::Bars,
        Format::Json => Show::JsonLines,
    };
    let mut disc = Discovery::new(client)?;
    let seen = disc.look(client)?;
    let (start, busy) = plan(&seen, &mut disc.pending, |_| false, |_| false);
    if !busy && !follow {
        eprintln!("no job is queued, assigned or running");
        return Ok(Exit::Ok);
    }
    let (mut w, rx) = Watcher::new(client, show, true, follow);
    for id in &start {
        w.add(id);
    }
    let mut next = Instant::now() + POLL;
    let mut failures = 0;
    loop {
        // Events until the next look is due (a steady flow of events does
        // not put the looks off).
        let now = Instant::now();
        if now < next {
            match rx.recv_timeout(next - now) {
                Ok(msg) => {
                    w.handle(msg);
                    // The last stream ended: look now, to end without waiting.
                    if w.live == 0 && !follow {
                        next = Instant::now();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        next = Instant::now() + POLL;
        let seen = match disc.look(client) {
            Ok(s) => {
                failures = 0;
                s
            }
            // The master restarting: the streams reconnect, so do the looks.
            Err(e) if e.exit == Exit::Unreachable && failures < MAX_RECONNECTS => {
                failures += 1;
                continue;
            }
            Err(e) => {
                // Streams may be blocked on a master that is gone: no join.
                let followed = w.out;
                if format == Format::Table && !follow {
                    summary(&followed).print();
                }
                return Err(e);
            }
        };
        let (start, busy) = plan(
            &seen,
            &mut disc.pending,
            |id| w.knows(id),
            |id| w.done.contains(id),
        );
        for id in &start {
            w.add(id);
        }
        if !follow && !busy && w.live == 0 {
            break;
        }
    }
    let followed = w.finish();
    if format == Format::Table {
        summary(&followed).print();
    }
    Ok(exit_of(&followed))
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
    multi: MultiProgress,
    style: ProgressStyle,
    bars: Vec<ProgressBar>,
    /// A job that ends prints its last lines above the live bars and drops
    /// its bar, instead of keeping it.
    scroll: bool,
}

impl Bars {
    fn new(visible: bool, scroll: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let style =
            ProgressStyle::with_template("{prefix:.bold}\n  [{bar:32.cyan/blue}] {pos:>3}%  {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        Bars {
            multi,
            style,
            bars: Vec::new(),
            scroll,
        }
    }

    /// A bar for the next job (its index is the count so far).
    fn add(&mut self, id: &str) {
        let pb = self.multi.add(ProgressBar::new(100));
        pb.set_style(self.style.clone());
        pb.set_prefix(id.to_string());
        pb.set_message("connecting");
        self.bars.push(pb);
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
        if self.scroll {
            let _ = self
                .multi
                .println(format!("{}\n  {}", pb.prefix(), outcome_text(f)));
            pb.finish_and_clear();
            self.multi.remove(pb);
            return;
        }
        if f.state() == Some(JobState::Succeeded) {
            pb.set_position(100);
        }
        pb.finish_with_message(outcome_text(f));
    }
}

/// What the job encodes, in a few characters.
pub(crate) fn label(job: &Job) -> String {
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
pub(crate) fn outcome_text(f: &Followed) -> String {
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
pub(crate) fn energy_source(source: &str, estimate: bool) -> String {
    match (estimate, source) {
        (false, s) => format!("{s}, measured"),
        (true, "estimate") => "estimate".to_string(),
        (true, s) => format!("{s}, partly estimated"),
    }
}

/// The summary table after a watch.
pub(crate) fn summary(followed: &[Followed]) -> Table {
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
pub(crate) fn exit_of(followed: &[Followed]) -> Exit {
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
