//! The whole node's CPU time, from `/proc/stat`: the capacity that job CPU
//! time is measured against when energy is attributed.

use std::io;
use std::path::Path;

use nix::unistd::{sysconf, SysconfVar};

/// Cumulative CPU time over all CPUs since boot, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuTimes {
    /// Time spent doing anything: user, nice, system, irq, softirq, steal.
    pub busy_s: f64,
    /// Busy plus idle (idle and iowait).
    pub total_s: f64,
}

/// Clock ticks per second for `/proc` CPU times (`sysconf(_SC_CLK_TCK)`;
/// 100 when it is unavailable, as on every mainstream Linux build).
pub(crate) fn clock_ticks_per_s() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Parses the aggregate `cpu ` line of `/proc/stat` text.
///
/// Its fields are, in clock ticks: user nice system idle iowait irq softirq
/// steal guest guest_nice (older kernels stop early; missing ones count as
/// 0). busy = user + nice + system + irq + softirq + steal; guest and
/// guest_nice are already included in user and nice, so they are not added.
/// idle = idle + iowait; total = busy + idle. `None` when there is no such
/// line, it has fewer than 4 fields, a field is not a number, or
/// `ticks_per_s` is not a positive finite number.
pub fn parse_proc_stat(text: &str, ticks_per_s: f64) -> Option<CpuTimes> {
    if !(ticks_per_s.is_finite() && ticks_per_s > 0.0) {
        return None;
    }
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    if fields.len() < 4 {
        return None;
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or(0) as f64;
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    let idle = field(3) + field(4);
    Some(CpuTimes {
        busy_s: busy / ticks_per_s,
        total_s: (busy + idle) / ticks_per_s,
    })
}

/// `/proc/stat` kept open for repeated reads (see [`super::KernelFile`]).
#[derive(Debug)]
pub struct ProcStat {
    file: super::KernelFile,
}

impl ProcStat {
    /// A handle on `path` (normally `/proc/stat`); opened at the first read.
    pub fn new(path: &Path) -> ProcStat {
        ProcStat {
            file: super::KernelFile::new(path),
        }
    }

    /// The node's cumulative CPU times now.
    pub fn read(&mut self) -> io::Result<CpuTimes> {
        let path = self.file.path().to_path_buf();
        let text = self.file.read()?;
        parse_proc_stat(text, clock_ticks_per_s()).ok_or_else(|| malformed(&path))
    }
}

fn malformed(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: no well-formed aggregate `cpu ` line", path.display()),
    )
}

/// Reads and parses `path` (normally `/proc/stat`); malformed text is an
/// [`io::ErrorKind::InvalidData`] error.
pub fn read_proc_stat(path: &Path) -> io::Result<CpuTimes> {
    let text = std::fs::read_to_string(path)?;
    parse_proc_stat(&text, clock_ticks_per_s()).ok_or_else(|| malformed(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "\
cpu  10132153 290696 3084719 46828483 16683 0 25195 175 900 50
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0
cpu1 1335380 31519 410960 13376466 3765 0 3385 0 0 0
intr 199292221 38 0 0 0 0
ctxt 299853521
btime 1700000000
processes 1040011
";

    #[test]
    fn aggregate_line_is_parsed() {
        let t = parse_proc_stat(STAT, 100.0).unwrap();
        // user + nice + system + irq + softirq + steal; guest not added.
        let busy = 10132153 + 290696 + 3084719 + 25195 + 175;
        let idle = 46828483 + 16683;
        assert_eq!(t.busy_s, busy as f64 / 100.0);
        assert_eq!(t.total_s, (busy + idle) as f64 / 100.0);
        // Another tick rate scales the same counts.
        let t250 = parse_proc_stat(STAT, 250.0).unwrap();
        assert_eq!(t250.busy_s, busy as f64 / 250.0);
    }

    #[test]
    fn short_lines_from_old_kernels_are_accepted() {
        let t = parse_proc_stat("cpu 100 0 50 850\n", 100.0).unwrap();
        assert_eq!(t.busy_s, 1.5);
        assert_eq!(t.total_s, 10.0);
    }

    #[test]
    fn malformed_text_is_rejected() {
        for bad in [
            "",
            "cpu0 1 2 3 4 5\n",
            "cpu 1 2 3\n",
            "cpu 1 2 x 4 5 6 7 8\n",
            "cpu 1 2 -3 4\n",
        ] {
            assert_eq!(parse_proc_stat(bad, 100.0), None, "{bad:?}");
        }
        assert_eq!(parse_proc_stat(STAT, 0.0), None);
        assert_eq!(parse_proc_stat(STAT, f64::NAN), None);

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("stat");
        std::fs::write(&path, "cpu 1 2\n").unwrap();
        let err = read_proc_stat(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn real_proc_stat_never_goes_backwards() {
        let a = read_proc_stat(Path::new("/proc/stat")).unwrap();
        // Work between the readings, so that time can pass in the counters.
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let b = read_proc_stat(Path::new("/proc/stat")).unwrap();
        assert!(a.total_s > 0.0 && a.busy_s <= a.total_s, "{a:?}");
        assert!(b.total_s >= a.total_s, "{a:?} then {b:?}");
        assert!(b.busy_s >= a.busy_s, "{a:?} then {b:?}");
    }
}
