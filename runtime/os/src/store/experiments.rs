//! The experiments' records (`ffrtmp_runtime::experiment::Experiment`), one JSON value
//! per experiment keyed by its name, in the sled tree `experiments` beside
//! the jobs. The jobs themselves are ordinary job records carrying
//! `spec.experiment`; the record lists their ids, so an experiment's
//! progress reads its jobs by id (no scan of the job store).
//!
//! Write order when an experiment is submitted (the scheduler's
//! `SubmitExperiment`): this record first, with every job id and
//! `complete: false`; then the jobs; then, once a flush has made them
//! durable, the record again with `complete: true`. sled recovers a prefix
//! of its log, so after a crash part way a job is never stored without its
//! experiment, and an incomplete record says how many jobs it expected
//! (`job_ids`) while the jobs found say what landed: nothing is silently
//! lost. Experiment writes do not count in `meta/writes` (that counts job
//! writes for the side file), and `store salvage` copies jobs only.

use super::{Store, StoreError};
use ffrtmp_runtime::experiment::Experiment;

const TREE: &str = "experiments";

fn decode(name: &[u8], bytes: &[u8]) -> Result<Experiment, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("{TREE}/{}", String::from_utf8_lossy(name)),
        message: e.to_string(),
    })
}

fn encode(e: &Experiment) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(e).map_err(|err| StoreError::Encode {
        id: e.name.clone(),
        message: err.to_string(),
    })
}

impl Store {
    /// Store a new experiment's record unless one of that name exists.
    /// Returns `false` (and writes nothing) when the name is taken. Not
    /// durable until the next flush.
    pub fn insert_experiment(&self, e: &Experiment) -> Result<bool, StoreError> {
        self.put_named(TREE, e.name.as_bytes(), encode(e)?, true)
    }

    /// Replace an experiment's record. Not durable until the next flush.
    pub fn put_experiment(&self, e: &Experiment) -> Result<(), StoreError> {
        self.put_named(TREE, e.name.as_bytes(), encode(e)?, false)
            .map(|_| ())
    }

    /// One experiment's record.
    pub fn get_experiment(&self, name: &str) -> Result<Option<Experiment>, StoreError> {
        match self.named_tree(TREE)?.get(name.as_bytes())? {
            None => Ok(None),
            Some(bytes) => decode(name.as_bytes(), &bytes).map(Some),
        }
    }

    /// Every experiment's record, by name.
    pub fn experiments(&self) -> Result<Vec<Experiment>, StoreError> {
        self.named_tree(TREE)?
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> Experiment {
        Experiment {
            name: name.to_string(),
            created_ms: 1,
            request: serde_json::json!({"name": name}),
            job_ids: vec!["a".into(), "b".into()],
            complete: false,
            cancelled_ms: None,
        }
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_names_are_taken_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            assert!(store.insert_experiment(&record("one")).expect("insert"));
            let mut again = record("one");
            again.job_ids.clear();
            assert!(!store.insert_experiment(&again).expect("insert"));
            assert!(store.insert_experiment(&record("two")).expect("insert"));
            let mut done = record("two");
            done.complete = true;
            store.put_experiment(&done).expect("put");
            store.flush().await.expect("flush");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let one = store.get_experiment("one").expect("get").expect("present");
        assert_eq!(one.job_ids.len(), 2, "the first insert stands");
        assert!(
            store
                .get_experiment("two")
                .expect("get")
                .expect("present")
                .complete
        );
        assert_eq!(store.get_experiment("three").expect("get"), None);
        let names: Vec<String> = store
            .experiments()
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["one", "two"]);
    }
}
