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
mod tests {
    use super::*;
    use crate::model::{JobResult, JobSpec};
    use proptest::prelude::*;

    const LEGAL: [(JobState, JobEvent, JobState); 17] = {
        use JobEvent as E;
        use JobState as S;
        [
            (S::Queued, E::Assign, S::Assigned),
            (S::Queued, E::Cancel, S::Cancelled),
            (S::Assigned, E::Start, S::Running),
            (S::Assigned, E::Lose, S::Lost),
            (S::Assigned, E::Cancel, S::Cancelled),
            (S::Assigned, E::Fail, S::Failed),
            (S::Running, E::Succeed, S::Succeeded),
            (S::Running, E::Fail, S::Failed),
            (S::Running, E::Cancel, S::Cancelled),
            (S::Running, E::Timeout, S::TimedOut),
            (S::Running, E::Lose, S::Lost),
            (S::Lost, E::Requeue, S::Queued),
            (S::Lost, E::Fail, S::Failed),
            (S::Failed, E::Retry, S::Queued),
            (S::Cancelled, E::Retry, S::Queued),
            (S::TimedOut, E::Retry, S::Queued),
            (S::Lost, E::Retry, S::Queued),
        ]
    };

    fn spec(max_retries: u32) -> JobSpec {
        JobSpec {
            max_retries,
            ..crate::test_util::test_spec()
        }
    }

    fn job(max_retries: u32) -> Job {
        Job::new("j1".into(), 1, spec(max_retries), 1_000)
    }

    fn transient(reason: FailureReason) -> Outcome {
        Outcome::Transient {
            failure: Failure::new(reason, "boom"),
        }
    }

    const P: RetryPolicy = RetryPolicy {
        base_ms: 1_000,
        max_ms: 60_000,
    };

    #[test]
    fn exactly_the_legal_edges_are_allowed() {
        for from in JobState::ALL {
            for event in JobEvent::ALL {
                let expected = LEGAL
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, t)| *t);
                assert_eq!(transition(from, event).ok(), expected, "{from:?} {event:?}");
            }
        }
    }

    #[test]
    fn success_completes_known_progress_but_failure_keeps_it() {
        let p = |pct| crate::model::Progress {
            frame: 57,
            out_time_s: 1.9,
            percent: pct,
            ..Default::default()
        };
        let run = |pct: Option<f64>, outcome: Outcome| {
            let mut j = job(3);
            assign(&mut j, &"n1".to_string(), 1, 2_000).expect("assign");
            start(&mut j, 1, crate::model::Isolation::None, 2_100).expect("start");
            progress(&mut j, 1, p(pct), 2_200).expect("progress");
            finish(&mut j, 1, outcome, None, 2_300, &P, 0.5).expect("finish");
            j.progress.and_then(|p| p.percent)
        };
        let ok = Outcome::Succeeded {
            result: JobResult::default(),
        };
        let failed = Outcome::Failed {
            failure: Failure::new(FailureReason::FfmpegError, "boom"),
        };
        assert_eq!(run(Some(95.0), ok.clone()), Some(100.0));
        assert_eq!(run(None, ok), None, "unknown length stays unknown");
        assert_eq!(run(Some(95.0), failed), Some(95.0));
    }

    #[test]
    fn happy_path_keeps_fields_consistent() {
        let mut j = job(3);
        let a = assign(&mut j, &"n1".to_string(), 7, 2_000).unwrap();
        assert_eq!((a.attempt, a.token, a.job_id.as_str()), (1, 7, "j1"));
        assert_eq!(j.state, JobState::Assigned);
        check_invariants(&j).unwrap();
        start(&mut j, 7, Isolation::CgroupV2, 2_100).unwrap();
        progress(&mut j, 7, Progress::default(), 2_200).unwrap();
        assert!(j.progress.is_some());
        let r = JobResult {
            frames: 30,
            ..JobResult::default()
        };
        let applied = finish(
            &mut j,
            7,
            Outcome::Succeeded { result: r.clone() },
            None,
            3_000,
            &P,
            0.5,
        )
        .unwrap();
        assert_eq!(applied, Applied::Terminal(JobState::Succeeded));
        assert_eq!(j.result, Some(r));
        assert_eq!(j.updated_ms, 3_000);
        let rec = &j.attempts[0];
        assert_eq!(rec.started_ms, Some(2_100));
        assert_eq!(rec.ended_ms, Some(3_000));
        assert_eq!(rec.isolation, Some(Isolation::CgroupV2));
        check_invariants(&j).unwrap();
    }

    #[test]
    fn a_result_whose_start_was_never_recorded_is_applied_not_dropped() {
        // The master could not store the attempt's `Started` (a full disk):
        // the job is still `Assigned` when the attempt's result arrives.
        for (outcome, state) in [
            (
                Outcome::Succeeded {
                    result: JobResult::default(),
                },
                JobState::Succeeded,
            ),
            (
                Outcome::TimedOut {
                    failure: Failure::new(FailureReason::Timeout, "too slow"),
                },
                JobState::TimedOut,
            ),
        ] {
            let mut j = job(3);
            assign(&mut j, &"n1".to_string(), 7, 2_000).unwrap();
            let applied = finish(&mut j, 7, outcome, None, 3_000, &P, 0.5).unwrap();
            assert_eq!(applied, Applied::Terminal(state));
            assert_eq!(j.state, state);
            let rec = &j.attempts[0];
            assert_eq!(rec.started_ms, None, "the start stays unknown");
            assert_eq!(rec.ended_ms, Some(3_000));
            check_invariants(&j).unwrap();
        }
    }

    #[test]
    fn stale_tokens_are_refused_without_change() {
        let mut j = job(3);
        assign(&mut j, &"n1".to_string(), 7, 2_000).unwrap();
        let before = j.clone();
        assert_eq!(
            start(&mut j, 6, Isolation::None, 2_100),
            Err(JobOpError::StaleToken { current: 7, got: 6 })
        );
        assert_eq!(
            progress(&mut j, 8, Progress::default(), 2_100),
            Err(JobOpError::StaleToken { current: 7, got: 8 })
        );
        assert!(matches!(
            finish(&mut j, 1, Outcome::Cancelled, None, 2_100, &P, 0.0),
            Err(JobOpError::StaleToken { .. })
        ));
        assert_eq!(j, before);
    }

    #[test]
    fn assignment_tokens_must_increase() {
        let mut j = job(3);
        assign(&mut j, &"n1".to_string(), 7, 2_000).unwrap();
        lose(
            &mut j,
            Failure::new(FailureReason::NodeLost, "gone"),
            2_500,
            &P,
            0.0,
        )
        .unwrap();
        let before = j.clone();
        assert_eq!(
            assign(&mut j, &"n2".to_string(), 7, 3_000),
            Err(JobOpError::StaleToken { current: 7, got: 7 })
        );
        assert_eq!(j, before);
        assign(&mut j, &"n2".to_string(), 8, 3_000).unwrap();
        assert_eq!((j.attempt, j.token), (2, 8));
    }

    #[test]
    fn transient_failures_requeue_with_backoff_then_exhaust() {
        let mut j = job(2); // three attempts
        for (n, token) in [(1u32, 10u64), (2, 11)] {
            assign(&mut j, &"n1".to_string(), token, 1_000).unwrap();
            start(&mut j, token, Isolation::None, 1_000).unwrap();
            let applied = finish(
                &mut j,
                token,
                transient(FailureReason::Stalled),
                None,
                5_000,
                &P,
                0.5,
            )
            .unwrap();
            let expected = 5_000 + P.delay_ms(n, 0.5);
            assert_eq!(
                applied,
                Applied::Requeued {
                    not_before_ms: expected
                }
            );
            assert_eq!(j.state, JobState::Queued);
            assert_eq!(j.not_before_ms, Some(expected));
            assert_eq!(j.node, None);
            check_invariants(&j).unwrap();
        }
        assign(&mut j, &"n1".to_string(), 12, 9_000).unwrap();
        let applied = lose(
            &mut j,
            Failure::new(FailureReason::NodeLost, "node n1 lost"),
            9_500,
            &P,
            0.5,
        )
        .unwrap();
        assert_eq!(applied, Applied::Terminal(JobState::Failed));
        let f = j.failure.as_ref().unwrap();
        assert_eq!(f.reason, FailureReason::RetriesExhausted);
        assert!(f.message.contains("node n1 lost"), "{}", f.message);
        assert_eq!(j.attempt, 3);
        assert!(j
            .attempts
            .iter()
            .all(|a| matches!(a.outcome, Some(Outcome::Transient { .. }))));
        check_invariants(&j).unwrap();
    }

    #[test]
    fn zero_retries_fails_on_first_transient() {
        let mut j = job(0);
        assign(&mut j, &"n1".to_string(), 1, 1_000).unwrap();
        let applied = finish(
            &mut j,
            1,
            transient(FailureReason::ResourceKilled),
            None,
            2_000,
            &P,
            0.1,
        )
        .unwrap();
        assert_eq!(applied, Applied::Terminal(JobState::Failed));
        check_invariants(&j).unwrap();
    }

    #[test]
    fn spawn_failure_from_assigned_is_terminal() {
        let mut j = job(3);
        assign(&mut j, &"n1".to_string(), 1, 1_000).unwrap();
        let f = Failure::new(FailureReason::SpawnFailed, "no ffmpeg");
        let applied = finish(
            &mut j,
            1,
            Outcome::Failed { failure: f.clone() },
            None,
            2_000,
            &P,
            0.1,
        )
        .unwrap();
        assert_eq!(applied, Applied::Terminal(JobState::Failed));
        assert_eq!(j.failure, Some(f));
        // A success without a recorded start is applied (the start's write
        // may have been refused): `a_result_whose_start_was_never_recorded_…`.
    }

    #[test]
    fn cancel_paths() {
        let mut q = job(3);
        assert_eq!(cancel(&mut q, 5), Ok(CancelAction::CancelledWhileQueued));
        assert_eq!(q.state, JobState::Cancelled);
        assert_eq!(
            q.failure.as_ref().map(|f| f.reason),
            Some(FailureReason::Cancelled)
        );
        check_invariants(&q).unwrap();
        assert!(matches!(cancel(&mut q, 6), Err(JobOpError::Illegal(_))));

        let mut r = job(3);
        assign(&mut r, &"n9".to_string(), 4, 1_000).unwrap();
        start(&mut r, 4, Isolation::CgroupV1, 1_000).unwrap();
        let before = r.clone();
        assert_eq!(
            cancel(&mut r, 2_000),
            Ok(CancelAction::NotifyWorker {
                node: "n9".into(),
                token: 4
            })
        );
        assert_eq!(r, before);
        finish(&mut r, 4, Outcome::Cancelled, None, 2_500, &P, 0.0).unwrap();
        assert_eq!(r.state, JobState::Cancelled);
        check_invariants(&r).unwrap();
    }

    #[test]
    fn duplicate_finish_is_refused() {
        let mut j = job(3);
        assign(&mut j, &"n1".to_string(), 1, 1_000).unwrap();
        start(&mut j, 1, Isolation::None, 1_000).unwrap();
        let out = Outcome::TimedOut {
            failure: Failure::new(FailureReason::Timeout, "too slow"),
        };
        finish(&mut j, 1, out.clone(), None, 2_000, &P, 0.0).unwrap();
        let before = j.clone();
        let err = finish(&mut j, 1, out, None, 2_001, &P, 0.0).unwrap_err();
        assert!(matches!(
            err,
            JobOpError::Illegal(IllegalTransition {
                from: JobState::TimedOut,
                ..
            })
        ));
        assert_eq!(
            progress(&mut j, 1, Progress::default(), 2_002),
            Err(JobOpError::NotActive {
                state: JobState::TimedOut
            })
        );
        assert_eq!(j, before);
    }

    #[test]
    fn assign_refuses_a_record_without_attempts_left() {
        let mut j = job(0);
        j.attempt = 1;
        j.token = 3;
        j.attempts.push(AttemptRecord {
            attempt: 1,
            node: "n".into(),
            started_ms: None,
            ended_ms: Some(1),
            isolation: None,
            outcome: Some(Outcome::Cancelled),
            energy: None,
        });
        let before = j.clone();
        assert_eq!(
            assign(&mut j, &"n".to_string(), 4, 10),
            Err(JobOpError::NoAttemptsLeft { attempt: 1, max: 1 })
        );
        assert_eq!(j, before);
    }

    /// A job that ran once and failed on its own (FFmpeg's fault), on n1
    /// under token 5, its attempt measured at `joules`.
    fn failed_once(max_retries: u32, joules: f64) -> Job {
        let mut j = job(max_retries);
        assign(&mut j, &"n1".to_string(), 5, 1_000).unwrap();
        start(&mut j, 5, Isolation::None, 1_100).unwrap();
        let mut f = Failure::new(FailureReason::FfmpegError, "exit 1");
        f.stderr_tail = vec!["bad.mp4: Invalid data found".into()];
        finish(
            &mut j,
            5,
            Outcome::Failed { failure: f },
            Some(joules_energy(joules)),
            2_000,
            &P,
            0.5,
        )
        .unwrap();
        j
    }

    fn joules_energy(joules: f64) -> Energy {
        Energy::new(
            vec![crate::model::DomainEnergy {
                domain: "cpu".into(),
                source: crate::model::PowerSource::Estimate,
                joules,
            }],
            1.0,
            None,
            None,
        )
    }

    #[test]
    fn retry_requeues_the_same_job_keeping_its_attempts() {
        let mut j = failed_once(3, 10.0);
        assert!(j.energy.is_some() && j.failure.is_some() && j.node.is_some());
        let history = j.attempts.clone();
        retry(&mut j, 77, 3_000).expect("a failed job may be retried");
        assert_eq!(j.state, JobState::Queued);
        assert_eq!(j.id, "j1");
        assert_eq!(j.attempts, history, "the history is kept as it was");
        assert_eq!((j.attempt, j.token), (1, 5), "attempt and token kept");
        assert_eq!(
            (&j.failure, &j.result, &j.energy, &j.node, j.not_before_ms),
            (&None, &None, &None, &None, None),
            "cleared; eligible at once"
        );
        assert_eq!(
            j.requeue,
            Some(Requeue {
                count: 1,
                at_ms: 3_000,
                after_attempt: 1,
                queue_seq: 77
            })
        );
        assert_eq!(j.queue_seq(), 77);
        assert_eq!(j.seq, 1, "the submission seq is unchanged");
        assert_eq!(j.updated_ms, 3_000);
        check_invariants(&j).unwrap();
        // The next assignment continues the numbering under a new token.
        let a = assign(&mut j, &"n2".to_string(), 6, 3_100).unwrap();
        assert_eq!((a.attempt, a.token), (2, 6));
        assert_eq!(j.attempts.len(), 2);
        assert_eq!(j.attempts[0], history[0]);
        check_invariants(&j).unwrap();
    }

    #[test]
    fn retry_is_refused_unless_the_job_ended_without_success() {
        let succeeded = {
            let mut j = job(3);
            assign(&mut j, &"n1".to_string(), 1, 1_000).unwrap();
            start(&mut j, 1, Isolation::None, 1_000).unwrap();
            let ok = Outcome::Succeeded {
                result: JobResult::default(),
            };
            finish(&mut j, 1, ok, None, 2_000, &P, 0.0).unwrap();
            j
        };
        let queued = job(3);
        let mut assigned = job(3);
        assign(&mut assigned, &"n1".to_string(), 1, 1_000).unwrap();
        let mut running = assigned.clone();
        start(&mut running, 1, Isolation::None, 1_000).unwrap();
        for mut j in [succeeded, queued, assigned, running] {
            let before = j.clone();
            let from = j.state;
            assert_eq!(
                retry(&mut j, 9, 5_000),
                Err(JobOpError::Illegal(IllegalTransition {
                    from,
                    event: JobEvent::Retry
                }))
            );
            assert_eq!(j, before, "a refused retry changes nothing");
        }
        // Cancelled and timed out may be retried, like failed.
        let mut c = job(3);
        cancel(&mut c, 1_000).unwrap();
        retry(&mut c, 9, 2_000).unwrap();
        assert_eq!(c.state, JobState::Queued);
        check_invariants(&c).unwrap();
        let mut t = job(3);
        assign(&mut t, &"n1".to_string(), 1, 1_000).unwrap();
        start(&mut t, 1, Isolation::None, 1_000).unwrap();
        let out = Outcome::TimedOut {
            failure: Failure::new(FailureReason::Timeout, "slow"),
        };
        finish(&mut t, 1, out, None, 2_000, &P, 0.0).unwrap();
        retry(&mut t, 9, 3_000).unwrap();
        check_invariants(&t).unwrap();
        // A second retry of the now queued job is refused.
        let before = t.clone();
        assert!(matches!(
            retry(&mut t, 10, 3_001),
            Err(JobOpError::Illegal(_))
        ));
        assert_eq!(t, before);
    }

    #[test]
    fn a_late_result_of_an_attempt_before_the_retry_is_refused() {
        let mut j = failed_once(3, 1.0);
        retry(&mut j, 9, 3_000).unwrap();
        let queued = j.clone();
        // Before re-assignment the old token is the job's, but it is queued.
        let ok = Outcome::Succeeded {
            result: JobResult::default(),
        };
        assert!(matches!(
            finish(&mut j, 5, ok.clone(), None, 3_100, &P, 0.0),
            Err(JobOpError::Illegal(_))
        ));
        assert!(matches!(
            start(&mut j, 5, Isolation::None, 3_100),
            Err(JobOpError::Illegal(_))
        ));
        assert_eq!(
            progress(&mut j, 5, Progress::default(), 3_100),
            Err(JobOpError::NotActive {
                state: JobState::Queued
            })
        );
        assert_eq!(j, queued);
        // Once re-assigned, the old token is stale.
        assign(&mut j, &"n1".to_string(), 8, 3_200).unwrap();
        let assigned = j.clone();
        assert_eq!(
            finish(&mut j, 5, ok, None, 3_300, &P, 0.0),
            Err(JobOpError::StaleToken { current: 8, got: 5 })
        );
        assert_eq!(j, assigned);
    }

    #[test]
    fn a_retry_gives_a_fresh_budget_and_backoff_counts_from_it() {
        // No retries: one transient failure ends the job...
        let mut j = job(0);
        assign(&mut j, &"n1".to_string(), 1, 1_000).unwrap();
        let applied = lose(
            &mut j,
            Failure::new(FailureReason::NodeLost, "x"),
            2_000,
            &P,
            0.5,
        );
        assert_eq!(applied, Ok(Applied::Terminal(JobState::Failed)));
        assert_eq!(
            j.failure.as_ref().map(|f| f.reason),
            Some(FailureReason::RetriesExhausted)
        );
        // ...and after a retry it gets one attempt again.
        retry(&mut j, 9, 3_000).unwrap();
        assert_eq!(j.max_attempts(), 2);
        assign(&mut j, &"n1".to_string(), 2, 3_100).unwrap();
        check_invariants(&j).unwrap();
        // With one retry: the first transient failure after the manual
        // retry is the 1st retry's backoff, not the 2nd's.
        let mut k = job(1);
        assign(&mut k, &"n1".to_string(), 1, 1_000).unwrap();
        lose(
            &mut k,
            Failure::new(FailureReason::NodeLost, "x"),
            1_500,
            &P,
            0.5,
        )
        .unwrap();
        assign(&mut k, &"n1".to_string(), 2, 2_000).unwrap();
        lose(
            &mut k,
            Failure::new(FailureReason::NodeLost, "x"),
            2_500,
            &P,
            0.5,
        )
        .unwrap();
        assert_eq!(k.state, JobState::Failed);
        retry(&mut k, 9, 3_000).unwrap();
        assign(&mut k, &"n1".to_string(), 3, 3_100).unwrap();
        let applied = lose(
            &mut k,
            Failure::new(FailureReason::NodeLost, "x"),
            4_000,
            &P,
            0.5,
        );
        assert_eq!(
            applied,
            Ok(Applied::Requeued {
                not_before_ms: 4_000 + P.delay_ms(1, 0.5)
            })
        );
        check_invariants(&k).unwrap();
        assign(&mut k, &"n1".to_string(), 4, 9_000_000).unwrap();
        let applied = lose(
            &mut k,
            Failure::new(FailureReason::NodeLost, "x"),
            9_000_100,
            &P,
            0.5,
        );
        assert_eq!(applied, Ok(Applied::Terminal(JobState::Failed)));
        assert_eq!((k.attempt, k.attempts.len()), (4, 4));
        check_invariants(&k).unwrap();
    }

    #[test]
    fn a_retried_jobs_energy_counts_each_attempt_once() {
        let mut j = failed_once(3, 10.0);
        assert_eq!(j.energy.as_ref().map(|e| e.energy_joules), Some(10.0));
        retry(&mut j, 9, 3_000).unwrap();
        assert_eq!(j.energy, None, "the old total goes with the old ending");
        assign(&mut j, &"n1".to_string(), 6, 3_100).unwrap();
        start(&mut j, 6, Isolation::None, 3_200).unwrap();
        let ok = Outcome::Succeeded {
            result: JobResult {
                frames: 30,
                ..JobResult::default()
            },
        };
        finish(&mut j, 6, ok, Some(joules_energy(4.0)), 4_000, &P, 0.0).unwrap();
        let e = j.energy.as_ref().expect("energy");
        assert_eq!(e.energy_joules, 14.0, "10 J + 4 J, each attempt once");
        assert_eq!(e.measured_s, 2.0);
        // The efficiency report takes the succeeding attempt only.
        let r = crate::report::efficiency([&j]);
        assert_eq!(r.jobs_considered, 1);
    }

    #[test]
    fn a_lost_record_left_by_a_crash_may_be_retried() {
        let mut j = job(3);
        assign(&mut j, &"n1".to_string(), 1, 1_000).unwrap();
        // What an older version could leave on disk: lost, attempt open.
        j.state = JobState::Lost;
        retry(&mut j, 9, 2_000).unwrap();
        assert_eq!(j.state, JobState::Queued);
        assert!(matches!(
            j.attempts[0].outcome,
            Some(Outcome::Transient { .. })
        ));
        assert_eq!(j.attempts[0].ended_ms, Some(2_000));
        check_invariants(&j).unwrap();
    }

    fn event_strategy() -> impl Strategy<Value = JobEvent> {
        proptest::sample::select(JobEvent::ALL.to_vec())
    }

    /// An operation a master might apply, possibly with a wrong token.
    #[derive(Debug, Clone)]
    enum Op {
        Assign { node: u8, stale: bool },
        Start { stale: bool },
        Progress { stale: bool },
        Succeed { stale: bool },
        Fail { stale: bool },
        TimedOut { stale: bool },
        Cancelled { stale: bool },
        Transient { stale: bool },
        Lose,
        Cancel,
        Retry,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let s = any::<bool>;
        prop_oneof![
            3 => (0u8..3, s()).prop_map(|(node, stale)| Op::Assign { node, stale }),
            3 => s().prop_map(|stale| Op::Start { stale }),
            1 => s().prop_map(|stale| Op::Progress { stale }),
            1 => s().prop_map(|stale| Op::Succeed { stale }),
            1 => s().prop_map(|stale| Op::Fail { stale }),
            1 => s().prop_map(|stale| Op::TimedOut { stale }),
            1 => s().prop_map(|stale| Op::Cancelled { stale }),
            3 => s().prop_map(|stale| Op::Transient { stale }),
            2 => Just(Op::Lose),
            1 => Just(Op::Cancel),
            2 => Just(Op::Retry),
        ]
    }

    proptest! {
        #[test]
        fn random_events_stay_in_the_legal_graph(
            events in proptest::collection::vec(event_strategy(), 0..40)
        ) {
            let mut state = JobState::Queued;
            for e in events {
                match transition(state, e) {
                    Ok(to) => {
                        prop_assert!(!state.is_terminal() || e == JobEvent::Retry);
                        prop_assert!(LEGAL.contains(&(state, e, to)));
                        state = to;
                    }
                    Err(err) => {
                        prop_assert_eq!(err, IllegalTransition { from: state, event: e });
                        prop_assert!(!LEGAL.iter().any(|(f, ev, _)| *f == state && *ev == e));
                    }
                }
            }
        }

        #[test]
        fn terminal_states_accept_only_a_retry_and_succeeded_nothing(
            from in proptest::sample::select(JobState::ALL.to_vec()),
            e in event_strategy(),
        ) {
            if from.is_terminal() {
                let retryable = e == JobEvent::Retry && from != JobState::Succeeded;
                prop_assert_eq!(transition(from, e).is_ok(), retryable);
                if retryable {
                    prop_assert_eq!(transition(from, e), Ok(JobState::Queued));
                }
            }
        }

        #[test]
        fn random_operations_keep_invariants(
            max_retries in 0u32..4,
            ops in proptest::collection::vec((op_strategy(), 0.0f64..1.0), 0..60),
        ) {
            let mut j = job(max_retries);
            let mut next_token = 1u64;
            let mut next_queue_seq = 100u64;
            let mut now = 1_000u64;
            let mut was_terminal = None;
            for (op, jitter) in ops {
                now += 10;
                let before = j.clone();
                let tok = |stale: bool| if stale { before.token.wrapping_add(1) } else { before.token };
                let f = |r| Failure::new(r, "x");
                let res: Result<(), JobOpError> = match op {
                    Op::Assign { node, stale } => {
                        let t = if stale { before.token } else { next_token };
                        let r = assign(&mut j, &format!("n{node}"), t, now);
                        if let Ok(a) = &r {
                            prop_assert_eq!(a.token, t);
                            prop_assert_eq!(a.attempt, j.attempt);
                            next_token += 1;
                        }
                        r.map(|_| ())
                    }
                    Op::Start { stale } => start(&mut j, tok(stale), Isolation::None, now),
                    Op::Progress { stale } => progress(&mut j, tok(stale), Progress::default(), now),
                    Op::Succeed { stale } => finish(&mut j, tok(stale), Outcome::Succeeded { result: JobResult::default() }, None, now, &P, jitter).map(|_| ()),
                    Op::Fail { stale } => finish(&mut j, tok(stale), Outcome::Failed { failure: f(FailureReason::FfmpegError) }, None, now, &P, jitter).map(|_| ()),
                    Op::TimedOut { stale } => finish(&mut j, tok(stale), Outcome::TimedOut { failure: f(FailureReason::Timeout) }, None, now, &P, jitter).map(|_| ()),
                    Op::Cancelled { stale } => finish(&mut j, tok(stale), Outcome::Cancelled, None, now, &P, jitter).map(|_| ()),
                    Op::Transient { stale } => finish(&mut j, tok(stale), transient(FailureReason::WorkerCrash), None, now, &P, jitter).map(|_| ()),
                    Op::Lose => lose(&mut j, f(FailureReason::NodeLost), now, &P, jitter).map(|_| ()),
                    Op::Cancel => cancel(&mut j, now).map(|_| ()),
                    Op::Retry => {
                        next_queue_seq += 1;
                        retry(&mut j, next_queue_seq, now)
                    }
                };
                let retried = matches!(op, Op::Retry) && res.is_ok();
                match res {
                    Ok(()) if retried => {
                        // Only a job that ended without success; the same
                        // job with its history, queued and eligible now.
                        prop_assert!(matches!(
                            before.state,
                            JobState::Failed | JobState::Cancelled | JobState::TimedOut
                        ));
                        prop_assert_eq!(j.state, JobState::Queued);
                        prop_assert_eq!(&j.attempts, &before.attempts);
                        prop_assert_eq!((j.attempt, j.token), (before.attempt, before.token));
                        prop_assert_eq!(j.not_before_ms, None);
                        prop_assert_eq!(j.max_attempts(), j.attempt + max_retries + 1);
                        was_terminal = None;
                    }
                    Ok(()) => {
                        if let Some(t) = was_terminal {
                            prop_assert!(false, "terminal job {:?} changed by {:?}", t, op);
                        }
                        prop_assert!(j.token >= before.token);
                        if let Some(nb) = j.not_before_ms {
                            prop_assert!(nb >= now && nb <= now + P.max_ms);
                        }
                    }
                    Err(_) => prop_assert_eq!(&j, &before, "a refused op changed the job"),
                }
                if let Err(m) = check_invariants(&j) {
                    prop_assert!(false, "{} after {:?}", m, op);
                }
                if j.state.is_terminal() {
                    was_terminal = Some(j.state);
                }
            }
        }
    }
}
