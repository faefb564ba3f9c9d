//! The sampling itself: the node's meters (RAPL, NVML or the labelled
//! estimate), the jobs tracked, and how each interval's energy is split
//! among them. Runs on the sampler's own thread.

use super::*;

pub(super) struct Tracked {
    pub(super) cpu: CpuReader,
    pub(super) pids: JobPids,
    pub(super) last_cpu_s: Option<f64>,
    pub(super) since: Instant,
    pub(super) joules: BTreeMap<(String, PowerSource), f64>,
}

#[derive(Default)]
pub(super) struct DomainAcc {
    pub(super) watts: f64,
    pub(super) joules_total: f64,
}

/// One domain's energy over an interval, and how to split it.
pub(super) struct Part {
    pub(super) domain: String,
    pub(super) source: PowerSource,
    pub(super) joules: f64,
    /// Each job's use over the interval (CPU seconds, or GPU utilisation).
    pub(super) weights: Vec<(AttemptRef, f64)>,
    /// The whole node's (device's) use over the interval.
    pub(super) capacity: f64,
}

/// The CPU side's source.
pub(super) enum CpuSide {
    Rapl(Rapl),
    Estimate(EstimateModel),
    None,
}

/// The sampling core: sources, tracked jobs, totals. Owned by the actor,
/// driven by its sampling thread.
pub(super) struct Meter {
    pub(super) config: PowerConfig,
    pub(super) cpu_side: CpuSide,
    pub(super) gpus: Option<Gpus>,
    pub(super) last_at: Instant,
    pub(super) proc_stat: ProcStat,
    pub(super) last_proc: Option<CpuTimes>,
    pub(super) last_report: Instant,
    pub(super) jobs: HashMap<AttemptRef, Tracked>,
    pub(super) domains: BTreeMap<(String, PowerSource), DomainAcc>,
    pub(super) attributed_total: f64,
    pub(super) idle_total: f64,
    pub(super) samples: u64,
    /// Cycle time summed since the last report, and the cycles.
    pub(super) cycle_sum_s: f64,
    pub(super) cycles: u64,
    /// The previous window's mean cycle (shown until this window has one).
    pub(super) last_cycle_s: f64,
    pub(super) notes: Vec<String>,
}

/// Open the sources `config` asks for. A source that was asked for by name
/// and cannot be opened is an error; under `auto`, a missing source is a
/// note (logged once) and the node carries on.
pub(super) fn open_sources(
    config: &PowerConfig,
) -> Result<(CpuSide, Option<Gpus>, Vec<String>), String> {
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

pub(super) fn lock(m: &Mutex<Meter>) -> MutexGuard<'_, Meter> {
    // A panic while sampling leaves the figures as they were: still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sampling thread: one cycle per interval on an absolute schedule
/// (a late cycle is not made up for), the node's power to `report_to` every
/// `report_every`. A plain thread rather than an actor timer: a wake costs a
/// fraction of what an async timer plus a mailbox hop costs (see
/// docs/BENCHMARKS.md), and the cadence does not depend on how busy the
/// async runtime is.
pub(super) fn run_sampling(
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
    pub(super) fn tick(&mut self) -> Option<NodePower> {
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
    pub(super) fn sample(&mut self, last: Option<(&AttemptRef, Option<f64>)>) {
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

    pub(super) fn note(&mut self, msg: String) {
        if !self.notes.contains(&msg) {
            tracing::warn!("power sampler: {msg}");
            self.notes.push(msg);
        }
    }

    pub(super) fn snapshot(&self) -> NodePower {
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
