//! What a watch shows: the JSON lines for scripts, the progress bars for
//! people, and the outcome table and exit code once every job ended.

use ffrtmp_runtime::model::{Job, JobState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::client::Exit;
use crate::output::{self, Table};

use super::*;

/// One watch line: the state and progress of one event.
pub(super) fn event_line(kind: &str, job: &Job) -> Value {
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
pub(super) fn end_line(f: &Followed) -> Value {
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
pub(super) struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: Vec<ProgressBar>,
    /// A job that ends prints its last lines above the live bars and drops
    /// its bar, instead of keeping it.
    scroll: bool,
}

impl Bars {
    pub(super) fn new(visible: bool, scroll: bool) -> Bars {
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
    pub(super) fn add(&mut self, id: &str) {
        let pb = self.multi.add(ProgressBar::new(100));
        pb.set_style(self.style.clone());
        pb.set_prefix(id.to_string());
        pb.set_message("connecting");
        self.bars.push(pb);
    }

    pub(super) fn update(&self, idx: usize, job: &Job) {
        let pb = &self.bars[idx];
        pb.set_prefix(format!("{} {}", job.id, label(job)));
        let pct = job.progress.as_ref().and_then(|p| p.percent).unwrap_or(0.0);
        pb.set_position(pct.clamp(0.0, 100.0) as u64);
        pb.set_message(progress_text(job));
    }

    pub(super) fn finish(&self, idx: usize, f: &Followed) {
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
pub(super) fn progress_text(job: &Job) -> String {
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
