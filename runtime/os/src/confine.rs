//! Opening a job's files beneath its media root, at run time, without
//! following a symlink anywhere in the path.
//!
//! Paths are checked at submission (`spec`), but anyone who can write in a
//! media root can swap a directory of a job's path, or the file itself, for a
//! symlink between the `201` and the start. So the worker never hands FFmpeg
//! a path: it opens the files itself, here, and passes the descriptors.
//!
//! - the root is found by prefix among the worker's (canonical) media roots
//!   and opened as a directory; it is the operator's configuration, trusted;
//! - the rest of the path is opened beneath it with `openat2(2)` and
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`; where the
//!   kernel has no `openat2` (`ENOSYS`, Linux < 5.6) by a walk, one
//!   `openat(O_NOFOLLOW | O_DIRECTORY)` per directory and `O_NOFOLLOW` for the
//!   leaf. Both refuse any symlink on the way, so what is opened is beneath
//!   the root whatever the path's components are swapped for;
//! - an input must be a regular file (`fstat` on the descriptor; opened
//!   `O_NONBLOCK` so a FIFO in its place does not block the open);
//! - an output is a new hidden temporary file (`O_CREAT | O_EXCL |
//!   O_NOFOLLOW`) in the resolved directory, published under its final name
//!   only on success, by `renameat2(RENAME_NOREPLACE)` (or, where the job
//!   asked to overwrite, a plain `renameat` over a regular file), both on the
//!   directory's descriptor. Dropped unpublished, it is unlinked: a failed,
//!   cancelled or killed attempt leaves nothing under the final name.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

use ffrtmp_runtime::model::FailureReason;

/// How a path is resolved beneath its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, falling back
    /// to [`Method::Walk`] where the kernel lacks it (`ENOSYS`).
    Auto,
    /// Component by component with `O_NOFOLLOW` (what `Auto` falls back on;
    /// chosen explicitly by tests).
    Walk,
}

/// Why a job's file could not be opened beneath its root.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The path is not inside any of the worker's media roots, or does not
    /// resolve beneath it without a symlink (or `..`, or a non-directory).
    #[error("{path} does not resolve inside a media root without symlinks: {detail}")]
    Outside {
        /// The path as the job gave it.
        path: PathBuf,
        /// Where the walk beneath the root stopped, and why.
        detail: String,
    },
    /// Nothing there (the input was removed, or the output's directory).
    #[error("{path} does not exist")]
    NotFound {
        /// The path that was not there.
        path: PathBuf,
    },
    /// There, but not a regular file.
    #[error("{path} is not a regular file")]
    NotRegular {
        /// The path of what was found.
        path: PathBuf,
    },
    /// The output's final name is taken and the job did not ask to overwrite.
    #[error("{path} already exists (the job does not set \"overwrite\": true)")]
    Exists {
        /// The output's final path.
        path: PathBuf,
    },
    /// The output's final name is taken by something that is not a regular
    /// file (a directory, a FIFO): never replaced, even with `overwrite`.
    #[error("{path} exists and is not a regular file")]
    InTheWay {
        /// The output's final path.
        path: PathBuf,
    },
    /// Anything else the system said.
    #[error("{path}: {err}")]
    Io {
        /// The path being opened.
        path: PathBuf,
        /// The system call's error.
        err: Errno,
    },
}

impl ConfineError {
    /// The job failure this error is reported as (all terminal: retrying on
    /// another node would meet the same file system).
    pub fn reason(&self) -> FailureReason {
        match self {
            ConfineError::Outside { .. } => FailureReason::PathOutsideMediaRoot,
            ConfineError::Exists { .. } | ConfineError::InTheWay { .. } => {
                FailureReason::OutputExists
            }
            ConfineError::NotFound { .. }
            | ConfineError::NotRegular { .. }
            | ConfineError::Io { .. } => FailureReason::InputRefused,
        }
    }

    fn from_errno(path: &Path, err: Errno) -> ConfineError {
        let path = path.to_path_buf();
        match err {
            // ELOOP: a symlink (RESOLVE_NO_SYMLINKS, O_NOFOLLOW); EXDEV: out
            // of the root (RESOLVE_BENEATH); ENOTDIR: a component that is not
            // a directory (any more).
            Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR => ConfineError::Outside {
                path,
                detail: match err {
                    Errno::ENOTDIR => "a component is not a directory".into(),
                    Errno::EXDEV => "it leads out of the root".into(),
                    _ => "a component is a symlink".into(),
                },
            },
            Errno::ENOENT => ConfineError::NotFound { path },
            err => ConfineError::Io { path, err },
        }
    }
}

/// The worker's media roots, and how paths are opened beneath them.
#[derive(Debug, Clone)]
pub struct Resolver {
    roots: Vec<PathBuf>,
    method: Method,
}

/// Where a job path lies: its root, the directories below it, its name.
struct Split<'a> {
    root: &'a Path,
    dirs: Vec<&'a OsStr>,
    name: &'a OsStr,
}

impl Resolver {
    /// Over `roots` (canonical, absolute: `spec::MediaRoots::roots`).
    pub fn new(roots: &[PathBuf]) -> Resolver {
        Resolver::with_method(roots, Method::Auto)
    }

    /// Same, resolving with `method`.
    pub fn with_method(roots: &[PathBuf], method: Method) -> Resolver {
        Resolver {
            roots: roots.to_vec(),
            method,
        }
    }

    /// The root holding `path` (the longest that is a prefix) and the
    /// components below it, all plain names.
    fn split<'a>(&'a self, path: &'a Path) -> Result<Split<'a>, ConfineError> {
        let outside = |detail: &str| ConfineError::Outside {
            path: path.to_path_buf(),
            detail: detail.into(),
        };
        let (root, rest) = self
            .roots
            .iter()
            .filter_map(|r| path.strip_prefix(r).ok().map(|rest| (r.as_path(), rest)))
            .max_by_key(|(r, _)| r.as_os_str().len())
            .ok_or_else(|| outside("it is not inside any of this worker's media roots"))?;
        let mut names = Vec::new();
        for c in rest.components() {
            match c {
                Component::Normal(n) => names.push(n),
                _ => return Err(outside("it has a component that is not a plain name")),
            }
        }
        let name = names
            .pop()
            .ok_or_else(|| outside("it names the root itself"))?;
        Ok(Split {
            root,
            dirs: names,
            name,
        })
    }

    /// Opens `rel` (plain names) beneath `root` with `flags` (plus
    /// `O_CLOEXEC | O_NOFOLLOW`), following no symlink.
    fn open_beneath(
        &self,
        root: &OwnedFd,
        rel: &[&OsStr],
        flags: OFlag,
        mode: Mode,
    ) -> nix::Result<OwnedFd> {
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        if self.method == Method::Auto {
            let mut joined = OsString::new();
            for (i, n) in rel.iter().enumerate() {
                if i > 0 {
                    joined.push("/");
                }
                joined.push(n);
            }
            let how = OpenHow::new()
                .flags(flags)
                .mode(if flags.contains(OFlag::O_CREAT) {
                    mode
                } else {
                    Mode::empty()
                })
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
            match fcntl::openat2(root, joined.as_os_str(), how) {
                Err(Errno::ENOSYS) => {}
                other => return other,
            }
        }
        walk(root, rel, flags, mode)
    }

    fn open_root(root: &Path) -> Result<OwnedFd, ConfineError> {
        fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| ConfineError::Io {
            path: root.to_path_buf(),
            err,
        })
    }

    /// Opens an input for reading: a regular file beneath its root.
    pub fn open_input(&self, path: &Path) -> Result<File, ConfineError> {
        let split = self.split(path)?;
        let root = Resolver::open_root(split.root)?;
        let mut rel = split.dirs.clone();
        rel.push(split.name);
        // O_NONBLOCK: a FIFO put in the file's place must not block the open.
        let fd = self
            .open_beneath(
                &root,
                &rel,
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
                Mode::empty(),
            )
            .map_err(|e| ConfineError::from_errno(path, e))?;
        let st = stat::fstat(&fd).map_err(|err| ConfineError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        if !is_regular(st.st_mode) {
            return Err(ConfineError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        // Reads are plain blocking reads again (O_NONBLOCK means nothing for
        // a regular file, but FFmpeg should not see it).
        let fl = OFlag::from_bits_truncate(fcntl::fcntl(&fd, fcntl::FcntlArg::F_GETFL).map_err(
            |err| ConfineError::Io {
                path: path.to_path_buf(),
                err,
            },
        )?);
        fcntl::fcntl(&fd, fcntl::FcntlArg::F_SETFL(fl - OFlag::O_NONBLOCK)).map_err(|err| {
            ConfineError::Io {
                path: path.to_path_buf(),
                err,
            }
        })?;
        Ok(File::from(fd))
    }

    /// Creates the output's temporary file in the output's directory
    /// (resolved beneath its root). `tag` makes the temporary name unique to
    /// the attempt (e.g. `<job id>-<token>`). Refuses at once if the final
    /// name is taken and `overwrite` is off, or is anything but a regular
    /// file.
    pub fn create_output(
        &self,
        path: &Path,
        tag: &str,
        overwrite: bool,
    ) -> Result<OutputFile, ConfineError> {
        let split = self.split(path)?;
        let root = Resolver::open_root(split.root)?;
        let dir = if split.dirs.is_empty() {
            root
        } else {
            self.open_beneath(
                &root,
                &split.dirs,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                Mode::empty(),
            )
            .map_err(|e| ConfineError::from_errno(path, e))?
        };
        check_final_name(&dir, split.name, path, overwrite)?;
        let tmp = temp_name(tag);
        let create = |dir: &OwnedFd| {
            self.open_beneath(
                dir,
                &[tmp.as_os_str()],
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                Mode::from_bits_truncate(0o644),
            )
        };
        let file = match create(&dir) {
            // Left by an attempt with this tag that died unpublished (or put
            // there by someone): unlinking removes the entry itself, never
            // what a symlink points at.
            Err(Errno::EEXIST) => {
                let _ = unistd::unlinkat(&dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
                create(&dir)
            }
            other => other,
        }
        .map_err(|e| ConfineError::from_errno(path, e))?;
        Ok(OutputFile {
            dir,
            file: File::from(file),
            tmp,
            name: split.name.to_os_string(),
            path: path.to_path_buf(),
            overwrite,
            published: false,
        })
    }
}

/// The walk: each directory with `O_DIRECTORY | O_NOFOLLOW`, the leaf with
/// `flags` (which hold `O_NOFOLLOW`). Only plain names reach here, so
/// nothing climbs out of `root`.
fn walk(root: &OwnedFd, rel: &[&OsStr], flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let Some((leaf, dirs)) = rel.split_last() else {
        return Err(Errno::EINVAL);
    };
    let mut owned: Option<OwnedFd> = None;
    for d in dirs {
        if !is_plain_name(d) {
            return Err(Errno::EXDEV);
        }
        let cur = owned.as_ref().unwrap_or(root);
        let next = fcntl::openat(
            cur,
            *d,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        owned = Some(next);
    }
    if !is_plain_name(leaf) {
        return Err(Errno::EXDEV);
    }
    let cur = owned.as_ref().unwrap_or(root);
    fcntl::openat(cur, *leaf, flags, mode)
}

fn is_plain_name(n: &OsStr) -> bool {
    let b = n.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

fn is_regular(mode: libc::mode_t) -> bool {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
}

/// What is at `name` in `dir` now, without following it: `None` if nothing.
fn kind_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<Option<libc::mode_t>> {
    match stat::fstatat(dir, name, fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st.st_mode)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The final name may be free; or taken by a regular file when the job
/// overwrites. Never a symlink or anything else.
fn check_final_name(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    overwrite: bool,
) -> Result<(), ConfineError> {
    match kind_at(dir, name).map_err(|e| ConfineError::from_errno(path, e))? {
        None => Ok(()),
        Some(m) if SFlag::from_bits_truncate(m & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK => {
            Err(ConfineError::Outside {
                path: path.to_path_buf(),
                detail: "its name is a symlink".into(),
            })
        }
        Some(m) if !is_regular(m) => Err(ConfineError::InTheWay {
            path: path.to_path_buf(),
        }),
        Some(_) if overwrite => Ok(()),
        Some(_) => Err(ConfineError::Exists {
            path: path.to_path_buf(),
        }),
    }
}

/// The longest tag kept in a temporary name (a name is at most 255 bytes).
const MAX_TAG: usize = 200;

/// `.ffrtmp-<tag>.part`, the tag reduced to `[A-Za-z0-9_.-]`: hidden, and
/// unique to the attempt.
pub fn temp_name(tag: &str) -> OsString {
    let safe: String = tag
        .chars()
        .take(MAX_TAG)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    OsString::from(format!(".ffrtmp-{safe}.part"))
}

/// An output being written: a temporary file in the resolved directory,
/// unlinked when dropped unless [`OutputFile::publish`]ed.
#[derive(Debug)]
pub struct OutputFile {
    dir: OwnedFd,
    file: File,
    tmp: OsString,
    name: OsString,
    path: PathBuf,
    overwrite: bool,
    published: bool,
}

impl OutputFile {
    /// The temporary file, open for writing (its descriptor goes to FFmpeg).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The temporary file's name in the output's directory.
    pub fn temp_name(&self) -> &OsStr {
        &self.tmp
    }

    /// Its size now.
    pub fn len(&self) -> Option<u64> {
        stat::fstat(self.file.as_fd())
            .ok()
            .and_then(|s| u64::try_from(s.st_size).ok())
    }

    /// Whether it is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Gives the temporary file its final name: `RENAME_NOREPLACE`, or,
    /// with `overwrite`, a rename over a regular file (never a symlink or
    /// anything else). On an error the temporary file is unlinked on drop.
    pub fn publish(mut self) -> Result<(), ConfineError> {
        let path = self.path.clone();
        let map = |e| ConfineError::from_errno(&path, e);
        if self.overwrite {
            check_final_name(&self.dir, &self.name, &path, true)?;
            fcntl::renameat(
                &self.dir,
                self.tmp.as_os_str(),
                &self.dir,
                self.name.as_os_str(),
            )
            .map_err(map)?;
        } else {
            match fcntl::renameat2(
                &self.dir,
                self.tmp.as_os_str(),
                &self.dir,
                self.name.as_os_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => {}
                Err(Errno::EEXIST) => return Err(ConfineError::Exists { path }),
                // A file system without RENAME_NOREPLACE: a hard link is just
                // as exclusive (EEXIST if the name is taken).
                Err(Errno::EINVAL) => {
                    match unistd::linkat(
                        &self.dir,
                        self.tmp.as_os_str(),
                        &self.dir,
                        self.name.as_os_str(),
                        fcntl::AtFlags::empty(),
                    ) {
                        Ok(()) => {
                            let _ = unistd::unlinkat(
                                &self.dir,
                                self.tmp.as_os_str(),
                                UnlinkatFlags::NoRemoveDir,
                            );
                        }
                        Err(Errno::EEXIST) => return Err(ConfineError::Exists { path }),
                        Err(e) => return Err(map(e)),
                    }
                }
                Err(e) => return Err(map(e)),
            }
        }
        self.published = true;
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = unistd::unlinkat(&self.dir, self.tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

#[cfg(test)]
mod tests;
