//! A power estimate for hosts without RAPL or NVML: a straight line from
//! idle to maximum power over CPU utilisation. Figures from it are always
//! labelled [`PowerSource::Estimate`](crate::model::PowerSource::Estimate).

/// Node power as a linear function of CPU utilisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimateModel {
    /// Power at 0 % utilisation (`--estimate-idle-watts`).
    pub idle_watts: f64,
    /// Power at 100 % utilisation (`--estimate-max-watts`).
    pub max_watts: f64,
}

impl EstimateModel {
    /// Defaults: idle 10 W, max 10 W + 10 W per core.
    pub fn for_cores(cores: u32) -> EstimateModel {
        EstimateModel {
            idle_watts: 10.0,
            max_watts: 10.0 + 10.0 * f64::from(cores),
        }
    }

    /// Both figures finite, idle ≥ 0 and max ≥ idle. The message names the
    /// flag to fix (`--estimate-idle-watts` / `--estimate-max-watts`).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.idle_watts.is_finite() && self.idle_watts >= 0.0) {
            return Err(format!(
                "--estimate-idle-watts must be a finite number ≥ 0 (got {})",
                self.idle_watts
            ));
        }
        if !self.max_watts.is_finite() {
            return Err(format!(
                "--estimate-max-watts must be a finite number (got {})",
                self.max_watts
            ));
        }
        if self.max_watts < self.idle_watts {
            return Err(format!(
                "--estimate-max-watts ({}) must be at least --estimate-idle-watts ({})",
                self.max_watts, self.idle_watts
            ));
        }
        Ok(())
    }

    /// Linear model: idle + (max - idle) * utilisation, utilisation clamped
    /// to [0, 1] (NaN → 0).
    pub fn watts(&self, utilisation: f64) -> f64 {
        let u = if utilisation.is_nan() {
            0.0
        } else {
            utilisation.clamp(0.0, 1.0)
        };
        self.idle_watts + (self.max_watts - self.idle_watts) * u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_scale_with_cores() {
        assert_eq!(
            EstimateModel::for_cores(8),
            EstimateModel {
                idle_watts: 10.0,
                max_watts: 90.0
            }
        );
        assert_eq!(EstimateModel::for_cores(0).max_watts, 10.0);
        assert!(EstimateModel::for_cores(0).validate().is_ok());
        assert!(EstimateModel::for_cores(u32::MAX).validate().is_ok());
    }

    #[test]
    fn watts_is_linear_and_clamped() {
        let m = EstimateModel {
            idle_watts: 20.0,
            max_watts: 120.0,
        };
        assert_eq!(m.watts(0.0), 20.0);
        assert_eq!(m.watts(0.25), 45.0);
        assert_eq!(m.watts(1.0), 120.0);
        assert_eq!(m.watts(-3.0), 20.0);
        assert_eq!(m.watts(7.5), 120.0);
        assert_eq!(m.watts(f64::NAN), 20.0);
        assert_eq!(m.watts(f64::INFINITY), 120.0);
        assert_eq!(m.watts(f64::NEG_INFINITY), 20.0);
    }

    #[test]
    fn validation_names_the_flag() {
        let m = |idle_watts, max_watts| EstimateModel {
            idle_watts,
            max_watts,
        };
        assert!(m(0.0, 0.0).validate().is_ok());
        assert!(m(15.0, 15.0).validate().is_ok());
        for (bad, flag) in [
            (m(-1.0, 50.0), "--estimate-idle-watts"),
            (m(f64::NAN, 50.0), "--estimate-idle-watts"),
            (m(f64::INFINITY, 50.0), "--estimate-idle-watts"),
            (m(10.0, f64::NAN), "--estimate-max-watts"),
            (m(10.0, f64::INFINITY), "--estimate-max-watts"),
            (m(10.0, 5.0), "--estimate-max-watts"),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.starts_with(flag), "{bad:?}: {err}");
        }
    }
}
