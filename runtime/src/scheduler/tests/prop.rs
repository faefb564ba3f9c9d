//! Property tests: random event sequences (submit, cancel, retry, workers
//! connecting with and without their attempts, links lost, worker messages
//! including stale and forged ones, durability reported late or in
//! bursts, time passing, disk-full refusals, master restarts), with every
//! invariant of `World::check` and of the released effects checked after
//! every step.

use proptest::prelude::*;

use super::*;

/// Events per case and cases per run (reported in the docs).
pub(super) const EVENTS: usize = 80;
const CASES: u32 = 256;

#[derive(Debug, Clone)]
enum Ev {
    Submit,
    Cancel(usize),
    Retry(usize),
    NodeUp {
        node: u8,
        fresh: bool,
    },
    NodeLost(u8),
    Work {
        node: u8,
        pick: usize,
        what: u8,
    },
    Forged {
        node: u8,
        job: usize,
        delta: i8,
        kind: u8,
    },
    Advance(u64),
    Flush(u64),
    Report,
    Full(bool),
    Restart(u64),
    Drain(u8),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => Just(Ev::Submit),
        1 => any::<usize>().prop_map(Ev::Cancel),
        1 => any::<usize>().prop_map(Ev::Retry),
        2 => (0u8..3, any::<bool>()).prop_map(|(node, fresh)| Ev::NodeUp { node, fresh }),
        1 => (0u8..3).prop_map(Ev::NodeLost),
        6 => (0u8..3, any::<usize>(), any::<u8>()).prop_map(|(node, pick, what)| Ev::Work { node, pick, what }),
        2 => (0u8..3, any::<usize>(), -3i8..4, 0u8..3)
            .prop_map(|(node, job, delta, kind)| Ev::Forged { node, job, delta, kind }),
        3 => prop_oneof![1u64..200, 1_000u64..4_000, 10_000u64..30_000].prop_map(Ev::Advance),
        3 => (0u64..6).prop_map(Ev::Flush),
        3 => Just(Ev::Report),
        1 => any::<bool>().prop_map(Ev::Full),
        1 => any::<u64>().prop_map(Ev::Restart),
        1 => (0u8..3).prop_map(Ev::Drain),
    ]
}

fn node(n: u8) -> String {
    format!("n{n}")
}

/// A message about an attempt the master does not hold live from this
/// node: answered with `Kill` (`Ack` for a result), and nothing written.
fn forged(w: &mut World, n: u8, job: usize, delta: i8, kind: u8) {
    let name = node(n);
    if w.workers.get(&name).is_none_or(|w| w.link.is_none()) {
        return;
    }
    let ids: Vec<String> = w.accepted.iter().map(|(id, _)| id.clone()).collect();
    let id = ids
        .get(job % (ids.len() + 1))
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    let current = w.core.store().get(&id).ok().flatten();
    let token = (current.as_ref().map_or(1, |j| j.token) as i64 + i64::from(delta)).max(0) as u64;
    // Never a token the master has yet to hand out (it would be that
    // attempt's, and check 2 would be about the forgery).
    let highest = w
        .core
        .store()
        .log()
        .iter()
        .map(|(_, j)| j.token)
        .max()
        .unwrap_or(0);
    let token = if token > highest { 0 } else { token };
    let live = current.as_ref().is_some_and(|j| {
        j.token == token
            && j.node.as_deref() == Some(name.as_str())
            && matches!(j.state, JobState::Assigned | JobState::Running)
    });
    if live {
        return; // not stale: the worker model covers real messages
    }
    let msg = match kind {
        0 => ToMaster::Started {
            job_id: id.clone(),
            token,
            isolation: Isolation::None,
        },
        1 => ToMaster::Progress {
            job_id: id.clone(),
            token,
            progress: Progress::default(),
        },
        _ => ToMaster::Finished {
            job_id: id.clone(),
            token,
            outcome: succeeded(),
            energy: None,
        },
    };
    let written = w.core.store().written();
    let stops = w.stops_released.len();
    w.send(&name, msg);
    // 3. Changes nothing (a result is followed by placement, which may
    // assign queued jobs, this one too)...
    let before = current.as_ref().map_or(0, |j| j.token);
    let changed = w.core.store().log().iter().any(|(m, j)| {
        *m > written && j.id == id && !(j.state == JobState::Assigned && j.token > before)
    });
    assert!(
        !changed,
        "a stale message about {id}/{token} changed the job"
    );
    if kind < 2 {
        assert_eq!(
            w.core.store().written(),
            written,
            "a stale message about {id}/{token} wrote"
        );
    }
    // ...and is answered: Kill, or Ack for a result.
    let answer = |m: &ToWorker| match m {
        ToWorker::Kill { job_id, token: t } => kind < 2 && job_id == &id && *t == token,
        ToWorker::Ack(a) => kind == 2 && a.job_id == id && a.token == token,
        _ => false,
    };
    let released = w.stops_released[stops..]
        .iter()
        .any(|(nm, m)| nm == &name && answer(m));
    let held = w
        .core
        .held()
        .any(|(_, e)| matches!(e, Effect::Send { msg, .. } if answer(msg)));
    assert!(
        released || held,
        "a stale message about {id}/{token} was not answered"
    );
}

fn step(w: &mut World, e: Ev) {
    let pick = |w: &World, i: usize| -> Option<String> {
        (!w.accepted.is_empty()).then(|| w.accepted[i % w.accepted.len()].0.clone())
    };
    match e {
        Ev::Submit => {
            w.submit();
        }
        Ev::Cancel(i) => {
            if let Some(id) = pick(w, i) {
                w.cancel(&id);
            }
        }
        Ev::Retry(i) => {
            if let Some(id) = pick(w, i) {
                w.retry(&id);
            }
        }
        Ev::NodeUp { node: n, fresh } => w.node_up(&node(n), 2, fresh),
        Ev::NodeLost(n) => w.node_lost(&node(n)),
        Ev::Work {
            node: n,
            pick,
            what,
        } => w.work(&node(n), pick, what),
        Ev::Forged {
            node: n,
            job,
            delta,
            kind,
        } => forged(w, n, job, delta, kind),
        Ev::Advance(ms) => w.advance(ms),
        Ev::Flush(k) => w.flush(k),
        Ev::Report => w.report(),
        Ev::Full(full) => w.set_full(full),
        Ev::Restart(seed) => w.restart(seed),
        Ev::Drain(n) => {
            w.core.drain(&node(n), std::time::Duration::from_secs(5));
            w.settle(Ok(()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Every invariant holds after every step of any event sequence.
    #[test]
    fn invariants_hold_after_every_step(seed in any::<u64>(), evs in proptest::collection::vec(ev(), EVENTS)) {
        let mut w = World::new(seed);
        for e in evs {
            step(&mut w, e);
            w.check();
        }
        // Once the disk has room and everything is durable, nothing is held.
        w.set_full(false);
        w.flush_all();
        w.check();
        prop_assert!(w.core.held().next().is_none(), "effects held after everything is durable");
    }
}
