//! The efficiency report (`GET /v1/reports/efficiency`): which encode
//! configuration gives the quality an operator needs for the least energy.
//!
//! A pure function over finished jobs (no clock, no IO). Each sample is one
//! job that succeeded, with the energy of its succeeding attempt (failed
//! attempts are a cost of the job, not of the configuration) and the
//! quality scores of its result.
//!
//! **Grouping.** A row is one [`Configuration`] — every setting that
//! changes the encode: the encoder really used, preset, rate control and
//! its bitrate or CRF, resolution, frame rate, pixel format — on one node,
//! from one energy source. Two jobs that differ in any of these never share
//! a row, so an estimate never mixes with a measurement and two presets
//! never average into one figure. The scenario name is not a setting (two
//! names for the same settings share a row; the row lists them).
//!
//! **Figures.** Medians and interquartile ranges ([`Stat`]) of joules per
//! output minute, joules per frame, watts, fps and each quality metric's
//! per-job mean, with how many jobs each figure comes from.
//!
//! **Questions** ([`ReportQuery`]): only the jobs of one `experiment`
//! and/or carrying given `label`s; with `min_vmaf` / `min_psnr`, the
//! cheapest configuration reaching that quality, per codec and overall
//! ([`Cheapest`]): the lowest median joules per output minute among rows
//! whose median metric is at least the threshold (every given threshold);
//! a row without the metric cannot qualify. Estimated and measured energy
//! are not comparable, so they are answered separately, each answer
//! labelled `estimate`.
//!
//! **Pareto frontier.** Over (median joules per output minute, lower is
//! better; median VMAF, higher is better — PSNR when no row has VMAF),
//! within measured rows and within estimated rows: a row is on the
//! frontier when no row of its kind is at least as good on both and better
//! on one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::FieldError;
use crate::model::{Job, JobResult, JobState, NodeId, Outcome};

/// Every setting that changes an encode (what a row is, with node and
/// energy source).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub struct Configuration {
    /// `h264`, `h265`, `vp9`, `av1`.
    pub codec: String,
    /// The FFmpeg encoder the job ran (`libx264`, `hevc_nvenc`, ...).
    pub encoder: String,
    /// The encoder's speed preset.
    pub preset: String,
    /// `crf` (constant quality) or `bitrate`.
    pub rate_control: String,
    /// The CRF (or the hardware family's equivalent), in `crf` mode.
    pub crf: Option<u32>,
    /// The target bitrate, in `bitrate` mode.
    pub bitrate_kbps: Option<u32>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// The output pixel format (`yuv420p` unless the job named another).
    pub pix_fmt: String,
}

impl Configuration {
    /// The configuration `job` ran with; `result` is its succeeding
    /// attempt's result.
    pub fn of(job: &Job, result: &JobResult) -> Configuration {
        let e = &job.spec.encode;
        Configuration {
            codec: e.codec.as_str().to_string(),
            encoder: encoder_used(job, result),
            preset: e.preset.clone(),
            rate_control: if e.crf.is_some() { "crf" } else { "bitrate" }.to_string(),
            crf: e.crf,
            bitrate_kbps: if e.crf.is_some() {
                None
            } else {
                Some(e.bitrate_kbps)
            },
            width: e.width,
            height: e.height,
            fps: e.fps,
            pix_fmt: e.pix_fmt.clone().unwrap_or_else(|| "yuv420p".to_string()),
        }
    }

    /// A short name for tables and plots:
    /// `libx264 medium crf23 1280x720p30` (the pixel format added when not
    /// `yuv420p`).
    pub fn label(&self) -> String {
        let rate = match (self.crf, self.bitrate_kbps) {
            (Some(crf), _) => format!("crf{crf}"),
            (None, Some(kbps)) => format!("{kbps}k"),
            (None, None) => "?".to_string(),
        };
        let mut s = format!(
            "{} {} {} {}x{}p{}",
            self.encoder, self.preset, rate, self.width, self.height, self.fps
        );
        if self.pix_fmt != "yuv420p" {
            s.push(' ');
            s.push_str(&self.pix_fmt);
        }
        s
    }
}

/// The encoder a job really ran: the one its worker recorded
/// (`JobResult.encoder`), else the one its spec names, else its codec's
/// software encoder (results written before the worker recorded it).
pub fn encoder_used(job: &Job, result: &JobResult) -> String {
    result
        .encoder
        .clone()
        .or_else(|| job.spec.encode.encoder.clone())
        .unwrap_or_else(|| job.spec.encode.codec.encoder().to_string())
}

/// A figure over a row's jobs: median and interquartile range (quartiles
/// by linear interpolation between order statistics).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stat {
    pub median: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// `q3 - q1`.
    pub iqr: f64,
    /// Jobs this figure comes from.
    pub n: u64,
}

impl Stat {
    /// `None` when `v` is empty.
    pub fn of(v: &mut [f64]) -> Option<Stat> {
        let median = median(v)?; // sorts
        let (q1, q3) = (quantile_sorted(v, 0.25), quantile_sorted(v, 0.75));
        Some(Stat {
            median,
            q1,
            q3,
            iqr: q3 - q1,
            n: v.len() as u64,
        })
    }
}

/// The `p` quantile of sorted, non-empty `v` (linear interpolation, the
/// "type 7" of R and NumPy's default).
fn quantile_sorted(v: &[f64], p: f64) -> f64 {
    let h = (v.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// One configuration's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EfficiencyRow {
    /// 1 for the most efficient measured configuration; estimated rows
    /// follow the measured ones.
    pub rank: u32,
    /// [`Configuration::label`]: how tables and plots name this row.
    pub label: String,
    pub configuration: Configuration,
    /// The preset name(s) the jobs were submitted with (`+`-joined), or
    /// `custom-<W>x<H>p<FPS>` for jobs without one. Not part of the key.
    pub scenario: String,
    /// The FFmpeg encoder (`configuration.encoder`).
    pub encoder: String,
    #[schema(value_type = String)]
    pub node: NodeId,
    /// `rapl`, `nvml`, `estimate` or a `+`-joined mix.
    pub energy_source: String,
    /// True when these figures are estimates, not measurements.
    pub estimate: bool,
    /// Jobs behind these figures.
    pub samples: u64,
    pub median_joules_per_output_minute: f64,
    pub median_joules_per_frame: Option<f64>,
    pub median_mean_power_watts: f64,
    /// Median of the jobs' average encoding rate (frames per second).
    pub median_fps: f64,
    /// Joules per minute of output: median, quartiles, IQR.
    pub joules_per_output_minute: Stat,
    /// Joules per output frame (jobs that counted frames).
    pub joules_per_frame: Option<Stat>,
    pub mean_power_watts: Stat,
    pub fps: Stat,
    /// The jobs' mean VMAF (`n`: jobs with a VMAF score); absent when none.
    pub vmaf: Option<Stat>,
    /// The jobs' mean PSNR in dB.
    pub psnr: Option<Stat>,
    /// The jobs' mean SSIM (0–1).
    pub ssim: Option<Stat>,
    /// On the Pareto frontier of energy against quality
    /// ([`EfficiencyReport::frontier_metric`]) among rows of its kind
    /// (measured or estimated).
    pub frontier: bool,
}

impl EfficiencyRow {
    /// This row's median of `metric` (VMAF or PSNR).
    pub fn metric(&self, metric: FrontierMetric) -> Option<f64> {
        match metric {
            FrontierMetric::Vmaf => self.vmaf.map(|s| s.median),
            FrontierMetric::Psnr => self.psnr.map(|s| s.median),
        }
    }
}

/// The quality axis of the frontier and the plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FrontierMetric {
    Vmaf,
    Psnr,
}

/// One answer to "the cheapest configuration reaching the quality".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cheapest {
    /// `overall`, or a codec (`h264`, ...).
    pub scope: String,
    /// Among estimated rows (`true`) or measured rows (`false`): the two
    /// are never compared.
    pub estimate: bool,
    /// The answer's row rank; `None` when no configuration in scope
    /// reaches the quality.
    pub rank: Option<u32>,
    /// The answer's [`Configuration::label`].
    pub label: Option<String>,
    pub median_joules_per_output_minute: Option<f64>,
}

/// What the report was asked (`GET /v1/reports/efficiency?...`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportQuery {
    /// Only the jobs of this experiment (`spec.experiment`).
    pub experiment: Option<String>,
    /// Only jobs carrying every one of these labels (`label=k=v`,
    /// repeatable).
    pub labels: BTreeMap<String, String>,
    /// The cheapest configuration reaching this median VMAF (0–100).
    pub min_vmaf: Option<f64>,
    /// The cheapest configuration reaching this median PSNR (dB, 0–100).
    pub min_psnr: Option<f64>,
}

impl ReportQuery {
    /// The query parameters, as the HTTP API names them (`label` may be
    /// given more than once; the others at most once).
    pub const PARAMS: [&'static str; 4] = ["experiment", "label", "min_vmaf", "min_psnr"];

    /// Set parameter `name` from its text; a refusal names the parameter.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), FieldError> {
        match name {
            "experiment" => {
                if value.is_empty() {
                    return Err(FieldError::invalid(
                        "experiment",
                        "`experiment` must name an experiment",
                    ));
                }
                self.experiment = Some(value.to_string());
            }
            "label" => {
                let (k, v) = value.split_once('=').ok_or_else(|| {
                    FieldError::invalid(
                        "label",
                        format!("`label` must be KEY=VALUE, got {value:?}"),
                    )
                })?;
                if k.is_empty() {
                    return Err(FieldError::invalid(
                        "label",
                        format!("`label` needs a key before `=`, got {value:?}"),
                    ));
                }
                if let Some(old) = self.labels.get(k) {
                    if old != v {
                        return Err(FieldError::invalid(
                            "label",
                            format!("label `{k}` asked as both {old:?} and {v:?}: no job matches"),
                        ));
                    }
                }
                self.labels.insert(k.to_string(), v.to_string());
            }
            "min_vmaf" => self.min_vmaf = Some(threshold("min_vmaf", value)?),
            "min_psnr" => self.min_psnr = Some(threshold("min_psnr", value)?),
            other => {
                return Err(FieldError::new(
                    "unknown_field",
                    Some(other),
                    format!(
                        "unknown query parameter `{other}`; known: {}",
                        Self::PARAMS.join(", ")
                    ),
                ))
            }
        }
        Ok(())
    }

    /// A query from (name, value) pairs.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ReportQuery, FieldError> {
        let mut q = ReportQuery::default();
        for (name, value) in pairs {
            q.set(name, value)?;
        }
        Ok(q)
    }

    /// Whether `job` is one the query is about.
    pub fn matches(&self, job: &Job) -> bool {
        if let Some(x) = &self.experiment {
            if job.spec.experiment.as_ref() != Some(x) {
                return false;
            }
        }
        self.labels
            .iter()
            .all(|(k, v)| job.spec.labels.get(k) == Some(v))
    }

    /// Whether `row` reaches every quality threshold asked.
    pub fn reached_by(&self, row: &EfficiencyRow) -> bool {
        let reaches = |min: Option<f64>, stat: Option<Stat>| match (min, stat) {
            (None, _) => true,
            (Some(min), Some(s)) => s.median >= min,
            (Some(_), None) => false,
        };
        reaches(self.min_vmaf, row.vmaf) && reaches(self.min_psnr, row.psnr)
    }

    fn asks_quality(&self) -> bool {
        self.min_vmaf.is_some() || self.min_psnr.is_some()
    }
}

/// A quality threshold: a number from 0 to 100.
fn threshold(name: &str, value: &str) -> Result<f64, FieldError> {
    match value.trim().parse::<f64>() {
        Ok(x) if (0.0..=100.0).contains(&x) => Ok(x),
        _ => Err(FieldError::invalid(
            name,
            format!("`{name}` must be a number from 0 to 100, got {value:?}"),
        )),
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EfficiencyReport {
    pub rows: Vec<EfficiencyRow>,
    /// Succeeded jobs looked at (those the query matched).
    pub jobs_considered: u64,
    /// Of those, jobs left out: no energy figure (their worker had no power
    /// sampler) or no known output duration.
    pub jobs_without_energy: u64,
    /// What was asked.
    pub query: ReportQuery,
    /// The quality axis of the frontier: `vmaf` when any row has VMAF, else
    /// `psnr` when any has PSNR; `null` (no frontier) otherwise.
    pub frontier_metric: Option<FrontierMetric>,
    /// With `min_vmaf` / `min_psnr`: the cheapest configuration reaching
    /// them, overall and per codec, for measured rows and for estimated
    /// rows (each kind that has rows). Empty without a threshold.
    pub cheapest: Vec<Cheapest>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    configuration: Configuration,
    node: NodeId,
    source: String,
}

#[derive(Default)]
struct Samples {
    estimate: bool,
    scenarios: BTreeSet<String>,
    per_minute: Vec<f64>,
    per_frame: Vec<f64>,
    watts: Vec<f64>,
    fps: Vec<f64>,
    vmaf: Vec<f64>,
    psnr: Vec<f64>,
    ssim: Vec<f64>,
}

/// The median of `v` (the mean of the middle two for an even count);
/// `None` when empty. Sorts `v`.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn scenario_of(job: &Job) -> String {
    job.spec.scenario.clone().unwrap_or_else(|| {
        let e = &job.spec.encode;
        format!("custom-{}x{}p{}", e.width, e.height, e.fps)
    })
}

/// The report over every succeeded job in `jobs`.
pub fn efficiency<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> EfficiencyReport {
    efficiency_filtered(jobs, &ReportQuery::default())
}

/// The report over the succeeded jobs in `jobs` that `query` matches, with
/// its quality questions answered.
pub fn efficiency_filtered<'a>(
    jobs: impl IntoIterator<Item = &'a Job>,
    query: &ReportQuery,
) -> EfficiencyReport {
    let mut groups: BTreeMap<Key, Samples> = BTreeMap::new();
    let (mut considered, mut without) = (0u64, 0u64);
    for job in jobs {
        if job.state != JobState::Succeeded || !query.matches(job) {
            continue;
        }
        considered += 1;
        let Some(attempt) = job
            .attempts
            .iter()
            .rev()
            .find(|a| matches!(a.outcome, Some(Outcome::Succeeded { .. })))
        else {
            without += 1;
            continue;
        };
        let (Some(energy), Some(Outcome::Succeeded { result })) =
            (&attempt.energy, &attempt.outcome)
        else {
            without += 1;
            continue;
        };
        let Some(per_minute) = energy.joules_per_output_minute else {
            without += 1;
            continue;
        };
        let s = groups
            .entry(Key {
                configuration: Configuration::of(job, result),
                node: attempt.node.clone(),
                source: energy.energy_source.clone(),
            })
            .or_default();
        s.estimate |= energy.estimate;
        s.scenarios.insert(scenario_of(job));
        s.per_minute.push(per_minute);
        if let Some(f) = energy.joules_per_frame {
            s.per_frame.push(f);
        }
        s.watts.push(energy.mean_power_watts);
        s.fps.push(result.avg_fps);
        if let Some(q) = &result.quality {
            for (score, into) in [
                (&q.vmaf, &mut s.vmaf),
                (&q.psnr, &mut s.psnr),
                (&q.ssim, &mut s.ssim),
            ] {
                if let Some(m) = score.as_ref().filter(|m| m.mean.is_finite()) {
                    into.push(m.mean);
                }
            }
        }
    }
    let mut rows: Vec<EfficiencyRow> = groups
        .into_iter()
        .filter_map(|(k, mut s)| {
            let per_minute = Stat::of(&mut s.per_minute)?;
            let per_frame = Stat::of(&mut s.per_frame);
            let watts = Stat::of(&mut s.watts)?;
            let fps = Stat::of(&mut s.fps)?;
            Some(EfficiencyRow {
                rank: 0,
                label: k.configuration.label(),
                scenario: s.scenarios.into_iter().collect::<Vec<_>>().join("+"),
                encoder: k.configuration.encoder.clone(),
                configuration: k.configuration,
                node: k.node,
                energy_source: k.source,
                estimate: s.estimate,
                samples: per_minute.n,
                median_joules_per_output_minute: per_minute.median,
                median_joules_per_frame: per_frame.map(|x| x.median),
                median_mean_power_watts: watts.median,
                median_fps: fps.median,
                joules_per_output_minute: per_minute,
                joules_per_frame: per_frame,
                mean_power_watts: watts,
                fps,
                vmaf: Stat::of(&mut s.vmaf),
                psnr: Stat::of(&mut s.psnr),
                ssim: Stat::of(&mut s.ssim),
                frontier: false,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        a.estimate.cmp(&b.estimate).then(
            a.median_joules_per_output_minute
                .total_cmp(&b.median_joules_per_output_minute),
        )
    });
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i as u32 + 1;
    }
    let frontier_metric = if rows.iter().any(|r| r.vmaf.is_some()) {
        Some(FrontierMetric::Vmaf)
    } else if rows.iter().any(|r| r.psnr.is_some()) {
        Some(FrontierMetric::Psnr)
    } else {
        None
    };
    if let Some(metric) = frontier_metric {
        let on: Vec<bool> = rows
            .iter()
            .map(|r| {
                r.metric(metric).is_some()
                    && !rows
                        .iter()
                        .any(|o| o.estimate == r.estimate && dominates(o, r, metric))
            })
            .collect();
        for (r, on) in rows.iter_mut().zip(on) {
            r.frontier = on;
        }
    }
    let cheapest = if query.asks_quality() {
        cheapest(&rows, query)
    } else {
        Vec::new()
    };
    EfficiencyReport {
        rows,
        jobs_considered: considered,
        jobs_without_energy: without,
        query: query.clone(),
        frontier_metric,
        cheapest,
    }
}

/// `a` is at least as cheap and at least as good as `b` in `metric`, and
/// strictly one of the two. A row without the metric dominates nothing.
pub fn dominates(a: &EfficiencyRow, b: &EfficiencyRow, metric: FrontierMetric) -> bool {
    let (Some(qa), Some(qb)) = (a.metric(metric), b.metric(metric)) else {
        return false;
    };
    let (ea, eb) = (
        a.median_joules_per_output_minute,
        b.median_joules_per_output_minute,
    );
    ea <= eb && qa >= qb && (ea < eb || qa > qb)
}

/// Overall and per codec, for measured and for estimated rows: the row of
/// least median energy that reaches the quality. Rows are sorted by
/// (estimate, energy), so the first qualifying row in scope is the answer.
fn cheapest(rows: &[EfficiencyRow], query: &ReportQuery) -> Vec<Cheapest> {
    let mut out = Vec::new();
    for estimate in [false, true] {
        let kind: Vec<&EfficiencyRow> = rows.iter().filter(|r| r.estimate == estimate).collect();
        if kind.is_empty() {
            continue;
        }
        let codecs: BTreeSet<&str> = kind
            .iter()
            .map(|r| r.configuration.codec.as_str())
            .collect();
        let scopes = std::iter::once(None).chain(codecs.into_iter().map(Some));
        for scope in scopes {
            let best = kind
                .iter()
                .find(|r| scope.is_none_or(|c| r.configuration.codec == c) && query.reached_by(r));
            out.push(Cheapest {
                scope: scope.unwrap_or("overall").to_string(),
                estimate,
                rank: best.map(|r| r.rank),
                label: best.map(|r| r.label.clone()),
                median_joules_per_output_minute: best.map(|r| r.median_joules_per_output_minute),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        AttemptRecord, Codec, DomainEnergy, Energy, MetricScore, PowerSource, QualityResult,
    };
    use proptest::prelude::*;

    fn job(
        id: &str,
        scenario: Option<&str>,
        codec: Codec,
        node: &str,
        joules: f64,
        source: PowerSource,
        fps: f64,
    ) -> Job {
        let mut spec = crate::test_util::test_spec();
        spec.scenario = scenario.map(String::from);
        spec.encode.codec = codec;
        let mut j = Job::new(id.into(), 1, spec, 0);
        j.state = JobState::Succeeded;
        let result = JobResult {
            frames: 300,
            avg_fps: fps,
            output_duration_s: Some(30.0),
            ..JobResult::default()
        };
        let energy = Energy::new(
            vec![DomainEnergy {
                domain: "package-0".into(),
                source,
                joules,
            }],
            10.0,
            Some(300),
            Some(30.0),
        );
        j.attempts.push(AttemptRecord {
            attempt: 1,
            node: node.into(),
            started_ms: Some(0),
            ended_ms: Some(10_000),
            isolation: None,
            outcome: Some(Outcome::Succeeded {
                result: result.clone(),
            }),
            energy: Some(energy),
        });
        j.result = Some(result);
        j
    }

    /// A measured x264 job of `joules` per 30 s (2 × that per output minute).
    fn x264(id: &str, joules: f64) -> Job {
        job(id, None, Codec::H264, "n1", joules, PowerSource::Rapl, 30.0)
    }

    fn score(mean: f64) -> MetricScore {
        MetricScore {
            mean,
            frames: 300,
            ..MetricScore::default()
        }
    }

    /// Sets the scores of `j`'s succeeding result.
    fn with_quality(mut j: Job, vmaf: Option<f64>, psnr: Option<f64>, ssim: Option<f64>) -> Job {
        let q = QualityResult {
            vmaf: vmaf.map(score),
            psnr: psnr.map(score),
            ssim: ssim.map(score),
            wall_s: 1.0,
            ..QualityResult::default()
        };
        for a in &mut j.attempts {
            if let Some(Outcome::Succeeded { result }) = &mut a.outcome {
                result.quality = Some(Box::new(q.clone()));
            }
        }
        j
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn quartiles_interpolate() {
        let s = Stat::of(&mut [4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
        assert_eq!((s.median, s.q1, s.q3, s.iqr, s.n), (3.0, 2.0, 4.0, 2.0, 5));
        let s = Stat::of(&mut [1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.median, s.q1, s.q3, s.iqr), (2.5, 1.75, 3.25, 1.5));
        let s = Stat::of(&mut [7.0]).unwrap();
        assert_eq!((s.median, s.iqr, s.n), (7.0, 0.0, 1));
        assert_eq!(Stat::of(&mut []), None);
    }

    #[test]
    fn ranks_measured_configurations_by_median_joules_per_output_minute() {
        let jobs = vec![
            // x264 on n1: 100, 120, 500 J per 30 s → 200, 240, 1000 J/min: median 240.
            job(
                "a",
                Some("720p30-h264"),
                Codec::H264,
                "n1",
                100.0,
                PowerSource::Rapl,
                60.0,
            ),
            job(
                "b",
                Some("720p30-h264"),
                Codec::H264,
                "n1",
                120.0,
                PowerSource::Rapl,
                50.0,
            ),
            job(
                "c",
                Some("720p30-h264"),
                Codec::H264,
                "n1",
                500.0,
                PowerSource::Rapl,
                40.0,
            ),
            // x265 on n1: 90 J → 180 J/min, cheaper.
            job(
                "d",
                Some("720p30-h264"),
                Codec::H265,
                "n1",
                90.0,
                PowerSource::Rapl,
                20.0,
            ),
            // An estimate cheaper than everything still ranks after the measurements.
            job(
                "e",
                None,
                Codec::H264,
                "n2",
                1.0,
                PowerSource::Estimate,
                90.0,
            ),
        ];
        let r = efficiency(&jobs);
        assert_eq!(r.jobs_considered, 5);
        assert_eq!(r.jobs_without_energy, 0);
        let got: Vec<(u32, &str, &str, bool, u64, f64)> = r
            .rows
            .iter()
            .map(|x| {
                (
                    x.rank,
                    x.encoder.as_str(),
                    x.node.as_str(),
                    x.estimate,
                    x.samples,
                    x.median_joules_per_output_minute,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "libx265", "n1", false, 1, 180.0),
                (2, "libx264", "n1", false, 3, 240.0),
                (3, "libx264", "n2", true, 1, 2.0),
            ]
        );
        assert_eq!(r.rows[1].median_fps, 50.0);
        assert_eq!(r.rows[1].median_joules_per_frame, Some(0.4));
        // 200, 240, 1000: quartiles 220 and 620.
        assert_eq!(r.rows[1].joules_per_output_minute.iqr, 400.0);
        assert_eq!(r.rows[1].label, "libx264 veryfast 800k 640x360p30");
        assert_eq!(r.rows[2].scenario, "custom-640x360p30");
        assert_eq!(r.rows[2].energy_source, "estimate");
        assert!(r.cheapest.is_empty() && r.frontier_metric.is_none());
    }

    #[test]
    fn two_presets_never_share_a_row() {
        // The case: one scenario name, ultrafast and medium, whose
        // figures used to be averaged into one meaningless median.
        let mut fast = job(
            "a",
            Some("720p30-h264"),
            Codec::H264,
            "n1",
            3.2,
            PowerSource::Rapl,
            300.0,
        );
        fast.spec.encode.preset = "ultrafast".into();
        let mut slow = job(
            "b",
            Some("720p30-h264"),
            Codec::H264,
            "n1",
            21.2,
            PowerSource::Rapl,
            40.0,
        );
        slow.spec.encode.preset = "medium".into();
        let r = efficiency(&[fast, slow]);
        let got: Vec<(&str, f64)> = r
            .rows
            .iter()
            .map(|x| {
                (
                    x.configuration.preset.as_str(),
                    x.median_joules_per_output_minute,
                )
            })
            .collect();
        assert_eq!(got, vec![("ultrafast", 6.4), ("medium", 42.4)]);
    }

    #[test]
    fn every_setting_that_changes_the_encode_splits_rows() {
        let base = x264("base", 10.0);
        type Change = (&'static str, fn(&mut Job));
        let variants: Vec<Change> = vec![
            ("crf", |j| j.spec.encode.crf = Some(23)),
            ("bitrate", |j| j.spec.encode.bitrate_kbps = 1600),
            ("encoder", |j| {
                j.spec.encode.encoder = Some("h264_nvenc".into())
            }),
            ("pix_fmt", |j| {
                j.spec.encode.pix_fmt = Some("yuv444p".into())
            }),
            ("width", |j| j.spec.encode.width = 1280),
            ("height", |j| j.spec.encode.height = 720),
            ("fps", |j| j.spec.encode.fps = 60),
            ("codec", |j| j.spec.encode.codec = Codec::H265),
            ("preset", |j| j.spec.encode.preset = "slow".into()),
        ];
        for (what, change) in variants {
            let mut other = base.clone();
            change(&mut other);
            let r = efficiency(&[base.clone(), other]);
            assert_eq!(r.rows.len(), 2, "{what} differs: {:#?}", r.rows);
        }
        // Naming the default pixel format, or another scenario name for
        // the same settings, changes nothing.
        let mut same = base.clone();
        same.spec.encode.pix_fmt = Some("yuv420p".into());
        same.spec.scenario = Some("360p30-h264".into());
        let r = efficiency(&[base.clone(), same]);
        assert_eq!(r.rows.len(), 1, "{:#?}", r.rows);
        assert_eq!(r.rows[0].scenario, "360p30-h264+custom-640x360p30");
        // In CRF mode the bitrate is not a setting.
        let mut a = base.clone();
        a.spec.encode.crf = Some(28);
        let mut b = a.clone();
        b.spec.encode.bitrate_kbps = 5000;
        let r = efficiency(&[a, b]);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].configuration.rate_control, "crf");
        assert_eq!(r.rows[0].configuration.bitrate_kbps, None);
        assert_eq!(r.rows[0].label, "libx264 veryfast crf28 640x360p30");
    }

    #[test]
    fn estimates_and_measurements_of_one_configuration_are_separate_rows() {
        let jobs = vec![
            job("a", None, Codec::H264, "n1", 100.0, PowerSource::Rapl, 60.0),
            job(
                "b",
                None,
                Codec::H264,
                "n1",
                100.0,
                PowerSource::Estimate,
                60.0,
            ),
        ];
        let r = efficiency(&jobs);
        assert_eq!(r.rows.len(), 2);
        assert!(!r.rows[0].estimate && r.rows[1].estimate);
    }

    #[test]
    fn jobs_without_energy_or_success_are_left_out_and_counted() {
        let mut no_energy = job("a", None, Codec::H264, "n1", 1.0, PowerSource::Rapl, 1.0);
        no_energy.attempts[0].energy = None;
        let mut failed = job("b", None, Codec::H264, "n1", 1.0, PowerSource::Rapl, 1.0);
        failed.state = JobState::Failed;
        let r = efficiency(&[no_energy, failed]);
        assert!(r.rows.is_empty());
        assert_eq!((r.jobs_considered, r.jobs_without_energy), (1, 1));
    }

    #[test]
    fn quality_medians_spread_and_counts() {
        let jobs = vec![
            with_quality(x264("a", 10.0), Some(90.0), Some(40.0), Some(0.97)),
            with_quality(x264("b", 10.0), Some(94.0), Some(42.0), None),
            with_quality(x264("c", 10.0), None, Some(41.0), None),
            x264("d", 10.0),
        ];
        let r = efficiency(&jobs);
        assert_eq!(r.rows.len(), 1);
        let row = &r.rows[0];
        assert_eq!(row.samples, 4);
        let vmaf = row.vmaf.unwrap();
        assert_eq!((vmaf.median, vmaf.iqr, vmaf.n), (92.0, 2.0, 2));
        let psnr = row.psnr.unwrap();
        assert_eq!((psnr.median, psnr.n), (41.0, 3));
        assert_eq!(row.ssim.map(|s| (s.median, s.n)), Some((0.97, 1)));
        assert_eq!(r.frontier_metric, Some(FrontierMetric::Vmaf));
        assert!(row.frontier, "alone, it is the frontier");
    }

    #[test]
    fn the_query_filters_by_experiment_and_every_label() {
        let mut a = x264("a", 10.0);
        a.spec.experiment = Some("sweep".into());
        a.spec.labels.insert("clip".into(), "park".into());
        a.spec.labels.insert("run".into(), "1".into());
        let mut b = x264("b", 20.0);
        b.spec.experiment = Some("sweep".into());
        b.spec.labels.insert("clip".into(), "crowd".into());
        let mut c = x264("c", 30.0);
        c.spec.labels.insert("clip".into(), "park".into());
        let jobs = [a, b, c];
        let q = |pairs: &[(&str, &str)]| {
            let q = ReportQuery::from_pairs(pairs.iter().copied()).unwrap();
            let r = efficiency_filtered(&jobs, &q);
            (r.jobs_considered, r.rows[0].median_joules_per_output_minute)
        };
        assert_eq!(q(&[]), (3, 40.0));
        assert_eq!(q(&[("experiment", "sweep")]), (2, 30.0));
        assert_eq!(q(&[("label", "clip=park")]), (2, 40.0));
        assert_eq!(
            q(&[("experiment", "sweep"), ("label", "clip=park")]),
            (1, 20.0)
        );
        assert_eq!(q(&[("label", "clip=park"), ("label", "run=1")]), (1, 20.0));
        let none = ReportQuery::from_pairs([("experiment", "other")]).unwrap();
        let r = efficiency_filtered(&jobs, &none);
        assert_eq!((r.jobs_considered, r.rows.len()), (0, 0));
        // A value may hold `=`: only the first splits.
        let q = ReportQuery::from_pairs([("label", "f=a=b")]).unwrap();
        assert_eq!(q.labels.get("f").map(String::as_str), Some("a=b"));
    }

    #[test]
    fn bad_queries_are_refused_naming_the_parameter() {
        for (name, value, field) in [
            ("min_vmaf", "101", "min_vmaf"),
            ("min_vmaf", "-1", "min_vmaf"),
            ("min_vmaf", "NaN", "min_vmaf"),
            ("min_vmaf", "inf", "min_vmaf"),
            ("min_vmaf", "high", "min_vmaf"),
            ("min_vmaf", "", "min_vmaf"),
            ("min_psnr", "100.5", "min_psnr"),
            ("min_psnr", "-0.1", "min_psnr"),
            ("label", "novalue", "label"),
            ("label", "=v", "label"),
            ("experiment", "", "experiment"),
            ("colour", "red", "colour"),
        ] {
            let e = ReportQuery::from_pairs([(name, value)]).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{name}={value}: {e:?}");
        }
        let e = ReportQuery::from_pairs([("label", "a=1"), ("label", "a=2")]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("label"));
        let q = ReportQuery::from_pairs([("min_vmaf", "0"), ("min_psnr", "100")]).unwrap();
        assert_eq!((q.min_vmaf, q.min_psnr), (Some(0.0), Some(100.0)));
        assert!(ReportQuery::from_pairs([("label", "a=1"), ("label", "a=1")]).is_ok());
    }

    #[test]
    fn cheapest_reaching_quality_per_codec_and_overall() {
        let mut h265 = job("e", None, Codec::H265, "n1", 15.0, PowerSource::Rapl, 9.0);
        h265.spec.encode.preset = "medium".into();
        let mut slow = x264("b", 20.0);
        slow.spec.encode.preset = "slow".into();
        let mut fast = x264("a", 5.0);
        fast.spec.encode.preset = "ultrafast".into();
        let mut cheap_est = job(
            "f",
            None,
            Codec::H264,
            "n1",
            1.0,
            PowerSource::Estimate,
            9.0,
        );
        cheap_est.spec.encode.preset = "slow".into();
        let jobs = vec![
            with_quality(fast, Some(80.0), Some(35.0), None), // 10 J/min, too poor
            with_quality(slow, Some(95.0), Some(44.0), None), // 40 J/min
            with_quality(h265, Some(94.0), Some(43.0), None), // 30 J/min
            x264("c", 2.0),                                   // 4 J/min, unscored
            with_quality(cheap_est, Some(96.0), None, None),  // estimate
        ];
        let q = ReportQuery::from_pairs([("min_vmaf", "93")]).unwrap();
        let r = efficiency_filtered(&jobs, &q);
        let got: Vec<(&str, bool, Option<&str>)> = r
            .cheapest
            .iter()
            .map(|c| (c.scope.as_str(), c.estimate, c.label.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("overall", false, Some("libx265 medium 800k 640x360p30")),
                ("h264", false, Some("libx264 slow 800k 640x360p30")),
                ("h265", false, Some("libx265 medium 800k 640x360p30")),
                ("overall", true, Some("libx264 slow 800k 640x360p30")),
                ("h264", true, Some("libx264 slow 800k 640x360p30")),
            ]
        );
        assert_eq!(r.cheapest[0].median_joules_per_output_minute, Some(30.0));
        // Both thresholds must hold: PSNR 43.5 rules out the x265 row.
        let q = ReportQuery::from_pairs([("min_vmaf", "93"), ("min_psnr", "43.5")]).unwrap();
        let r = efficiency_filtered(&jobs, &q);
        assert_eq!(
            r.cheapest[0].label.as_deref(),
            Some("libx264 slow 800k 640x360p30")
        );
        assert_eq!(r.cheapest[2].scope, "h265");
        assert_eq!(r.cheapest[2].rank, None, "no x265 row reaches it");
        // Nothing reaches VMAF 99.
        let q = ReportQuery::from_pairs([("min_vmaf", "99")]).unwrap();
        let r = efficiency_filtered(&jobs, &q);
        assert!(r.cheapest.iter().all(|c| c.rank.is_none()));
        // The frontier: x264 ultrafast (10, 80), x265 (30, 94), x264 slow
        // (40, 95) measured; the unscored row is on nothing; the estimate
        // is alone on its own.
        let marks: Vec<(String, bool)> = r
            .rows
            .iter()
            .map(|x| (format!("{} {}", x.label, x.estimate), x.frontier))
            .collect();
        assert_eq!(
            marks,
            vec![
                ("libx264 veryfast 800k 640x360p30 false".to_string(), false),
                ("libx264 ultrafast 800k 640x360p30 false".to_string(), true),
                ("libx265 medium 800k 640x360p30 false".to_string(), true),
                ("libx264 slow 800k 640x360p30 false".to_string(), true),
                ("libx264 slow 800k 640x360p30 true".to_string(), true),
            ]
        );
    }

    #[test]
    fn the_frontier_uses_psnr_when_no_row_has_vmaf() {
        let mut a = x264("a", 10.0);
        a.spec.encode.preset = "fast".into();
        let jobs = vec![
            with_quality(a, None, Some(40.0), None),
            with_quality(x264("b", 20.0), None, Some(39.0), None), // dominated
        ];
        let r = efficiency(&jobs);
        assert_eq!(r.frontier_metric, Some(FrontierMetric::Psnr));
        let marks: Vec<bool> = r.rows.iter().map(|x| x.frontier).collect();
        assert_eq!(marks, vec![true, false]);
    }

    // ---- properties ----

    /// A job from small domains of every configuration field (so that
    /// equal configurations happen), with an energy, an estimate flag and
    /// scores that may be absent.
    #[allow(clippy::type_complexity)]
    fn arb_job() -> impl Strategy<Value = Job> {
        (
            (
                prop::sample::select(vec![Codec::H264, Codec::H265]),
                prop::sample::select(vec![None, Some("h264_nvenc")]),
                prop::sample::select(vec!["ultrafast", "medium"]),
                prop::option::of(prop::sample::select(vec![23u32, 28])),
                prop::sample::select(vec![800u32, 1600]),
                prop::sample::select(vec![(640u32, 360u32), (1280, 720)]),
                prop::sample::select(vec![30u32, 60]),
                prop::sample::select(vec![None, Some("yuv420p"), Some("yuv444p")]),
            ),
            (
                prop::sample::select(vec!["n1", "n2"]),
                any::<bool>(),
                1u32..200,
                prop::option::of(prop::sample::select(vec![
                    60.0f64, 80.0, 90.0, 93.0, 95.0, 99.0,
                ])),
                prop::option::of(prop::sample::select(vec![30.0f64, 40.0, 45.0])),
            ),
        )
            .prop_map(
                |(
                    (codec, encoder, preset, crf, kbps, (w, h), fps, pix),
                    (node, estimate, joules, vmaf, psnr),
                )| {
                    let source = if estimate {
                        PowerSource::Estimate
                    } else {
                        PowerSource::Rapl
                    };
                    let mut j = job("j", None, codec, node, joules as f64, source, 30.0);
                    let e = &mut j.spec.encode;
                    e.encoder = encoder.map(String::from);
                    e.preset = preset.into();
                    e.crf = crf;
                    e.bitrate_kbps = kbps;
                    (e.width, e.height, e.fps) = (w, h, fps);
                    e.pix_fmt = pix.map(String::from);
                    with_quality(j, vmaf, psnr, None)
                },
            )
    }

    /// The settings of a job, from its spec, as the issue lists them.
    fn settings(j: &Job) -> impl PartialEq + std::fmt::Debug {
        let e = &j.spec.encode;
        (
            e.codec,
            e.encoder
                .clone()
                .unwrap_or_else(|| e.codec.encoder().to_string()),
            e.preset.clone(),
            e.crf,
            e.crf.is_none().then_some(e.bitrate_kbps),
            (e.width, e.height, e.fps),
            e.pix_fmt.clone().unwrap_or_else(|| "yuv420p".into()),
            j.attempts[0].node.clone(),
            j.attempts[0]
                .energy
                .as_ref()
                .map(|x| x.energy_source.clone()),
        )
    }

    proptest! {
        #[test]
        fn jobs_share_a_row_exactly_when_every_setting_is_equal(
            a in arb_job(), b in arb_job()
        ) {
            let r = efficiency(&[a.clone(), b.clone()]);
            let same = settings(&a) == settings(&b);
            prop_assert_eq!(r.rows.len(), if same { 1 } else { 2 });
        }

        #[test]
        fn the_cheapest_answer_reaches_the_quality_and_nothing_cheaper_does(
            jobs in prop::collection::vec(arb_job(), 1..24),
            min_vmaf in prop::option::of(prop::sample::select(vec![0.0f64, 85.0, 93.0, 100.0])),
            min_psnr in prop::option::of(prop::sample::select(vec![0.0f64, 35.0, 42.0])),
        ) {
            prop_assume!(min_vmaf.is_some() || min_psnr.is_some());
            let q = ReportQuery { min_vmaf, min_psnr, ..ReportQuery::default() };
            let r = efficiency_filtered(&jobs, &q);
            prop_assert!(!r.cheapest.is_empty());
            for c in &r.cheapest {
                let in_scope = |row: &&EfficiencyRow| {
                    row.estimate == c.estimate
                        && (c.scope == "overall" || row.configuration.codec == c.scope)
                };
                let scope: Vec<&EfficiencyRow> = r.rows.iter().filter(in_scope).collect();
                prop_assert!(!scope.is_empty(), "an answer for a scope with no rows");
                let reaching = |row: &EfficiencyRow| {
                    min_vmaf.is_none_or(|m| row.vmaf.is_some_and(|s| s.median >= m))
                        && min_psnr.is_none_or(|m| row.psnr.is_some_and(|s| s.median >= m))
                };
                match c.rank {
                    None => prop_assert!(scope.iter().all(|row| !reaching(row))),
                    Some(rank) => {
                        let best = r.rows.iter().find(|row| row.rank == rank).unwrap();
                        prop_assert!(in_scope(&best));
                        prop_assert!(reaching(best), "the answer reaches the quality");
                        prop_assert_eq!(c.median_joules_per_output_minute,
                            Some(best.median_joules_per_output_minute));
                        for row in &scope {
                            if row.median_joules_per_output_minute
                                < best.median_joules_per_output_minute
                            {
                                prop_assert!(!reaching(row), "a cheaper row reaches it");
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn the_frontier_is_exactly_the_undominated_rows(
            jobs in prop::collection::vec(arb_job(), 1..24),
        ) {
            let r = efficiency(&jobs);
            let Some(metric) = r.frontier_metric else {
                prop_assert!(r.rows.iter().all(|x| !x.frontier));
                return Ok(());
            };
            // Written out here, apart from `dominates`.
            let better = |a: &EfficiencyRow, b: &EfficiencyRow| {
                let (ea, eb) = (a.median_joules_per_output_minute, b.median_joules_per_output_minute);
                match (a.metric(metric), b.metric(metric)) {
                    (Some(qa), Some(qb)) => {
                        a.estimate == b.estimate && ea <= eb && qa >= qb && (ea < eb || qa > qb)
                    }
                    _ => false,
                }
            };
            for row in &r.rows {
                let dominated = r.rows.iter().any(|o| better(o, row));
                if row.frontier {
                    prop_assert!(row.metric(metric).is_some());
                    prop_assert!(!dominated, "a frontier row is dominated: {}", row.label);
                } else if row.metric(metric).is_some() {
                    prop_assert!(dominated, "an undominated row is off the frontier: {}", row.label);
                }
            }
        }
    }
}
