//! The sled [`Store`] as the scheduling core's [`JobStore`]: each method is
//! the `Store` method of the same name (writes applied at once, durable at
//! a later flush; the driver waits for marks with [`Store::wait_mark`]).

use ffrtmp_runtime::model::{Job, JobState};
use ffrtmp_runtime::scheduler::{JobStore, WriteMark};

use super::{Store, StoreError};

impl JobStore for Store {
    type Error = StoreError;

    fn is_storage_full(e: &StoreError) -> bool {
        e.is_storage_full()
    }

    fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        Store::get(self, id)
    }

    fn in_states(&self, states: &[JobState]) -> Result<Vec<Job>, StoreError> {
        Store::in_states(self, states)
    }

    fn put_marked(&mut self, job: &Job) -> Result<WriteMark, StoreError> {
        Store::put_marked(self, job)
    }

    fn put(&mut self, job: &Job) -> Result<(), StoreError> {
        Store::put(self, job)
    }

    fn mark_unflushed(&mut self) -> WriteMark {
        Store::mark_unflushed(self)
    }

    fn is_durable(&self, mark: WriteMark) -> bool {
        Store::is_durable(self, mark)
    }

    fn next_token(&mut self) -> Result<u64, StoreError> {
        Store::next_token(self)
    }

    fn next_seq(&mut self) -> Result<u64, StoreError> {
        Store::next_seq(self)
    }

    fn granted_lease(&self) -> Result<Option<u64>, StoreError> {
        Store::granted_lease(self)
    }

    fn set_granted_lease(&mut self, lease_ms: u64) -> Result<(), StoreError> {
        Store::set_granted_lease(self, lease_ms)
    }
}
