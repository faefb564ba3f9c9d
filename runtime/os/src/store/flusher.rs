//! The group-commit flusher thread: its shared state, flushes, and the
//! reopen of sled after a failed log write (module docs of `store`).

use super::*;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the flusher has done so far, published to waiting writers.
#[derive(Debug, Clone, Default)]
pub(super) struct FlushStatus {
    /// Every generation up to this one has a verdict.
    pub(super) settled: u64,
    /// Every generation up to this one is durable.
    pub(super) durable: u64,
    /// The error of the last flush, if it failed.
    pub(super) error: Option<Arc<str>>,
}

#[derive(Debug, Default)]
pub(super) struct Wake {
    pub(super) pending: bool,
    pub(super) shutdown: bool,
}

pub(super) struct Shared {
    /// Write generations handed out so far.
    pub(super) written: AtomicU64,
    /// The number of the last job write applied (`meta/writes` in sled).
    pub(super) writes: AtomicU64,
    /// The side file ([`sidefile`], module docs).
    pub(super) side: PathBuf,
    /// The sled directory.
    pub(super) dir: PathBuf,
    /// Free bytes below which writes are refused ([`Store::space_ok`]).
    pub(super) reserve: AtomicU64,
    /// Job writes refused for want of space.
    pub(super) refused: AtomicU64,
    /// sled's handles; swapped whole when sled is reopened ([`recover`]).
    /// Readers clone the `Arc` and let the lock go; a reopen holds the
    /// write side, so a reader waits for it rather than failing.
    pub(super) handles: RwLock<Option<Arc<Handles>>>,
    /// One writer at a time: the write order (new entries, record, old
    /// entries) keeps the indexes right only if two writes of the same job
    /// do not interleave. A reopen holds it too.
    pub(super) write_lock: Mutex<()>,
    /// Set when sled failed to write its log: writes are refused
    /// ([`StoreError::Recovering`]) until the flusher has reopened sled.
    pub(super) broken: AtomicBool,
    /// Why, for the refusals.
    pub(super) broken_cause: Mutex<String>,
    /// Every write sled has applied but no flush has yet made durable, in
    /// order: what a reopen replays ([`recover`]). A successful flush drops
    /// those it covered, so this holds about one flush's worth.
    pub(super) pending: Mutex<VecDeque<(u64, Pending)>>,
    /// Writes pushed on `pending` so far: each entry carries the count
    /// after it, and a flush drops the entries up to the count read before
    /// it began.
    pub(super) applied: AtomicU64,
    pub(super) wake: Mutex<Wake>,
    pub(super) cv: Condvar,
    pub(super) status: watch::Sender<FlushStatus>,
    pub(super) flushes: AtomicU64,
    /// Reopens after a failed log write (for tests and diagnostics).
    pub(super) reopens: AtomicU64,
    /// The least time between the starts of two flushes, in µs
    /// ([`Store::set_min_flush_interval`]).
    pub(super) min_interval_us: AtomicU64,
    /// Held by a test to hold flushes back while writers line up
    /// ([`Store::hold_flushes`], feature `test-hooks`).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(super) gate: Mutex<()>,
}

impl Shared {
    /// sled's current handles; waits while a reopen runs.
    pub(super) fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        self.handles
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// sled met an error writing its log: refuse writes until the flusher
    /// has reopened it, and wake the flusher to do so.
    pub(super) fn mark_broken(&self, cause: String) {
        *lock(&self.broken_cause) = cause;
        self.broken.store(true, Ordering::SeqCst);
        lock(&self.wake).pending = true;
        self.cv.notify_one();
    }

    /// Keep a write sled applied until a flush covers it (under the write
    /// lock, so in the order applied).
    pub(super) fn push_pending(&self, p: Pending) {
        let at = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.pending).push_back((at, p));
    }

    /// [`StoreError::Recovering`] while sled waits to be reopened.
    pub(super) fn recovering(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Recovering {
                path: self.dir.clone(),
                cause: lock(&self.broken_cause).clone(),
            });
        }
        Ok(())
    }

    /// `Ok` while the filesystem has at least the reserve free.
    pub(super) fn space_ok(&self) -> Result<(), StoreError> {
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
pub(super) enum Pending {
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
pub(super) const MAX_RECOVERIES: u32 = 3;
/// The least free space a reopen waits for, whatever the reserve: sled
/// writes as it opens.
pub(super) const REOPEN_MIN_FREE: u64 = 1 << 20;
/// How often the flusher looks for free space while sled waits to be
/// reopened.
pub(super) const SPACE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

pub(super) fn run_flusher(shared: Arc<Shared>) {
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
pub(super) fn fail_pending(shared: &Shared, error: &str) {
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
pub(super) fn recover(shared: &Shared) -> Result<bool, StoreError> {
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
pub(super) fn wait_for_space(shared: &Shared) -> bool {
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
pub(super) fn reopen(shared: &Shared) -> Result<(Handles, u64), StoreError> {
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

pub(super) struct Inner {
    pub(super) shared: Arc<Shared>,
    pub(super) flusher: Mutex<Option<JoinHandle<()>>>,
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
