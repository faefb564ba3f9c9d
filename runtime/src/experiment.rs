//! Experiments (`POST /v1/experiments`): a base job request and a matrix of
//! values for any of its fields, expanded into one job per combination and
//! repeat. Pure: parsing, bounds and expansion; the store keeps the records
//! (`store::experiments`), the scheduler stores the jobs.
//!
//! **Expansion order** (documented in docs/API.md and relied on by clients):
//! the matrix's fields are taken in sorted key order; the combinations are
//! their cartesian product with the *last* field varying fastest (an
//! odometer), each field's values in the order given; the repeats are the
//! outer loop, so round 1 runs every configuration once before round 2
//! starts (drift in the machine's state then touches every configuration
//! alike). Job `i` is round `i / C`, combination `i % C` for `C`
//! combinations.
//!
//! Every expanded job is validated by [`crate::spec::parse_job_request`],
//! the same path as `POST /v1/jobs`; one invalid job refuses the whole
//! experiment, naming the matrix value that made it invalid
//! (`matrix.preset[3]`) or the base field (`base.width`). The bound on the
//! number of jobs is checked from the list lengths before anything is
//! expanded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FieldError;
use crate::model::{JobSpec, Output};
use crate::spec::{self, codes, MediaRoots};

/// The default of `--max-experiment-jobs`.
pub const DEFAULT_MAX_JOBS: u64 = 10_000;
/// Largest `repeat`.
pub const MAX_REPEAT: u64 = 1_000;
/// Longest experiment name.
pub const MAX_NAME_LEN: usize = 63;
/// The fields of an experiment request.
pub const FIELDS: [&str; 5] = ["name", "base", "matrix", "repeat", "labels"];
/// The code of a refusal for a name already taken (`409`).
pub const EXPERIMENT_EXISTS: &str = "experiment_exists";
/// The code of a refusal for a matrix that expands past the bound.
pub const TOO_MANY_JOBS: &str = "too_many_jobs";

/// A stored experiment: what was asked, when, and the jobs it made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// The experiment's id (a slug).
    pub name: String,
    /// When it was submitted (Unix ms).
    pub created_ms: u64,
    /// The request as sent (a JSON object).
    pub request: Value,
    /// The job ids, in expansion order; written before any job is.
    pub job_ids: Vec<String>,
    /// Every job was stored durably (false only when the master stopped
    /// part way through storing them: the jobs found are what landed).
    pub complete: bool,
    /// When a user cancelled it, if one did.
    #[serde(default)]
    pub cancelled_ms: Option<u64>,
}

/// A validated experiment request: its name, the request as sent, and its
/// jobs in expansion order.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// The experiment's id.
    pub name: String,
    /// The request body as a JSON value.
    pub request: Value,
    /// One spec per job, each carrying `experiment = name` and its labels.
    pub jobs: Vec<JobSpec>,
}

fn invalid(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::invalid(field, message)
}

/// Whether `name` is a valid experiment name: 1-63 of `[a-z0-9_-]`,
/// starting with a letter or digit (it is a URL path segment).
pub fn name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=MAX_NAME_LEN).contains(&name.len())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// The label value a matrix value gets: a string as itself, anything else as
/// its JSON text.
pub fn label_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How many jobs a matrix of these list lengths makes, `None` on overflow.
pub fn job_count(lengths: &[usize], repeat: u64) -> Option<u64> {
    lengths
        .iter()
        .try_fold(repeat, |n, &len| n.checked_mul(len as u64))
}

/// The combination (one value index per field) of job `i`, per the module's
/// order, for fields of these list lengths.
pub fn combination(lengths: &[usize], i: u64) -> Vec<usize> {
    let mut rest = i;
    let mut out = vec![0; lengths.len()];
    for (slot, &len) in out.iter_mut().zip(lengths).rev() {
        let len = len.max(1) as u64;
        *slot = (rest % len) as usize;
        rest /= len;
    }
    out
}

/// Set `value` at a dotted `path` of `obj`, creating objects on the way.
fn set_path(obj: &mut Value, path: &str, value: Value) -> Result<(), ()> {
    let mut cur = obj;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let map = cur.as_object_mut().ok_or(())?;
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return Ok(());
        }
        let next = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if next.is_null() {
            *next = Value::Object(Default::default());
        }
        cur = next;
    }
    Err(())
}

/// Whether `field` (a job request's field path) is `key` or inside it.
fn under(field: &str, key: &str) -> bool {
    field == key
        || field
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// Parse, bound and expand an experiment request. Nothing is stored; the
/// bound (`max_jobs`) is checked before any job is built.
pub fn parse_experiment(
    body: &[u8],
    roots: &MediaRoots,
    max_jobs: u64,
) -> Result<Expanded, FieldError> {
    let request = spec::parse_json_value(body)?;
    let obj = request.as_object().ok_or_else(|| {
        FieldError::new(
            codes::INVALID_JSON,
            None,
            "request body must be a JSON object",
        )
    })?;
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(FieldError::new(
            codes::UNKNOWN_FIELD,
            Some(unknown),
            format!("unknown field `{unknown}`; known: {}", FIELDS.join(", ")),
        ));
    }
    let missing =
        |f: &str| FieldError::new(codes::MISSING_FIELD, Some(f), format!("`{f}` is required"));

    let name = match obj.get("name") {
        None | Some(Value::Null) => return Err(missing("name")),
        Some(Value::String(s)) if name_ok(s) => s.clone(),
        Some(_) => {
            return Err(invalid(
                "name",
                format!(
                    "`name` must be 1-{MAX_NAME_LEN} characters of [a-z0-9_-], starting with a \
                     letter or digit"
                ),
            ))
        }
    };
    let base = match obj.get("base") {
        None | Some(Value::Null) => return Err(missing("base")),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            return Err(invalid(
                "base",
                "`base` must be a job request (a JSON object)",
            ))
        }
    };
    let repeat = match obj.get("repeat") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_REPEAT).contains(&n) => n,
            _ => {
                return Err(invalid(
                    "repeat",
                    format!("`repeat` must be a whole number in 1..={MAX_REPEAT}"),
                ))
            }
        },
    };
    let labels: BTreeMap<String, String> = match obj.get("labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let Value::String(s) = v else {
                    return Err(invalid(
                        &format!("labels.{k}"),
                        format!("`labels.{k}` must be a string"),
                    ));
                };
                out.insert(k.clone(), s.clone());
            }
            spec::check_labels("labels", out)?
        }
        Some(_) => return Err(invalid("labels", "`labels` must be a JSON object")),
    };
    // Sorted by key: the documented order.
    let matrix: BTreeMap<String, Vec<Value>> = match obj.get("matrix") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let field = format!("matrix.{k}");
                if !spec::label_key_ok(k) || k.split('.').any(str::is_empty) {
                    return Err(invalid(
                        &field,
                        "a matrix key is a request field's dotted path (`preset`, \
                         `resource_limits.max_cpu_percent`): [a-z0-9_.-], starting with a \
                         letter or digit",
                    ));
                }
                if under(k, "labels") {
                    return Err(invalid(
                        &field,
                        "labels cannot be a matrix field: give them in the experiment's `labels`",
                    ));
                }
                let Value::Array(values) = v else {
                    return Err(invalid(
                        &field,
                        format!("`{field}` must be a list of values"),
                    ));
                };
                if values.is_empty() {
                    return Err(invalid(
                        &field,
                        format!("`{field}` must list at least one value"),
                    ));
                }
                for (i, value) in values.iter().enumerate() {
                    let l = label_value(value);
                    if l.chars().count() > spec::MAX_LABEL_VALUE_LEN
                        || l.chars().any(char::is_control)
                    {
                        return Err(invalid(
                            &format!("{field}[{i}]"),
                            format!(
                                "a matrix value becomes a label: at most {} characters, no \
                                 control characters",
                                spec::MAX_LABEL_VALUE_LEN
                            ),
                        ));
                    }
                }
                out.insert(k.clone(), values.clone());
            }
            out
        }
        Some(_) => return Err(invalid("matrix", "`matrix` must be a JSON object")),
    };
    // A matrix key may not be a prefix of another (both would set it).
    for a in matrix.keys() {
        if let Some(b) = matrix.keys().find(|b| *b != a && under(b, a)) {
            return Err(invalid(
                &format!("matrix.{b}"),
                format!("`matrix.{b}` is inside `matrix.{a}`"),
            ));
        }
    }

    let lengths: Vec<usize> = matrix.values().map(Vec::len).collect();
    let total = job_count(&lengths, repeat).filter(|&n| n <= max_jobs);
    let Some(total) = total else {
        return Err(FieldError::new(
            TOO_MANY_JOBS,
            Some("matrix"),
            format!(
                "the matrix expands to more than {max_jobs} jobs (the product of its list \
                 lengths times `repeat`; --max-experiment-jobs)"
            ),
        ));
    };
    let combos: u64 = job_count(&lengths, 1).unwrap_or(1);

    // The labels every job carries: the base's, then the experiment's.
    let mut common = match base.get("labels") {
        Some(Value::Object(m)) => m.clone(),
        _ => Default::default(),
    };
    for (k, v) in &labels {
        common.insert(k.clone(), Value::String(v.clone()));
    }

    // Validate each configuration once (repeats are the same request).
    let mut configs: Vec<JobSpec> = Vec::with_capacity(combos as usize);
    for c in 0..combos {
        let picks = combination(&lengths, c);
        let mut job = base.clone();
        let mut job_labels = common.clone();
        for ((key, values), &i) in matrix.iter().zip(&picks) {
            if set_path(&mut job, key, values[i].clone()).is_err() {
                return Err(invalid(
                    &format!("matrix.{key}"),
                    format!("`{key}` is inside a base field that is not an object"),
                ));
            }
            job_labels.insert(key.clone(), Value::String(label_value(&values[i])));
        }
        if !job_labels.is_empty() {
            job["labels"] = Value::Object(job_labels);
        }
        let bytes = serde_json::to_vec(&job).map_err(|e| invalid("base", e.to_string()))?;
        let mut spec = spec::parse_job_request(&bytes, roots).map_err(|mut e| {
            let inner = e.field.clone().unwrap_or_default();
            let hit = matrix
                .iter()
                .zip(&picks)
                .find(|((key, _), _)| under(&inner, key));
            let field = match hit {
                Some(((key, _), i)) => format!("matrix.{key}[{i}]"),
                None if inner.is_empty() => "base".to_string(),
                None => format!("base.{inner}"),
            };
            e.message = format!("{} (in configuration {})", e.message, c + 1);
            e.field = Some(field);
            e
        })?;
        if !matches!(spec.output, Output::Null) {
            return Err(invalid(
                "base.output",
                "an experiment's jobs need a `null` output: one file or stream shared by \
                 every job would collide",
            ));
        }
        spec.experiment = Some(name.clone());
        configs.push(spec);
    }
    let jobs = (0..total)
        .map(|i| configs[(i % combos) as usize].clone())
        .collect();
    Ok(Expanded {
        name,
        request,
        jobs,
    })
}

/// The OpenAPI schema of a `POST /v1/experiments` body: the shape (names,
/// bounds, a base that is a job request); the expansion's rules (each job
/// valid, the job-count bound) only the parser checks.
pub struct ExperimentRequest;

impl utoipa::ToSchema for ExperimentRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("ExperimentRequest")
    }
}

impl utoipa::PartialSchema for ExperimentRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, SchemaType, Type,
        };
        use utoipa::openapi::Ref;
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .description(Some(
                "A base job request and lists of values for its fields (dotted paths for \
                 nested ones), expanded into one job per combination and repeat \
                 (docs/API.md, \"Experiments\").",
            ))
            .property(
                "name",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[a-z0-9][a-z0-9_-]{0,62}$"))
                    .description(Some("The experiment's id.")),
            )
            .required("name")
            .property("base", Ref::from_schema_name("JobRequest"))
            .required("base")
            .property(
                "matrix",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
                    .property_names(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(r"^[a-z0-9][a-z0-9_.-]{0,62}$")),
                    ))
                    .additional_properties(Some(
                        ArrayBuilder::new()
                            .items(ObjectBuilder::new())
                            .min_items(Some(1)),
                    ))
                    .description(Some(
                        "Request fields to lists of values; the product of the list lengths \
                         times `repeat` is bounded by --max-experiment-jobs.",
                    )),
            )
            .property(
                "repeat",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                    .minimum(Some(1))
                    .maximum(Some(MAX_REPEAT))
                    .description(Some("Runs of each configuration; absent: 1.")),
            )
            .property("labels", spec::request_schema::labels())
            .into()
    }
}

#[cfg(test)]
mod tests;
