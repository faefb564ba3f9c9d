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

mod encode;
mod endpoints;
mod labels;
mod parse_errors;
pub(crate) mod request_schema;
mod scenarios;

pub use encode::*;
pub use endpoints::*;
pub use labels::*;
pub(crate) use parse_errors::*;
pub use scenarios::*;

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

#[cfg(test)]
mod tests;
