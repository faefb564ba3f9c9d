//! What the report is asked: `GET /v1/reports/efficiency` query parameters,
//! parsed and checked.

use super::*;

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

    pub(super) fn asks_quality(&self) -> bool {
        self.min_vmaf.is_some() || self.min_psnr.is_some()
    }
}

/// A quality threshold: a number from 0 to 100.
pub(super) fn threshold(name: &str, value: &str) -> Result<f64, FieldError> {
    match value.trim().parse::<f64>() {
        Ok(x) if (0.0..=100.0).contains(&x) => Ok(x),
        _ => Err(FieldError::invalid(
            name,
            format!("`{name}` must be a number from 0 to 100, got {value:?}"),
        )),
    }
}
