//! sled's layout: the job records and their index trees, the handles on
//! one open database, a write's order of steps, the repair pass, and
//! opening sled.

use super::*;

/// The on-disk encoding of a state in index keys. Fixed: never reorder.
pub(super) fn state_byte(s: JobState) -> u8 {
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

pub(super) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(super) fn tagged_key(tag: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The fields of an old record that locate its index entries.
#[derive(Deserialize)]
pub(super) struct IndexFields {
    pub(super) seq: u64,
    pub(super) state: JobState,
    pub(super) spec: IndexSpec,
}

#[derive(Deserialize)]
pub(super) struct IndexSpec {
    pub(super) priority: Priority,
}

/// An index entry's place: the tree and the key.
pub(super) type Entry = (Index, Vec<u8>);

/// The three index trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Index {
    Seq,
    State,
    Priority,
}

impl Index {
    pub(super) const ALL: [Index; 3] = [Index::Seq, Index::State, Index::Priority];

    pub(super) fn name(self) -> &'static str {
        match self {
            Index::Seq => "by_seq",
            Index::State => "by_state",
            Index::Priority => "by_priority",
        }
    }

    /// The key of a record's entry in this index.
    pub(super) fn key(self, seq: u64, state: JobState, priority: Priority) -> Vec<u8> {
        match self {
            Index::Seq => seq_key(seq).to_vec(),
            Index::State => tagged_key(state_byte(state), seq).to_vec(),
            Index::Priority => tagged_key(priority.rank(), seq).to_vec(),
        }
    }

    pub(super) fn key_of(self, job: &Job) -> Vec<u8> {
        self.key(job.seq, job.state, job.spec.priority)
    }

    pub(super) fn key_of_fields(self, f: &IndexFields) -> Vec<u8> {
        self.key(f.seq, f.state, f.spec.priority)
    }
}

/// sled's handles on one open database.
pub(super) struct Handles {
    pub(super) db: sled::Db,
    pub(super) jobs: sled::Tree,
    pub(super) by_seq: sled::Tree,
    pub(super) by_state: sled::Tree,
    pub(super) by_priority: sled::Tree,
}

impl Handles {
    pub(super) fn new(db: sled::Db) -> Result<Handles, StoreError> {
        Ok(Handles {
            jobs: db.open_tree("jobs")?,
            by_seq: db.open_tree("by_seq")?,
            by_state: db.open_tree("by_state")?,
            by_priority: db.open_tree("by_priority")?,
            db,
        })
    }

    pub(super) fn tree(&self, index: Index) -> &sled::Tree {
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
pub(super) fn apply(
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
pub(super) fn repair(h: &Handles) -> Result<usize, StoreError> {
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

/// Read one job through `h`.
pub(super) fn get_in(h: &Handles, id: &str) -> Result<Option<Job>, StoreError> {
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
pub(super) fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
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
                lock => {
                    return Err(match sidefile::blocked_by(lock, &e) {
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

pub(super) fn decode_job(id: &str, bytes: &[u8]) -> Result<Job, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("jobs/{id}"),
        message: e.to_string(),
    })
}
