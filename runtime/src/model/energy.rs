//! Energy and power as a worker reports them: per-domain joules, where
//! they were read, and a node's power readings.

use super::*;

/// Where an energy figure came from. Only `Rapl` and `Nvml` are
/// measurements; an `Estimate` is always labelled as one.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PowerSource {
    /// Intel/AMD RAPL counters read through powercap sysfs.
    Rapl,
    /// NVIDIA GPUs through NVML.
    Nvml,
    /// A model of power from CPU utilisation (configured idle and maximum watts).
    Estimate,
}

impl PowerSource {
    /// The lowercase name used in the API and in `energy_source` labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerSource::Rapl => "rapl",
            PowerSource::Nvml => "nvml",
            PowerSource::Estimate => "estimate",
        }
    }

    /// The label of a figure built from these sources: sorted, `+`-joined
    /// (`"rapl+nvml"`), `"none"` when empty.
    pub fn label(sources: impl IntoIterator<Item = PowerSource>) -> String {
        let mut v: Vec<PowerSource> = sources.into_iter().collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            return "none".into();
        }
        v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("+")
    }
}

/// The energy of one power domain (`package-0`, `dram-0`, `gpu-0`, `cpu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct DomainEnergy {
    /// The domain's name: `package-N` and `dram-N` from RAPL, `gpu-N` from
    /// NVML (N the socket or the GPU's index).
    pub domain: String,
    /// Where the figure came from.
    pub source: PowerSource,
    /// Energy charged to the attempt in this domain, in joules.
    pub joules: f64,
}

/// What an attempt (or, summed over its attempts, a job) cost in energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct Energy {
    /// Total over the domains, in joules.
    pub energy_joules: f64,
    /// `energy_joules` over `measured_s`.
    pub mean_power_watts: f64,
    /// Where the figure came from: `rapl`, `nvml`, `estimate`, or a
    /// `+`-joined mix (`rapl+nvml`).
    pub energy_source: String,
    /// True when any part of the figure is an estimate, not a measurement.
    pub estimate: bool,
    /// Seconds over which the energy was sampled.
    pub measured_s: f64,
    /// Per output frame, when frames were counted.
    pub joules_per_frame: Option<f64>,
    /// Per minute of output video, when the output duration is known.
    pub joules_per_output_minute: Option<f64>,
    /// The parts, one per domain.
    pub domains: Vec<DomainEnergy>,
}

impl Energy {
    /// The figures for `domains` sampled over `measured_s` seconds, for an
    /// output of `frames` frames and `output_s` seconds (either may be
    /// unknown: zero or absent gives no per-unit figure).
    pub fn new(
        mut domains: Vec<DomainEnergy>,
        measured_s: f64,
        frames: Option<u64>,
        output_s: Option<f64>,
    ) -> Energy {
        domains.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.source.cmp(&b.source)));
        let energy_joules: f64 = domains.iter().map(|d| d.joules).sum();
        let per = |units: f64| (units > 0.0 && units.is_finite()).then(|| energy_joules / units);
        Energy {
            energy_joules,
            mean_power_watts: per(measured_s).unwrap_or(0.0),
            energy_source: PowerSource::label(domains.iter().map(|d| d.source)),
            estimate: domains.iter().any(|d| d.source == PowerSource::Estimate),
            measured_s,
            joules_per_frame: frames.and_then(|f| per(f as f64)),
            joules_per_output_minute: output_s.and_then(|s| per(s / 60.0)),
            domains,
        }
    }

    /// The sum of several attempts' energy, with per-unit figures for the
    /// output the job finally produced. `None` when no attempt was measured.
    pub fn total<'a>(
        parts: impl IntoIterator<Item = &'a Energy>,
        frames: Option<u64>,
        output_s: Option<f64>,
    ) -> Option<Energy> {
        let mut domains: Vec<DomainEnergy> = Vec::new();
        let mut measured_s = 0.0;
        let mut any = false;
        for e in parts {
            any = true;
            measured_s += e.measured_s;
            for d in &e.domains {
                match domains
                    .iter_mut()
                    .find(|x| x.domain == d.domain && x.source == d.source)
                {
                    Some(x) => x.joules += d.joules,
                    None => domains.push(d.clone()),
                }
            }
        }
        any.then(|| Energy::new(domains, measured_s, frames, output_s))
    }
}

/// One power domain's current reading on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct DomainPower {
    /// The domain's name, as in [`DomainEnergy::domain`].
    pub domain: String,
    /// Where the reading came from.
    pub source: PowerSource,
    /// Mean power over the last sampling interval.
    pub watts: f64,
    /// Energy since the sampler started.
    pub joules_total: f64,
}

/// A node's power, as its `PowerSamplerActor` last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct NodePower {
    /// Every domain's reading, one per domain and source.
    pub domains: Vec<DomainPower>,
    /// Sum over the domains.
    pub watts: f64,
    /// Energy since the sampler started, summed over the domains, in joules.
    pub joules_total: f64,
    /// Energy attributed to jobs since the sampler started.
    pub attributed_joules_total: f64,
    /// The rest: energy no job was charged for (idle, the OS, other
    /// processes). `attributed + idle = joules_total`.
    pub idle_joules_total: f64,
    /// Sampling rate in Hz.
    pub sample_hz: f64,
    /// Sampling cycles since the sampler started.
    pub samples: u64,
    /// Mean duration of one sampling cycle since the previous report, in seconds.
    pub cycle_seconds: f64,
    /// Why a source is missing (e.g. an unreadable RAPL counter), said once.
    pub notes: Vec<String>,
}

#[cfg(test)]
mod energy_tests {
    use super::*;

    fn d(domain: &str, source: PowerSource, joules: f64) -> DomainEnergy {
        DomainEnergy {
            domain: domain.into(),
            source,
            joules,
        }
    }

    #[test]
    fn energy_figures_follow_from_the_domains() {
        let e = Energy::new(
            vec![
                d("package-0", PowerSource::Rapl, 90.0),
                d("dram-0", PowerSource::Rapl, 10.0),
                d("gpu-0", PowerSource::Nvml, 20.0),
            ],
            4.0,
            Some(240),
            Some(30.0),
        );
        assert_eq!(e.energy_joules, 120.0);
        assert_eq!(e.mean_power_watts, 30.0);
        assert_eq!(e.energy_source, "rapl+nvml");
        assert!(!e.estimate);
        assert_eq!(e.joules_per_frame, Some(0.5));
        assert_eq!(e.joules_per_output_minute, Some(240.0));
        // No frames, no duration: no per-unit figures rather than infinities.
        let e = Energy::new(
            vec![d("cpu", PowerSource::Estimate, 5.0)],
            0.0,
            Some(0),
            None,
        );
        assert!(e.estimate);
        assert_eq!(e.energy_source, "estimate");
        assert_eq!(
            (e.joules_per_frame, e.joules_per_output_minute),
            (None, None)
        );
        assert_eq!(e.mean_power_watts, 0.0);
    }

    #[test]
    fn a_jobs_total_sums_its_attempts_by_domain() {
        let a = Energy::new(
            vec![d("package-0", PowerSource::Rapl, 30.0)],
            2.0,
            None,
            None,
        );
        let b = Energy::new(
            vec![
                d("package-0", PowerSource::Rapl, 60.0),
                d("dram-0", PowerSource::Rapl, 10.0),
            ],
            3.0,
            Some(100),
            Some(6.0),
        );
        let t = Energy::total([&a, &b], Some(100), Some(6.0)).expect("measured");
        assert_eq!(t.energy_joules, 100.0);
        assert_eq!(t.measured_s, 5.0);
        assert_eq!(t.domains.len(), 2);
        assert_eq!(t.joules_per_frame, Some(1.0));
        assert_eq!(t.joules_per_output_minute, Some(1000.0));
        assert!(Energy::total([], None, None).is_none());
    }
}
