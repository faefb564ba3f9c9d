//! NVIDIA GPUs through NVML (the `nvml-wrapper` crate).
//!
//! `libnvidia-ml.so` is loaded at run time, so this builds and runs on hosts
//! without a driver: [`Gpus::open`] then returns an error, and the worker
//! goes on without GPU figures.
//!
//! Energy comes from the device's total-energy counter (mJ, Volta and later)
//! when it has one, or else from its power draw integrated over time. A job's
//! share of a GPU is weighed by its processes' utilisation (encoder, decoder
//! and SM) as NVML samples it, out of the device's
//! ([`ffrtmp_runtime::energy::attribution::gpu_weights`]).

use std::collections::BTreeMap;
use std::time::Instant;

use nvml_wrapper::{Device, Nvml};

use ffrtmp_runtime::energy::attribution::EngineUtil;

/// One GPU's figures over the interval since the previous read.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    /// `gpu-<index>` (NVML's device index).
    pub domain: String,
    /// Energy since the previous read (since [`Gpus::open`] for the first);
    /// 0 when there is no earlier reading to measure from, or this one failed.
    pub joules: f64,
    /// true: from the total-energy counter; false: integrated power.
    pub energy_counter: bool,
    /// Percent, device-wide (NVENC); 0 when unavailable.
    pub encoder_util: f64,
    /// Percent, device-wide (NVDEC); 0 when unavailable.
    pub decoder_util: f64,
    /// Percent, device-wide; 0 when unavailable.
    pub sm_util: f64,
    /// Per process: its pid and its encoder, decoder and SM utilisation
    /// over the window, percent (averaged over NVML's samples). Sorted by
    /// pid; empty when the device reports no per-process figures.
    pub processes: Vec<(u32, EngineUtil)>,
}

impl GpuSample {
    /// The device's own utilisation, per engine.
    pub fn device_util(&self) -> EngineUtil {
        EngineUtil {
            enc: self.encoder_util,
            dec: self.decoder_util,
            sm: self.sm_util,
        }
    }
}

/// The NVIDIA GPUs of a host, and the last readings of each.
#[derive(Debug)]
pub struct Gpus {
    nvml: Nvml,
    devices: Vec<DeviceState>,
}

/// Per-device state between reads.
#[derive(Debug)]
struct DeviceState {
    index: u32,
    meter: Meter,
    /// Timestamp (µs) of the newest per-process sample seen; later reads ask
    /// only for samples after it.
    last_process_ts: Option<u64>,
}

impl Gpus {
    /// Loads and initialises NVML and takes a first reading of every GPU
    /// (the baseline of the first [`read`](Self::read)).
    ///
    /// Returns `Err(message)` when NVML cannot be loaded or initialised (no
    /// driver); a host with a driver and no GPU gives `Ok` with 0 devices.
    pub fn open() -> Result<Gpus, String> {
        let nvml = Nvml::init().map_err(|e| {
            format!("NVML unavailable (no NVIDIA driver, or libnvidia-ml.so not found): {e}")
        })?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML cannot count GPUs: {e}"))?;
        let at = Instant::now();
        let devices = (0..count)
            .map(|index| match nvml.device_by_index(index) {
                Ok(device) => DeviceState {
                    index,
                    meter: Meter::choose(
                        device.total_energy_consumption().ok(),
                        device.power_usage().ok(),
                        at,
                    ),
                    last_process_ts: newest_process_sample(&device),
                },
                Err(e) => {
                    tracing::warn!(gpu = index, error = %e, "NVML cannot open GPU");
                    DeviceState {
                        index,
                        meter: Meter::choose(None, None, at),
                        last_process_ts: None,
                    }
                }
            })
            .collect();
        Ok(Gpus { nvml, devices })
    }

    /// Number of GPUs NVML reported at open.
    pub fn count(&self) -> usize {
        self.devices.len()
    }

    /// Read every GPU, in index order.
    ///
    /// Energy: deltas of `total_energy_consumption` (mJ, Volta and later)
    /// where it worked at open; else `power_usage` (mW) integrated over the
    /// elapsed time (trapezoid with the previous reading). Encoder
    /// utilisation from `encoder_utilization`, SM from
    /// `utilization_rates().gpu`, per process from
    /// `process_utilization_stats` since the newest sample seen before
    /// (averaged per pid over the samples; an error, such as NotFound when
    /// there were none or NotSupported, gives an empty list). A figure that
    /// cannot be read is left at 0; nothing here panics.
    pub fn read(&mut self) -> Vec<GpuSample> {
        let nvml = &self.nvml;
        self.devices
            .iter_mut()
            .map(|state| state.read(nvml))
            .collect()
    }
}

impl DeviceState {
    fn read(&mut self, nvml: &Nvml) -> GpuSample {
        let mut sample = GpuSample {
            domain: format!("gpu-{}", self.index),
            joules: 0.0,
            energy_counter: self.meter.is_counter(),
            encoder_util: 0.0,
            decoder_util: 0.0,
            sm_util: 0.0,
            processes: Vec::new(),
        };
        let device = match nvml.device_by_index(self.index) {
            Ok(device) => device,
            Err(e) => {
                tracing::debug!(gpu = self.index, error = %e, "NVML cannot open GPU");
                return sample;
            }
        };
        sample.joules = if self.meter.is_counter() {
            let mj = device.total_energy_consumption().ok();
            self.meter.update(mj, None, Instant::now())
        } else {
            let mw = device.power_usage().ok();
            self.meter.update(None, mw, Instant::now())
        };
        if let Ok(u) = device.encoder_utilization() {
            sample.encoder_util = f64::from(u.utilization);
        }
        if let Ok(u) = device.decoder_utilization() {
            sample.decoder_util = f64::from(u.utilization);
        }
        if let Ok(u) = device.utilization_rates() {
            sample.sm_util = f64::from(u.gpu);
        }
        if let Ok(samples) = device.process_utilization_stats(self.last_process_ts) {
            let (processes, newest) = average_by_pid(samples.iter().map(|s| {
                let util = EngineUtil {
                    enc: f64::from(s.enc_util),
                    dec: f64::from(s.dec_util),
                    sm: f64::from(s.sm_util),
                };
                (s.pid, s.timestamp, util)
            }));
            sample.processes = processes;
            if newest.is_some() {
                self.last_process_ts = newest;
            }
        }
        sample
    }
}

/// Timestamp of the newest per-process sample NVML holds for `device`.
fn newest_process_sample(device: &Device<'_>) -> Option<u64> {
    let samples = device.process_utilization_stats(None).ok()?;
    samples.iter().map(|s| s.timestamp).max()
}

/// How a device's energy is measured, with the last reading.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Meter {
    /// The total-energy counter; its last value in mJ.
    Counter { last_mj: Option<u64> },
    /// Power integrated over time; the last reading (mW) and when it was taken.
    Power { last: Option<(u32, Instant)> },
}

impl Meter {
    /// The counter when the device gave a reading of it, else power (with
    /// `power_mw`, read at `at`, as the first reading when there is one).
    fn choose(counter_mj: Option<u64>, power_mw: Option<u32>, at: Instant) -> Meter {
        match counter_mj {
            Some(mj) => Meter::Counter { last_mj: Some(mj) },
            None => Meter::Power {
                last: power_mw.map(|mw| (mw, at)),
            },
        }
    }

    fn is_counter(&self) -> bool {
        matches!(self, Meter::Counter { .. })
    }

    /// Joules since the previous reading, given this one (the figure this
    /// meter uses; `None` when it could not be read, which gives 0 and keeps
    /// the previous reading as the base of the next).
    fn update(&mut self, counter_mj: Option<u64>, power_mw: Option<u32>, at: Instant) -> f64 {
        match self {
            Meter::Counter { last_mj } => {
                let Some(now) = counter_mj else {
                    return 0.0;
                };
                let joules = last_mj.map_or(0.0, |prev| counter_joules(prev, now));
                *last_mj = Some(now);
                joules
            }
            Meter::Power { last } => {
                let Some(now) = power_mw else {
                    return 0.0;
                };
                let joules = last.map_or(0.0, |(prev, then)| {
                    integrate_mw(prev, now, at.saturating_duration_since(then).as_secs_f64())
                });
                *last = Some((now, at));
                joules
            }
        }
    }
}

/// Joules between two readings of the total-energy counter (mJ). A counter
/// that went backwards (driver reload, device reset) gives 0.
fn counter_joules(prev_mj: u64, now_mj: u64) -> f64 {
    now_mj
        .checked_sub(prev_mj)
        .map_or(0.0, |mj| mj as f64 / 1e3)
}

/// Joules over `dt_s` seconds between power readings `prev_mw` and `now_mw`
/// (trapezoid rule). A negative or non-finite interval gives 0.
fn integrate_mw(prev_mw: u32, now_mw: u32, dt_s: f64) -> f64 {
    if !(dt_s.is_finite() && dt_s > 0.0) {
        return 0.0;
    }
    (f64::from(prev_mw) + f64::from(now_mw)) / 2.0 / 1e3 * dt_s
}

/// Per-process samples `(pid, timestamp µs, utilisation)` averaged per pid
/// and engine, sorted by pid, and the newest timestamp among them.
fn average_by_pid(
    samples: impl IntoIterator<Item = (u32, u64, EngineUtil)>,
) -> (Vec<(u32, EngineUtil)>, Option<u64>) {
    let mut sums: BTreeMap<u32, (EngineUtil, u32)> = BTreeMap::new();
    let mut newest: Option<u64> = None;
    for (pid, ts, u) in samples {
        let entry = sums.entry(pid).or_insert((EngineUtil::default(), 0));
        entry.0.enc += u.enc;
        entry.0.dec += u.dec;
        entry.0.sm += u.sm;
        entry.1 += 1;
        newest = newest.max(Some(ts));
    }
    let averages = sums
        .into_iter()
        .map(|(pid, (sum, n))| {
            let n = f64::from(n);
            let avg = EngineUtil {
                enc: sum.enc / n,
                dec: sum.dec / n,
                sm: sum.sm / n,
            };
            (pid, avg)
        })
        .collect();
    (averages, newest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counter_deltas_are_millijoules_and_a_reset_is_zero() {
        assert_eq!(counter_joules(1_000, 3_500), 2.5);
        assert_eq!(counter_joules(7, 7), 0.0);
        assert_eq!(counter_joules(5_000_000, 10), 0.0);
    }

    #[test]
    fn power_is_integrated_by_trapezoid() {
        // 100 W then 300 W over 2 s: mean 200 W, 400 J.
        assert_eq!(integrate_mw(100_000, 300_000, 2.0), 400.0);
        assert_eq!(integrate_mw(50_000, 50_000, 0.5), 25.0);
        assert_eq!(integrate_mw(50_000, 50_000, 0.0), 0.0);
        assert_eq!(integrate_mw(50_000, 50_000, -1.0), 0.0);
        assert_eq!(integrate_mw(50_000, 50_000, f64::NAN), 0.0);
        assert_eq!(
            integrate_mw(u32::MAX, u32::MAX, 1.0),
            f64::from(u32::MAX) / 1e3
        );
    }

    #[test]
    fn the_counter_is_used_when_the_device_has_one() {
        let t0 = Instant::now();
        let mut m = Meter::choose(Some(10_000), Some(80_000), t0);
        assert!(m.is_counter());
        assert_eq!(
            m.update(Some(12_000), None, t0 + Duration::from_secs(1)),
            2.0
        );
        // A failed reading gives 0 and keeps the base.
        assert_eq!(m.update(None, None, t0 + Duration::from_secs(2)), 0.0);
        assert_eq!(
            m.update(Some(15_000), None, t0 + Duration::from_secs(3)),
            3.0
        );
        // Device reset: the counter starts again from 0.
        assert_eq!(m.update(Some(400), None, t0 + Duration::from_secs(4)), 0.0);
        assert_eq!(m.update(Some(900), None, t0 + Duration::from_secs(5)), 0.5);
    }

    #[test]
    fn power_is_integrated_when_there_is_no_counter() {
        let t0 = Instant::now();
        let mut m = Meter::choose(None, Some(100_000), t0);
        assert!(!m.is_counter());
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(m.update(None, Some(300_000), t1), 100.0);
        assert_eq!(m.update(None, None, t1 + Duration::from_secs(1)), 0.0);
        // The next reading spans the failed one.
        let t3 = t1 + Duration::from_secs(2);
        assert_eq!(m.update(None, Some(100_000), t3), 400.0);

        // No first reading: the first update only sets the base.
        let mut m = Meter::choose(None, None, t0);
        assert_eq!(m.update(None, Some(100_000), t0), 0.0);
        assert_eq!(
            m.update(None, Some(100_000), t0 + Duration::from_secs(1)),
            100.0
        );
    }

    #[test]
    fn process_samples_are_averaged_per_pid_and_engine() {
        let u = |enc: f64, dec: f64, sm: f64| EngineUtil { enc, dec, sm };
        let (procs, newest) = average_by_pid([
            (20, 1_000, u(30.0, 0.0, 2.0)),
            (10, 1_500, u(10.0, 4.0, 0.0)),
            (20, 2_000, u(50.0, 0.0, 4.0)),
            (10, 1_200, u(20.0, 0.0, 0.0)),
            (30, 900, u(0.0, 0.0, 0.0)),
        ]);
        assert_eq!(
            procs,
            [
                (10, u(15.0, 2.0, 0.0)),
                (20, u(40.0, 0.0, 3.0)),
                (30, u(0.0, 0.0, 0.0))
            ]
        );
        assert_eq!(newest, Some(2_000));
        assert_eq!(average_by_pid([]), (Vec::new(), None));
    }

    /// On a host without an NVIDIA driver (this project's CI), open fails
    /// with a message; on one with a driver, every device reads without
    /// panicking.
    #[test]
    fn open_without_a_driver_is_an_error_not_a_panic() {
        match Gpus::open() {
            Err(msg) => assert!(msg.starts_with("NVML"), "{msg}"),
            Ok(mut gpus) => {
                for round in 0..2 {
                    let samples = gpus.read();
                    assert_eq!(samples.len(), gpus.count());
                    for (i, s) in samples.iter().enumerate() {
                        assert_eq!(s.domain, format!("gpu-{i}"));
                        assert!(s.joules.is_finite() && s.joules >= 0.0, "{round}: {s:?}");
                        assert!((0.0..=100.0).contains(&s.encoder_util), "{s:?}");
                        assert!((0.0..=100.0).contains(&s.decoder_util), "{s:?}");
                        assert!((0.0..=100.0).contains(&s.sm_util), "{s:?}");
                    }
                }
            }
        }
    }
}
