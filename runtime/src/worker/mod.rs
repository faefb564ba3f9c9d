//! A worker's decisions, sans I/O: whether an assignment starts, waits for
//! the lease or is refused, and what the node's periodic tick must do
//! (mend the outbox, renew the lease, resend results, stop jobs whose
//! lease runs out). Time comes in as data; the actor
//! (`ffrtmp_actors::node`) reads the clock, acts on the answer, and owns
//! the outbox, the link and the job actors.

#[cfg(test)]
mod tests;

use crate::encoders;
use crate::lease::{WorkerLease, PING_INTERVAL_MS};
use crate::wire::Assignment;

/// What the node does with an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The job already runs here: ignore it.
    Duplicate,
    /// Refuse it: report a transient `worker_crash` with this reason, so the
    /// master retries it elsewhere while attempts remain. `lease`: the
    /// master's lease is too short for any job to start here (a
    /// configuration error, logged as such).
    Refuse {
        /// Why, for the report.
        why: String,
        /// The lease, not the job, is at fault.
        lease: bool,
    },
    /// Hold it until the link's first `Pong` (no lease yet); it runs with
    /// this encoder.
    Wait {
        /// The encoder the job runs with here.
        encoder: String,
    },
    /// Start it now with this encoder.
    Start {
        /// The encoder the job runs with here.
        encoder: String,
    },
}

/// The node as an admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeNow<'a> {
    /// Jobs running.
    pub running: usize,
    /// Jobs it runs at once.
    pub slots: u32,
    /// It takes no new jobs.
    pub draining: bool,
    /// Its working encoders.
    pub encoders: &'a [String],
    /// Its lease with the master.
    pub lease: &'a WorkerLease,
    /// The lease length the master grants (from its last `Pong`).
    pub granted_ms: Option<u64>,
    /// The kill grace (SIGTERM to SIGKILL).
    pub grace_ms: u64,
    /// Monotonic now.
    pub now_ms: u64,
}

/// Why no job can ever start here: the master's lease does not outlast
/// this worker's kill grace (a configuration mismatch between the two).
pub fn lease_too_short(granted_ms: Option<u64>, grace_ms: u64) -> Option<String> {
    let granted = granted_ms?;
    (granted <= grace_ms).then(|| {
        format!(
            "the master's lease ({granted} ms) is not longer than this worker's kill grace ({grace_ms} ms)"
        )
    })
}

/// What to do with assignment `a` (`already_running`: its job runs here).
pub fn admit(a: &Assignment, already_running: bool, node: NodeNow<'_>) -> Admission {
    if already_running {
        return Admission::Duplicate;
    }
    if node.draining {
        return Admission::Refuse {
            why: "node is draining".into(),
            lease: false,
        };
    }
    if node.running as u32 >= node.slots {
        return Admission::Refuse {
            why: "no free slot on node".into(),
            lease: false,
        };
    }
    // The encoder the job runs with here: the one it names, or what its
    // `hardware` preference finds among this node's working encoders
    // (placement checked the same, `encoders::satisfies`).
    let Some(encoder) = encoders::resolve(&a.spec.encode, node.encoders) else {
        return Admission::Refuse {
            why: format!(
                "no working encoder on this node for the job (codec {}, encoder {}, hardware {:?})",
                a.spec.encode.codec.as_str(),
                a.spec.encode.encoder.as_deref().unwrap_or("any"),
                a.spec.encode.hardware
            ),
            lease: false,
        };
    };
    let encoder = encoder.to_string();
    if !node.lease.can_start(node.now_ms, node.grace_ms) {
        if let Some(why) = lease_too_short(node.granted_ms, node.grace_ms) {
            return Admission::Refuse { why, lease: true };
        }
        // Before the first Pong of this link: start once it arrives.
        return Admission::Wait { encoder };
    }
    Admission::Start { encoder }
}

/// What a tick of the node must do, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickPlan {
    /// Look at the outbox (reopen it after a failed write).
    pub mend_outbox: bool,
    /// Send a `Ping` (lease renewal).
    pub ping: bool,
    /// Resend results that waited [`TickInput::resend_after_ms`] for an `Ack`.
    pub resend: bool,
    /// Tell every job the lease runs out.
    pub stop_jobs: bool,
}

/// What a tick looks at.
#[derive(Debug, Clone, Copy)]
pub struct TickInput<'a> {
    /// Monotonic now.
    pub now_ms: u64,
    /// When the outbox was last looked at.
    pub last_mend_ms: u64,
    /// How often it is looked at (and results due a resend with it).
    pub outbox_check_ms: u64,
    /// A link to the master is up.
    pub linked: bool,
    /// When the last `Ping` went.
    pub last_ping_ms: Option<u64>,
    /// Every result is acknowledged.
    pub all_acknowledged: bool,
    /// When results were last looked at for a resend.
    pub last_resend_ms: u64,
    /// Jobs run here.
    pub jobs_running: bool,
    /// The jobs were told already (reset on renewal).
    pub stop_sent: bool,
    /// The lease.
    pub lease: &'a WorkerLease,
    /// The kill grace.
    pub grace_ms: u64,
}

/// The node's periodic decisions.
pub fn tick(t: TickInput<'_>) -> TickPlan {
    let now = t.now_ms;
    TickPlan {
        mend_outbox: now.saturating_sub(t.last_mend_ms) >= t.outbox_check_ms,
        ping: t.linked
            && t.last_ping_ms
                .is_none_or(|p| now.saturating_sub(p) >= PING_INTERVAL_MS),
        resend: t.linked
            && !t.all_acknowledged
            && now.saturating_sub(t.last_resend_ms) >= t.outbox_check_ms,
        stop_jobs: t.jobs_running && !t.stop_sent && t.lease.must_stop(now, t.grace_ms),
    }
}

/// Whether a result last sent at `sent_at_ms` goes again now: always on a
/// new link (`min_age_ms` `None`), else once it waited `min_age_ms`.
pub fn resend_due(sent_at_ms: Option<u64>, now_ms: u64, min_age_ms: Option<u64>) -> bool {
    min_age_ms.is_none_or(|age| sent_at_ms.is_none_or(|t| now_ms.saturating_sub(t) >= age))
}
