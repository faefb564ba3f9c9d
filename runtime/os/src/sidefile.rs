//! Side files: a small record kept *beside* a sled database, rewritten
//! atomically, that says how far the database had got when it was written.
//!
//! sled recovers from a damaged log by keeping what precedes the damage, as
//! it would after a torn write, and opens without an error. A counter kept
//! both in sled (written with every write) and in a side file (rewritten
//! only after a flush made that many writes durable) turns such a silent
//! loss into something [`crate::outbox::Outbox::open`] and
//! [`crate::store::Store::open`] can see: `sled counter < side counter`
//! proves sled lost writes. This module holds what both share: where the
//! side file lives, the atomic replace, and a checksummed encoding.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The side file of the sled database in `dir`: `outbox.sled` →
/// `outbox.meta`, `master.sled` → `master.meta`.
pub fn side_file(dir: &Path) -> PathBuf {
    dir.with_extension("meta")
}

/// Open sled with `config`. sled 0.34 can panic while it recovers a
/// damaged log (a flipped bit once ended in "tried to serialize
/// Uninitialized" inside its recovery) instead of returning an error: the
/// panic is caught here and returned as [`sled::Error::Corruption`], so a
/// damaged store or outbox is refused with the usual message and recovery
/// command rather than crashing the node.
pub fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())) {
        Ok(res) => res,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(panic = %what, "sled panicked reading its log: treated as damage");
            Err(sled::Error::Corruption { at: None, bt: () })
        }
    }
}

/// Replace `path` with `body` atomically: a temporary file beside it, fsync,
/// rename over `path`, fsync of the directory. A crash leaves either the old
/// content or the new one, never a mix.
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("meta.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Copy the directory tree `from` (a sled database) to `to`, file by file,
/// leaving out the files whose name `skip` says.
pub fn copy_tree(
    from: &Path,
    to: &Path,
    skip: &dyn Fn(&std::ffi::OsStr) -> bool,
) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        if skip(&e.file_name()) {
            continue;
        }
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()), skip)?;
        } else {
            fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Why a sled database could not be opened, when the cause is not damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenBlocked {
    /// Another process holds sled's file lock (its pid, from `/proc/locks`,
    /// when found): a node is running on this data directory.
    Locked {
        /// The process holding the lock.
        pid: Option<u32>,
    },
    /// The filesystem is full (`ENOSPC`) or the user's quota is spent
    /// (`EDQUOT`).
    Full,
}

impl std::fmt::Display for OpenBlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenBlocked::Locked { pid: Some(pid) } => write!(
                f,
                "it is in use by another process (pid {pid}, holding its lock): is a node \
                 already running on this data directory? Stop that one first, or give this \
                 one another --data-dir; nothing is wrong with the data"
            ),
            OpenBlocked::Locked { pid: None } => write!(
                f,
                "it is in use by another process (its lock is held): is a node already \
                 running on this data directory? Stop that one first, or give this one \
                 another --data-dir; nothing is wrong with the data"
            ),
            OpenBlocked::Full => write!(
                f,
                "its filesystem is full (no space or quota left): free some space there and \
                 start again; nothing is wrong with the data"
            ),
        }
    }
}

/// Free space a sled database keeps in reserve on its filesystem: below
/// it, the store and the outbox refuse new writes *before* handing them to
/// sled. sled 0.34 poisons itself on a failed write of its log (every later
/// operation returns that error until the database is reopened), so it must
/// never meet `ENOSPC`; refusing early keeps it usable, and writes resume by
/// themselves once space is freed.
pub const DISK_RESERVE: u64 = 32 * 1024 * 1024;

/// Bytes available to this process on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let (blocks, size): (u64, u64) = (st.blocks_available(), st.fragment_size());
    Ok(blocks.saturating_mul(size))
}

/// Whether an I/O error means the disk is full (`ENOSPC`, `EDQUOT`).
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Tell a lock held by another process and a full disk apart from damage
/// when sled cannot open the database in `dir`. The lock is asked about
/// directly ([`lock_state`]), never read from the words of sled's error.
pub fn open_blocked(dir: &Path, e: &sled::Error) -> Option<OpenBlocked> {
    blocked_by(lock_state(dir), e)
}

/// [`open_blocked`] for a caller that already asked the lock.
pub fn blocked_by(lock: LockState, e: &sled::Error) -> Option<OpenBlocked> {
    match (lock, e) {
        (LockState::Held { pid, .. }, _) => Some(OpenBlocked::Locked { pid }),
        (LockState::Free, sled::Error::Io(io)) if is_full(io) => Some(OpenBlocked::Full),
        _ => None,
    }
}

/// Who holds sled's file lock (an exclusive `flock` on `<dir>/db`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Nobody (or there is no database yet).
    Free,
    /// Held. `ours`: by this process, which happens for a moment after a
    /// handle was dropped, while a task on sled's I/O pool still keeps the
    /// log open; worth waiting for. Otherwise another process (`pid`, from
    /// `/proc/locks`, where known) uses the database: waiting would not help.
    Held {
        /// The holder, where `/proc/locks` names it.
        pid: Option<u32>,
        /// Whether the holder is this process.
        ours: bool,
    },
}

/// Asks the lock itself: a non-blocking `flock` on `<dir>/db`, released at
/// once when it is granted.
pub fn lock_state(dir: &Path) -> LockState {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join("db");
    let Ok(file) = fs::File::open(&path) else {
        return LockState::Free;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        // Dropping the guard unlocks.
        Ok(_granted) => LockState::Free,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = lock_holder(&path);
            LockState::Held {
                pid,
                ours: pid == Some(std::process::id()),
            }
        }
        // flock itself failed (not a lock question): let sled's error speak.
        Err(_) => LockState::Free,
    }
}

/// The pid holding a `flock` on `file`, from `/proc/locks` (Linux).
pub fn lock_holder(file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(file).ok()?;
    let (major, minor) = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .find_map(|line| {
            // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:7127042 0 EOF"
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
                .then(|| f.get(4)?.parse().ok())
                .flatten()
        })
}

/// A value with the CRC-32 of its JSON encoding, so a damaged side file is
/// told apart from one that says something unexpected.
#[derive(Serialize, Deserialize)]
struct Checked<T> {
    value: T,
    crc32: u32,
}

/// Write `value` to `path` atomically ([`write_atomic`]) with a checksum.
pub fn write_checked<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_value(value).map_err(std::io::Error::other)?;
    let crc32 = crc32fast::hash(json.to_string().as_bytes());
    let body =
        serde_json::to_vec(&Checked { value: json, crc32 }).map_err(std::io::Error::other)?;
    write_atomic(path, &body)
}

/// Why a side file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    /// Reading the file failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The side file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not decode or its checksum does not match.
    #[error("the side file {} is damaged ({problem})", path.display())]
    Damaged {
        /// The side file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Read a file written by [`write_checked`]: `None` if there is none.
pub fn read_checked<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, SideError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SideError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let damaged = |problem: String| SideError::Damaged {
        path: path.to_path_buf(),
        problem,
    };
    let checked: Checked<serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if crc32fast::hash(checked.value.to_string().as_bytes()) != checked.crc32 {
        return Err(damaged("checksum mismatch".into()));
    }
    serde_json::from_value(checked.value)
        .map(Some)
        .map_err(|e| damaged(e.to_string()))
}

/// Test helpers shared by the modules that keep side files.
#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};

    /// Copy a directory tree (a sled database) file by file.
    pub(crate) fn copy_dir(from: &Path, to: &Path) {
        super::copy_tree(from, to, &|_| false).unwrap();
    }

    /// A tmpfs a test mounted; unmounted (by its path) when dropped.
    pub(crate) struct Tmpfs(pub(crate) PathBuf);

    impl Tmpfs {
        pub(crate) fn mount(at: &Path, size: &str) -> Tmpfs {
            std::fs::create_dir_all(at).unwrap();
            let status = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(at)
                .status()
                .expect("mount (the store tests run as root)");
            assert!(status.success(), "mount tmpfs at {}", at.display());
            Tmpfs(at.to_path_buf())
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    /// Fill the filesystem of `path` to its last byte with one file.
    pub(crate) fn fill_to_the_last_byte(path: &Path) {
        use std::io::Write;
        let mut f = std::fs::File::create(path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling: {e}"),
            }
        }
        // The tail of a page.
        while let Ok(n) = f.write(&[0u8]) {
            if n == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V {
        n: u64,
        s: String,
    }

    /// The pid of a flock holder is read back from /proc/locks.
    #[test]
    fn lock_holder_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sled");
        let db = sled::open(&path).unwrap();
        assert_eq!(lock_holder(&path.join("db")), Some(std::process::id()));
        let Err(err) = sled::Config::new().path(&path).open() else {
            panic!("the lock refuses a second open");
        };
        let blocked = open_blocked(&path, &err).expect("a lock");
        assert_eq!(
            blocked,
            OpenBlocked::Locked {
                pid: Some(std::process::id())
            }
        );
        assert!(blocked.to_string().contains("already running"));
        drop(db);
    }

    /// A child process that holds a `flock` on a file until dropped.
    struct LockHolder(std::process::Child);

    impl Drop for LockHolder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Whether a lock is held, and by whom, comes from the lock itself, not
    /// from the words of sled's error: an error that says nothing about a
    /// lock is still told apart as "in use by pid N" while another process
    /// holds it, and a lock of this process's own is the only one worth
    /// waiting for.
    #[test]
    fn the_lock_is_asked_not_read_from_the_error_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sled");
        drop(sled::open(&path).unwrap());
        assert_eq!(lock_state(&path), LockState::Free);
        let vague = sled::Error::Io(std::io::Error::other("something went wrong"));
        assert_eq!(open_blocked(&path, &vague), None);

        // Another process holds it: `flock --no-fork FILE sleep 600` (argv,
        // no shell; no fork, so the holder is the child we kill).
        let child = std::process::Command::new("flock")
            .args(["--exclusive", "--no-fork"])
            .arg(path.join("db"))
            .args(["sleep", "600"])
            .spawn()
            .expect("flock(1) from util-linux");
        let holder = LockHolder(child);
        let pid = holder.0.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while lock_state(&path) == LockState::Free {
            assert!(
                std::time::Instant::now() < deadline,
                "flock never took the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let held = LockState::Held {
            pid: Some(pid),
            ours: false,
        };
        assert_eq!(lock_state(&path), held);
        assert_eq!(
            open_blocked(&path, &vague),
            Some(OpenBlocked::Locked { pid: Some(pid) })
        );
        // The store refuses it without waiting for a lock it cannot get.
        match crate::store::Store::open(&path) {
            Err(crate::store::StoreError::Blocked { cause, .. }) => {
                assert_eq!(cause, OpenBlocked::Locked { pid: Some(pid) })
            }
            other => panic!("{:?}", other.map(|_| "opened")),
        }
        drop(holder);
        while lock_state(&path) != LockState::Free {
            assert!(
                std::time::Instant::now() < deadline,
                "the lock outlived its holder"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }

        // This process's own lock (sled's pool letting go late) is `ours`.
        let db = sled::open(&path).unwrap();
        assert_eq!(
            lock_state(&path),
            LockState::Held {
                pid: Some(std::process::id()),
                ours: true
            }
        );
        drop(db);
    }

    #[test]
    fn round_trip_and_damage_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = side_file(&dir.path().join("x.sled"));
        assert_eq!(p, dir.path().join("x.meta"));
        assert_eq!(read_checked::<V>(&p).unwrap(), None);
        let v = V {
            n: 42,
            s: "a".into(),
        };
        write_checked(&p, &v).unwrap();
        assert_eq!(read_checked::<V>(&p).unwrap(), Some(v));
        let text = fs::read_to_string(&p).unwrap().replace("42", "43");
        fs::write(&p, text).unwrap();
        let err = read_checked::<V>(&p).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        fs::write(&p, b"{trunc").unwrap();
        assert!(matches!(
            read_checked::<V>(&p),
            Err(SideError::Damaged { .. })
        ));
    }
}
