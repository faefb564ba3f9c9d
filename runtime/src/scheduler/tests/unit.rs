//! Deterministic tests of single rules.

use super::*;

fn assigned(w: &World, node: &str) -> Vec<(String, u64)> {
    w.workers
        .get(node)
        .map(|w| w.running.iter().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn an_assignment_waits_for_its_write_to_be_durable() {
    let mut w = World::new(1);
    w.node_up("n1", 1, false);
    let id = w.submit().expect("submitted");
    assert_eq!(
        w.core.store().get(&id).unwrap().unwrap().state,
        JobState::Assigned
    );
    assert!(
        assigned(&w, "n1").is_empty(),
        "assignment sent before durable"
    );
    // A flush that does not reach the mark releases nothing.
    let mark = w.waiter.expect("a waiter runs");
    w.core.store_mut().make_durable(mark - 1);
    w.report();
    assert!(assigned(&w, "n1").is_empty());
    w.flush_all();
    assert_eq!(assigned(&w, "n1").len(), 1);
    w.check();
}

#[test]
fn a_result_is_acknowledged_only_once_durable() {
    let mut w = World::new(2);
    w.node_up("n1", 1, false);
    let id = w.submit().unwrap();
    w.flush_all();
    w.work("n1", 0, 0);
    w.flush_all();
    w.work("n1", 0, 2);
    assert_eq!(
        w.core.store().get(&id).unwrap().unwrap().state,
        JobState::Succeeded
    );
    let acks = |w: &World| {
        w.stops_released
            .iter()
            .filter(|(_, m)| matches!(m, ToWorker::Ack(_)))
            .count()
    };
    assert_eq!(acks(&w), 0, "acknowledged before durable");
    w.flush_all();
    assert_eq!(acks(&w), 1);
    assert!(w.workers["n1"].outbox.is_empty());
    w.check();
}

#[test]
fn assign_goes_before_a_cancel_of_the_same_job() {
    let mut w = World::new(3);
    w.node_up("n1", 1, false);
    let id = w.submit().unwrap();
    // Cancelled while its assignment is still held.
    let t = w.cancel(&id);
    assert!(
        !w.cancel_replies.contains_key(&t),
        "answered before what it follows"
    );
    w.flush_all();
    assert!(matches!(
        w.cancel_replies.get(&t),
        Some(CancelReply::Requested(_))
    ));
    let order: Vec<&ToWorker> = w.stops_released.iter().map(|(_, m)| m).collect();
    assert!(matches!(order.as_slice(), [ToWorker::Cancel { .. }]));
    assert!(w.assigns_released.iter().any(|(j, _)| j == &id));
    w.check();
}

#[test]
fn a_stale_token_is_answered_with_kill_and_changes_nothing() {
    let mut w = World::new(4);
    w.node_up("n1", 1, false);
    let id = w.submit().unwrap();
    w.flush_all();
    let job = w.core.store().get(&id).unwrap().unwrap();
    let written = w.core.store().written();
    for token in [job.token + 7, job.token - 1] {
        w.send(
            "n1",
            ToMaster::Started {
                job_id: id.clone(),
                token,
                isolation: Isolation::None,
            },
        );
    }
    w.send(
        "n1",
        ToMaster::Progress {
            job_id: "nope".into(),
            token: 1,
            progress: Progress::default(),
        },
    );
    assert_eq!(w.core.store().written(), written, "a stale message wrote");
    w.flush_all();
    let kills: Vec<(String, u64)> = w
        .stops_released
        .iter()
        .filter_map(|(_, m)| match m {
            ToWorker::Kill { job_id, token } => Some((job_id.clone(), *token)),
            _ => None,
        })
        .collect();
    assert_eq!(
        kills,
        vec![
            (id.clone(), job.token + 7),
            (id, job.token - 1),
            ("nope".into(), 1)
        ]
    );
    w.check();
}

#[test]
fn after_a_restart_a_reported_attempt_is_adopted_within_its_fence() {
    let mut w = World::new(5);
    w.node_up("n1", 2, false);
    let a = w.submit().unwrap();
    let b = w.submit().unwrap();
    w.flush_all();
    let (ta, tb) = (
        w.core.store().get(&a).unwrap().unwrap().token,
        w.core.store().get(&b).unwrap().unwrap().token,
    );
    w.restart(6);
    let (_, _, until) = w.core.fenced(&a).expect("fenced at start");
    assert_eq!(until, lease::fence_deadline(w.clock.mono_ms, LEASE_MS));
    // The worker comes back before the fence ends, still running both.
    w.advance(LEASE_MS / 2);
    w.node_up("n1", 2, false);
    w.flush_all();
    for (id, t) in [(&a, ta), (&b, tb)] {
        let j = w.core.store().get(id).unwrap().unwrap();
        assert_eq!(
            (j.token, j.attempt, j.state),
            (t, 1, JobState::Assigned),
            "{id} reran"
        );
        assert!(w.core.fenced(id).is_none());
    }
    w.advance(2 * LEASE_MS);
    assert_eq!(
        w.core.store().get(&a).unwrap().unwrap().token,
        ta,
        "requeued after adoption"
    );
    w.check();
}

#[test]
fn after_a_restart_an_unreported_attempt_is_requeued_once_at_the_deadline() {
    let mut w = World::new(7);
    w.node_up("n1", 1, false);
    let a = w.submit().unwrap();
    w.flush_all();
    let ta = w.core.store().get(&a).unwrap().unwrap().token;
    w.restart(8);
    let (_, _, until) = w.core.fenced(&a).unwrap();
    // Just before the deadline: still held.
    w.advance(until - w.clock.mono_ms - 1);
    let j = w.core.store().get(&a).unwrap().unwrap();
    assert_eq!((j.token, j.state), (ta, JobState::Assigned));
    w.advance(1);
    let j = w.core.store().get(&a).unwrap().unwrap();
    assert_eq!(j.state, JobState::Queued, "requeued at the deadline");
    assert_eq!(j.attempts.len(), 1);
    let lost = w
        .core
        .store()
        .log()
        .iter()
        .filter(|(_, v)| v.id == a && v.state == JobState::Queued && v.token == ta)
        .count();
    assert_eq!(lost, 1, "requeued exactly once");
    // A node that comes back later runs it as a new attempt.
    w.node_up("n2", 1, false);
    w.advance(1_000);
    w.flush_all();
    let j = w.core.store().get(&a).unwrap().unwrap();
    assert_eq!((j.state, j.attempt), (JobState::Assigned, 2));
    assert!(j.token > ta);
    w.check();
}

#[test]
fn a_lost_nodes_attempt_waits_for_its_fence_then_runs_elsewhere() {
    let mut w = World::new(9);
    w.node_up("n1", 1, false);
    let a = w.submit().unwrap();
    w.flush_all();
    w.node_up("n2", 1, false);
    w.node_lost("n1");
    let until = lease::fence_deadline(w.clock.mono_ms, LEASE_MS);
    assert_eq!(w.core.fenced(&a).map(|f| f.2), Some(until));
    w.advance(until - w.clock.mono_ms - 1);
    w.check();
    assert!(w.core.running_on(&a).is_empty());
    w.advance(1);
    // Requeued with a backoff, then placed on the other node.
    assert_eq!(
        w.core.store().get(&a).unwrap().unwrap().state,
        JobState::Queued
    );
    w.advance(1_000);
    w.flush_all();
    assert_eq!(w.core.running_on(&a), vec!["n2".to_string()]);
    w.check();
}

#[test]
fn a_refused_cancel_keeps_the_job_queued_and_in_the_queue() {
    let mut w = World::new(10);
    let a = w.submit().unwrap();
    w.flush_all();
    w.set_full(true);
    let t = w.cancel(&a);
    assert!(!w.cancel_replies.contains_key(&t));
    assert!(
        w.core.is_queued(&a),
        "a refused cancel dropped the job from the queue"
    );
    w.set_full(false);
    w.check();
}

#[test]
fn a_requeue_refused_at_node_up_is_fenced_and_done_later() {
    let mut w = World::new(11);
    w.node_up("n1", 1, false);
    let a = w.submit().unwrap();
    w.flush_all();
    w.node_lost("n1");
    w.set_full(true);
    // The worker restarted: it no longer has the attempt; the requeue is refused.
    w.node_up("n1", 1, true);
    assert!(
        w.core.fenced(&a).is_some(),
        "a refused requeue forgot the attempt"
    );
    w.check();
    w.set_full(false);
    w.advance(super::super::nodes::FENCE_RETRY_MS);
    assert_eq!(
        w.core.store().get(&a).unwrap().unwrap().state,
        JobState::Queued
    );
    assert!(w.core.fenced(&a).is_none());
    w.advance(1_000);
    w.flush_all();
    let j = w.core.store().get(&a).unwrap().unwrap();
    assert_eq!(
        j.attempt, 2,
        "requeued and reassigned once the disk has room"
    );
    w.check();
}

#[test]
fn at_the_batch_limit_placement_waits_for_the_flush_then_goes_on() {
    let clock = Clock {
        now_ms: 1_000_000,
        mono_ms: 5_000,
    };
    let mut core = Core::new(
        MemStore::new(),
        Config {
            max_commit_batch: 2,
            ..config(12)
        },
    );
    core.recover(clock).unwrap();
    for i in 1..=5 {
        let job = Job::new(format!("job-{i}"), i, spec(), clock.now_ms);
        core.store_mut().submit(&job).unwrap();
        let (_, r) = core.accept(vec![job], clock);
        r.unwrap();
    }
    let all = core.store().written();
    core.store_mut().make_durable(all);
    core.durable(all);
    let assigned = |c: &Core<MemStore>| c.store().in_states(&[JobState::Assigned]).unwrap().len();
    let hello = Hello {
        node_id: "n1".into(),
        slots: 5,
        capabilities: caps(),
        running: vec![],
        unacked: vec![],
    };
    core.node_up(hello, 1, clock).unwrap();
    // Two writes unflushed: placement stops and asks for the flush.
    assert_eq!(assigned(&core), 2);
    let mut rounds = 0;
    while let Some(mark) = core.take_commit_due() {
        rounds += 1;
        assert!(!core.store().is_durable(mark));
        core.store_mut().make_durable(mark);
        core.durable(mark);
        core.resume(clock).unwrap();
    }
    assert_eq!(assigned(&core), 5, "placement went on after each flush");
    assert!(rounds >= 2, "waited in line {rounds} times");
    let sent = core
        .take_effects_marked()
        .into_iter()
        .filter(|(m, e)| {
            matches!(
                e,
                Effect::Send {
                    msg: ToWorker::Assign(_),
                    ..
                }
            ) && m.is_some_and(|m| core.store().is_durable(m))
        })
        .count();
    assert_eq!(
        sent, 4,
        "the assignments covered by the in-line flushes went out"
    );
}

#[test]
fn a_result_about_another_nodes_attempt_is_acknowledged_not_applied() {
    let mut w = World::new(14);
    w.node_up("n1", 1, false);
    let id = w.submit().unwrap();
    w.flush_all();
    w.node_up("n2", 1, false);
    let job = w.core.store().get(&id).unwrap().unwrap();
    let written = w.core.store().written();
    w.send(
        "n2",
        ToMaster::Finished {
            job_id: id.clone(),
            token: job.token,
            outcome: succeeded(),
            energy: None,
        },
    );
    assert_eq!(
        w.core.store().written(),
        written,
        "another node's result was applied"
    );
    w.flush_all();
    let acked = w
        .stops_released
        .iter()
        .any(|(n, m)| n == "n2" && matches!(m, ToWorker::Ack(a) if a.job_id == id));
    assert!(acked, "the other node was not told to forget it");
    assert_eq!(
        w.core.store().get(&id).unwrap().unwrap().state,
        JobState::Assigned
    );
    w.check();
}
