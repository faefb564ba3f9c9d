//! Which live job writes each file output, so that two jobs never write one
//! output at once: a submission naming an output that a queued, assigned or
//! running job already names is refused (`409 output_in_use`) before
//! anything is stored.
//!
//! The HTTP handlers run concurrently, so the claim is taken under one lock
//! *before* the job is written, and given back if the write fails. A claim
//! is not released when its job finishes: the next submission naming the
//! path reads the owner's record and takes the claim over once the owner is
//! terminal (a claim whose owner has no record yet is a submission still
//! being stored, and counts as live). Claims of finished jobs are swept
//! whenever the table has doubled since the last sweep, so it stays in
//! proportion to the live jobs.
//!
//! What this does not cover (the worker's publication covers it instead,
//! `ffrtmp_os::confine`: each attempt writes its own temporary file and
//! an existing name is only replaced with `"overwrite": true`): a job
//! retried by `POST /v1/jobs/{id}/retry` while another live job names its
//! output, and jobs submitted through an embedding application's
//! `SchedulerMsg::Submit`, which does not pass through the HTTP API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ffrtmp_os::store::{Store, StoreError};
use ffrtmp_runtime::model::{Job, JobState, Output};

/// A live job already names this output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// The job that owns the path.
    pub owner: String,
}

/// The table of claimed outputs (path → owning job id).
#[derive(Debug, Default)]
pub struct OutputClaims {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    owners: HashMap<PathBuf, String>,
    /// The table's size after the last sweep.
    swept_at: usize,
}

/// The file output a job writes, if any.
pub fn output_path(job: &Job) -> Option<&Path> {
    match &job.spec.output {
        Output::File { path } => Some(path),
        _ => None,
    }
}

/// Whether the claim's owner is still live (or not yet stored).
fn owner_live(store: &Store, owner: &str) -> bool {
    match store.get(owner) {
        Ok(Some(job)) => !job.state.is_terminal(),
        // Claimed, not yet written: a submission in flight.
        Ok(None) => true,
        // Unreadable: refuse rather than risk two writers.
        Err(_) => true,
    }
}

impl OutputClaims {
    /// The claims of the live jobs in `store` (at the API's start).
    pub fn load(store: &Store) -> Result<OutputClaims, StoreError> {
        let live = store.in_states(&[JobState::Queued, JobState::Assigned, JobState::Running])?;
        let owners: HashMap<PathBuf, String> = live
            .iter()
            .filter_map(|j| output_path(j).map(|p| (p.to_path_buf(), j.id.clone())))
            .collect();
        let swept_at = owners.len();
        Ok(OutputClaims {
            inner: Mutex::new(Table { owners, swept_at }),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim `path` for job `id`; [`InUse`] if a live job owns it.
    pub fn claim(&self, store: &Store, path: &Path, id: &str) -> Result<(), InUse> {
        let mut t = self.table();
        if let Some(owner) = t.owners.get(path) {
            if owner != id && owner_live(store, owner) {
                return Err(InUse {
                    owner: owner.clone(),
                });
            }
        }
        t.owners.insert(path.to_path_buf(), id.to_string());
        if t.owners.len() >= 2 * t.swept_at.max(512) {
            t.owners.retain(|_, owner| owner_live(store, owner));
            t.swept_at = t.owners.len();
        }
        Ok(())
    }

    /// Give `path` back if `id` still owns it (its submission was not
    /// stored).
    pub fn release(&self, path: &Path, id: &str) {
        let mut t = self.table();
        if t.owners.get(path).is_some_and(|o| o == id) {
            t.owners.remove(path);
        }
    }

    /// How many paths are claimed (live or not yet swept).
    pub fn len(&self) -> usize {
        self.table().owners.len()
    }

    /// Whether no path is claimed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffrtmp_runtime::spec::{parse_job_request, MediaRoots};

    fn job_writing(store: &Store, path: &Path) -> Job {
        let body = br#"{"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"}}"#;
        let roots = MediaRoots::new(&[]).expect("no roots");
        let mut spec = parse_job_request(body, &roots).expect("valid");
        spec.output = Output::File {
            path: path.to_path_buf(),
        };
        let seq = store.next_seq().expect("seq");
        Job::new(format!("job-{seq}"), seq, spec, 0)
    }

    #[test]
    fn a_live_owner_keeps_its_output_and_a_finished_one_gives_it_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.sled")).expect("store");
        let out = Path::new("/media/out.mp4");
        let first = job_writing(&store, out);
        store.put(&first).expect("put");
        let claims = OutputClaims::load(&store).expect("load");
        assert_eq!(
            claims.len(),
            1,
            "the queued job's output is claimed at load"
        );

        // A second job naming the same output is refused, naming the owner.
        let second = job_writing(&store, out);
        assert_eq!(
            claims.claim(&store, out, &second.id),
            Err(InUse {
                owner: first.id.clone()
            })
        );
        // Another output is free.
        assert_eq!(
            claims.claim(&store, Path::new("/media/other.mp4"), &second.id),
            Ok(())
        );

        // Once the owner is terminal, the path can be claimed again.
        let mut done = first.clone();
        done.state = JobState::Cancelled;
        store.put(&done).expect("put");
        assert_eq!(claims.claim(&store, out, &second.id), Ok(()));
    }

    #[test]
    fn a_claim_not_yet_stored_counts_as_live_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.sled")).expect("store");
        let claims = OutputClaims::load(&store).expect("load");
        let out = Path::new("/media/x.mkv");
        assert_eq!(claims.claim(&store, out, "a"), Ok(()));
        // "a" is being stored: "b" must not get the path meanwhile.
        assert_eq!(
            claims.claim(&store, out, "b"),
            Err(InUse { owner: "a".into() })
        );
        // "a"'s write failed: it gives the path back, and only its own.
        claims.release(out, "b");
        assert!(claims.claim(&store, out, "b").is_err());
        claims.release(out, "a");
        assert_eq!(claims.claim(&store, out, "b"), Ok(()));
    }
}
