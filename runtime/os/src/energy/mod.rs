//! Energy per job: reading a node's power sources and charging jobs for it.
//!
//! The parts:
//! - **Sources** of node energy. [`rapl`] reads Intel/AMD RAPL counters
//!   through powercap sysfs (one figure per CPU package and per DRAM domain);
//!   [`nvml`] reads NVIDIA GPUs through NVML (a total-energy counter, or power
//!   integrated over time on older boards); `ffrtmp_runtime::energy::estimate` is a linear model of
//!   power from CPU utilisation for hosts with neither, and its figures are
//!   always labelled as estimates.
//! - **Usage** that energy is divided by. [`procstat`] gives the whole node's
//!   busy CPU time (`/proc/stat`); [`cpu`] gives one job's CPU time (its
//!   cgroup, or its processes when it has none). For GPUs, NVML's per-process
//!   utilisation plays that role.
//! - **Attribution**. `ffrtmp_runtime::energy::attribution::attribute` is the one pure function that
//!   splits an interval's energy among the jobs that ran in it, in proportion
//!   to their share of the node's usage; what no job used stays
//!   *unattributed* (idle, the OS, other processes), so the parts always add
//!   up to what was measured.
//!
//! **Why no zone is counted twice.** Powercap shows the same energy several
//! times: the `core` and `uncore` subzones are parts of their package, the
//! subzones appear again at the top level (`intel-rapl:0:0`), `intel-rapl-mmio`
//! duplicates a package, and `psys` covers the whole SoC (packages included).
//! [`rapl::Rapl::open`] keeps exactly the package zones and the DRAM zones
//! (which lie outside the packages), each once, so summing its domains gives
//! the node's CPU-side energy without overlap. GPU energy is a separate
//! device's and adds to it.

pub mod cpu;
pub mod nvml;
pub mod procstat;
pub mod rapl;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A small kernel file read again and again (sysfs, procfs, cgroupfs):
/// opened once, then read with `pread` from offset 0, which makes the kernel
/// generate its contents afresh. Sparing the path walk, open and close of
/// every read is most of what a cold sampling cycle costs
/// (docs/BENCHMARKS.md).
///
/// Not for files that are *replaced* (renamed over): the descriptor would go
/// on reading the old one. Kernel files never are; fakes in tests must write
/// in place. After a failed read the descriptor is dropped and the next read
/// opens the path again.
#[derive(Debug)]
pub struct KernelFile {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
}

impl KernelFile {
    /// A handle on `path`; nothing is opened until the first read.
    pub fn new(path: impl Into<PathBuf>) -> KernelFile {
        KernelFile {
            path: path.into(),
            file: None,
            buf: Vec::with_capacity(256),
        }
    }

    /// The path read (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file, as text.
    pub fn read(&mut self) -> io::Result<&str> {
        match self.read_inner() {
            Ok(()) => std::str::from_utf8(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    fn read_inner(&mut self) -> io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(File::open(&self.path)?),
        };
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = file.read_at(&mut chunk, self.buf.len() as u64)?;
            if n == 0 {
                return Ok(());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_file_is_reread_in_place_and_reopened_after_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("energy_uj");
        std::fs::write(&p, "1\n").expect("write");
        let mut f = KernelFile::new(&p);
        assert_eq!(f.read().expect("read"), "1\n");
        // Written in place (as the kernel's files change): the same
        // descriptor sees the new contents, longer or shorter.
        std::fs::write(&p, "123456789\n").expect("write");
        assert_eq!(f.read().expect("read"), "123456789\n");
        std::fs::write(&p, "7\n").expect("write");
        assert_eq!(f.read().expect("read"), "7\n");
        // Not there: an error; once it is, read through a new descriptor.
        let q = dir.path().join("later");
        let mut g = KernelFile::new(&q);
        assert!(g.read().is_err());
        std::fs::write(&q, "8\n").expect("write");
        assert_eq!(g.read().expect("read"), "8\n");
    }

    #[test]
    fn a_kernel_file_reads_more_than_one_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("stat");
        let text = "x".repeat(10_000);
        std::fs::write(&p, &text).expect("write");
        assert_eq!(KernelFile::new(&p).read().expect("read"), text);
    }
}
