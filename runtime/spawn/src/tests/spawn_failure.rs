//! How a failed spawn is classified: transient or terminal.

use super::*;
use ffrtmp_runtime::model::FailureReason;

fn reason(errno: i32) -> (bool, FailureReason) {
    match spawn_failed(&std::io::Error::from_raw_os_error(errno)) {
        Outcome::Transient { failure } => (true, failure.reason),
        Outcome::Failed { failure } => (false, failure.reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_nodes_own_exhaustion_is_transient() {
    for errno in [libc::EMFILE, libc::ENFILE, libc::EAGAIN, libc::ENOMEM] {
        assert_eq!(
            reason(errno),
            (true, FailureReason::NodeExhausted),
            "{errno}"
        );
        assert!(FailureReason::NodeExhausted.is_transient());
    }
}

#[test]
fn other_spawn_errors_stay_terminal() {
    for errno in [
        libc::ENOENT,
        libc::EACCES,
        libc::ENOEXEC,
        libc::EINVAL,
        libc::E2BIG,
    ] {
        assert_eq!(
            reason(errno),
            (false, FailureReason::SpawnFailed),
            "{errno}"
        );
    }
    let no_errno = spawn_failed(&std::io::Error::other("spawner thread ended"));
    assert!(matches!(no_errno, Outcome::Failed { .. }), "{no_errno:?}");
    assert!(!FailureReason::ProbeTimeout.is_transient());
}
