//! `PowerSamplerActor`: a worker's energy meter.
//!
//! Runs under the worker's `NodeActor`. Every sampling interval (10 Hz by
//! default) it reads the node's energy counters — RAPL packages and DRAM
//! through powercap sysfs, NVIDIA GPUs through NVML, or, where the CPU side
//! has no measured source, an estimate from CPU utilisation that is always
//! labelled `estimate` — and attributes the interval's energy to the running
//! jobs with [`attribution::attribute`]:
//!
//! - CPU-side energy by each job's cgroup CPU-time delta, out of the whole
//!   node's busy CPU time (`/proc/stat`) over the same interval;
//! - each GPU's energy by what the job's processes kept its engines busy
//!   (NVML's per-process encoder, decoder and SM utilisation: an NVENC
//!   encode shows as its FFmpeg's encoder use), out of the device's
//!   ([`attribution::gpu_weights`]).
//!
//! What no job is charged for (idle, the OS, the worker itself, anything
//! else on the machine) is counted as idle, so that the jobs' energy plus
//! idle is the node's measured total. A job's `JobActor` registers it with
//! [`PowerMsg::Track`] once FFmpeg runs and, when FFmpeg has exited but
//! before its cgroup is removed, asks for its figures with
//! [`PowerMsg::Finish`]: that takes one more sample at once, with the job's
//! last CPU reading, so the job's last fraction of an interval is not lost.
//!
//! Every second the sampler sends the node's power ([`NodePower`]) to its
//! node, which forwards it to the master (`GET /v1/nodes`, Prometheus).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ffrtmp_os::energy::cpu::{CpuProbe, CpuReader};
use ffrtmp_os::energy::nvml::Gpus;
use ffrtmp_os::energy::procstat::{CpuTimes, ProcStat};
use ffrtmp_os::energy::rapl::{self, Rapl};
use ffrtmp_runtime::energy::attribution;
use ffrtmp_runtime::energy::estimate::EstimateModel;
use ffrtmp_runtime::model::{DomainEnergy, DomainPower, NodePower, PowerSource};
use ffrtmp_runtime::wire::AttemptRef;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::node_msg::NodeMsg;

mod meter;
mod track;

use meter::*;
pub(crate) use track::{finish_power, track_power};

/// Which sources to use (`--power-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PowerChoice {
    /// RAPL for the CPU side if readable, else the estimate; NVML for GPUs
    /// if a driver is present.
    #[default]
    Auto,
    /// RAPL only; the node does not start without it.
    Rapl,
    /// NVML only; the node does not start without it.
    Nvml,
    /// The CPU-utilisation estimate only.
    Estimate,
}

impl std::str::FromStr for PowerChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<PowerChoice, String> {
        match s {
            "auto" => Ok(PowerChoice::Auto),
            "rapl" => Ok(PowerChoice::Rapl),
            "nvml" => Ok(PowerChoice::Nvml),
            "estimate" => Ok(PowerChoice::Estimate),
            other => Err(format!(
                "unknown power source {other:?}; expected auto, rapl, nvml or estimate"
            )),
        }
    }
}

/// How a node measures power.
#[derive(Debug, Clone)]
pub struct PowerConfig {
    /// Which sources to use; a source named here that cannot be opened
    /// fails the node's start.
    pub choice: PowerChoice,
    /// The powercap class directory (`/sys/class/powercap`; a fake tree in tests).
    pub powercap_root: PathBuf,
    /// Node-wide CPU time (`/proc/stat`).
    pub proc_stat: PathBuf,
    /// Samples per second (10 by default).
    pub sample_hz: f64,
    /// The model used when the CPU side has no measured source.
    pub estimate: EstimateModel,
    /// How often the node's power goes to the node (and the master).
    pub report_every: Duration,
}

/// Default sampling rate.
pub const DEFAULT_SAMPLE_HZ: f64 = 10.0;
/// Highest sampling rate accepted (RAPL counters update about every 1 ms;
/// above this the sampler costs more than it tells).
pub const MAX_SAMPLE_HZ: f64 = 1000.0;

impl PowerConfig {
    /// The defaults for a node with `cores` cores.
    pub fn new(cores: u32) -> PowerConfig {
        PowerConfig {
            choice: PowerChoice::Auto,
            powercap_root: PathBuf::from(rapl::DEFAULT_POWERCAP_ROOT),
            proc_stat: PathBuf::from("/proc/stat"),
            sample_hz: DEFAULT_SAMPLE_HZ,
            estimate: EstimateModel::for_cores(cores),
            report_every: Duration::from_secs(1),
        }
    }

    /// Checks the numbers (the flags' names are in the messages).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.sample_hz > 0.0 && self.sample_hz <= MAX_SAMPLE_HZ) {
            return Err(format!(
                "--power-sample-hz must be above 0 and at most {MAX_SAMPLE_HZ} (got {})",
                self.sample_hz
            ));
        }
        self.estimate.validate()
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.sample_hz)
    }
}

/// A tracked job's processes, for GPU attribution.
#[derive(Debug, Clone)]
pub enum JobPids {
    /// The job cgroup's `cgroup.procs`.
    Cgroup(PathBuf),
    /// No cgroup: the process group's known pids.
    Fixed(Vec<i32>),
}

impl JobPids {
    fn read(&self) -> Vec<u32> {
        match self {
            JobPids::Cgroup(path) => std::fs::read_to_string(path)
                .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
                .unwrap_or_default(),
            JobPids::Fixed(p) => p.iter().filter_map(|&p| u32::try_from(p).ok()).collect(),
        }
    }
}

/// A finished job's energy as sampled: per domain, and the sampled time.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledEnergy {
    /// Joules charged to the job, one entry per domain and source.
    pub domains: Vec<DomainEnergy>,
    /// Seconds from when tracking began to the last sample.
    pub measured_s: f64,
}

/// The messages a [`PowerSamplerActor`] handles: `Track`, `Finish` and
/// `Untrack` come from the node's `JobActor`s, `Snapshot` from whoever
/// wants the node's power.
pub enum PowerMsg {
    /// Sample now, out of schedule (the sampling thread keeps the schedule).
    Tick,
    /// A job's FFmpeg runs: attribute energy to it from now on.
    Track {
        /// The attempt to charge.
        attempt: AttemptRef,
        /// Where its CPU time is read (its cgroup, or its process).
        cpu: CpuProbe,
        /// Its processes, for GPU utilisation.
        pids: JobPids,
    },
    /// The job's FFmpeg has exited (its cgroup still exists): sample once
    /// more, with `final_cpu_s` as its last CPU reading when given, stop
    /// tracking it and reply with its energy (`None` if it was not tracked).
    Finish {
        /// The attempt.
        attempt: AttemptRef,
        /// Its cgroup's CPU time after FFmpeg exited, if read.
        final_cpu_s: Option<f64>,
        /// Gets the attempt's energy.
        reply: RpcReplyPort<Option<SampledEnergy>>,
    },
    /// Stop tracking a job without figures (its actor failed).
    Untrack(AttemptRef),
    /// The node's power as of the last sample.
    Snapshot(RpcReplyPort<NodePower>),
}

/// A node's energy meter: samples RAPL, NVML or the estimate on its own
/// thread, attributes each interval's energy to the tracked jobs, and sends
/// the node's power to its node about once a second. Spawned linked under
/// the `NodeActor` when [`NodeConfig::power`](crate::node::NodeConfig::power)
/// is set; the node starts a new one if it fails.
pub struct PowerSamplerActor;

/// What the sampler is started with.
pub struct PowerArgs {
    /// Sources and rates.
    pub config: PowerConfig,
    /// Where the once-a-second [`NodeMsg::Power`] goes (the parent node).
    pub report_to: Option<ActorRef<NodeMsg>>,
}

/// The actor's state: the meter, shared with the thread that samples it.
pub struct PowerState {
    meter: Arc<Mutex<Meter>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PowerState {
    fn drop(&mut self) {
        // The thread sees the flag at its next wake, which this brings forward.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Actor for PowerSamplerActor {
    type Msg = PowerMsg;
    type State = PowerState;
    type Arguments = PowerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PowerMsg>,
        args: PowerArgs,
    ) -> Result<PowerState, ActorProcessingErr> {
        let PowerArgs { config, report_to } = args;
        config.validate()?;
        let cfg = config.clone();
        // NVML initialisation and sysfs discovery block: off the runtime.
        let (cpu_side, gpus, notes) =
            tokio::task::spawn_blocking(move || open_sources(&cfg)).await??;
        for n in &notes {
            tracing::warn!("power sampler: {n}");
        }
        let sources: Vec<&str> = [
            match &cpu_side {
                // `Rapl::open` fails without zones, so there is always one.
                CpuSide::Rapl(_) => Some("rapl"),
                CpuSide::Estimate(_) => Some("estimate"),
                CpuSide::None => None,
            },
            gpus.as_ref().map(|_| "nvml"),
        ]
        .into_iter()
        .flatten()
        .collect();
        tracing::info!(sources = %sources.join("+"), hz = config.sample_hz, "power sampler started");
        let mut proc_stat = ProcStat::new(&config.proc_stat);
        let last_proc = proc_stat.read().ok();
        let interval = config.interval();
        let meter = Arc::new(Mutex::new(Meter {
            config,
            cpu_side,
            gpus,
            last_at: Instant::now(),
            proc_stat,
            last_proc,
            last_report: Instant::now(),
            jobs: HashMap::new(),
            domains: BTreeMap::new(),
            attributed_total: 0.0,
            idle_total: 0.0,
            samples: 0,
            cycle_sum_s: 0.0,
            cycles: 0,
            last_cycle_s: 0.0,
            notes,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (meter, stop) = (meter.clone(), stop.clone());
            std::thread::Builder::new()
                .name("ffrtmp-power".into())
                .spawn(move || run_sampling(meter, stop, interval, report_to))?
        };
        Ok(PowerState {
            meter,
            stop,
            thread: Some(thread),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PowerMsg>,
        msg: PowerMsg,
        state: &mut PowerState,
    ) -> Result<(), ActorProcessingErr> {
        let mut state = lock(&state.meter);
        match msg {
            PowerMsg::Tick => state.sample(None),
            PowerMsg::Track { attempt, cpu, pids } => {
                let mut cpu = CpuReader::new(cpu);
                let last_cpu_s = cpu.read_s();
                state.jobs.insert(
                    attempt,
                    Tracked {
                        cpu,
                        pids,
                        last_cpu_s,
                        since: Instant::now(),
                        joules: BTreeMap::new(),
                    },
                );
            }
            PowerMsg::Finish {
                attempt,
                final_cpu_s,
                reply,
            } => {
                let figures = if state.jobs.contains_key(&attempt) {
                    state.sample(Some((&attempt, final_cpu_s)));
                    state.jobs.remove(&attempt).map(|t| SampledEnergy {
                        measured_s: t.since.elapsed().as_secs_f64(),
                        domains: t
                            .joules
                            .into_iter()
                            .map(|((domain, source), joules)| DomainEnergy {
                                domain,
                                source,
                                joules,
                            })
                            .collect(),
                    })
                } else {
                    None
                };
                let _ = reply.send(figures);
            }
            PowerMsg::Untrack(attempt) => {
                state.jobs.remove(&attempt);
            }
            PowerMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
