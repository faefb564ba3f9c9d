use super::new_jobs::{plan, Seen};
use super::*;

#[test]
fn sse_events_are_split_and_comments_skipped() {
    let text = ": keep-alive\n\nevent: state\ndata: {\"a\":1}\n\nevent: progress\ndata: x\ndata: y\n\ndata: tail";
    let mut seen = Vec::new();
    read_events(text.as_bytes(), |k, d| {
        seen.push((k.to_string(), d.to_string()));
        ControlFlow::Continue(())
    })
    .expect("read");
    assert_eq!(
        seen,
        vec![
            ("state".to_string(), "{\"a\":1}".to_string()),
            ("progress".to_string(), "x\ny".to_string()),
            ("message".to_string(), "tail".to_string()),
        ]
    );
}

#[test]
fn sse_reading_stops_when_asked() {
    let text = "data: 1\n\ndata: 2\n\n";
    let mut n = 0;
    read_events(text.as_bytes(), |_, _| {
        n += 1;
        ControlFlow::Break(())
    })
    .expect("read");
    assert_eq!(n, 1);
}

#[test]
fn eta_from_position_percent_and_speed() {
    let p = Progress {
        frame: 150,
        fps: 60.0,
        speed: Some(2.0),
        out_time_s: 5.0,
        percent: Some(50.0),
        bitrate_kbps: None,
        total_size_bytes: None,
    };
    assert_eq!(eta_s(&p), Some(2.5));
    assert_eq!(
        eta_s(&Progress {
            speed: None,
            ..p.clone()
        }),
        None
    );
    assert_eq!(
        eta_s(&Progress {
            percent: Some(100.0),
            ..p
        }),
        None
    );
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn queued_jobs_wait_and_are_followed_once_they_leave_the_queue() {
    let mut pending = HashSet::new();
    // A running job is followed; a queued one waits.
    let look = Seen {
        new: vec![],
        queued: ids(&["q"]),
        active: ids(&["r"]),
    };
    let (start, busy) = plan(&look, &mut pending, |_| false, |_| false);
    assert_eq!(start, ids(&["r"]));
    assert!(busy);
    assert!(pending.contains("q"));
    // Still queued: nothing new to follow, still busy.
    let known = |id: &str| id == "r";
    let (start, busy) = plan(&look, &mut pending, known, |_| false);
    assert!(start.is_empty());
    assert!(busy);
    // It ran and ended between two looks: followed all the same.
    let look = Seen {
        new: vec![],
        queued: vec![],
        active: vec![],
    };
    let (start, busy) = plan(&look, &mut pending, known, |id| id == "r");
    assert_eq!(start, ids(&["q"]));
    assert!(busy, "a job to follow is work left");
    assert!(pending.is_empty());
}

#[test]
fn new_submissions_are_followed_whatever_their_state() {
    let mut pending = HashSet::new();
    let look = Seen {
        new: vec![
            ("a".to_string(), JobState::Succeeded),
            ("b".to_string(), JobState::Queued),
            ("c".to_string(), JobState::Assigned),
        ],
        queued: vec![],
        // c is also listed as active: followed once.
        active: ids(&["c"]),
    };
    let (start, busy) = plan(&look, &mut pending, |_| false, |_| false);
    // b left the queue between the two lists: followed too.
    assert_eq!(start, ids(&["a", "c", "b"]));
    assert!(busy);
    assert!(pending.is_empty());
}

#[test]
fn idle_when_nothing_is_queued_or_under_way_but_ended_streams() {
    let mut pending = HashSet::new();
    let empty = Seen::default();
    assert_eq!(
        plan(&empty, &mut pending, |_| false, |_| false),
        (vec![], false)
    );
    // A job whose stream ended but that a list still shows running
    // (the list was read first) is not work left.
    let stale = Seen {
        new: vec![],
        queued: vec![],
        active: ids(&["x"]),
    };
    let (start, busy) = plan(&stale, &mut pending, |_| true, |_| true);
    assert!(start.is_empty() && !busy);
    // One still streaming is.
    let (_, busy) = plan(&stale, &mut pending, |_| true, |_| false);
    assert!(busy);
}
