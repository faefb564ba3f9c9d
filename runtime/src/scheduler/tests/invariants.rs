//! The invariants, checked after every step (`check`) and on every
//! released effect (`check_licensed`).

use super::*;

impl World {
    pub(super) fn check_licensed(&self, m: WriteMark, effect: &Effect) {
        let log = self.core.store().log();
        let written_by = |job: &Job| log.iter().find(|(_, j)| j == job).map(|(w, _)| *w);
        match effect {
            Effect::Send {
                msg: ToWorker::Assign(a),
                ..
            } => {
                let w = log
                    .iter()
                    .find(|(_, j)| {
                        j.id == a.job_id && j.token == a.token && j.state == JobState::Assigned
                    })
                    .map(|(w, _)| *w);
                assert!(
                    w.is_some_and(|w| w <= m),
                    "assignment {a:?} not licensed by a write before mark {m}"
                );
            }
            Effect::Send {
                msg: ToWorker::Ack(a),
                ..
            } => {
                if let Some(w) = self.results_written.get(&(a.job_id.clone(), a.token)) {
                    assert!(
                        *w <= self.core.store().durable(),
                        "Ack {a:?} before its result (write {w}) is durable"
                    );
                }
            }
            Effect::Publish(UpdateKind::State, job)
            | Effect::CancelReply(_, CancelReply::Cancelled(job))
            | Effect::RetryReply(_, RetryReply::Requeued(job)) => {
                let w = written_by(job);
                assert!(
                    w.is_some_and(|w| w <= m),
                    "{} ({:?}) released before its write",
                    job.id,
                    job.state
                );
            }
            _ => {}
        }
    }

    // ---- invariants ---------------------------------------------------

    /// The invariants that hold between any two steps.
    pub(super) fn check(&self) {
        let store = self.core.store();
        let jobs = store.in_states(&JobState::ALL).unwrap_or_default();
        for job in &jobs {
            let on = self.core.running_on(&job.id);
            let fenced = self.core.fenced(&job.id);
            // 4. Never two live attempts: one node at most believes it runs it,
            // and no worker runs another attempt of it meanwhile.
            assert!(on.len() <= 1, "{} on several nodes: {on:?}", job.id);
            let holders: Vec<(&String, u64)> = self
                .workers
                .iter()
                .flat_map(|(n, w)| {
                    w.running
                        .iter()
                        .filter(|(j, _)| j == &job.id)
                        .map(move |(_, t)| (n, *t))
                })
                .collect();
            assert!(holders.len() <= 1, "{} runs twice: {holders:?}", job.id);
            // 6. Not lost: queued ⇒ in the queue; assigned/running ⇒ a node
            // holds it or it is fenced.
            match job.state {
                JobState::Queued => assert!(
                    self.core.is_queued(&job.id),
                    "{} queued but not in the queue",
                    job.id
                ),
                JobState::Assigned | JobState::Running => assert!(
                    on.len() == 1 || fenced.is_some(),
                    "{} {:?} but neither on a node nor fenced",
                    job.id,
                    job.state
                ),
                _ => {}
            }
            // 5. A fence is the one the lease rule gives.
            if let (Some((_, tok, until)), Some((etok, euntil))) =
                (fenced, self.expected_fences.get(&job.id))
            {
                if tok == *etok {
                    assert!(
                        until >= *euntil,
                        "{} fenced until {until}, before {euntil}",
                        job.id
                    );
                }
            }
        }
        // 6. Every accepted job whose acceptance is durable is on disk.
        let durable = store.durable_jobs();
        for (id, mark) in &self.accepted {
            if store.is_durable(*mark) {
                assert!(durable.contains_key(id), "accepted job {id} lost");
            }
        }
    }
}
