//! A running job's cumulative CPU time: the weight its share of the node's
//! energy is computed from.

use std::fs;
use std::path::{Path, PathBuf};

use super::procstat::clock_ticks_per_s;

/// Where a job's CPU time is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuProbe {
    /// cgroup v1 `cpuacct.usage` (nanoseconds).
    CgroupV1Usage(PathBuf),
    /// cgroup v2 `cpu.stat`, key `usage_usec`.
    CgroupV2Stat(PathBuf),
    /// No cgroup: `/proc/<pid>/stat` utime+stime+cutime+cstime (clock ticks)
    /// of these pids, summed (dead pids contribute nothing).
    ///
    /// A process that exits takes its time with it (until its parent reaps
    /// it, when it moves into the parent's cutime/cstime), so this total can
    /// fall between two reads: treat a negative difference as 0.
    Procs(Vec<i32>),
}

/// A probe with its cgroup file kept open, for repeated reads (see
/// [`super::KernelFile`]).
#[derive(Debug)]
pub struct CpuReader {
    probe: CpuProbe,
    file: Option<super::KernelFile>,
}

impl CpuReader {
    /// A reader for `probe`; its cgroup file (if any) is opened at the first
    /// read.
    pub fn new(probe: CpuProbe) -> CpuReader {
        let file = match &probe {
            CpuProbe::CgroupV1Usage(p) | CpuProbe::CgroupV2Stat(p) => {
                Some(super::KernelFile::new(p))
            }
            CpuProbe::Procs(_) => None,
        };
        CpuReader { probe, file }
    }

    /// As [`CpuProbe::read_s`].
    pub fn read_s(&mut self) -> Option<f64> {
        match (&self.probe, &mut self.file) {
            (CpuProbe::CgroupV1Usage(_), Some(f)) => v1_usage(f.read().ok()?),
            (CpuProbe::CgroupV2Stat(_), Some(f)) => v2_usage(f.read().ok()?),
            (probe, _) => probe.read_s(),
        }
    }
}

fn v1_usage(text: &str) -> Option<f64> {
    let ns: u64 = text.trim().parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn v2_usage(text: &str) -> Option<f64> {
    let us = text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some("usage_usec"))
            .then(|| it.next()?.parse::<u64>().ok())
            .flatten()
    })?;
    Some(us as f64 / 1e6)
}

impl CpuProbe {
    /// CPU time used so far, in seconds. `None` if unreadable (e.g. the
    /// cgroup was already removed). [`CpuProbe::Procs`] is always `Some`.
    pub fn read_s(&self) -> Option<f64> {
        match self {
            CpuProbe::CgroupV1Usage(path) => v1_usage(&fs::read_to_string(path).ok()?),
            CpuProbe::CgroupV2Stat(path) => v2_usage(&fs::read_to_string(path).ok()?),
            CpuProbe::Procs(pids) => {
                let ticks: u64 = pids
                    .iter()
                    .filter(|&&pid| pid > 0)
                    .filter_map(|pid| {
                        let path = Path::new("/proc").join(pid.to_string()).join("stat");
                        pid_stat_ticks(&fs::read_to_string(path).ok()?)
                    })
                    .fold(0u64, u64::saturating_add);
                Some(ticks as f64 / clock_ticks_per_s())
            }
        }
    }
}

/// utime + stime + cutime + cstime (clock ticks) from a `/proc/<pid>/stat`
/// line.
///
/// The second field, the command name, is in parentheses and may itself
/// contain spaces and `)`, so the line is split at its *last* `)`. After it
/// come field 3 (state) onwards, 1-based over the whole line: utime is field
/// 14, stime 15, cutime 16, cstime 17.
fn pid_stat_ticks(line: &str) -> Option<u64> {
    let (_, rest) = line.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3, so field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).copied();
    let utime: u64 = field(14)?.parse().ok()?;
    let stime: u64 = field(15)?.parse().ok()?;
    // cutime and cstime are signed in the kernel's format.
    let cutime: i64 = field(16)?.parse().ok()?;
    let cstime: i64 = field(17)?.parse().ok()?;
    let children = u64::try_from(cutime.max(0))
        .ok()?
        .saturating_add(u64::try_from(cstime.max(0)).ok()?);
    Some(utime.saturating_add(stime).saturating_add(children))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v1_usage_is_nanoseconds() {
        let tmp = tempfile::tempdir().unwrap();
        // FAKE cpuacct.usage.
        let path = tmp.path().join("cpuacct.usage");
        fs::write(&path, "2500000000\n").unwrap();
        assert_eq!(CpuProbe::CgroupV1Usage(path.clone()).read_s(), Some(2.5));
        fs::write(&path, "not a number\n").unwrap();
        assert_eq!(CpuProbe::CgroupV1Usage(path).read_s(), None);
        let gone = tmp.path().join("removed/cpuacct.usage");
        assert_eq!(CpuProbe::CgroupV1Usage(gone).read_s(), None);
    }

    #[test]
    fn cgroup_v2_cpu_stat_usage_usec() {
        let tmp = tempfile::tempdir().unwrap();
        // FAKE cpu.stat, as a v2 cgroup with the cpu controller writes it.
        let path = tmp.path().join("cpu.stat");
        fs::write(
            &path,
            "usage_usec 1250000\nuser_usec 1000000\nsystem_usec 250000\n\
             nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
        )
        .unwrap();
        assert_eq!(CpuProbe::CgroupV2Stat(path.clone()).read_s(), Some(1.25));
        fs::write(&path, "user_usec 1000000\n").unwrap();
        assert_eq!(CpuProbe::CgroupV2Stat(path).read_s(), None);
        let gone = tmp.path().join("removed/cpu.stat");
        assert_eq!(CpuProbe::CgroupV2Stat(gone).read_s(), None);
    }

    #[test]
    fn pid_stat_is_split_at_the_last_paren() {
        // A comm of "a) (b c)": spaces and ") (" inside the parentheses.
        let line = "4242 (a) (b c)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    700 300 20 5 20 0 1 0 12345 1000000 200 18446744073709551615\n";
        assert_eq!(pid_stat_ticks(line), Some(700 + 300 + 20 + 5));
        // Negative children's times (never seen, but signed) count as 0.
        let line = "7 (x) R 1 7 7 0 -1 0 0 0 0 0 10 20 -1 -1 20 0 1 0 1 1 1\n";
        assert_eq!(pid_stat_ticks(line), Some(30));
        assert_eq!(pid_stat_ticks("7 (x) R 1 7 7"), None);
        assert_eq!(pid_stat_ticks("no parenthesis here"), None);
        assert_eq!(
            pid_stat_ticks("7 (x) R 1 7 7 0 -1 0 0 0 0 0 ten 20 0 0"),
            None
        );
    }

    #[test]
    fn own_process_cpu_time_is_seen() {
        let me = i32::try_from(std::process::id()).unwrap();
        let probe = CpuProbe::Procs(vec![me]);
        // Burn CPU until at least one clock tick is accounted to us; bounded
        // by iterations (a tick is 10 ms at 100 Hz), never by sleeping.
        let mut seen = probe.read_s().unwrap();
        let mut x = 0u64;
        for _ in 0..100_000 {
            if seen > 0.0 {
                break;
            }
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            seen = probe.read_s().unwrap();
        }
        assert!(seen > 0.0, "no CPU time seen for pid {me}");
        // A pid that does not exist contributes nothing.
        let with_dead = CpuProbe::Procs(vec![me, i32::MAX]).read_s().unwrap();
        assert!(with_dead >= seen, "{with_dead} < {seen}");
        assert_eq!(CpuProbe::Procs(vec![i32::MAX, -1]).read_s(), Some(0.0));
    }
}
