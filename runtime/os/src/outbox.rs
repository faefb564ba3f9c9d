//! A worker's outbox: every `Finished` is written here, durably,
//! before it is sent, and removed only when the master acknowledges it. A
//! result produced while the master is unreachable (or while this worker is
//! restarting) is therefore delivered after reconnection; the master applies
//! a `Finished` once per fencing token and acknowledges duplicates, so the
//! result takes effect exactly once.
//!
//! # Refusing a bad outbox
//! sled recovers from a damaged log by keeping what precedes the damage, as
//! it would after a torn write: an outbox whose file was corrupted,
//! truncated, emptied, or replaced by an older copy opens *without error*,
//! holding fewer results than were written. Those results would be lost
//! silently. So the outbox keeps a write sequence number in two places: in
//! sled, in the same batch as each record, and in a side file
//! (`<dir>.meta`, e.g. `outbox.meta` beside `outbox.sled`) rewritten
//! atomically after each flush ([`crate::sidefile`], shared with the
//! master's job store). The side file is never ahead of what sled
//! made durable, so on open `sled seq < side seq` proves that sled lost
//! writes. [`Outbox::open`] refuses such an outbox, and also one that
//! belongs to another node, one written by another protocol version with
//! results pending, and one holding a record that does not decode — each
//! with an [`OutboxError::Refused`] that says what is wrong and how to start
//! without it (after which the master reruns every attempt whose result it
//! never received: nothing is lost that the operator did not choose to
//! drop).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::sidefile;
use ffrtmp_runtime::wire::{self, AttemptRef, ToMaster, PROTOCOL_VERSION};

/// The sled key of the meta record. Result keys start with a job id, which
/// is never empty, so no result key starts with a zero byte.
const META_KEY: &[u8] = b"\0ffrtmp-outbox-meta";
/// The layout version of the outbox and its side file.
const FORMAT: u32 = 1;

/// What the outbox records about itself, in sled and in the side file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    format: u32,
    node_id: String,
    protocol_version: u32,
    /// How many results have been written, ever.
    seq: u64,
}

/// Why an outbox cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The outbox is damaged, stale, or not this node's: it is left as it is
    /// and the worker must not start on it.
    #[error(
        "refusing the outbox {}: {problem}. It may hold results the master has not \
         received, and starting without them would lose them silently. Inspect it, or \
         move it aside to start afresh: `mv {} {}.rejected && mv {} {}.rejected`; the \
         master then reruns every attempt whose result it never received",
        path.display(), path.display(), path.display(), side.display(), side.display()
    )]
    Refused {
        /// The sled directory.
        path: PathBuf,
        /// Its side file.
        side: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// sled could not open the outbox for a reason other than damage: a
    /// live process holds it, or the disk is full.
    #[error("cannot open the outbox {}: {cause}", path.display())]
    Blocked {
        /// The sled directory.
        path: PathBuf,
        /// Why.
        cause: sidefile::OpenBlocked,
    },
    /// The outbox's filesystem is below [`sidefile::DISK_RESERVE`]: the
    /// result was not written (sled must never meet a full disk: it would
    /// refuse every later operation until reopened).
    #[error("the outbox's filesystem ({}) has {free} bytes free, below the {reserve} bytes kept in reserve", path.display())]
    Full {
        /// The sled directory.
        path: PathBuf,
        /// Bytes free.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// sled reported an I/O or storage error.
    #[error("outbox storage error: {0}")]
    Sled(#[from] sled::Error),
    /// sled failed to write its log earlier and refuses every write until
    /// it is reopened ([`Outbox::reopen`]); results wait in memory.
    #[error(
        "the outbox {} could not write its log; it is reopened once its filesystem has space again",
        path.display()
    )]
    Broken {
        /// The sled directory.
        path: PathBuf,
    },
    /// The side file could not be written.
    #[error("outbox side file {}: {source}", path.display())]
    Side {
        /// The side file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Unacknowledged `Finished` frames, keyed by attempt, in a sled database
/// checked against its side file (see the module documentation).
#[derive(Clone)]
pub struct Outbox {
    /// `None` only while [`Outbox::reopen`] could not open it again.
    db: Option<sled::Db>,
    /// Set when sled failed a write ([`Outbox::needs_reopen`]).
    broken: Arc<std::sync::atomic::AtomicBool>,
    /// Free bytes below which a result is refused before it reaches sled.
    reserve: u64,
    dir: PathBuf,
    side: PathBuf,
    node_id: String,
    /// The last sequence number handed out.
    seq: Arc<AtomicU64>,
    /// Serialises side-file writes; holds the highest seq written there.
    side_seq: Arc<Mutex<u64>>,
}

fn key(a: &AttemptRef) -> Vec<u8> {
    let mut k = a.job_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&a.token.to_be_bytes());
    k
}

pub use crate::sidefile::side_file;

/// Decode one stored result, checking that it is filed under its own key.
fn decode_record(k: &[u8], v: &[u8]) -> Result<AttemptRef, String> {
    match wire::decode::<ToMaster>(v) {
        Ok(ToMaster::Finished { job_id, token, .. }) => {
            let a = AttemptRef { job_id, token };
            if key(&a) == k {
                Ok(a)
            } else {
                Err(format!(
                    "the result for job {} token {} is filed under another key",
                    a.job_id, a.token
                ))
            }
        }
        Ok(other) => Err(format!("a record holds a {other:?}, not a result")),
        Err(e) => Err(format!("a record does not decode as a result ({e})")),
    }
}

/// Write `meta` to `path` atomically ([`sidefile::write_atomic`]).
fn write_side(path: &Path, meta: &Meta) -> std::io::Result<()> {
    let body = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    sidefile::write_atomic(path, &body)
}

impl Outbox {
    /// Open (or create) the outbox of node `node_id` in `dir`, refusing it
    /// if it is damaged, stale, or another node's (module documentation).
    pub fn open(dir: &Path, node_id: &str) -> Result<Outbox, OutboxError> {
        let side = side_file(dir);
        let refuse = |problem: String| OutboxError::Refused {
            path: dir.to_path_buf(),
            side: side.clone(),
            problem,
        };
        let side_meta: Option<Meta> = match fs::read(&side) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                refuse(format!(
                    "its side file {} is unreadable ({e})",
                    side.display()
                ))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(OutboxError::Side {
                    path: side.clone(),
                    source: e,
                })
            }
        };
        let db = sidefile::open_sled(&sled::Config::new().path(dir)).map_err(|e| {
            match sidefile::open_blocked(dir, &e) {
                Some(cause) => OutboxError::Blocked {
                    path: dir.to_path_buf(),
                    cause,
                },
                None => refuse(format!("sled cannot open it ({e})")),
            }
        })?;
        let sled_meta: Option<Meta> = match db.get(META_KEY)? {
            Some(v) => Some(
                serde_json::from_slice(&v)
                    .map_err(|e| refuse(format!("its meta record is unreadable ({e})")))?,
            ),
            None => None,
        };
        for m in sled_meta.iter().chain(side_meta.iter()) {
            if m.format != FORMAT {
                return Err(refuse(format!(
                    "it has layout {}, this build reads layout {FORMAT}",
                    m.format
                )));
            }
            if m.node_id != node_id {
                return Err(refuse(format!(
                    "it belongs to node {}, and this is node {node_id} (was a data \
                     directory copied from another node?)",
                    m.node_id
                )));
            }
        }
        let sled_seq = sled_meta.as_ref().map_or(0, |m| m.seq);
        if let Some(s) = &side_meta {
            if sled_seq < s.seq {
                return Err(refuse(format!(
                    "{} results were written to it but the database holds writes up to \
                     number {sled_seq}: it was damaged, truncated, or replaced by an older \
                     copy, and sled recovered what came before the damage",
                    s.seq
                )));
            }
        }
        let mut pending = 0usize;
        for item in db.iter() {
            let (k, v) = item?;
            if &k[..] == META_KEY {
                continue;
            }
            decode_record(&k, &v).map_err(|e| refuse(format!("{e} (key {k:?})")))?;
            pending += 1;
        }
        if let Some(m) = &sled_meta {
            if m.protocol_version != PROTOCOL_VERSION && pending > 0 {
                return Err(refuse(format!(
                    "its {pending} results were written by protocol version {}, and this \
                     build speaks version {PROTOCOL_VERSION} (drain a worker before \
                     upgrading it, or start the build that wrote them to deliver them)",
                    m.protocol_version
                )));
            }
        }
        if side_meta.is_none() && sled_seq > 0 {
            tracing::warn!(
                side = %side.display(),
                "the outbox side file is missing; recreating it (writes before now cannot be checked)"
            );
        }
        let meta = Meta {
            format: FORMAT,
            node_id: node_id.to_string(),
            protocol_version: PROTOCOL_VERSION,
            seq: sled_seq,
        };
        // A full disk at start is named as such, not as damage.
        let full = || OutboxError::Blocked {
            path: dir.to_path_buf(),
            cause: sidefile::OpenBlocked::Full,
        };
        if sled_meta.as_ref() != Some(&meta) {
            db.insert(META_KEY, serde_json::to_vec(&meta).map_err(sled_io)?)?;
            db.flush().map_err(|e| match &e {
                sled::Error::Io(io) if sidefile::is_full(io) => full(),
                _ => OutboxError::Sled(e),
            })?;
        }
        if side_meta.as_ref() != Some(&meta) {
            write_side(&side, &meta).map_err(|e| {
                if sidefile::is_full(&e) {
                    full()
                } else {
                    OutboxError::Side {
                        path: side.clone(),
                        source: e,
                    }
                }
            })?;
        }
        Ok(Outbox {
            db: Some(db),
            broken: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            reserve: sidefile::DISK_RESERVE,
            dir: dir.to_path_buf(),
            side,
            node_id: node_id.to_string(),
            seq: Arc::new(AtomicU64::new(sled_seq)),
            side_seq: Arc::new(Mutex::new(sled_seq)),
        })
    }

    fn meta(&self, seq: u64) -> Meta {
        Meta {
            format: FORMAT,
            node_id: self.node_id.clone(),
            protocol_version: PROTOCOL_VERSION,
            seq,
        }
    }

    /// Store an encoded `ToMaster::Finished` for `attempt` and wait until it
    /// is on disk (and the side file records it).
    pub async fn put(&self, attempt: &AttemptRef, frame: Vec<u8>) -> Result<(), OutboxError> {
        self.space_for(self.reserve)?;
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut batch = sled::Batch::default();
        batch.insert(key(attempt), frame);
        batch.insert(
            META_KEY,
            serde_json::to_vec(&self.meta(seq)).map_err(sled_io)?,
        );
        let db = self.writable()?;
        let res = match db.apply_batch(batch) {
            Ok(()) => db.flush_async().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            // sled keeps this error and refuses every later write until it
            // is reopened.
            self.broken.store(true, Ordering::SeqCst);
            return Err(e.into());
        }
        // Only now, with sled durable up to `seq`, may the side file say so.
        let (side, meta, written) = (self.side.clone(), self.meta(seq), self.side_seq.clone());
        tokio::task::spawn_blocking(move || {
            let mut w = written.lock().unwrap_or_else(|p| p.into_inner());
            if meta.seq > *w {
                write_side(&side, &meta)?;
                *w = meta.seq;
            }
            Ok::<(), std::io::Error>(())
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| OutboxError::Side {
            path: self.side.clone(),
            source: e,
        })
    }

    /// Forget an acknowledged attempt (made durable by the next `put`, or
    /// resent after a crash and acknowledged again: harmless).
    pub fn remove(&self, attempt: &AttemptRef) -> Result<(), OutboxError> {
        if let Err(e) = self.writable()?.remove(key(attempt)) {
            self.broken.store(true, Ordering::SeqCst);
            return Err(e.into());
        }
        Ok(())
    }

    /// The database, for reading.
    fn db(&self) -> Result<&sled::Db, OutboxError> {
        self.db.as_ref().ok_or_else(|| OutboxError::Broken {
            path: self.dir.clone(),
        })
    }

    /// The database, for writing: refused while it waits to be reopened.
    fn writable(&self) -> Result<&sled::Db, OutboxError> {
        if self.needs_reopen() {
            return Err(OutboxError::Broken {
                path: self.dir.clone(),
            });
        }
        self.db()
    }

    /// sled failed to write its log (a full disk under a flush): it refuses
    /// every write until [`Outbox::reopen`].
    pub fn needs_reopen(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Reopen the outbox after sled failed to write its log, once its
    /// filesystem has the reserve free: the old database is dropped (its
    /// file lock with it) and opened again with every check of
    /// [`Outbox::open`]. What sled had made durable is there; the results
    /// whose write failed are the caller's to put again (the node keeps
    /// them in memory). On an error the outbox stays closed and this can be
    /// tried again.
    pub fn reopen(&mut self) -> Result<(), OutboxError> {
        // sled writes as it opens: at least 1 MiB, whatever the reserve.
        self.space_for(self.reserve.max(1 << 20))?;
        let reserve = self.reserve;
        self.db = None;
        *self = Outbox::open(&self.dir.clone(), &self.node_id.clone())?;
        self.reserve = reserve;
        Ok(())
    }

    /// Refuse results below `bytes` free instead of the default reserve
    /// (a test lets writes reach sled on a full disk with 0).
    pub fn set_disk_reserve(&mut self, bytes: u64) {
        self.reserve = bytes;
    }

    /// [`OutboxError::Full`] while the filesystem has fewer than `bytes`
    /// free.
    fn space_for(&self, bytes: u64) -> Result<(), OutboxError> {
        match sidefile::free_bytes(&self.dir) {
            Ok(free) if free < bytes => Err(OutboxError::Full {
                path: self.dir.clone(),
                free,
                reserve: bytes,
            }),
            _ => Ok(()),
        }
    }

    /// Every unacknowledged frame with its attempt, oldest key first. A
    /// record that does not decode (damaged since [`Outbox::open`] checked
    /// it) is an error, never skipped.
    pub fn pending(&self) -> Result<Vec<(AttemptRef, Vec<u8>)>, OutboxError> {
        let mut out = Vec::new();
        for item in self.db()?.iter() {
            let (k, v) = item?;
            if &k[..] == META_KEY {
                continue;
            }
            let a = decode_record(&k, &v).map_err(|problem| OutboxError::Refused {
                path: self.dir.clone(),
                side: self.side.clone(),
                problem: format!("{problem} (key {k:?})"),
            })?;
            out.push((a, v.to_vec()));
        }
        Ok(out)
    }

    /// No result waits for an acknowledgement.
    pub fn is_empty(&self) -> bool {
        // Closed (a reopen failed): not known, so not empty.
        self.db.as_ref().is_some_and(|db| {
            db.len() <= usize::from(matches!(db.contains_key(META_KEY), Ok(true)))
        })
    }
}

fn sled_io(e: serde_json::Error) -> sled::Error {
    sled::Error::Io(std::io::Error::other(e))
}

#[cfg(test)]
mod tests;
