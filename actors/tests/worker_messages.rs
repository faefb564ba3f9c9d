//! What the scheduler answers a worker whose message is about an attempt
//! the master no longer considers live (docs/PROTOCOL.md, "Stale
//! messages"): not a result, so it is told to kill that attempt, not merely
//! logged.
//!
//! A real `SchedulerActor` over a real sled store; the test plays the
//! worker's end of an in-process link.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use common::*;
use ffrtmp_actors::embed;
use ffrtmp_runtime::model::{JobState, Progress};
use ffrtmp_runtime::wire::{ToMaster, ToWorker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_for_an_attempt_that_has_ended_is_answered_with_a_kill() {
    let (_dir, media, store) = master_dir();
    let (sched, done, mut worker) = scheduler_with_worker(&store).await;
    let job = embed::submit(&sched, spec(&media))
        .await
        .expect("submitted");
    let ToWorker::Assign(a) = next_frame(&mut worker).await else {
        panic!("expected the assignment")
    };
    send_started(&worker, &job.id, a.token).await;
    send_succeeded(&worker, &job.id, a.token).await;
    assert!(matches!(next_frame(&mut worker).await, ToWorker::Ack(_)));
    assert_eq!(state_of(&store, &job.id), JobState::Succeeded);

    // The same attempt (current token, the node it was assigned to) says
    // it is still encoding: whatever runs there is not a live attempt.
    send(
        &worker,
        &ToMaster::Progress {
            job_id: job.id.clone(),
            token: a.token,
            progress: Progress {
                frame: 3,
                ..Progress::default()
            },
        },
    )
    .await;
    match next_frame(&mut worker).await {
        ToWorker::Kill { job_id, token } => {
            assert_eq!((job_id, token), (job.id.clone(), a.token));
        }
        other => panic!("expected a kill, got {other:?}"),
    }
    assert_eq!(state_of(&store, &job.id), JobState::Succeeded, "unchanged");
    drop(worker);
    embed::stop_scheduler(&sched).await;
    let _ = done.await;
}
