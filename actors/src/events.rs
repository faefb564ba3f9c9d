//! Job updates fanned out to live watchers (the SSE stream of `GET /v1/jobs/{id}/events`).

use std::sync::Arc;

use ffrtmp_runtime::model::Job;
use tokio::sync::broadcast;

/// Updates buffered per slow watcher before it starts skipping (it then re-reads the job).
const EVENT_CAPACITY: usize = 4096;

/// What changed about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    State,
    Progress,
}

/// A job as it is after a change.
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub kind: UpdateKind,
    pub job: Arc<Job>,
}

/// The master's fan-out of job updates.
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
    pub fn publish(&self, kind: UpdateKind, job: &Job) {
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(JobUpdate {
            kind,
            job: Arc::new(job.clone()),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobUpdate> {
        self.tx.subscribe()
    }
}
