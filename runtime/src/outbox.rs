//! A worker's outbox (DESIGN §7): every `Finished` is written here, durably,
//! before it is sent, and removed only when the master acknowledges it. A
//! result produced while the master is unreachable (or while this worker is
//! restarting) is therefore delivered after reconnection; the master applies
//! a `Finished` once per fencing token and acknowledges duplicates, so the
//! result takes effect exactly once.

use std::path::Path;

use crate::store::StoreError;
use crate::wire::{self, AttemptRef, ToMaster};

/// Unacknowledged `Finished` frames, keyed by attempt, in a sled database.
#[derive(Clone)]
pub struct Outbox {
    db: sled::Db,
}

fn key(a: &AttemptRef) -> Vec<u8> {
    let mut k = a.job_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&a.token.to_be_bytes());
    k
}

impl Outbox {
    /// Open (or create) the outbox in `dir`.
    pub fn open(dir: &Path) -> Result<Outbox, StoreError> {
        Ok(Outbox {
            db: sled::Config::new().path(dir).open()?,
        })
    }

    /// Store an encoded `ToMaster::Finished` for `attempt` and wait until it
    /// is on disk.
    pub async fn put(&self, attempt: &AttemptRef, frame: Vec<u8>) -> Result<(), StoreError> {
        self.db.insert(key(attempt), frame)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Forget an acknowledged attempt (made durable by the next `put`, or
    /// resent after a crash and acknowledged again: harmless).
    pub fn remove(&self, attempt: &AttemptRef) -> Result<(), StoreError> {
        self.db.remove(key(attempt))?;
        Ok(())
    }

    /// Every unacknowledged frame with its attempt, oldest key first. A
    /// record that does not decode as a `Finished` is dropped with a warning
    /// (it could never be delivered).
    pub fn pending(&self) -> Result<Vec<(AttemptRef, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iter() {
            let (k, v) = item?;
            match wire::decode::<ToMaster>(&v) {
                Ok(ToMaster::Finished { job_id, token, .. }) => {
                    out.push((AttemptRef { job_id, token }, v.to_vec()))
                }
                _ => {
                    tracing::warn!(key = ?k, "dropping an outbox record that is not a Finished");
                    self.db.remove(k)?;
                }
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

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

    #[tokio::test]
    async fn survives_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sled");
        let (a1, f1) = finished("j1", 7);
        let (a2, f2) = finished("j1", 9);
        {
            let o = Outbox::open(&path).unwrap();
            assert!(o.is_empty());
            o.put(&a1, f1.clone()).await.unwrap();
            o.put(&a2, f2.clone()).await.unwrap();
        }
        let o = Outbox::open(&path).unwrap();
        assert_eq!(
            o.pending().unwrap(),
            vec![(a1.clone(), f1), (a2.clone(), f2.clone())]
        );
        o.remove(&a1).unwrap();
        assert_eq!(o.pending().unwrap(), vec![(a2, f2)]);
    }

    #[tokio::test]
    async fn drops_records_that_are_not_results() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        let (a, _) = finished("j", 1);
        o.put(&a, b"garbage".to_vec()).await.unwrap();
        assert!(o.pending().unwrap().is_empty());
        assert!(o.is_empty());
    }
}
