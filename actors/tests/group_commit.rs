//! Group commit: nothing leaves the master before the write that justifies
//! it is durable.
//!
//! A real `SchedulerActor` over a real sled store. The test plays the worker
//! end of an in-process link itself, speaking the wire protocol (hello,
//! ping, started, finished), so it sees exactly which frames the master
//! sends and when. It holds the store's flusher back with
//! `Store::hold_flushes`, a test-only hook (feature `test-hooks` of
//! `ffrtmp-os`, enabled only by this crate's dev-dependencies): while
//! it is held the writes are applied but none becomes durable, and the
//! test checks that the submission is not answered, the assignment is not
//! sent, the result is not acknowledged and no update is published until it
//! lets go.
//!
//! "Not sent yet" is checked without waiting for time to pass: a call to the
//! scheduler (`Nodes`) returns only after the handler that made the write
//! has finished, so anything it had sent would already sit in the link
//! actor's mailbox; then the test's `Ping` goes into that same mailbox
//! behind it, and the `Pong` comes back only after everything queued before
//! it. Getting the `Pong` first proves the held message was not sent.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::time::Instant;

use common::*;
use ffrtmp_actors::embed;
use ffrtmp_actors::events::{JobEvents, JobUpdate};
use ffrtmp_actors::link::LinkEnd;
use ffrtmp_actors::scheduler::{SchedulerArgs, SchedulerMsg};
use ffrtmp_runtime::model::{JobResult, JobState, Outcome};
use ffrtmp_runtime::wire::{AttemptRef, ToMaster, ToWorker};
use ractor::ActorRef;
use tokio::sync::broadcast;

/// Asserts that the master has sent nothing on the link since the last
/// frame read: everything the scheduler did so far is handled (the `Nodes`
/// call), then a ping's pong must be the next frame.
async fn assert_nothing_sent(sched: &ActorRef<SchedulerMsg>, worker: &mut LinkEnd, what: &str) {
    ractor::call!(sched, SchedulerMsg::Nodes).expect("scheduler answers");
    send(worker, &ToMaster::Ping { sent_ms: 4242 }).await;
    match next_frame(worker).await {
        ToWorker::Pong { sent_ms: 4242, .. } => {}
        other => panic!("{what} was sent before its write was durable: {other:?}"),
    }
}

/// The updates published so far for the job, by state.
fn published(rx: &mut broadcast::Receiver<JobUpdate>) -> Vec<JobState> {
    let mut out = Vec::new();
    while let Ok(u) = rx.try_recv() {
        out.push(u.job.state);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_before_its_write_is_durable() {
    let (_dir, media, store) = master_dir();
    let events = JobEvents::default();
    let mut updates = events.subscribe();
    let mut args = SchedulerArgs::new(store.clone());
    args.events = events.clone();
    let (sched, done) = embed::spawn_scheduler(args, None).await.expect("scheduler");

    // 1. A submission is answered only once the job is durable.
    let hold = store.hold_flushes();
    let submit = {
        let (sched, spec) = (sched.clone(), spec(&media));
        tokio::spawn(async move { embed::submit(&sched, spec).await })
    };
    until("the submission's write", || {
        store
            .in_states(&[JobState::Queued])
            .is_ok_and(|j| j.len() == 1)
    })
    .await;
    ractor::call!(sched, SchedulerMsg::Sync).expect("sync");
    // The flusher cannot complete a flush while held, so this cannot race.
    assert!(
        !submit.is_finished(),
        "the submission was answered before the job was durable"
    );
    assert_eq!(published(&mut updates), Vec::<JobState>::new());
    drop(hold);
    let job = submit.await.expect("task").expect("submitted");
    // Published by the scheduler once it hears the flush is done, which may
    // be just after the submission's answer.
    let mut seen = Vec::new();
    until("the queued update", || {
        seen.extend(published(&mut updates));
        !seen.is_empty()
    })
    .await;
    ractor::call!(sched, SchedulerMsg::Sync).expect("sync");
    seen.extend(published(&mut updates));
    assert_eq!(seen, vec![JobState::Queued]);

    // 2. The assignment leaves only once its token is durable.
    let hold = store.hold_flushes();
    let mut worker = attach_worker(&sched).await;
    until("the assignment's write", || {
        state_of(&store, &job.id) == JobState::Assigned
    })
    .await;
    let token = store.get(&job.id).expect("read").expect("job").token;
    assert!(token > 0);
    assert_nothing_sent(&sched, &mut worker, "the assignment").await;
    assert_eq!(published(&mut updates), Vec::<JobState>::new());
    drop(hold);
    match next_frame(&mut worker).await {
        ToWorker::Assign(a) => {
            assert_eq!((a.job_id.as_str(), a.token), (job.id.as_str(), token));
        }
        other => panic!("expected the assignment, got {other:?}"),
    }

    // 3. The result is acknowledged (and published) only once durable.
    send_started(&worker, &job.id, token).await;
    until("the start's write", || {
        state_of(&store, &job.id) == JobState::Running
    })
    .await;
    store.flush().await.expect("flush");
    let hold = store.hold_flushes();
    send(
        &worker,
        &ToMaster::Finished {
            job_id: job.id.clone(),
            token,
            outcome: Outcome::Succeeded {
                result: JobResult {
                    exit_code: 0,
                    wall_s: 0.01,
                    frames: 6,
                    avg_fps: 600.0,
                    speed: None,
                    output_bytes: None,
                    output_bitrate_kbps: None,
                    cpu_s: None,
                    peak_memory_bytes: None,
                    output_duration_s: Some(0.2),
                    quality: None,
                    encoder: None,
                },
            },
            energy: None,
        },
    )
    .await;
    until("the result's write", || {
        state_of(&store, &job.id) == JobState::Succeeded
    })
    .await;
    assert_nothing_sent(&sched, &mut worker, "the acknowledgement").await;
    let seen = published(&mut updates);
    assert!(
        !seen.contains(&JobState::Succeeded),
        "success published before it was durable: {seen:?}"
    );
    drop(hold);
    match next_frame(&mut worker).await {
        ToWorker::Ack(AttemptRef { job_id, token: t }) => {
            assert_eq!((job_id.as_str(), t), (job.id.as_str(), token));
        }
        other => panic!("expected the acknowledgement, got {other:?}"),
    }
    let mut seen = published(&mut updates);
    let start = Instant::now();
    while !seen.contains(&JobState::Succeeded) {
        assert!(start.elapsed() < DEADLINE, "success never published");
        let u = tokio::time::timeout(DEADLINE, updates.recv())
            .await
            .expect("update in time")
            .expect("update");
        seen.push(u.job.state);
    }

    drop(worker);
    embed::stop_scheduler(&sched).await;
    let _ = done.await;
}

/// A submission that finds a free node is made durable together with its
/// assignment: one flush between the HTTP request and the `Assign` (it was
/// two, the second waiting for the first; docs/BENCHMARKS.md, dispatch
/// latency). With flushes held, both writes are applied and neither the
/// answer nor the assignment goes; once let go, a single flush releases
/// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_and_its_assignment_share_one_flush() {
    let (_dir, media, store) = master_dir();
    let (sched, done, mut worker) = scheduler_with_worker(&store).await;
    store.flush().await.expect("flush");

    let hold = store.hold_flushes();
    let flushes_before = store.flush_count();
    let submit = {
        let (sched, spec) = (sched.clone(), spec(&media));
        tokio::spawn(async move { embed::submit(&sched, spec).await })
    };
    until("the assignment's write", || {
        store
            .in_states(&[JobState::Assigned])
            .is_ok_and(|j| j.len() == 1)
    })
    .await;
    assert!(!submit.is_finished(), "answered before the job was durable");
    assert_nothing_sent(&sched, &mut worker, "the assignment").await;
    drop(hold);
    let job = submit.await.expect("task").expect("submitted");
    match next_frame(&mut worker).await {
        ToWorker::Assign(a) => assert_eq!(a.job_id, job.id),
        other => panic!("expected the assignment, got {other:?}"),
    }
    assert_eq!(
        store.flush_count() - flushes_before,
        1,
        "the submission and its assignment took more than one flush"
    );

    drop(worker);
    embed::stop_scheduler(&sched).await;
    let _ = done.await;
}
