//! The store's reads: one job, pages through an index, jobs by state.

use super::*;

impl Store {
    /// Read one job.
    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        get_in(&*self.h()?, id)
    }

    /// Jobs in submission order, filtered by state and/or priority through
    /// the indexes (no full scan when a filter is given), one page at a time.
    /// Labels and experiment are checked on each record the index yields (a
    /// scan; an experiment's own jobs are read by id from its record).
    pub fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        let limit = filter.limit.max(1);
        let start = match filter.after_seq {
            None => 0,
            Some(s) => match s.checked_add(1) {
                Some(next) => next,
                None => {
                    return Ok(Page {
                        jobs: Vec::new(),
                        next_cursor: None,
                    })
                }
            },
        };
        let h = self.h()?;
        let (index, iter) = match (filter.state, filter.priority) {
            (Some(state), _) => {
                let tag = state_byte(state);
                let range = tagged_key(tag, start)..=tagged_key(tag, u64::MAX);
                (Index::State, h.by_state.range(range))
            }
            (None, Some(p)) => {
                let tag = p.rank();
                let range = tagged_key(tag, start)..=tagged_key(tag, u64::MAX);
                (Index::Priority, h.by_priority.range(range))
            }
            (None, None) => (Index::Seq, h.by_seq.range(seq_key(start)..)),
        };
        let mut jobs: Vec<Job> = Vec::new();
        let mut next_cursor = None;
        for item in iter {
            let (key, id) = item?;
            let Some(job) = Self::get_indexed(&h, index, &key, &id)? else {
                continue;
            };
            if filter.state.is_some_and(|s| s != job.state)
                || filter.priority.is_some_and(|p| p != job.spec.priority)
                || filter
                    .experiment
                    .as_ref()
                    .is_some_and(|e| job.spec.experiment.as_ref() != Some(e))
                || !filter
                    .labels
                    .iter()
                    .all(|(k, v)| job.spec.labels.get(k) == Some(v))
            {
                continue;
            }
            if jobs.len() == limit {
                next_cursor = jobs.last().map(|j| j.seq);
                break;
            }
            jobs.push(job);
        }
        Ok(Page { jobs, next_cursor })
    }

    /// Every job in any of `states`, in submission order (e.g. `Queued`,
    /// `Assigned` and `Running` on start-up).
    pub fn in_states(&self, states: &[JobState]) -> Result<Vec<Job>, StoreError> {
        let mut wanted: Vec<JobState> = states.to_vec();
        wanted.sort();
        wanted.dedup();
        let mut out = Vec::new();
        let h = self.h()?;
        for state in wanted {
            for item in h.by_state.scan_prefix([state_byte(state)]) {
                let (key, id) = item?;
                if let Some(job) = Self::get_indexed(&h, Index::State, &key, &id)? {
                    out.push(job);
                }
            }
        }
        out.sort_by_key(|j| j.seq);
        Ok(out)
    }

    /// How many jobs are in each state (every state listed, zeros included),
    /// through the state index; each entry's record is read to check it.
    pub fn count_by_state(&self) -> Result<Vec<(JobState, u64)>, StoreError> {
        let h = self.h()?;
        JobState::ALL
            .into_iter()
            .map(|state| {
                let mut n = 0u64;
                for item in h.by_state.scan_prefix([state_byte(state)]) {
                    let (key, id) = item?;
                    if Self::get_indexed(&h, Index::State, &key, &id)?.is_some() {
                        n += 1;
                    }
                }
                Ok((state, n))
            })
            .collect()
    }

    /// Wait until everything written so far (including plain [`Store::put`]s)
    /// is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.wait_durable().await
    }

    /// The job an index entry points at, if its record agrees with the
    /// entry (same seq, and same state or priority); `None` for a stale
    /// entry: the old state's during a write or after a crash, or one
    /// written just before its record (module docs).
    /// Takes the handles the caller iterates with: asking for them again
    /// could wait behind a reopen that waits for the caller's.
    pub(super) fn get_indexed(
        h: &Handles,
        index: Index,
        key: &[u8],
        id: &[u8],
    ) -> Result<Option<Job>, StoreError> {
        let id = std::str::from_utf8(id).map_err(|e| StoreError::Corrupt {
            key: format!("{}/{key:02x?}", index.name()),
            message: format!("index value is not a UTF-8 job id: {e}"),
        })?;
        Ok(get_in(h, id)?.filter(|job| index.key_of(job).as_slice() == key))
    }
}
