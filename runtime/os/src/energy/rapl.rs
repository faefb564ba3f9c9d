//! RAPL (Running Average Power Limit) energy counters, read through the
//! Linux powercap sysfs interface.
//!
//! Layout on a two-socket Intel host (AMD's `amd_energy`-free RAPL driver
//! uses the same names):
//!
//! ```text
//! /sys/class/powercap/
//!   intel-rapl            control type (not a zone)
//!   intel-rapl:0          name = package-0, energy_uj, max_energy_range_uj
//!     intel-rapl:0:0      name = core     (part of package-0)
//!     intel-rapl:0:1      name = dram     (outside the package)
//!   intel-rapl:0:0        the same subzone again, as a top-level link
//!   intel-rapl:1          name = package-1 ...
//!   intel-rapl:2          name = psys     (whole SoC: overlaps the packages)
//!   intel-rapl-mmio:0     name = package-0 (the same package, another interface)
//! ```
//!
//! [`Rapl::open`] counts each package once and each DRAM zone once (see the
//! rules there), so the domains it reports can be summed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::KernelFile;

/// Where powercap zones are listed on Linux.
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";

/// One counted RAPL zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneInfo {
    /// `package-<socket>` or `dram-<socket>`.
    pub domain: String,
    /// The zone's `energy_uj` counter file.
    pub energy_path: PathBuf,
    /// The zone's `max_energy_range_uj`: where its counter wraps (see
    /// [`counter_delta`]).
    pub max_range_uj: u64,
}

/// The RAPL zones of a host and the last reading of each counter.
#[derive(Debug)]
pub struct Rapl {
    zones: Vec<ZoneInfo>,
    /// Each zone's `energy_uj`, kept open.
    files: Vec<KernelFile>,
    /// Last counter value per zone, in the order of `zones`.
    last_uj: Vec<u64>,
}

/// Why RAPL cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RaplError {
    /// No package zone: this host has no RAPL (or does not expose it).
    #[error(
        "no RAPL package zones under {} (not an Intel/AMD host, or a VM without RAPL)",
        root.display()
    )]
    NoZones {
        /// The powercap root that was searched.
        root: PathBuf,
    },
    /// A zone file could not be read (typically `energy_uj`, root-only since
    /// Linux 5.10).
    #[error("{message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong and what to do about it (from [`unreadable_message`]).
        message: String,
    },
    /// A zone file did not hold what it should (a non-negative integer, a
    /// non-zero range).
    #[error("malformed RAPL file {}: {text:?}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Its contents (trimmed).
        text: String,
    },
}

impl Rapl {
    /// Discover zones and take the first reading (the baseline).
    ///
    /// Counted, under `root` (normally [`DEFAULT_POWERCAP_ROOT`]):
    /// - each top-level zone `intel-rapl:<N>` named `package-<S>`, as domain
    ///   `package-<S>`;
    /// - inside such a package, each subzone `intel-rapl:<N>:<M>` named
    ///   `dram`, as domain `dram-<S>` (`core`/`uncore` subzones are parts of
    ///   the package and are not counted);
    /// - each top-level zone `intel-rapl:<N>` named `dram` (some servers), as
    ///   domain `dram-<N>`.
    ///
    /// Skipped: `psys` zones (they include the packages), the top-level
    /// copies of subzones (`intel-rapl:<N>:<M>`), `intel-rapl-mmio:*` (a second
    /// interface to a package already counted), and anything else. If two
    /// zones would give the same domain, the first in directory-name order is
    /// kept. Zones are returned sorted by domain.
    ///
    /// Errors: [`RaplError::NoZones`] when no package zone exists (or `root`
    /// does not), [`RaplError::Unreadable`] / [`RaplError::Malformed`] when a
    /// counted zone's files cannot be read or parsed.
    pub fn open(root: &Path) -> Result<Rapl, RaplError> {
        let zones = discover(root)?;
        let mut files: Vec<KernelFile> = zones
            .iter()
            .map(|z| KernelFile::new(&z.energy_path))
            .collect();
        let last_uj = files
            .iter_mut()
            .map(read_counter)
            .collect::<Result<Vec<u64>, RaplError>>()?;
        Ok(Rapl {
            zones,
            files,
            last_uj,
        })
    }

    /// The counted zones, sorted by domain.
    pub fn zones(&self) -> &[ZoneInfo] {
        &self.zones
    }

    /// Energy per zone since the previous call (or since open), in joules,
    /// in zone order: `(domain, joules)`.
    ///
    /// Every counter is read before any state changes: on error nothing is
    /// consumed, and the next successful read covers the whole time since the
    /// last successful one (provided no counter wrapped twice meanwhile).
    pub fn read(&mut self) -> Result<Vec<(String, f64)>, RaplError> {
        let now = self
            .files
            .iter_mut()
            .map(read_counter)
            .collect::<Result<Vec<u64>, RaplError>>()?;
        let out = self
            .zones
            .iter()
            .zip(self.last_uj.iter().zip(&now))
            .map(|(z, (&prev, &now))| {
                let uj = counter_delta(prev, now, z.max_range_uj);
                (z.domain.clone(), uj as f64 / 1e6)
            })
            .collect();
        self.last_uj = now;
        Ok(out)
    }
}

/// Energy (µJ) between two readings of a counter that wraps to 0 after
/// `max_range_uj`.
///
/// The counter is taken to run modulo `max_range_uj`: it counts up from 0 and
/// wraps to 0 on reaching `max_range_uj`, so readings lie in
/// `[0, max_range_uj]` and a reading of `max_range_uj` is the same point as 0.
/// Then `now >= prev` gives `now - prev`, and `now < prev` means one wrap:
/// `(max_range_uj - prev) + now`. (The kernel's real modulus is one hardware
/// energy unit, some µJ, above `max_range_uj`; ignoring it errs by that unit
/// once per wrap, i.e. once in minutes to hours.)
///
/// At most one wrap between readings is assumed: sample more often than the
/// counter's wrap period (`max_range_uj` over the zone's peak power). A delta
/// that would exceed `max_range_uj` cannot come from a counter in range (a
/// reading above the range, or a zero range) and gives 0.
pub fn counter_delta(prev_uj: u64, now_uj: u64, max_range_uj: u64) -> u64 {
    let delta = if now_uj >= prev_uj {
        Some(now_uj - prev_uj)
    } else {
        max_range_uj
            .checked_sub(prev_uj)
            .and_then(|to_wrap| to_wrap.checked_add(now_uj))
    };
    match delta {
        Some(d) if d <= max_range_uj => d,
        _ => 0,
    }
}

/// A clear message for an unreadable `energy_uj` (or other zone file).
///
/// For `PermissionDenied` it explains that since Linux 5.10 `energy_uj` is
/// readable by root only (CVE-2020-8694) and what to do; otherwise it gives
/// the I/O error.
pub fn unreadable_message(path: &Path, err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::PermissionDenied {
        format!(
            "cannot read {}: permission denied. Since Linux 5.10 the RAPL energy_uj \
             counters are readable by root only (CVE-2020-8694, a power side channel). \
             Run the worker as root, or grant its user read access to the energy_uj \
             files (e.g. a udev rule, or chmod at boot); or use `--power-source estimate` \
             to estimate power from CPU utilisation instead",
            path.display()
        )
    } else {
        format!("cannot read {}: {err}", path.display())
    }
}

fn unreadable(path: &Path, err: &io::Error) -> RaplError {
    RaplError::Unreadable {
        path: path.to_path_buf(),
        message: unreadable_message(path, err),
    }
}

fn read_trimmed(path: &Path) -> Result<String, RaplError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| unreadable(path, &e))
}

/// A counter through its kept-open file.
fn read_counter(f: &mut KernelFile) -> Result<u64, RaplError> {
    let path = f.path().to_path_buf();
    let text = f.read().map_err(|e| unreadable(&path, &e))?.trim();
    text.parse().map_err(|_| RaplError::Malformed {
        path,
        text: text.to_string(),
    })
}

fn read_u64(path: &Path) -> Result<u64, RaplError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| RaplError::Malformed {
        path: path.to_path_buf(),
        text,
    })
}

/// `N` of a top-level zone name `intel-rapl:<N>` (one index, digits only).
fn top_index(name: &str) -> Option<&str> {
    let n = name.strip_prefix("intel-rapl:")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

/// Whether `name` is `intel-rapl:<index>:<M>`, a subzone of zone `index`.
fn is_subzone_of(name: &str, index: &str) -> bool {
    name.strip_prefix("intel-rapl:")
        .and_then(|rest| rest.strip_prefix(index))
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
}

/// The entries of `dir` as (file name, path), sorted by name. Names that are
/// not UTF-8 are left out (no zone has one).
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, io::Error> {
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    entries.sort();
    Ok(entries)
}

/// A counted zone in `dir`, with its range read and checked.
fn zone(domain: String, dir: &Path) -> Result<ZoneInfo, RaplError> {
    let range_path = dir.join("max_energy_range_uj");
    let max_range_uj = read_u64(&range_path)?;
    if max_range_uj == 0 {
        return Err(RaplError::Malformed {
            path: range_path,
            text: "0".into(),
        });
    }
    Ok(ZoneInfo {
        domain,
        energy_path: dir.join("energy_uj"),
        max_range_uj,
    })
}

/// The zones to count under `root` (rules in [`Rapl::open`]).
fn discover(root: &Path) -> Result<Vec<ZoneInfo>, RaplError> {
    let no_zones = || RaplError::NoZones {
        root: root.to_path_buf(),
    };
    let entries = match sorted_entries(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_zones()),
        Err(e) => return Err(unreadable(root, &e)),
    };
    let mut zones = Vec::new();
    let mut packages = 0usize;
    for (name, dir) in entries {
        let Some(index) = top_index(&name) else {
            continue;
        };
        let zone_name = read_trimmed(&dir.join("name"))?;
        if let Some(socket) = zone_name.strip_prefix("package-") {
            zones.push(zone(format!("package-{socket}"), &dir)?);
            packages += 1;
            let subzones = sorted_entries(&dir).map_err(|e| unreadable(&dir, &e))?;
            for (sub_name, sub_dir) in subzones {
                if is_subzone_of(&sub_name, index) && read_trimmed(&sub_dir.join("name"))? == "dram"
                {
                    zones.push(zone(format!("dram-{socket}"), &sub_dir)?);
                }
            }
        } else if zone_name == "dram" {
            zones.push(zone(format!("dram-{index}"), &dir)?);
        }
        // psys and unknown zones: not counted.
    }
    if packages == 0 {
        return Err(no_zones());
    }
    // Stable: among equal domains the first in directory order stays first.
    zones.sort_by(|a, b| a.domain.cmp(&b.domain));
    zones.dedup_by(|later, earlier| later.domain == earlier.domain);
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::symlink;

    /// Writes a FAKE powercap zone (the files RAPL reads) at `dir`.
    fn fake_zone(dir: &Path, name: &str, energy_uj: u64, max_range_uj: u64) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("name"), format!("{name}\n")).unwrap();
        fs::write(dir.join("energy_uj"), format!("{energy_uj}\n")).unwrap();
        fs::write(dir.join("max_energy_range_uj"), format!("{max_range_uj}\n")).unwrap();
    }

    const MAX: u64 = 262_143_328_850;

    /// A FAKE powercap tree shaped like a two-socket Intel server's, with
    /// every duplicate the real one has: two packages, each with `core` and
    /// `dram` subzones; the subzones again as top-level symlinks; an
    /// `intel-rapl-mmio:0` copy of package-0; a `psys` zone; the
    /// `intel-rapl` control-type directory. Counters start at 1000 × (zone
    /// number + 1) µJ.
    fn fake_powercap() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("intel-rapl")).unwrap();
        fs::write(root.join("intel-rapl").join("enabled"), "1\n").unwrap();
        for pkg in 0..2u64 {
            let dir = root.join(format!("intel-rapl:{pkg}"));
            fake_zone(&dir, &format!("package-{pkg}"), 1000 * (pkg + 1), MAX);
            let core = dir.join(format!("intel-rapl:{pkg}:0"));
            let dram = dir.join(format!("intel-rapl:{pkg}:1"));
            fake_zone(&core, "core", 500, MAX);
            fake_zone(&dram, "dram", 100 * (pkg + 1), 65_712_999_613);
            symlink(&core, root.join(format!("intel-rapl:{pkg}:0"))).unwrap();
            symlink(&dram, root.join(format!("intel-rapl:{pkg}:1"))).unwrap();
        }
        fake_zone(&root.join("intel-rapl:2"), "psys", 7000, MAX);
        fake_zone(&root.join("intel-rapl-mmio:0"), "package-0", 9000, MAX);
        tmp
    }

    fn set(root: &Path, zone: &str, uj: u64) {
        fs::write(root.join(zone).join("energy_uj"), format!("{uj}\n")).unwrap();
    }

    fn domains(rapl: &Rapl) -> Vec<&str> {
        rapl.zones().iter().map(|z| z.domain.as_str()).collect()
    }

    #[test]
    fn discovery_counts_each_package_and_dram_once() {
        let tmp = fake_powercap();
        let root = tmp.path();
        let rapl = Rapl::open(root).unwrap();
        assert_eq!(
            domains(&rapl),
            ["dram-0", "dram-1", "package-0", "package-1"]
        );
        let paths: Vec<PathBuf> = rapl.zones().iter().map(|z| z.energy_path.clone()).collect();
        assert_eq!(
            paths,
            [
                root.join("intel-rapl:0/intel-rapl:0:1/energy_uj"),
                root.join("intel-rapl:1/intel-rapl:1:1/energy_uj"),
                root.join("intel-rapl:0/energy_uj"),
                root.join("intel-rapl:1/energy_uj"),
            ]
        );
        assert_eq!(rapl.zones()[0].max_range_uj, 65_712_999_613);
        assert_eq!(rapl.zones()[2].max_range_uj, MAX);
    }

    #[test]
    fn top_level_dram_zone_is_named_by_its_index() {
        let tmp = tempfile::tempdir().unwrap();
        // FAKE: a server that lists DRAM as its own top-level zone.
        fake_zone(&tmp.path().join("intel-rapl:0"), "package-0", 0, MAX);
        fake_zone(&tmp.path().join("intel-rapl:1"), "dram", 0, MAX);
        let rapl = Rapl::open(tmp.path()).unwrap();
        assert_eq!(domains(&rapl), ["dram-1", "package-0"]);
    }

    #[test]
    fn reads_are_exact_deltas_since_the_previous_read() {
        let tmp = fake_powercap();
        let root = tmp.path();
        let mut rapl = Rapl::open(root).unwrap();
        // The first read is the energy since open (the baseline).
        set(root, "intel-rapl:0", 1000 + 2_500_000);
        set(root, "intel-rapl:1", 2000 + 1_000_000);
        set(root, "intel-rapl:0/intel-rapl:0:1", 100 + 250_000);
        // Not counted: must not show up anywhere.
        set(root, "intel-rapl:2", 99_999_999);
        set(root, "intel-rapl-mmio:0", 99_999_999);
        set(root, "intel-rapl:0/intel-rapl:0:0", 99_999_999);
        let first = rapl.read().unwrap();
        assert_eq!(
            first,
            [
                ("dram-0".to_string(), 0.25),
                ("dram-1".to_string(), 0.0),
                ("package-0".to_string(), 2.5),
                ("package-1".to_string(), 1.0),
            ]
        );
        // Nothing changed: nothing consumed.
        let idle: Vec<f64> = rapl.read().unwrap().into_iter().map(|(_, j)| j).collect();
        assert_eq!(idle, [0.0; 4]);
        // Since the previous read, not since open.
        set(root, "intel-rapl:1", 2000 + 1_000_000 + 125_000);
        let third = rapl.read().unwrap();
        assert_eq!(third[3], ("package-1".to_string(), 0.125));
        assert_eq!(third[2], ("package-0".to_string(), 0.0));
    }

    #[test]
    fn a_wrapped_counter_gives_the_energy_across_the_wrap() {
        let tmp = fake_powercap();
        let root = tmp.path();
        set(root, "intel-rapl:0", MAX - 1_000_000);
        let mut rapl = Rapl::open(root).unwrap();
        set(root, "intel-rapl:0", 500_000);
        let read = rapl.read().unwrap();
        assert_eq!(read[2], ("package-0".to_string(), 1.5));
    }

    #[test]
    fn a_failed_read_consumes_nothing() {
        let tmp = fake_powercap();
        let root = tmp.path();
        let mut rapl = Rapl::open(root).unwrap();
        set(root, "intel-rapl:0", 1000 + 3_000_000);
        fs::write(root.join("intel-rapl:1/energy_uj"), "garbage\n").unwrap();
        match rapl.read() {
            Err(RaplError::Malformed { path, text }) => {
                assert_eq!(path, root.join("intel-rapl:1/energy_uj"));
                assert_eq!(text, "garbage");
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
        set(root, "intel-rapl:1", 2000);
        let read = rapl.read().unwrap();
        assert_eq!(read[2], ("package-0".to_string(), 3.0));
    }

    #[test]
    fn no_package_zone_is_no_zones() {
        let empty = tempfile::tempdir().unwrap();
        let err = Rapl::open(empty.path()).unwrap_err();
        assert!(matches!(&err, RaplError::NoZones { root } if root == empty.path()));
        assert!(err.to_string().contains("no RAPL package zones"), "{err}");

        let missing = empty.path().join("no-such-dir");
        assert!(matches!(
            Rapl::open(&missing),
            Err(RaplError::NoZones { .. })
        ));

        // FAKE: only a psys zone and an mmio duplicate.
        let psys = tempfile::tempdir().unwrap();
        fake_zone(&psys.path().join("intel-rapl:0"), "psys", 1, MAX);
        fake_zone(&psys.path().join("intel-rapl-mmio:0"), "package-0", 1, MAX);
        assert!(matches!(
            Rapl::open(psys.path()),
            Err(RaplError::NoZones { .. })
        ));
    }

    #[test]
    fn malformed_or_missing_zone_files_are_errors() {
        let tmp = fake_powercap();
        let root = tmp.path();
        fs::write(root.join("intel-rapl:1/max_energy_range_uj"), "0\n").unwrap();
        assert!(matches!(
            Rapl::open(root),
            Err(RaplError::Malformed { path, .. })
                if path == root.join("intel-rapl:1/max_energy_range_uj")
        ));

        let tmp = fake_powercap();
        let root = tmp.path();
        fs::remove_file(root.join("intel-rapl:0/intel-rapl:0:1/energy_uj")).unwrap();
        match Rapl::open(root) {
            Err(RaplError::Unreadable { path, message }) => {
                assert_eq!(path, root.join("intel-rapl:0/intel-rapl:0:1/energy_uj"));
                assert!(message.contains("intel-rapl:0:1/energy_uj"), "{message}");
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
    }

    #[test]
    fn permission_denied_message_says_what_to_do() {
        let path = Path::new("/sys/class/powercap/intel-rapl:0/energy_uj");
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let msg = unreadable_message(path, &denied);
        for needle in [
            "intel-rapl:0/energy_uj",
            "root",
            "5.10",
            "CVE-2020-8694",
            "udev",
            "--power-source estimate",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
        let other = io::Error::other("device went away");
        let msg = unreadable_message(path, &other);
        assert!(msg.contains("device went away"), "{msg}");
        assert!(!msg.contains("CVE"), "{msg}");
    }

    #[test]
    fn counter_delta_examples() {
        assert_eq!(counter_delta(10, 25, 100), 15);
        assert_eq!(counter_delta(25, 25, 100), 0);
        // Wrapped: 90 -> 100 (= 0) -> 5.
        assert_eq!(counter_delta(90, 5, 100), 15);
        assert_eq!(counter_delta(100, 0, 100), 0);
        assert_eq!(counter_delta(0, 100, 100), 100);
        // Impossible readings clamp to 0.
        assert_eq!(counter_delta(0, 150, 100), 0);
        assert_eq!(counter_delta(150, 5, 100), 0);
        assert_eq!(counter_delta(3, 9, 0), 0);
        assert_eq!(counter_delta(u64::MAX, 0, u64::MAX), 0);
        assert_eq!(counter_delta(u64::MAX - 1, 1, u64::MAX), 2);
    }

    proptest! {
        /// A counter that runs modulo `max`, advanced by increments each
        /// smaller than `max`: the deltas add up to the increments.
        #[test]
        fn deltas_sum_to_the_increments(
            max in prop_oneof![1u64..=1000, 1u64..=u64::MAX],
            start_frac in 0.0f64..1.0,
            incr_fracs in proptest::collection::vec(0.0f64..1.0, 0..50),
        ) {
            let mut counter = ((max as f64) * start_frac) as u64 % max;
            let mut expected: u128 = 0;
            let mut measured: u128 = 0;
            for f in incr_fracs {
                let d = ((max as f64) * f) as u64 % max;
                let next = ((u128::from(counter) + u128::from(d)) % u128::from(max)) as u64;
                let delta = counter_delta(counter, next, max);
                prop_assert!(delta <= max);
                measured += u128::from(delta);
                expected += u128::from(d);
                counter = next;
            }
            prop_assert_eq!(measured, expected);
        }
    }
}
