//! Durability: concurrent writers, damage refused or recovered, the side
//! file, the disk reserve, recovery after a full disk, group commit.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_puts_all_land() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for n in 0..N {
            let j = job(&store, n, Priority::ALL[n % 5]);
            expected.push(j.clone());
            let s = store.clone();
            tasks.push(tokio::spawn(async move { s.put_durable(&j).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let flushes = store.flush_count();
        assert!(flushes >= 1 && flushes <= N as u64, "{flushes}");
    }
    let store = Store::open(dir.path()).unwrap();
    for j in &expected {
        assert_eq!(store.get(&j.id).unwrap().as_ref(), Some(j));
    }
    assert_eq!(count(&store, JobState::Queued), N as u64);
    let page = store
        .list(&ListFilter {
            limit: N + 1,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&page.jobs), ids(&expected));
}

/// A store of 300 acknowledged jobs written by the real store (durable
/// submissions, then state changes) and closed cleanly.
async fn store_of_300(path: &Path) -> Vec<Job> {
    let store = Store::open(path).unwrap();
    let mut jobs = Vec::new();
    for n in 0..300 {
        let mut j = job(&store, n, Priority::ALL[n % 5]);
        store.put_durable(&j).await.unwrap();
        if n % 3 == 0 {
            j.state = JobState::Running;
            j.token = store.next_token().unwrap();
            store.put(&j).unwrap();
        }
        jobs.push(j);
    }
    store.flush().await.unwrap();
    jobs
}

/// Flip bit `bit` of byte `pos` of the sled log in `dir`.
fn flip_bit(dir: &Path, pos: u64, bit: u8) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(pos)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 1 << bit;
    f.seek(SeekFrom::Start(pos)).unwrap();
    f.write_all(&b).unwrap();
}

/// What opening a damaged copy gave: refused (the error text) or the
/// store, checked to hold every job unchanged.
fn refused_or_whole(path: &Path, jobs: &[Job], what: &str) -> Option<String> {
    match Store::open(path) {
        Err(e @ StoreError::Damaged { .. }) => Some(e.to_string()),
        Err(e) => panic!("{what}: expected a refusal or a full recovery, got {e}"),
        Ok(store) => {
            for j in jobs {
                assert_eq!(
                    store.get(&j.id).unwrap().as_ref(),
                    Some(j),
                    "{what}: opened without an error but job {} is missing or changed",
                    j.id
                );
            }
            let page = store
                .list(&ListFilter {
                    limit: 1000,
                    ..ListFilter::default()
                })
                .unwrap();
            assert_eq!(page.jobs.len(), jobs.len(), "{what}");
            None
        }
    }
}

/// Finding: one flipped bit in the middle of `db` once opened as a store
/// with about half its jobs and only a log line. Every bit flip and
/// truncation of a real store must now end in a refusal that names the
/// recovery command, or in every acknowledged job back: never fewer.
#[tokio::test]
async fn damage_is_refused_or_fully_recovered_never_silently_lost() {
    use rand::{Rng, SeedableRng};
    let base = tempfile::tempdir().unwrap();
    let good = base.path().join("good").join("master.sled");
    let jobs = store_of_300(&good).await;
    let len = std::fs::metadata(good.join("db")).unwrap().len();
    assert!(len > 4096, "{len}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    type Damage = Box<dyn Fn(&Path)>;
    let mut cases: Vec<(String, Damage)> = Vec::new();
    // The middle of the file (the finding), then seeded positions.
    let mut positions = vec![len / 2];
    positions.extend((0..11).map(|_| rng.random_range(0..len)));
    for pos in positions {
        let bit = rng.random_range(0..8u8);
        cases.push((
            format!("bit {bit} of byte {pos} flipped"),
            Box::new(move |p: &Path| flip_bit(p, pos, bit)),
        ));
    }
    for cut in [len / 4, len / 2, len * 3 / 4, len - 1, 1000] {
        cases.push((
            format!("truncated to {cut} bytes"),
            Box::new(move |p: &Path| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(p.join("db"))
                    .unwrap();
                f.set_len(cut).unwrap();
            }),
        ));
    }
    let mut refusals = 0;
    for (n, (what, damage)) in cases.iter().enumerate() {
        let copy = base.path().join(format!("case{n}")).join("master.sled");
        crate::sidefile::test_util::copy_dir(&good, &copy);
        std::fs::copy(
            crate::sidefile::side_file(&good),
            crate::sidefile::side_file(&copy),
        )
        .unwrap();
        damage(&copy);
        if let Some(msg) = refused_or_whole(&copy, &jobs, what) {
            refusals += 1;
            assert!(
                msg.contains("store salvage --data-dir") && msg.contains("still readable"),
                "{what}: {msg}"
            );
            // A refusal changed nothing: the same again.
            assert!(refused_or_whole(&copy, &jobs, what).is_some(), "{what}");
        }
    }
    assert!(refusals > 0, "no damage case was refused");
    // The undamaged original still opens whole.
    assert!(refused_or_whole(&good, &jobs, "undamaged").is_none());
}

/// The finding's case end to end through the library: refused, `check`
/// reports it, `salvage` exports what is readable into a store that
/// opens, with the lost writes named.
#[tokio::test]
async fn check_and_salvage_a_store_with_a_flipped_bit() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    let path = data.join("master.sled");
    let jobs = store_of_300(&path).await;
    let sound = check(&path).unwrap();
    assert!(sound.problems.is_empty(), "{:?}", sound.problems);
    assert_eq!(sound.readable, 300);
    // A flipped bit from the middle of the log on (the finding): the
    // first that sled still opens and the check calls damage.
    let len = std::fs::metadata(path.join("db")).unwrap().len();
    let pristine = base.path().join("pristine.sled");
    crate::sidefile::test_util::copy_dir(&path, &pristine);
    let mut damaged = false;
    for step in 0..64 {
        std::fs::remove_dir_all(&path).unwrap();
        crate::sidefile::test_util::copy_dir(&pristine, &path);
        flip_bit(&path, len / 2 + step * (len / 128), 4);
        if check(&path).is_ok_and(|f| !f.problems.is_empty() && f.readable > 0) {
            damaged = true;
            break;
        }
    }
    assert!(damaged, "no flip in the second half of the log was damage");
    let found = check(&path).unwrap();
    assert!(!found.problems.is_empty());
    assert!(found.readable < 300, "{}", found.readable);
    let (report, aside) = salvage_data_dir(&data, None).unwrap();
    assert_eq!(report.recovered, found.readable);
    // What was lost is named: as writes the side file knew of and sled
    // no longer holds (a log cut short), and/or as the ids the indexes
    // still name (which flip comes first depends on the log's layout).
    if let Some((first, last)) = report.lost_writes {
        assert!(first <= last && last >= 300, "{first}..={last}");
    }
    assert!(aside.exists() && crate::sidefile::side_file(&path).exists());
    let store = Store::open(&path).unwrap();
    let mut back = 0;
    let mut missing = Vec::new();
    for j in &jobs {
        if let Some(got) = store.get(&j.id).unwrap() {
            assert_eq!(&got, j);
            back += 1;
        } else {
            missing.push(j.id.clone());
        }
    }
    assert_eq!(back, report.recovered);
    if report.lost_writes.is_none() {
        let mut named = report.lost_ids.clone();
        named.sort();
        assert_eq!(named, missing, "every lost job named by id");
    }
    // New seqs and tokens stay above every old one.
    let top = jobs.iter().map(|j| j.seq.max(j.token)).max().unwrap();
    assert!(store.next_seq().unwrap() > top);
    assert!(store.next_token().unwrap() > top);
}

/// A store written before side files (no count in sled, no side file)
/// opens and gets one; a side file removed later is a refusal.
#[tokio::test]
async fn side_file_created_for_old_stores_and_required_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.sled");
    let j = Job::new("job-old".into(), 1, spec(Priority::Medium), 1);
    {
        let db = sled::open(&path).unwrap();
        db.open_tree("jobs")
            .unwrap()
            .insert(j.id.as_bytes(), serde_json::to_vec(&j).unwrap())
            .unwrap();
        for index in Index::ALL {
            db.open_tree(index.name())
                .unwrap()
                .insert(index.key_of(&j), j.id.as_bytes())
                .unwrap();
        }
        db.insert(CLEAN_KEY, &[1u8]).unwrap();
        db.flush().unwrap();
    }
    let side = crate::sidefile::side_file(&path);
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get(&j.id).unwrap(), Some(j.clone()));
        assert!(side.exists());
        let mut k = j.clone();
        k.id = "job-new".into();
        k.seq = store.next_seq().unwrap();
        store.put_durable(&k).await.unwrap();
    }
    let meta: SideMeta = crate::sidefile::read_checked(&side).unwrap().unwrap();
    assert_eq!((meta.writes, meta.records), (1, Some(2)));
    std::fs::remove_file(&side).unwrap();
    let msg = Store::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains("side file") && msg.contains("missing"),
        "{msg}"
    );
}

/// Below the reserve a write is refused before it reaches sled; it
/// succeeds again once there is room (the same store, not reopened).
#[tokio::test]
async fn a_write_below_the_disk_reserve_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = job(&store, 1, Priority::Medium);
    store.put_durable(&a).await.unwrap();
    store.set_disk_reserve(u64::MAX);
    let b = job(&store, 2, Priority::Medium);
    assert!(matches!(store.put(&b), Err(StoreError::Full { .. })));
    assert!(store.space_ok().is_err());
    assert_eq!(store.get(&b.id).unwrap(), None, "nothing half-stored");
    assert_eq!(raw_entries(&store, &b.id), 0);
    store.set_disk_reserve(0);
    store.put_durable(&b).await.unwrap();
    assert_eq!(store.get(&b.id).unwrap(), Some(b));
}

/// The disk fills to its last byte while sled has writes not yet
/// flushed (the race the reserve cannot close): sled's flush fails and
/// sled refuses every later write until it is reopened. The store
/// refuses writes meanwhile (nothing half-stored), keeps serving
/// reads, and once space is back reopens sled in place and replays what
/// was not durable: every write it took lands, with no restart, and
/// the store reopens clean afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_failed_on_a_full_disk_is_replayed_after_a_reopen_in_place() {
    let dir = tempfile::tempdir().unwrap();
    use crate::sidefile::test_util::{fill_to_the_last_byte, Tmpfs};
    let mnt = Tmpfs::mount(&dir.path().join("mnt"), "24m");
    let path = mnt.0.join("master.sled");
    let store = Store::open(&path).unwrap();
    // Let writes reach sled on a full disk, as when the last byte goes
    // between the reserve check and the flush.
    store.set_disk_reserve(0);
    let mut taken = Vec::new();
    for n in 0..3 {
        let j = job(&store, n, Priority::Medium);
        store.put_durable(&j).await.unwrap();
        taken.push(j.id);
    }
    fill_to_the_last_byte(&mnt.0.join("filler"));

    // Write until sled fails to write its log.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut refused = Vec::new();
    let mut last = 0;
    let mut n = 3;
    while store.writable().is_ok() {
        assert!(std::time::Instant::now() < deadline, "sled never failed");
        let j = job(&store, n, Priority::Medium);
        n += 1;
        match store.put_marked(&j) {
            Ok(mark) => {
                last = mark;
                taken.push(j.id);
            }
            Err(e) => {
                assert!(e.is_storage_full(), "{e}");
                refused.push(j.id);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(
        matches!(store.writable(), Err(StoreError::Recovering { .. })),
        "{:?}",
        store.writable()
    );
    assert!(
        !store.is_durable(last),
        "not durable while the disk is full"
    );
    // Refused whole meanwhile; reads still served.
    let late = job(&store, n, Priority::Medium);
    assert!(matches!(
        store.put(&late),
        Err(StoreError::Recovering { .. })
    ));
    refused.push(late.id.clone());
    assert!(store.get(&taken[taken.len() - 1]).unwrap().is_some());

    // Space comes back.
    std::fs::remove_file(mnt.0.join("filler")).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(120), store.wait_mark(last))
        .await
        .expect("durable once space is back (hang guard)")
        .expect("the writes taken before the failure are durable");
    assert!(store.reopen_count() >= 1);
    store.writable().unwrap();
    let check = |store: &Store, taken: &[String]| {
        for id in taken {
            assert!(store.get(id).unwrap().is_some(), "{id} lost");
        }
        for id in &refused {
            assert_eq!(store.get(id).unwrap(), None, "{id} was refused");
        }
        assert_eq!(count(store, JobState::Queued), taken.len() as u64);
    };
    check(&store, &taken);
    // Writes work again, on the same store.
    let after = job(&store, n + 1, Priority::Medium);
    store.put_durable(&after).await.unwrap();
    taken.push(after.id);
    // And from disk: a clean close, a clean open, every job there.
    drop(store);
    let store = Store::open(&path).unwrap();
    check(&store, &taken);
    drop(store);
}

/// Poll a future once with a waker that does nothing.
fn poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn group_commit_shares_flushes() {
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let jobs: Vec<Job> = (0..N).map(|n| job(&store, n, Priority::Medium)).collect();
    let before = store.flush_count();
    let mut futs: Vec<Pin<Box<_>>> = jobs
        .iter()
        .map(|j| Box::pin(store.put_durable(j)))
        .collect();
    {
        // Hold flushes back while every writer writes and lines up.
        let _gate = lock(&store.inner.shared.gate);
        for f in &mut futs {
            assert!(poll_once(f.as_mut()).is_pending());
        }
        assert_eq!(store.inner.shared.written.load(Ordering::SeqCst), N as u64);
    }
    for f in futs {
        f.await.unwrap();
    }
    let flushes = store.flush_count() - before;
    // The flusher reads its target only once it holds the gate, so one
    // flush covers all N writers.
    assert_eq!(flushes, 1, "{flushes} flushes for {N} writers");
    for j in &jobs {
        assert!(store.get(&j.id).unwrap().is_some());
    }
    // A lone writer afterwards still gets its own flush.
    let extra = job(&store, N, Priority::Low);
    store.put_durable(&extra).await.unwrap();
    assert_eq!(store.flush_count() - before, flushes + 1);
}
