//! The verification pass run at every open, `ffrtmp-node store check`, and
//! `ffrtmp-node store salvage` (module docs of [`super`], "Refusing damage").

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{decode_job, open_db, Index, Store, StoreError, CLEAN_KEY, LEASE_KEY, WRITES_KEY};
use crate::sidefile::{self, SideError};
use ffrtmp_runtime::model::Job;

/// The layout version of the store's side file.
const SIDE_FORMAT: u32 = 1;

/// What the side file beside a store says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideMeta {
    /// Layout version.
    pub format: u32,
    /// sled had made at least this many job writes durable.
    pub writes: u64,
    /// At a clean close: exactly how many records the store held (and
    /// `writes` is then exact too). `None` while open.
    pub records: Option<u64>,
}

impl SideMeta {
    pub(super) fn new(writes: u64, records: Option<u64>) -> SideMeta {
        SideMeta {
            format: SIDE_FORMAT,
            writes,
            records,
        }
    }
}

/// What the verification pass found.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// Records that decode.
    pub readable: u64,
    /// Keys of records that do not decode.
    pub undecodable: Vec<String>,
    /// sled's count of job writes (`meta/writes`).
    pub writes: u64,
    /// The side file, if there is one.
    pub side: Option<SideMeta>,
    /// The store was closed cleanly (sled holds the clean-close marker).
    pub clean: bool,
    /// Ids that index entries point at but that have no record.
    pub lost_ids: Vec<String>,
    /// Each thing found wrong; empty for a sound store.
    pub problems: Vec<String>,
}

/// The data directory a store lives in (`<data-dir>/master.sled`).
pub(super) fn data_dir_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// sled's own corruption errors (at open, or reading a page) as a refusal of
/// the store; other errors unchanged.
pub(super) fn corruption_is_damage(dir: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Sled(e @ sled::Error::Corruption { .. }) => damaged(
            dir,
            format!("sled refuses to read it ({e})"),
            count_readable(dir).map_or(0, |(readable, _)| readable),
        ),
        e => e,
    }
}

fn damaged(dir: &Path, problem: String, readable: u64) -> StoreError {
    StoreError::Damaged {
        path: dir.to_path_buf(),
        data_dir: data_dir_of(dir),
        problem,
        readable,
    }
}

/// The side file of the store in `dir`, `None` if there is none; a damaged
/// one is a [`StoreError::Damaged`].
pub(super) fn read_side(dir: &Path) -> Result<Option<SideMeta>, StoreError> {
    let side: Option<SideMeta> = match sidefile::read_checked(&sidefile::side_file(dir)) {
        Ok(side) => side,
        Err(SideError::Io { path, source }) => return Err(StoreError::Side { path, source }),
        Err(e @ SideError::Damaged { .. }) => return Err(damaged(dir, e.to_string(), 0)),
    };
    if let Some(s) = &side {
        if s.format != SIDE_FORMAT {
            return Err(damaged(
                dir,
                format!(
                    "its side file has layout {}, this build reads layout {SIDE_FORMAT}",
                    s.format
                ),
                0,
            ));
        }
    }
    Ok(side)
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// The records of `jobs` that decode, the keys of those that do not, and
/// the error that stopped the scan early, if one did.
fn scan_records(jobs: &sled::Tree) -> (Vec<Job>, Vec<String>, Option<String>) {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for item in jobs.iter() {
        let (key, bytes) = match item {
            Ok(kv) => kv,
            Err(e) => return (good, bad, Some(e.to_string())),
        };
        let id = String::from_utf8_lossy(&key).into_owned();
        match decode_job(&id, &bytes) {
            Ok(job) if job.id == id => good.push(job),
            _ => bad.push(id),
        }
    }
    (good, bad, None)
}

/// Ids the index trees point at that are not in `known` (each once), and
/// the first error met reading an index.
fn orphans(db: &sled::Db, known: &BTreeSet<&str>) -> (Vec<String>, Option<String>) {
    let mut lost = BTreeSet::new();
    for index in Index::ALL {
        let tree = match db.open_tree(index.name()) {
            Ok(t) => t,
            Err(e) => return (lost.into_iter().collect(), Some(e.to_string())),
        };
        for item in tree.iter() {
            match item {
                Ok((_, id)) => {
                    let id = String::from_utf8_lossy(&id).into_owned();
                    if !known.contains(id.as_str()) {
                        lost.insert(id);
                    }
                }
                Err(e) => return (lost.into_iter().collect(), Some(e.to_string())),
            }
        }
    }
    (lost.into_iter().collect(), None)
}

/// The verification pass over an open sled database (module docs).
pub(super) fn inspect(
    db: &sled::Db,
    dir: &Path,
    side: Option<&SideMeta>,
) -> Result<Inspection, StoreError> {
    let mut found = Inspection {
        side: side.cloned(),
        ..Inspection::default()
    };
    let jobs = db.open_tree("jobs")?;
    let (good, bad, stopped) = scan_records(&jobs);
    found.readable = good.len() as u64;
    if let Some(e) = stopped {
        found
            .problems
            .push(format!("sled cannot read all of its records ({e})"));
    }
    if !bad.is_empty() {
        found.problems.push(format!(
            "{} records do not decode as jobs (first: jobs/{})",
            bad.len(),
            bad[0]
        ));
    }
    found.undecodable = bad;
    found.writes = read_u64(db.get(WRITES_KEY)?);
    found.clean = db.get(CLEAN_KEY)?.is_some();
    let records = found.readable + found.undecodable.len() as u64;
    let mut known: BTreeSet<&str> = good.iter().map(|j| j.id.as_str()).collect();
    known.extend(found.undecodable.iter().map(String::as_str));
    let (lost, index_err) = orphans(db, &known);
    if let Some(e) = index_err {
        found
            .problems
            .push(format!("sled cannot read all of its indexes ({e})"));
    }
    found.lost_ids = lost;
    match side {
        None if found.writes > 0 => found.problems.push(format!(
            "its side file {} is missing (sled counts {} writes), so lost writes cannot be \
             ruled out",
            sidefile::side_file(dir).display(),
            found.writes
        )),
        None => {}
        Some(s) if found.writes < s.writes => found.problems.push(format!(
            "{} job writes were made durable but the database holds writes only up to \
             number {}: it was damaged, truncated, or replaced by an older copy, and sled \
             kept only what came before the damage",
            s.writes, found.writes
        )),
        Some(s) => {
            // Exact only if sled still holds the clean-close marker too;
            // without it (the tail of the log lost), the count of writes
            // above decides.
            if let Some(n) = s.records.filter(|_| found.clean) {
                if found.writes == s.writes && records != n {
                    found.problems.push(format!(
                        "it was closed cleanly holding {n} jobs and now holds {records}"
                    ));
                }
                if !found.lost_ids.is_empty() {
                    found.problems.push(format!(
                        "it was closed cleanly, yet its indexes name {} jobs with no record \
                         (first: {})",
                        found.lost_ids.len(),
                        found.lost_ids[0]
                    ));
                }
            }
        }
    }
    Ok(found)
}

/// `ffrtmp-node store check`: open the store in `dir` (held against other
/// processes by sled's lock), run the verification pass, change nothing.
/// `Ok` with the findings; `problems` empty for a sound store.
pub fn check(dir: &Path) -> Result<Inspection, StoreError> {
    if !dir.join("db").exists() && !dir.join("conf").exists() {
        return Err(StoreError::Side {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no job store here"),
        });
    }
    let side = match read_side(dir) {
        Ok(side) => side,
        Err(StoreError::Damaged { problem, .. }) => {
            let db = open_db(dir).map_err(|e| corruption_is_damage(dir, e))?;
            let mut found = inspect(&db, dir, None).map_err(|e| corruption_is_damage(dir, e))?;
            found.problems.retain(|p| !p.contains("is missing"));
            found.problems.insert(0, problem);
            return Ok(found);
        }
        Err(e) => return Err(e),
    };
    let found = open_db(dir).and_then(|db| inspect(&db, dir, side.as_ref()));
    match found.map_err(|e| corruption_is_damage(dir, e)) {
        Err(StoreError::Damaged {
            problem, readable, ..
        }) => Ok(Inspection {
            readable,
            writes: count_readable(dir).map_or(0, |(_, writes)| writes),
            side,
            problems: vec![problem],
            ..Inspection::default()
        }),
        other => other,
    }
}

/// A copy of the store in `dir` without sled's snapshot files, beside it,
/// removed when dropped. sled refuses to open a store whose snapshot points
/// into a damaged part of its log; without the snapshot it rebuilds its
/// state from the log and keeps what precedes the damage. Only ever a copy:
/// the store itself is left as it is.
struct NoSnapshotCopy {
    path: PathBuf,
}

impl NoSnapshotCopy {
    fn make(dir: &Path) -> Result<NoSnapshotCopy, StoreError> {
        let path = dir.with_extension("read-copy");
        let _ = std::fs::remove_dir_all(&path);
        let copy = NoSnapshotCopy { path };
        sidefile::copy_tree(dir, &copy.path, &|name| {
            name.to_string_lossy().starts_with("snap.")
        })
        .map_err(|source| StoreError::Side {
            path: copy.path.clone(),
            source,
        })?;
        Ok(copy)
    }
}

impl Drop for NoSnapshotCopy {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "read copy of the store not removed");
        }
    }
}

/// Open the store in `dir` to read what it holds: itself, or, if sled
/// refuses it as corrupt, a [`NoSnapshotCopy`] (returned too, to keep it
/// until the database is dropped).
fn open_readable(dir: &Path) -> Result<(sled::Db, Option<NoSnapshotCopy>), StoreError> {
    match open_db(dir) {
        Ok(db) => Ok((db, None)),
        Err(StoreError::Sled(sled::Error::Corruption { .. })) => {
            let copy = NoSnapshotCopy::make(dir)?;
            let db = open_db(&copy.path)?;
            Ok((db, Some(copy)))
        }
        Err(e) => Err(e),
    }
}

/// How many records of the store in `dir` decode and sled's count of
/// writes, read through [`open_readable`]; `None` if even that fails. For a
/// store sled will not open.
fn count_readable(dir: &Path) -> Option<(u64, u64)> {
    let (db, _copy) = open_readable(dir).ok()?;
    let jobs = db.open_tree("jobs").ok()?;
    let writes = read_u64(db.get(WRITES_KEY).ok().flatten());
    Some((scan_records(&jobs).0.len() as u64, writes))
}

/// What [`salvage`] did.
#[derive(Debug, Clone, Default)]
pub struct SalvageReport {
    /// Jobs copied into the new store.
    pub recovered: u64,
    /// Keys of records that did not decode (not copied).
    pub undecodable: Vec<String>,
    /// Ids that the old store's indexes name but that have no record.
    pub lost_ids: Vec<String>,
    /// Job writes the side file knew of that sled no longer holds
    /// (first..=last), when it had one.
    pub lost_writes: Option<(u64, u64)>,
    /// Why the scan of the old store stopped early, if it did.
    pub stopped: Option<String>,
}

/// Copy every readable job of the (possibly damaged) store in `from` into a
/// new store in `to`, which must not exist yet or be empty; `from` is only
/// read. Sequence numbers and fencing tokens of the new store start above
/// every one the readable jobs hold, and the granted lease is carried over.
pub fn salvage(from: &Path, to: &Path) -> Result<SalvageReport, StoreError> {
    if std::fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(StoreError::Side {
            path: to.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the salvage target exists and is not empty",
            ),
        });
    }
    let side = read_side(from).ok().flatten();
    let (db, copy) = open_readable(from)?;
    let jobs = db.open_tree("jobs")?;
    let (good, undecodable, stopped) = scan_records(&jobs);
    let mut known: BTreeSet<&str> = good.iter().map(|j| j.id.as_str()).collect();
    known.extend(undecodable.iter().map(String::as_str));
    let (mut lost_ids, index_err) = orphans(&db, &known);
    lost_ids.retain(|id| !undecodable.contains(id));
    let writes = read_u64(db.get(WRITES_KEY).ok().flatten());
    let lease = db.get(LEASE_KEY).ok().flatten().map(|v| read_u64(Some(v)));
    let top = good.iter().map(|j| j.seq.max(j.token)).max().unwrap_or(0);
    let report = SalvageReport {
        recovered: good.len() as u64,
        lost_writes: side
            .filter(|s| s.writes > writes)
            .map(|s| (writes + 1, s.writes)),
        undecodable,
        lost_ids,
        stopped: stopped.or(index_err),
    };
    drop(jobs);
    drop(db);
    drop(copy);
    let store = Store::open(to)?;
    for job in &good {
        store.put(job)?;
    }
    if let Some(lease_ms) = lease.filter(|l| *l > 0) {
        store.set_granted_lease(lease_ms)?;
    }
    // New seqs and tokens above every old one (the fencing tokens of
    // attempts workers may still report on must never be handed out again).
    while store.next_seq()? <= top {}
    Ok(report)
}

/// `ffrtmp-node store salvage --data-dir D [--to NEW]`: salvage
/// `D/master.sled` into `NEW/master.sled` (the old store stays where it
/// is), or, without `to`, into a fresh `D/master.sled` with the damaged one
/// (and its side file) renamed to `master.sled.damaged-<unix time>`. Returns
/// the report and where the damaged store now is.
pub fn salvage_data_dir(
    data_dir: &Path,
    to: Option<&Path>,
) -> Result<(SalvageReport, PathBuf), StoreError> {
    let src = data_dir.join("master.sled");
    let io = |path: &Path, source: std::io::Error| StoreError::Side {
        path: path.to_path_buf(),
        source,
    };
    if !src.exists() {
        return Err(io(
            &src,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no job store here"),
        ));
    }
    if let Some(new_dir) = to {
        std::fs::create_dir_all(new_dir).map_err(|e| io(new_dir, e))?;
        let report = salvage(&src, &new_dir.join("master.sled"))?;
        return Ok((report, src));
    }
    let tmp = data_dir.join("salvage.sled");
    if tmp.exists() {
        return Err(io(
            &tmp,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "left by an interrupted salvage: remove it and run salvage again",
            ),
        ));
    }
    let report = salvage(&src, &tmp)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = data_dir.join(format!("master.sled.damaged-{stamp}"));
    std::fs::rename(&src, &aside).map_err(|e| io(&src, e))?;
    let old_side = sidefile::side_file(&src);
    if old_side.exists() {
        let to = data_dir.join(format!("master.meta.damaged-{stamp}"));
        std::fs::rename(&old_side, &to).map_err(|e| io(&old_side, e))?;
    }
    std::fs::rename(&tmp, &src).map_err(|e| io(&tmp, e))?;
    let new_side = sidefile::side_file(&tmp);
    std::fs::rename(&new_side, sidefile::side_file(&src)).map_err(|e| io(&new_side, e))?;
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = d.sync_all();
    }
    Ok((report, aside))
}
