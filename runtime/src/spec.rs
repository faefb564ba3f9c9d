//! Job request parsing and validation (`POST /v1/jobs`), scenario presets,
//! and media-root confinement. Every rejection names its field; nothing here
//! stores anything.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::FieldError;
use crate::model::{Codec, EncodeParams, Input, JobSpec, Output, Priority, ResourceLimits};

/// The directories jobs may read from and write to (canonical paths).
#[derive(Debug, Clone)]
pub struct MediaRoots {
    roots: Vec<PathBuf>,
}

impl MediaRoots {
    /// Canonicalizes every root; a missing root or a non-directory is an error.
    pub fn new(roots: &[PathBuf]) -> std::io::Result<MediaRoots> {
        let mut out = Vec::new();
        for r in roots {
            let c = r.canonicalize().map_err(|e| {
                std::io::Error::new(e.kind(), format!("media root {}: {e}", r.display()))
            })?;
            if !c.is_dir() {
                return Err(std::io::Error::other(format!(
                    "media root {} is not a directory",
                    r.display()
                )));
            }
            out.push(c);
        }
        Ok(MediaRoots { roots: out })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    fn inside(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    /// A path with no `..`, no NUL, not empty.
    fn check_shape(field: &str, raw: &str) -> Result<(), FieldError> {
        if raw.is_empty() || raw.len() > 4096 || raw.contains('\0') {
            return Err(FieldError::invalid(
                field,
                "path must be 1..=4096 bytes without NUL",
            ));
        }
        if Path::new(raw)
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(FieldError::new(
                "path_outside_media_root",
                Some(field),
                "path must not contain '..'",
            ));
        }
        Ok(())
    }

    fn outside(field: &str, raw: &str) -> FieldError {
        FieldError::new(
            "path_outside_media_root",
            Some(field),
            format!("{raw:?} is not inside a configured media root"),
        )
    }

    /// An existing regular file inside a root, symlinks resolved.
    pub fn resolve_input(&self, field: &str, raw: &str) -> Result<PathBuf, FieldError> {
        Self::check_shape(field, raw)?;
        let candidates: Vec<PathBuf> = if Path::new(raw).is_absolute() {
            vec![PathBuf::from(raw)]
        } else {
            self.roots.iter().map(|r| r.join(raw)).collect()
        };
        for c in candidates {
            if let Ok(canon) = c.canonicalize() {
                if !self.inside(&canon) {
                    return Err(Self::outside(field, raw));
                }
                if !canon.is_file() {
                    return Err(FieldError::invalid(field, "input is not a regular file"));
                }
                return Ok(canon);
            }
        }
        if Path::new(raw).is_absolute() && !self.inside(Path::new(raw)) {
            return Err(Self::outside(field, raw));
        }
        Err(FieldError::new(
            "not_found",
            Some(field),
            format!("no file {raw:?} in the media roots"),
        ))
    }

    /// A file to write: its parent exists inside a root; it is not a symlink.
    pub fn resolve_output(&self, field: &str, raw: &str) -> Result<PathBuf, FieldError> {
        Self::check_shape(field, raw)?;
        let p = Path::new(raw);
        let name = p
            .file_name()
            .ok_or_else(|| FieldError::invalid(field, "output path needs a file name"))?;
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.roots
                .first()
                .ok_or_else(|| Self::outside(field, raw))?
                .join(p)
        };
        let parent = joined
            .parent()
            .and_then(|d| d.canonicalize().ok())
            .ok_or_else(|| FieldError::invalid(field, "the output's directory does not exist"))?;
        if !self.inside(&parent) {
            return Err(Self::outside(field, raw));
        }
        let full = parent.join(name);
        if let Ok(meta) = std::fs::symlink_metadata(&full) {
            if meta.file_type().is_symlink() {
                return Err(FieldError::invalid(field, "output must not be a symlink"));
            }
            if !meta.is_file() {
                return Err(FieldError::invalid(
                    field,
                    "output exists and is not a file",
                ));
            }
        }
        Ok(full)
    }
}

const RESOLUTIONS: [(&str, u32, u32, u32); 5] = [
    ("480p30", 854, 480, 30),
    ("720p30", 1280, 720, 30),
    ("1080p30", 1920, 1080, 30),
    ("1080p60", 1920, 1080, 60),
    ("2160p30", 3840, 2160, 30),
];

/// Bitrate (kbit/s) for a resolution, frame rate and codec: H.264 figures,
/// scaled for the more efficient codecs.
fn default_bitrate(width: u32, height: u32, fps: u32, codec: Codec) -> u32 {
    let pixels = u64::from(width) * u64::from(height);
    let h264_30 = match pixels {
        p if p <= 640 * 360 => 800,
        p if p <= 854 * 480 => 1500,
        p if p <= 1280 * 720 => 3000,
        p if p <= 1920 * 1080 => 5000,
        p if p <= 2560 * 1440 => 9000,
        _ => 16000,
    };
    let fps_scaled = if fps > 30 { h264_30 * 3 / 2 } else { h264_30 };
    match codec {
        Codec::H264 => fps_scaled,
        Codec::H265 | Codec::Av1 => fps_scaled * 6 / 10,
        Codec::Vp9 => fps_scaled * 7 / 10,
    }
}

fn default_preset(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 | Codec::H265 => "veryfast",
        Codec::Vp9 => "realtime",
        Codec::Av1 => "10",
    }
}

fn preset_allowed(codec: Codec, preset: &str) -> bool {
    const X26X: [&str; 9] = [
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
    ];
    match codec {
        Codec::H264 | Codec::H265 => X26X.contains(&preset),
        Codec::Vp9 => ["realtime", "good", "best"].contains(&preset),
        Codec::Av1 => preset.parse::<u8>().map(|n| n <= 13).unwrap_or(false) && preset.len() <= 2,
    }
}

/// Every scenario preset name, e.g. `1080p60-h265`.
pub fn scenario_names() -> Vec<String> {
    RESOLUTIONS
        .iter()
        .flat_map(|(r, ..)| {
            Codec::ALL
                .iter()
                .map(move |c| format!("{r}-{}", c.as_str()))
        })
        .collect()
}

/// A preset name → its encode parameters.
pub fn scenario(name: &str) -> Option<EncodeParams> {
    let (res, codec) = name.split_once('-')?;
    let codec = Codec::ALL.into_iter().find(|c| c.as_str() == codec)?;
    let &(_, width, height, fps) = RESOLUTIONS.iter().find(|(r, ..)| *r == res)?;
    Some(EncodeParams {
        width,
        height,
        fps,
        codec,
        bitrate_kbps: default_bitrate(width, height, fps, codec),
        preset: default_preset(codec).to_string(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    scenario: Option<String>,
    input: Option<RawInput>,
    output: Option<RawOutput>,
    priority: Option<Priority>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<u32>,
    codec: Option<Codec>,
    bitrate: Option<Value>,
    preset: Option<String>,
    resource_limits: Option<ResourceLimits>,
    max_retries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawInput {
    Testsrc { duration_s: f64 },
    File { path: String },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawOutput {
    Null,
    File { path: String },
    Rtmp { url: String },
}

fn join_path(path: &str, extra: &str) -> String {
    if !extra.is_empty() && (path == extra || path.ends_with(&format!(".{extra}"))) {
        return path.to_string();
    }
    match (path.is_empty() || path == ".", extra.is_empty()) {
        (true, _) => extra.to_string(),
        (false, true) => path.to_string(),
        (false, false) => format!("{path}.{extra}"),
    }
}

/// Turn a serde error into a `FieldError` naming the offending field.
fn serde_error(err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let msg = inner.to_string();
    // Messages look like "unknown field `x`, expected one of ...".
    let quoted = |prefix: &str| {
        msg.strip_prefix(prefix)
            .and_then(|r| r.split('`').next())
            .map(str::to_string)
    };
    if let Some(f) = quoted("unknown field `") {
        return FieldError::new(
            "unknown_field",
            Some(&join_path(&path, &f)),
            format!("unknown field {f:?}"),
        );
    }
    if let Some(f) = quoted("missing field `") {
        return FieldError::new(
            "missing_field",
            Some(&join_path(&path, &f)),
            format!("missing field {f:?}"),
        );
    }
    if let Some(v) = quoted("unknown variant `") {
        return FieldError::new(
            "invalid_field",
            Some(&join_path(&path, if path.is_empty() { "type" } else { "" })),
            format!("unknown value {v:?}: {msg}"),
        );
    }
    let field = if path.is_empty() || path == "." {
        None
    } else {
        Some(path.as_str())
    };
    FieldError::new("invalid_field", field, msg.clone())
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, FieldError> {
    if v < lo || v > hi {
        return Err(FieldError::invalid(
            field,
            format!("{v} is outside {lo}..={hi}"),
        ));
    }
    Ok(v)
}

fn parse_bitrate(v: &Value) -> Result<u32, FieldError> {
    let bad = || {
        FieldError::invalid(
            "bitrate",
            "bitrate is kbit/s as an integer, or a string like \"2500k\" or \"6M\"",
        )
    };
    let kbps: u64 = match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let (num, mul) = if let Some(n) = s.strip_suffix(['k', 'K']) {
                (n, 1)
            } else if let Some(n) = s.strip_suffix(['m', 'M']) {
                (n, 1000)
            } else {
                (s, 1)
            };
            let n: f64 = num.parse().map_err(|_| bad())?;
            if !n.is_finite() || n <= 0.0 {
                return Err(bad());
            }
            (n * mul as f64).round() as u64
        }
        _ => return Err(bad()),
    };
    Ok(in_range("bitrate", kbps, 1, 200_000)? as u32)
}

fn check_limits(l: &ResourceLimits) -> Result<(), FieldError> {
    if let Some(v) = l.max_cpu_percent {
        in_range("resource_limits.max_cpu_percent", v, 1, 25_600)?;
    }
    if let Some(v) = l.max_memory_mb {
        in_range("resource_limits.max_memory_mb", v, 16, 1_048_576)?;
    }
    if let Some(v) = l.timeout_s {
        in_range("resource_limits.timeout_s", v, 1, 604_800)?;
    }
    if let Some(v) = l.stall_timeout_s {
        in_range("resource_limits.stall_timeout_s", v, 1, 86_400)?;
    }
    Ok(())
}

fn check_rtmp(raw: &str) -> Result<String, FieldError> {
    let f = "output.url";
    if raw.len() > 2048 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::invalid(
            f,
            "URL must be at most 2048 characters, without spaces or control characters",
        ));
    }
    let u = url::Url::parse(raw).map_err(|e| FieldError::invalid(f, format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "rtmp" | "rtmps") {
        return Err(FieldError::invalid(
            f,
            "only rtmp:// and rtmps:// URLs are accepted",
        ));
    }
    if u.host_str().map(str::is_empty).unwrap_or(true) {
        return Err(FieldError::invalid(f, "URL needs a host"));
    }
    Ok(raw.to_string())
}

const OUTPUT_EXTENSIONS: [&str; 6] = ["mp4", "mkv", "mov", "webm", "ts", "flv"];

/// Parse and validate a `POST /v1/jobs` body.
pub fn parse_job_request(body: &[u8], roots: &MediaRoots) -> Result<JobSpec, FieldError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        FieldError::new("invalid_json", None, format!("body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(FieldError::new(
            "invalid_json",
            None,
            "body must be a JSON object",
        ));
    }
    let raw: RawRequest = serde_path_to_error::deserialize(value).map_err(serde_error)?;

    let mut encode = match raw.scenario.as_deref() {
        Some(name) => scenario(name).ok_or_else(|| {
            FieldError::new(
                "unknown_scenario",
                Some("scenario"),
                format!(
                    "unknown scenario {name:?}; known: {}",
                    scenario_names().join(", ")
                ),
            )
        })?,
        None => {
            let need = |v: Option<u32>, f: &str| {
                v.ok_or_else(|| {
                    FieldError::new(
                        "missing_field",
                        Some(f),
                        format!("{f} is required without a scenario"),
                    )
                })
            };
            let width = need(raw.width, "width")?;
            let height = need(raw.height, "height")?;
            let fps = need(raw.fps, "fps")?;
            let codec = raw.codec.ok_or_else(|| {
                FieldError::new(
                    "missing_field",
                    Some("codec"),
                    "codec is required without a scenario",
                )
            })?;
            EncodeParams {
                width,
                height,
                fps,
                codec,
                bitrate_kbps: 0,
                preset: String::new(),
            }
        }
    };
    if let Some(c) = raw.codec {
        if c != encode.codec {
            encode.preset.clear();
        }
        encode.codec = c;
    }
    if let Some(w) = raw.width {
        encode.width = w;
    }
    if let Some(h) = raw.height {
        encode.height = h;
    }
    if let Some(f) = raw.fps {
        encode.fps = f;
    }
    for (field, v, hi) in [
        ("width", encode.width, 7680),
        ("height", encode.height, 4320),
    ] {
        in_range(field, v, 16, hi)?;
        if v % 2 != 0 {
            return Err(FieldError::invalid(field, format!("{field} must be even")));
        }
    }
    in_range("fps", encode.fps, 1, 240)?;
    encode.bitrate_kbps = match &raw.bitrate {
        Some(v) => parse_bitrate(v)?,
        None if raw.scenario.is_some()
            && raw.width.is_none()
            && raw.height.is_none()
            && raw.fps.is_none()
            && encode.bitrate_kbps > 0 =>
        {
            encode.bitrate_kbps
        }
        None => default_bitrate(encode.width, encode.height, encode.fps, encode.codec),
    };
    match raw.preset {
        Some(p) => {
            if !preset_allowed(encode.codec, &p) {
                return Err(FieldError::invalid(
                    "preset",
                    format!("preset {p:?} is not valid for {}", encode.codec.as_str()),
                ));
            }
            encode.preset = p;
        }
        None => {
            if !preset_allowed(encode.codec, &encode.preset) {
                encode.preset = default_preset(encode.codec).to_string();
            }
        }
    }

    let input = match raw.input {
        None => {
            return Err(FieldError::new(
                "missing_field",
                Some("input"),
                "input is required",
            ))
        }
        Some(RawInput::Testsrc { duration_s }) => {
            if !duration_s.is_finite() || duration_s <= 0.0 || duration_s > 86_400.0 {
                return Err(FieldError::invalid(
                    "input.duration_s",
                    "duration_s must be in (0, 86400]",
                ));
            }
            Input::Testsrc { duration_s }
        }
        Some(RawInput::File { path }) => Input::File {
            path: roots.resolve_input("input.path", &path)?,
        },
    };
    let output = match raw.output {
        None => {
            return Err(FieldError::new(
                "missing_field",
                Some("output"),
                "output is required",
            ))
        }
        Some(RawOutput::Null) => Output::Null,
        Some(RawOutput::Rtmp { url }) => Output::Rtmp {
            url: check_rtmp(&url)?,
        },
        Some(RawOutput::File { path }) => {
            let full = roots.resolve_output("output.path", &path)?;
            let ext = full
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .unwrap_or_default();
            if !OUTPUT_EXTENSIONS.contains(&ext.as_str()) {
                return Err(FieldError::invalid(
                    "output.path",
                    format!("extension must be one of {}", OUTPUT_EXTENSIONS.join(", ")),
                ));
            }
            if ext == "webm" && !matches!(encode.codec, Codec::Vp9 | Codec::Av1) {
                return Err(FieldError::invalid(
                    "output.path",
                    "webm holds only vp9 or av1",
                ));
            }
            if let Input::File { path: inp } = &input {
                if *inp == full {
                    return Err(FieldError::invalid(
                        "output.path",
                        "output must differ from the input",
                    ));
                }
            }
            Output::File { path: full }
        }
    };
    let resource_limits = raw.resource_limits.unwrap_or_default();
    check_limits(&resource_limits)?;
    let max_retries = in_range("max_retries", raw.max_retries.unwrap_or(3), 0, 10)?;
    Ok(JobSpec {
        scenario: raw.scenario,
        encode,
        input,
        output,
        priority: raw.priority.unwrap_or_default(),
        resource_limits,
        max_retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn roots() -> (tempfile::TempDir, MediaRoots) {
        let d = tempfile::tempdir().expect("tempdir");
        let r = MediaRoots::new(&[d.path().to_path_buf()]).expect("roots");
        (d, r)
    }

    fn parse(v: Value, r: &MediaRoots) -> Result<JobSpec, FieldError> {
        parse_job_request(v.to_string().as_bytes(), r)
    }

    fn base() -> Value {
        json!({"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":10},"output":{"type":"null"}})
    }

    fn rejects(v: Value, r: &MediaRoots, code: &str, field: &str) {
        let e = parse(v.clone(), r).expect_err(&format!("{v} should be rejected"));
        assert_eq!(
            (e.code.as_str(), e.field.as_deref()),
            (code, Some(field)),
            "{v}: {e:?}"
        );
    }

    #[test]
    fn every_scenario_resolves_to_real_parameters() {
        let names = scenario_names();
        assert_eq!(names.len(), 20);
        for n in &names {
            let p = scenario(n).expect(n);
            assert!(
                p.width >= 854 && p.height >= 480 && p.bitrate_kbps > 0,
                "{n}"
            );
        }
        let p = scenario("1080p60-h265").expect("preset");
        assert_eq!(
            (p.width, p.height, p.fps, p.codec),
            (1920, 1080, 60, Codec::H265)
        );
        assert!(scenario("1080p60-h266").is_none());
        assert!(scenario("999p30-h264").is_none());
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let (_d, r) = roots();
        let mut v = base();
        v["priority"] = json!("high");
        let s = parse(v, &r).expect("valid");
        assert_eq!(s.priority, Priority::High);
        assert_eq!(s.max_retries, 3);
        assert_eq!(s.encode.codec.encoder(), "libx264");
        assert_eq!(
            (s.encode.width, s.encode.height, s.encode.fps),
            (1280, 720, 30)
        );
        assert_eq!(s.input, Input::Testsrc { duration_s: 10.0 });
    }

    #[test]
    fn explicit_fields_override_the_preset() {
        let (_d, r) = roots();
        let mut v = base();
        v["width"] = json!(640);
        v["height"] = json!(360);
        v["fps"] = json!(25);
        v["codec"] = json!("vp9");
        v["bitrate"] = json!("2.5M");
        v["preset"] = json!("good");
        let s = parse(v, &r).expect("valid");
        assert_eq!(
            s.encode,
            EncodeParams {
                width: 640,
                height: 360,
                fps: 25,
                codec: Codec::Vp9,
                bitrate_kbps: 2500,
                preset: "good".into()
            }
        );
        let mut v = base();
        v["bitrate"] = json!(1200);
        assert_eq!(parse(v, &r).expect("valid").encode.bitrate_kbps, 1200);
    }

    #[test]
    fn without_a_scenario_the_geometry_is_required() {
        let (_d, r) = roots();
        let v = json!({"input":{"type":"testsrc","duration_s":1},"output":{"type":"null"},"width":320,"height":240,"fps":30});
        rejects(v, &r, "missing_field", "codec");
        let v = json!({"input":{"type":"testsrc","duration_s":1},"output":{"type":"null"},"width":320,"height":240,"codec":"av1"});
        rejects(v, &r, "missing_field", "fps");
        let v = json!({"input":{"type":"testsrc","duration_s":1},"output":{"type":"null"},"width":320,"height":240,"fps":30,"codec":"av1"});
        let s = parse(v, &r).expect("valid");
        assert_eq!(s.encode.preset, "10");
    }

    #[test]
    fn unknown_fields_are_named_at_any_depth() {
        let (_d, r) = roots();
        let mut v = base();
        v["bogus"] = json!(1);
        rejects(v, &r, "unknown_field", "bogus");
        let mut v = base();
        v["resource_limits"] = json!({"foo": 1});
        rejects(v, &r, "unknown_field", "resource_limits.foo");
        let mut v = base();
        v["input"]["extra"] = json!(true);
        rejects(v, &r, "unknown_field", "input.extra");
    }

    #[test]
    fn out_of_range_and_wrong_types_name_their_field() {
        let (_d, r) = roots();
        for (k, val, field) in [
            ("width", json!(15), "width"),
            ("width", json!(641), "width"),
            ("height", json!(5000), "height"),
            ("fps", json!(0), "fps"),
            ("fps", json!("thirty"), "fps"),
            ("bitrate", json!("fast"), "bitrate"),
            ("bitrate", json!(0), "bitrate"),
            ("preset", json!("ludicrous"), "preset"),
            ("max_retries", json!(11), "max_retries"),
            ("priority", json!("urgent"), "priority"),
            ("scenario", json!(7), "scenario"),
        ] {
            let mut v = base();
            v[k] = val;
            let e = parse(v.clone(), &r).expect_err(&v.to_string());
            assert_eq!(e.field.as_deref(), Some(field), "{v}: {e:?}");
        }
        for (k, val) in [
            ("max_cpu_percent", 0),
            ("max_memory_mb", 1),
            ("timeout_s", 0),
            ("stall_timeout_s", 100_000),
        ] {
            let mut v = base();
            v["resource_limits"] = json!({k: val});
            rejects(v, &r, "invalid_field", &format!("resource_limits.{k}"));
        }
        let mut v = base();
        v["input"]["duration_s"] = json!(-1);
        rejects(v, &r, "invalid_field", "input.duration_s");
        let mut v = base();
        v["input"] = json!({"type":"webcam"});
        let e = parse(v, &r).expect_err("unknown input type");
        assert_eq!(e.field.as_deref(), Some("input.type"));
        rejects(
            json!({"scenario":"nope","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"}}),
            &r,
            "unknown_scenario",
            "scenario",
        );
        assert_eq!(
            parse_job_request(b"{not json", &r)
                .expect_err("bad json")
                .code,
            "invalid_json"
        );
        assert_eq!(
            parse_job_request(b"[1,2]", &r).expect_err("array").code,
            "invalid_json"
        );
    }

    #[test]
    fn rtmp_urls_are_checked() {
        let (_d, r) = roots();
        for ok in [
            "rtmp://127.0.0.1/live/key",
            "rtmps://example.com:443/app/stream",
        ] {
            let mut v = base();
            v["output"] = json!({"type":"rtmp","url": ok});
            assert!(parse(v, &r).is_ok(), "{ok}");
        }
        for bad in [
            "http://x/y",
            "rtmp:///nohost",
            "rtmp://h/a b",
            "file:///etc/passwd",
            "rtmp://h/\u{1}",
        ] {
            let mut v = base();
            v["output"] = json!({"type":"rtmp","url": bad});
            rejects(v, &r, "invalid_field", "output.url");
        }
    }

    #[test]
    fn paths_stay_inside_the_media_roots() {
        let (d, r) = roots();
        std::fs::write(d.path().join("in.mp4"), b"x").expect("write");
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        let outside = tempfile::NamedTempFile::new().expect("tmp");
        std::os::unix::fs::symlink(outside.path(), d.path().join("link.mp4")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), d.path().join("outlink.mp4")).expect("symlink");

        let mut v = base();
        v["input"] = json!({"type":"file","path":"in.mp4"});
        v["output"] = json!({"type":"file","path":"sub/out.mkv"});
        let s = parse(v, &r).expect("valid");
        let root = d.path().canonicalize().expect("canon");
        assert_eq!(
            s.input,
            Input::File {
                path: root.join("in.mp4")
            }
        );
        assert_eq!(
            s.output,
            Output::File {
                path: root.join("sub/out.mkv")
            }
        );

        let input = |p: &str| {
            let mut v = base();
            v["input"] = json!({"type":"file","path": p});
            v
        };
        rejects(
            input("../in.mp4"),
            &r,
            "path_outside_media_root",
            "input.path",
        );
        rejects(
            input("link.mp4"),
            &r,
            "path_outside_media_root",
            "input.path",
        );
        rejects(
            input(outside.path().to_str().expect("utf8")),
            &r,
            "path_outside_media_root",
            "input.path",
        );
        rejects(input("missing.mp4"), &r, "not_found", "input.path");
        rejects(input("sub"), &r, "invalid_field", "input.path");
        rejects(input("a\u{0}b"), &r, "invalid_field", "input.path");

        let output = |p: &str| {
            let mut v = base();
            v["output"] = json!({"type":"file","path": p});
            v
        };
        rejects(
            output("../out.mp4"),
            &r,
            "path_outside_media_root",
            "output.path",
        );
        rejects(
            output("/tmp/elsewhere.mp4"),
            &r,
            "path_outside_media_root",
            "output.path",
        );
        rejects(output("outlink.mp4"), &r, "invalid_field", "output.path");
        rejects(output("nodir/out.mp4"), &r, "invalid_field", "output.path");
        rejects(output("out.exe"), &r, "invalid_field", "output.path");
        rejects(output("out.webm"), &r, "invalid_field", "output.path");
        let mut v = base();
        v["input"] = json!({"type":"file","path":"in.mp4"});
        v["output"] = json!({"type":"file","path":"in.mp4"});
        rejects(v, &r, "invalid_field", "output.path");
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let d = tempfile::tempdir().expect("tempdir");
            let r = MediaRoots::new(&[d.path().to_path_buf()]).expect("roots");
            let _ = parse_job_request(&body, &r);
        }

        #[test]
        fn arbitrary_json_values_never_panic(w in any::<i64>(), d in any::<f64>(), s in ".{0,40}") {
            let d0 = tempfile::tempdir().expect("tempdir");
            let r = MediaRoots::new(&[d0.path().to_path_buf()]).expect("roots");
            let v = json!({"scenario": s, "width": w, "input": {"type":"testsrc","duration_s": d}, "output": {"type":"file","path": s}});
            let _ = parse(v, &r);
        }
    }
}
