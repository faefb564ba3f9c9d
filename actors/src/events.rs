//! Job updates fanned out to live watchers: the SSE stream of
//! `GET /v1/jobs/{id}/events`, and [`JobUpdates`] for an embedding
//! application (see [`crate::embed::subscribe`]).
//!
//! Every update is published by the master side after the change is stored
//! (the scheduler for every transition and progress report; the HTTP API for
//! a new submission). Delivery is best effort: a watcher that falls more than
//! a few thousand updates behind skips them and re-reads the job instead, so
//! a watcher always ends up with the job's latest stored state.

use std::sync::Arc;

use ffrtmp_os::store::{Store, StoreError};
use ffrtmp_runtime::model::{Job, JobId};
use futures::Stream;
use tokio::sync::broadcast;

/// Updates buffered per slow watcher before it starts skipping (it then re-reads the job).
const EVENT_CAPACITY: usize = 4096;

/// What changed about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// Its state or attempt changed (submitted, assigned, started, finished,
    /// requeued, cancelled), or a watcher re-read it after lagging. The
    /// first update of a [`JobUpdates`] is of this kind too.
    State,
    /// A worker reported FFmpeg's progress (`job.progress`); the state is
    /// unchanged (`running`).
    Progress,
}

/// A job as it is after a change.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    /// What changed.
    pub kind: UpdateKind,
    /// The whole job record as stored after the change.
    pub job: Arc<Job>,
}

/// The master's fan-out of job updates. Cloning it gives another handle on
/// the same channel; the scheduler and the HTTP API share one.
#[derive(Debug, Clone)]
pub struct JobEvents {
    tx: broadcast::Sender<JobUpdate>,
}

impl Default for JobEvents {
    fn default() -> Self {
        JobEvents {
            tx: broadcast::channel(EVENT_CAPACITY).0,
        }
    }
}

impl JobEvents {
    /// Sends `job`, as it is now, to every current subscriber. Never blocks
    /// and never fails: with no subscriber the update is simply dropped.
    pub fn publish(&self, kind: UpdateKind, job: &Job) {
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(JobUpdate {
            kind,
            job: Arc::new(job.clone()),
        });
    }

    /// Every update published from now on, for every job. The receiver
    /// reports `Lagged` when it fell more than the channel's capacity
    /// behind. [`JobUpdates`] wraps this for one job.
    pub fn subscribe(&self) -> broadcast::Receiver<JobUpdate> {
        self.tx.subscribe()
    }
}

/// The updates of one job: the job as it is when watching starts, then
/// every change, ending after the update that shows a terminal state.
///
/// Made by the scheduler on [`SchedulerMsg::Subscribe`] (use
/// [`crate::embed::subscribe`]), which subscribes before it reads the job,
/// so no change falls between the two.
///
/// [`SchedulerMsg::Subscribe`]: crate::scheduler::SchedulerMsg::Subscribe
#[derive(Debug)]
pub struct JobUpdates {
    id: JobId,
    first: Option<JobUpdate>,
    rx: broadcast::Receiver<JobUpdate>,
    store: Store,
    done: bool,
}

impl JobUpdates {
    /// Subscribes to `events`, then reads job `id` from `store`. `Ok(None)`:
    /// no such job.
    pub(crate) fn open(
        events: &JobEvents,
        store: Store,
        id: &str,
    ) -> Result<Option<JobUpdates>, StoreError> {
        let rx = events.subscribe();
        let Some(job) = store.get(id)? else {
            return Ok(None);
        };
        Ok(Some(JobUpdates {
            id: id.to_string(),
            done: false,
            first: Some(JobUpdate {
                kind: UpdateKind::State,
                job: Arc::new(job),
            }),
            rx,
            store,
        }))
    }

    /// The job these updates are about.
    pub fn job_id(&self) -> &str {
        &self.id
    }

    /// The next update, or `None` once a terminal state has been returned.
    ///
    /// Also `None` if the update channel closed (every [`JobEvents`] handle
    /// was dropped: the master stopped) or, after this watcher lagged, the
    /// job could not be re-read from the store. An update may repeat the
    /// previous one (the submission's own `queued` update can arrive after
    /// the first read).
    pub async fn next(&mut self) -> Option<JobUpdate> {
        if self.done {
            return None;
        }
        let update = match self.first.take() {
            Some(u) => u,
            None => loop {
                match self.rx.recv().await {
                    Ok(u) if u.job.id == self.id => break u,
                    Ok(_) => continue,
                    // Too slow a reader: re-read the truth and carry on.
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        match self.store.get(&self.id) {
                            Ok(Some(job)) => {
                                tracing::debug!(job = %self.id, skipped, "job watcher lagged; re-read the job");
                                break JobUpdate {
                                    kind: UpdateKind::State,
                                    job: Arc::new(job),
                                };
                            }
                            Ok(None) => {
                                self.done = true;
                                return None;
                            }
                            Err(e) => {
                                tracing::warn!(job = %self.id, error = %e, "job watcher lagged and cannot re-read the job");
                                self.done = true;
                                return None;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.done = true;
                        return None;
                    }
                }
            },
        };
        self.done = update.job.state.is_terminal();
        Some(update)
    }

    /// The same updates as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = JobUpdate> + Send + Unpin {
        Box::pin(futures::stream::unfold(self, |mut u| async move {
            u.next().await.map(|x| (x, u))
        }))
    }
}
