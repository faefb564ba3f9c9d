use proptest::prelude::*;

use super::*;
use crate::lease::WorkerLease;

const GRACE: u64 = 2_000;

fn assignment() -> Assignment {
    Assignment {
        job_id: "j1".into(),
        attempt: 1,
        token: 7,
        spec: crate::test_util::test_spec(),
    }
}

fn encoders() -> Vec<String> {
    vec![crate::encoders::requirement(
        &crate::test_util::test_spec().encode,
    )]
}

fn leased(until_from: u64, lease_ms: u64) -> WorkerLease {
    let mut l = WorkerLease::default();
    l.on_pong(until_from, lease_ms, until_from);
    l
}

fn node<'a>(encoders: &'a [String], lease: &'a WorkerLease, now_ms: u64) -> NodeNow<'a> {
    NodeNow {
        running: 0,
        slots: 2,
        draining: false,
        encoders,
        lease,
        granted_ms: Some(10_000),
        grace_ms: GRACE,
        now_ms,
    }
}

#[test]
fn an_assignment_is_checked_in_order() {
    let enc = encoders();
    let lease = leased(0, 10_000);
    let a = assignment();
    let start = Admission::Start {
        encoder: enc[0].clone(),
    };
    assert_eq!(admit(&a, false, node(&enc, &lease, 1_000)), start);
    assert_eq!(
        admit(&a, true, node(&enc, &lease, 1_000)),
        Admission::Duplicate
    );
    let draining = NodeNow {
        draining: true,
        ..node(&enc, &lease, 1_000)
    };
    assert!(
        matches!(admit(&a, false, draining), Admission::Refuse { why, lease: false } if why == "node is draining")
    );
    let full = NodeNow {
        running: 2,
        ..node(&enc, &lease, 1_000)
    };
    assert!(
        matches!(admit(&a, false, full), Admission::Refuse { why, .. } if why == "no free slot on node")
    );
    let none: Vec<String> = vec!["libvpx-vp9".into()];
    assert!(matches!(
        admit(&a, false, node(&none, &lease, 1_000)),
        Admission::Refuse { why, lease: false } if why.starts_with("no working encoder")
    ));
}

#[test]
fn without_a_lease_an_assignment_waits_and_a_lease_too_short_refuses_it() {
    let enc = encoders();
    let a = assignment();
    let none = WorkerLease::default();
    let before_pong = NodeNow {
        granted_ms: None,
        ..node(&enc, &none, 1_000)
    };
    assert_eq!(
        admit(&a, false, before_pong),
        Admission::Wait {
            encoder: enc[0].clone()
        }
    );
    let short = leased(0, GRACE);
    let too_short = NodeNow {
        granted_ms: Some(GRACE),
        ..node(&enc, &short, 0)
    };
    assert!(matches!(
        admit(&a, false, too_short),
        Admission::Refuse { lease: true, .. }
    ));
    assert_eq!(lease_too_short(Some(GRACE + 1), GRACE), None);
}

#[test]
fn a_result_goes_again_on_a_new_link_or_once_it_waited() {
    assert!(resend_due(Some(1_000), 1_100, None));
    assert!(!resend_due(Some(1_000), 1_100, Some(5_000)));
    assert!(resend_due(Some(1_000), 6_000, Some(5_000)));
    assert!(resend_due(None, 0, Some(5_000)));
}

proptest! {
    /// A job starts only while the lease outlasts the kill grace, and the
    /// jobs are told to stop (once) as soon as it no longer does: their
    /// SIGKILL then falls no later than the lease's end.
    #[test]
    fn jobs_start_and_stop_inside_the_lease(
        pong in 0u64..100_000,
        lease_ms in 1_000u64..60_000,
        now in 0u64..200_000,
        running in any::<bool>(),
        stop_sent in any::<bool>(),
    ) {
        let enc = encoders();
        let lease = leased(pong, lease_ms);
        let until = pong + lease_ms;
        let a = assignment();
        if let Admission::Start { .. } = admit(&a, false, NodeNow { granted_ms: Some(lease_ms), ..node(&enc, &lease, now) }) {
            prop_assert!(now + GRACE < until);
        }
        let plan = tick(TickInput {
            now_ms: now,
            last_mend_ms: 0,
            outbox_check_ms: 1_000,
            linked: true,
            last_ping_ms: Some(now),
            all_acknowledged: true,
            last_resend_ms: 0,
            jobs_running: running,
            stop_sent,
            lease: &lease,
            grace_ms: GRACE,
        });
        prop_assert_eq!(plan.stop_jobs, running && !stop_sent && now + GRACE >= until);
        prop_assert!(!plan.ping, "pinged again at once");
        prop_assert!(!plan.resend, "resent with everything acknowledged");
    }
}
