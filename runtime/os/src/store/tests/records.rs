//! Records and their indexes: round trips, pages, corrupt and stale
//! entries, the repair at open.

use super::*;

#[test]
fn put_durable_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let j = job(&store, 0, Priority::Medium);
    assert_send(store.put_durable(&j));
    assert_send(store.flush());
}

#[tokio::test]
async fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let j = job(&store, 1, Priority::High);
    store.put_durable(&j).await.unwrap();
    assert_eq!(store.get(&j.id).unwrap(), Some(j.clone()));
    assert_eq!(store.get("nope").unwrap(), None);
    assert_eq!(count(&store, JobState::Queued), 1);
}

#[tokio::test]
async fn reopen_keeps_data_and_seq_keeps_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let (j, last_seq, last_token) = {
        let store = Store::open(dir.path()).unwrap();
        let j = job(&store, 1, Priority::Low);
        store.put_durable(&j).await.unwrap();
        let t = store.next_token().unwrap();
        (j, store.next_seq().unwrap(), t)
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get(&j.id).unwrap(), Some(j));
    let seq = store.next_seq().unwrap();
    let token = store.next_token().unwrap();
    assert!(seq > last_seq, "{seq} <= {last_seq}");
    assert!(token > last_token && token > 0);
}

#[tokio::test]
async fn state_index_follows_updates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut j = job(&store, 1, Priority::Medium);
    store.put_durable(&j).await.unwrap();
    j.state = JobState::Assigned;
    store.put_durable(&j).await.unwrap();
    j.state = JobState::Running;
    store.put(&j).unwrap();
    assert_eq!(count(&store, JobState::Queued), 0);
    assert_eq!(count(&store, JobState::Assigned), 0);
    assert_eq!(count(&store, JobState::Running), 1);
    let running = store.in_states(&[JobState::Running]).unwrap();
    assert_eq!(ids(&running), vec![j.id.clone()]);
    assert!(store.in_states(&[JobState::Queued]).unwrap().is_empty());
    // Priority changes move the priority index too.
    j.spec.priority = Priority::Live;
    store.put(&j).unwrap();
    let live = store
        .list(&ListFilter {
            priority: Some(Priority::Live),
            limit: 10,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&live.jobs), vec![j.id.clone()]);
    let medium = store
        .list(&ListFilter {
            priority: Some(Priority::Medium),
            limit: 10,
            ..ListFilter::default()
        })
        .unwrap();
    assert!(medium.jobs.is_empty());
    let total: u64 = store.count_by_state().unwrap().iter().map(|c| c.1).sum();
    assert_eq!(total, 1);
}

#[tokio::test]
async fn list_paginates_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let prios = [Priority::High, Priority::Batch, Priority::High];
    let mut all = Vec::new();
    for n in 0..10 {
        let mut j = job(&store, n, prios[n % 3]);
        if n % 2 == 1 {
            j.state = JobState::Running;
        }
        store.put(&j).unwrap();
        all.push(j);
    }
    store.flush().await.unwrap();

    // Unfiltered, pages of 4: 4 + 4 + 2, cursors chain.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(&ListFilter {
                after_seq: cursor,
                limit: 4,
                ..ListFilter::default()
            })
            .unwrap();
        pages += 1;
        assert!(page.jobs.len() <= 4);
        seen.extend(page.jobs);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids(&seen), ids(&all));

    // An exact final page has no cursor.
    let exact = store
        .list(&ListFilter {
            limit: 10,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!((exact.jobs.len(), exact.next_cursor), (10, None));

    let want = |f: &dyn Fn(&Job) -> bool| -> Vec<String> {
        all.iter().filter(|j| f(j)).map(|j| j.id.clone()).collect()
    };
    let running = store
        .list(&ListFilter {
            state: Some(JobState::Running),
            limit: 100,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&running.jobs), want(&|j| j.state == JobState::Running));
    let high_running = store
        .list(&ListFilter {
            state: Some(JobState::Running),
            priority: Some(Priority::High),
            limit: 100,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(
        ids(&high_running.jobs),
        want(&|j| j.state == JobState::Running && j.spec.priority == Priority::High)
    );
    // Filtered pagination: two at a time through the batch jobs.
    let batch = want(&|j| j.spec.priority == Priority::Batch);
    let p1 = store
        .list(&ListFilter {
            priority: Some(Priority::Batch),
            limit: 2,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&p1.jobs), batch[..2].to_vec());
    let p2 = store
        .list(&ListFilter {
            priority: Some(Priority::Batch),
            after_seq: p1.next_cursor,
            limit: 2,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&p2.jobs), batch[2..].to_vec());
    assert_eq!(p2.next_cursor, None);
    // Past the end, and the u64::MAX cursor.
    let end = store
        .list(&ListFilter {
            after_seq: Some(u64::MAX),
            limit: 5,
            ..ListFilter::default()
        })
        .unwrap();
    assert!(end.jobs.is_empty() && end.next_cursor.is_none());
    // limit 0 counts as 1.
    let one = store.list(&ListFilter::default()).unwrap();
    assert_eq!(one.jobs.len(), 1);
    assert_eq!(one.next_cursor, Some(all[0].seq));
}

#[tokio::test]
async fn corrupt_records_are_errors_and_can_be_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut j = job(&store, 1, Priority::Medium);
    store.put_durable(&j).await.unwrap();
    store
        .h()
        .unwrap()
        .jobs
        .insert(j.id.as_bytes(), &b"{\"not\": a job"[..])
        .unwrap();
    assert!(matches!(store.get(&j.id), Err(StoreError::Corrupt { .. })));
    assert!(matches!(
        store.list(&ListFilter {
            limit: 5,
            ..ListFilter::default()
        }),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(store.in_states(&[JobState::Queued]).is_err());
    // Overwriting repairs it and leaves no stale index entry behind.
    j.state = JobState::Failed;
    store.put_durable(&j).await.unwrap();
    assert_eq!(store.get(&j.id).unwrap(), Some(j.clone()));
    assert_eq!(count(&store, JobState::Queued), 0);
    assert_eq!(count(&store, JobState::Failed), 1);
    assert_eq!(store.h().unwrap().by_state.len(), 1);
    assert_eq!(store.h().unwrap().by_priority.len(), 1);
    // A non-UTF-8 id in an index is an error too.
    store
        .h()
        .unwrap()
        .by_seq
        .insert(seq_key(u64::MAX - 1), &[0xff, 0xfe][..])
        .unwrap();
    assert!(matches!(
        store.list(&ListFilter {
            limit: 5,
            ..ListFilter::default()
        }),
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn a_write_keeps_exactly_one_entry_per_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut j = job(&store, 1, Priority::Low);
    store.put_durable(&j).await.unwrap();
    assert_eq!(raw_entries(&store, &j.id), 3);
    for state in [JobState::Assigned, JobState::Running, JobState::Succeeded] {
        j.state = state;
        store.put(&j).unwrap();
        assert_eq!(raw_entries(&store, &j.id), 3, "after {state:?}");
    }
    j.spec.priority = Priority::High;
    j.seq = store.next_seq().unwrap();
    store.put(&j).unwrap();
    assert_eq!(raw_entries(&store, &j.id), 3);
    let page = store
        .list(&ListFilter {
            limit: 10,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(page.jobs, vec![j.clone()]);
}

/// What a crash between a write's steps can leave (an entry for the old
/// state not yet removed, entries written before their record) is
/// skipped by every reader.
#[tokio::test]
async fn stale_entries_are_skipped_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let j = job(&store, 1, Priority::Medium);
    store.put_durable(&j).await.unwrap();
    let i = store.h().unwrap();
    // The old state's entry, an old seq's entry, an old priority's entry.
    i.by_state
        .insert(
            tagged_key(state_byte(JobState::Running), j.seq),
            j.id.as_bytes(),
        )
        .unwrap();
    i.by_seq
        .insert(seq_key(j.seq + 100), j.id.as_bytes())
        .unwrap();
    i.by_priority
        .insert(tagged_key(Priority::High.rank(), j.seq), j.id.as_bytes())
        .unwrap();
    // Entries of a job whose record was never written.
    for index in Index::ALL {
        i.tree(index)
            .insert(
                index.key(j.seq + 1, JobState::Queued, Priority::Medium),
                &b"job-ghost"[..],
            )
            .unwrap();
    }
    assert!(store.in_states(&[JobState::Running]).unwrap().is_empty());
    assert_eq!(
        store.in_states(&[JobState::Queued]).unwrap(),
        vec![j.clone()]
    );
    assert_eq!(count(&store, JobState::Running), 0);
    assert_eq!(count(&store, JobState::Queued), 1);
    for filter in [
        ListFilter::default(),
        ListFilter {
            state: Some(JobState::Running),
            ..ListFilter::default()
        },
        ListFilter {
            priority: Some(Priority::High),
            ..ListFilter::default()
        },
        ListFilter {
            priority: Some(Priority::Medium),
            ..ListFilter::default()
        },
    ] {
        let want: Vec<Job> = if filter.state.is_none() && filter.priority != Some(Priority::High) {
            vec![j.clone()]
        } else {
            vec![]
        };
        let page = store
            .list(&ListFilter {
                limit: 10,
                ..filter.clone()
            })
            .unwrap();
        assert_eq!(page.jobs, want, "{filter:?}");
    }
}

/// A store closed cleanly is marked so and opens without a repair; one
/// that was not (the marker missing) gets its indexes repaired at open:
/// a record's missing entries added, stale entries removed.
#[tokio::test]
async fn an_unclean_store_is_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let a = {
        let store = Store::open(dir.path()).unwrap();
        let a = job(&store, 1, Priority::Medium);
        store.put_durable(&a).await.unwrap();
        a
    };
    let mut b = a.clone();
    b.id = "job-b".into();
    b.seq = a.seq + 1;
    b.state = JobState::Running;
    {
        // What a crash could leave, written behind the store's back.
        let db = sled::open(dir.path()).unwrap();
        assert!(
            db.get(CLEAN_KEY).unwrap().is_some(),
            "clean close marks the store"
        );
        db.remove(CLEAN_KEY).unwrap();
        db.open_tree("jobs")
            .unwrap()
            .insert(b.id.as_bytes(), serde_json::to_vec(&b).unwrap())
            .unwrap();
        db.open_tree("by_state")
            .unwrap()
            .insert(
                tagged_key(state_byte(JobState::Failed), a.seq),
                a.id.as_bytes(),
            )
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.in_states(&[JobState::Running]).unwrap(),
        vec![b.clone()]
    );
    assert_eq!(raw_entries(&store, &a.id), 3, "the stale entry was removed");
    assert_eq!(
        raw_entries(&store, &b.id),
        3,
        "the missing entries were added"
    );
    let page = store
        .list(&ListFilter {
            limit: 10,
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(ids(&page.jobs), vec![a.id.clone(), b.id.clone()]);
    // Open, the marker is gone (a crash now would be seen as one).
    assert!(store.h().unwrap().db.get(CLEAN_KEY).unwrap().is_none());
}
