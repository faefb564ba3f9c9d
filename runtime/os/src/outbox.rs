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
mod tests {
    use super::*;
    use crate::sidefile::test_util::copy_dir;
    use ffrtmp_runtime::model::Outcome;

    fn finished(job: &str, token: u64) -> (AttemptRef, Vec<u8>) {
        let frame = wire::encode(&ToMaster::Finished {
            job_id: job.into(),
            token,
            outcome: Outcome::Cancelled,
            energy: None,
        })
        .unwrap();
        (
            AttemptRef {
                job_id: job.into(),
                token,
            },
            frame,
        )
    }

    /// An outbox of `n` results for node `w1`, closed; returns its path.
    async fn written(dir: &Path, n: u64) -> PathBuf {
        let path = dir.join("outbox.sled");
        let o = Outbox::open(&path, "w1").unwrap();
        for t in 1..=n {
            let (a, f) = finished(&format!("job-{t:04}"), t);
            o.put(&a, f).await.unwrap();
        }
        path
    }

    fn refused(r: Result<Outbox, OutboxError>) -> String {
        match r {
            Err(e @ OutboxError::Refused { .. }) => e.to_string(),
            Err(e) => panic!("expected a refusal, got {e}"),
            Ok(_) => panic!("expected a refusal, the outbox opened"),
        }
    }

    #[tokio::test]
    async fn survives_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sled");
        let (a1, f1) = finished("j1", 7);
        let (a2, f2) = finished("j1", 9);
        {
            let o = Outbox::open(&path, "w1").unwrap();
            assert!(o.is_empty());
            o.put(&a1, f1.clone()).await.unwrap();
            o.put(&a2, f2.clone()).await.unwrap();
            assert!(!o.is_empty());
        }
        let o = Outbox::open(&path, "w1").unwrap();
        assert_eq!(
            o.pending().unwrap(),
            vec![(a1.clone(), f1), (a2.clone(), f2.clone())]
        );
        o.remove(&a1).unwrap();
        assert_eq!(o.pending().unwrap(), vec![(a2.clone(), f2)]);
        o.remove(&a2).unwrap();
        assert!(o.is_empty());
    }

    #[tokio::test]
    async fn a_record_that_is_not_a_result_is_refused_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sled");
        {
            let o = Outbox::open(&path, "w1").unwrap();
            let (a, _) = finished("j", 1);
            o.put(&a, b"garbage".to_vec()).await.unwrap();
            assert!(matches!(o.pending(), Err(OutboxError::Refused { .. })));
            assert!(!o.is_empty(), "nothing was dropped");
        }
        let msg = refused(Outbox::open(&path, "w1"));
        assert!(msg.contains("does not decode"), "{msg}");
        assert!(
            msg.contains(".rejected"),
            "says how to start without it: {msg}"
        );
    }

    #[tokio::test]
    async fn a_result_under_the_wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sled");
        {
            let o = Outbox::open(&path, "w1").unwrap();
            let (a, _) = finished("j", 1);
            let (_, other) = finished("k", 2);
            o.put(&a, other).await.unwrap();
        }
        let msg = refused(Outbox::open(&path, "w1"));
        assert!(msg.contains("under another key"), "{msg}");
    }

    #[tokio::test]
    async fn another_nodes_outbox_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 1).await;
        let msg = refused(Outbox::open(&path, "w2"));
        assert!(msg.contains("belongs to node w1"), "{msg}");
        // Refusing changed nothing: its node still opens it, results intact.
        assert_eq!(
            Outbox::open(&path, "w1").unwrap().pending().unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn an_older_copy_of_the_outbox_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 2).await;
        let backup = dir.path().join("backup.sled");
        copy_dir(&path, &backup);
        {
            let o = Outbox::open(&path, "w1").unwrap();
            let (a, f) = finished("job-late", 3);
            o.put(&a, f).await.unwrap();
        }
        fs::remove_dir_all(&path).unwrap();
        copy_dir(&backup, &path);
        let msg = refused(Outbox::open(&path, "w1"));
        assert!(msg.contains("3 results were written"), "{msg}");
        assert!(msg.contains("up to number 2"), "{msg}");
    }

    /// sled silently keeps only what precedes damage to its log; the side
    /// file turns that into a refusal. Each case damages a real sled file.
    #[tokio::test]
    async fn a_damaged_database_is_refused_whatever_sled_recovers() {
        type Damage = fn(&Path);
        let cases: [(&str, Damage); 4] = [
            ("log file emptied", |p| {
                fs::write(p.join("db"), b"").unwrap();
            }),
            ("log file removed", |p| {
                fs::remove_file(p.join("db")).unwrap()
            }),
            ("log truncated", |p| {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(p.join("db"))
                    .unwrap();
                f.set_len(3000).unwrap();
            }),
            ("garbage inside the log", |p| {
                use std::io::{Seek, SeekFrom, Write};
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .open(p.join("db"))
                    .unwrap();
                f.seek(SeekFrom::Start(1000)).unwrap();
                f.write_all(&[0xAB; 64]).unwrap();
            }),
        ];
        for (what, damage) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = written(dir.path(), 20).await;
            damage(&path);
            let msg = refused(Outbox::open(&path, "w1"));
            assert!(msg.contains("20 results were written"), "{what}: {msg}");
        }
    }

    /// A live holder of the outbox is named as the cause, with no advice to
    /// move the outbox aside (a second node on a data dir in use got that).
    #[tokio::test]
    async fn an_outbox_in_use_is_not_called_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 1).await;
        let live = Outbox::open(&path, "w1").unwrap();
        let msg = match Outbox::open(&path, "w1") {
            Err(e @ OutboxError::Blocked { .. }) => e.to_string(),
            Err(e) => panic!("expected the lock as the cause, got {e}"),
            Ok(_) => panic!("opened twice"),
        };
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(!msg.contains(".rejected"), "{msg}");
        drop(live);
    }

    #[tokio::test]
    async fn an_unreadable_side_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 1).await;
        fs::write(side_file(&path), b"{not json").unwrap();
        let msg = refused(Outbox::open(&path, "w1"));
        assert!(msg.contains("side file"), "{msg}");
    }

    #[tokio::test]
    async fn results_of_another_protocol_version_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 1).await;
        {
            let db = sled::open(&path).unwrap();
            let mut m: Meta = serde_json::from_slice(&db.get(META_KEY).unwrap().unwrap()).unwrap();
            m.protocol_version = PROTOCOL_VERSION - 1;
            db.insert(META_KEY, serde_json::to_vec(&m).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let msg = refused(Outbox::open(&path, "w1"));
        assert!(msg.contains("protocol version"), "{msg}");
    }

    #[tokio::test]
    async fn a_missing_side_file_is_recreated_and_checks_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 2).await;
        fs::remove_file(side_file(&path)).unwrap();
        {
            let o = Outbox::open(&path, "w1").unwrap();
            assert_eq!(o.pending().unwrap().len(), 2);
        }
        let side: Meta = serde_json::from_slice(&fs::read(side_file(&path)).unwrap()).unwrap();
        assert_eq!(side.seq, 2);
    }

    /// The disk fills to its last byte under a write: sled fails it and
    /// refuses every later write; the outbox says so, and once space is
    /// back it reopens with every check of `open` and takes results again;
    /// what it had made durable is all there.
    #[tokio::test]
    async fn a_write_that_meets_a_full_disk_is_mended_by_a_reopen() {
        use crate::sidefile::test_util::{fill_to_the_last_byte, Tmpfs};
        let dir = tempfile::tempdir().unwrap();
        let mnt = Tmpfs::mount(&dir.path().join("mnt"), "24m");
        let path = mnt.0.join("outbox.sled");
        let mut o = Outbox::open(&path, "w1").unwrap();
        o.set_disk_reserve(0);
        let (a, f) = finished("j0", 1);
        o.put(&a, f).await.unwrap();
        let mut taken = vec![a];
        fill_to_the_last_byte(&mnt.0.join("filler"));
        let mut failed = None;
        for n in 1..100_000u64 {
            let (a, f) = finished(&format!("j{n}"), n);
            match o.put(&a, f.clone()).await {
                // Durable in sled; only its side file lags behind (allowed:
                // sled may be ahead of it, never behind).
                Ok(()) | Err(OutboxError::Side { .. }) => taken.push(a),
                Err(e) => {
                    assert!(matches!(e, OutboxError::Sled(_)), "{e}");
                    failed = Some((a, f));
                    break;
                }
            }
        }
        let (a, f) = failed.expect("sled met the full disk");
        assert!(o.needs_reopen());
        let (b, g) = finished("late", 7);
        assert!(matches!(
            o.put(&b, g.clone()).await,
            Err(OutboxError::Broken { .. })
        ));
        assert!(matches!(o.reopen(), Err(OutboxError::Full { .. })));

        std::fs::remove_file(mnt.0.join("filler")).unwrap();
        o.reopen().unwrap();
        assert!(!o.needs_reopen());
        o.put(&a, f).await.unwrap();
        o.put(&b, g).await.unwrap();
        taken.extend([a, b]);
        let mut want: Vec<AttemptRef> = taken.clone();
        want.sort_by_key(key);
        let got: Vec<AttemptRef> = o.pending().unwrap().into_iter().map(|(a, _)| a).collect();
        assert_eq!(got, want);
        drop(o);
        let o = Outbox::open(&path, "w1").unwrap();
        let got: Vec<AttemptRef> = o.pending().unwrap().into_iter().map(|(a, _)| a).collect();
        assert_eq!(got, want, "all there after a close and an open");
        drop(o);
    }
}
