use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn no_roots() -> MediaRoots {
    MediaRoots::new(&[]).expect("empty roots")
}

fn parse(v: &Value) -> Result<JobSpec, FieldError> {
    parse_job_request(v.to_string().as_bytes(), &no_roots())
}

fn parse_in(v: &Value, roots: &MediaRoots) -> Result<JobSpec, FieldError> {
    parse_job_request(v.to_string().as_bytes(), roots)
}

fn base() -> Value {
    json!({
        "scenario": "720p30-h264",
        "input": {"type": "testsrc", "duration_s": 10},
        "output": {"type": "null"}
    })
}

fn with(mut v: Value, key: &str, val: Value) -> Value {
    v[key] = val;
    v
}

#[track_caller]
fn assert_err(r: Result<JobSpec, FieldError>, code: &str, field: Option<&str>) -> FieldError {
    match r {
        Ok(spec) => panic!("expected {code} on {field:?}, got Ok({spec:?})"),
        Err(e) => {
            assert_eq!(e.code, code, "code of {e:?}");
            assert_eq!(e.field.as_deref(), field, "field of {e:?}");
            assert!(!e.message.is_empty());
            e
        }
    }
}

mod encode;
mod json;
mod paths;
mod properties;
mod quality;
mod scenarios;
mod shapes;
