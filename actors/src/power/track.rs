//! How an attempt (a job's encode, or its quality pass) asks the node's
//! sampler to attribute energy to it and, at its end, for its figures. Used
//! by `job` and `quality_pass`, which thereby depend on `power` only.

use std::time::Duration;

use ffrtmp_os::cgroup::JobCgroup;
use ffrtmp_os::energy::cpu::CpuProbe;
use ffrtmp_runtime::wire::AttemptRef;
use ractor::ActorRef;

use super::{JobPids, PowerMsg, SampledEnergy};

/// A process and its direct children (`/proc/<pid>/task/<pid>/children`;
/// just the process where the kernel does not list them).
fn guard_and_children(pid: i32) -> Vec<i32> {
    let mut pids = vec![pid];
    if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(t.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    pids
}

/// Has the sampler attribute energy to `attempt` from now on: by its
/// cgroup's CPU time, or without one the guards `guard_pids` and their
/// children (as far as the kernel lists them). Whether it was asked.
pub(crate) fn track_power(
    power: &ActorRef<PowerMsg>,
    attempt: AttemptRef,
    cgroup: Option<&JobCgroup>,
    guard_pids: &[i32],
) -> bool {
    let (cpu, pids) = match cgroup.and_then(|c| c.cpu_probe().zip(c.procs_file())) {
        Some((cpu, procs)) => (cpu, JobPids::Cgroup(procs)),
        None => {
            let pids: Vec<i32> = guard_pids
                .iter()
                .flat_map(|&p| guard_and_children(p))
                .collect();
            (CpuProbe::Procs(pids.clone()), JobPids::Fixed(pids))
        }
    };
    power.cast(PowerMsg::Track { attempt, cpu, pids }).is_ok()
}

/// How long the job waits for its figures from the sampler.
const POWER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The sampler's last sample for `attempt` (with `final_cpu_s` as its last
/// CPU reading) and its figures; it stops tracking it. `None` if it was
/// not tracked or the sampler does not answer in time.
pub(crate) async fn finish_power(
    power: &ActorRef<PowerMsg>,
    attempt: AttemptRef,
    final_cpu_s: Option<f64>,
) -> Option<SampledEnergy> {
    let job = attempt.job_id.clone();
    match power
        .call(
            |reply| PowerMsg::Finish {
                attempt,
                final_cpu_s,
                reply,
            },
            Some(POWER_CALL_TIMEOUT),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(s)) => s,
        Ok(_) | Err(_) => {
            tracing::warn!(%job, "no energy figures: the power sampler did not answer");
            None
        }
    }
}
