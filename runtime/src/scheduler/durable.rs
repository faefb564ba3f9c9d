//! The durable store as the scheduling core sees it: [`JobStore`], and
//! [`MemStore`], an in-memory implementation for tests that can hold
//! durability back (durable up to a mark) and refuse writes (a full disk).

use std::collections::BTreeMap;

use crate::model::{Job, JobState};

/// A point in the store's write order: every write made before a mark was
/// taken is durable once a flush covering the mark has completed. The same
/// numbers as the sled store's marks.
pub type WriteMark = u64;

/// The job store the core reads and writes. Writes are applied at once
/// (reads see them) and become durable later; [`JobStore::is_durable`]
/// says whether they are. The driver waits for marks; the core never does.
pub trait JobStore {
    /// Why a read or write failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Whether `e` is a write refused whole for want of space (nothing
    /// changed): the core then carries on, as after "not done".
    fn is_storage_full(e: &Self::Error) -> bool;
    /// One job.
    fn get(&self, id: &str) -> Result<Option<Job>, Self::Error>;
    /// The jobs in these states.
    fn in_states(&self, states: &[JobState]) -> Result<Vec<Job>, Self::Error>;
    /// Write a job and take a mark covering it (a flush is requested).
    fn put_marked(&mut self, job: &Job) -> Result<WriteMark, Self::Error>;
    /// Write a job that licenses nothing (progress): no mark.
    fn put(&mut self, job: &Job) -> Result<(), Self::Error>;
    /// A mark covering every write so far, without requesting a flush.
    fn mark_unflushed(&mut self) -> WriteMark;
    /// Whether every write before `mark` is durable.
    fn is_durable(&self, mark: WriteMark) -> bool;
    /// A fresh fencing token, above every one before.
    fn next_token(&mut self) -> Result<u64, Self::Error>;
    /// A fresh submission sequence number, above every one before.
    fn next_seq(&mut self) -> Result<u64, Self::Error>;
    /// The longest lease the previous run may have granted.
    fn granted_lease(&self) -> Result<Option<u64>, Self::Error>;
    /// Record (durably) the longest lease workers may hold.
    fn set_granted_lease(&mut self, lease_ms: u64) -> Result<(), Self::Error>;
}

/// Why [`MemStore`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemStoreError {
    /// Writes are refused (a simulated full disk); nothing changed.
    #[error("storage full (simulated)")]
    Full,
}

/// An in-memory [`JobStore`] for tests. Every write gets the next number
/// of one counter (marks share it, as in the sled store); writes up to
/// [`MemStore::durable`] are durable, the rest only applied. Not a fake of
/// sled's internals: the model of "applied now, durable at a later mark"
/// that the core relies on.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    jobs: BTreeMap<String, Job>,
    /// Every job write, with its number, in order.
    log: Vec<(WriteMark, Job)>,
    written: WriteMark,
    durable: WriteMark,
    ids: u64,
    granted: Option<u64>,
    /// While set, every write is refused with [`MemStoreError::Full`].
    pub full: bool,
    /// Writes refused so far.
    pub refused: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// The highest mark durable.
    pub fn durable(&self) -> WriteMark {
        self.durable
    }

    /// The number of the last write or mark.
    pub fn written(&self) -> WriteMark {
        self.written
    }

    /// Make every write up to `mark` durable (never past the last write,
    /// never backwards).
    pub fn make_durable(&mut self, mark: WriteMark) {
        self.durable = self.durable.max(mark.min(self.written));
    }

    /// Every job write so far, with its number.
    pub fn log(&self) -> &[(WriteMark, Job)] {
        &self.log
    }

    /// The jobs as they are on disk: the last durable write of each.
    pub fn durable_jobs(&self) -> BTreeMap<String, Job> {
        let mut out = BTreeMap::new();
        for (m, job) in &self.log {
            if *m <= self.durable {
                out.insert(job.id.clone(), job.clone());
            }
        }
        out
    }

    /// What a master restarting after a crash finds: only the durable
    /// writes (the counters survive, as sled's id generator does).
    pub fn after_crash(&self) -> MemStore {
        let jobs = self.durable_jobs();
        let log = self
            .log
            .iter()
            .filter(|(m, _)| *m <= self.durable)
            .cloned()
            .collect();
        MemStore {
            jobs,
            log,
            written: self.written,
            durable: self.written,
            ids: self.ids,
            granted: self.granted,
            full: false,
            refused: 0,
        }
    }

    /// Insert a new job as the submission path does (`Store::put` before
    /// `Accept`), returning the job's write number.
    pub fn submit(&mut self, job: &Job) -> Result<WriteMark, MemStoreError> {
        self.write(job)
    }

    fn write(&mut self, job: &Job) -> Result<WriteMark, MemStoreError> {
        if self.full {
            self.refused += 1;
            return Err(MemStoreError::Full);
        }
        self.written += 1;
        self.jobs.insert(job.id.clone(), job.clone());
        self.log.push((self.written, job.clone()));
        Ok(self.written)
    }
}

impl JobStore for MemStore {
    type Error = MemStoreError;

    fn is_storage_full(e: &MemStoreError) -> bool {
        matches!(e, MemStoreError::Full)
    }

    fn get(&self, id: &str) -> Result<Option<Job>, MemStoreError> {
        Ok(self.jobs.get(id).cloned())
    }

    fn in_states(&self, states: &[JobState]) -> Result<Vec<Job>, MemStoreError> {
        let mut v: Vec<Job> = self
            .jobs
            .values()
            .filter(|j| states.contains(&j.state))
            .cloned()
            .collect();
        v.sort_by_key(|j| j.seq);
        Ok(v)
    }

    fn put_marked(&mut self, job: &Job) -> Result<WriteMark, MemStoreError> {
        self.write(job)
    }

    fn put(&mut self, job: &Job) -> Result<(), MemStoreError> {
        self.write(job).map(|_| ())
    }

    fn mark_unflushed(&mut self) -> WriteMark {
        self.written += 1;
        self.written
    }

    fn is_durable(&self, mark: WriteMark) -> bool {
        self.durable >= mark
    }

    fn next_token(&mut self) -> Result<u64, MemStoreError> {
        self.ids += 1;
        Ok(self.ids)
    }

    fn next_seq(&mut self) -> Result<u64, MemStoreError> {
        self.ids += 1;
        Ok(self.ids)
    }

    fn granted_lease(&self) -> Result<Option<u64>, MemStoreError> {
        Ok(self.granted)
    }

    fn set_granted_lease(&mut self, lease_ms: u64) -> Result<(), MemStoreError> {
        if self.full {
            self.refused += 1;
            return Err(MemStoreError::Full);
        }
        self.granted = Some(lease_ms);
        Ok(())
    }
}
