//! Compatibility with the Go `ffmpeg-rtmp` master's job submissions (issue 6):
//! `POST /jobs` with
//! `{"scenario", "parameters": {"duration", "bitrate"}, "queue", "priority", "engine"}`
//! is translated into our own request and validated by
//! [`spec::parse_job_request`], so both shapes obey the same rules.
//!
//! The mapping (docs/API.md, "Go seed compatibility"):
//! - `scenario` `"<res>[<fps>]-<codec>"`, e.g. `4K60-h264`, `1080p30-h265`,
//!   `720p-vp9`: `<res>` is `480p`, `720p`, `1080p`, `1440p`, `2160p` or `4K`;
//!   `<fps>` defaults to 30; `<codec>` is `h264`, `h265` (or `hevc`), `vp9`
//!   or `av1`. One of our presets where it names one, else the same width,
//!   height, fps and codec given explicitly.
//! - `parameters.duration` (seconds, default [`DEFAULT_DURATION_S`]): a
//!   synthetic test pattern of that length (the Go master's test jobs), to
//!   a null output. `parameters.bitrate` (`"5000k"`, `"10M"`, or kbit/s).
//! - `queue` `live` / `batch` → our priority `live` / `batch`; `default` (or
//!   none) → `priority` `high` / `medium` / `low` (default `medium`).
//! - `engine` `auto` or `ffmpeg`: we run FFmpeg only; `gstreamer` is refused.
//! - `confidence` is accepted and ignored (a Go scheduling hint).
//!
//! Every refusal names the field in the Go shape (`parameters.duration`).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::error::FieldError;
use crate::model::JobSpec;
use crate::spec::{self, MediaRoots};

/// Test-pattern length when `parameters.duration` is absent, in seconds.
pub const DEFAULT_DURATION_S: f64 = 10.0;

/// A job as the Go `ffmpeg-rtmp` master takes it (`POST /jobs`); mapped onto
/// our job spec as the module documentation says.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub struct SeedRequest {
    /// `<resolution>[<fps>]-<codec>`, any case: resolutions 480p, 720p,
    /// 1080p, 1440p, 2160p or 4K; fps 1-240, default 30; codecs h264, h265
    /// (hevc), vp9, av1.
    #[schema(
        example = "4K60-h264",
        pattern = "^(480[pP]|720[pP]|1080[pP]|1440[pP]|2160[pP]|4[kK])(0*([1-9]|[1-9][0-9]|1[0-9][0-9]|2[0-3][0-9]|240))?-([hH]26[45]|[hH][eE][vV][cC]|[vV][pP]9|[aA][vV]1)$"
    )]
    pub scenario: String,
    /// The test pattern's length and the bitrate.
    pub parameters: Option<SeedParameters>,
    /// `live` and `batch` become those priorities; `default` uses `priority`.
    pub queue: Option<SeedQueue>,
    /// Within the default queue (default `medium`).
    pub priority: Option<SeedPriority>,
    /// We run FFmpeg only: `auto` or `ffmpeg`.
    pub engine: Option<SeedEngine>,
    /// Accepted and ignored (a Go scheduling hint).
    pub confidence: Option<String>,
}

/// `parameters` of a Go-seed job.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
pub struct SeedParameters {
    /// Seconds of test pattern (default 10), at most a day.
    #[schema(exclusive_minimum = 0.0, maximum = 86_400.0)]
    pub duration: Option<f64>,
    /// `"5000k"`, `"10M"`, or kbit/s as a number.
    #[schema(schema_with = spec::bitrate_schema)]
    pub bitrate: Option<Value>,
}

/// The Go master's queues.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum SeedQueue {
    /// Our `live` priority.
    Live,
    /// Use `priority`.
    Default,
    /// Our `batch` priority.
    Batch,
}

/// The Go master's priorities within its default queue.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum SeedPriority {
    /// Our `high`.
    High,
    /// Our `medium`.
    Medium,
    /// Our `low`.
    Low,
}

/// Transcoding engines: only FFmpeg here.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum SeedEngine {
    /// FFmpeg.
    Auto,
    /// FFmpeg.
    Ffmpeg,
}

/// Width and height for a Go resolution name.
fn resolution(name: &str) -> Option<(u32, u32)> {
    match name.to_ascii_lowercase().as_str() {
        "480p" => Some((854, 480)),
        "720p" => Some((1280, 720)),
        "1080p" => Some((1920, 1080)),
        "1440p" => Some((2560, 1440)),
        "2160p" | "4k" => Some((3840, 2160)),
        _ => None,
    }
}

/// `"4K60-h264"` → (width, height, fps, our codec name).
fn parse_scenario(s: &str) -> Result<(u32, u32, u32, &'static str), FieldError> {
    let bad = || {
        FieldError::invalid(
            "scenario",
            format!(
                "unknown scenario {s:?}: expected <resolution>[<fps>]-<codec>, e.g. \
                 4K60-h264 or 1080p30-h265 (resolutions 480p, 720p, 1080p, 1440p, \
                 2160p/4K; codecs h264, h265/hevc, vp9, av1)"
            ),
        )
    };
    let (shape, codec) = s.split_once('-').ok_or_else(bad)?;
    let codec = match codec.to_ascii_lowercase().as_str() {
        "h264" => "h264",
        "h265" | "hevc" => "h265",
        "vp9" => "vp9",
        "av1" => "av1",
        _ => return Err(bad()),
    };
    let digits_at = shape
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit())
        .last()
        .map(|(i, _)| i);
    // `1080p60`: the trailing digits are the rate; `1080p`/`4K`: none.
    let (res, fps) = match digits_at {
        Some(i) if i > 0 && !shape[..i].ends_with(|c: char| c.is_ascii_digit()) => {
            let fps: u32 = shape[i..].parse().map_err(|_| bad())?;
            (&shape[..i], fps)
        }
        _ => (shape, 30),
    };
    let (w, h) = resolution(res).ok_or_else(bad)?;
    Ok((w, h, fps, codec))
}

/// Where our request's field came from in the Go shape, for refusals.
fn go_field(ours: &str) -> String {
    match ours {
        "bitrate" => "parameters.bitrate".into(),
        "input.duration_s" => "parameters.duration".into(),
        "width" | "height" | "fps" | "codec" | "scenario" => "scenario".into(),
        other => other.into(),
    }
}

/// Parse a Go-seed `POST /jobs` body into a job spec, or refuse it naming
/// the field. Nothing is stored by this function.
pub fn parse_go_job(body: &[u8], roots: &MediaRoots) -> Result<JobSpec, FieldError> {
    let value = spec::parse_json_value(body)?;
    if !value.is_object() {
        return Err(FieldError::new(
            "invalid_json",
            None,
            "request body must be a JSON object",
        ));
    }
    // serde would read a struct from an array too (`[30, "5M"]`): the Go
    // shape is an object, and anything else is refused by name.
    if let Some(p) = value.get("parameters") {
        if !(p.is_object() || p.is_null()) {
            return Err(FieldError::invalid(
                "parameters",
                "`parameters` must be a JSON object: {\"duration\", \"bitrate\"}",
            ));
        }
    }
    // From the text, not from `value`: a JSON value keeps the last of two
    // equal keys, the derived structs refuse the second (as on `/v1/jobs`).
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw: SeedRequest =
        serde_path_to_error::deserialize(&mut de).map_err(spec::map_serde_error)?;
    // `engine` needs no mapping: serde refused anything but auto/ffmpeg.
    let priority = match raw.queue.unwrap_or(SeedQueue::Default) {
        SeedQueue::Live => "live",
        SeedQueue::Batch => "batch",
        SeedQueue::Default => match raw.priority.unwrap_or(SeedPriority::Medium) {
            SeedPriority::High => "high",
            SeedPriority::Medium => "medium",
            SeedPriority::Low => "low",
        },
    };
    let (width, height, fps, codec) = parse_scenario(&raw.scenario)?;
    let params = raw.parameters.unwrap_or(SeedParameters {
        duration: None,
        bitrate: None,
    });
    let mut ours = Map::new();
    let preset = format!(
        "{}p{fps}-{codec}",
        if (width, height) == (3840, 2160) {
            2160
        } else {
            height
        }
    );
    if spec::scenario(&preset).is_some() {
        ours.insert("scenario".into(), json!(preset));
    } else {
        ours.insert("width".into(), json!(width));
        ours.insert("height".into(), json!(height));
        ours.insert("fps".into(), json!(fps));
        ours.insert("codec".into(), json!(codec));
    }
    ours.insert(
        "input".into(),
        json!({"type": "testsrc", "duration_s": params.duration.unwrap_or(DEFAULT_DURATION_S)}),
    );
    ours.insert("output".into(), json!({"type": "null"}));
    ours.insert("priority".into(), json!(priority));
    if let Some(b) = params.bitrate {
        ours.insert("bitrate".into(), b);
    }
    let body = serde_json::to_vec(&Value::Object(ours))
        .map_err(|e| FieldError::new("internal", None, e.to_string()))?;
    spec::parse_job_request(&body, roots).map_err(|mut e| {
        if let Some(f) = e.field.take() {
            let go = go_field(&f);
            e.message = e.message.replace(&format!("`{f}`"), &format!("`{go}`"));
            e.field = Some(go);
        }
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Input, Priority};

    fn roots() -> MediaRoots {
        MediaRoots::new(&[]).unwrap()
    }

    fn parse(v: Value) -> Result<JobSpec, FieldError> {
        parse_go_job(&serde_json::to_vec(&v).unwrap(), &roots())
    }

    #[test]
    fn the_go_example_maps_onto_our_spec() {
        let spec = parse(json!({
            "scenario": "4K60-h264",
            "confidence": "auto",
            "engine": "auto",
            "queue": "default",
            "priority": "high",
            "parameters": {"duration": 30, "bitrate": "10M"}
        }))
        .unwrap();
        assert_eq!((spec.encode.width, spec.encode.height), (3840, 2160));
        assert_eq!(spec.encode.fps, 60);
        assert_eq!(spec.encode.codec.as_str(), "h264");
        assert_eq!(spec.encode.bitrate_kbps, 10_000);
        assert_eq!(spec.priority, Priority::High);
        assert!(
            matches!(spec.input, Input::Testsrc { duration_s } if duration_s == 30.0),
            "{:?}",
            spec.input
        );
    }

    #[test]
    fn a_scenario_we_have_becomes_our_preset() {
        let spec = parse(json!({"scenario": "1080p60-hevc"})).unwrap();
        assert_eq!(spec.scenario.as_deref(), Some("1080p60-h265"));
        let spec = parse(json!({"scenario": "720p-h264"})).unwrap();
        assert_eq!(spec.scenario.as_deref(), Some("720p30-h264"));
        assert!(
            matches!(spec.input, Input::Testsrc { duration_s } if duration_s == DEFAULT_DURATION_S)
        );
    }

    #[test]
    fn queues_map_onto_priorities() {
        for (queue, priority, want) in [
            ("live", Some("low"), Priority::Live),
            ("batch", None, Priority::Batch),
            ("default", Some("low"), Priority::Low),
            ("default", None, Priority::Medium),
        ] {
            let mut v = json!({"scenario": "480p30-h264", "queue": queue});
            if let Some(p) = priority {
                v["priority"] = json!(p);
            }
            assert_eq!(parse(v).unwrap().priority, want, "{queue} {priority:?}");
        }
    }

    #[test]
    fn refusals_name_the_go_field() {
        for (body, field) in [
            (json!({"scenario": "8K60-h264"}), "scenario"),
            (json!({"scenario": "1080p60-mpeg2"}), "scenario"),
            (json!({"scenario": "1080p60"}), "scenario"),
            (json!({}), "scenario"),
            (
                json!({"scenario": "720p30-h264", "engine": "gstreamer"}),
                "engine",
            ),
            (
                json!({"scenario": "720p30-h264", "queue": "urgent"}),
                "queue",
            ),
            (
                json!({"scenario": "720p30-h264", "priority": "live"}),
                "priority",
            ),
            (
                json!({"scenario": "720p30-h264", "parameters": {"duration": -1}}),
                "parameters.duration",
            ),
            (
                json!({"scenario": "720p30-h264", "parameters": {"bitrate": "fast"}}),
                "parameters.bitrate",
            ),
            (
                json!({"scenario": "720p30-h264", "parameters": {"output_mode": "rtmp"}}),
                "parameters.output_mode",
            ),
            (json!({"scenario": "720p30-h264", "extra": 1}), "extra"),
            // Found by schemathesis: serde reads a struct from an array.
            (
                json!({"scenario": "720p30-h264", "parameters": [null, null]}),
                "parameters",
            ),
            (
                json!({"scenario": "720p30-h264", "parameters": [30, "5M"]}),
                "parameters",
            ),
            (
                json!({"scenario": "720p30-h264", "parameters": 5}),
                "parameters",
            ),
            // The rate the schema's pattern allows is 1-240.
            (json!({"scenario": "4k241-hevc"}), "scenario"),
            (json!({"scenario": "4k73041-hevc"}), "scenario"),
            (json!({"scenario": "720p0-h264"}), "scenario"),
        ] {
            let e = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(e.field.as_deref(), Some(field), "{body}: {e:?}");
        }
    }

    #[test]
    fn the_parameters_schema_states_the_parsers_limits() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(SeedParameters::schema()).expect("serialises");
        let d = &schema["properties"]["duration"];
        assert_eq!(d["exclusiveMinimum"].as_f64(), Some(0.0), "{schema}");
        assert_eq!(
            d["maximum"].as_f64(),
            Some(spec::MAX_TESTSRC_DURATION_S),
            "{schema}"
        );
        let b = &schema["properties"]["bitrate"];
        assert!(
            b["anyOf"].as_array().is_some_and(|a| a.len() == 3),
            "{schema}"
        );
        // The edges themselves.
        for (duration, ok) in [
            (0.0, false),
            (0.001, true),
            (86_400.0, true),
            (86_400.5, false),
        ] {
            let r = parse(json!({"scenario": "720p30-h264", "parameters": {"duration": duration}}));
            assert_eq!(r.is_ok(), ok, "{duration}: {r:?}");
        }
    }

    #[test]
    fn what_the_schema_pattern_allows_is_accepted() {
        // The edges of the documented pattern: any case, leading zeros,
        // rates 1 and 240, no rate, null parameters.
        for scenario in [
            "4K240-H264",
            "4k1-hEvC",
            "480P-vp9",
            "720p060-AV1",
            "1440p30-h265",
            "2160p-h264",
        ] {
            let spec = parse(json!({"scenario": scenario, "parameters": null}))
                .unwrap_or_else(|e| panic!("{scenario}: {e:?}"));
            assert!(spec.encode.fps >= 1, "{scenario}");
        }
    }

    /// As on `/v1/jobs`: a repeated key is refused, named in full.
    #[test]
    fn duplicate_keys_are_refused_naming_the_innermost_field() {
        for (body, field) in [
            (
                &br#"{"scenario":"720p-h264","scenario":"1080p-h264"}"#[..],
                "scenario",
            ),
            (
                br#"{"scenario":"720p-h264","parameters":{"duration":5,"duration":6}}"#,
                "parameters.duration",
            ),
            (
                br#"{"scenario":"720p-h264","queue":"live","queue":"batch"}"#,
                "queue",
            ),
        ] {
            let e = parse_go_job(body, &roots()).expect_err("refused");
            assert_eq!(e.code, "invalid_field", "{e:?}");
            assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
            assert!(e.message.contains("duplicate field"), "{e:?}");
        }
    }

    #[test]
    fn a_duration_out_of_range_is_refused_on_its_field() {
        let body = br#"{"scenario":"720p-h264","parameters":{"duration":1e309}}"#;
        let e = parse_go_job(body, &roots()).expect_err("refused");
        assert_eq!(e.code, "invalid_field", "{e:?}");
        assert_eq!(e.field.as_deref(), Some("parameters.duration"), "{e:?}");
    }

    #[test]
    fn not_an_object_is_refused_without_a_field() {
        for body in [&b"[1]"[..], b"\"x\"", b"{", b""] {
            let e = parse_go_job(body, &roots()).expect_err("refused");
            assert_eq!(e.field, None, "{e:?}");
        }
    }
}
