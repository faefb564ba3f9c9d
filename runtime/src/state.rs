//! The job state machine: one validated transition function,
//! [`transition`], and the pure operations on a [`Job`] built on it.
//!
//! Every operation here either applies completely or returns an error and
//! leaves the job untouched; none reads a clock (`now` is a parameter) or a
//! random source (`jitter_unit` is a parameter).
//!
//! ```text
//! Queued ──Assign──▶ Assigned ──Start──▶ Running ──Succeed──▶ Succeeded
//!   │                  │ │ │                │ ├──Fail─────▶ Failed
//!   │                  │ │ └──Fail──▶ Failed│ ├──Timeout──▶ TimedOut
//!   │                  │ └──Cancel─▶ Cancelled ◀─Cancel─┤
//!   └──Cancel─▶ Cancelled  └──Lose──▶ Lost ◀──Lose─────┘
//!                                      ├──Requeue──▶ Queued  (attempts left)
//!                                      └──Fail─────▶ Failed  (none left)
//!
//! Failed | Cancelled | TimedOut | Lost ──Retry──▶ Queued   (a user's retry)
//! ```
//!
//! **Retry.** [`retry`] re-queues a job that ended without success (a user's
//! `POST /v1/jobs/{id}/retry`): the same job, its attempt history kept
//! (attempt numbers continue), a fresh `max_retries` budget counted from the
//! retry ([`Job::max_attempts`]), its `failure`/`energy` cleared.
//! `Succeeded` accepts nothing, so a retry never runs a succeeded job again.
//! The token is kept: a late message about an earlier attempt still carries
//! a token the job knows, but the job is `queued`, so [`start`], [`progress`]
//! and [`finish`] refuse it ([`JobOpError::Illegal`] or
//! [`JobOpError::NotActive`]); once re-assigned it is
//! [`JobOpError::StaleToken`].
//!
//! **Fencing.** Every worker message carries the token of its assignment.
//! [`start`], [`progress`] and [`finish`] check it first: a mismatch is
//! [`JobOpError::StaleToken`]. Any error on a worker message means the master
//! does not recognise that attempt as live: log it and tell the worker to
//! kill `(job, token)` (a kill for an attempt that already ended is a no-op on
//! the worker). A duplicate `Finished` (e.g. redelivered from a worker's
//! outbox) for a job that already ended is [`JobOpError::Illegal`] with a
//! terminal (or requeued) `from`.

use crate::model::{
    AttemptRecord, Energy, Failure, FailureReason, Isolation, Job, JobState, NodeId, Outcome,
    Progress, Requeue, UnixMs,
};
use crate::retry::RetryPolicy;
use crate::wire::Assignment;

/// What can happen to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEvent {
    /// The scheduler placed it on a node.
    Assign,
    /// The worker started FFmpeg.
    Start,
    /// FFmpeg exited 0.
    Succeed,
    /// A terminal failure (FFmpeg's own, a failed spawn, or no attempts left).
    Fail,
    /// A user cancelled it.
    Cancel,
    /// `timeout_s` expired.
    Timeout,
    /// Its attempt was lost (node lost, worker crash, resource kill, stall).
    Lose,
    /// A lost job with attempts left goes back to the queue.
    Requeue,
    /// A user re-queues a job that ended without success.
    Retry,
}

impl JobEvent {
    /// Every event, for exhaustive tests.
    pub const ALL: [JobEvent; 9] = [
        JobEvent::Assign,
        JobEvent::Start,
        JobEvent::Succeed,
        JobEvent::Fail,
        JobEvent::Cancel,
        JobEvent::Timeout,
        JobEvent::Lose,
        JobEvent::Requeue,
        JobEvent::Retry,
    ];
}

/// An event that the state machine does not allow in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event:?} in state {}", .from.as_str())]
pub struct IllegalTransition {
    /// The state the job was in.
    pub from: JobState,
    /// The rejected event.
    pub event: JobEvent,
}

/// The one validated transition function: the state `event` leads to from
/// `from`, or an error if the lifecycle does not allow it. Terminal states
/// accept nothing but a user's [`JobEvent::Retry`], and `Succeeded` not even
/// that.
pub fn transition(from: JobState, event: JobEvent) -> Result<JobState, IllegalTransition> {
    use JobEvent as E;
    use JobState as S;
    let to = match (from, event) {
        (S::Queued, E::Assign) => S::Assigned,
        (S::Queued, E::Cancel) => S::Cancelled,
        (S::Assigned, E::Start) => S::Running,
        (S::Assigned, E::Lose) => S::Lost,
        (S::Assigned, E::Cancel) => S::Cancelled,
        (S::Assigned, E::Fail) => S::Failed,
        (S::Running, E::Succeed) => S::Succeeded,
        (S::Running, E::Fail) => S::Failed,
        (S::Running, E::Cancel) => S::Cancelled,
        (S::Running, E::Timeout) => S::TimedOut,
        (S::Running, E::Lose) => S::Lost,
        (S::Lost, E::Requeue) => S::Queued,
        (S::Lost, E::Fail) => S::Failed,
        (S::Failed | S::Cancelled | S::TimedOut | S::Lost, E::Retry) => S::Queued,
        _ => return Err(IllegalTransition { from, event }),
    };
    Ok(to)
}

/// Why an operation on a job was refused. The job is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobOpError {
    /// The lifecycle does not allow it in the job's state.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// A worker message carried a token other than the current assignment's,
    /// or an assignment offered a token not above the current one.
    #[error("stale fencing token {got} (current {current})")]
    StaleToken {
        /// The job's current token.
        current: u64,
        /// The token offered.
        got: u64,
    },
    /// An assignment would exceed the job's `max_attempts()`. Unreachable
    /// through these operations (a job is only requeued with attempts left);
    /// guards records edited by hand or by an older version.
    #[error("attempt {attempt} already used all {max} attempts")]
    NoAttemptsLeft {
        /// Attempts made so far.
        attempt: u32,
        /// The job's `max_attempts()`.
        max: u32,
    },
    /// Progress for a job that is neither assigned nor running.
    #[error("progress is only accepted while assigned or running, not {}", .state.as_str())]
    NotActive {
        /// The job's state.
        state: JobState,
    },
}

/// What [`finish`] or [`lose`] did to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The job ended in this terminal state.
    Terminal(JobState),
    /// The attempt was lost and the job is queued again, eligible from
    /// `not_before_ms` on.
    Requeued {
        /// When the retry may be assigned (also stored in `job.not_before_ms`).
        not_before_ms: UnixMs,
    },
}

/// What [`cancel`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelAction {
    /// The job was queued and is now `Cancelled`.
    CancelledWhileQueued,
    /// The job is on a worker: tell it to cancel `(job, token)`. The job stays
    /// as it is until the worker reports `Outcome::Cancelled` (or anything
    /// else that raced with the cancel) through [`finish`].
    NotifyWorker {
        /// The node running the attempt.
        node: NodeId,
        /// The attempt's fencing token.
        token: u64,
    },
}

fn check_token(job: &Job, token: u64) -> Result<(), JobOpError> {
    if token != job.token {
        return Err(JobOpError::StaleToken {
            current: job.token,
            got: token,
        });
    }
    Ok(())
}

/// The record of the attempt in flight (the last one).
fn current_attempt(job: &mut Job) -> Option<&mut AttemptRecord> {
    job.attempts.last_mut()
}

fn close_attempt(job: &mut Job, now: UnixMs, outcome: Outcome, energy: Option<Energy>) {
    if let Some(rec) = current_attempt(job) {
        rec.ended_ms = Some(now);
        rec.outcome = Some(outcome);
        rec.energy = energy;
    }
}

/// A job that just ended: its energy is the sum over its measured
/// attempts, per frame and per output minute of what it finally produced.
fn settle_energy(job: &mut Job) {
    let frames = job.result.as_ref().map(|r| r.frames);
    let output_s = job.result.as_ref().and_then(|r| r.output_duration_s);
    job.energy = Energy::total(
        job.attempts.iter().filter_map(|a| a.energy.as_ref()),
        frames,
        output_s,
    );
}

/// Assign a queued job to `node` under a fresh fencing `token` (which must be
/// above the job's current token): `attempt += 1`, a new [`AttemptRecord`],
/// and the [`Assignment`] to send once the job is stored.
///
/// Does not check `not_before_ms`: eligibility is the scheduler's decision
/// ([`crate::sched::ReadyQueue::pick`]).
pub fn assign(
    job: &mut Job,
    node: &NodeId,
    token: u64,
    now: UnixMs,
) -> Result<Assignment, JobOpError> {
    let to = transition(job.state, JobEvent::Assign)?;
    if token <= job.token {
        return Err(JobOpError::StaleToken {
            current: job.token,
            got: token,
        });
    }
    if job.attempt >= job.max_attempts() {
        return Err(JobOpError::NoAttemptsLeft {
            attempt: job.attempt,
            max: job.max_attempts(),
        });
    }
    job.state = to;
    job.attempt += 1;
    job.token = token;
    job.node = Some(node.clone());
    job.not_before_ms = None;
    job.isolation = None;
    job.progress = None;
    job.result = None;
    job.failure = None;
    job.updated_ms = now;
    job.attempts.push(AttemptRecord {
        attempt: job.attempt,
        node: node.clone(),
        started_ms: None,
        ended_ms: None,
        isolation: None,
        outcome: None,
        energy: None,
    });
    Ok(Assignment {
        job_id: job.id.clone(),
        attempt: job.attempt,
        token,
        spec: job.spec.clone(),
    })
}

/// The worker started FFmpeg for the current assignment: `Assigned → Running`,
/// recording how the process is isolated.
pub fn start(
    job: &mut Job,
    token: u64,
    isolation: Isolation,
    now: UnixMs,
) -> Result<(), JobOpError> {
    check_token(job, token)?;
    let to = transition(job.state, JobEvent::Start)?;
    job.state = to;
    job.isolation = Some(isolation);
    job.updated_ms = now;
    if let Some(rec) = current_attempt(job) {
        rec.started_ms = Some(now);
        rec.isolation = Some(isolation);
    }
    Ok(())
}

/// Live progress for the current assignment; accepted while `Assigned` or
/// `Running` (no state change).
pub fn progress(job: &mut Job, token: u64, p: Progress, now: UnixMs) -> Result<(), JobOpError> {
    check_token(job, token)?;
    if !matches!(job.state, JobState::Assigned | JobState::Running) {
        return Err(JobOpError::NotActive { state: job.state });
    }
    job.progress = Some(p);
    job.updated_ms = now;
    Ok(())
}

/// Apply a worker-reported [`Outcome`] (and the attempt's measured
/// [`Energy`], if any) for the current assignment.
///
/// `Succeeded`, `Failed`, `TimedOut` and `Cancelled` end the job (setting
/// `result`, or `failure`; a cancel records a `Cancelled` failure).
/// `Transient` goes `Lost → Queued` with a backoff from `policy` while
/// attempts remain, else `Lost → Failed` with reason `RetriesExhausted`.
pub fn finish(
    job: &mut Job,
    token: u64,
    outcome: Outcome,
    energy: Option<Energy>,
    now: UnixMs,
    policy: &RetryPolicy,
    jitter_unit: f64,
) -> Result<Applied, JobOpError> {
    check_token(job, token)?;
    let (event, result, failure) = match &outcome {
        Outcome::Transient { failure } => {
            return lose_attempt(job, failure.clone(), energy, now, policy, jitter_unit)
        }
        Outcome::Succeeded { result } => (JobEvent::Succeed, Some(result.clone()), None),
        Outcome::Failed { failure } => (JobEvent::Fail, None, Some(failure.clone())),
        Outcome::TimedOut { failure } => (JobEvent::Timeout, None, Some(failure.clone())),
        Outcome::Cancelled => (
            JobEvent::Cancel,
            None,
            Some(Failure::new(FailureReason::Cancelled, "cancelled by user")),
        ),
    };
    // The attempt ran even where its `Started` was never recorded (the
    // master could not store it: its disk was full): a success or a timeout
    // of the current attempt from `Assigned` is applied as if it had started
    // (its start time and isolation stay unknown), never dropped.
    let from = match (job.state, event) {
        (JobState::Assigned, JobEvent::Succeed | JobEvent::Timeout) => JobState::Running,
        (s, _) => s,
    };
    let to = transition(from, event)?;
    close_attempt(job, now, outcome, energy);
    if to == JobState::Succeeded {
        // The last progress block reports the last frame's timestamp, one
        // frame short of the end; a job that succeeded is all done.
        if let Some(p) = job.progress.as_mut() {
            if p.percent.is_some() {
                p.percent = Some(100.0);
            }
        }
    }
    job.state = to;
    job.result = result;
    job.failure = failure;
    job.not_before_ms = None;
    job.updated_ms = now;
    settle_energy(job);
    Ok(Applied::Terminal(to))
}

/// The attempt in flight was lost without a report (node lost, worker
/// restarted, reconciliation gave up): `Assigned|Running → Lost`, then
/// requeue or fail under the same rules as a transient [`finish`].
pub fn lose(
    job: &mut Job,
    failure: Failure,
    now: UnixMs,
    policy: &RetryPolicy,
    jitter_unit: f64,
) -> Result<Applied, JobOpError> {
    lose_attempt(job, failure, None, now, policy, jitter_unit)
}

fn lose_attempt(
    job: &mut Job,
    failure: Failure,
    energy: Option<Energy>,
    now: UnixMs,
    policy: &RetryPolicy,
    jitter_unit: f64,
) -> Result<Applied, JobOpError> {
    let lost = transition(job.state, JobEvent::Lose)?;
    let retry = job.attempt < job.max_attempts();
    let next = transition(
        lost,
        if retry {
            JobEvent::Requeue
        } else {
            JobEvent::Fail
        },
    )?;
    close_attempt(
        job,
        now,
        Outcome::Transient {
            failure: failure.clone(),
        },
        energy,
    );
    job.state = next;
    job.updated_ms = now;
    job.progress = None;
    job.result = None;
    if retry {
        // The n-th attempt (since the last manual retry) failed, so this is
        // the n-th retry.
        let nth = job.attempt.saturating_sub(job.attempt_base());
        let not_before_ms = now.saturating_add(policy.delay_ms(nth, jitter_unit));
        job.node = None;
        job.isolation = None;
        job.failure = None;
        job.not_before_ms = Some(not_before_ms);
        Ok(Applied::Requeued { not_before_ms })
    } else {
        job.not_before_ms = None;
        job.failure = Some(Failure {
            reason: FailureReason::RetriesExhausted,
            message: format!(
                "no attempts left after {} of {}; last failure ({:?}): {}",
                job.attempt,
                job.max_attempts(),
                failure.reason,
                failure.message
            ),
            exit_code: failure.exit_code,
            signal: failure.signal,
            stderr_tail: failure.stderr_tail,
        });
        settle_energy(job);
        Ok(Applied::Terminal(next))
    }
}

/// A user cancels the job: `Queued → Cancelled` at once; for a job on a
/// worker, [`CancelAction::NotifyWorker`] and no change yet. Terminal (or
/// `Lost`) jobs: [`JobOpError::Illegal`].
pub fn cancel(job: &mut Job, now: UnixMs) -> Result<CancelAction, JobOpError> {
    let to = transition(job.state, JobEvent::Cancel)?;
    match job.state {
        JobState::Queued => {
            job.state = to;
            job.not_before_ms = None;
            job.failure = Some(Failure::new(
                FailureReason::Cancelled,
                "cancelled while queued",
            ));
            job.updated_ms = now;
            settle_energy(job);
            Ok(CancelAction::CancelledWhileQueued)
        }
        _ => {
            let node = job
                .node
                .clone()
                .or_else(|| job.attempts.last().map(|a| a.node.clone()))
                .unwrap_or_default();
            Ok(CancelAction::NotifyWorker {
                node,
                token: job.token,
            })
        }
    }
}

/// A user re-queues a job that ended without success (`failed`, `cancelled`,
/// `timed_out`, or a `lost` record left by a crash): `→ Queued`, the same job
/// under the same id. Its attempts stay as they are (numbers continue), a
/// fresh `max_retries` budget counts from here (`requeue.after_attempt`),
/// `failure`, `result`, `energy`, `progress`, `node` and `isolation` are
/// cleared, and it is eligible at once (no backoff) at queue place
/// `queue_seq` (a fresh number from the submission counter, so it queues
/// behind the jobs already waiting, as a new arrival). The fencing token is
/// kept (see the module docs). Anything else, `succeeded` included, is
/// [`JobOpError::Illegal`] and leaves the job untouched.
pub fn retry(job: &mut Job, queue_seq: u64, now: UnixMs) -> Result<(), JobOpError> {
    let to = transition(job.state, JobEvent::Retry)?;
    if let Some(rec) = job.attempts.last_mut().filter(|a| a.outcome.is_none()) {
        // Only a `lost` record left by a crash can still have one open.
        rec.ended_ms = Some(now);
        rec.outcome = Some(Outcome::Transient {
            failure: Failure::new(
                FailureReason::WorkerCrash,
                "interrupted while being requeued; closed by a retry",
            ),
        });
    }
    let count = job
        .requeue
        .as_ref()
        .map_or(0, |r| r.count)
        .saturating_add(1);
    job.requeue = Some(Requeue {
        count,
        at_ms: now,
        after_attempt: job.attempt,
        queue_seq,
    });
    job.state = to;
    job.node = None;
    job.isolation = None;
    job.progress = None;
    job.result = None;
    job.failure = None;
    job.energy = None;
    job.not_before_ms = None;
    job.updated_ms = now;
    Ok(())
}

/// Check the consistency rules that every operation here keeps, returning the
/// first one broken. Useful on records read back from disk and in tests.
pub fn check_invariants(job: &Job) -> Result<(), String> {
    let fail = |m: &str| Err(format!("job {}: {m}", job.id));
    if job.attempts.len() != job.attempt as usize {
        return fail("attempts.len() != attempt");
    }
    if job.attempt > job.max_attempts() {
        return fail("attempt > max_attempts");
    }
    if let Some(r) = &job.requeue {
        if r.count == 0 || r.after_attempt > job.attempt {
            return fail("a requeue record counts at least one retry, after attempts made");
        }
    }
    if job
        .attempts
        .iter()
        .enumerate()
        .any(|(i, a)| a.attempt as usize != i + 1)
    {
        return fail("attempt records are not numbered 1..=attempt");
    }
    if (job.token == 0) != (job.attempt == 0) {
        return fail("token is 0 exactly when never assigned");
    }
    let open = job.attempts.iter().filter(|a| a.outcome.is_none()).count();
    let active = matches!(job.state, JobState::Assigned | JobState::Running);
    if active {
        if open != 1 || job.attempts.last().is_none_or(|a| a.outcome.is_some()) {
            return fail("an active job has exactly its last attempt open");
        }
        if job.node.is_none() {
            return fail("an active job has a node");
        }
    } else if open != 0 {
        return fail("an inactive job has an open attempt");
    }
    if job.state == JobState::Running && job.isolation.is_none() {
        return fail("a running job records its isolation");
    }
    match job.state {
        JobState::Succeeded => {
            if job.result.is_none() || job.failure.is_some() {
                return fail("succeeded has a result and no failure");
            }
        }
        JobState::Failed | JobState::Cancelled | JobState::TimedOut => {
            if job.failure.is_none() || job.result.is_some() {
                return fail("a failed/cancelled/timed-out job has a failure and no result");
            }
        }
        JobState::Queued | JobState::Assigned | JobState::Running | JobState::Lost => {
            if job.result.is_some() || job.failure.is_some() {
                return fail("an unfinished job has neither result nor failure");
            }
        }
    }
    if job.state == JobState::Queued {
        if job.node.is_some() {
            return fail("a queued job has no node");
        }
        if (job.attempt > job.attempt_base()) != job.not_before_ms.is_some() {
            return fail(
                "a job requeued after a transient failure (and only that) has a not_before",
            );
        }
    }
    if job.state == JobState::Lost {
        return fail("Lost is never a resting state");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
