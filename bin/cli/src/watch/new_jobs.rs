//! `ffrtmp watch` without ids: discovering the jobs submitted after it
//! started (the queue's sequence number, then new ids as they appear) and
//! following each one.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Instant;

use ffrtmp_runtime::model::JobState;

use crate::client::{CliResult, Client, Exit};
use crate::output::Format;

use super::*;

/// What one look at the master's job lists found.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Jobs submitted since the last look: id and state.
    pub(super) new: Vec<(String, JobState)>,
    /// Every queued job.
    pub(super) queued: Vec<String>,
    /// Every assigned or running job.
    pub(super) active: Vec<String>,
}

/// Jobs to start following after a look, and whether any job is left to
/// wait for. Queued jobs are not followed yet (a long queue would be a
/// stream each), only remembered in `pending`: they are followed once they
/// leave the queue, whichever state they are in then, so a job that ran
/// and ended between two looks still shows up (as it ended). `known`: being
/// followed or followed already; `done`: its stream ended.
pub(super) fn plan(
    seen: &Seen,
    pending: &mut HashSet<String>,
    known: impl Fn(&str) -> bool,
    done: impl Fn(&str) -> bool,
) -> (Vec<String>, bool) {
    let queued: HashSet<&str> = seen.queued.iter().map(String::as_str).collect();
    let mut start: Vec<String> = Vec::new();
    let begin = |id: &str, start: &mut Vec<String>| {
        if !known(id) && !start.iter().any(|s| s == id) {
            start.push(id.to_string());
        }
    };
    for (id, state) in &seen.new {
        if *state == JobState::Queued {
            pending.insert(id.clone());
        } else {
            begin(id, &mut start);
        }
    }
    for id in &seen.queued {
        if !known(id) {
            pending.insert(id.clone());
        }
    }
    for id in &seen.active {
        begin(id, &mut start);
    }
    let left: Vec<String> = pending
        .iter()
        .filter(|id| !queued.contains(id.as_str()))
        .cloned()
        .collect();
    for id in left {
        pending.remove(&id);
        begin(&id, &mut start);
    }
    pending.retain(|id| !known(id));
    let busy = !start.is_empty() || seen.queued.iter().chain(&seen.active).any(|id| !done(id));
    (start, busy)
}

/// Looks at the master's job lists: where the last one ended, and the
/// queued jobs not followed yet.
pub(super) struct Discovery {
    /// The highest submission seq seen (jobs after it are new).
    pub(super) high: u64,
    pub(super) pending: HashSet<String>,
}

impl Discovery {
    pub(super) fn new(client: &Client) -> CliResult<Discovery> {
        Ok(Discovery {
            high: latest_seq(client)?,
            pending: HashSet::new(),
        })
    }

    pub(super) fn look(&mut self, client: &Client) -> CliResult<Seen> {
        let mut seen = Seen::default();
        // New submissions first, then the states in the order jobs move
        // through them, so a job that moves during the look is still seen.
        for (seq, id, state) in list(client, None, Some(self.high))? {
            self.high = self.high.max(seq);
            seen.new.push((id, state));
        }
        seen.queued = list(client, Some(JobState::Queued), None)?
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        for state in [JobState::Assigned, JobState::Running] {
            seen.active.extend(
                list(client, Some(state), None)?
                    .into_iter()
                    .map(|(_, id, _)| id),
            );
        }
        Ok(seen)
    }
}

/// Every job in `state` (any, if `None`) submitted after `after`, as (seq,
/// id, state), following `next_cursor` page by page.
pub(super) fn list(
    client: &Client,
    state: Option<JobState>,
    after: Option<u64>,
) -> CliResult<Vec<(u64, String, JobState)>> {
    let mut out = Vec::new();
    let mut cursor = after;
    let mut seen_cursors = HashSet::new();
    loop {
        let mut q = vec![("limit", "1000".to_string())];
        if let Some(s) = state {
            q.push(("state", s.as_str().to_string()));
        }
        if let Some(c) = cursor {
            q.push(("cursor", c.to_string()));
        }
        let page = client.get(&["v1", "jobs"], &q)?;
        for j in page["jobs"].as_array().into_iter().flatten() {
            let parsed = (
                j["seq"].as_u64(),
                j["id"].as_str(),
                serde_json::from_value::<JobState>(j["state"].clone()).ok(),
            );
            if let (Some(seq), Some(id), Some(st)) = parsed {
                out.push((seq, id.to_string(), st));
            }
        }
        match page["next_cursor"].as_u64() {
            Some(n) if seen_cursors.insert(n) => cursor = Some(n),
            _ => break,
        }
    }
    Ok(out)
}

/// The highest submission seq on the master (0 if it has no job). The list
/// runs oldest first, so this asks "any job after N?" (`limit=1`) for a
/// doubling N, then halves the gap: about 2·log2(seq) tiny requests instead
/// of reading every job ever submitted.
pub(super) fn latest_seq(client: &Client) -> CliResult<u64> {
    let any_after = |n: u64| -> CliResult<bool> {
        let page = client.get(
            &["v1", "jobs"],
            &[("limit", "1".to_string()), ("cursor", n.to_string())],
        )?;
        Ok(page["jobs"].as_array().is_some_and(|a| !a.is_empty()))
    };
    if !any_after(0)? {
        return Ok(0);
    }
    // any_after(lo) holds, any_after(hi) does not.
    let mut lo = 0u64;
    let mut hi = 1u64;
    while any_after(hi)? {
        lo = hi;
        if hi == u64::MAX {
            return Ok(hi);
        }
        hi = hi.saturating_mul(2);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if any_after(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi)
}

/// `jobs watch` with no ids: the jobs under way and queued, then each new
/// one, until none is left (or, with `follow`, until interrupted).
pub(super) fn watch_new(client: &Client, format: Format, follow: bool) -> CliResult<Exit> {
    let show = match format {
        Format::Table => Show::Bars,
        Format::Json => Show::JsonLines,
    };
    let mut disc = Discovery::new(client)?;
    let seen = disc.look(client)?;
    let (start, busy) = plan(&seen, &mut disc.pending, |_| false, |_| false);
    if !busy && !follow {
        eprintln!("no job is queued, assigned or running");
        return Ok(Exit::Ok);
    }
    let (mut w, rx) = Watcher::new(client, show, true, follow);
    for id in &start {
        w.add(id);
    }
    let mut next = Instant::now() + POLL;
    let mut failures = 0;
    loop {
        // Events until the next look is due (a steady flow of events does
        // not put the looks off).
        let now = Instant::now();
        if now < next {
            match rx.recv_timeout(next - now) {
                Ok(msg) => {
                    w.handle(msg);
                    // The last stream ended: look now, to end without waiting.
                    if w.live == 0 && !follow {
                        next = Instant::now();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        next = Instant::now() + POLL;
        let seen = match disc.look(client) {
            Ok(s) => {
                failures = 0;
                s
            }
            // The master restarting: the streams reconnect, so do the looks.
            Err(e) if e.exit == Exit::Unreachable && failures < MAX_RECONNECTS => {
                failures += 1;
                continue;
            }
            Err(e) => {
                // Streams may be blocked on a master that is gone: no join.
                let followed = w.out;
                if format == Format::Table && !follow {
                    summary(&followed).print();
                }
                return Err(e);
            }
        };
        let (start, busy) = plan(
            &seen,
            &mut disc.pending,
            |id| w.knows(id),
            |id| w.done.contains(id),
        );
        for id in &start {
            w.add(id);
        }
        if !follow && !busy && w.live == 0 {
            break;
        }
    }
    let followed = w.finish();
    if format == Format::Table {
        summary(&followed).print();
    }
    Ok(exit_of(&followed))
}
