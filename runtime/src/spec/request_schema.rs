//! The request body as a JSON Schema, for the OpenAPI document.

use serde_json::Value;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder,
    SchemaType, Type,
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
mod tests;
