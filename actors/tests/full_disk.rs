//! A full data disk degrades the scheduler, it never makes it drop what it
//! was told or forget what it must do (issue 15, point 4).
//!
//! A real `SchedulerActor` over a real sled store; the test plays the
//! workers' ends of in-process links. The disk is made "full" with
//! `Store::set_disk_reserve(u64::MAX)`: every job write is then refused
//! whole, exactly as below the real reserve (`tests/store_full.rs` fills a
//! real tmpfs through the whole node); `0` frees it again.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use ffrtmp_actors::embed;
use ffrtmp_actors::link::LinkEnd;
use ffrtmp_actors::scheduler::{SchedulerArgs, SchedulerMsg};
use ffrtmp_os::store::Store;
use ffrtmp_runtime::model::JobState;
use ffrtmp_runtime::wire::{Assignment, AttemptRef, ToWorker};

/// The fence of a lost node lasts its lease: a hang guard, not a threshold.
const LONG: Duration = Duration::from_secs(120);

/// The next frame that is not a `Pong`.
async fn next_order(worker: &mut LinkEnd, within: Duration) -> ToWorker {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < within, "no order from the master in time");
        match tokio::time::timeout(within, worker.rx.recv()).await {
            Ok(Some(frame)) => match ffrtmp_runtime::wire::decode(&frame).expect("a valid frame") {
                ToWorker::Pong { .. } => continue,
                other => return other,
            },
            _ => panic!("no order from the master in time"),
        }
    }
}

async fn assignment(worker: &mut LinkEnd, within: Duration) -> Assignment {
    match next_order(worker, within).await {
        ToWorker::Assign(a) => *a,
        other => panic!("expected an assignment, got {other:?}"),
    }
}

/// Polls until the store has refused more than `before` writes.
async fn refused_after(store: &Store, before: u64, what: &str) {
    let start = Instant::now();
    while store.refused_count() <= before {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_start_was_refused_is_stored_not_dropped() {
    let (_dir, media, store) = master_dir();
    let (sched, done, mut worker) = scheduler_with_worker(&store).await;
    let job = embed::submit(&sched, spec(&media))
        .await
        .expect("submitted");
    let a = assignment(&mut worker, DEADLINE).await;
    assert_eq!(a.job_id, job.id);

    // The disk fills: the start cannot be stored, the job stays assigned.
    store.set_disk_reserve(u64::MAX);
    let before = store.refused_count();
    send_started(&worker, &job.id, a.token).await;
    refused_after(&store, before, "the start's write to be refused").await;
    assert_eq!(state_of(&store, &job.id), JobState::Assigned);

    // Space again; the attempt's result arrives (its start never stored).
    store.set_disk_reserve(0);
    send_succeeded(&worker, &job.id, a.token).await;
    match next_order(&mut worker, DEADLINE).await {
        ToWorker::Ack(ack) => assert_eq!(
            ack,
            AttemptRef {
                job_id: job.id.clone(),
                token: a.token
            }
        ),
        other => panic!("expected the result's acknowledgement, got {other:?}"),
    }
    // Acknowledged means stored: the result was applied, not dropped.
    let stored = store.get(&job.id).expect("read").expect("stored");
    assert_eq!(stored.state, JobState::Succeeded, "{stored:?}");
    assert_eq!(stored.result.map(|r| r.frames), Some(6));

    drop(worker);
    embed::stop_scheduler(&sched).await;
    let _ = done.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_attempt_is_requeued_once_the_disk_has_room_again() {
    let (_dir, media, store) = master_dir();
    let mut args = SchedulerArgs::new(store.clone());
    // The shortest fence the test can have: a lost node's attempt is held
    // for its lease.
    args.lease = Duration::from_millis(500);
    let (sched, done) = embed::spawn_scheduler(args, None).await.expect("scheduler");
    let mut first = attach_worker_as(&sched, "sim-1").await;
    joined(&sched, 1).await;
    let job = embed::submit(&sched, spec(&media))
        .await
        .expect("submitted");
    let a = assignment(&mut first, DEADLINE).await;
    send_started(&first, &job.id, a.token).await;
    until("the start's write", || {
        state_of(&store, &job.id) == JobState::Running
    })
    .await;
    let mut second = attach_worker_as(&sched, "sim-2").await;
    joined(&sched, 2).await;

    // The disk fills, then the first node is lost: when its fence ends,
    // the requeue cannot be stored.
    store.set_disk_reserve(u64::MAX);
    let before = store.refused_count();
    drop(first);
    refused_after(&store, before, "the requeue's write to be refused").await;
    // The scheduler carries on (it answers), the job is still the lost
    // node's, as stored.
    ractor::call!(sched, SchedulerMsg::Nodes).expect("the scheduler is alive");
    assert_eq!(state_of(&store, &job.id), JobState::Running);

    // Space again: the held attempt is requeued and runs on the other node.
    store.set_disk_reserve(0);
    let again = assignment(&mut second, LONG).await;
    assert_eq!(again.job_id, job.id);
    assert!(again.token > a.token, "a new attempt: {again:?}");

    drop(second);
    embed::stop_scheduler(&sched).await;
    let _ = done.await;
}
