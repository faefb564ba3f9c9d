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
