//! Submissions stored off the actor: a job (`Submit`) or an experiment's
//! jobs (`SubmitExperiment`) are written by a task of their own, then handed
//! to the scheduler (`Accept`/`AcceptMany`), so submissions share flushes
//! and the scheduler does not wait on the disk.

use ffrtmp_os::store::{Store, StoreError};
use ffrtmp_runtime::experiment::Experiment;
use ffrtmp_runtime::model::{Job, JobSpec};
use ractor::{ActorRef, RpcReplyPort};

use super::SchedulerMsg;
use crate::metrics as m;
use crate::now_ms;

/// `Submit`: a new job with a fresh sequence number, stored off the actor.
pub(super) fn submit(
    store: &Store,
    myself: &ActorRef<SchedulerMsg>,
    spec: JobSpec,
    reply: RpcReplyPort<Result<Job, String>>,
) {
    let seq = match store.next_seq() {
        Ok(seq) => seq,
        Err(e) => {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
    };
    let job = Job::new(uuid::Uuid::now_v7().to_string(), seq, spec, now_ms());
    // Stored off the actor, so submissions share a flush and the
    // scheduler does not wait on the disk.
    let (store, me) = (store.clone(), myself.clone());
    tokio::spawn(async move {
        let r = store_new_job(&store, &me, &job).await;
        let _ = reply.send(r.map(|()| job).map_err(|e| e.to_string()));
    });
}

/// `SubmitExperiment`: the experiment's jobs with fresh sequence numbers,
/// stored off the actor (record, jobs, flush, record complete).
pub(super) fn submit_experiment(
    store: &Store,
    myself: &ActorRef<SchedulerMsg>,
    mut record: Experiment,
    specs: Vec<JobSpec>,
    reply: RpcReplyPort<Result<Experiment, ExperimentRefused>>,
) {
    let now = now_ms();
    let mut jobs = Vec::with_capacity(specs.len());
    for spec in specs {
        let seq = match store.next_seq() {
            Ok(seq) => seq,
            Err(e) => {
                let _ = reply.send(Err(ExperimentRefused::store(&e, "")));
                return;
            }
        };
        jobs.push(Job::new(uuid::Uuid::now_v7().to_string(), seq, spec, now));
    }
    record.job_ids = jobs.iter().map(|j| j.id.clone()).collect();
    record.complete = false;
    // Stored off the actor, like `Submit`.
    let (store, me) = (store.clone(), myself.clone());
    tokio::spawn(async move {
        let r = store_experiment(&store, &me, record, jobs).await;
        let _ = reply.send(r);
    });
}

/// Why `SubmitExperiment` stored no experiment, or not all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExperimentRefused {
    /// An experiment of that name exists; nothing was written.
    Exists,
    /// The store failed. The record, if written, says how many jobs were
    /// expected; the jobs written before the failure are queued.
    Store {
        /// What failed, and how many jobs landed.
        message: String,
        /// The store refused a write for want of space (`503 storage_full`).
        full: bool,
    },
}

impl ExperimentRefused {
    fn store(e: &StoreError, context: &str) -> ExperimentRefused {
        ExperimentRefused::Store {
            message: format!("{e}{context}"),
            full: matches!(e, StoreError::Full { .. }),
        }
    }
}

/// The write order of `SubmitExperiment` (runtime `store::experiments`):
/// record (incomplete), jobs, flush, record (complete), flush.
async fn store_experiment(
    store: &Store,
    scheduler: &ActorRef<SchedulerMsg>,
    mut record: Experiment,
    jobs: Vec<Job>,
) -> Result<Experiment, ExperimentRefused> {
    let failed = |e: StoreError| ExperimentRefused::store(&e, "");
    if !store.insert_experiment(&record).map_err(failed)? {
        return Err(ExperimentRefused::Exists);
    }
    let mut landed = Vec::with_capacity(jobs.len());
    let mut error = None;
    for job in jobs {
        match store.put(&job) {
            Ok(()) => landed.push(job),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // Whatever landed is queued (and so never silently lost).
    let n = landed.len() as u64;
    match ractor::call_t!(
        scheduler,
        SchedulerMsg::AcceptMany,
        ACCEPT_TIMEOUT_MS,
        landed
    ) {
        Ok(mark) => store.wait_mark(mark).await.map_err(failed)?,
        Err(e) => {
            store.flush().await.map_err(failed)?;
            tracing::error!(experiment = %record.name, error = %e, "scheduler unreachable after storing an experiment's jobs");
        }
    }
    metrics::counter!(m::JOBS_SUBMITTED).increment(n);
    if let Some(e) = error {
        return Err(ExperimentRefused::store(
            &e,
            &format!(
                " ({n} of {} jobs stored and queued; the experiment is marked incomplete)",
                record.job_ids.len()
            ),
        ));
    }
    record.complete = true;
    store.put_experiment(&record).map_err(failed)?;
    store.flush().await.map_err(failed)?;
    Ok(record)
}

/// Stores a new `queued` job and hands it to `scheduler`, which queues it,
/// places it if it can, and publishes it; returns once the job is durable.
/// The write happens here, off the actor, so submissions share the work and
/// the scheduler does not encode them; the flush that makes it durable also
/// covers the job's assignment when a node was free
/// ([`SchedulerMsg::Accept`]): one flush between submission and dispatch.
/// `Ok` means the job is on disk; if the scheduler is gone by then the job
/// is queued on its next start.
pub(crate) async fn store_new_job(
    store: &Store,
    scheduler: &ActorRef<SchedulerMsg>,
    job: &Job,
) -> Result<(), ffrtmp_os::store::StoreError> {
    store.put(job)?;
    match ractor::call_t!(
        scheduler,
        SchedulerMsg::Accept,
        ACCEPT_TIMEOUT_MS,
        Box::new(job.clone())
    ) {
        Ok(mark) => store.wait_mark(mark).await?,
        Err(e) => {
            // Stored, so not lost once flushed: the scheduler queues it on
            // its next start.
            store.flush().await?;
            tracing::error!(job = %job.id, error = %e, "scheduler unreachable after storing a job");
        }
    }
    metrics::counter!(m::JOBS_SUBMITTED).increment(1);
    Ok(())
}

/// How long [`store_new_job`] waits for the scheduler to take a job.
const ACCEPT_TIMEOUT_MS: u64 = 10_000;
