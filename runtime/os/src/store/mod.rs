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
mod durable_impl;
mod experiments;

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

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or storage error.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record or index entry could not be decoded.
    #[error("corrupt record {key}: {message}")]
    Corrupt {
        /// The tree and key of the bad record.
        key: String,
        /// What was wrong with it.
        message: String,
    },
    /// A job could not be encoded (not expected for valid jobs).
    #[error("encoding job {id}: {message}")]
    Encode {
        /// The job.
        id: String,
        /// The encoder's complaint.
        message: String,
    },
    /// The write is in sled but the flush that should have made it durable
    /// failed.
    #[error("flush failed: {0}")]
    Flush(String),
    /// The flusher is gone (only while the store is being torn down).
    #[error("store closed")]
    Closed,
    /// The verification at open found damage ([`check`]); the store was
    /// left as it is.
    #[error(
        "refusing the job store {}: {problem}. {readable} jobs in it are still readable; \
         acknowledged jobs may be missing, and starting on it would lose them silently. \
         See what is damaged with `ffrtmp-node store check --data-dir {}`; copy every \
         readable job into a fresh store (the damaged one is kept aside, and what was \
         lost is listed) with `ffrtmp-node store salvage --data-dir {}`, then start again",
        path.display(), data_dir.display(), data_dir.display()
    )]
    Damaged {
        /// The sled directory.
        path: PathBuf,
        /// The node's data directory (its parent).
        data_dir: PathBuf,
        /// What is wrong.
        problem: String,
        /// How many jobs still decode.
        readable: u64,
    },
    /// sled could not open the store for a reason other than damage: a
    /// live process holds it, or the disk is full.
    #[error("cannot open the job store {}: {cause}", path.display())]
    Blocked {
        /// The sled directory.
        path: PathBuf,
        /// Why.
        cause: sidefile::OpenBlocked,
    },
    /// The store's filesystem has less free space than
    /// [`sidefile::DISK_RESERVE`]: the write was refused before any of it
    /// reached sled (nothing half-stored); writes resume once space is
    /// freed.
    #[error(
        "storage full: the job store's filesystem ({}) has {free} bytes free, below the \
         {reserve} bytes kept in reserve; writes resume once space is freed",
        path.display()
    )]
    Full {
        /// The sled directory.
        path: PathBuf,
        /// Bytes free.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// sled failed to write its log (a flush, or a write that met sled
    /// already failed): the store refuses writes while it waits for free
    /// space and reopens sled in place, replaying the writes not yet made
    /// durable (module docs, "A full disk"). Like [`StoreError::Full`], the
    /// write was not made and writes resume by themselves.
    #[error(
        "storage unavailable: the job store ({}) could not write its log ({cause}); writes          are refused until it has been reopened, once its filesystem has space again",
        path.display()
    )]
    Recovering {
        /// The sled directory.
        path: PathBuf,
        /// The error sled met.
        cause: String,
    },
    /// The side file could not be written or read.
    #[error("job store side file {}: {source}", path.display())]
    Side {
        /// The side file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl StoreError {
    /// A write refused for want of space, or while the store recovers from
    /// a failed log write: nothing was written, and writes resume by
    /// themselves (`503 storage_full` to a client).
    pub fn is_storage_full(&self) -> bool {
        matches!(
            self,
            StoreError::Full { .. } | StoreError::Recovering { .. }
        )
    }
}

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

/// The on-disk encoding of a state in index keys. Fixed: never reorder.
fn state_byte(s: JobState) -> u8 {
    match s {
        JobState::Queued => 0,
        JobState::Assigned => 1,
        JobState::Running => 2,
        JobState::Succeeded => 3,
        JobState::Failed => 4,
        JobState::Cancelled => 5,
        JobState::TimedOut => 6,
        JobState::Lost => 7,
    }
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn tagged_key(tag: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The fields of an old record that locate its index entries.
#[derive(Deserialize)]
struct IndexFields {
    seq: u64,
    state: JobState,
    spec: IndexSpec,
}

#[derive(Deserialize)]
struct IndexSpec {
    priority: Priority,
}

/// An index entry's place: the tree and the key.
type Entry = (Index, Vec<u8>);

/// The three index trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    Seq,
    State,
    Priority,
}

impl Index {
    const ALL: [Index; 3] = [Index::Seq, Index::State, Index::Priority];

    fn name(self) -> &'static str {
        match self {
            Index::Seq => "by_seq",
            Index::State => "by_state",
            Index::Priority => "by_priority",
        }
    }

    /// The key of a record's entry in this index.
    fn key(self, seq: u64, state: JobState, priority: Priority) -> Vec<u8> {
        match self {
            Index::Seq => seq_key(seq).to_vec(),
            Index::State => tagged_key(state_byte(state), seq).to_vec(),
            Index::Priority => tagged_key(priority.rank(), seq).to_vec(),
        }
    }

    fn key_of(self, job: &Job) -> Vec<u8> {
        self.key(job.seq, job.state, job.spec.priority)
    }

    fn key_of_fields(self, f: &IndexFields) -> Vec<u8> {
        self.key(f.seq, f.state, f.spec.priority)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the flusher has done so far, published to waiting writers.
#[derive(Debug, Clone, Default)]
struct FlushStatus {
    /// Every generation up to this one has a verdict.
    settled: u64,
    /// Every generation up to this one is durable.
    durable: u64,
    /// The error of the last flush, if it failed.
    error: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Wake {
    pending: bool,
    shutdown: bool,
}

struct Shared {
    /// Write generations handed out so far.
    written: AtomicU64,
    /// The number of the last job write applied (`meta/writes` in sled).
    writes: AtomicU64,
    /// The side file ([`sidefile`], module docs).
    side: PathBuf,
    /// The sled directory.
    dir: PathBuf,
    /// Free bytes below which writes are refused ([`Store::space_ok`]).
    reserve: AtomicU64,
    /// Job writes refused for want of space.
    refused: AtomicU64,
    /// sled's handles; swapped whole when sled is reopened ([`recover`]).
    /// Readers clone the `Arc` and let the lock go; a reopen holds the
    /// write side, so a reader waits for it rather than failing.
    handles: RwLock<Option<Arc<Handles>>>,
    /// One writer at a time: the write order (new entries, record, old
    /// entries) keeps the indexes right only if two writes of the same job
    /// do not interleave. A reopen holds it too.
    write_lock: Mutex<()>,
    /// Set when sled failed to write its log: writes are refused
    /// ([`StoreError::Recovering`]) until the flusher has reopened sled.
    broken: AtomicBool,
    /// Why, for the refusals.
    broken_cause: Mutex<String>,
    /// Every write sled has applied but no flush has yet made durable, in
    /// order: what a reopen replays ([`recover`]). A successful flush drops
    /// those it covered, so this holds about one flush's worth.
    pending: Mutex<VecDeque<(u64, Pending)>>,
    /// Writes pushed on `pending` so far: each entry carries the count
    /// after it, and a flush drops the entries up to the count read before
    /// it began.
    applied: AtomicU64,
    wake: Mutex<Wake>,
    cv: Condvar,
    status: watch::Sender<FlushStatus>,
    flushes: AtomicU64,
    /// Reopens after a failed log write (for tests and diagnostics).
    reopens: AtomicU64,
    /// The least time between the starts of two flushes, in µs
    /// ([`Store::set_min_flush_interval`]).
    min_interval_us: AtomicU64,
    /// Held by a test to hold flushes back while writers line up
    /// ([`Store::hold_flushes`], feature `test-hooks`).
    #[cfg(any(test, feature = "test-hooks"))]
    gate: Mutex<()>,
}

impl Shared {
    /// sled's current handles; waits while a reopen runs.
    fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        self.handles
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// sled met an error writing its log: refuse writes until the flusher
    /// has reopened it, and wake the flusher to do so.
    fn mark_broken(&self, cause: String) {
        *lock(&self.broken_cause) = cause;
        self.broken.store(true, Ordering::SeqCst);
        lock(&self.wake).pending = true;
        self.cv.notify_one();
    }

    /// Keep a write sled applied until a flush covers it (under the write
    /// lock, so in the order applied).
    fn push_pending(&self, p: Pending) {
        let at = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.pending).push_back((at, p));
    }

    /// [`StoreError::Recovering`] while sled waits to be reopened.
    fn recovering(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Recovering {
                path: self.dir.clone(),
                cause: lock(&self.broken_cause).clone(),
            });
        }
        Ok(())
    }

    /// `Ok` while the filesystem has at least the reserve free.
    fn space_ok(&self) -> Result<(), StoreError> {
        let reserve = self.reserve.load(Ordering::Relaxed);
        match sidefile::free_bytes(&self.dir) {
            Ok(free) if free < reserve => Err(StoreError::Full {
                path: self.dir.clone(),
                free,
                reserve,
            }),
            // A filesystem that cannot say is left to sled.
            _ => Ok(()),
        }
    }
}

/// A write [`recover`] replays on a reopened sled.
enum Pending {
    /// A job write that was applied: its number (`meta/writes`), the
    /// job's id and seq, its record and its index entries.
    Put {
        n: u64,
        id: Vec<u8>,
        seq: u64,
        bytes: Vec<u8>,
        new: Vec<Entry>,
    },
    /// A write to a tree beside the jobs' ([`Store::put_named`]).
    Named {
        tree: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// A job write that failed part-way (sled broke under it): its caller
    /// was told it was not made, so the reopened store must hold the record
    /// it would have replaced (`None`: none).
    Undo {
        id: Vec<u8>,
        seq: u64,
        old: Option<Vec<u8>>,
    },
}

/// Failed flushes in a row, each right after a reopen with space free,
/// before the store gives up (an I/O error that is not a full disk).
const MAX_RECOVERIES: u32 = 3;
/// The least free space a reopen waits for, whatever the reserve: sled
/// writes as it opens.
const REOPEN_MIN_FREE: u64 = 1 << 20;
/// How often the flusher looks for free space while sled waits to be
/// reopened.
const SPACE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

fn run_flusher(shared: Arc<Shared>) {
    let mut last_start: Option<std::time::Instant> = None;
    // The side file was written at open, with the count sled had then.
    let mut side_at = std::time::Instant::now();
    let mut side_writes = shared.writes.load(Ordering::SeqCst);
    // Reopens since the last successful flush.
    let mut recoveries = 0u32;
    loop {
        {
            let mut w = lock(&shared.wake);
            while !w.pending && !w.shutdown {
                w = shared
                    .cv
                    .wait(w)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if w.shutdown && !w.pending {
                break;
            }
            w.pending = false;
        }
        if shared.broken.load(Ordering::SeqCst) {
            // sled refuses every write until it is reopened: wait for
            // space, reopen, replay, and flush again below.
            recoveries += 1;
            let res = if recoveries > MAX_RECOVERIES {
                Err(format!(
                    "{} reopens in a row did not make a flush succeed",
                    MAX_RECOVERIES
                ))
            } else {
                recover(&shared).map_err(|e| e.to_string())
            };
            match res {
                Ok(true) => {}
                // Shut down while waiting.
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, "job store could not be reopened");
                    fail_pending(&shared, &e);
                    // Writes stay refused; waiters have their error.
                    let mut w = lock(&shared.wake);
                    while !w.shutdown {
                        w = shared
                            .cv
                            .wait(w)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                    }
                    return;
                }
            }
        }
        // Under load, flushes start at most once per interval, so each one
        // covers more writes: sled wakes its whole I/O thread pool on every
        // flush, which costs more CPU than the writes themselves at a few
        // writes per flush. After a quiet spell the flush starts at once.
        let interval =
            std::time::Duration::from_micros(shared.min_interval_us.load(Ordering::Relaxed));
        if let Some(t) = last_start {
            let next = t + interval;
            let now = std::time::Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        #[cfg(any(test, feature = "test-hooks"))]
        let _gate = lock(&shared.gate);
        // Every generation up to `target` was taken after its write was
        // applied, so this flush covers all of them.
        let target = shared.written.load(Ordering::SeqCst);
        let settled = shared.status.borrow().settled;
        if target <= settled {
            continue;
        }
        let Ok(h) = shared.handles() else { break };
        last_start = Some(std::time::Instant::now());
        // Read before the flush starts: every write up to it is applied, so
        // the flush makes it durable and the side file may then say so.
        let writes = shared.writes.load(Ordering::SeqCst);
        let applied = shared.applied.load(Ordering::SeqCst);
        let res = h.db.flush();
        drop(h);
        shared.flushes.fetch_add(1, Ordering::SeqCst);
        metrics::counter!(STORE_FLUSHES).increment(1);
        if let Err(e) = res {
            // Nothing settles: the writes are not durable. sled keeps this
            // error and refuses every later write until it is reopened,
            // so the next round reopens it, replays them and flushes again;
            // their waiters wait until then.
            tracing::error!(error = %e, "store flush failed; reopening the store");
            shared.mark_broken(e.to_string());
            continue;
        }
        recoveries = 0;
        lock(&shared.pending).retain(|(at, _)| *at > applied);
        if writes > side_writes && side_at.elapsed() >= SIDE_INTERVAL {
            side_at = std::time::Instant::now();
            match write_side(&shared.side, writes, None) {
                Ok(()) => side_writes = writes,
                Err(e) => tracing::warn!(error = %e, "store side file not updated"),
            }
        }
        // The writes (generations) this flush made durable: its batch.
        metrics::counter!(STORE_FLUSHED_WRITES).increment(target - settled);
        shared.status.send_modify(|s| {
            s.settled = target;
            s.durable = target;
            s.error = None;
        });
    }
    // Make non-durable `put`s durable on a clean shutdown too.
    if !shared.broken.load(Ordering::SeqCst) {
        if let Ok(h) = shared.handles() {
            if let Err(e) = h.db.flush() {
                tracing::error!(error = %e, "final store flush failed");
            }
        }
    }
}

/// Every generation handed out gets `error`: the store cannot make them
/// durable (its waiters fail; the scheduler stops without releasing what
/// they licensed).
fn fail_pending(shared: &Shared, error: &str) {
    let target = shared.written.load(Ordering::SeqCst);
    shared.status.send_modify(|s| {
        s.settled = s.settled.max(target);
        s.error = Some(error.into());
    });
}

/// Reopen sled after it failed to write its log, on the flusher's thread:
/// wait until the filesystem has the reserve free again, drop every handle
/// (sled's file lock goes with the last), open and verify the store as
/// [`Store::open`] does, and replay the writes no flush had made durable
/// ([`Pending`]), in order. Readers keep reading the old handles while
/// space is awaited (sled serves reads after a failed write) and wait for
/// the swap itself; writers are refused until it is done. `Ok(false)`: the
/// store was closed meanwhile. An error is one a reopen cannot mend
/// (damage, or I/O errors with space free).
fn recover(shared: &Shared) -> Result<bool, StoreError> {
    if !wait_for_space(shared) {
        return Ok(false);
    }
    let _w = lock(&shared.write_lock);
    let mut slot = shared
        .handles
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A reader may still hold a clone for a moment: `open_db` waits for
    // sled's lock.
    slot.take();
    let mut failures = 0;
    let (h, readable) = loop {
        match reopen(shared) {
            Ok(done) => break done,
            Err(e) if matches!(e, StoreError::Damaged { .. } | StoreError::Corrupt { .. }) => {
                return Err(e)
            }
            Err(e) => {
                // The space went again, or the old handles were not all
                // gone yet: wait and retry, a few times.
                failures += 1;
                if failures > MAX_RECOVERIES {
                    return Err(e);
                }
                tracing::warn!(error = %e, "job store reopen failed; retrying");
                if !wait_for_space(shared) {
                    return Ok(false);
                }
                std::thread::sleep(SPACE_POLL);
            }
        }
    };
    *slot = Some(Arc::new(h));
    drop(slot);
    shared.broken.store(false, Ordering::SeqCst);
    shared.reopens.fetch_add(1, Ordering::SeqCst);
    lock(&shared.wake).pending = true;
    tracing::warn!(
        replayed = lock(&shared.pending).len(),
        jobs = readable,
        "job store reopened after a failed log write; writes resume"
    );
    Ok(true)
}

/// Wait until the store's filesystem has the reserve (and at least
/// [`REOPEN_MIN_FREE`]) free; `false` if the store was closed meanwhile.
fn wait_for_space(shared: &Shared) -> bool {
    loop {
        if lock(&shared.wake).shutdown {
            return false;
        }
        let want = shared.reserve.load(Ordering::Relaxed).max(REOPEN_MIN_FREE);
        if sidefile::free_bytes(&shared.dir).map_or(true, |free| free >= want) {
            return true;
        }
        std::thread::sleep(SPACE_POLL);
    }
}

/// One attempt of [`recover`]: open, verify, repair, replay. Returns the
/// new handles and how many jobs the store holds.
fn reopen(shared: &Shared) -> Result<(Handles, u64), StoreError> {
    let side = check::read_side(&shared.dir)?;
    let db = open_db(&shared.dir).map_err(|e| check::corruption_is_damage(&shared.dir, e))?;
    let found = check::inspect(&db, &shared.dir, side.as_ref())
        .map_err(|e| check::corruption_is_damage(&shared.dir, e))?;
    if let Some(problem) = found.problems.first() {
        return Err(StoreError::Damaged {
            path: shared.dir.clone(),
            data_dir: check::data_dir_of(&shared.dir),
            problem: problem.clone(),
            readable: found.readable,
        });
    }
    let h = Handles::new(db)?;
    // What sled kept of the writes after its last good flush is a prefix
    // of them, perhaps with some index entries of a write cut short:
    // repaired first, then every write replayed (each is idempotent). They
    // stay pending until a flush covers them, to be replayed again should
    // that flush fail too.
    repair(&h)?;
    for (_, p) in lock(&shared.pending).iter() {
        match p {
            Pending::Put {
                n,
                id,
                seq,
                bytes,
                new,
            } => {
                apply(&h, id, *seq, bytes, new, h.jobs.get(id)?.as_deref())?;
                h.db.insert(WRITES_KEY, &n.to_be_bytes())?;
            }
            Pending::Named {
                tree, key, value, ..
            } => {
                h.db.open_tree(tree)?
                    .insert(key.as_slice(), value.as_slice())?;
            }
            Pending::Undo { id, seq, old } => match old {
                Some(bytes) => {
                    let new: Vec<Entry> = serde_json::from_slice::<IndexFields>(bytes)
                        .map(|f| {
                            Index::ALL
                                .into_iter()
                                .map(|index| (index, index.key_of_fields(&f)))
                                .collect()
                        })
                        .unwrap_or_default();
                    apply(&h, id, *seq, bytes, &new, h.jobs.get(id)?.as_deref())?;
                }
                None => {
                    // Its index entries, if any landed, are stale now:
                    // readers skip them.
                    h.jobs.remove(id.as_slice())?;
                }
            },
        }
    }
    Ok((h, found.readable))
}

/// sled's handles on one open database.
struct Handles {
    db: sled::Db,
    jobs: sled::Tree,
    by_seq: sled::Tree,
    by_state: sled::Tree,
    by_priority: sled::Tree,
}

impl Handles {
    fn new(db: sled::Db) -> Result<Handles, StoreError> {
        Ok(Handles {
            jobs: db.open_tree("jobs")?,
            by_seq: db.open_tree("by_seq")?,
            by_state: db.open_tree("by_state")?,
            by_priority: db.open_tree("by_priority")?,
            db,
        })
    }

    fn tree(&self, index: Index) -> &sled::Tree {
        match index {
            Index::Seq => &self.by_seq,
            Index::State => &self.by_state,
            Index::Priority => &self.by_priority,
        }
    }
}

/// Apply one job write to sled: 1. the new version's index entries, 2. the
/// record, 3. the old version's entries it no longer has. A crash between
/// any two steps leaves only extra entries, which readers skip (module
/// docs).
/// `old` is the record this write replaces, as read under the write lock
/// (the caller has it already: read once per write).
fn apply(
    h: &Handles,
    id: &[u8],
    seq: u64,
    bytes: &[u8],
    new: &[Entry],
    old: Option<&[u8]>,
) -> Result<(), StoreError> {
    // The old version's entries: those it surely has (`had`: none for a
    // new job, or when its record does not decode) and those it may have
    // (`may_have`: every one it could have under this seq when its record
    // does not decode).
    let (had, may_have): (Vec<Entry>, Vec<Entry>) = match old {
        None => (Vec::new(), Vec::new()),
        Some(old) => match serde_json::from_slice::<IndexFields>(old) {
            Ok(f) => {
                let keys: Vec<_> = Index::ALL
                    .into_iter()
                    .map(|index| (index, index.key_of_fields(&f)))
                    .collect();
                (keys.clone(), keys)
            }
            Err(_) => {
                let mut keys = vec![(Index::Seq, seq_key(seq).to_vec())];
                for s in JobState::ALL {
                    keys.push((Index::State, tagged_key(state_byte(s), seq).to_vec()));
                }
                for p in Priority::ALL {
                    keys.push((Index::Priority, tagged_key(p.rank(), seq).to_vec()));
                }
                (Vec::new(), keys)
            }
        },
    };
    for entry in new {
        if !had.contains(entry) {
            h.tree(entry.0).insert(entry.1.as_slice(), id)?;
        }
    }
    h.jobs.insert(id, bytes)?;
    for entry in &may_have {
        if !new.contains(entry) {
            h.tree(entry.0).remove(entry.1.as_slice())?;
        }
    }
    Ok(())
}

/// Make the indexes agree with the records: add each record's missing
/// entries, remove entries whose record is gone or says otherwise.
/// Records that do not decode keep their entries (readers report them).
/// Returns how many entries it changed. Run at open after an unclean
/// shutdown, and at a reopen; reads every record.
fn repair(h: &Handles) -> Result<usize, StoreError> {
    let mut fixed = 0;
    for item in h.jobs.iter() {
        let (id, bytes) = item?;
        let Ok(f) = serde_json::from_slice::<IndexFields>(&bytes) else {
            continue;
        };
        for index in Index::ALL {
            let key = index.key_of_fields(&f);
            if h.tree(index).get(&key)?.as_deref() != Some(&id[..]) {
                h.tree(index).insert(key, &id)?;
                fixed += 1;
            }
        }
    }
    for index in Index::ALL {
        let tree = h.tree(index);
        for item in tree.iter() {
            let (key, id) = item?;
            let current = match h.jobs.get(&id)? {
                None => false,
                Some(bytes) => match serde_json::from_slice::<IndexFields>(&bytes) {
                    Ok(f) => index.key_of_fields(&f) == key.as_ref(),
                    Err(_) => true,
                },
            };
            if !current {
                tree.remove(&key)?;
                fixed += 1;
            }
        }
    }
    Ok(fixed)
}

struct Inner {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let shared = &self.shared;
        let clean = !shared.broken.load(Ordering::SeqCst);
        if clean {
            // The last handle: no write comes after this one, and the
            // flusher's final flush below covers it (sled recovers a
            // prefix of its log, so a durable marker means every earlier
            // write is too). The next open can then skip the repair pass.
            if let Ok(h) = shared.handles() {
                if let Err(e) = h.db.insert(CLEAN_KEY, &[1u8]) {
                    tracing::warn!(error = %e, "could not mark the store closed cleanly");
                }
            }
        }
        lock(&shared.wake).shutdown = true;
        shared.cv.notify_all();
        if let Some(handle) = lock(&self.flusher).take() {
            if handle.join().is_err() {
                tracing::error!("store flusher thread panicked");
            }
        }
        if !clean || shared.broken.load(Ordering::SeqCst) {
            // Writes sled applied may not be on disk, so the count in memory
            // may exceed sled's: the side file keeps the last durable one,
            // and the next open repairs the indexes.
            tracing::warn!("job store closed while waiting to be reopened: not closed cleanly");
            return;
        }
        let Ok(h) = shared.handles() else { return };
        // Everything is written: the side file gets the exact count of
        // writes and of records, checked at the next open.
        let writes = shared.writes.load(Ordering::SeqCst);
        let res = h.db.flush().map_err(|e| e.to_string()).and_then(|_| {
            write_side(&shared.side, writes, Some(h.jobs.len() as u64)).map_err(|e| e.to_string())
        });
        if let Err(e) = res {
            tracing::warn!(error = %e, "store side file not written at close");
        }
    }
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

    /// Read one job.
    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        get_in(&*self.h()?, id)
    }

    /// Jobs in submission order, filtered by state and/or priority through
    /// the indexes (no full scan when a filter is given), one page at a time.
    /// Labels and experiment are checked on each record the index yields (a
    /// scan; an experiment's own jobs are read by id from its record).
    pub fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        let limit = filter.limit.max(1);
        let start = match filter.after_seq {
            None => 0,
            Some(s) => match s.checked_add(1) {
                Some(next) => next,
                None => {
                    return Ok(Page {
                        jobs: Vec::new(),
                        next_cursor: None,
                    })
                }
            },
        };
        let h = self.h()?;
        let (index, iter) = match (filter.state, filter.priority) {
            (Some(state), _) => {
                let tag = state_byte(state);
                let range = tagged_key(tag, start)..=tagged_key(tag, u64::MAX);
                (Index::State, h.by_state.range(range))
            }
            (None, Some(p)) => {
                let tag = p.rank();
                let range = tagged_key(tag, start)..=tagged_key(tag, u64::MAX);
                (Index::Priority, h.by_priority.range(range))
            }
            (None, None) => (Index::Seq, h.by_seq.range(seq_key(start)..)),
        };
        let mut jobs: Vec<Job> = Vec::new();
        let mut next_cursor = None;
        for item in iter {
            let (key, id) = item?;
            let Some(job) = Self::get_indexed(&h, index, &key, &id)? else {
                continue;
            };
            if filter.state.is_some_and(|s| s != job.state)
                || filter.priority.is_some_and(|p| p != job.spec.priority)
                || filter
                    .experiment
                    .as_ref()
                    .is_some_and(|e| job.spec.experiment.as_ref() != Some(e))
                || !filter
                    .labels
                    .iter()
                    .all(|(k, v)| job.spec.labels.get(k) == Some(v))
            {
                continue;
            }
            if jobs.len() == limit {
                next_cursor = jobs.last().map(|j| j.seq);
                break;
            }
            jobs.push(job);
        }
        Ok(Page { jobs, next_cursor })
    }

    /// Every job in any of `states`, in submission order (e.g. `Queued`,
    /// `Assigned` and `Running` on start-up).
    pub fn in_states(&self, states: &[JobState]) -> Result<Vec<Job>, StoreError> {
        let mut wanted: Vec<JobState> = states.to_vec();
        wanted.sort();
        wanted.dedup();
        let mut out = Vec::new();
        let h = self.h()?;
        for state in wanted {
            for item in h.by_state.scan_prefix([state_byte(state)]) {
                let (key, id) = item?;
                if let Some(job) = Self::get_indexed(&h, Index::State, &key, &id)? {
                    out.push(job);
                }
            }
        }
        out.sort_by_key(|j| j.seq);
        Ok(out)
    }

    /// How many jobs are in each state (every state listed, zeros included),
    /// through the state index; each entry's record is read to check it.
    pub fn count_by_state(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        let h = self.h()?;
        JobState::ALL
            .into_iter()
            .map(|state| {
                let mut n = 0u64;
                for item in h.by_state.scan_prefix([state_byte(state)]) {
                    let (key, id) = item?;
                    if Self::get_indexed(&h, Index::State, &key, &id)?.is_some() {
                        n += 1;
                    }
                }
                Ok((state, n))
            })
            .collect()
    }

    /// Wait until everything written so far (including plain [`Store::put`]s)
    /// is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.wait_durable().await
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

    /// The job an index entry points at, if its record agrees with the
    /// entry (same seq, and same state or priority); `None` for a stale
    /// entry: the old state's during a write or after a crash, or one
    /// written just before its record (module docs).
    /// Takes the handles the caller iterates with: asking for them again
    /// could wait behind a reopen that waits for the caller's.
    fn get_indexed(
        h: &Handles,
        index: Index,
        key: &[u8],
        id: &[u8],
    ) -> Result<Option<Job>, StoreError> {
        let id = std::str::from_utf8(id).map_err(|e| StoreError::Corrupt {
            key: format!("{}/{key:02x?}", index.name()),
            message: format!("index value is not a UTF-8 job id: {e}"),
        })?;
        Ok(get_in(h, id)?.filter(|job| index.key_of(job).as_slice() == key))
    }
}

/// Read one job through `h`.
fn get_in(h: &Handles, id: &str) -> Result<Option<Job>, StoreError> {
    match h.jobs.get(id.as_bytes())? {
        None => Ok(None),
        Some(bytes) => decode_job(id, &bytes).map(Some),
    }
}

/// How long [`Store::open`] waits for a lock this process itself still
/// holds ([`sidefile::LockState::Held`] with `ours`).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Open sled in `dir`. sled's file lock is released only when the last
/// reference to its log goes, and a task on sled's I/O pool can hold one for
/// a moment after the previous handle was dropped and its final flush
/// returned: a reopen in the same process then found the lock held (seen
/// once in CI, `concurrent_durable_puts_all_land`). So when the lock
/// itself ([`sidefile::lock_state`]) says this process holds it, the open
/// waits for it, up to [`LOCK_WAIT`]; a lock held by another process fails
/// at once (waiting would not help), naming its pid. Blocking: call it
/// where blocking is allowed (the store's own threads, `spawn_blocking`).
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sidefile::open_sled(&sled::Config::new().path(dir).cache_capacity(CACHE_CAPACITY)) {
            Ok(db) => return Ok(db),
            Err(e) => match sidefile::lock_state(dir) {
                sidefile::LockState::Held { ours: true, .. }
                    if std::time::Instant::now() < deadline =>
                {
                    // sled's pool lets go within milliseconds.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => {
                    return Err(match sidefile::open_blocked(dir, &e) {
                        Some(cause) => StoreError::Blocked {
                            path: dir.to_path_buf(),
                            cause,
                        },
                        None => StoreError::Sled(e),
                    })
                }
            },
        }
    }
}

/// Flushes are held back while this lives ([`Store::hold_flushes`]).
#[cfg(any(test, feature = "test-hooks"))]
pub struct FlushHold<'a> {
    _gate: MutexGuard<'a, ()>,
}

fn decode_job(id: &str, bytes: &[u8]) -> Result<Job, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("jobs/{id}"),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffrtmp_runtime::model::JobSpec;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    fn spec(priority: Priority) -> JobSpec {
        JobSpec {
            priority,
            ..ffrtmp_runtime::test_util::test_spec()
        }
    }

    fn job(store: &Store, n: usize, priority: Priority) -> Job {
        let seq = store.next_seq().unwrap();
        Job::new(format!("job-{n:04}"), seq, spec(priority), 1_000 + n as u64)
    }

    fn ids(jobs: &[Job]) -> Vec<String> {
        jobs.iter().map(|j| j.id.clone()).collect()
    }

    fn count(store: &Store, state: JobState) -> u64 {
        store
            .count_by_state()
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == state)
            .unwrap()
            .1
    }

    #[test]
    fn put_durable_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let j = job(&store, 0, Priority::Medium);
        assert_send(store.put_durable(&j));
        assert_send(store.flush());
    }

    #[tokio::test]
    async fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let j = job(&store, 1, Priority::High);
        store.put_durable(&j).await.unwrap();
        assert_eq!(store.get(&j.id).unwrap(), Some(j.clone()));
        assert_eq!(store.get("nope").unwrap(), None);
        assert_eq!(count(&store, JobState::Queued), 1);
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_seq_keeps_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let (j, last_seq, last_token) = {
            let store = Store::open(dir.path()).unwrap();
            let j = job(&store, 1, Priority::Low);
            store.put_durable(&j).await.unwrap();
            let t = store.next_token().unwrap();
            (j, store.next_seq().unwrap(), t)
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get(&j.id).unwrap(), Some(j));
        let seq = store.next_seq().unwrap();
        let token = store.next_token().unwrap();
        assert!(seq > last_seq, "{seq} <= {last_seq}");
        assert!(token > last_token && token > 0);
    }

    #[tokio::test]
    async fn state_index_follows_updates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut j = job(&store, 1, Priority::Medium);
        store.put_durable(&j).await.unwrap();
        j.state = JobState::Assigned;
        store.put_durable(&j).await.unwrap();
        j.state = JobState::Running;
        store.put(&j).unwrap();
        assert_eq!(count(&store, JobState::Queued), 0);
        assert_eq!(count(&store, JobState::Assigned), 0);
        assert_eq!(count(&store, JobState::Running), 1);
        let running = store.in_states(&[JobState::Running]).unwrap();
        assert_eq!(ids(&running), vec![j.id.clone()]);
        assert!(store.in_states(&[JobState::Queued]).unwrap().is_empty());
        // Priority changes move the priority index too.
        j.spec.priority = Priority::Live;
        store.put(&j).unwrap();
        let live = store
            .list(&ListFilter {
                priority: Some(Priority::Live),
                limit: 10,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(ids(&live.jobs), vec![j.id.clone()]);
        let medium = store
            .list(&ListFilter {
                priority: Some(Priority::Medium),
                limit: 10,
                ..ListFilter::default()
            })
            .unwrap();
        assert!(medium.jobs.is_empty());
        let total: u64 = store.count_by_state().unwrap().iter().map(|c| c.1).sum();
        assert_eq!(total, 1);
    }

    #[tokio::test]
    async fn list_paginates_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let prios = [Priority::High, Priority::Batch, Priority::High];
        let mut all = Vec::new();
        for n in 0..10 {
            let mut j = job(&store, n, prios[n % 3]);
            if n % 2 == 1 {
                j.state = JobState::Running;
            }
            store.put(&j).unwrap();
            all.push(j);
        }
        store.flush().await.unwrap();

        // Unfiltered, pages of 4: 4 + 4 + 2, cursors chain.
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = store
                .list(&ListFilter {
                    after_seq: cursor,
                    limit: 4,
                    ..ListFilter::default()
                })
                .unwrap();
            pages += 1;
            assert!(page.jobs.len() <= 4);
            seen.extend(page.jobs);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(ids(&seen), ids(&all));

        // An exact final page has no cursor.
        let exact = store
            .list(&ListFilter {
                limit: 10,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!((exact.jobs.len(), exact.next_cursor), (10, None));

        let want = |f: &dyn Fn(&Job) -> bool| -> Vec<String> {
            all.iter().filter(|j| f(j)).map(|j| j.id.clone()).collect()
        };
        let running = store
            .list(&ListFilter {
                state: Some(JobState::Running),
                limit: 100,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(ids(&running.jobs), want(&|j| j.state == JobState::Running));
        let high_running = store
            .list(&ListFilter {
                state: Some(JobState::Running),
                priority: Some(Priority::High),
                limit: 100,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(
            ids(&high_running.jobs),
            want(&|j| j.state == JobState::Running && j.spec.priority == Priority::High)
        );
        // Filtered pagination: two at a time through the batch jobs.
        let batch = want(&|j| j.spec.priority == Priority::Batch);
        let p1 = store
            .list(&ListFilter {
                priority: Some(Priority::Batch),
                limit: 2,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(ids(&p1.jobs), batch[..2].to_vec());
        let p2 = store
            .list(&ListFilter {
                priority: Some(Priority::Batch),
                after_seq: p1.next_cursor,
                limit: 2,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(ids(&p2.jobs), batch[2..].to_vec());
        assert_eq!(p2.next_cursor, None);
        // Past the end, and the u64::MAX cursor.
        let end = store
            .list(&ListFilter {
                after_seq: Some(u64::MAX),
                limit: 5,
                ..ListFilter::default()
            })
            .unwrap();
        assert!(end.jobs.is_empty() && end.next_cursor.is_none());
        // limit 0 counts as 1.
        let one = store.list(&ListFilter::default()).unwrap();
        assert_eq!(one.jobs.len(), 1);
        assert_eq!(one.next_cursor, Some(all[0].seq));
    }

    #[tokio::test]
    async fn corrupt_records_are_errors_and_can_be_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut j = job(&store, 1, Priority::Medium);
        store.put_durable(&j).await.unwrap();
        store
            .h()
            .unwrap()
            .jobs
            .insert(j.id.as_bytes(), &b"{\"not\": a job"[..])
            .unwrap();
        assert!(matches!(store.get(&j.id), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            store.list(&ListFilter {
                limit: 5,
                ..ListFilter::default()
            }),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(store.in_states(&[JobState::Queued]).is_err());
        // Overwriting repairs it and leaves no stale index entry behind.
        j.state = JobState::Failed;
        store.put_durable(&j).await.unwrap();
        assert_eq!(store.get(&j.id).unwrap(), Some(j.clone()));
        assert_eq!(count(&store, JobState::Queued), 0);
        assert_eq!(count(&store, JobState::Failed), 1);
        assert_eq!(store.h().unwrap().by_state.len(), 1);
        assert_eq!(store.h().unwrap().by_priority.len(), 1);
        // A non-UTF-8 id in an index is an error too.
        store
            .h()
            .unwrap()
            .by_seq
            .insert(seq_key(u64::MAX - 1), &[0xff, 0xfe][..])
            .unwrap();
        assert!(matches!(
            store.list(&ListFilter {
                limit: 5,
                ..ListFilter::default()
            }),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// The index entries a job has, raw, across the three trees.
    fn raw_entries(store: &Store, id: &str) -> usize {
        Index::ALL
            .into_iter()
            .map(|index| {
                store
                    .h()
                    .unwrap()
                    .tree(index)
                    .iter()
                    .filter(|item| item.as_ref().unwrap().1.as_ref() == id.as_bytes())
                    .count()
            })
            .sum()
    }

    #[tokio::test]
    async fn a_write_keeps_exactly_one_entry_per_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut j = job(&store, 1, Priority::Low);
        store.put_durable(&j).await.unwrap();
        assert_eq!(raw_entries(&store, &j.id), 3);
        for state in [JobState::Assigned, JobState::Running, JobState::Succeeded] {
            j.state = state;
            store.put(&j).unwrap();
            assert_eq!(raw_entries(&store, &j.id), 3, "after {state:?}");
        }
        j.spec.priority = Priority::High;
        j.seq = store.next_seq().unwrap();
        store.put(&j).unwrap();
        assert_eq!(raw_entries(&store, &j.id), 3);
        let page = store
            .list(&ListFilter {
                limit: 10,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(page.jobs, vec![j.clone()]);
    }

    /// What a crash between a write's steps can leave (an entry for the old
    /// state not yet removed, entries written before their record) is
    /// skipped by every reader.
    #[tokio::test]
    async fn stale_entries_are_skipped_by_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let j = job(&store, 1, Priority::Medium);
        store.put_durable(&j).await.unwrap();
        let i = store.h().unwrap();
        // The old state's entry, an old seq's entry, an old priority's entry.
        i.by_state
            .insert(
                tagged_key(state_byte(JobState::Running), j.seq),
                j.id.as_bytes(),
            )
            .unwrap();
        i.by_seq
            .insert(seq_key(j.seq + 100), j.id.as_bytes())
            .unwrap();
        i.by_priority
            .insert(tagged_key(Priority::High.rank(), j.seq), j.id.as_bytes())
            .unwrap();
        // Entries of a job whose record was never written.
        for index in Index::ALL {
            i.tree(index)
                .insert(
                    index.key(j.seq + 1, JobState::Queued, Priority::Medium),
                    &b"job-ghost"[..],
                )
                .unwrap();
        }
        assert!(store.in_states(&[JobState::Running]).unwrap().is_empty());
        assert_eq!(
            store.in_states(&[JobState::Queued]).unwrap(),
            vec![j.clone()]
        );
        assert_eq!(count(&store, JobState::Running), 0);
        assert_eq!(count(&store, JobState::Queued), 1);
        for filter in [
            ListFilter::default(),
            ListFilter {
                state: Some(JobState::Running),
                ..ListFilter::default()
            },
            ListFilter {
                priority: Some(Priority::High),
                ..ListFilter::default()
            },
            ListFilter {
                priority: Some(Priority::Medium),
                ..ListFilter::default()
            },
        ] {
            let want: Vec<Job> =
                if filter.state.is_none() && filter.priority != Some(Priority::High) {
                    vec![j.clone()]
                } else {
                    vec![]
                };
            let page = store
                .list(&ListFilter {
                    limit: 10,
                    ..filter.clone()
                })
                .unwrap();
            assert_eq!(page.jobs, want, "{filter:?}");
        }
    }

    /// A store closed cleanly is marked so and opens without a repair; one
    /// that was not (the marker missing) gets its indexes repaired at open:
    /// a record's missing entries added, stale entries removed.
    #[tokio::test]
    async fn an_unclean_store_is_repaired_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let a = {
            let store = Store::open(dir.path()).unwrap();
            let a = job(&store, 1, Priority::Medium);
            store.put_durable(&a).await.unwrap();
            a
        };
        let mut b = a.clone();
        b.id = "job-b".into();
        b.seq = a.seq + 1;
        b.state = JobState::Running;
        {
            // What a crash could leave, written behind the store's back.
            let db = sled::open(dir.path()).unwrap();
            assert!(
                db.get(CLEAN_KEY).unwrap().is_some(),
                "clean close marks the store"
            );
            db.remove(CLEAN_KEY).unwrap();
            db.open_tree("jobs")
                .unwrap()
                .insert(b.id.as_bytes(), serde_json::to_vec(&b).unwrap())
                .unwrap();
            db.open_tree("by_state")
                .unwrap()
                .insert(
                    tagged_key(state_byte(JobState::Failed), a.seq),
                    a.id.as_bytes(),
                )
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.in_states(&[JobState::Running]).unwrap(),
            vec![b.clone()]
        );
        assert_eq!(raw_entries(&store, &a.id), 3, "the stale entry was removed");
        assert_eq!(
            raw_entries(&store, &b.id),
            3,
            "the missing entries were added"
        );
        let page = store
            .list(&ListFilter {
                limit: 10,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(ids(&page.jobs), vec![a.id.clone(), b.id.clone()]);
        // Open, the marker is gone (a crash now would be seen as one).
        assert!(store.h().unwrap().db.get(CLEAN_KEY).unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_durable_puts_all_land() {
        const N: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut tasks = Vec::new();
            for n in 0..N {
                let j = job(&store, n, Priority::ALL[n % 5]);
                expected.push(j.clone());
                let s = store.clone();
                tasks.push(tokio::spawn(async move { s.put_durable(&j).await }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let flushes = store.flush_count();
            assert!(flushes >= 1 && flushes <= N as u64, "{flushes}");
        }
        let store = Store::open(dir.path()).unwrap();
        for j in &expected {
            assert_eq!(store.get(&j.id).unwrap().as_ref(), Some(j));
        }
        assert_eq!(count(&store, JobState::Queued), N as u64);
        let page = store
            .list(&ListFilter {
                limit: N + 1,
                ..ListFilter::default()
            })
            .unwrap();
        assert_eq!(ids(&page.jobs), ids(&expected));
    }

    /// A store of 300 acknowledged jobs written by the real store (durable
    /// submissions, then state changes) and closed cleanly.
    async fn store_of_300(path: &Path) -> Vec<Job> {
        let store = Store::open(path).unwrap();
        let mut jobs = Vec::new();
        for n in 0..300 {
            let mut j = job(&store, n, Priority::ALL[n % 5]);
            store.put_durable(&j).await.unwrap();
            if n % 3 == 0 {
                j.state = JobState::Running;
                j.token = store.next_token().unwrap();
                store.put(&j).unwrap();
            }
            jobs.push(j);
        }
        store.flush().await.unwrap();
        jobs
    }

    /// Flip bit `bit` of byte `pos` of the sled log in `dir`.
    fn flip_bit(dir: &Path, pos: u64, bit: u8) {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("db"))
            .unwrap();
        let mut b = [0u8];
        f.seek(SeekFrom::Start(pos)).unwrap();
        f.read_exact(&mut b).unwrap();
        b[0] ^= 1 << bit;
        f.seek(SeekFrom::Start(pos)).unwrap();
        f.write_all(&b).unwrap();
    }

    /// What opening a damaged copy gave: refused (the error text) or the
    /// store, checked to hold every job unchanged.
    fn refused_or_whole(path: &Path, jobs: &[Job], what: &str) -> Option<String> {
        match Store::open(path) {
            Err(e @ StoreError::Damaged { .. }) => Some(e.to_string()),
            Err(e) => panic!("{what}: expected a refusal or a full recovery, got {e}"),
            Ok(store) => {
                for j in jobs {
                    assert_eq!(
                        store.get(&j.id).unwrap().as_ref(),
                        Some(j),
                        "{what}: opened without an error but job {} is missing or changed",
                        j.id
                    );
                }
                let page = store
                    .list(&ListFilter {
                        limit: 1000,
                        ..ListFilter::default()
                    })
                    .unwrap();
                assert_eq!(page.jobs.len(), jobs.len(), "{what}");
                None
            }
        }
    }

    /// Finding: one flipped bit in the middle of `db` once opened as a store
    /// with about half its jobs and only a log line. Every bit flip and
    /// truncation of a real store must now end in a refusal that names the
    /// recovery command, or in every acknowledged job back: never fewer.
    #[tokio::test]
    async fn damage_is_refused_or_fully_recovered_never_silently_lost() {
        use rand::{Rng, SeedableRng};
        let base = tempfile::tempdir().unwrap();
        let good = base.path().join("good").join("master.sled");
        let jobs = store_of_300(&good).await;
        let len = std::fs::metadata(good.join("db")).unwrap().len();
        assert!(len > 4096, "{len}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        type Damage = Box<dyn Fn(&Path)>;
        let mut cases: Vec<(String, Damage)> = Vec::new();
        // The middle of the file (the finding), then seeded positions.
        let mut positions = vec![len / 2];
        positions.extend((0..11).map(|_| rng.random_range(0..len)));
        for pos in positions {
            let bit = rng.random_range(0..8u8);
            cases.push((
                format!("bit {bit} of byte {pos} flipped"),
                Box::new(move |p: &Path| flip_bit(p, pos, bit)),
            ));
        }
        for cut in [len / 4, len / 2, len * 3 / 4, len - 1, 1000] {
            cases.push((
                format!("truncated to {cut} bytes"),
                Box::new(move |p: &Path| {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(p.join("db"))
                        .unwrap();
                    f.set_len(cut).unwrap();
                }),
            ));
        }
        let mut refusals = 0;
        for (n, (what, damage)) in cases.iter().enumerate() {
            let copy = base.path().join(format!("case{n}")).join("master.sled");
            crate::sidefile::test_util::copy_dir(&good, &copy);
            std::fs::copy(
                crate::sidefile::side_file(&good),
                crate::sidefile::side_file(&copy),
            )
            .unwrap();
            damage(&copy);
            if let Some(msg) = refused_or_whole(&copy, &jobs, what) {
                refusals += 1;
                assert!(
                    msg.contains("store salvage --data-dir") && msg.contains("still readable"),
                    "{what}: {msg}"
                );
                // A refusal changed nothing: the same again.
                assert!(refused_or_whole(&copy, &jobs, what).is_some(), "{what}");
            }
        }
        assert!(refusals > 0, "no damage case was refused");
        // The undamaged original still opens whole.
        assert!(refused_or_whole(&good, &jobs, "undamaged").is_none());
    }

    /// The finding's case end to end through the library: refused, `check`
    /// reports it, `salvage` exports what is readable into a store that
    /// opens, with the lost writes named.
    #[tokio::test]
    async fn check_and_salvage_a_store_with_a_flipped_bit() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        let path = data.join("master.sled");
        let jobs = store_of_300(&path).await;
        let sound = check(&path).unwrap();
        assert!(sound.problems.is_empty(), "{:?}", sound.problems);
        assert_eq!(sound.readable, 300);
        // A flipped bit from the middle of the log on (the finding): the
        // first that sled still opens and the check calls damage.
        let len = std::fs::metadata(path.join("db")).unwrap().len();
        let pristine = base.path().join("pristine.sled");
        crate::sidefile::test_util::copy_dir(&path, &pristine);
        let mut damaged = false;
        for step in 0..64 {
            std::fs::remove_dir_all(&path).unwrap();
            crate::sidefile::test_util::copy_dir(&pristine, &path);
            flip_bit(&path, len / 2 + step * (len / 128), 4);
            if check(&path).is_ok_and(|f| !f.problems.is_empty() && f.readable > 0) {
                damaged = true;
                break;
            }
        }
        assert!(damaged, "no flip in the second half of the log was damage");
        let found = check(&path).unwrap();
        assert!(!found.problems.is_empty());
        assert!(found.readable < 300, "{}", found.readable);
        let (report, aside) = salvage_data_dir(&data, None).unwrap();
        assert_eq!(report.recovered, found.readable);
        // What was lost is named: as writes the side file knew of and sled
        // no longer holds (a log cut short), and/or as the ids the indexes
        // still name (which flip comes first depends on the log's layout).
        if let Some((first, last)) = report.lost_writes {
            assert!(first <= last && last >= 300, "{first}..={last}");
        }
        assert!(aside.exists() && crate::sidefile::side_file(&path).exists());
        let store = Store::open(&path).unwrap();
        let mut back = 0;
        let mut missing = Vec::new();
        for j in &jobs {
            if let Some(got) = store.get(&j.id).unwrap() {
                assert_eq!(&got, j);
                back += 1;
            } else {
                missing.push(j.id.clone());
            }
        }
        assert_eq!(back, report.recovered);
        if report.lost_writes.is_none() {
            let mut named = report.lost_ids.clone();
            named.sort();
            assert_eq!(named, missing, "every lost job named by id");
        }
        // New seqs and tokens stay above every old one.
        let top = jobs.iter().map(|j| j.seq.max(j.token)).max().unwrap();
        assert!(store.next_seq().unwrap() > top);
        assert!(store.next_token().unwrap() > top);
    }

    /// A store written before side files (no count in sled, no side file)
    /// opens and gets one; a side file removed later is a refusal.
    #[tokio::test]
    async fn side_file_created_for_old_stores_and_required_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.sled");
        let j = Job::new("job-old".into(), 1, spec(Priority::Medium), 1);
        {
            let db = sled::open(&path).unwrap();
            db.open_tree("jobs")
                .unwrap()
                .insert(j.id.as_bytes(), serde_json::to_vec(&j).unwrap())
                .unwrap();
            for index in Index::ALL {
                db.open_tree(index.name())
                    .unwrap()
                    .insert(index.key_of(&j), j.id.as_bytes())
                    .unwrap();
            }
            db.insert(CLEAN_KEY, &[1u8]).unwrap();
            db.flush().unwrap();
        }
        let side = crate::sidefile::side_file(&path);
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.get(&j.id).unwrap(), Some(j.clone()));
            assert!(side.exists());
            let mut k = j.clone();
            k.id = "job-new".into();
            k.seq = store.next_seq().unwrap();
            store.put_durable(&k).await.unwrap();
        }
        let meta: SideMeta = crate::sidefile::read_checked(&side).unwrap().unwrap();
        assert_eq!((meta.writes, meta.records), (1, Some(2)));
        std::fs::remove_file(&side).unwrap();
        let msg = Store::open(&path).unwrap_err().to_string();
        assert!(
            msg.contains("side file") && msg.contains("missing"),
            "{msg}"
        );
    }

    /// Below the reserve a write is refused before it reaches sled; it
    /// succeeds again once there is room (the same store, not reopened).
    #[tokio::test]
    async fn a_write_below_the_disk_reserve_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = job(&store, 1, Priority::Medium);
        store.put_durable(&a).await.unwrap();
        store.set_disk_reserve(u64::MAX);
        let b = job(&store, 2, Priority::Medium);
        assert!(matches!(store.put(&b), Err(StoreError::Full { .. })));
        assert!(store.space_ok().is_err());
        assert_eq!(store.get(&b.id).unwrap(), None, "nothing half-stored");
        assert_eq!(raw_entries(&store, &b.id), 0);
        store.set_disk_reserve(0);
        store.put_durable(&b).await.unwrap();
        assert_eq!(store.get(&b.id).unwrap(), Some(b));
    }

    /// The disk fills to its last byte while sled has writes not yet
    /// flushed (the race the reserve cannot close): sled's flush fails and
    /// sled refuses every later write until it is reopened. The store
    /// refuses writes meanwhile (nothing half-stored), keeps serving
    /// reads, and once space is back reopens sled in place and replays what
    /// was not durable: every write it took lands, with no restart, and
    /// the store reopens clean afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_failed_on_a_full_disk_is_replayed_after_a_reopen_in_place() {
        let dir = tempfile::tempdir().unwrap();
        use crate::sidefile::test_util::{fill_to_the_last_byte, Tmpfs};
        let mnt = Tmpfs::mount(&dir.path().join("mnt"), "24m");
        let path = mnt.0.join("master.sled");
        let store = Store::open(&path).unwrap();
        // Let writes reach sled on a full disk, as when the last byte goes
        // between the reserve check and the flush.
        store.set_disk_reserve(0);
        let mut taken = Vec::new();
        for n in 0..3 {
            let j = job(&store, n, Priority::Medium);
            store.put_durable(&j).await.unwrap();
            taken.push(j.id);
        }
        fill_to_the_last_byte(&mnt.0.join("filler"));

        // Write until sled fails to write its log.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut refused = Vec::new();
        let mut last = 0;
        let mut n = 3;
        while store.writable().is_ok() {
            assert!(std::time::Instant::now() < deadline, "sled never failed");
            let j = job(&store, n, Priority::Medium);
            n += 1;
            match store.put_marked(&j) {
                Ok(mark) => {
                    last = mark;
                    taken.push(j.id);
                }
                Err(e) => {
                    assert!(e.is_storage_full(), "{e}");
                    refused.push(j.id);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(
            matches!(store.writable(), Err(StoreError::Recovering { .. })),
            "{:?}",
            store.writable()
        );
        assert!(
            !store.is_durable(last),
            "not durable while the disk is full"
        );
        // Refused whole meanwhile; reads still served.
        let late = job(&store, n, Priority::Medium);
        assert!(matches!(
            store.put(&late),
            Err(StoreError::Recovering { .. })
        ));
        refused.push(late.id.clone());
        assert!(store.get(&taken[taken.len() - 1]).unwrap().is_some());

        // Space comes back.
        std::fs::remove_file(mnt.0.join("filler")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(120), store.wait_mark(last))
            .await
            .expect("durable once space is back (hang guard)")
            .expect("the writes taken before the failure are durable");
        assert!(store.reopen_count() >= 1);
        store.writable().unwrap();
        let check = |store: &Store, taken: &[String]| {
            for id in taken {
                assert!(store.get(id).unwrap().is_some(), "{id} lost");
            }
            for id in &refused {
                assert_eq!(store.get(id).unwrap(), None, "{id} was refused");
            }
            assert_eq!(count(store, JobState::Queued), taken.len() as u64);
        };
        check(&store, &taken);
        // Writes work again, on the same store.
        let after = job(&store, n + 1, Priority::Medium);
        store.put_durable(&after).await.unwrap();
        taken.push(after.id);
        // And from disk: a clean close, a clean open, every job there.
        drop(store);
        let store = Store::open(&path).unwrap();
        check(&store, &taken);
        drop(store);
    }

    /// Poll a future once with a waker that does nothing.
    fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn group_commit_shares_flushes() {
        const N: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let jobs: Vec<Job> = (0..N).map(|n| job(&store, n, Priority::Medium)).collect();
        let before = store.flush_count();
        let mut futs: Vec<Pin<Box<_>>> = jobs
            .iter()
            .map(|j| Box::pin(store.put_durable(j)))
            .collect();
        {
            // Hold flushes back while every writer writes and lines up.
            let _gate = lock(&store.inner.shared.gate);
            for f in &mut futs {
                assert!(poll_once(f.as_mut()).is_pending());
            }
            assert_eq!(store.inner.shared.written.load(Ordering::SeqCst), N as u64);
        }
        for f in futs {
            f.await.unwrap();
        }
        let flushes = store.flush_count() - before;
        // The flusher reads its target only once it holds the gate, so one
        // flush covers all N writers.
        assert_eq!(flushes, 1, "{flushes} flushes for {N} writers");
        for j in &jobs {
            assert!(store.get(&j.id).unwrap().is_some());
        }
        // A lone writer afterwards still gets its own flush.
        let extra = job(&store, N, Priority::Low);
        store.put_durable(&extra).await.unwrap();
        assert_eq!(store.flush_count() - before, flushes + 1);
    }
}
