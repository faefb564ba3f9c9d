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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn roots() -> MediaRoots {
        MediaRoots::new(&[]).expect("empty roots")
    }

    fn expand(v: &Value, max: u64) -> Result<Expanded, FieldError> {
        parse_experiment(v.to_string().as_bytes(), &roots(), max)
    }

    fn base() -> Value {
        json!({
            "scenario": "720p30-h264",
            "input": {"type": "testsrc", "duration_s": 2},
            "output": {"type": "null"}
        })
    }

    #[track_caller]
    fn refused(v: Value, code: &str, field: &str) -> FieldError {
        match expand(&v, DEFAULT_MAX_JOBS) {
            Ok(e) => panic!("expected {code} on {field}, got {} jobs", e.jobs.len()),
            Err(e) => {
                assert_eq!(
                    (e.code.as_str(), e.field.as_deref()),
                    (code, Some(field)),
                    "{e:?}"
                );
                e
            }
        }
    }

    #[test]
    fn a_matrix_expands_in_the_documented_order() {
        let e = expand(
            &json!({
                "name": "h264-vs-h265",
                "base": base(),
                "matrix": {"preset": ["ultrafast", "medium"], "codec": ["h264", "h265"], "bitrate": [500, "1M", 2000]},
                "repeat": 2,
                "labels": {"study": "codecs"}
            }),
            DEFAULT_MAX_JOBS,
        )
        .expect("valid");
        assert_eq!(e.jobs.len(), 2 * 2 * 3 * 2);
        // Keys sorted: bitrate, codec, preset; preset varies fastest.
        let first: Vec<(u32, &str, &str)> = e.jobs[..4]
            .iter()
            .map(|j| {
                (
                    j.encode.bitrate_kbps,
                    j.encode.codec.as_str(),
                    j.encode.preset.as_str(),
                )
            })
            .collect();
        assert_eq!(
            first,
            [
                (500, "h264", "ultrafast"),
                (500, "h264", "medium"),
                (500, "h265", "ultrafast"),
                (500, "h265", "medium")
            ]
        );
        assert_eq!(e.jobs[4].encode.bitrate_kbps, 1000);
        // Round 2 repeats round 1.
        for i in 0..12 {
            assert_eq!(e.jobs[i], e.jobs[i + 12]);
        }
        let j = &e.jobs[5];
        assert_eq!(j.experiment.as_deref(), Some("h264-vs-h265"));
        assert_eq!(j.labels["study"], "codecs");
        assert_eq!(j.labels["bitrate"], "\"1M\"".trim_matches('"'));
        assert_eq!(j.labels["codec"], "h264");
        assert_eq!(j.labels["preset"], "medium");
        assert_eq!(j.labels.len(), 4);
    }

    #[test]
    fn nested_fields_and_no_matrix() {
        let e = expand(
            &json!({"name": "cpu", "base": base(), "matrix": {"resource_limits.max_cpu_percent": [50, 100, 200]}}),
            DEFAULT_MAX_JOBS,
        )
        .expect("valid");
        let got: Vec<Option<u32>> = e
            .jobs
            .iter()
            .map(|j| j.resource_limits.max_cpu_percent)
            .collect();
        assert_eq!(got, [Some(50), Some(100), Some(200)]);
        assert_eq!(e.jobs[2].labels["resource_limits.max_cpu_percent"], "200");
        let one = expand(
            &json!({"name": "one", "base": base(), "repeat": 3}),
            DEFAULT_MAX_JOBS,
        )
        .expect("valid");
        assert_eq!(one.jobs.len(), 3);
    }

    #[test]
    fn bad_input_names_the_field() {
        let with = |k: &str, v: Value| {
            let mut e = json!({"name": "x", "base": base(), "matrix": {"preset": ["fast"]}});
            e[k] = v;
            e
        };
        refused(with("extra", json!(1)), codes::UNKNOWN_FIELD, "extra");
        refused(
            with("name", json!("Bad Name")),
            codes::INVALID_FIELD,
            "name",
        );
        refused(with("name", json!("a/b")), codes::INVALID_FIELD, "name");
        refused(json!({"base": base()}), codes::MISSING_FIELD, "name");
        refused(json!({"name": "x"}), codes::MISSING_FIELD, "base");
        refused(with("repeat", json!(0)), codes::INVALID_FIELD, "repeat");
        refused(
            with("labels", json!({"experiment": "y"})),
            codes::INVALID_FIELD,
            "labels.experiment",
        );
        refused(
            with("labels", json!({"a": 1})),
            codes::INVALID_FIELD,
            "labels.a",
        );
        refused(
            with("matrix", json!({"preset": []})),
            codes::INVALID_FIELD,
            "matrix.preset",
        );
        refused(
            with("matrix", json!({"preset": "fast"})),
            codes::INVALID_FIELD,
            "matrix.preset",
        );
        refused(
            with(
                "matrix",
                json!({"preset": ["fast", "medium", "slow", "warp"]}),
            ),
            codes::INVALID_FIELD,
            "matrix.preset[3]",
        );
        refused(
            with("matrix", json!({"colour": ["red"]})),
            codes::UNKNOWN_FIELD,
            "matrix.colour[0]",
        );
        refused(
            with("matrix", json!({"labels.a": ["x"]})),
            codes::INVALID_FIELD,
            "matrix.labels.a",
        );
        refused(
            with(
                "matrix",
                json!({"resource_limits": [{}], "resource_limits.timeout_s": [5]}),
            ),
            codes::INVALID_FIELD,
            "matrix.resource_limits.timeout_s",
        );
        let mut b = base();
        b["width"] = json!(7);
        refused(with("base", b), codes::INVALID_FIELD, "base.width");
        let mut b = base();
        b["output"] = json!({"type": "rtmp", "url": "rtmp://127.0.0.1/live/x"});
        refused(with("base", b), codes::INVALID_FIELD, "base.output");
    }

    #[test]
    fn the_bound_is_checked_before_any_job_is_built() {
        // 10^6 combinations of an invalid preset: refused for the count
        // (not the preset), so nothing was expanded.
        let many: Vec<Value> = (0..1000).map(|i| json!(format!("p{i}"))).collect();
        let e =
            json!({"name": "big", "base": base(), "matrix": {"preset": many.clone(), "fps": many}});
        let err = expand(&e, DEFAULT_MAX_JOBS).expect_err("too many");
        assert_eq!(
            (err.code.as_str(), err.field.as_deref()),
            (TOO_MANY_JOBS, Some("matrix"))
        );
        // Overflowing products are refused too.
        assert_eq!(job_count(&[usize::MAX, usize::MAX], 2), None);
        let ok = json!({"name": "b", "base": base(), "matrix": {"fps": [24, 25, 30]}, "repeat": 2});
        assert_eq!(expand(&ok, 6).expect("at the bound").jobs.len(), 6);
        let err = expand(&ok, 5).expect_err("over the bound");
        assert_eq!(err.code, TOO_MANY_JOBS);
    }

    proptest! {
        #[test]
        fn counts_are_the_product_times_repeat_and_expansion_is_deterministic(
            fps in proptest::collection::vec(1u32..=60, 1..4),
            bitrates in proptest::collection::vec(100u32..=5000, 1..4),
            presets in proptest::sample::subsequence(vec!["ultrafast", "veryfast", "medium", "slow"], 1..4),
            repeat in 1u64..4,
        ) {
            let e = json!({"name": "p", "base": base(), "repeat": repeat,
                "matrix": {"fps": fps, "bitrate": bitrates, "preset": presets}});
            let a = expand(&e, DEFAULT_MAX_JOBS).expect("valid");
            let b = expand(&e, DEFAULT_MAX_JOBS).expect("valid");
            prop_assert_eq!(a.jobs.len() as u64, fps.len() as u64 * bitrates.len() as u64 * presets.len() as u64 * repeat);
            prop_assert_eq!(&a.jobs, &b.jobs);
            // Every combination appears exactly `repeat` times.
            let mut seen = std::collections::BTreeMap::new();
            for j in &a.jobs {
                *seen.entry((j.encode.fps, j.encode.bitrate_kbps, j.encode.preset.clone())).or_insert(0u64) += 1;
            }
            let distinct = |v: &[u32]| v.iter().collect::<std::collections::BTreeSet<_>>().len() as u64;
            prop_assert_eq!(seen.len() as u64, distinct(&fps) * distinct(&bitrates) * presets.len() as u64);
        }

        #[test]
        fn one_invalid_value_refuses_the_whole_experiment(bad in 0usize..5) {
            let mut widths: Vec<Value> = (0..5).map(|i| json!(320 + 2 * i)).collect();
            widths[bad] = json!(321);
            let e = json!({"name": "w", "base": base(), "matrix": {"width": widths}});
            let err = expand(&e, DEFAULT_MAX_JOBS).expect_err("odd width");
            prop_assert_eq!(err.field, Some(format!("matrix.width[{bad}]")));
        }
    }

    #[test]
    fn the_schema_names_exactly_the_fields_the_parser_takes() {
        let s = serde_json::to_value(<ExperimentRequest as utoipa::PartialSchema>::schema())
            .expect("serialises");
        let mut names: Vec<&str> = s["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort();
        let mut fields = FIELDS.to_vec();
        fields.sort();
        assert_eq!(names, fields);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["repeat"]["maximum"], MAX_REPEAT);
    }

    #[test]
    fn combination_is_an_odometer() {
        assert_eq!(combination(&[2, 3], 0), [0, 0]);
        assert_eq!(combination(&[2, 3], 1), [0, 1]);
        assert_eq!(combination(&[2, 3], 3), [1, 0]);
        assert_eq!(combination(&[2, 3], 5), [1, 2]);
        assert_eq!(combination(&[], 0), Vec::<usize>::new());
    }
}
