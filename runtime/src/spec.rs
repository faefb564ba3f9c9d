//! Parsing and validation of `POST /v1/jobs` bodies into a [`JobSpec`], and the
//! scenario presets (`1080p60-h265`, ...).
//!
//! Everything a user sends is checked here before it can reach FFmpeg: numbers
//! are range-checked, presets come from per-codec allow-lists, paths are
//! confined to the configured media roots (symlinks resolved), and URLs are
//! parsed. The FFmpeg argv is built only from the resulting [`JobSpec`].

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::encoders;
use crate::error::FieldError;
use crate::model::{
    Codec, EncodeParams, HardwarePref, Input, JobSpec, Output, Priority, QualityMetric,
    QualitySpec, ResourceLimits,
};

/// Stable error codes returned in [`FieldError::code`].
pub mod codes {
    /// The body is not JSON, or not a JSON object.
    pub const INVALID_JSON: &str = "invalid_json";
    /// A field that the API does not know (or not allowed in this variant).
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    /// A required field is absent.
    pub const MISSING_FIELD: &str = "missing_field";
    /// A field has the wrong type or an out-of-range / disallowed value.
    pub const INVALID_FIELD: &str = "invalid_field";
    /// A path resolves (after symlinks) outside every media root.
    pub const PATH_OUTSIDE_MEDIA_ROOT: &str = "path_outside_media_root";
    /// An input file, or an output file's parent directory, does not exist.
    pub const FILE_NOT_FOUND: &str = "file_not_found";
    /// `scenario` names no preset.
    pub const UNKNOWN_SCENARIO: &str = "unknown_scenario";
    /// A file output's name is taken and the request does not set
    /// `"overwrite": true`.
    pub const OUTPUT_EXISTS: &str = "output_exists";
    /// A file input's container format is not on the allow-list (a format
    /// that can pull in other files, such as an HLS playlist, or not media).
    pub const INPUT_FORMAT_NOT_ALLOWED: &str = "input_format_not_allowed";
}

/// Width bounds (inclusive); must be even (yuv420p).
pub const WIDTH_RANGE: (u32, u32) = (16, 7680);
/// Height bounds (inclusive); must be even (yuv420p).
pub const HEIGHT_RANGE: (u32, u32) = (16, 4320);
/// SVT-AV1 refuses frames smaller than 64x64.
pub const AV1_MIN_DIMENSION: u32 = 64;
/// Frame-rate bounds (inclusive), whole frames per second.
pub const FPS_RANGE: (u32, u32) = (1, 240);
/// Video bitrate bounds in kbit/s (inclusive).
pub const BITRATE_KBPS_RANGE: (u32, u32) = (1, 200_000);
/// Longest `testsrc` input, in seconds.
pub const MAX_TESTSRC_DURATION_S: f64 = 86_400.0;
/// Largest accepted `max_retries`.
pub const MAX_RETRIES: u32 = 10;
/// `max_retries` when the request names none.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Longest accepted RTMP URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Longest accepted path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// `resource_limits.max_cpu_percent` bounds (inclusive), percent of one core.
pub const MAX_CPU_PERCENT_RANGE: (u32, u32) = (1, 25_600);
/// `resource_limits.max_memory_mb` bounds (inclusive).
pub const MAX_MEMORY_MB_RANGE: (u64, u64) = (16, 1_048_576);
/// `resource_limits.timeout_s` bounds (inclusive).
pub const TIMEOUT_S_RANGE: (u64, u64) = (1, 604_800);
/// `resource_limits.stall_timeout_s` bounds (inclusive).
pub const STALL_TIMEOUT_S_RANGE: (u64, u64) = (1, 86_400);
/// Output file extensions, in the order [`container_for_extension`] knows them.
pub const OUTPUT_EXTENSIONS: [&str; 6] = ["mp4", "mkv", "mov", "webm", "ts", "flv"];

const X26X_PRESETS: &[&str] = &[
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
const VP9_PRESETS: &[&str] = &["realtime", "good", "best"];
const AV1_PRESETS: &[&str] = &[
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13",
];

/// Resolution/rate parts of the scenario names: (name, width, height, fps).
const RESOLUTIONS: [(&str, u32, u32, u32); 5] = [
    ("480p30", 854, 480, 30),
    ("720p30", 1280, 720, 30),
    ("1080p30", 1920, 1080, 30),
    ("1080p60", 1920, 1080, 60),
    ("2160p30", 3840, 2160, 30),
];

/// Scenario bitrates in kbit/s, indexed like [`RESOLUTIONS`], per codec.
fn scenario_bitrates(codec: Codec) -> [u32; 5] {
    match codec {
        Codec::H264 => [1500, 3000, 5000, 7500, 16000],
        Codec::H265 => [900, 1800, 3000, 4500, 10000],
        Codec::Vp9 => [1100, 2200, 3800, 5600, 12000],
        Codec::Av1 => [800, 1600, 2700, 4000, 9000],
    }
}

/// The encoder presets accepted for `codec`, fastest first for x264/x265 and vp9.
pub fn presets(codec: Codec) -> &'static [&'static str] {
    match codec {
        Codec::H264 | Codec::H265 => X26X_PRESETS,
        Codec::Vp9 => VP9_PRESETS,
        Codec::Av1 => AV1_PRESETS,
    }
}

/// The preset used when a request names none.
pub fn default_preset(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 | Codec::H265 => "veryfast",
        Codec::Vp9 => "realtime",
        Codec::Av1 => "10",
    }
}

/// The bitrate (kbit/s) used when a request names none: the scenario table for
/// scenario shapes, otherwise scaled from 1080p30 by pixel count^0.75 and
/// (fps/30)^0.6, times a per-codec efficiency factor, rounded to 100 kbit/s.
pub fn default_bitrate_kbps(codec: Codec, width: u32, height: u32, fps: u32) -> u32 {
    if let Some(i) = RESOLUTIONS
        .iter()
        .position(|&(_, w, h, f)| (w, h, f) == (width, height, fps))
    {
        return scenario_bitrates(codec)[i];
    }
    let factor = match codec {
        Codec::H264 => 1.0,
        Codec::Vp9 => 0.75,
        Codec::H265 => 0.6,
        Codec::Av1 => 0.55,
    };
    let pixels = f64::from(width) * f64::from(height) / (1920.0 * 1080.0);
    let kbps = 5000.0 * factor * pixels.powf(0.75) * (f64::from(fps) / 30.0).powf(0.6);
    let rounded = (kbps / 100.0).round() * 100.0;
    // `as` saturates on out-of-range floats; the clamp keeps it in the valid range.
    (rounded as u32).clamp(100, BITRATE_KBPS_RANGE.1)
}

/// Every scenario preset name, e.g. `"1080p60-h265"`.
pub fn scenario_names() -> Vec<String> {
    RESOLUTIONS
        .iter()
        .flat_map(|(res, ..)| {
            Codec::ALL
                .iter()
                .map(move |codec| format!("{res}-{}", codec.as_str()))
        })
        .collect()
}

/// Resolve a preset name to encode parameters.
pub fn scenario(name: &str) -> Option<EncodeParams> {
    let (res, codec) = name.split_once('-')?;
    let codec = Codec::ALL.into_iter().find(|c| c.as_str() == codec)?;
    let &(_, width, height, fps) = RESOLUTIONS.iter().find(|(r, ..)| *r == res)?;
    Some(EncodeParams::new(
        width,
        height,
        fps,
        codec,
        default_bitrate_kbps(codec, width, height, fps),
        default_preset(codec).to_string(),
    ))
}

/// The configured media roots, canonicalized. Every file a job reads or writes
/// must resolve inside one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRoots {
    roots: Vec<PathBuf>,
}

impl MediaRoots {
    /// Canonicalizes each root; fails if one is missing or not a directory.
    pub fn new(roots: &[PathBuf]) -> std::io::Result<MediaRoots> {
        let mut out = Vec::with_capacity(roots.len());
        for root in roots {
            let canon = std::fs::canonicalize(root).map_err(|e| {
                std::io::Error::new(e.kind(), format!("media root {}: {e}", root.display()))
            })?;
            if !std::fs::metadata(&canon)?.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    format!("media root {} is not a directory", root.display()),
                ));
            }
            out.push(canon);
        }
        Ok(MediaRoots { roots: out })
    }

    /// The canonical roots, in configuration order.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    fn contains(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }
}

// ---------------------------------------------------------------------------
// Raw request shapes: what serde accepts before validation.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct RawRequest {
    scenario: Option<String>,
    input: Option<RawInput>,
    output: Option<RawOutput>,
    priority: Option<String>,
    width: Option<u64>,
    height: Option<u64>,
    fps: Option<u64>,
    codec: Option<String>,
    /// An integer (kbit/s) or a string like `"2500k"` / `"6M"`.
    bitrate: Option<serde_json::Value>,
    preset: Option<String>,
    /// An FFmpeg encoder by name (`"hevc_nvenc"`, [`crate::encoders::ENCODERS`]).
    encoder: Option<String>,
    /// `"required" | "preferred" | "none"`.
    hardware: Option<String>,
    /// Constant-quality rate control instead of `bitrate`.
    crf: Option<u64>,
    /// The output pixel format ([`crate::encoders::PIX_FMTS`]).
    pix_fmt: Option<String>,
    resource_limits: Option<RawLimits>,
    max_retries: Option<u64>,
    overwrite: Option<bool>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    quality: Option<RawQuality>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct RawQuality {
    metrics: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct RawInput {
    #[serde(rename = "type")]
    kind: Option<String>,
    duration_s: Option<f64>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct RawOutput {
    #[serde(rename = "type")]
    kind: Option<String>,
    path: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object")]
struct RawLimits {
    max_cpu_percent: Option<u64>,
    max_memory_mb: Option<u64>,
    timeout_s: Option<u64>,
    stall_timeout_s: Option<u64>,
}

// ---------------------------------------------------------------------------
// Error helpers.

fn invalid(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::invalid(field, message)
}

fn missing(field: &str) -> FieldError {
    FieldError::new(
        codes::MISSING_FIELD,
        Some(field),
        format!("`{field}` is required"),
    )
}

fn not_allowed(field: &str, what: &str) -> FieldError {
    FieldError::new(
        codes::UNKNOWN_FIELD,
        Some(field),
        format!("`{field}` is not allowed with {what}"),
    )
}

/// `path_outside_media_root` on `field`: `path` is not inside a media root.
pub fn outside_roots(field: &str, path: &Path) -> FieldError {
    FieldError::new(
        codes::PATH_OUTSIDE_MEDIA_ROOT,
        Some(field),
        format!(
            "`{field}` ({}) is not inside a configured media root",
            path.display()
        ),
    )
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The name between the first pair of backticks of a serde message such as
/// "unknown field `foo`, expected one of ...".
fn backticked_name<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    // serde writes the name unescaped; the separators it appends are fixed.
    ["`, expected", "`, there are no fields", "` at line", "`"]
        .iter()
        .find_map(|sep| rest.find(sep).map(|i| &rest[..i]))
}

/// The dotted field name of a path serde_path_to_error tracked.
fn field_path(segments: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for seg in segments.iter() {
        match seg {
            // An empty key would leave `field` empty (or `input.`):
            // name it as the JSON it is.
            Segment::Map { key } if key.is_empty() => path = join_path(&path, "\"\""),
            Segment::Map { key } => path = join_path(&path, key),
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Enum { variant } => path = join_path(&path, variant),
            Segment::Unknown => path = join_path(&path, "?"),
        }
    }
    path
}

/// A request body's deserialization error as a refusal naming the
/// innermost field (shared by `POST /v1/jobs` and the Go-seed `POST /jobs`).
pub(crate) fn map_serde_error(err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = field_path(err.path());
    let inner = err.into_inner();
    if !inner.is_data() {
        return FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body is not valid JSON: {inner}"),
        );
    }
    let full = inner.to_string();
    let suffix = format!(" at line {} column {}", inner.line(), inner.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);

    if let Some(name) = backticked_name(message, "unknown field `") {
        // The path already ends with the unknown key; the name parsed from the
        // message is only a fallback.
        let field = if path.is_empty() {
            name.to_string()
        } else {
            path
        };
        return FieldError::new(
            codes::UNKNOWN_FIELD,
            Some(&field),
            format!("unknown field `{field}`"),
        );
    }
    if let Some(name) = backticked_name(message, "missing field `") {
        return missing(&join_path(&path, name));
    }
    if let Some(name) = backticked_name(message, "duplicate field `") {
        // serde refuses the second key before reading its value: the path
        // ends at the object that holds it.
        let field = join_path(&path, name);
        return invalid(&field, format!("duplicate field `{field}`"));
    }
    if path.is_empty() {
        return FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body must be a JSON object: {message}"),
        );
    }
    invalid(&path, format!("`{path}`: {message}"))
}

// ---------------------------------------------------------------------------
// Parsing.

/// Parse and validate a `POST /v1/jobs` body. Nothing is stored by this function.
///
/// Relative paths are resolved against the roots in order; the stored paths are
/// canonical. Note that the file system may change between this check and the
/// job's run (the worker runs FFmpeg on the canonical path it was given).
pub fn parse_job_request(body: &[u8], roots: &MediaRoots) -> Result<JobSpec, FieldError> {
    check_object_shapes(body)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw: RawRequest = serde_path_to_error::deserialize(&mut de).map_err(map_serde_error)?;
    de.end().map_err(|e| {
        FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    validate(raw, roots)
}

/// A request body as a JSON value. Malformed JSON is `invalid_json` on no
/// field, but for a number too large for any type (`1e309`), which is
/// refused on the field that holds it.
pub(crate) fn parse_json_value(body: &[u8]) -> Result<serde_json::Value, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<serde_json::Value, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|e| {
        let path = field_path(e.path());
        let inner = e.into_inner();
        let full = inner.to_string();
        if full.starts_with("number out of range") && !path.is_empty() {
            return invalid(&path, format!("`{path}`: the number is out of range"));
        }
        FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body is not valid JSON: {full}"),
        )
    })?;
    de.end().map_err(|e| {
        FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// serde's derived structs also accept JSON arrays (fields by position); the
/// API takes objects only. This pass also reports malformed JSON.
fn check_object_shapes(body: &[u8]) -> Result<(), FieldError> {
    let value = parse_json_value(body)?;
    let obj = value.as_object().ok_or_else(|| {
        FieldError::new(
            codes::INVALID_JSON,
            None,
            "request body must be a JSON object",
        )
    })?;
    for key in ["input", "output", "resource_limits", "quality"] {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Object(_)) => {}
            Some(_) => return Err(invalid(key, format!("`{key}` must be a JSON object"))),
        }
    }
    Ok(())
}

fn validate(raw: RawRequest, roots: &MediaRoots) -> Result<JobSpec, FieldError> {
    let base = match &raw.scenario {
        Some(name) => Some(scenario(name).ok_or_else(|| {
            FieldError::new(
                codes::UNKNOWN_SCENARIO,
                Some("scenario"),
                format!(
                    "unknown scenario {name:?}; known: {}",
                    scenario_names().join(", ")
                ),
            )
        })?),
        None => None,
    };

    let width = match raw.width {
        Some(w) => check_dimension("width", w, WIDTH_RANGE)?,
        None => base
            .as_ref()
            .map(|b| b.width)
            .ok_or_else(|| missing("width"))?,
    };
    let height = match raw.height {
        Some(h) => check_dimension("height", h, HEIGHT_RANGE)?,
        None => base
            .as_ref()
            .map(|b| b.height)
            .ok_or_else(|| missing("height"))?,
    };
    let fps = match raw.fps {
        Some(f) => check_range("fps", f, FPS_RANGE)?,
        None => base.as_ref().map(|b| b.fps).ok_or_else(|| missing("fps"))?,
    };
    let named_encoder = match &raw.encoder {
        Some(name) => Some(encoders::lookup(name).ok_or_else(|| {
            invalid(
                "encoder",
                format!(
                    "encoder {name:?} is not one of {}",
                    encoders::ENCODERS.map(|e| e.name).join(", ")
                ),
            )
        })?),
        None => None,
    };
    let codec = match &raw.codec {
        Some(c) => parse_codec(c)?,
        None => base
            .as_ref()
            .map(|b| b.codec)
            .ok_or_else(|| missing("codec"))?,
    };
    if codec == Codec::Av1 {
        for (field, v) in [("width", width), ("height", height)] {
            if v < AV1_MIN_DIMENSION {
                return Err(invalid(
                    field,
                    format!("codec av1 (SVT-AV1) needs `{field}` >= {AV1_MIN_DIMENSION}"),
                ));
            }
        }
    }
    let bitrate_kbps = match &raw.bitrate {
        Some(v) => parse_bitrate(v)?,
        None => default_bitrate_kbps(codec, width, height, fps),
    };
    let hardware = match &raw.hardware {
        Some(h) => parse_hardware(h)?,
        None => base.as_ref().map(|b| b.hardware).unwrap_or_default(),
    };
    let encoder = match named_encoder {
        Some(e) => {
            check_named_encoder(e, codec, &raw.hardware, hardware)?;
            Some(e)
        }
        None => base
            .as_ref()
            .and_then(|b| b.encoder.as_deref())
            .and_then(encoders::lookup),
    };
    if encoder.is_none()
        && hardware == HardwarePref::Required
        && encoders::hardware(codec).next().is_none()
    {
        return Err(invalid(
            "hardware",
            format!(
                "no hardware encoder here encodes codec {}; use \"hardware\": \"none\"",
                codec.as_str()
            ),
        ));
    }
    let preset = match (&raw.preset, encoder) {
        (Some(p), Some(enc)) => {
            let allowed = enc.presets();
            if !allowed.contains(&p.as_str()) {
                return Err(invalid(
                    "preset",
                    format!(
                        "preset {p:?} is not one encoder {} ({}) knows; allowed: {}",
                        enc.name,
                        enc.family.as_str(),
                        allowed.join(", ")
                    ),
                ));
            }
            p.clone()
        }
        (Some(p), None) => {
            if !presets(codec).contains(&p.as_str()) {
                return Err(invalid(
                    "preset",
                    format!(
                        "preset {p:?} is not valid for codec {}; allowed: {}",
                        codec.as_str(),
                        presets(codec).join(", ")
                    ),
                ));
            }
            p.clone()
        }
        (None, _) => base
            .as_ref()
            .filter(|b| b.codec == codec)
            .map_or_else(|| default_preset(codec).to_string(), |b| b.preset.clone()),
    };
    let pix_fmt = match &raw.pix_fmt {
        Some(f) => Some(parse_pix_fmt(f)?),
        None => base.as_ref().and_then(|b| b.pix_fmt.clone()),
    };
    let mut encode = EncodeParams {
        width,
        height,
        fps,
        codec,
        bitrate_kbps,
        preset,
        encoder: encoder.map(|e| e.name.to_string()),
        hardware,
        crf: None,
        pix_fmt,
    };
    check_pix_fmt(&encode)?;
    encode.crf = match raw.crf {
        Some(q) => {
            if raw.bitrate.is_some() {
                return Err(invalid(
                    "crf",
                    "give `crf` (constant quality) or `bitrate`, not both",
                ));
            }
            Some(check_range("crf", q, crf_range(&encode))?)
        }
        None => base.as_ref().and_then(|b| b.crf),
    };

    let overwrite = raw.overwrite.unwrap_or(false);
    let input = parse_input(raw.input, roots)?;
    let output = parse_output(raw.output, codec, overwrite, roots)?;
    if overwrite && !matches!(output, Output::File { .. }) {
        return Err(not_allowed("overwrite", "an output that is not a file"));
    }
    if let (Input::File { path: i }, Output::File { path: o }) = (&input, &output) {
        if i == o {
            return Err(invalid(
                "output.path",
                "`output.path` must not be the input file",
            ));
        }
    }

    let priority = match &raw.priority {
        Some(p) => Priority::ALL
            .into_iter()
            .find(|x| x.as_str() == p)
            .ok_or_else(|| {
                invalid(
                    "priority",
                    format!("priority {p:?} is not one of live, high, medium, low, batch"),
                )
            })?,
        None => Priority::default(),
    };

    let resource_limits = match raw.resource_limits {
        Some(l) => ResourceLimits {
            max_cpu_percent: l
                .max_cpu_percent
                .map(|v| check_range("resource_limits.max_cpu_percent", v, MAX_CPU_PERCENT_RANGE))
                .transpose()?,
            max_memory_mb: l
                .max_memory_mb
                .map(|v| check_range_u64("resource_limits.max_memory_mb", v, MAX_MEMORY_MB_RANGE))
                .transpose()?,
            timeout_s: l
                .timeout_s
                .map(|v| check_range_u64("resource_limits.timeout_s", v, TIMEOUT_S_RANGE))
                .transpose()?,
            stall_timeout_s: l
                .stall_timeout_s
                .map(|v| {
                    check_range_u64("resource_limits.stall_timeout_s", v, STALL_TIMEOUT_S_RANGE)
                })
                .transpose()?,
        },
        None => ResourceLimits::default(),
    };

    let max_retries = match raw.max_retries {
        Some(r) => check_range("max_retries", r, (0, MAX_RETRIES))?,
        None => DEFAULT_MAX_RETRIES,
    };

    let quality = raw.quality.map(|q| parse_quality(q, &output)).transpose()?;

    Ok(JobSpec {
        scenario: raw.scenario,
        encode,
        input,
        output,
        priority,
        resource_limits,
        max_retries,
        overwrite,
        quality,
        labels: check_labels("labels", raw.labels.unwrap_or_default())?,
        experiment: None,
    })
}

/// Most labels one job may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label key, in characters.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE_LEN: usize = 128;
/// The label key no user may set: the experiment is the job's own field.
pub const RESERVED_LABEL_KEY: &str = "experiment";

/// Whether `key` is a valid label key: 1–63 of `[a-z0-9_.-]`, starting with
/// a letter or digit, and not the reserved `experiment`.
pub fn label_key_ok(key: &str) -> bool {
    let mut chars = key.chars();
    (1..=MAX_LABEL_KEY_LEN).contains(&key.len())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
        && key != RESERVED_LABEL_KEY
}

/// Validate a label map (the bounds in docs/API.md). `field` is the map's
/// name in the request (`labels`); a refusal names the innermost field
/// (`labels.<key>`), or `field` itself when there are too many.
pub fn check_labels(
    field: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(
            field,
            format!(
                "`{field}` has {} labels; at most {MAX_LABELS} are allowed",
                labels.len()
            ),
        ));
    }
    for (key, value) in &labels {
        let inner = format!("{field}.{key}");
        if key == RESERVED_LABEL_KEY {
            return Err(invalid(
                &inner,
                format!("the label key `{RESERVED_LABEL_KEY}` is reserved (experiments set it)"),
            ));
        }
        if !label_key_ok(key) {
            return Err(invalid(
                &inner,
                format!(
                    "label key {key:?} must be 1-{MAX_LABEL_KEY_LEN} characters of \
                     [a-z0-9_.-], starting with a letter or digit"
                ),
            ));
        }
        if value.chars().count() > MAX_LABEL_VALUE_LEN {
            return Err(invalid(
                &inner,
                format!("`{inner}` is longer than {MAX_LABEL_VALUE_LEN} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(
                &inner,
                format!("`{inner}` must not contain control characters"),
            ));
        }
    }
    Ok(labels)
}

/// `"quality": {"metrics": [...]}`: known names, at least one, no
/// repeats; stored distinct and sorted. Not on a live (RTMP) output: there
/// is no file to compare afterwards.
fn parse_quality(raw: RawQuality, output: &Output) -> Result<QualitySpec, FieldError> {
    if matches!(output, Output::Rtmp { .. }) {
        return Err(not_allowed("quality", "an RTMP output"));
    }
    let names = raw.metrics.ok_or_else(|| missing("quality.metrics"))?;
    if names.is_empty() {
        return Err(invalid(
            "quality.metrics",
            "`quality.metrics` must name at least one of vmaf, psnr, ssim",
        ));
    }
    let mut metrics: Vec<QualityMetric> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let field = format!("quality.metrics[{i}]");
        let metric = QualityMetric::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                invalid(
                    &field,
                    format!("unknown quality metric {name:?}; known: vmaf, psnr, ssim"),
                )
            })?;
        if metrics.contains(&metric) {
            return Err(invalid(
                &field,
                format!("quality metric {name:?} is named twice"),
            ));
        }
        metrics.push(metric);
    }
    metrics.sort();
    Ok(QualitySpec { metrics })
}

fn check_range(field: &str, v: u64, (lo, hi): (u32, u32)) -> Result<u32, FieldError> {
    match u32::try_from(v) {
        Ok(x) if (lo..=hi).contains(&x) => Ok(x),
        _ => Err(invalid(
            field,
            format!("`{field}` must be between {lo} and {hi}, got {v}"),
        )),
    }
}

fn check_range_u64(field: &str, v: u64, (lo, hi): (u64, u64)) -> Result<u64, FieldError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            field,
            format!("`{field}` must be between {lo} and {hi}, got {v}"),
        ))
    }
}

fn check_dimension(field: &str, v: u64, range: (u32, u32)) -> Result<u32, FieldError> {
    let x = check_range(field, v, range)?;
    if x % 2 != 0 {
        return Err(invalid(field, format!("`{field}` must be even, got {x}")));
    }
    Ok(x)
}

fn parse_codec(s: &str) -> Result<Codec, FieldError> {
    Codec::ALL
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            invalid(
                "codec",
                format!("codec {s:?} is not one of h264, h265, vp9, av1"),
            )
        })
}

fn parse_hardware(s: &str) -> Result<HardwarePref, FieldError> {
    match s {
        "none" => Ok(HardwarePref::None),
        "preferred" => Ok(HardwarePref::Preferred),
        "required" => Ok(HardwarePref::Required),
        _ => Err(invalid(
            "hardware",
            format!("hardware {s:?} is not one of required, preferred, none"),
        )),
    }
}

/// A named encoder must encode the job's codec and agree with an explicit
/// `hardware`.
fn check_named_encoder(
    e: &encoders::Encoder,
    codec: Codec,
    raw_hardware: &Option<String>,
    hardware: HardwarePref,
) -> Result<(), FieldError> {
    if e.codec != codec {
        return Err(invalid(
            "encoder",
            format!(
                "encoder {} encodes {}, not the job's codec {}",
                e.name,
                e.codec.as_str(),
                codec.as_str()
            ),
        ));
    }
    let clash = match hardware {
        HardwarePref::None => e.family.is_hardware(),
        HardwarePref::Required => !e.family.is_hardware(),
        HardwarePref::Preferred => false,
    };
    if raw_hardware.is_some() && clash {
        return Err(invalid(
            "hardware",
            format!(
                "encoder {} is {}, which `hardware` {:?} rules out",
                e.name,
                if e.family.is_hardware() {
                    "a hardware encoder"
                } else {
                    "a software encoder"
                },
                raw_hardware.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

fn parse_pix_fmt(s: &str) -> Result<String, FieldError> {
    if encoders::PIX_FMTS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(invalid(
            "pix_fmt",
            format!(
                "pix_fmt {s:?} is not one of {}",
                encoders::PIX_FMTS.join(", ")
            ),
        ))
    }
}

/// Some encoder the job may run with takes its pixel format.
fn check_pix_fmt(e: &EncodeParams) -> Result<(), FieldError> {
    let pix_fmt = e.pix_fmt.as_deref().unwrap_or(encoders::DEFAULT_PIX_FMT);
    if encoders::candidates(e).is_empty() {
        return Err(invalid(
            "pix_fmt",
            format!(
                "no hardware encoder for codec {} takes pix_fmt {pix_fmt}",
                e.codec.as_str()
            ),
        ));
    }
    match e.encoder.as_deref().and_then(encoders::lookup) {
        Some(enc) if !enc.takes_pix_fmt(pix_fmt) => Err(invalid(
            "pix_fmt",
            format!("encoder {} does not take pix_fmt {pix_fmt}", enc.name),
        )),
        _ => Ok(()),
    }
}

/// The CRF values every encoder the job may run with takes.
pub fn crf_range(e: &EncodeParams) -> (u32, u32) {
    encoders::candidates(e)
        .iter()
        .map(|c| c.crf_range())
        .fold((0, u32::MAX), |(lo, hi), (l, h)| (lo.max(l), hi.min(h)))
}

fn parse_bitrate(v: &serde_json::Value) -> Result<u32, FieldError> {
    let (lo, hi) = BITRATE_KBPS_RANGE;
    let bad = || {
        invalid(
            "bitrate",
            format!(
                "`bitrate` must be a whole number of kbit/s between {lo} and {hi}, \
                 as an integer (3000) or a string like \"2500k\" or \"6M\""
            ),
        )
    };
    let kbps = match v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        serde_json::Value::String(s) => parse_bitrate_str(s).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    u32::try_from(kbps)
        .ok()
        .filter(|k| (lo..=hi).contains(k))
        .ok_or_else(bad)
}

/// `"2500k"` → 2500, `"6M"` → 6000, `"2.5M"` → 2500; only whole kbit/s.
fn parse_bitrate_str(s: &str) -> Option<u64> {
    let (num, mult_digits) = if let Some(n) = s.strip_suffix(['k', 'K']) {
        (n, 0usize)
    } else if let Some(n) = s.strip_suffix(['m', 'M']) {
        (n, 3usize)
    } else {
        return None;
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 9 || frac.len() > 9 || !digits(int) || !digits(frac) {
        return None;
    }
    // Fraction digits beyond the multiplier's precision must be zero.
    let (kept, dropped) = frac.split_at(frac.len().min(mult_digits));
    if dropped.bytes().any(|b| b != b'0') {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let mut kbps = int.checked_mul(10u64.pow(mult_digits as u32))?;
    if !kept.is_empty() {
        let kept_val: u64 = kept.parse().ok()?;
        kbps = kbps.checked_add(kept_val * 10u64.pow((mult_digits - kept.len()) as u32))?;
    }
    Some(kbps)
}

fn parse_input(raw: Option<RawInput>, roots: &MediaRoots) -> Result<Input, FieldError> {
    let raw = raw.ok_or_else(|| missing("input"))?;
    let kind = raw.kind.ok_or_else(|| missing("input.type"))?;
    match kind.as_str() {
        "testsrc" => {
            if raw.path.is_some() {
                return Err(not_allowed("input.path", "input type testsrc"));
            }
            let d = raw.duration_s.ok_or_else(|| missing("input.duration_s"))?;
            if !(d.is_finite() && d > 0.0 && d <= MAX_TESTSRC_DURATION_S) {
                return Err(invalid(
                    "input.duration_s",
                    format!(
                        "`input.duration_s` must be > 0 and <= {MAX_TESTSRC_DURATION_S}, got {d}"
                    ),
                ));
            }
            Ok(Input::Testsrc { duration_s: d })
        }
        "file" => {
            if raw.duration_s.is_some() {
                return Err(not_allowed("input.duration_s", "input type file"));
            }
            let path = raw.path.ok_or_else(|| missing("input.path"))?;
            Ok(Input::File {
                path: resolve_input_path(&path, roots)?,
            })
        }
        other => Err(invalid(
            "input.type",
            format!("input type {other:?} is not one of testsrc, file"),
        )),
    }
}

/// File extension → (FFmpeg muxer, codecs FFmpeg 5.1 can put in it).
pub fn container_for_extension(ext: &str) -> Option<(&'static str, &'static [Codec])> {
    use Codec::*;
    Some(match ext.to_ascii_lowercase().as_str() {
        "mp4" => ("mp4", &[H264, H265, Vp9, Av1]),
        "mkv" => ("matroska", &[H264, H265, Vp9, Av1]),
        "mov" => ("mov", &[H264, H265]),
        "webm" => ("webm", &[Vp9, Av1]),
        "ts" => ("mpegts", &[H264, H265]),
        "flv" => ("flv", &[H264]),
        _ => return None,
    })
}

fn parse_output(
    raw: Option<RawOutput>,
    codec: Codec,
    overwrite: bool,
    roots: &MediaRoots,
) -> Result<Output, FieldError> {
    let raw = raw.ok_or_else(|| missing("output"))?;
    let kind = raw.kind.ok_or_else(|| missing("output.type"))?;
    match kind.as_str() {
        "null" => {
            if raw.path.is_some() {
                return Err(not_allowed("output.path", "output type null"));
            }
            if raw.url.is_some() {
                return Err(not_allowed("output.url", "output type null"));
            }
            Ok(Output::Null)
        }
        "file" => {
            if raw.url.is_some() {
                return Err(not_allowed("output.url", "output type file"));
            }
            let path = raw.path.ok_or_else(|| missing("output.path"))?;
            Ok(Output::File {
                path: resolve_output_path(&path, codec, overwrite, roots)?,
            })
        }
        "rtmp" => {
            if raw.path.is_some() {
                return Err(not_allowed("output.path", "output type rtmp"));
            }
            let url = raw.url.ok_or_else(|| missing("output.url"))?;
            let url = check_rtmp_url(&url)?;
            if !rtmp_takes(codec) {
                return Err(invalid(
                    "output.url",
                    format!(
                        "rtmp output is FLV, which FFmpeg 5.1 supports only with codec h264 (got {})",
                        codec.as_str()
                    ),
                ));
            }
            Ok(Output::Rtmp { url })
        }
        other => Err(invalid(
            "output.type",
            format!("output type {other:?} is not one of null, file, rtmp"),
        )),
    }
}

/// Whether an RTMP output (FLV) can carry `codec` in FFmpeg 5.1.
fn rtmp_takes(codec: Codec) -> bool {
    codec == Codec::H264
}

fn check_rtmp_url(s: &str) -> Result<String, FieldError> {
    const F: &str = "output.url";
    if s.len() > MAX_URL_LEN {
        return Err(invalid(
            F,
            format!("`{F}` is longer than {MAX_URL_LEN} bytes"),
        ));
    }
    // Checked on the raw string: the URL parser silently strips some of these.
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            F,
            format!("`{F}` must not contain whitespace or control characters"),
        ));
    }
    let url = url::Url::parse(s).map_err(|e| invalid(F, format!("`{F}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "rtmp" | "rtmps") {
        return Err(invalid(
            F,
            format!(
                "`{F}` must use rtmp:// or rtmps://, got {}://",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(F, format!("`{F}` must name a host")));
    }
    // Schemes are case-insensitive but FFmpeg's protocol lookup is not:
    // `Rtmp://` reaches it as `rtmp://` (the rest of the URL as sent).
    let rest = s.get(url.scheme().len()..).unwrap_or_default();
    Ok(format!("{}{rest}", url.scheme()))
}

/// Syntax checks shared by input and output paths.
fn check_path_syntax<'a>(field: &str, s: &'a str) -> Result<&'a Path, FieldError> {
    if s.is_empty() {
        return Err(invalid(field, format!("`{field}` must not be empty")));
    }
    if s.len() > MAX_PATH_LEN {
        return Err(invalid(
            field,
            format!("`{field}` is longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    if s.contains('\0') {
        return Err(invalid(field, format!("`{field}` must not contain NUL")));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    let p = Path::new(s);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            field,
            format!("`{field}` must not contain a `..` component"),
        ));
    }
    Ok(p)
}

/// Where a user path may live: itself if absolute (and lexically inside a
/// root), else joined to each root in order.
fn candidates(field: &str, p: &Path, roots: &MediaRoots) -> Result<Vec<PathBuf>, FieldError> {
    if roots.roots().is_empty() {
        return Err(FieldError::new(
            codes::PATH_OUTSIDE_MEDIA_ROOT,
            Some(field),
            "no media roots are configured: file paths are not accepted",
        ));
    }
    if p.is_absolute() {
        if !roots.contains(p) {
            return Err(outside_roots(field, p));
        }
        Ok(vec![p.to_path_buf()])
    } else {
        Ok(roots.roots().iter().map(|r| r.join(p)).collect())
    }
}

fn resolve_input_path(s: &str, roots: &MediaRoots) -> Result<PathBuf, FieldError> {
    const F: &str = "input.path";
    let p = check_path_syntax(F, s)?;
    let not_found = || {
        FieldError::new(
            codes::FILE_NOT_FOUND,
            Some(F),
            format!("input file {s:?} does not exist in any media root"),
        )
    };
    let found = candidates(F, p, roots)?
        .into_iter()
        .find(|c| std::fs::metadata(c).is_ok())
        .ok_or_else(not_found)?;
    let canon = std::fs::canonicalize(&found).map_err(|_| not_found())?;
    if !roots.contains(&canon) {
        return Err(outside_roots(F, &canon));
    }
    let meta = std::fs::metadata(&canon).map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(invalid(F, format!("input {s:?} is not a regular file")));
    }
    Ok(canon)
}

fn resolve_output_path(
    s: &str,
    codec: Codec,
    overwrite: bool,
    roots: &MediaRoots,
) -> Result<PathBuf, FieldError> {
    const F: &str = "output.path";
    let p = check_path_syntax(F, s)?;
    let name = p
        .file_name()
        .ok_or_else(|| invalid(F, format!("`{F}` must name a file")))?;
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let (_, allowed) = container_for_extension(ext).ok_or_else(|| {
        invalid(
            F,
            format!("`{F}` must end in .mp4, .mkv, .mov, .webm, .ts or .flv"),
        )
    })?;
    if !allowed.contains(&codec) {
        return Err(invalid(
            F,
            format!(
                "a .{ext} file cannot hold codec {} (allowed: {})",
                codec.as_str(),
                allowed
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let parent = p.parent().unwrap_or_else(|| Path::new(""));
    let not_found = || {
        FieldError::new(
            codes::FILE_NOT_FOUND,
            Some(F),
            format!("the directory of output {s:?} does not exist in any media root"),
        )
    };
    let dir = candidates(F, parent, roots)?
        .into_iter()
        .find(|c| std::fs::metadata(c).is_ok_and(|m| m.is_dir()))
        .ok_or_else(not_found)?;
    let canon_dir = std::fs::canonicalize(&dir).map_err(|_| not_found())?;
    if !roots.contains(&canon_dir) {
        return Err(outside_roots(F, &canon_dir));
    }
    let target = canon_dir.join(name);
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_symlink() => {
            Err(invalid(F, format!("output {s:?} exists and is a symlink")))
        }
        Ok(m) if !m.is_file() => Err(invalid(
            F,
            format!("output {s:?} exists and is not a regular file"),
        )),
        Ok(_) if overwrite => Ok(target),
        Ok(_) => Err(FieldError::new(
            codes::OUTPUT_EXISTS,
            Some(F),
            format!("output {s:?} already exists; set \"overwrite\": true to replace it"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(target),
        Err(e) => Err(invalid(F, format!("output {s:?} cannot be checked: {e}"))),
    }
}

// ---------------------------------------------------------------------------
// The request body as a JSON Schema, for the OpenAPI document.

/// The body of `POST /v1/jobs` in the OpenAPI document (`JobRequest`).
///
/// Written by hand, like the parser it describes, and from the same
/// constants. It holds every rule about a single field (types, ranges,
/// allowed values, `null` meaning "absent", no unknown fields) and that a
/// request names a scenario or all of `width`, `height`, `fps`, `codec`. The
/// rules *between* fields are in its description and only the parser checks
/// them, so a body the schema allows may still be refused with a 400 naming
/// the field (a preset of another codec, a file that does not exist); a body
/// the schema refuses is always refused.
pub struct JobRequest;

impl utoipa::ToSchema for JobRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("JobRequest")
    }
}

impl utoipa::PartialSchema for JobRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        request_schema::job_request()
    }
}

/// The schema of a `bitrate` value (an integer of kbit/s or a string such as
/// `"2500k"`), for other request shapes that take one (the Go-seed alias).
pub fn bitrate_schema() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::Schema::AnyOf(request_schema::bitrate().build())
}

pub(crate) mod request_schema {
    use serde_json::Value;
    use utoipa::openapi::schema::{
        AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder,
        OneOfBuilder, SchemaType, Type,
    };
    use utoipa::openapi::RefOr;
    use utoipa::openapi::Schema;

    use super::*;

    const CROSS_FIELD_RULES: &str = "A job to run. Name a `scenario` (a preset), or give \
        all of `width`, `height`, `fps` and `codec`; the other encode fields override the \
        preset. `null` is the same as leaving a field out. The codec (the one named, else \
        the scenario's) decides the allowed presets (x264/x265 `ultrafast`…`veryslow`, vp9 \
        `realtime`/`good`/`best`, SVT-AV1 `0`…`13`), the smallest frame (av1: 64), the file \
        extensions (`mp4`, `mkv`: all; `mov`, `ts`: h264, h265; `webm`: vp9, av1; `flv`: \
        h264) and whether `rtmp` output is possible (h264 only). Rules the schema does not \
        hold, checked when the job is submitted (400 naming the field): `bitrate` is 1 to \
        200000 kbit/s also when written as a string; paths hold no control characters or \
        `..` and must resolve (symlinks followed) inside a media root; an input must be an \
        existing regular file, an output's directory must exist and the output must not be \
        the input; an RTMP URL names a host and holds no whitespace; no field may appear \
        twice. Integer fields take JSON integers only: `640`, not `640.0` or `6.4e2` (JSON \
        Schema cannot tell these apart, so the schema's `integer` allows them).";

    fn types(t: Type, nullable: bool) -> SchemaType {
        if nullable {
            SchemaType::from_iter([t, Type::Null])
        } else {
            SchemaType::new(t)
        }
    }

    /// An integer in `lo..=hi` (or `null`).
    fn integer(lo: u64, hi: u64, nullable: bool) -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(types(Type::Integer, nullable))
            .minimum(Some(lo))
            .maximum(Some(hi))
    }

    /// One of `values` (or `null`).
    fn one_of_strings<S: Into<String>>(
        values: impl IntoIterator<Item = S>,
        nullable: bool,
    ) -> ObjectBuilder {
        let mut v: Vec<Value> = values
            .into_iter()
            .map(|s| Value::String(s.into()))
            .collect();
        if nullable {
            v.push(Value::Null);
        }
        ObjectBuilder::new()
            .schema_type(types(Type::String, nullable))
            .enum_values(Some(v))
    }

    /// A `labels` map (or `null`).
    pub(crate) fn labels() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(types(Type::Object, true))
            .max_properties(Some(MAX_LABELS))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[a-z0-9][a-z0-9_.-]{0,62}$")),
            ))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(MAX_LABEL_VALUE_LEN)),
            ))
            .description(Some(
                "The user's labels: at most 16; keys 1-63 of [a-z0-9_.-] starting \
                 with a letter or digit (`experiment` is reserved); values up to \
                 128 characters, no control characters. Filter with \
                 `GET /v1/jobs?label=k=v`.",
            ))
    }

    fn null() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(Type::Null)
    }

    /// A path as [`check_path_syntax`] takes it (the media roots are checked
    /// when the job is submitted).
    fn path() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_PATH_LEN))
    }

    /// An object with no other fields than those given.
    fn closed() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    }

    fn input() -> OneOfBuilder {
        OneOfBuilder::new()
            .description(Some("Where the frames come from."))
            .item(
                closed()
                    .title(Some("testsrc"))
                    .description(Some(
                        "FFmpeg's synthetic test pattern, for `duration_s` seconds.",
                    ))
                    .property("type", one_of_strings(["testsrc"], false))
                    .required("type")
                    .property(
                        "duration_s",
                        ObjectBuilder::new()
                            .schema_type(Type::Number)
                            .exclusive_minimum(Some(0.0))
                            .maximum(Some(MAX_TESTSRC_DURATION_S)),
                    )
                    .required("duration_s")
                    .property("path", null()),
            )
            .item(
                closed()
                    .title(Some("file"))
                    .description(Some(
                        "A media file inside a media root (relative paths are tried \
                         against each root in order).",
                    ))
                    .property("type", one_of_strings(["file"], false))
                    .required("type")
                    .property("path", path())
                    .required("path")
                    .property("duration_s", null()),
            )
    }

    /// A path whose file name ends in one of `exts` (any case). Trailing
    /// `/` and `.` components are not part of the name.
    pub(super) fn extension_pattern(exts: &[&str]) -> String {
        let alternatives = exts
            .iter()
            .map(|e| {
                e.chars()
                    .map(|c| match c.is_ascii_alphabetic() {
                        true => format!("[{}{}]", c, c.to_ascii_uppercase()),
                        false => c.to_string(),
                    })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("|");
        format!(r"\.(?:{alternatives})[/.]*$")
    }

    /// The output extensions whose container can hold `codec`.
    pub(super) fn extensions_for(codec: Codec) -> Vec<&'static str> {
        OUTPUT_EXTENSIONS
            .into_iter()
            .filter(|e| container_for_extension(e).is_some_and(|(_, cs)| cs.contains(&codec)))
            .collect()
    }

    /// The output types that can carry `codec`.
    pub(super) fn output_types_for(codec: Codec) -> Vec<&'static str> {
        let mut v = vec!["null", "file"];
        if rtmp_takes(codec) {
            v.push("rtmp");
        }
        v
    }

    /// A schema with no `type` of its own (a constraint on whatever is there).
    fn constraint() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(SchemaType::AnyValue)
    }

    fn output() -> OneOfBuilder {
        OneOfBuilder::new()
            .description(Some("Where the encoded stream goes."))
            .item(
                closed()
                    .title(Some("null"))
                    .description(Some("Encode and discard."))
                    .property("type", one_of_strings(["null"], false))
                    .required("type")
                    .property("path", null())
                    .property("url", null()),
            )
            .item(
                closed()
                    .title(Some("file"))
                    .description(Some(
                        "A file inside a media root; the container follows the extension.",
                    ))
                    .property("type", one_of_strings(["file"], false))
                    .required("type")
                    // The file name's extension (trailing `/` and `.` components
                    // are not part of the name).
                    .property(
                        "path",
                        path().pattern(Some(extension_pattern(&OUTPUT_EXTENSIONS))),
                    )
                    .required("path")
                    .property("url", null()),
            )
            .item(
                closed()
                    .title(Some("rtmp"))
                    .description(Some(
                        "An `rtmp://` or `rtmps://` URL naming a host, without whitespace \
                         or control characters (FLV, codec h264).",
                    ))
                    .property("type", one_of_strings(["rtmp"], false))
                    .required("type")
                    .property(
                        "url",
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .max_length(Some(MAX_URL_LEN))
                            .pattern(Some("^[rR][tT][mM][pP][sS]?://")),
                    )
                    .required("url")
                    .property("path", null()),
            )
    }

    fn resource_limits() -> ObjectBuilder {
        let (cpu_lo, cpu_hi) = MAX_CPU_PERCENT_RANGE;
        closed()
            .schema_type(types(Type::Object, true))
            .description(Some(
                "Per-job limits; each one absent or `null` means no limit.",
            ))
            .property(
                "max_cpu_percent",
                integer(cpu_lo.into(), cpu_hi.into(), true)
                    .description(Some("CPU quota in percent of one core (cgroup).")),
            )
            .property(
                "max_memory_mb",
                integer(MAX_MEMORY_MB_RANGE.0, MAX_MEMORY_MB_RANGE.1, true)
                    .description(Some("Memory (and swap) limit in MiB (cgroup).")),
            )
            .property(
                "timeout_s",
                integer(TIMEOUT_S_RANGE.0, TIMEOUT_S_RANGE.1, true)
                    .description(Some("Wall-clock limit; the job ends `timed_out`.")),
            )
            .property(
                "stall_timeout_s",
                integer(STALL_TIMEOUT_S_RANGE.0, STALL_TIMEOUT_S_RANGE.1, true).description(Some(
                    "No progress this long: killed and retried as a transient failure.",
                )),
            )
    }

    fn quality() -> ObjectBuilder {
        closed()
            .schema_type(types(Type::Object, true))
            .description(Some(
                "Quality metrics to measure after a successful encode, against the \
                 reference (the input file, or the regenerated testsrc). Not with an \
                 `rtmp` output.",
            ))
            .property(
                "metrics",
                ArrayBuilder::new()
                    .items(one_of_strings(
                        QualityMetric::ALL.map(QualityMetric::as_str),
                        false,
                    ))
                    .min_items(Some(1))
                    .max_items(Some(QualityMetric::ALL.len()))
                    .unique_items(true),
            )
            .required("metrics")
    }

    pub(super) fn bitrate() -> AnyOfBuilder {
        let (lo, hi) = BITRATE_KBPS_RANGE;
        AnyOfBuilder::new()
            .description(Some(
                "Video bitrate: whole kbit/s as an integer, or a string such as \
                 `\"2500k\"`, `\"6M\"` or `\"2.5M\"`. Absent: a default for the codec, size and rate.",
            ))
            .item(integer(lo.into(), hi.into(), false))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^[0-9]{1,9}(?:\.[0-9]{0,9})?[kKmM]$")),
            )
            .item(null())
    }

    fn fields() -> ObjectBuilder {
        let presets: Vec<&str> = {
            let mut v: Vec<&str> = Vec::new();
            for c in encoders::ENCODERS {
                for p in c.presets() {
                    if !v.contains(&p) {
                        v.push(p);
                    }
                }
            }
            v
        };
        let dim = |(lo, hi): (u32, u32)| integer(lo.into(), hi.into(), true).multiple_of(Some(2));
        closed()
            .property(
                "scenario",
                one_of_strings(scenario_names(), true)
                    .description(Some("A preset: resolution and rate, then codec.")),
            )
            .property("input", input())
            .required("input")
            .property("output", output())
            .required("output")
            .property(
                "priority",
                one_of_strings(Priority::ALL.map(Priority::as_str), true)
                    .description(Some("Strict priority, FIFO within one; absent: `medium`.")),
            )
            .property(
                "width",
                dim(WIDTH_RANGE).description(Some("Frame width in pixels, even.")),
            )
            .property(
                "height",
                dim(HEIGHT_RANGE).description(Some("Frame height in pixels, even.")),
            )
            .property(
                "fps",
                integer(FPS_RANGE.0.into(), FPS_RANGE.1.into(), true)
                    .description(Some("Frames per second.")),
            )
            .property(
                "codec",
                one_of_strings(Codec::ALL.map(Codec::as_str), true).description(Some(
                    "h264 (libx264), h265 (libx265), vp9 (libvpx-vp9), av1 (libsvtav1).",
                )),
            )
            .property("bitrate", bitrate())
            .property(
                "preset",
                one_of_strings(presets, true)
                    .description(Some("The encoder's speed preset (one of the codec's).")),
            )
            .property(
                "encoder",
                one_of_strings(encoders::ENCODERS.map(|e| e.name), true).description(Some(
                    "An FFmpeg encoder by name, used as it is: software (libx264, libx265, \
                     libvpx-vp9, libsvtav1), NVENC, QSV or VAAPI. It must encode the job's \
                     codec. The job \
                     runs only on a node where it passed its test encode.",
                )),
            )
            .property(
                "hardware",
                one_of_strings(["required", "preferred", "none"], true).description(Some(
                    "Without `encoder`: `required`, a hardware encoder for the codec that a \
                     node probed as working (the job waits for one); `preferred`, one where \
                     the node has it, else software; `none` (the default), software.",
                )),
            )
            .property(
                "crf",
                integer(0, 51, true).description(Some(
                    "Constant quality instead of `bitrate` (not both): `-crf` in software, \
                     NVENC `-cq`, QSV `-global_quality`, VAAPI `-qp`. The range is the \
                     encoder's (x264/x265 0–51, vp9/SVT-AV1 0–63, NVENC/QSV 1–51, VAAPI \
                     0–52, AV1 0–255), and with `hardware` the range every candidate takes; \
                     the schema gives x264's.",
                )),
            )
            .property(
                "pix_fmt",
                one_of_strings(encoders::PIX_FMTS, true).description(Some(
                    "The output pixel format; absent: yuv420p. No hardware H.264 encoder \
                     takes 10-bit.",
                )),
            )
            .property("resource_limits", resource_limits())
            .property("quality", quality())
            .property(
                "max_retries",
                integer(0, MAX_RETRIES.into(), true)
                    .description(Some("Extra attempts after transient failures; absent: 3.")),
            )
            .property("labels", labels())
            .property(
                "overwrite",
                ObjectBuilder::new()
                    .schema_type(types(Type::Boolean, true))
                    .description(Some(
                        "A file output may replace an existing regular file; absent: \
                         false (an existing output is refused). Only with a file output.",
                    )),
            )
    }

    /// A scenario, or every encode field without one.
    fn scenario_or_encode() -> AnyOfBuilder {
        let mut explicit = ObjectBuilder::new();
        for (field, t) in [
            ("width", Type::Integer),
            ("height", Type::Integer),
            ("fps", Type::Integer),
            ("codec", Type::String),
        ] {
            explicit = explicit
                .property(field, ObjectBuilder::new().schema_type(t))
                .required(field);
        }
        AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .title(Some("with a scenario"))
                    .property("scenario", ObjectBuilder::new().schema_type(Type::String))
                    .required("scenario"),
            )
            .item(explicit.title(Some("without a scenario")))
    }

    /// What the job's codec (the one named, else the scenario's) allows:
    /// its presets, its minimum frame size, the containers and outputs that
    /// can carry it. One branch per codec and per way of naming it.
    fn codec_rules() -> AnyOfBuilder {
        let mut any = AnyOfBuilder::new();
        for codec in Codec::ALL {
            let min_dim: u32 = if codec == Codec::Av1 {
                AV1_MIN_DIMENSION
            } else {
                WIDTH_RANGE.0.min(HEIGHT_RANGE.0)
            };
            let rules = |b: ObjectBuilder| {
                b.property(
                    "preset",
                    one_of_strings(super::presets(codec).iter().copied(), true),
                )
                .property("width", constraint().minimum(Some(min_dim)))
                .property("height", constraint().minimum(Some(min_dim)))
                .property(
                    "output",
                    constraint()
                        .property("type", one_of_strings(output_types_for(codec), false))
                        .property(
                            "path",
                            constraint().pattern(Some(extension_pattern(&extensions_for(codec)))),
                        ),
                )
            };
            let scenarios: Vec<String> = scenario_names()
                .into_iter()
                .filter(|n| scenario(n).is_some_and(|p| p.codec == codec))
                .collect();
            any = any
                .item(rules(
                    constraint()
                        .title(Some(format!("codec {}", codec.as_str())))
                        .property("codec", one_of_strings([codec.as_str()], false))
                        .required("codec"),
                ))
                .item(rules(
                    constraint()
                        .title(Some(format!("a {} scenario", codec.as_str())))
                        .property("codec", null())
                        .property("scenario", one_of_strings(scenarios, false))
                        .required("scenario"),
                ));
            // An encoder with presets of its own (NVENC `p1`…`p7`, QSV's).
            for e in encoders::ENCODERS.iter().filter(|e| e.codec == codec) {
                let presets = e.presets();
                if presets.len() == super::presets(codec).len() {
                    continue;
                }
                any = any.item(
                    rules(
                        constraint()
                            .title(Some(format!("encoder {}", e.name)))
                            .property("encoder", one_of_strings([e.name], false))
                            .required("encoder"),
                    )
                    .property("preset", one_of_strings(presets, true)),
                );
            }
        }
        any
    }

    pub(super) fn job_request() -> RefOr<Schema> {
        AllOfBuilder::new()
            .description(Some(CROSS_FIELD_RULES))
            .item(fields())
            .item(scenario_or_encode())
            .item(codec_rules())
            .into()
    }

    /// The schema and the parser agree: the same field names, and each
    /// bound, allowed value and `null` in the schema is what the parser
    /// does at that edge.
    #[cfg(test)]
    mod tests {
        use std::collections::BTreeSet;

        use serde_json::json;

        use super::*;

        fn schema() -> Value {
            serde_json::to_value(job_request()).expect("the schema serialises")
        }

        fn parse(v: &Value) -> Result<JobSpec, FieldError> {
            let roots = MediaRoots::new(&[]).expect("no roots");
            parse_job_request(v.to_string().as_bytes(), &roots)
        }

        /// A scenario and the encode fields too, so that either may be `null`.
        fn base() -> Value {
            json!({
                "scenario": "720p30-h264",
                "width": 1280, "height": 720, "fps": 30, "codec": "h264",
                "input": {"type": "testsrc", "duration_s": 1},
                "output": {"type": "null"}
            })
        }

        /// `base()` with `value` at the dotted `field`.
        fn with(field: &str, value: Value) -> Value {
            let mut v = base();
            let mut at = &mut v;
            let mut parts = field.split('.').peekable();
            while let Some(p) = parts.next() {
                if parts.peek().is_some() {
                    if !at[p].is_object() {
                        at[p] = json!({});
                    }
                    at = &mut at[p];
                } else {
                    at[p] = value.clone();
                }
            }
            v
        }

        #[track_caller]
        fn accepted(v: &Value) {
            if let Err(e) = parse(v) {
                panic!("{v} refused: {e:?}");
            }
        }

        #[track_caller]
        fn refused_naming(v: &Value, field: &str) {
            match parse(v) {
                Ok(_) => panic!("{v} accepted"),
                Err(e) => assert_eq!(e.field.as_deref(), Some(field), "{v}: {e:?}"),
            }
        }

        /// The field names serde accepts for `T`, from its unknown-field message.
        fn serde_fields<T: serde::de::DeserializeOwned>() -> BTreeSet<String> {
            let message = match serde_json::from_str::<T>(r#"{"\u0000": 0}"#) {
                Ok(_) => panic!("an unknown field was accepted"),
                Err(e) => e.to_string(),
            };
            let (_, expected) = message
                .split_once(", expected ")
                .unwrap_or_else(|| panic!("no field list in {message:?}"));
            // `a`, `b` or `c`: the names are every other backticked part.
            expected
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        }

        fn keys(object: &Value) -> BTreeSet<String> {
            object["properties"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        }

        fn variant_keys(one_of: &Value) -> BTreeSet<String> {
            one_of["oneOf"]
                .as_array()
                .expect("oneOf")
                .iter()
                .flat_map(keys)
                .collect()
        }

        #[test]
        fn the_schema_names_exactly_the_fields_the_parser_takes() {
            let s = schema();
            let top = &s["allOf"][0];
            assert_eq!(keys(top), serde_fields::<RawRequest>());
            assert_eq!(top["additionalProperties"], false);
            let p = &top["properties"];
            assert_eq!(variant_keys(&p["input"]), serde_fields::<RawInput>());
            assert_eq!(variant_keys(&p["output"]), serde_fields::<RawOutput>());
            assert_eq!(keys(&p["resource_limits"]), serde_fields::<RawLimits>());
            assert_eq!(keys(&p["quality"]), serde_fields::<RawQuality>());
            // Not a vacuous comparison.
            assert!(serde_fields::<RawRequest>().contains("max_retries"));
        }

        #[test]
        fn each_integer_bound_is_the_parsers_edge() {
            let s = schema();
            let p = &s["allOf"][0]["properties"];
            let mut fields: Vec<(String, Value)> = Vec::new();
            for (name, f) in p.as_object().expect("properties") {
                fields.push((name.clone(), f.clone()));
            }
            for (name, f) in p["resource_limits"]["properties"]
                .as_object()
                .expect("limits")
            {
                fields.push((format!("resource_limits.{name}"), f.clone()));
            }
            fields.push(("bitrate".into(), p["bitrate"]["anyOf"][0].clone()));
            let mut checked = 0;
            for (name, f) in fields {
                let (Some(lo), Some(hi)) = (f["minimum"].as_u64(), f["maximum"].as_u64()) else {
                    continue;
                };
                accepted(&with(&name, json!(lo)));
                accepted(&with(&name, json!(hi)));
                refused_naming(&with(&name, json!(hi + 1)), &name);
                if lo > 0 {
                    refused_naming(&with(&name, json!(lo - 1)), &name);
                }
                if f["multipleOf"] == 2 {
                    refused_naming(&with(&name, json!(lo + 1)), &name);
                }
                checked += 1;
            }
            // width, height, fps, crf, max_retries, bitrate, four limits.
            assert_eq!(checked, 10);
        }

        #[test]
        fn each_allowed_value_is_accepted_and_others_refused() {
            let s = schema();
            let p = &s["allOf"][0]["properties"];
            for name in ["scenario", "priority", "codec", "hardware", "pix_fmt"] {
                let values = p[name]["enum"].as_array().expect("enum");
                for v in values {
                    accepted(&with(name, v.clone()));
                }
                refused_naming(&with(name, json!("nope")), name);
            }
            // An encoder is allowed with its codec.
            for e in encoders::ENCODERS {
                let mut body = with("encoder", json!(e.name));
                body["codec"] = json!(e.codec.as_str());
                accepted(&body);
            }
            let names: Vec<Value> = encoders::ENCODERS.map(|e| json!(e.name)).to_vec();
            assert_eq!(
                p["encoder"]["enum"].as_array().map(|a| &a[..a.len() - 1]),
                Some(&names[..])
            );
            refused_naming(&with("encoder", json!("nope")), "encoder");
            // A preset is allowed for one codec or encoder or another.
            for v in p["preset"]["enum"].as_array().expect("enum") {
                let ok = encoders::ENCODERS.iter().any(|e| {
                    let mut body = with("preset", v.clone());
                    body["codec"] = json!(e.codec.as_str());
                    body["encoder"] = json!(e.name);
                    parse(&body).is_ok()
                });
                assert!(ok, "preset {v} fits no encoder");
            }
            refused_naming(&with("preset", json!("nope")), "preset");
        }

        #[test]
        fn null_is_absent_wherever_the_schema_allows_it() {
            let s = schema();
            let p = &s["allOf"][0]["properties"];
            let nullable = |f: &Value| {
                f["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("null")))
                    || f["anyOf"]
                        .as_array()
                        .is_some_and(|a| a.contains(&json!({"type": "null"})))
            };
            let mut n = 0;
            for (name, f) in p.as_object().expect("properties") {
                if nullable(f) {
                    accepted(&with(name, Value::Null));
                    n += 1;
                } else {
                    refused_naming(&with(name, Value::Null), name);
                }
            }
            for (name, f) in p["resource_limits"]["properties"]
                .as_object()
                .expect("limits")
            {
                assert!(nullable(f), "{name}");
                accepted(&with(&format!("resource_limits.{name}"), Value::Null));
            }
            assert!(n >= 10, "{n}");
            // The variants' `null` fields.
            for (field, body) in [
                (
                    "input",
                    json!({"type": "testsrc", "duration_s": 1, "path": null}),
                ),
                ("output", json!({"type": "null", "path": null, "url": null})),
                (
                    "output",
                    json!({"type": "rtmp", "url": "RTMPS://h/app", "path": null}),
                ),
            ] {
                accepted(&with(field, body));
            }
        }

        /// The branch of the codec rules for `codec` named as `codec`, and
        /// the one for a scenario of that codec.
        fn codec_branches(s: &Value, codec: Codec) -> (Value, Value) {
            let branches = s["allOf"][2]["anyOf"].as_array().expect("codec rules");
            let find = |title: String| {
                branches
                    .iter()
                    .find(|b| b["title"] == title.as_str())
                    .cloned()
                    .unwrap_or_else(|| panic!("no branch {title}"))
            };
            (
                find(format!("codec {}", codec.as_str())),
                find(format!("a {} scenario", codec.as_str())),
            )
        }

        #[test]
        fn the_codec_rules_are_the_parsers() {
            let s = schema();
            let all_presets = s["allOf"][0]["properties"]["preset"]["enum"]
                .as_array()
                .expect("presets")
                .clone();
            let media = tempfile::tempdir().expect("media root");
            let roots = MediaRoots::new(&[media.path().to_path_buf()]).expect("roots");
            let mut scenarios = BTreeSet::new();
            for codec in Codec::ALL {
                let (named, by_scenario) = codec_branches(&s, codec);
                for b in [&named, &by_scenario] {
                    assert_eq!(b["properties"]["preset"], named["properties"]["preset"]);
                }
                let with_codec = |field: &str, v: Value| {
                    let mut body = with(field, v);
                    body["codec"] = json!(codec.as_str());
                    body
                };
                // Presets.
                let allowed = named["properties"]["preset"]["enum"]
                    .as_array()
                    .expect("enum")
                    .clone();
                for p in &all_presets {
                    let ok = parse(&with_codec("preset", p.clone())).is_ok();
                    assert_eq!(ok, allowed.contains(p), "{codec:?} preset {p}");
                }
                // The smallest frame.
                let min = named["properties"]["width"]["minimum"]
                    .as_u64()
                    .expect("minimum");
                assert_eq!(named["properties"]["height"]["minimum"], min);
                for dim in ["width", "height"] {
                    accepted(&with_codec(dim, json!(min)));
                    if min - 2 >= 16 {
                        refused_naming(&with_codec(dim, json!(min - 2)), dim);
                    }
                }
                // Output types and file extensions.
                let output = &named["properties"]["output"]["properties"];
                let types = output["type"]["enum"].as_array().expect("types").clone();
                let rtmp = with_codec("output", json!({"type": "rtmp", "url": "rtmp://h/a"}));
                assert_eq!(
                    parse(&rtmp).is_ok(),
                    types.contains(&json!("rtmp")),
                    "{codec:?}"
                );
                let exts = extensions_for(codec);
                assert_eq!(output["path"]["pattern"], extension_pattern(&exts));
                for e in OUTPUT_EXTENSIONS {
                    let body =
                        with_codec("output", json!({"type": "file", "path": format!("o.{e}")}));
                    let ok = parse_job_request(body.to_string().as_bytes(), &roots).is_ok();
                    assert_eq!(ok, exts.contains(&e), "{codec:?} .{e}");
                }
                // The scenarios of this codec.
                for n in by_scenario["properties"]["scenario"]["enum"]
                    .as_array()
                    .expect("scenarios")
                {
                    let n = n.as_str().expect("a name");
                    assert_eq!(scenario(n).map(|p| p.codec), Some(codec), "{n}");
                    scenarios.insert(n.to_string());
                }
            }
            assert_eq!(scenarios, scenario_names().into_iter().collect());
        }

        #[test]
        fn the_output_extensions_are_the_containers_known() {
            for e in OUTPUT_EXTENSIONS {
                assert!(container_for_extension(e).is_some(), "{e}");
            }
            for e in ["avi", "mp3", "mpg", ""] {
                assert!(container_for_extension(e).is_none(), "{e}");
            }
        }

        #[test]
        fn the_input_duration_bounds_are_the_parsers() {
            let s = schema();
            let d = &s["allOf"][0]["properties"]["input"]["oneOf"][0]["properties"]["duration_s"];
            let hi = d["maximum"].as_f64().expect("maximum");
            assert_eq!(d["exclusiveMinimum"], 0.0);
            let input = |v: f64| with("input", json!({"type": "testsrc", "duration_s": v}));
            accepted(&input(hi));
            accepted(&input(1e-6));
            refused_naming(&input(0.0), "input.duration_s");
            refused_naming(&input(hi + 1.0), "input.duration_s");
        }

        #[test]
        fn a_scenario_or_all_four_encode_fields() {
            let encode = ["width", "height", "fps", "codec"];
            let s = schema();
            let branches = s["allOf"][1]["anyOf"].as_array().expect("anyOf").clone();
            assert_eq!(branches[0]["required"], json!(["scenario"]));
            assert_eq!(branches[1]["required"], json!(encode));
            let mut body = base();
            body["scenario"] = Value::Null;
            accepted(&body);
            for f in encode {
                let mut b = body.clone();
                b[f] = Value::Null;
                refused_naming(&b, f);
            }
            for f in ["input", "output"] {
                let mut b = base();
                b.as_object_mut().expect("object").remove(f);
                refused_naming(&b, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    // --- scenarios -------------------------------------------------------

    #[test]
    fn labels_are_parsed_and_bounded() {
        let spec = parse(&with(
            base(),
            "labels",
            json!({"team": "video", "run.id": "7-a_b", "9x": ""}),
        ))
        .expect("valid labels");
        assert_eq!(spec.labels.len(), 3);
        assert_eq!(spec.labels["team"], "video");
        assert!(parse(&with(base(), "labels", Value::Null))
            .expect("null")
            .labels
            .is_empty());
        assert!(parse(&base()).expect("absent").labels.is_empty());

        let refused = |labels: Value, field: &str| {
            assert_err(
                parse(&with(base(), "labels", labels)),
                codes::INVALID_FIELD,
                Some(field),
            );
        };
        refused(json!({"Team": "x"}), "labels.Team");
        refused(json!({"-a": "x"}), "labels.-a");
        refused(json!({"a b": "x"}), "labels.a b");
        refused(json!({"experiment": "x"}), "labels.experiment");
        refused(json!({"a/b": "x"}), "labels.a/b");
        let long_key = "k".repeat(64);
        refused(
            json!({ long_key.clone(): "x" }),
            &format!("labels.{long_key}"),
        );
        let ok_key = "k".repeat(63);
        parse(&with(base(), "labels", json!({ ok_key: "x".repeat(128) }))).expect("at the bounds");
        refused(json!({"a": "x".repeat(129)}), "labels.a");
        refused(json!({"a": "line\nbreak"}), "labels.a");
        refused(json!({"a": "\u{7f}"}), "labels.a");
        let many: serde_json::Map<String, Value> =
            (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        refused(Value::Object(many.clone()), "labels");
        let sixteen: serde_json::Map<String, Value> = many.into_iter().take(16).collect();
        parse(&with(base(), "labels", Value::Object(sixteen))).expect("16 labels");
        // Values must be strings, named at the innermost field.
        refused(json!({"a": 1}), "labels.a");
        refused(json!(["a"]), "labels");
    }

    proptest! {
        #[test]
        fn label_keys_accepted_are_exactly_the_documented_set(key in "[a-zA-Z0-9_./ -]{0,70}") {
            let documented = (1..=63).contains(&key.len())
                && key.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
                && key != "experiment";
            let r = parse(&with(base(), "labels", json!({ key.clone(): "v" })));
            prop_assert_eq!(r.is_ok(), documented, "{:?}: {:?}", key, r);
        }
    }

    #[test]
    fn every_scenario_name_resolves() {
        let names = scenario_names();
        assert_eq!(names.len(), 20);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 20);
        for name in &names {
            let p = scenario(name).unwrap_or_else(|| panic!("{name} does not resolve"));
            assert!(name.ends_with(p.codec.as_str()), "{name}: {p:?}");
            assert!(presets(p.codec).contains(&p.preset.as_str()));
            assert!(p.width % 2 == 0 && p.height % 2 == 0);
            assert!(p.bitrate_kbps >= 500 && p.bitrate_kbps <= 20_000, "{name}");
            // And a request naming only the scenario gets exactly these params.
            let spec = parse(&with(base(), "scenario", json!(name))).expect("valid");
            assert_eq!(spec.encode, p);
            assert_eq!(spec.scenario.as_deref(), Some(name.as_str()));
        }
        assert!(names.contains(&"1080p60-h265".to_string()));
    }

    #[test]
    fn scenario_shapes_and_bitrates_are_sensible() {
        let p = scenario("1080p60-h265").expect("exists");
        assert_eq!(
            (p.width, p.height, p.fps, p.codec),
            (1920, 1080, 60, Codec::H265)
        );
        assert_eq!(
            scenario("480p30-vp9").map(|p| (p.width, p.height)),
            Some((854, 480))
        );
        assert_eq!(
            scenario("2160p30-av1").map(|p| (p.width, p.height)),
            Some((3840, 2160))
        );
        assert_eq!(scenario("1080p30-h264").map(|p| p.bitrate_kbps), Some(5000));
        let kbps = |n: &str| scenario(n).map(|p| p.bitrate_kbps).unwrap_or(0);
        for res in ["480p30", "720p30", "1080p30", "1080p60", "2160p30"] {
            let [h264, h265, vp9, av1] =
                ["h264", "h265", "vp9", "av1"].map(|c| kbps(&format!("{res}-{c}")));
            assert!(av1 < h265 && h265 < vp9 && vp9 < h264, "{res}");
        }
        for c in ["h264", "h265", "vp9", "av1"] {
            let seq = ["480p30", "720p30", "1080p30", "1080p60", "2160p30"]
                .map(|r| kbps(&format!("{r}-{c}")));
            assert!(seq.windows(2).all(|w| w[0] < w[1]), "{c}: {seq:?}");
        }
        assert_eq!(
            scenario("1080p60-vp9").map(|p| p.preset),
            Some("realtime".into())
        );
        assert_eq!(scenario("1080p60-av1").map(|p| p.preset), Some("10".into()));
        assert_eq!(
            scenario("1080p60-h264").map(|p| p.preset),
            Some("veryfast".into())
        );
    }

    #[test]
    fn unknown_scenarios() {
        for n in [
            "",
            "1080p60",
            "1080p60-h266",
            "1080p61-h264",
            "-h264",
            "1080p60-h264-x",
        ] {
            assert_eq!(scenario(n), None, "{n}");
        }
        assert_err(
            parse(&with(base(), "scenario", json!("4320p30-h264"))),
            codes::UNKNOWN_SCENARIO,
            Some("scenario"),
        );
        assert_err(
            parse(&with(base(), "scenario", json!(7))),
            codes::INVALID_FIELD,
            Some("scenario"),
        );
    }

    #[test]
    fn default_bitrate_outside_scenarios_scales() {
        let b = |c, w, h, f| default_bitrate_kbps(c, w, h, f);
        assert!(b(Codec::H264, 640, 360, 30) < b(Codec::H264, 1280, 720, 30));
        assert!(b(Codec::H264, 1920, 1080, 120) > b(Codec::H264, 1920, 1080, 60));
        assert!(b(Codec::Av1, 1000, 1000, 25) < b(Codec::H264, 1000, 1000, 25));
        for c in Codec::ALL {
            for (w, h, f) in [(16, 16, 1), (7680, 4320, 240), (160, 90, 10)] {
                let k = b(c, w, h, f);
                assert!(
                    (100..=BITRATE_KBPS_RANGE.1).contains(&k),
                    "{c:?} {w}x{h}@{f}: {k}"
                );
            }
        }
    }

    // --- the documented example and overrides -----------------------------

    #[test]
    fn full_example_parses() {
        let body = br#"{"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":10},"output":{"type":"null"},"priority":"high",
 "width":1280,"height":720,"fps":30,"codec":"h264","bitrate":"3000k","preset":"veryfast",
 "resource_limits":{"max_cpu_percent":50,"max_memory_mb":512,"timeout_s":60,"stall_timeout_s":30},
 "max_retries":3}"#;
        let spec = parse_job_request(body, &no_roots()).expect("valid");
        assert_eq!(
            spec,
            JobSpec {
                scenario: Some("720p30-h264".into()),
                encode: EncodeParams::new(1280, 720, 30, Codec::H264, 3000, "veryfast".into()),
                input: Input::Testsrc { duration_s: 10.0 },
                output: Output::Null,
                priority: Priority::High,
                resource_limits: ResourceLimits {
                    max_cpu_percent: Some(50),
                    max_memory_mb: Some(512),
                    timeout_s: Some(60),
                    stall_timeout_s: Some(30),
                },
                max_retries: 3,
                overwrite: false,
                quality: None,
                labels: Default::default(),
                experiment: None,
            }
        );
    }

    #[test]
    fn defaults_apply() {
        let spec = parse(&base()).expect("valid");
        assert_eq!(spec.priority, Priority::Medium);
        assert_eq!(spec.max_retries, DEFAULT_MAX_RETRIES);
        assert_eq!(spec.resource_limits, ResourceLimits::default());
        // Explicit nulls mean "absent".
        let spec2 = parse(&with(
            with(base(), "priority", Value::Null),
            "width",
            Value::Null,
        ))
        .expect("valid");
        assert_eq!(spec2, spec);
    }

    #[test]
    fn explicit_fields_override_the_scenario() {
        let mut v = with(base(), "scenario", json!("1080p60-h265"));
        for (k, val) in [
            ("width", json!(1280)),
            ("height", json!(720)),
            ("fps", json!(25)),
            ("codec", json!("h264")),
            ("bitrate", json!("2500k")),
            ("preset", json!("fast")),
        ] {
            v[k] = val;
        }
        let e = parse(&v).expect("valid").encode;
        assert_eq!(
            e,
            EncodeParams::new(1280, 720, 25, Codec::H264, 2500, "fast".into())
        );
    }

    #[test]
    fn a_codec_override_takes_that_codecs_defaults() {
        let v = with(
            with(base(), "scenario", json!("1080p30-h264")),
            "codec",
            json!("vp9"),
        );
        let e = parse(&v).expect("valid").encode;
        assert_eq!(e.codec, Codec::Vp9);
        assert_eq!(e.preset, "realtime");
        assert_eq!(
            Some(e.bitrate_kbps),
            scenario("1080p30-vp9").map(|p| p.bitrate_kbps)
        );
        // A resolution override re-derives the default bitrate too.
        let v = with(
            with(base(), "scenario", json!("1080p30-h264")),
            "fps",
            json!(60),
        );
        let e = parse(&v).expect("valid").encode;
        assert_eq!(
            Some(e.bitrate_kbps),
            scenario("1080p60-h264").map(|p| p.bitrate_kbps)
        );
    }

    #[test]
    fn without_scenario_the_shape_is_required() {
        let full = json!({
            "input": {"type": "testsrc", "duration_s": 1},
            "output": {"type": "null"},
            "width": 640, "height": 360, "fps": 24, "codec": "av1"
        });
        let e = parse(&full).expect("valid").encode;
        assert_eq!(e.preset, "10");
        assert_eq!(
            e.bitrate_kbps,
            default_bitrate_kbps(Codec::Av1, 640, 360, 24)
        );
        for field in ["width", "height", "fps", "codec"] {
            let mut v = full.clone();
            v.as_object_mut().map(|o| o.remove(field));
            assert_err(parse(&v), codes::MISSING_FIELD, Some(field));
        }
    }

    // --- encode ranges ----------------------------------------------------

    #[test]
    fn dimension_rules() {
        for (field, ok, bad) in [
            (
                "width",
                vec![16, 854, 7680],
                vec![json!(14), json!(7682), json!(855), json!(0)],
            ),
            (
                "height",
                vec![16, 480, 4320],
                vec![json!(14), json!(4322), json!(481)],
            ),
        ] {
            for v in ok {
                let spec = parse(&with(base(), field, json!(v))).expect("valid");
                let got = if field == "width" {
                    spec.encode.width
                } else {
                    spec.encode.height
                };
                assert_eq!(got, v);
            }
            for v in bad.into_iter().chain([
                json!(-2),
                json!(640.0),
                json!("640"),
                json!(true),
                json!(1u64 << 40),
                json!([640]),
            ]) {
                assert_err(
                    parse(&with(base(), field, v)),
                    codes::INVALID_FIELD,
                    Some(field),
                );
            }
        }
    }

    #[test]
    fn fps_rules() {
        for ok in [1, 30, 240] {
            assert_eq!(
                parse(&with(base(), "fps", json!(ok))).map(|s| s.encode.fps),
                Ok(ok)
            );
        }
        for bad in [json!(0), json!(241), json!(29.97), json!(-30)] {
            assert_err(
                parse(&with(base(), "fps", bad)),
                codes::INVALID_FIELD,
                Some("fps"),
            );
        }
    }

    #[test]
    fn codec_rules() {
        for c in Codec::ALL {
            let v = with(base(), "codec", json!(c.as_str()));
            assert_eq!(parse(&v).map(|s| s.encode.codec), Ok(c));
        }
        for bad in [json!("H264"), json!("mpeg2"), json!(""), json!(264)] {
            assert_err(
                parse(&with(base(), "codec", bad)),
                codes::INVALID_FIELD,
                Some("codec"),
            );
        }
    }

    #[test]
    fn av1_needs_64_pixels() {
        let v = with(with(base(), "codec", json!("av1")), "width", json!(62));
        assert_err(parse(&v), codes::INVALID_FIELD, Some("width"));
        let v = with(with(base(), "codec", json!("av1")), "height", json!(32));
        assert_err(parse(&v), codes::INVALID_FIELD, Some("height"));
        let v = with(
            with(with(base(), "codec", json!("av1")), "height", json!(64)),
            "width",
            json!(64),
        );
        assert!(parse(&v).is_ok());
        // Other codecs go down to 16.
        let v = with(with(base(), "width", json!(16)), "height", json!(16));
        assert!(parse(&v).is_ok());
    }

    #[test]
    fn bitrate_rules() {
        for (val, kbps) in [
            (json!(3000), 3000),
            (json!(1), 1),
            (json!(200_000), 200_000),
            (json!("2500k"), 2500),
            (json!("2500K"), 2500),
            (json!("6M"), 6000),
            (json!("2.5M"), 2500),
            (json!("0.001M"), 1),
            (json!("200M"), 200_000),
            (json!("1500.000k"), 1500),
        ] {
            let got = parse(&with(base(), "bitrate", val.clone())).map(|s| s.encode.bitrate_kbps);
            assert_eq!(got, Ok(kbps), "{val}");
        }
        for bad in [
            json!(0),
            json!(200_001),
            json!(-5),
            json!(2500.5),
            json!(true),
            json!("2500"),
            json!("0k"),
            json!("1.5k"),
            json!("0.0015M"),
            json!("201M"),
            json!("k"),
            json!(".5M"),
            json!("-5k"),
            json!("+5k"),
            json!("5 k"),
            json!("1e3k"),
            json!("2500kb"),
            json!("99999999999999999999k"),
            json!(""),
            json!({"kbps": 5}),
        ] {
            assert_err(
                parse(&with(base(), "bitrate", bad)),
                codes::INVALID_FIELD,
                Some("bitrate"),
            );
        }
    }

    #[test]
    fn encoder_hardware_crf_and_pix_fmt() {
        let body = |fields: Value| {
            let mut v = base();
            for (k, x) in fields.as_object().expect("object") {
                v[k] = x.clone();
            }
            v
        };
        // Accepted, parsed into the encode.
        let s = parse(&body(
            json!({"codec": "h265", "encoder": "hevc_nvenc", "preset": "p5", "crf": 28}),
        ))
        .expect("nvenc");
        assert_eq!(s.encode.encoder.as_deref(), Some("hevc_nvenc"));
        assert_eq!((s.encode.preset.as_str(), s.encode.crf), ("p5", Some(28)));
        let s =
            parse(&body(json!({"hardware": "required", "pix_fmt": "yuv420p"}))).expect("required");
        assert_eq!(s.encode.hardware, HardwarePref::Required);
        assert_eq!(
            (s.encode.encoder, s.encode.pix_fmt.as_deref()),
            (None, Some("yuv420p"))
        );
        let s =
            parse(&body(json!({"hardware": "preferred", "preset": "slow"}))).expect("preferred");
        assert_eq!(
            (s.encode.hardware, s.encode.preset.as_str()),
            (HardwarePref::Preferred, "slow")
        );
        // The codec's software presets go with any encoder (mapped);
        // VAAPI has none of its own.
        parse(&body(
            json!({"encoder": "h264_vaapi", "preset": "veryslow"}),
        ))
        .expect("vaapi");
        parse(&body(
            json!({"encoder": "libx264", "hardware": "preferred"}),
        ))
        .expect("named wins");
        let s = parse(&body(json!({"hardware": "none"}))).expect("none");
        assert_eq!(
            (s.encode.hardware, s.encode.crf),
            (HardwarePref::None, None)
        );

        // Refused, naming the field.
        for (fields, field) in [
            (json!({"encoder": "h264_amf"}), "encoder"),
            (json!({"encoder": "hevc_nvenc"}), "encoder"), // the job's codec is h264
            (json!({"encoder": "libx264 -f"}), "encoder"),
            (json!({"hardware": "gpu"}), "hardware"),
            (json!({"hardware": true}), "hardware"),
            (json!({"codec": "vp9", "hardware": "required"}), "hardware"),
            (
                json!({"encoder": "h264_nvenc", "hardware": "none"}),
                "hardware",
            ),
            (
                json!({"encoder": "libx264", "hardware": "required"}),
                "hardware",
            ),
            (json!({"crf": 52}), "crf"),
            (json!({"crf": -1}), "crf"),
            (json!({"encoder": "h264_nvenc", "crf": 0}), "crf"),
            (json!({"hardware": "required", "crf": 0}), "crf"),
            (
                json!({"codec": "av1", "encoder": "libsvtav1", "crf": 64}),
                "crf",
            ),
            (json!({"crf": 23, "bitrate": "2M"}), "crf"),
            (json!({"pix_fmt": "rgb24"}), "pix_fmt"),
            (
                json!({"pix_fmt": "yuv420p10le", "encoder": "h264_qsv"}),
                "pix_fmt",
            ),
            (
                json!({"pix_fmt": "yuv420p10le", "hardware": "required"}),
                "pix_fmt",
            ),
            (json!({"encoder": "h264_vaapi", "preset": "p2"}), "preset"),
            (json!({"encoder": "h264_nvenc", "preset": "p8"}), "preset"),
            (json!({"hardware": "required", "preset": "p2"}), "preset"),
        ] {
            let v = body(fields.clone());
            let e = parse(&v).expect_err(&fields.to_string());
            assert_eq!(e.field.as_deref(), Some(field), "{fields}: {e:?}");
        }
        // Ranges are the encoder's.
        let s = parse(&body(
            json!({"codec": "av1", "encoder": "av1_vaapi", "crf": 200}),
        ))
        .expect("vaapi qp");
        assert_eq!(s.encode.crf, Some(200));
        let s = parse(&body(json!({"codec": "vp9", "crf": 63}))).expect("vp9 crf");
        assert_eq!(s.encode.crf, Some(63));
        // 10-bit H.264 with `preferred`: software will take it.
        parse(&body(
            json!({"pix_fmt": "yuv420p10le", "hardware": "preferred"}),
        ))
        .expect("10-bit");
    }

    #[test]
    fn preset_rules() {
        let ok = [
            ("h264", "ultrafast"),
            ("h264", "veryslow"),
            ("h265", "medium"),
            ("vp9", "good"),
            ("vp9", "best"),
            ("av1", "0"),
            ("av1", "13"),
        ];
        for (codec, preset) in ok {
            let v = with(with(base(), "codec", json!(codec)), "preset", json!(preset));
            assert_eq!(parse(&v).map(|s| s.encode.preset), Ok(preset.to_string()));
        }
        let bad = [
            ("h264", json!("placebo")),
            ("h265", json!("realtime")),
            ("vp9", json!("veryfast")),
            ("av1", json!("14")),
            ("av1", json!("07")),
            ("av1", json!("-1")),
            ("av1", json!(10)),
            ("h264", json!("veryfast; rm -rf /")),
        ];
        for (codec, preset) in bad {
            let v = with(with(base(), "codec", json!(codec)), "preset", preset);
            assert_err(parse(&v), codes::INVALID_FIELD, Some("preset"));
        }
        // A scenario's preset is replaced when the codec changes and no preset is given.
        let v = with(
            with(base(), "codec", json!("av1")),
            "preset",
            json!("veryfast"),
        );
        assert_err(parse(&v), codes::INVALID_FIELD, Some("preset"));
    }

    // --- input / output shapes ------------------------------------------

    #[test]
    fn testsrc_duration_rules() {
        let inp = |d: Value| with(base(), "input", json!({"type": "testsrc", "duration_s": d}));
        for (d, want) in [
            (json!(0.5), 0.5),
            (json!(86_400), 86_400.0),
            (json!(1e-3), 1e-3),
        ] {
            assert_eq!(
                parse(&inp(d)).map(|s| s.input),
                Ok(Input::Testsrc { duration_s: want })
            );
        }
        for bad in [json!(0), json!(-1), json!(86_400.001), json!(1e300)] {
            assert_err(
                parse(&inp(bad)),
                codes::INVALID_FIELD,
                Some("input.duration_s"),
            );
        }
        for bad in [json!("10"), json!(null_value()), json!([1])] {
            let r = parse(&inp(bad.clone()));
            if bad.is_null() {
                assert_err(r, codes::MISSING_FIELD, Some("input.duration_s"));
            } else {
                assert_err(r, codes::INVALID_FIELD, Some("input.duration_s"));
            }
        }
        let v = with(base(), "input", json!({"type": "testsrc"}));
        assert_err(parse(&v), codes::MISSING_FIELD, Some("input.duration_s"));
        let v = with(
            base(),
            "input",
            json!({"type": "testsrc", "duration_s": 1, "path": "a.mp4"}),
        );
        assert_err(parse(&v), codes::UNKNOWN_FIELD, Some("input.path"));
    }

    fn null_value() -> Value {
        Value::Null
    }

    #[test]
    fn input_shape_rules() {
        let mut v = base();
        v.as_object_mut().map(|o| o.remove("input"));
        assert_err(parse(&v), codes::MISSING_FIELD, Some("input"));
        assert_err(
            parse(&with(base(), "input", json!({"duration_s": 1}))),
            codes::MISSING_FIELD,
            Some("input.type"),
        );
        assert_err(
            parse(&with(base(), "input", json!({"type": "webcam"}))),
            codes::INVALID_FIELD,
            Some("input.type"),
        );
        assert_err(
            parse(&with(base(), "input", json!("testsrc"))),
            codes::INVALID_FIELD,
            Some("input"),
        );
        assert_err(
            parse(&with(base(), "input", json!({"type": "file"}))),
            codes::MISSING_FIELD,
            Some("input.path"),
        );
        assert_err(
            parse(&with(
                base(),
                "input",
                json!({"type": "file", "path": "a.mp4", "duration_s": 3}),
            )),
            codes::UNKNOWN_FIELD,
            Some("input.duration_s"),
        );
        // No roots configured: no file is acceptable.
        assert_err(
            parse(&with(
                base(),
                "input",
                json!({"type": "file", "path": "a.mp4"}),
            )),
            codes::PATH_OUTSIDE_MEDIA_ROOT,
            Some("input.path"),
        );
    }

    #[test]
    fn output_shape_rules() {
        let mut v = base();
        v.as_object_mut().map(|o| o.remove("output"));
        assert_err(parse(&v), codes::MISSING_FIELD, Some("output"));
        let out = |o: Value| with(base(), "output", o);
        assert_err(
            parse(&out(json!({}))),
            codes::MISSING_FIELD,
            Some("output.type"),
        );
        assert_err(
            parse(&out(json!({"type": "srt"}))),
            codes::INVALID_FIELD,
            Some("output.type"),
        );
        assert_err(
            parse(&out(json!({"type": "null", "path": "x.mp4"}))),
            codes::UNKNOWN_FIELD,
            Some("output.path"),
        );
        assert_err(
            parse(&out(json!({"type": "null", "url": "rtmp://h/a"}))),
            codes::UNKNOWN_FIELD,
            Some("output.url"),
        );
        assert_err(
            parse(&out(json!({"type": "file", "url": "rtmp://h/a"}))),
            codes::UNKNOWN_FIELD,
            Some("output.url"),
        );
        assert_err(
            parse(&out(json!({"type": "file"}))),
            codes::MISSING_FIELD,
            Some("output.path"),
        );
        assert_err(
            parse(&out(json!({"type": "rtmp"}))),
            codes::MISSING_FIELD,
            Some("output.url"),
        );
        assert_err(
            parse(&out(
                json!({"type": "rtmp", "url": "rtmp://h/a", "path": "x.flv"}),
            )),
            codes::UNKNOWN_FIELD,
            Some("output.path"),
        );
    }

    #[test]
    fn rtmp_url_rules() {
        let out = |url: &str| with(base(), "output", json!({"type": "rtmp", "url": url}));
        for ok in [
            "rtmp://live.example.com/app/streamkey",
            "rtmps://live.example.com:443/app/key?token=abc",
            "rtmp://127.0.0.1:1935/live/x",
            "rtmp://user:pass@[::1]/live/x",
        ] {
            assert_eq!(
                parse(&out(ok)).map(|s| s.output),
                Ok(Output::Rtmp {
                    url: ok.to_string()
                }),
                "{ok}"
            );
        }
        // The scheme in any case reaches FFmpeg lower-cased (its protocol
        // names are case-sensitive); the rest as sent.
        assert_eq!(
            parse(&out("Rtmp://H/App")).map(|s| s.output),
            Ok(Output::Rtmp {
                url: "rtmp://H/App".to_string()
            })
        );
        let long = format!("rtmp://h/{}", "a".repeat(MAX_URL_LEN));
        for bad in [
            "http://example.com/live",
            "file:///etc/passwd",
            "rtmp:///app/key",
            "rtmp:app",
            "rtmp://",
            "not a url",
            "rtmp://host/app live=1",
            "rtmp://host/app\tkey",
            "rtmp://host/app\nkey",
            "rtmp://host/app\u{7f}",
            " rtmp://host/app",
            "",
            long.as_str(),
        ] {
            assert_err(parse(&out(bad)), codes::INVALID_FIELD, Some("output.url"));
        }
        // FLV in FFmpeg 5.1 carries h264 only.
        for codec in ["h265", "vp9", "av1"] {
            let v = with(out("rtmp://h/app/k"), "codec", json!(codec));
            assert_err(parse(&v), codes::INVALID_FIELD, Some("output.url"));
        }
    }

    #[test]
    fn priority_and_retries() {
        for p in Priority::ALL {
            let v = with(base(), "priority", json!(p.as_str()));
            assert_eq!(parse(&v).map(|s| s.priority), Ok(p));
        }
        for bad in [json!("urgent"), json!("HIGH"), json!(1)] {
            assert_err(
                parse(&with(base(), "priority", bad)),
                codes::INVALID_FIELD,
                Some("priority"),
            );
        }
        for ok in [0, 10] {
            assert_eq!(
                parse(&with(base(), "max_retries", json!(ok))).map(|s| s.max_retries),
                Ok(ok)
            );
        }
        for bad in [json!(11), json!(-1), json!("3"), json!(1.5)] {
            assert_err(
                parse(&with(base(), "max_retries", bad)),
                codes::INVALID_FIELD,
                Some("max_retries"),
            );
        }
    }

    #[test]
    fn resource_limit_rules() {
        let cases: [(&str, u64, u64); 4] = [
            ("max_cpu_percent", 1, 25_600),
            ("max_memory_mb", 16, 1_048_576),
            ("timeout_s", 1, 604_800),
            ("stall_timeout_s", 1, 86_400),
        ];
        for (name, lo, hi) in cases {
            let field = format!("resource_limits.{name}");
            for ok in [lo, hi] {
                let v = with(base(), "resource_limits", json!({ name: ok }));
                let l = parse(&v).expect("valid").resource_limits;
                let got = match name {
                    "max_cpu_percent" => l.max_cpu_percent.map(u64::from),
                    "max_memory_mb" => l.max_memory_mb,
                    "timeout_s" => l.timeout_s,
                    _ => l.stall_timeout_s,
                };
                assert_eq!(got, Some(ok), "{field}");
            }
            for bad in [
                json!(lo - 1),
                json!(hi + 1),
                json!(-1),
                json!("10"),
                json!(1.5),
            ] {
                let v = with(base(), "resource_limits", json!({ name: bad }));
                assert_err(parse(&v), codes::INVALID_FIELD, Some(&field));
            }
        }
        let v = with(base(), "resource_limits", json!({}));
        assert_eq!(
            parse(&v).map(|s| s.resource_limits),
            Ok(ResourceLimits::default())
        );
        let v = with(base(), "resource_limits", json!(5));
        assert_err(parse(&v), codes::INVALID_FIELD, Some("resource_limits"));
    }

    // --- JSON-level errors -------------------------------------------------

    #[test]
    fn unknown_fields_at_any_level_name_the_full_path() {
        let cases = [
            (with(base(), "foo", json!(1)), "foo"),
            (
                with(base(), "resource_limits", json!({"timeout_s": 5, "foo": 1})),
                "resource_limits.foo",
            ),
            (
                with(
                    base(),
                    "input",
                    json!({"type": "testsrc", "duration_s": 1, "loop": true}),
                ),
                "input.loop",
            ),
            (
                with(base(), "output", json!({"type": "null", "format": "mp4"})),
                "output.format",
            ),
            (
                with(base(), "weird`name, expected", json!(1)),
                "weird`name, expected",
            ),
        ];
        for (v, field) in cases {
            let e = assert_err(parse(&v), codes::UNKNOWN_FIELD, Some(field));
            assert!(e.message.contains(field), "{e:?}");
        }
    }

    #[test]
    fn invalid_json_is_reported_without_a_field() {
        for body in [
            &b""[..],
            b"{",
            b"{\"scenario\": }",
            b"[]",
            b"42",
            b"null",
            b"\"x\"",
            b"{} trailing",
            b"{}{}",
            b"\xff\xfe",
            br#"["720p30-h264", {"type": "testsrc", "duration_s": 1}, {"type": "null"}]"#,
        ] {
            let r = parse_job_request(body, &no_roots());
            assert_err(r, codes::INVALID_JSON, None);
        }
    }

    #[test]
    fn nested_objects_given_as_arrays_are_rejected() {
        for key in ["input", "output", "resource_limits"] {
            let v = with(base(), key, json!(["testsrc", 1]));
            assert_err(parse(&v), codes::INVALID_FIELD, Some(key));
        }
    }

    /// A number no type holds is refused on its own field, the innermost.
    #[test]
    fn numbers_out_of_range_name_their_field() {
        for (body, field) in [
            (&br#"{"width": 1e999}"#[..], "width"),
            (
                br#"{"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1e309},"output":{"type":"null"}}"#,
                "input.duration_s",
            ),
            (
                br#"{"scenario":"720p30-h264","resource_limits":{"timeout_s":-1e400},"output":{"type":"null"}}"#,
                "resource_limits.timeout_s",
            ),
        ] {
            let e = assert_err(
                parse_job_request(body, &no_roots()),
                codes::INVALID_FIELD,
                Some(field),
            );
            assert!(e.message.contains("out of range"), "{e:?}");
        }
    }

    /// A repeated key is named in full, however deep it is.
    #[test]
    fn duplicate_nested_fields_name_the_innermost_field() {
        let body = br#"{"scenario":"720p30-h264","input":{"type":"file","path":"a.mp4","path":"b.mp4"},"output":{"type":"null"}}"#;
        assert_err(
            parse_job_request(body, &no_roots()),
            codes::INVALID_FIELD,
            Some("input.path"),
        );
        let body = br#"{"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"},"resource_limits":{"timeout_s":5,"timeout_s":6}}"#;
        assert_err(
            parse_job_request(body, &no_roots()),
            codes::INVALID_FIELD,
            Some("resource_limits.timeout_s"),
        );
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let body = br#"{"scenario":"720p30-h264","scenario":"1080p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"}}"#;
        assert_err(
            parse_job_request(body, &no_roots()),
            codes::INVALID_FIELD,
            Some("scenario"),
        );
    }

    #[test]
    fn a_missing_body_field_set_is_reported_first_as_missing() {
        assert_err(
            parse_job_request(b"{}", &no_roots()),
            codes::MISSING_FIELD,
            Some("width"),
        );
    }

    // --- paths ------------------------------------------------------------

    struct Fixture {
        root: tempfile::TempDir,
        outside: tempfile::TempDir,
        roots: MediaRoots,
    }

    fn fixture() -> Fixture {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("in.mp4"), b"x").expect("write");
        std::fs::create_dir(root.path().join("sub")).expect("mkdir");
        std::fs::write(root.path().join("sub/clip.mkv"), b"x").expect("write");
        std::fs::write(outside.path().join("secret.mp4"), b"x").expect("write");
        let roots = MediaRoots::new(&[root.path().to_path_buf()]).expect("roots");
        Fixture {
            root,
            outside,
            roots,
        }
    }

    impl Fixture {
        fn canon(&self, rel: &str) -> PathBuf {
            std::fs::canonicalize(self.root.path())
                .expect("canon")
                .join(rel)
        }
    }

    fn file_in(path: &str) -> Value {
        with(base(), "input", json!({"type": "file", "path": path}))
    }

    fn file_out(v: Value, path: &str) -> Value {
        with(v, "output", json!({"type": "file", "path": path}))
    }

    #[test]
    fn media_roots_are_canonical_and_must_be_dirs() {
        let f = fixture();
        let link = f.outside.path().join("link-to-root");
        std::os::unix::fs::symlink(f.root.path(), &link).expect("symlink");
        let roots = MediaRoots::new(&[link]).expect("roots");
        assert_eq!(
            roots.roots(),
            &[f.canon("")].map(|p| p.components().collect::<PathBuf>())
        );
        assert!(MediaRoots::new(&[f.root.path().join("missing")]).is_err());
        assert!(MediaRoots::new(&[f.root.path().join("in.mp4")]).is_err());
    }

    #[test]
    fn input_files_resolve_inside_roots() {
        let f = fixture();
        for (given, rel) in [
            ("in.mp4".to_string(), "in.mp4"),
            ("./sub/clip.mkv".to_string(), "sub/clip.mkv"),
            (f.root.path().join("in.mp4").display().to_string(), "in.mp4"),
        ] {
            let spec = parse_in(&file_in(&given), &f.roots).expect("valid");
            assert_eq!(spec.input, Input::File { path: f.canon(rel) }, "{given}");
            assert_eq!(spec.expected_duration_s(), None);
        }
    }

    #[test]
    fn input_path_rejections() {
        let f = fixture();
        let secret = f.outside.path().join("secret.mp4").display().to_string();
        let cases = [
            (secret.as_str(), codes::PATH_OUTSIDE_MEDIA_ROOT),
            ("../secret.mp4", codes::INVALID_FIELD),
            ("sub/../in.mp4", codes::INVALID_FIELD),
            ("in\0.mp4", codes::INVALID_FIELD),
            ("in\n.mp4", codes::INVALID_FIELD),
            ("", codes::INVALID_FIELD),
            ("missing.mp4", codes::FILE_NOT_FOUND),
            ("sub", codes::INVALID_FIELD),
        ];
        for (p, code) in cases {
            assert_err(parse_in(&file_in(p), &f.roots), code, Some("input.path"));
        }
        let long = "a/".repeat(MAX_PATH_LEN);
        assert_err(
            parse_in(&file_in(&long), &f.roots),
            codes::INVALID_FIELD,
            Some("input.path"),
        );
    }

    #[test]
    fn a_symlink_inside_a_root_pointing_outside_is_rejected() {
        let f = fixture();
        let secret = f.outside.path().join("secret.mp4");
        std::os::unix::fs::symlink(&secret, f.root.path().join("escape.mp4")).expect("symlink");
        assert_err(
            parse_in(&file_in("escape.mp4"), &f.roots),
            codes::PATH_OUTSIDE_MEDIA_ROOT,
            Some("input.path"),
        );
        // A directory symlink escaping the root, used as a path prefix.
        std::os::unix::fs::symlink(f.outside.path(), f.root.path().join("outdir"))
            .expect("symlink");
        assert_err(
            parse_in(&file_in("outdir/secret.mp4"), &f.roots),
            codes::PATH_OUTSIDE_MEDIA_ROOT,
            Some("input.path"),
        );
        // A symlink that stays inside resolves to its target.
        std::os::unix::fs::symlink(
            f.root.path().join("in.mp4"),
            f.root.path().join("alias.mp4"),
        )
        .expect("symlink");
        assert_eq!(
            parse_in(&file_in("alias.mp4"), &f.roots).map(|s| s.input),
            Ok(Input::File {
                path: f.canon("in.mp4")
            })
        );
    }

    #[test]
    fn relative_paths_try_roots_in_order() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        std::fs::write(a.path().join("both.mp4"), b"a").expect("write");
        std::fs::write(b.path().join("both.mp4"), b"b").expect("write");
        std::fs::write(b.path().join("only_b.mp4"), b"b").expect("write");
        let roots = MediaRoots::new(&[a.path().into(), b.path().into()]).expect("roots");
        let canon =
            |d: &tempfile::TempDir, n: &str| std::fs::canonicalize(d.path().join(n)).expect("c");
        assert_eq!(
            parse_in(&file_in("both.mp4"), &roots).map(|s| s.input),
            Ok(Input::File {
                path: canon(&a, "both.mp4")
            })
        );
        assert_eq!(
            parse_in(&file_in("only_b.mp4"), &roots).map(|s| s.input),
            Ok(Input::File {
                path: canon(&b, "only_b.mp4")
            })
        );
        // Output: the first root whose directory exists.
        let v = file_out(base(), "new.mkv");
        assert_eq!(
            parse_in(&v, &roots).map(|s| s.output),
            Ok(Output::File {
                path: std::fs::canonicalize(a.path()).expect("c").join("new.mkv")
            })
        );
    }

    #[test]
    fn output_files_resolve_inside_roots() {
        let f = fixture();
        let abs = f.root.path().join("sub/out.mp4").display().to_string();
        for (given, rel) in [
            ("out.mp4", "out.mp4"),
            ("sub/out.mkv", "sub/out.mkv"),
            ("./x.MOV", "x.MOV"),
            ("in.mp4.ts", "in.mp4.ts"),
            (abs.as_str(), "sub/out.mp4"),
        ] {
            let spec = parse_in(&file_out(base(), given), &f.roots).expect("valid");
            assert_eq!(spec.output, Output::File { path: f.canon(rel) }, "{given}");
            assert!(!spec.overwrite);
        }
        // An existing regular file: refused unless the request overwrites.
        let e = assert_err(
            parse_in(&file_out(base(), "sub/clip.mkv"), &f.roots),
            codes::OUTPUT_EXISTS,
            Some("output.path"),
        );
        assert!(e.message.contains("overwrite"), "{e:?}");
        let v = with(file_out(base(), "sub/clip.mkv"), "overwrite", json!(true));
        let spec = parse_in(&v, &f.roots).expect("valid");
        assert_eq!(
            spec.output,
            Output::File {
                path: f.canon("sub/clip.mkv")
            }
        );
        assert!(spec.overwrite);
        // `overwrite` only goes with a file output.
        assert_err(
            parse(&with(base(), "overwrite", json!(true))),
            codes::UNKNOWN_FIELD,
            Some("overwrite"),
        );
        parse(&with(base(), "overwrite", json!(false))).expect("false is the default");
        assert_err(
            parse(&with(base(), "overwrite", json!("yes"))),
            codes::INVALID_FIELD,
            Some("overwrite"),
        );
    }

    #[test]
    fn output_path_rejections() {
        let f = fixture();
        std::os::unix::fs::symlink(f.outside.path(), f.root.path().join("outdir"))
            .expect("symlink");
        std::os::unix::fs::symlink(
            f.outside.path().join("new.mp4"),
            f.root.path().join("dangling.mp4"),
        )
        .expect("symlink");
        std::os::unix::fs::symlink(
            f.root.path().join("in.mp4"),
            f.root.path().join("alias.mp4"),
        )
        .expect("symlink");
        std::fs::create_dir(f.root.path().join("dir.mp4")).expect("mkdir");
        let outside_abs = f.outside.path().join("x.mp4").display().to_string();
        let cases = [
            ("outdir/x.mp4", codes::PATH_OUTSIDE_MEDIA_ROOT),
            (outside_abs.as_str(), codes::PATH_OUTSIDE_MEDIA_ROOT),
            ("dangling.mp4", codes::INVALID_FIELD),
            ("alias.mp4", codes::INVALID_FIELD),
            ("dir.mp4", codes::INVALID_FIELD),
            ("nodir/x.mp4", codes::FILE_NOT_FOUND),
            ("../x.mp4", codes::INVALID_FIELD),
            ("x.avi", codes::INVALID_FIELD),
            ("x", codes::INVALID_FIELD),
            ("x.webm", codes::INVALID_FIELD), // h264 in webm
            ("/", codes::INVALID_FIELD),
            ("x\0.mp4", codes::INVALID_FIELD),
        ];
        for (p, code) in cases {
            assert_err(
                parse_in(&file_out(base(), p), &f.roots),
                code,
                Some("output.path"),
            );
        }
        // The output may not overwrite the input.
        let v = with(
            file_out(file_in("in.mp4"), "./in.mp4"),
            "overwrite",
            json!(true),
        );
        assert_err(
            parse_in(&v, &f.roots),
            codes::INVALID_FIELD,
            Some("output.path"),
        );
    }

    #[test]
    fn containers_accept_only_codecs_ffmpeg_can_mux() {
        let f = fixture();
        let ok = [
            ("h264", "mp4"),
            ("h264", "mkv"),
            ("h264", "mov"),
            ("h264", "ts"),
            ("h264", "flv"),
            ("h265", "mp4"),
            ("h265", "mkv"),
            ("h265", "mov"),
            ("h265", "ts"),
            ("vp9", "mp4"),
            ("vp9", "mkv"),
            ("vp9", "webm"),
            ("av1", "mp4"),
            ("av1", "mkv"),
            ("av1", "webm"),
        ];
        for codec in ["h264", "h265", "vp9", "av1"] {
            for ext in ["mp4", "mkv", "mov", "webm", "ts", "flv"] {
                let v = with(file_out(base(), &format!("o.{ext}")), "codec", json!(codec));
                let r = parse_in(&v, &f.roots);
                if ok.contains(&(codec, ext)) {
                    assert!(r.is_ok(), "{codec} in {ext}: {r:?}");
                } else {
                    assert_err(r, codes::INVALID_FIELD, Some("output.path"));
                }
            }
        }
    }

    // --- properties ---------------------------------------------------------

    fn json_value() -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec![
            "scenario",
            "input",
            "output",
            "type",
            "path",
            "url",
            "duration_s",
            "width",
            "height",
            "fps",
            "codec",
            "bitrate",
            "preset",
            "priority",
            "resource_limits",
            "max_cpu_percent",
            "timeout_s",
            "max_retries",
            "zzz",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[ -~]{0,12}".prop_map(Value::from),
            prop::sample::select(vec![
                "testsrc",
                "file",
                "null",
                "rtmp",
                "h264",
                "av1",
                "1080p60-h265",
                "6M",
                "../x",
                "rtmp://h/a",
                "in.mp4",
                "x.webm",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_job_request(&body, &no_roots());
        }

        #[test]
        fn arbitrary_json_never_panics(v in json_value()) {
            let f = fixture_light();
            let r = parse_job_request(v.to_string().as_bytes(), &f);
            if let Err(e) = r {
                prop_assert!(!e.code.is_empty() && !e.message.is_empty());
            }
        }

        #[test]
        fn valid_shapes_round_trip(
            w in 8u32..=3840, h in 8u32..=2160, fps in 1u32..=240,
            codec in prop::sample::select(Codec::ALL.to_vec()),
            kbps in 1u32..=200_000,
            d in 0.001f64..=86_400.0,
        ) {
            let (w, h) = (w * 2, h * 2);
            let v = json!({
                "input": {"type": "testsrc", "duration_s": d},
                "output": {"type": "null"},
                "width": w, "height": h, "fps": fps, "codec": codec.as_str(), "bitrate": format!("{kbps}k"),
            });
            let spec = parse(&v);
            if codec == Codec::Av1 && (w < 64 || h < 64) {
                prop_assert!(spec.is_err());
            } else {
                let spec = spec.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(spec.encode.width, w);
                prop_assert_eq!(spec.encode.height, h);
                prop_assert_eq!(spec.encode.fps, fps);
                prop_assert_eq!(spec.encode.bitrate_kbps, kbps);
                // serde_json's default float parsing may be off by an ulp.
                match spec.input {
                    Input::Testsrc { duration_s } => prop_assert!((duration_s - d).abs() <= d * 1e-12),
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }

        #[test]
        fn bitrate_strings_round_trip(kbps in 1u64..=200_000) {
            prop_assert_eq!(parse_bitrate_str(&format!("{kbps}k")), Some(kbps));
            let m = format!("{}.{:03}M", kbps / 1000, kbps % 1000);
            prop_assert_eq!(parse_bitrate_str(&m), Some(kbps));
        }
    }

    /// Found by the `job_spec_parse` fuzz target: an empty key gave a
    /// refusal whose `field` was empty.
    #[test]
    fn an_empty_key_is_named() {
        let mut v = base();
        v[""] = json!(1280);
        let e = assert_err(parse(&v), codes::UNKNOWN_FIELD, Some("\"\""));
        assert_eq!(e.message, "unknown field `\"\"`");
        let mut v = base();
        v["input"][""] = json!(1);
        assert_err(parse(&v), codes::UNKNOWN_FIELD, Some("input.\"\""));
    }

    // --- decoders under attack ------------------------------------------

    /// What every accepted spec satisfies, whatever body it came from.
    fn spec_invariants(spec: &JobSpec, roots: &MediaRoots) -> Result<(), TestCaseError> {
        let e = &spec.encode;
        prop_assert!((WIDTH_RANGE.0..=WIDTH_RANGE.1).contains(&e.width) && e.width % 2 == 0);
        prop_assert!((HEIGHT_RANGE.0..=HEIGHT_RANGE.1).contains(&e.height) && e.height % 2 == 0);
        prop_assert!((FPS_RANGE.0..=FPS_RANGE.1).contains(&e.fps));
        prop_assert!((BITRATE_KBPS_RANGE.0..=BITRATE_KBPS_RANGE.1).contains(&e.bitrate_kbps));
        prop_assert!(
            presets(e.codec).contains(&e.preset.as_str()),
            "preset {}",
            e.preset
        );
        if e.codec == Codec::Av1 {
            prop_assert!(e.width >= AV1_MIN_DIMENSION && e.height >= AV1_MIN_DIMENSION);
        }
        if let Some(name) = &spec.scenario {
            prop_assert!(scenario(name).is_some());
        }
        prop_assert!(spec.max_retries <= MAX_RETRIES);
        let l = &spec.resource_limits;
        prop_assert!(l.max_cpu_percent.is_none_or(|v| (1..=25_600).contains(&v)));
        prop_assert!(l
            .max_memory_mb
            .is_none_or(|v| (16..=1_048_576).contains(&v)));
        prop_assert!(l.timeout_s.is_none_or(|v| (1..=604_800).contains(&v)));
        prop_assert!(l.stall_timeout_s.is_none_or(|v| (1..=86_400).contains(&v)));
        match &spec.input {
            Input::Testsrc { duration_s } => prop_assert!(
                duration_s.is_finite()
                    && *duration_s > 0.0
                    && *duration_s <= MAX_TESTSRC_DURATION_S
            ),
            Input::File { path } => {
                prop_assert!(path.is_absolute() && roots.contains(path), "{:?}", path);
                prop_assert!(std::fs::metadata(path).is_ok_and(|m| m.is_file()));
            }
        }
        match &spec.output {
            Output::Null => {}
            Output::File { path } => {
                prop_assert!(path.is_absolute() && roots.contains(path), "{:?}", path);
                let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
                let allowed = container_for_extension(ext).map(|(_, c)| c);
                prop_assert!(allowed.is_some_and(|c| c.contains(&e.codec)), "{:?}", path);
                prop_assert!(
                    !matches!(&spec.input, Input::File { path: i } if i == path),
                    "output is the input"
                );
            }
            Output::Rtmp { url } => {
                prop_assert_eq!(e.codec, Codec::H264);
                prop_assert!(url.len() <= MAX_URL_LEN);
                prop_assert!(
                    url.starts_with("rtmp://") || url.starts_with("rtmps://"),
                    "{}",
                    url
                );
            }
        }
        Ok(())
    }

    const CODES: [&str; 7] = [
        codes::INVALID_JSON,
        codes::UNKNOWN_FIELD,
        codes::MISSING_FIELD,
        codes::INVALID_FIELD,
        codes::PATH_OUTSIDE_MEDIA_ROOT,
        codes::FILE_NOT_FOUND,
        codes::UNKNOWN_SCENARIO,
    ];

    /// A refusal has a known code and a message, and names the field unless
    /// the body as a whole is not a JSON object.
    fn refusal_shape(e: &FieldError) -> Result<(), TestCaseError> {
        prop_assert!(CODES.contains(&e.code.as_str()), "code {}", e.code);
        prop_assert!(!e.message.is_empty());
        if e.code == codes::INVALID_JSON {
            prop_assert!(e.field.is_none(), "{:?}", e);
        } else {
            prop_assert!(e.field.as_deref().is_some_and(|f| !f.is_empty()), "{:?}", e);
        }
        Ok(())
    }

    fn accepted_or_refused(body: &[u8], roots: &MediaRoots) -> Result<(), TestCaseError> {
        match parse_job_request(body, roots) {
            Ok(spec) => spec_invariants(&spec, roots),
            Err(e) => refusal_shape(&e),
        }
    }

    /// Valid bodies to mutate, covering each input and output kind.
    fn valid_bodies() -> Vec<Vec<u8>> {
        [
            base(),
            json!({
                "input": {"type": "file", "path": "in.mp4"},
                "output": {"type": "file", "path": "out.webm"},
                "width": 1280, "height": 720, "fps": 30, "codec": "vp9",
                "bitrate": "2.5M", "preset": "good", "priority": "high",
                "resource_limits": {"max_cpu_percent": 200, "max_memory_mb": 512,
                                    "timeout_s": 60, "stall_timeout_s": 10},
                "max_retries": 2
            }),
            json!({
                "scenario": "1080p30-h264",
                "input": {"type": "testsrc", "duration_s": 1.5},
                "output": {"type": "rtmp", "url": "rtmp://127.0.0.1:1935/live/key"},
                "bitrate": 4500
            }),
        ]
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect()
    }

    /// A valid spec (within the fixture's root) and the body that asks for it.
    fn valid_spec_body() -> impl Strategy<Value = Value> {
        (
            (8u32..=1920, 8u32..=1080, 1u32..=240),
            prop::sample::select(Codec::ALL.to_vec()),
            1u32..=200_000,
            prop::sample::select(Priority::ALL.to_vec()),
            0u32..=MAX_RETRIES,
            0usize..3,
            0usize..3,
            any::<prop::sample::Index>(),
        )
            .prop_map(
                |((w, h, fps), codec, kbps, prio, retries, input, output, pick)| {
                    let (w, h) = (w.max(32) * 2, h.max(32) * 2);
                    let mut v = json!({
                        "width": w, "height": h, "fps": fps, "codec": codec.as_str(),
                        "bitrate": kbps, "priority": prio.as_str(), "max_retries": retries,
                        "preset": *pick.get(presets(codec)),
                    });
                    v["input"] = match input {
                        0 => json!({"type": "file", "path": "in.mp4"}),
                        _ => json!({"type": "testsrc", "duration_s": 2.25}),
                    };
                    v["output"] = match (output, codec) {
                        (0, Codec::H264) => {
                            json!({"type": "rtmp", "url": "rtmps://example.org/app/k"})
                        }
                        (1, _) => json!({"type": "file", "path": "./out.mkv"}),
                        (2, _) => json!({"type": "file", "path": "out.mkv"}),
                        _ => json!({"type": "null"}),
                    };
                    v
                },
            )
    }

    proptest! {
        /// Arbitrary bytes up to 4 KiB, and the same as a JSON string or
        /// field value: refused with a well-formed error, or accepted only
        /// as a spec that passes every invariant.
        #[test]
        fn arbitrary_bodies_are_refused_or_valid(
            body in prop::collection::vec(any::<u8>(), 0..4096),
            key in prop::sample::select(vec!["scenario", "preset", "codec", "bitrate", "priority", "input", "output"]),
        ) {
            let roots = fixture_light();
            accepted_or_refused(&body, &roots)?;
            let s = String::from_utf8_lossy(&body).into_owned();
            accepted_or_refused(with(base(), key, Value::String(s.clone())).to_string().as_bytes(), &roots)?;
            let path = json!({"input": {"type": "file", "path": s.clone()}, "output": {"type": "file", "path": s},
                              "scenario": "720p30-h264"});
            accepted_or_refused(path.to_string().as_bytes(), &roots)?;
        }

        /// Valid bodies truncated, with bytes flipped or overwritten.
        #[test]
        fn mutated_valid_bodies_are_refused_or_valid(
            which in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 0..6),
        ) {
            let roots = fixture_light();
            let bodies = valid_bodies();
            let body = which.get(&bodies);
            prop_assert!(parse_job_request(body, &roots).is_ok());
            let cut_at = cut.index(body.len());
            // A strict prefix of a JSON object is never a JSON object.
            let e = parse_job_request(&body[..cut_at], &roots).err();
            prop_assert_eq!(e.map(|e| e.code), Some(codes::INVALID_JSON.to_string()));
            let mut m = body.clone();
            for (at, v, flip) in &edits {
                let i = at.index(m.len());
                if *flip { m[i] ^= 1 << (v % 8) } else { m[i] = *v }
            }
            accepted_or_refused(&m, &roots)?;
        }

        /// A valid request parses to the spec it asks for, which passes the
        /// invariants; file paths come back canonical.
        #[test]
        fn valid_requests_round_trip(v in valid_spec_body()) {
            let roots = fixture_light();
            let spec = parse_in(&v, &roots).map_err(|e| TestCaseError::fail(format!("{e:?} for {v}")))?;
            spec_invariants(&spec, &roots)?;
            prop_assert_eq!(Some(u64::from(spec.encode.width)), v["width"].as_u64());
            prop_assert_eq!(Some(u64::from(spec.encode.bitrate_kbps)), v["bitrate"].as_u64());
            prop_assert_eq!(Some(spec.priority.as_str()), v["priority"].as_str());
            prop_assert_eq!(Some(spec.encode.preset.as_str()), v["preset"].as_str());
            let root = &roots.roots()[0];
            match &spec.input {
                Input::File { path } => prop_assert_eq!(path, &root.join("in.mp4")),
                Input::Testsrc { duration_s } => prop_assert_eq!(*duration_s, 2.25),
            }
            if let Output::File { path } = &spec.output {
                prop_assert_eq!(path, &root.join("out.mkv"));
            }
        }
    }

    /// Roots for the property test: one shared temp dir with an input file.
    fn fixture_light() -> MediaRoots {
        use std::sync::OnceLock;
        static DIR: OnceLock<Option<(tempfile::TempDir, MediaRoots)>> = OnceLock::new();
        DIR.get_or_init(|| {
            let d = tempfile::tempdir().ok()?;
            std::fs::write(d.path().join("in.mp4"), b"x").ok()?;
            let roots = MediaRoots::new(&[d.path().to_path_buf()]).ok()?;
            Some((d, roots))
        })
        .as_ref()
        .map_or_else(no_roots, |(_, r)| r.clone())
    }

    // --- quality -----------------------------------------------------------

    #[test]
    fn quality_metrics_are_parsed_distinct_and_sorted() {
        let v = with(
            base(),
            "quality",
            json!({"metrics": ["ssim", "vmaf", "psnr"]}),
        );
        let spec = parse(&v).expect("valid");
        assert_eq!(
            spec.quality,
            Some(QualitySpec {
                metrics: vec![
                    QualityMetric::Vmaf,
                    QualityMetric::Psnr,
                    QualityMetric::Ssim
                ]
            })
        );
        let spec = parse(&with(base(), "quality", json!({"metrics": ["psnr"]}))).expect("valid");
        assert_eq!(
            spec.quality.map(|q| q.metrics),
            Some(vec![QualityMetric::Psnr])
        );
        // Absent or null: no quality pass.
        assert_eq!(parse(&base()).expect("valid").quality, None);
        assert_eq!(
            parse(&with(base(), "quality", Value::Null))
                .expect("valid")
                .quality,
            None
        );
    }

    #[test]
    fn bad_quality_requests_name_the_field() {
        let q = |metrics: Value| with(base(), "quality", json!({ "metrics": metrics }));
        let e = assert_err(
            parse(&q(json!(["psnr", "vmaf2"]))),
            codes::INVALID_FIELD,
            Some("quality.metrics[1]"),
        );
        assert!(e.message.contains("vmaf2"), "{e:?}");
        assert_err(
            parse(&q(json!([]))),
            codes::INVALID_FIELD,
            Some("quality.metrics"),
        );
        let e = assert_err(
            parse(&q(json!(["ssim", "psnr", "ssim"]))),
            codes::INVALID_FIELD,
            Some("quality.metrics[2]"),
        );
        assert!(e.message.contains("twice"), "{e:?}");
        assert_err(
            parse(&q(json!(["psnr", 3]))),
            codes::INVALID_FIELD,
            Some("quality.metrics[1]"),
        );
        assert_err(
            parse(&with(
                base(),
                "quality",
                json!({"metrics": ["psnr"], "model": "x"}),
            )),
            codes::UNKNOWN_FIELD,
            Some("quality.model"),
        );
        assert_err(
            parse(&with(base(), "quality", json!({}))),
            codes::MISSING_FIELD,
            Some("quality.metrics"),
        );
        assert_err(
            parse(&with(base(), "quality", json!(["psnr"]))),
            codes::INVALID_FIELD,
            Some("quality"),
        );
        let rtmp = with(
            with(
                base(),
                "output",
                json!({"type": "rtmp", "url": "rtmp://127.0.0.1/live/x"}),
            ),
            "quality",
            json!({"metrics": ["psnr"]}),
        );
        assert_err(parse(&rtmp), codes::UNKNOWN_FIELD, Some("quality"));
    }
}
