//! What a user asked for, after validation: the job spec and its parts
//! (encode parameters, input, output, limits, quality metrics).

use super::*;

/// Scheduling priority. Declaration order is scheduling order: `Live` first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    Encode,
    Decode,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Scheduled before every other priority (`queue: "live"` in the Go-seed API).
    Live,
    /// Scheduled after `live`, before `medium`.
    High,
    /// The default.
    #[default]
    Medium,
    /// Scheduled after `medium`, before `batch`.
    Low,
    /// Scheduled last: runs only when no job of another priority waits.
    Batch,
}

impl Priority {
    /// Every priority, most urgent first (the scheduling order).
    pub const ALL: [Priority; 5] = [
        Priority::Live,
        Priority::High,
        Priority::Medium,
        Priority::Low,
        Priority::Batch,
    ];

    /// 0 for the most urgent; used as the leading byte of queue keys.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The lowercase name used in the API and the `priority` label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Live => "live",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
            Priority::Batch => "batch",
        }
    }
}

/// Video codecs a job may ask for, each bound to one software encoder.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264/AVC, encoded with `libx264`.
    H264,
    /// H.265/HEVC, encoded with `libx265`.
    H265,
    /// VP9, encoded with `libvpx-vp9`.
    Vp9,
    /// AV1, encoded with `libsvtav1`.
    Av1,
}

impl Codec {
    /// Every codec, in declaration order.
    pub const ALL: [Codec; 4] = [Codec::H264, Codec::H265, Codec::Vp9, Codec::Av1];

    /// The lowercase name used in the API (`"codec": "h265"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Vp9 => "vp9",
            Codec::Av1 => "av1",
        }
    }

    /// The FFmpeg encoder used for this codec.
    pub fn encoder(self) -> &'static str {
        match self {
            Codec::H264 => "libx264",
            Codec::H265 => "libx265",
            Codec::Vp9 => "libvpx-vp9",
            Codec::Av1 => "libsvtav1",
        }
    }
}

/// Fully resolved encode parameters (preset values with explicit overrides applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct EncodeParams {
    /// Output width in pixels (16–7680; 64 or more for AV1).
    pub width: u32,
    /// Output height in pixels (16–4320; 64 or more for AV1).
    pub height: u32,
    /// Output frame rate in frames per second (1–240).
    pub fps: u32,
    /// The codec; selects the software encoder and the allowed presets.
    pub codec: Codec,
    /// Target bitrate in kbit/s (1–200,000), FFmpeg's `-b:v`; unused when
    /// `crf` is set.
    pub bitrate_kbps: u32,
    /// Encoder speed preset, in the encoder's own vocabulary (validated per codec).
    pub preset: String,
    /// The FFmpeg encoder: the one the job named (`"encoder": "hevc_nvenc"`)
    /// or, with `hardware` other than `none`, the one the worker chose among
    /// its working encoders (set on the worker's copy of the spec; the
    /// result's `encoder` records it). `None` in a stored spec that named
    /// none: the codec's software encoder ([`Codec::encoder`]) or, with
    /// `hardware`, whichever the worker finds (`crate::encoders::resolve`).
    #[serde(default)]
    pub encoder: Option<String>,
    /// Whether the job wants a hardware encoder for its codec.
    #[serde(default)]
    pub hardware: HardwarePref,
    /// Constant-quality rate control: the CRF (x264/x265/vp9/SVT-AV1), or
    /// the family's equivalent on hardware (`-cq`, `-global_quality`, `-qp`).
    /// `None`: bitrate rate control at `bitrate_kbps`.
    #[serde(default)]
    pub crf: Option<u32>,
    /// The output pixel format (`None`: `yuv420p`).
    #[serde(default)]
    pub pix_fmt: Option<String>,
}

impl EncodeParams {
    /// A software encode (the codec's own encoder) at bitrate rate
    /// control, `yuv420p`: the fields a scenario sets.
    pub fn new(
        width: u32,
        height: u32,
        fps: u32,
        codec: Codec,
        bitrate_kbps: u32,
        preset: String,
    ) -> EncodeParams {
        EncodeParams {
            width,
            height,
            fps,
            codec,
            bitrate_kbps,
            preset,
            encoder: None,
            hardware: HardwarePref::None,
            crf: None,
            pix_fmt: None,
        }
    }
}

/// Whether a job's encode runs on a hardware encoder.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum HardwarePref {
    /// The codec's software encoder (the default).
    #[default]
    None,
    /// A hardware encoder for the codec where a node has one, else software.
    Preferred,
    /// Only a node with a working hardware encoder for the codec.
    Required,
}

/// Quality metrics a job can ask for after its encode. Names are the API.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum QualityMetric {
    /// Netflix libvmaf, model `vmaf_v0.6.1`.
    Vmaf,
    /// FFmpeg's `psnr` filter (dB, the average over Y, U and V).
    Psnr,
    /// FFmpeg's `ssim` filter (0–1, "All").
    Ssim,
}

impl QualityMetric {
    /// Every metric, in the order results list them.
    pub const ALL: [QualityMetric; 3] = [
        QualityMetric::Vmaf,
        QualityMetric::Psnr,
        QualityMetric::Ssim,
    ];

    /// The lowercase name used in the API (`"metrics": ["vmaf"]`).
    pub fn as_str(self) -> &'static str {
        match self {
            QualityMetric::Vmaf => "vmaf",
            QualityMetric::Psnr => "psnr",
            QualityMetric::Ssim => "ssim",
        }
    }
}

/// What quality a job asks to have measured (`"quality": {"metrics": [...]}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct QualitySpec {
    /// Distinct, in a fixed order.
    pub metrics: Vec<QualityMetric>,
}

/// One metric pooled over the frames of an output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct MetricScore {
    /// Mean over the frames.
    pub mean: f64,
    /// The 5th-percentile frame (VMAF; `None` where not computed).
    #[serde(default)]
    pub p5: Option<f64>,
    /// The worst frame.
    #[serde(default)]
    pub min: Option<f64>,
    /// Frames compared.
    pub frames: u64,
}

/// The quality pass after a successful encode: its scores, or why it
/// failed. Its time and energy are its own, never the encode's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct QualityResult {
    /// VMAF (0–100), when asked for and the pass succeeded.
    #[serde(default)]
    pub vmaf: Option<MetricScore>,
    /// PSNR in dB, when asked for and the pass succeeded.
    #[serde(default)]
    pub psnr: Option<MetricScore>,
    /// SSIM (0–1), when asked for and the pass succeeded.
    #[serde(default)]
    pub ssim: Option<MetricScore>,
    /// Wall time of the quality pass.
    pub wall_s: f64,
    /// Energy of the quality pass, attributed like an encode's.
    #[serde(default)]
    pub quality_energy_joules: Option<f64>,
    /// Where that energy figure comes from (`rapl`, `estimate`, ...).
    #[serde(default)]
    pub energy_source: Option<String>,
    /// `true` when the energy figure is an estimate.
    #[serde(default)]
    pub estimate: bool,
    /// Set when the quality pass failed (corrupt output, unreadable
    /// reference): the scores are then absent; the encode's own success
    /// and energy stand.
    #[serde(default)]
    pub error: Option<String>,
}

/// Where the frames come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Input {
    /// FFmpeg's synthetic `testsrc2` pattern, at the job's resolution and rate.
    Testsrc {
        /// Seconds of pattern to generate (positive, at most a day).
        duration_s: f64,
    },
    /// A media file; `path` is canonical and inside a configured media root.
    File {
        /// The canonical path of the file, inside a media root.
        #[schema(value_type = String)]
        path: PathBuf,
    },
}

/// Where the encoded stream goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Output {
    /// Encode and discard (`-f null`).
    Null,
    /// A file inside a configured media root; the container follows the extension.
    File {
        /// The canonical path the output is written to, inside a media root.
        #[schema(value_type = String)]
        path: PathBuf,
    },
    /// An `rtmp://` or `rtmps://` URL (FLV container).
    Rtmp {
        /// The validated URL, as sent (host required, no whitespace or
        /// control characters).
        url: String,
    },
}

/// Per-job resource limits. `None` means "no limit of this kind".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU quota as a percentage of one core (50 = half a core, 200 = two cores).
    #[serde(default)]
    pub max_cpu_percent: Option<u32>,
    /// Memory limit in MiB (swap included where the cgroup accounts it).
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// Wall-clock limit; on expiry SIGTERM, then SIGKILL after a grace period.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// No progress for this long: killed and retried as a transient failure.
    #[serde(default)]
    pub stall_timeout_s: Option<u64>,
}

/// A validated job: everything a worker needs to run it, nothing unchecked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct JobSpec {
    /// The preset name the user gave, if any (e.g. `1080p60-h265`).
    pub scenario: Option<String>,
    /// What to encode to: resolution, rate, codec, rate control, encoder.
    pub encode: EncodeParams,
    /// Where the frames come from.
    pub input: Input,
    /// Where the encoded stream goes.
    pub output: Output,
    /// Queue priority (default `medium`).
    pub priority: Priority,
    /// CPU, memory and time limits; all absent by default.
    pub resource_limits: ResourceLimits,
    /// Extra attempts after the first for transient failures (default 3).
    pub max_retries: u32,
    /// A file output may replace an existing regular file of that name
    /// (default `false`: an existing output is refused at submission, and a
    /// file that appears under the name while the job runs fails the job
    /// rather than being replaced). Never a symlink or a non-regular file.
    #[serde(default)]
    pub overwrite: bool,
    /// Quality metrics to measure after a successful encode.
    #[serde(default)]
    pub quality: Option<QualitySpec>,
    /// The user's labels: a small string map, bounded in count and length
    /// (validated in `spec`), filterable in `GET /v1/jobs` and the report.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The experiment this job belongs to, when an experiment made it.
    #[serde(default)]
    pub experiment: Option<String>,
}

impl JobSpec {
    /// Seconds of output this job is expected to produce, when known up front.
    pub fn expected_duration_s(&self) -> Option<f64> {
        match &self.input {
            Input::Testsrc { duration_s } => Some(*duration_s),
            Input::File { .. } => None,
        }
    }
}
