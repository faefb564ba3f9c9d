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

mod query;

pub use query::*;

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
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Output frame rate in frames per second.
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
    /// The middle value (the mean of the two middle values for an even count).
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
    /// The jobs' resolution, rate, codec, encoder and rate control: the
    /// row's key, with `node`.
    pub configuration: Configuration,
    /// The preset name(s) the jobs were submitted with (`+`-joined), or
    /// `custom-<W>x<H>p<FPS>` for jobs without one. Not part of the key.
    pub scenario: String,
    /// The FFmpeg encoder (`configuration.encoder`).
    pub encoder: String,
    /// The node the jobs ran on: figures from different machines (or
    /// energy sources) are never pooled.
    #[schema(value_type = String)]
    pub node: NodeId,
    /// `rapl`, `nvml`, `estimate` or a `+`-joined mix.
    pub energy_source: String,
    /// True when these figures are estimates, not measurements.
    pub estimate: bool,
    /// Jobs behind these figures.
    pub samples: u64,
    /// Median over the jobs of joules per minute of output: what `rank` orders by.
    pub median_joules_per_output_minute: f64,
    /// Median over the jobs of joules per output frame (jobs that counted frames).
    pub median_joules_per_frame: Option<f64>,
    /// Median over the jobs of their mean power in watts.
    pub median_mean_power_watts: f64,
    /// Median of the jobs' average encoding rate (frames per second).
    pub median_fps: f64,
    /// Joules per minute of output: median, quartiles, IQR.
    pub joules_per_output_minute: Stat,
    /// Joules per output frame (jobs that counted frames).
    pub joules_per_frame: Option<Stat>,
    /// The jobs' mean power in watts: median, quartiles, IQR.
    pub mean_power_watts: Stat,
    /// The jobs' average encoding rate in frames per second: median,
    /// quartiles, IQR.
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
    /// VMAF (0–100).
    Vmaf,
    /// PSNR in dB.
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
    /// The answer's median joules per minute of output.
    pub median_joules_per_output_minute: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EfficiencyReport {
    /// One row per configuration, node and energy source, in rank order.
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
mod tests;
