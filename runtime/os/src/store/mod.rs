//! The master's job store on sled 0.34.7.
//!
//! Layout (one sled tree each):
//! - `jobs`: job id → the [`Job`] as JSON (serde_json: fields can be added
//!   without breaking old records, unlike a positional binary encoding);
//! - `by_seq`: seq (u64 big-endian) → id, submission order;
//! - `by_state`: state byte + seq (big-endian) → id;
//! - `by_priority`: priority rank + seq (big-endian) → id.
//!
//! **Writes without transactions.** A write is a few single-key sled
//! operations in a fixed order, one writer at a time: first the index
//! entries the new version needs, then the record, then the old version's
//! entries that differ. sled transactions (and batches) are not used: each
//! one seals sled's current log buffer twice and hands it to sled's I/O
//! threads, which cost more than half the master's CPU at ~1,500 jobs/s
//! (docs/BENCHMARKS.md, throughput). sled recovers a prefix of its log, so
//! after a crash a record never lacks its index entries; what a crash can
//! leave is an extra entry (the old state's, or one for a record not yet
//! written). So an index entry counts only if the record it points at
//! agrees with it: readers check each one (seq, and state or priority), skip
//! the stale ones, and report undecodable records as
//! [`StoreError::Corrupt`], never a panic. A store that was not closed
//! cleanly (no `meta/clean_shutdown` key at open) is also repaired at open:
//! missing entries added, stale ones removed ([`Store::open`]).
//!
//! **Group commit.** [`Store::put_durable`] writes, takes a *write
//! generation* number and waits until a flush that began after that number
//! was taken has completed. One flusher thread runs flushes back to back:
//! each covers every write whose generation was taken before it started, so
//! N concurrent writers share a few fsyncs instead of paying N. The flusher
//! is a plain thread (blocking `Db::flush`) rather than a tokio task so that
//! [`Store::open`] needs no runtime and dropping the last handle can join it
//! deterministically, releasing sled's file lock before a reopen.
//!
//! **Refusing damage.** sled checksums every entry of its log, but when it
//! meets a bad one at open it keeps the part of the log before it, as it
//! would after a torn write, and opens without an error: one flipped bit in
//! the middle of `db` once left a store of 300 jobs with 152. So the store
//! counts its writes in two places, as the worker's outbox does
//! ([`crate::sidefile`]):
//! - in sled, `meta/writes`, written after each job write (so, sled keeping
//!   a prefix of its log, a recovered count `n` means writes 1..=n are all
//!   there);
//! - in a side file beside the database (`master.meta` beside
//!   `master.sled`, checksummed, replaced atomically), holding a count sled
//!   had made durable: rewritten after a flush at most once per
//!   [`SIDE_INTERVAL`] while the store is open (a rename and two fsyncs:
//!   too dear for every flush of the group commit, which runs up to a
//!   thousand times a second), and exactly at a clean close, then with the
//!   number of records too.
//!
//! [`Store::open`] first runs a verification pass ([`check`]): every record
//! decodes and is filed under its own id; sled's count is not below the
//! side file's (below proves sled dropped writes); after a clean close the
//! counts agree exactly and so does the number of records, and every index
//! entry has its record. Any failure is a [`StoreError::Damaged`] that says
//! what is wrong, how many jobs are still readable, and the recovery
//! command; the store is left as it is. [`salvage`] copies every readable
//! record into a fresh store and lists what it could not recover. What is
//! not caught: a loss confined to the writes of the last [`SIDE_INTERVAL`]
//! before a crash (the side file did not know of them yet; a crash loses
//! nothing sled had flushed, so only damage on top of a crash can do this).
//! The pass decodes every record at every open (its time grows with the
//! store; the index repair after an unclean stop already read them all). A
//! store written before side files existed (no side file, no count in
//! sled) is verified the same way and gets its side file, with a note in
//! the log.
//!
//! **A full disk.** sled 0.34, once a write of its log fails (`ENOSPC`
//! included), keeps that error as a global one and refuses every later
//! write until the database is reopened. So the store first keeps sled
//! away from a full disk: each job write checks the free space of its
//! filesystem ([`Store::space_ok`], one `statvfs`) and is refused whole
//! below the reserve ([`sidefile::DISK_RESERVE`], `--store-reserve-mb`) with
//! [`StoreError::Full`], before anything reaches sled. And when the disk
//! fills to its last byte anyway (another writer, between the check and a
//! flush), it mends sled in place: every write sled applied is also kept in
//! memory ([`Pending`]) until a flush covers it; a failed flush (or a write
//! sled refuses) marks the store broken, so writes are refused with
//! [`StoreError::Recovering`] while reads go on against the old handles;
//! the flusher waits for space, swaps in a freshly opened and verified
//! sled ([`recover`]: all handles live behind one `RwLock`), replays the
//! pending writes in order and flushes them. Waiters on those writes wait
//! throughout and are never told "durable" early. Callers treat both
//! refusals as "not written" (the scheduler sends nothing the write would
//! have licensed) and writes resume by themselves.

mod check;
mod db;
mod durable_impl;
mod error;
mod experiments;
mod flusher;
mod query;

pub use check::{check, salvage, salvage_data_dir, Inspection, SalvageReport, SideMeta};

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use serde::Deserialize;
use tokio::sync::watch;

use crate::sidefile;
use ffrtmp_runtime::model::{Job, JobState, Priority};

/// Flushes the group-commit flusher has run (Prometheus counter).
pub const STORE_FLUSHES: &str = "ffrtmp_store_flushes_total";
/// Durable writes those flushes covered (Prometheus counter): divided by
/// [`STORE_FLUSHES`], the mean batch size of a flush.
pub const STORE_FLUSHED_WRITES: &str = "ffrtmp_store_flushed_writes_total";

/// A point in the store's write history, from [`Store::put_marked`]: every
/// write made before it was taken. [`Store::wait_mark`] waits until a flush
/// has covered it. Marks only grow; a larger mark covers a smaller one.
pub type WriteMark = u64;

use db::*;
pub use error::*;
use flusher::*;

/// Which jobs [`Store::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only jobs in this state (served from the `by_state` index).
    pub state: Option<JobState>,
    /// Only jobs of this priority (served from the `by_priority` index when
    /// no state is given; otherwise checked on each record).
    pub priority: Option<Priority>,
    /// Only jobs submitted after this seq (a previous page's `next_cursor`).
    pub after_seq: Option<u64>,
    /// At most this many jobs; 0 is treated as 1.
    pub limit: usize,
    /// Only jobs carrying every one of these labels (checked on each record).
    pub labels: Vec<(String, String)>,
    /// Only jobs of this experiment (checked on each record).
    pub experiment: Option<String>,
}

/// One page of [`Store::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Matching jobs in submission order.
    pub jobs: Vec<Job>,
    /// Pass as `after_seq` for the next page; `None` when no job matches
    /// beyond this page.
    pub next_cursor: Option<u64>,
}

/// A handle on the job store; clones share one database and one flusher.
/// Dropping the last clone stops the flusher (after a final flush) and
/// closes the database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const LEASE_KEY: &[u8] = b"meta/granted_lease_ms";
/// The number of the last job write (u64 big-endian), written after it.
const WRITES_KEY: &[u8] = b"meta/writes";
/// The least time between two rewrites of the side file while the store is
/// open (module docs).
pub const SIDE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Rewrite the side file of a store.
fn write_side(path: &Path, writes: u64, records: Option<u64>) -> std::io::Result<()> {
    sidefile::write_checked(path, &SideMeta::new(writes, records))
}
/// Present while the store is closed after a clean shutdown; removed (and
/// flushed) at open. Absent at open: repair the indexes.
const CLEAN_KEY: &[u8] = b"meta/clean_shutdown";

/// sled's page cache, in bytes. sled's default is 1 GiB, so the cache grows
/// with the store: a master with 100,000 queued jobs held ~235 MiB RSS with
/// it (docs/BENCHMARKS.md, footprint). Pages evicted from it are read back
/// from the file (the kernel's page cache usually still has them).
const CACHE_CAPACITY: u64 = 32 * 1024 * 1024;

impl Store {
    /// Open (or create) the store in `dir` and start its flusher thread.
    /// Refuses a damaged store with [`StoreError::Damaged`] (module docs).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let side_path = sidefile::side_file(dir);
        let side = check::read_side(dir)?;
        let db = open_db(dir).map_err(|e| check::corruption_is_damage(dir, e))?;
        let found = check::inspect(&db, dir, side.as_ref())
            .map_err(|e| check::corruption_is_damage(dir, e))?;
        if let Some(problem) = found.problems.first() {
            let more = match found.problems.len() {
                1 => String::new(),
                n => format!(" (and {} more problems)", n - 1),
            };
            return Err(StoreError::Damaged {
                path: dir.to_path_buf(),
                data_dir: check::data_dir_of(dir),
                problem: format!("{problem}{more}"),
                readable: found.readable,
            });
        }
        if side.is_none() {
            tracing::info!(
                side = %side_path.display(),
                jobs = found.readable,
                "job store has no side file yet (new, or written by an earlier version): \
                 its records were verified; creating it"
            );
        }
        // Before any new write: the side file now says "open, this far".
        write_side(&side_path, found.writes, None).map_err(|e| {
            if sidefile::is_full(&e) {
                StoreError::Blocked {
                    path: dir.to_path_buf(),
                    cause: sidefile::OpenBlocked::Full,
                }
            } else {
                StoreError::Side {
                    path: side_path.clone(),
                    source: e,
                }
            }
        })?;
        let (status, _) = watch::channel(FlushStatus::default());
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            writes: AtomicU64::new(found.writes),
            side: side_path,
            dir: dir.to_path_buf(),
            reserve: AtomicU64::new(sidefile::DISK_RESERVE),
            refused: AtomicU64::new(0),
            handles: RwLock::new(Some(Arc::new(Handles::new(db)?))),
            write_lock: Mutex::new(()),
            broken: AtomicBool::new(false),
            broken_cause: Mutex::new(String::new()),
            pending: Mutex::new(VecDeque::new()),
            applied: AtomicU64::new(0),
            wake: Mutex::new(Wake::default()),
            cv: Condvar::new(),
            status,
            flushes: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            min_interval_us: AtomicU64::new(0),
            #[cfg(any(test, feature = "test-hooks"))]
            gate: Mutex::new(()),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("ffrtmp-store-flush".into())
                .spawn(move || run_flusher(shared))
                .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?
        };
        let store = Store {
            inner: Arc::new(Inner {
                shared,
                flusher: Mutex::new(Some(flusher)),
            }),
        };
        let h = store.h()?;
        // The marker goes before anything is written, durably, so a crash
        // in this run finds it missing at the next open.
        if h.db.remove(CLEAN_KEY)?.is_some() || !h.db.was_recovered() {
            // Closed cleanly, or new: nothing to check.
            h.db.flush()?;
        } else {
            let started = std::time::Instant::now();
            let fixed = {
                let _w = lock(&store.inner.shared.write_lock);
                repair(&h)?
            };
            let took_ms = started.elapsed().as_millis();
            if fixed > 0 {
                tracing::warn!(
                    fixed,
                    took_ms,
                    "job store was not closed cleanly: index entries repaired"
                );
            } else {
                tracing::info!(took_ms, "job store indexes checked (no clean-close marker)");
            }
            h.db.flush()?;
        }
        drop(h);
        Ok(store)
    }

    /// sled's current handles (they change when sled is reopened).
    fn h(&self) -> Result<Arc<Handles>, StoreError> {
        self.inner.shared.handles()
    }

    /// A new submission sequence number, above every one handed out before,
    /// across restarts too (sled's `generate_id`, plus one so it is never 0).
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.h()?.db.generate_id()?.saturating_add(1))
    }

    /// A new fencing token, above every one handed out before (shares the
    /// generator with [`Store::next_seq`]); never 0, which means "unassigned".
    pub fn next_token(&self) -> Result<u64, StoreError> {
        Ok(self.h()?.db.generate_id()?.saturating_add(1))
    }

    /// The longest lease the previous run of this master may still have
    /// outstanding (see [`Store::set_granted_lease`]).
    pub fn granted_lease(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .h()?
            .db
            .get(LEASE_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Record (durably) the longest lease workers may hold from this master,
    /// so a restart with a shorter `--lease-ms` still waits out the longer
    /// leases granted before it.
    /// Refused like a job write on a full disk or while sled is reopened
    /// (the value already stored is then kept: it is never below the
    /// leases granted).
    pub fn set_granted_lease(&self, lease_ms: u64) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        shared.recovering()?;
        shared.space_ok()?;
        let _w = lock(&shared.write_lock);
        shared.recovering()?;
        let h = self.h()?;
        let res =
            h.db.insert(LEASE_KEY, &lease_ms.to_be_bytes())
                .and_then(|_| h.db.flush());
        if let Err(e) = res {
            // Not in the replay: the old value stands, which is safe.
            shared.mark_broken(e.to_string());
            return shared.recovering();
        }
        Ok(())
    }

    /// Write a job (record and indexes, atomically) and wait until it is
    /// durable on disk. Used before acknowledging a submission and for every
    /// state transition. Concurrent callers share flushes (group commit).
    pub async fn put_durable(&self, job: &Job) -> Result<(), StoreError> {
        let mark = self.put_marked(job)?;
        self.wait_mark(mark).await
    }

    /// Write a job (record and indexes, atomically), ask for a flush, and
    /// return at once with the [`WriteMark`] that [`Store::wait_mark`]
    /// waits on. The split form of [`Store::put_durable`], for a caller
    /// that holds back what the write licenses (an assignment sent, a result
    /// acknowledged) while it goes on with other work: the scheduler's group
    /// commit. Reads see the write at once, durable or not.
    pub fn put_marked(&self, job: &Job) -> Result<WriteMark, StoreError> {
        self.write(job)?;
        Ok(self.mark())
    }

    /// Take a [`WriteMark`] covering every write applied so far, without
    /// starting a flush: for a caller that is about to write more that the
    /// same flush should cover, and then calls [`Store::request_flush`] (or
    /// [`Store::put_marked`]). The scheduler uses it to make a submission
    /// and its assignment durable with one flush.
    pub fn mark_unflushed(&self) -> WriteMark {
        self.inner.shared.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Start a flush of everything written so far (if the flusher is idle;
    /// one running now is followed by another). Returns at once.
    pub fn request_flush(&self) {
        let shared = &self.inner.shared;
        lock(&shared.wake).pending = true;
        shared.cv.notify_one();
    }

    /// Wait until a flush that covers `mark` has completed: `Ok` once every
    /// write made before `mark` was taken is durable, the flush's error if
    /// it failed.
    pub async fn wait_mark(&self, mark: WriteMark) -> Result<(), StoreError> {
        let mut rx = self.inner.shared.status.subscribe();
        let status = rx
            .wait_for(|s| s.settled >= mark)
            .await
            .map_err(|_| StoreError::Closed)?
            .clone();
        if status.durable >= mark {
            Ok(())
        } else {
            Err(StoreError::Flush(
                status
                    .error
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "unknown error".into()),
            ))
        }
    }

    /// Whether every write before `mark` is durable already.
    pub fn is_durable(&self, mark: WriteMark) -> bool {
        self.inner.shared.status.borrow().durable >= mark
    }

    /// Holds every flush back until the returned guard is dropped (a flush
    /// already running completes first). Writes still succeed; waiters on
    /// durability wait. Test-only (feature `test-hooks`): lets a test check
    /// that nothing a write licenses happens before the write is durable.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn hold_flushes(&self) -> FlushHold<'_> {
        FlushHold {
            _gate: lock(&self.inner.shared.gate),
        }
    }

    /// Write a job (record and indexes, atomically) without waiting for
    /// durability (progress updates). A later durable write or
    /// [`Store::flush`] covers it.
    pub fn put(&self, job: &Job) -> Result<(), StoreError> {
        self.write(job)
    }

    /// The sled tree `name` beside the jobs' (`store::experiments` keeps
    /// its records in one), for reading.
    fn named_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.h()?.db.open_tree(name)?)
    }

    /// Write `value` under `key` in the tree `tree` beside the jobs', as a
    /// job write is: refused whole on a full disk or while sled is
    /// reopened, and replayed by a reopen until a flush covers it. With
    /// `only_if_absent`, nothing is written (and `false` returned) when the
    /// key exists. Not durable until the next flush.
    fn put_named(
        &self,
        tree: &'static str,
        key: &[u8],
        value: Vec<u8>,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        let shared = &self.inner.shared;
        if let Err(e) = self.writable() {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            return Err(e);
        }
        let _w = lock(&shared.write_lock);
        shared.recovering()?;
        let h = self.h()?;
        let t = h.db.open_tree(tree)?;
        let res = if only_if_absent {
            t.compare_and_swap(key, None::<&[u8]>, Some(value.as_slice()))
                .map(|r| r.is_ok())
        } else {
            t.insert(key, value.as_slice()).map(|_| true)
        };
        match res {
            Ok(false) => Ok(false),
            Ok(true) => {
                shared.push_pending(Pending::Named {
                    tree,
                    key: key.to_vec(),
                    value,
                });
                Ok(true)
            }
            Err(e) => {
                shared.refused.fetch_add(1, Ordering::SeqCst);
                shared.mark_broken(e.to_string());
                Err(shared.recovering().err().unwrap_or(e.into()))
            }
        }
    }

    /// Let flushes start at most once per `interval` (0, the default: back
    /// to back). A flush after a quiet spell still starts at once; under
    /// load a durable write waits up to `interval` longer, and each flush
    /// covers that many more writes.
    pub fn set_min_flush_interval(&self, interval: std::time::Duration) {
        let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        self.inner
            .shared
            .min_interval_us
            .store(us, Ordering::Relaxed);
    }

    /// How many flushes the group-commit flusher has run (for metrics and
    /// tests).
    pub fn flush_count(&self) -> u64 {
        self.inner.shared.flushes.load(Ordering::SeqCst)
    }

    /// `Ok` while the store's filesystem has at least the reserve free
    /// ([`sidefile::DISK_RESERVE`]); [`StoreError::Full`] otherwise. Every
    /// job write checks it first; `/readyz` reports it.
    pub fn space_ok(&self) -> Result<(), StoreError> {
        self.inner.shared.space_ok()
    }

    /// `Ok` while a job write would be taken: space above the reserve, and
    /// sled not waiting to be reopened after a failed log write
    /// ([`StoreError::Recovering`]). `/readyz` reports it.
    pub fn writable(&self) -> Result<(), StoreError> {
        self.inner.shared.recovering()?;
        self.space_ok()
    }

    /// How many times sled was reopened after a failed log write (for tests
    /// and diagnostics).
    pub fn reopen_count(&self) -> u64 {
        self.inner.shared.reopens.load(Ordering::SeqCst)
    }

    /// How many job writes were refused for want of space (for tests and
    /// diagnostics).
    pub fn refused_count(&self) -> u64 {
        self.inner.shared.refused.load(Ordering::SeqCst)
    }

    /// Refuse writes below `bytes` free instead of the default reserve.
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.inner.shared.reserve.store(bytes, Ordering::Relaxed);
    }

    fn write(&self, job: &Job) -> Result<(), StoreError> {
        let shared = &self.inner.shared;
        if let Err(e) = self.writable() {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            return Err(e);
        }
        let bytes = serde_json::to_vec(job).map_err(|e| StoreError::Encode {
            id: job.id.clone(),
            message: e.to_string(),
        })?;
        let id = job.id.as_bytes();
        let new: Vec<Entry> = Index::ALL
            .into_iter()
            .map(|index| (index, index.key_of(job)))
            .collect();
        let _w = lock(&shared.write_lock);
        // A reopen may have begun while this writer waited for the lock.
        if let Err(e) = shared.recovering() {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            return Err(e);
        }
        let h = self.h()?;
        let old = h.jobs.get(id)?;
        // 4. The write's number, after it (module docs, "Refusing damage");
        // published only once it is applied, for the flusher to read.
        let n = shared.writes.load(Ordering::SeqCst) + 1;
        let res = apply(&h, id, job.seq, &bytes, &new, old.as_deref())
            .and_then(|()| Ok(h.db.insert(WRITES_KEY, &n.to_be_bytes())?));
        if let Err(e) = res {
            // sled broke under this write (its log could not be written):
            // the caller is told it was not made, so the reopened store
            // must not have it either.
            shared.push_pending(Pending::Undo {
                id: id.to_vec(),
                seq: job.seq,
                old: old.map(|v| v.to_vec()),
            });
            shared.refused.fetch_add(1, Ordering::SeqCst);
            shared.mark_broken(e.to_string());
            return Err(shared.recovering().err().unwrap_or(e));
        }
        shared.writes.store(n, Ordering::SeqCst);
        shared.push_pending(Pending::Put {
            n,
            id: id.to_vec(),
            seq: job.seq,
            bytes,
            new,
        });
        Ok(())
    }

    /// Take a write generation (covering every write applied so far) and
    /// wake the flusher.
    fn mark(&self) -> WriteMark {
        let generation = self.mark_unflushed();
        self.request_flush();
        generation
    }

    /// Take a write generation and wait until a flush covering it is done.
    async fn wait_durable(&self) -> Result<(), StoreError> {
        let mark = self.mark();
        self.wait_mark(mark).await
    }
}

/// Flushes are held back while this lives ([`Store::hold_flushes`]).
#[cfg(any(test, feature = "test-hooks"))]
pub struct FlushHold<'a> {
    _gate: MutexGuard<'a, ()>,
}

#[cfg(test)]
mod tests;
