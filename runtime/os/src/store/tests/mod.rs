use super::*;
use ffrtmp_runtime::model::JobSpec;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

fn spec(priority: Priority) -> JobSpec {
    JobSpec {
        priority,
        ..ffrtmp_runtime::test_util::test_spec()
    }
}

fn job(store: &Store, n: usize, priority: Priority) -> Job {
    let seq = store.next_seq().unwrap();
    Job::new(format!("job-{n:04}"), seq, spec(priority), 1_000 + n as u64)
}

fn ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.id.clone()).collect()
}

fn count(store: &Store, state: JobState) -> u64 {
    store
        .count_by_state()
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == state)
        .unwrap()
        .1
}

/// The index entries a job has, raw, across the three trees.
fn raw_entries(store: &Store, id: &str) -> usize {
    Index::ALL
        .into_iter()
        .map(|index| {
            store
                .h()
                .unwrap()
                .tree(index)
                .iter()
                .filter(|item| item.as_ref().unwrap().1.as_ref() == id.as_bytes())
                .count()
        })
        .sum()
}

mod durability;
mod records;
