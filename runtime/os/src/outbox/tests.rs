use super::*;
use crate::sidefile::test_util::copy_dir;
use ffrtmp_runtime::model::Outcome;

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

/// An outbox of `n` results for node `w1`, closed; returns its path.
async fn written(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("outbox.sled");
    let o = Outbox::open(&path, "w1").unwrap();
    for t in 1..=n {
        let (a, f) = finished(&format!("job-{t:04}"), t);
        o.put(&a, f).await.unwrap();
    }
    path
}

fn refused(r: Result<Outbox, OutboxError>) -> String {
    match r {
        Err(e @ OutboxError::Refused { .. }) => e.to_string(),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the outbox opened"),
    }
}

#[tokio::test]
async fn survives_reopen_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sled");
    let (a1, f1) = finished("j1", 7);
    let (a2, f2) = finished("j1", 9);
    {
        let o = Outbox::open(&path, "w1").unwrap();
        assert!(o.is_empty());
        o.put(&a1, f1.clone()).await.unwrap();
        o.put(&a2, f2.clone()).await.unwrap();
        assert!(!o.is_empty());
    }
    let o = Outbox::open(&path, "w1").unwrap();
    assert_eq!(
        o.pending().unwrap(),
        vec![(a1.clone(), f1), (a2.clone(), f2.clone())]
    );
    o.remove(&a1).unwrap();
    assert_eq!(o.pending().unwrap(), vec![(a2.clone(), f2)]);
    o.remove(&a2).unwrap();
    assert!(o.is_empty());
}

#[tokio::test]
async fn a_record_that_is_not_a_result_is_refused_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sled");
    {
        let o = Outbox::open(&path, "w1").unwrap();
        let (a, _) = finished("j", 1);
        o.put(&a, b"garbage".to_vec()).await.unwrap();
        assert!(matches!(o.pending(), Err(OutboxError::Refused { .. })));
        assert!(!o.is_empty(), "nothing was dropped");
    }
    let msg = refused(Outbox::open(&path, "w1"));
    assert!(msg.contains("does not decode"), "{msg}");
    assert!(
        msg.contains(".rejected"),
        "says how to start without it: {msg}"
    );
}

#[tokio::test]
async fn a_result_under_the_wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sled");
    {
        let o = Outbox::open(&path, "w1").unwrap();
        let (a, _) = finished("j", 1);
        let (_, other) = finished("k", 2);
        o.put(&a, other).await.unwrap();
    }
    let msg = refused(Outbox::open(&path, "w1"));
    assert!(msg.contains("under another key"), "{msg}");
}

#[tokio::test]
async fn another_nodes_outbox_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 1).await;
    let msg = refused(Outbox::open(&path, "w2"));
    assert!(msg.contains("belongs to node w1"), "{msg}");
    // Refusing changed nothing: its node still opens it, results intact.
    assert_eq!(
        Outbox::open(&path, "w1").unwrap().pending().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn an_older_copy_of_the_outbox_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 2).await;
    let backup = dir.path().join("backup.sled");
    copy_dir(&path, &backup);
    {
        let o = Outbox::open(&path, "w1").unwrap();
        let (a, f) = finished("job-late", 3);
        o.put(&a, f).await.unwrap();
    }
    fs::remove_dir_all(&path).unwrap();
    copy_dir(&backup, &path);
    let msg = refused(Outbox::open(&path, "w1"));
    assert!(msg.contains("3 results were written"), "{msg}");
    assert!(msg.contains("up to number 2"), "{msg}");
}

/// sled silently keeps only what precedes damage to its log; the side
/// file turns that into a refusal. Each case damages a real sled file.
#[tokio::test]
async fn a_damaged_database_is_refused_whatever_sled_recovers() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 4] = [
        ("log file emptied", |p| {
            fs::write(p.join("db"), b"").unwrap();
        }),
        ("log file removed", |p| {
            fs::remove_file(p.join("db")).unwrap()
        }),
        ("log truncated", |p| {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(p.join("db"))
                .unwrap();
            f.set_len(3000).unwrap();
        }),
        ("garbage inside the log", |p| {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(p.join("db"))
                .unwrap();
            f.seek(SeekFrom::Start(1000)).unwrap();
            f.write_all(&[0xAB; 64]).unwrap();
        }),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 20).await;
        damage(&path);
        let msg = refused(Outbox::open(&path, "w1"));
        assert!(msg.contains("20 results were written"), "{what}: {msg}");
    }
}

/// A live holder of the outbox is named as the cause, with no advice to
/// move the outbox aside (a second node on a data dir in use got that).
#[tokio::test]
async fn an_outbox_in_use_is_not_called_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 1).await;
    let live = Outbox::open(&path, "w1").unwrap();
    let msg = match Outbox::open(&path, "w1") {
        Err(e @ OutboxError::Blocked { .. }) => e.to_string(),
        Err(e) => panic!("expected the lock as the cause, got {e}"),
        Ok(_) => panic!("opened twice"),
    };
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(!msg.contains(".rejected"), "{msg}");
    drop(live);
}

#[tokio::test]
async fn an_unreadable_side_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 1).await;
    fs::write(side_file(&path), b"{not json").unwrap();
    let msg = refused(Outbox::open(&path, "w1"));
    assert!(msg.contains("side file"), "{msg}");
}

#[tokio::test]
async fn results_of_another_protocol_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 1).await;
    {
        let db = sled::open(&path).unwrap();
        let mut m: Meta = serde_json::from_slice(&db.get(META_KEY).unwrap().unwrap()).unwrap();
        m.protocol_version = PROTOCOL_VERSION - 1;
        db.insert(META_KEY, serde_json::to_vec(&m).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let msg = refused(Outbox::open(&path, "w1"));
    assert!(msg.contains("protocol version"), "{msg}");
}

#[tokio::test]
async fn a_missing_side_file_is_recreated_and_checks_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = written(dir.path(), 2).await;
    fs::remove_file(side_file(&path)).unwrap();
    {
        let o = Outbox::open(&path, "w1").unwrap();
        assert_eq!(o.pending().unwrap().len(), 2);
    }
    let side: Meta = serde_json::from_slice(&fs::read(side_file(&path)).unwrap()).unwrap();
    assert_eq!(side.seq, 2);
}

/// The disk fills to its last byte under a write: sled fails it and
/// refuses every later write; the outbox says so, and once space is
/// back it reopens with every check of `open` and takes results again;
/// what it had made durable is all there.
#[tokio::test]
async fn a_write_that_meets_a_full_disk_is_mended_by_a_reopen() {
    use crate::sidefile::test_util::{fill_to_the_last_byte, Tmpfs};
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("mnt"), "24m");
    let path = mnt.0.join("outbox.sled");
    let mut o = Outbox::open(&path, "w1").unwrap();
    o.set_disk_reserve(0);
    let (a, f) = finished("j0", 1);
    o.put(&a, f).await.unwrap();
    let mut taken = vec![a];
    fill_to_the_last_byte(&mnt.0.join("filler"));
    let mut failed = None;
    for n in 1..100_000u64 {
        let (a, f) = finished(&format!("j{n}"), n);
        match o.put(&a, f.clone()).await {
            // Durable in sled; only its side file lags behind (allowed:
            // sled may be ahead of it, never behind).
            Ok(()) | Err(OutboxError::Side { .. }) => taken.push(a),
            Err(e) => {
                assert!(matches!(e, OutboxError::Sled(_)), "{e}");
                failed = Some((a, f));
                break;
            }
        }
    }
    let (a, f) = failed.expect("sled met the full disk");
    assert!(o.needs_reopen());
    let (b, g) = finished("late", 7);
    assert!(matches!(
        o.put(&b, g.clone()).await,
        Err(OutboxError::Broken { .. })
    ));
    assert!(matches!(o.reopen(), Err(OutboxError::Full { .. })));

    std::fs::remove_file(mnt.0.join("filler")).unwrap();
    o.reopen().unwrap();
    assert!(!o.needs_reopen());
    o.put(&a, f).await.unwrap();
    o.put(&b, g).await.unwrap();
    taken.extend([a, b]);
    let mut want: Vec<AttemptRef> = taken.clone();
    want.sort_by_key(key);
    let got: Vec<AttemptRef> = o.pending().unwrap().into_iter().map(|(a, _)| a).collect();
    assert_eq!(got, want);
    drop(o);
    let o = Outbox::open(&path, "w1").unwrap();
    let got: Vec<AttemptRef> = o.pending().unwrap().into_iter().map(|(a, _)| a).collect();
    assert_eq!(got, want, "all there after a close and an open");
    drop(o);
}
