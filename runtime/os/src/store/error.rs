//! Why a store operation failed.

use super::*;

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
