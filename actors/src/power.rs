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

use crate::node::NodeMsg;

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

struct Tracked {
    cpu: CpuReader,
    pids: JobPids,
    last_cpu_s: Option<f64>,
    since: Instant,
    joules: BTreeMap<(String, PowerSource), f64>,
}

#[derive(Default)]
struct DomainAcc {
    watts: f64,
    joules_total: f64,
}

/// One domain's energy over an interval, and how to split it.
struct Part {
    domain: String,
    source: PowerSource,
    joules: f64,
    /// Each job's use over the interval (CPU seconds, or GPU utilisation).
    weights: Vec<(AttemptRef, f64)>,
    /// The whole node's (device's) use over the interval.
    capacity: f64,
}

/// The CPU side's source.
enum CpuSide {
    Rapl(Rapl),
    Estimate(EstimateModel),
    None,
}

/// The sampling core: sources, tracked jobs, totals. Owned by the actor,
/// driven by its sampling thread.
struct Meter {
    config: PowerConfig,
    cpu_side: CpuSide,
    gpus: Option<Gpus>,
    last_at: Instant,
    proc_stat: ProcStat,
    last_proc: Option<CpuTimes>,
    last_report: Instant,
    jobs: HashMap<AttemptRef, Tracked>,
    domains: BTreeMap<(String, PowerSource), DomainAcc>,
    attributed_total: f64,
    idle_total: f64,
    samples: u64,
    /// Cycle time summed since the last report, and the cycles.
    cycle_sum_s: f64,
    cycles: u64,
    /// The previous window's mean cycle (shown until this window has one).
    last_cycle_s: f64,
    notes: Vec<String>,
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

/// Open the sources `config` asks for. A source that was asked for by name
/// and cannot be opened is an error; under `auto`, a missing source is a
/// note (logged once) and the node carries on.
fn open_sources(config: &PowerConfig) -> Result<(CpuSide, Option<Gpus>, Vec<String>), String> {
    let mut notes = Vec::new();
    let cpu_side = match config.choice {
        PowerChoice::Auto => match Rapl::open(&config.powercap_root) {
            Ok(r) => CpuSide::Rapl(r),
            Err(e) => {
                notes.push(format!(
                    "RAPL unavailable ({e}); the CPU side is an estimate from CPU utilisation"
                ));
                CpuSide::Estimate(config.estimate)
            }
        },
        PowerChoice::Rapl => CpuSide::Rapl(
            Rapl::open(&config.powercap_root).map_err(|e| format!("--power-source rapl: {e}"))?,
        ),
        PowerChoice::Estimate => CpuSide::Estimate(config.estimate),
        PowerChoice::Nvml => CpuSide::None,
    };
    let gpus = match config.choice {
        PowerChoice::Auto => match Gpus::open() {
            Ok(g) if g.count() > 0 => Some(g),
            Ok(_) => None,
            Err(e) => {
                // The message already begins "NVML unavailable (why)".
                notes.push(format!("{e}; GPU energy is not measured"));
                None
            }
        },
        PowerChoice::Nvml => {
            let g = Gpus::open().map_err(|e| format!("--power-source nvml: {e}"))?;
            if g.count() == 0 {
                return Err("--power-source nvml: NVML found no GPU".into());
            }
            Some(g)
        }
        PowerChoice::Rapl | PowerChoice::Estimate => None,
    };
    Ok((cpu_side, gpus, notes))
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

fn lock(m: &Mutex<Meter>) -> MutexGuard<'_, Meter> {
    // A panic while sampling leaves the figures as they were: still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sampling thread: one cycle per interval on an absolute schedule
/// (a late cycle is not made up for), the node's power to `report_to` every
/// `report_every`. A plain thread rather than an actor timer: a wake costs a
/// fraction of what an async timer plus a mailbox hop costs (see
/// docs/BENCHMARKS.md), and the cadence does not depend on how busy the
/// async runtime is.
fn run_sampling(
    meter: Arc<Mutex<Meter>>,
    stop: Arc<AtomicBool>,
    interval: Duration,
    report_to: Option<ActorRef<NodeMsg>>,
) {
    let mut next = Instant::now() + interval;
    loop {
        let now = Instant::now();
        if next > now {
            // The sampler's own pace; `Drop` unparks it to stop early.
            std::thread::park_timeout(next - now);
            if Instant::now() < next && !stop.load(Ordering::SeqCst) {
                continue; // a spurious wake
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        next += interval;
        let after = Instant::now();
        if next < after {
            next = after + interval;
        }
        let report = lock(&meter).tick();
        if let (Some(p), Some(node)) = (report, &report_to) {
            let _ = node.cast(NodeMsg::Power(p));
        }
    }
}

impl Meter {
    /// A periodic cycle: sample, and the node's power when a report is due.
    fn tick(&mut self) -> Option<NodePower> {
        self.sample(None);
        if self.last_report.elapsed() < self.config.report_every {
            return None;
        }
        self.last_report = Instant::now();
        let p = self.snapshot();
        self.last_cycle_s = p.cycle_seconds;
        self.cycle_sum_s = 0.0;
        self.cycles = 0;
        Some(p)
    }

    /// One sampling cycle: read every source, attribute, accumulate.
    /// `last` names a finishing job and its final CPU reading.
    fn sample(&mut self, last: Option<(&AttemptRef, Option<f64>)>) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64();
        self.last_at = now;

        // Node-wide busy CPU time over the interval: the capacity the jobs'
        // CPU shares are taken out of.
        let proc_now = match self.proc_stat.read() {
            Ok(t) => Some(t),
            Err(e) => {
                self.note(format!(
                    "cannot read {}: {e}",
                    self.config.proc_stat.display()
                ));
                None
            }
        };
        let (busy_s, util) = match (self.last_proc, proc_now) {
            (Some(a), Some(b)) => {
                let busy = (b.busy_s - a.busy_s).max(0.0);
                let total = (b.total_s - a.total_s).max(0.0);
                (busy, if total > 0.0 { busy / total } else { 0.0 })
            }
            _ => (0.0, 0.0),
        };
        if proc_now.is_some() {
            self.last_proc = proc_now;
        }

        // Each job's CPU time over the interval.
        let mut cpu_weights: Vec<(AttemptRef, f64)> = Vec::with_capacity(self.jobs.len());
        for (key, job) in self.jobs.iter_mut() {
            let reading = match last {
                Some((k, Some(final_s))) if k == key => Some(final_s),
                _ => job.cpu.read_s(),
            };
            let delta = match (job.last_cpu_s, reading) {
                (Some(a), Some(b)) => (b - a).max(0.0),
                _ => 0.0,
            };
            if reading.is_some() {
                job.last_cpu_s = reading;
            }
            cpu_weights.push((key.clone(), delta));
        }

        // CPU-side energy, per domain.
        let mut parts: Vec<Part> = Vec::new();
        match &mut self.cpu_side {
            CpuSide::Rapl(r) => match r.read() {
                Ok(deltas) => {
                    for (domain, joules) in deltas {
                        parts.push(Part {
                            domain,
                            source: PowerSource::Rapl,
                            joules,
                            weights: cpu_weights.clone(),
                            capacity: busy_s,
                        });
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.note(msg);
                }
            },
            CpuSide::Estimate(model) => {
                let joules = model.watts(util) * dt;
                parts.push(Part {
                    domain: "cpu".into(),
                    source: PowerSource::Estimate,
                    joules,
                    weights: cpu_weights,
                    capacity: busy_s,
                });
            }
            CpuSide::None => {}
        }

        // GPU energy, per device, by the jobs' processes' utilisation.
        if let Some(gpus) = &mut self.gpus {
            let samples = gpus.read();
            if !samples.is_empty() {
                let pids: Vec<(AttemptRef, Vec<u32>)> = self
                    .jobs
                    .iter()
                    .map(|(k, j)| (k.clone(), j.pids.read()))
                    .collect();
                for s in samples {
                    let (weights, capacity) =
                        attribution::gpu_weights(s.device_util(), &s.processes, &pids);
                    parts.push(Part {
                        domain: s.domain.clone(),
                        source: PowerSource::Nvml,
                        joules: s.joules,
                        weights,
                        capacity,
                    });
                }
            }
        }

        for Part {
            domain,
            source,
            joules,
            weights,
            capacity,
        } in parts
        {
            let split = attribution::attribute(joules, &weights, capacity);
            for (key, j) in split.shares {
                if let Some(t) = self.jobs.get_mut(&key) {
                    *t.joules.entry((domain.clone(), source)).or_default() += j;
                }
                self.attributed_total += j;
            }
            self.idle_total += split.unattributed;
            let acc = self.domains.entry((domain, source)).or_default();
            acc.joules_total += joules.max(0.0);
            acc.watts = if dt > 0.0 { joules / dt } else { acc.watts };
        }
        self.samples += 1;
        let took = now.elapsed().as_secs_f64();
        self.cycle_sum_s += took;
        self.cycles += 1;
        metrics::histogram!(crate::metrics::SAMPLER_CYCLE_SECONDS).record(took);
    }

    fn note(&mut self, msg: String) {
        if !self.notes.contains(&msg) {
            tracing::warn!("power sampler: {msg}");
            self.notes.push(msg);
        }
    }

    fn snapshot(&self) -> NodePower {
        let domains: Vec<DomainPower> = self
            .domains
            .iter()
            .map(|((domain, source), a)| DomainPower {
                domain: domain.clone(),
                source: *source,
                watts: a.watts,
                joules_total: a.joules_total,
            })
            .collect();
        NodePower {
            watts: domains.iter().map(|d| d.watts).sum(),
            joules_total: domains.iter().map(|d| d.joules_total).sum(),
            domains,
            attributed_joules_total: self.attributed_total,
            idle_joules_total: self.idle_total,
            sample_hz: self.config.sample_hz,
            samples: self.samples,
            cycle_seconds: if self.cycles > 0 {
                self.cycle_sum_s / self.cycles as f64
            } else {
                self.last_cycle_s
            },
            notes: self.notes.clone(),
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
mod tests {
    //! The sampler against FAKE inputs written by the test (hardware edges
    //! only): a powercap tree with one package, a `/proc/stat`, and two
    //! jobs' `cpuacct.usage` files. Timer ticks are off (1 mHz); the test
    //! sends `Tick` itself, so every interval's numbers are known.

    use super::*;
    use std::path::Path;

    struct Fake {
        _dir: tempfile::TempDir,
        energy: PathBuf,
        stat: PathBuf,
        cpu: [PathBuf; 2],
    }

    impl Fake {
        fn new() -> Fake {
            let dir = tempfile::tempdir().expect("tempdir");
            let zone = dir.path().join("powercap/intel-rapl:0");
            std::fs::create_dir_all(&zone).expect("zone");
            std::fs::write(zone.join("name"), "package-0\n").expect("name");
            std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").expect("max");
            let f = Fake {
                energy: zone.join("energy_uj"),
                stat: dir.path().join("stat"),
                cpu: [dir.path().join("a.usage"), dir.path().join("b.usage")],
                _dir: dir,
            };
            f.set(0.0, 0.0, [0.0, 0.0]);
            f
        }

        /// Cumulative joules, node busy seconds, and each job's CPU seconds.
        fn set(&self, joules: f64, busy_s: f64, cpu_s: [f64; 2]) {
            std::fs::write(&self.energy, format!("{}\n", (joules * 1e6) as u64)).expect("energy");
            // /proc/stat in clock ticks (100 Hz here, as sysconf says on Linux).
            let ticks = |s: f64| (s * 100.0).round() as u64;
            std::fs::write(
                &self.stat,
                format!(
                    "cpu  {} 0 0 {} 0 0 0 0 0 0\ncpu0 0 0 0 0\n",
                    ticks(busy_s),
                    1_000_000
                ),
            )
            .expect("stat");
            for (p, s) in self.cpu.iter().zip(cpu_s) {
                std::fs::write(p, format!("{}\n", (s * 1e9) as u64)).expect("usage");
            }
        }

        fn config(&self, root: &Path) -> PowerConfig {
            PowerConfig {
                choice: PowerChoice::Rapl,
                powercap_root: root.to_path_buf(),
                proc_stat: self.stat.clone(),
                sample_hz: 0.001,
                estimate: EstimateModel::for_cores(2),
                report_every: Duration::from_secs(3600),
            }
        }
    }

    fn attempt(job: &str) -> AttemptRef {
        AttemptRef {
            job_id: job.into(),
            token: 1,
        }
    }

    async fn finish(p: &ActorRef<PowerMsg>, job: &str, final_cpu_s: Option<f64>) -> SampledEnergy {
        p.call(
            |reply| PowerMsg::Finish {
                attempt: attempt(job),
                final_cpu_s,
                reply,
            },
            None,
        )
        .await
        .expect("call")
        .expect("reply")
        .expect("tracked")
    }

    /// Sample now, and return once the sampler has (messages are handled
    /// in order, so the snapshot's reply comes after the tick).
    async fn tick(p: &ActorRef<PowerMsg>) -> NodePower {
        p.cast(PowerMsg::Tick).expect("tick");
        ractor::call!(p, PowerMsg::Snapshot).expect("snapshot")
    }

    fn joules(e: &SampledEnergy) -> f64 {
        e.domains.iter().map(|d| d.joules).sum()
    }

    #[tokio::test]
    async fn splits_by_cpu_share_and_conserves_the_total() {
        let f = Fake::new();
        let root = f.energy.parent().and_then(Path::parent).expect("root");
        let (p, handle) = Actor::spawn(
            None,
            PowerSamplerActor,
            PowerArgs {
                config: f.config(root),
                report_to: None,
            },
        )
        .await
        .expect("spawn");
        for (i, job) in ["a", "b"].into_iter().enumerate() {
            p.cast(PowerMsg::Track {
                attempt: attempt(job),
                cpu: CpuProbe::CgroupV1Usage(f.cpu[i].clone()),
                pids: JobPids::Fixed(vec![]),
            })
            .expect("track");
        }
        // Both tracked (their baselines read) before the files change.
        let _: NodePower = ractor::call!(p, PowerMsg::Snapshot).expect("snapshot");
        // 1: 10 J while the node was busy 4 s, a 3 s and b 1 s: 7.5 / 2.5.
        f.set(10.0, 4.0, [3.0, 1.0]);
        let n = tick(&p).await;
        assert!((n.joules_total - 10.0).abs() < 1e-6, "{n:?}");
        assert!((n.attributed_joules_total - 10.0).abs() < 1e-6, "{n:?}");
        assert_eq!(n.domains.len(), 1, "{n:?}");
        // 2: 8 J, busy 4 s, a 1 s, b nothing: a 2 J, b 0, 6 J idle.
        f.set(18.0, 8.0, [4.0, 1.0]);
        tick(&p).await;
        // a exits: its final CPU reading (5 s) comes with the call, not
        // from the file; 2 J while busy 1 s, all a's.
        f.set(20.0, 9.0, [4.0, 1.0]);
        let a = finish(&p, "a", Some(5.0)).await;
        let b = finish(&p, "b", None).await;
        assert!((joules(&a) - 11.5).abs() < 1e-6, "{a:?}");
        assert!((joules(&b) - 2.5).abs() < 1e-6, "{b:?}");
        assert_eq!(a.domains[0].domain, "package-0");
        assert_eq!(a.domains[0].source, PowerSource::Rapl);
        let n: NodePower = ractor::call!(p, PowerMsg::Snapshot).expect("snapshot");
        assert!((n.joules_total - 20.0).abs() < 1e-6, "{n:?}");
        assert!((n.attributed_joules_total - 14.0).abs() < 1e-6, "{n:?}");
        assert!((n.idle_joules_total - 6.0).abs() < 1e-6, "{n:?}");
        // Untracked now: a second finish has no figures.
        let again = p
            .call(
                |reply| PowerMsg::Finish {
                    attempt: attempt("a"),
                    final_cpu_s: None,
                    reply,
                },
                None,
            )
            .await
            .expect("call")
            .expect("reply");
        assert_eq!(again, None);
        p.stop(None);
        handle.await.expect("stopped");
    }

    #[tokio::test]
    async fn a_source_asked_for_by_name_must_exist() {
        let f = Fake::new();
        let empty = tempfile::tempdir().expect("tempdir");
        let r = Actor::spawn(
            None,
            PowerSamplerActor,
            PowerArgs {
                config: f.config(empty.path()),
                report_to: None,
            },
        )
        .await;
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("--power-source rapl"), "{err}");
    }
}
