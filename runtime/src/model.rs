//! The job data model shared by every layer: what a user asked for (after
//! validation), what the master stores, and what a worker reports.
//!
//! Field names here are part of the HTTP API and of the on-disk format: rename
//! nothing without a migration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A job's identifier: a UUIDv7 in its hyphenated text form (time-ordered).
pub type JobId = String;

/// A node's identifier (stable across restarts of that node).
pub type NodeId = String;

/// Milliseconds since the Unix epoch. Passed into pure code as data; pure code
/// never reads a clock.
pub type UnixMs = u64;

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
    Live,
    High,
    #[default]
    Medium,
    Low,
    Batch,
}

impl Priority {
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
    H264,
    H265,
    Vp9,
    Av1,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::H264, Codec::H265, Codec::Vp9, Codec::Av1];

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
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub codec: Codec,
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
    pub const ALL: [QualityMetric; 3] = [
        QualityMetric::Vmaf,
        QualityMetric::Psnr,
        QualityMetric::Ssim,
    ];

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
    #[serde(default)]
    pub vmaf: Option<MetricScore>,
    #[serde(default)]
    pub psnr: Option<MetricScore>,
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
    Testsrc { duration_s: f64 },
    /// A media file; `path` is canonical and inside a configured media root.
    File {
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
        #[schema(value_type = String)]
        path: PathBuf,
    },
    /// An `rtmp://` or `rtmps://` URL (FLV container).
    Rtmp { url: String },
}

/// Per-job resource limits. `None` means "no limit of this kind".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU quota as a percentage of one core (50 = half a core, 200 = two cores).
    #[serde(default)]
    pub max_cpu_percent: Option<u32>,
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
    pub encode: EncodeParams,
    pub input: Input,
    pub output: Output,
    pub priority: Priority,
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

/// The lifecycle states. Lowercase names are part of the API.
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
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    Lost,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Assigned,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
        JobState::Lost,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
            JobState::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// How a job's process was isolated on its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub enum Isolation {
    #[serde(rename = "cgroup-v1")]
    CgroupV1,
    #[serde(rename = "cgroup-v2")]
    CgroupV2,
    /// No cgroup could be used: the process ran with `nice` only.
    #[serde(rename = "none")]
    None,
}

/// Live progress, parsed from `-progress pipe:1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct Progress {
    pub frame: u64,
    pub fps: f64,
    /// Encoding speed relative to real time (`1.5` = 1.5x); absent while FFmpeg says `N/A`.
    pub speed: Option<f64>,
    /// Seconds of output written so far.
    pub out_time_s: f64,
    /// Percentage of the expected output duration, when that is known.
    pub percent: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    pub total_size_bytes: Option<u64>,
}

/// What a successful attempt measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct JobResult {
    pub exit_code: i32,
    pub wall_s: f64,
    pub frames: u64,
    pub avg_fps: f64,
    pub speed: Option<f64>,
    /// Size of the output file, when the output is a file.
    pub output_bytes: Option<u64>,
    /// Mean bitrate of the output file, when the output is a file.
    pub output_bitrate_kbps: Option<f64>,
    /// CPU time from the job's cgroup (absent with `isolation: none`).
    pub cpu_s: Option<f64>,
    /// Peak memory from the job's cgroup (absent with `isolation: none`).
    pub peak_memory_bytes: Option<u64>,
    /// Seconds of output video written (FFmpeg's last `out_time`, or the
    /// expected duration when it reported none).
    #[serde(default)]
    pub output_duration_s: Option<f64>,
    /// The quality pass, when the job asked for metrics (boxed: most
    /// results have none, and the wire enums carrying a result stay small).
    #[serde(default)]
    pub quality: Option<Box<QualityResult>>,
    /// The FFmpeg encoder the worker really used (`libx264`, `h264_nvenc`):
    /// the one the job named, or the one its `hardware` preference got on
    /// that node. `None` in results written before it was recorded.
    #[serde(default)]
    pub encoder: Option<String>,
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// FFmpeg exited non-zero on its own: terminal.
    FfmpegError,
    /// FFmpeg could not be started at all: terminal.
    SpawnFailed,
    /// `timeout_s` expired: terminal (`timed_out`).
    Timeout,
    /// No progress for `stall_timeout_s`: transient.
    Stalled,
    /// Killed by our own resource enforcement (e.g. the cgroup OOM killer): transient.
    ResourceKilled,
    /// The JobActor failed (panicked) or the worker crashed: transient.
    WorkerCrash,
    /// The node running it was lost: transient.
    NodeLost,
    /// Cancelled by a user.
    Cancelled,
    /// No attempts left after transient failures.
    RetriesExhausted,
    /// A file path of the job no longer resolves inside the worker's media
    /// root without following a symlink (one was swapped in after the
    /// submission, say), or is not inside any of its roots: terminal;
    /// nothing was read or written.
    PathOutsideMediaRoot,
    /// The input cannot be used: gone, not a regular file, or a container
    /// format that is not on the allow-list (one that can reference other
    /// files, such as an HLS playlist): terminal.
    InputRefused,
    /// The output's name was taken when the job would publish it and the
    /// job does not set `overwrite`: terminal; the existing file is kept.
    OutputExists,
    /// The input's probe (ffprobe, before FFmpeg starts) did not finish in
    /// time, e.g. an input that references a FIFO nobody writes: terminal.
    /// The probe reads nothing but the job's input, so a probe that hangs is
    /// that input's doing, and FFmpeg would hang on it the same way; a retry
    /// would only hold another slot for another probe timeout.
    ProbeTimeout,
    /// FFmpeg could not be started because the node itself ran out of
    /// something (`EMFILE`, `ENFILE`, `EAGAIN`, `ENOMEM`): transient, the
    /// job is not at fault and runs later or elsewhere.
    NodeExhausted,
}

impl FailureReason {
    /// Transient failures are not FFmpeg's fault: they consume an attempt and requeue.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureReason::Stalled
                | FailureReason::ResourceKilled
                | FailureReason::WorkerCrash
                | FailureReason::NodeLost
                | FailureReason::NodeExhausted
        )
    }
}

/// A failed attempt's details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct Failure {
    pub reason: FailureReason,
    pub message: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The last lines of FFmpeg's stderr (bounded).
    pub stderr_tail: Vec<String>,
}

impl Failure {
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
            exit_code: None,
            signal: None,
            stderr_tail: Vec::new(),
        }
    }
}

/// How one attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded {
        result: JobResult,
    },
    /// Terminal (FFmpeg's own fault, or it could not start).
    Failed {
        failure: Failure,
    },
    /// Not FFmpeg's fault: consumes an attempt and requeues while attempts remain.
    Transient {
        failure: Failure,
    },
    TimedOut {
        failure: Failure,
    },
    Cancelled,
}

/// One attempt's record in a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct AttemptRecord {
    pub attempt: u32,
    #[schema(value_type = String)]
    pub node: NodeId,
    #[schema(value_type = Option<u64>)]
    pub started_ms: Option<UnixMs>,
    #[schema(value_type = Option<u64>)]
    pub ended_ms: Option<UnixMs>,
    pub isolation: Option<Isolation>,
    /// `None` while the attempt is in flight.
    pub outcome: Option<Outcome>,
    /// What this attempt cost in energy, as its worker measured it (absent
    /// when the worker had no power sampler, or the attempt never reported).
    #[serde(default)]
    pub energy: Option<Energy>,
}

/// The master's record of a job: what is stored in sled and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct Job {
    #[schema(value_type = String)]
    pub id: JobId,
    /// Submission order; FIFO within one priority follows it.
    pub seq: u64,
    pub spec: JobSpec,
    pub state: JobState,
    /// Number of assignments so far (the current attempt's number, 1-based).
    pub attempt: u32,
    /// Fencing token of the current assignment (0 before the first).
    pub token: u64,
    #[schema(value_type = Option<String>)]
    pub node: Option<NodeId>,
    #[schema(value_type = u64)]
    pub created_ms: UnixMs,
    #[schema(value_type = u64)]
    pub updated_ms: UnixMs,
    /// A requeued job waits until this time (retry backoff).
    #[schema(value_type = Option<u64>)]
    pub not_before_ms: Option<UnixMs>,
    pub isolation: Option<Isolation>,
    pub progress: Option<Progress>,
    pub result: Option<JobResult>,
    pub failure: Option<Failure>,
    pub attempts: Vec<AttemptRecord>,
    /// What the job cost in energy over all its attempts; set when it ends.
    #[serde(default)]
    pub energy: Option<Energy>,
    /// Set when a user re-queued the finished job
    /// (`POST /v1/jobs/{id}/retry`); absent for a job never retried.
    #[serde(default)]
    pub requeue: Option<Requeue>,
}

/// A job's manual retries (`POST /v1/jobs/{id}/retry`): the same job,
/// queued again with its attempt history kept and a fresh retry budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct Requeue {
    /// How many times the job was retried this way.
    pub count: u32,
    /// When the last retry was made.
    #[schema(value_type = u64)]
    pub at_ms: UnixMs,
    /// Attempts made before the last retry. `max_retries` counts from
    /// here: the job may run attempts `after_attempt + 1` to
    /// `after_attempt + 1 + max_retries`.
    pub after_attempt: u32,
    /// The job's place in the queue since the last retry, drawn from the
    /// same counter as `seq`: a retried job waits behind every job queued
    /// before the retry, as a new submission would. (`seq`, and so the
    /// job's place in `GET /v1/jobs`, does not change.)
    pub queue_seq: u64,
}

impl Job {
    pub fn new(id: JobId, seq: u64, spec: JobSpec, now: UnixMs) -> Job {
        Job {
            id,
            seq,
            spec,
            state: JobState::Queued,
            attempt: 0,
            token: 0,
            node: None,
            created_ms: now,
            updated_ms: now,
            not_before_ms: None,
            isolation: None,
            progress: None,
            result: None,
            failure: None,
            attempts: Vec::new(),
            energy: None,
            requeue: None,
        }
    }

    /// Attempts made before the last manual retry (0 if never retried):
    /// the retry budget counts from here.
    pub fn attempt_base(&self) -> u32 {
        self.requeue.as_ref().map_or(0, |r| r.after_attempt)
    }

    /// The highest attempt number this job may reach: the attempts made
    /// before its last manual retry, plus the first attempt since, plus
    /// `max_retries`. For a job never retried, the first plus `max_retries`.
    pub fn max_attempts(&self) -> u32 {
        self.attempt_base()
            .saturating_add(self.spec.max_retries)
            .saturating_add(1)
    }

    /// Where the job sorts in the ready queue within its priority: its
    /// submission `seq`, or the queue place its last manual retry gave it.
    pub fn queue_seq(&self) -> u64 {
        self.requeue.as_ref().map_or(self.seq, |r| r.queue_seq)
    }
}

/// Where an energy figure came from. Only `Rapl` and `Nvml` are
/// measurements; an `Estimate` is always labelled as one.
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
pub enum PowerSource {
    /// Intel/AMD RAPL counters read through powercap sysfs.
    Rapl,
    /// NVIDIA GPUs through NVML.
    Nvml,
    /// A model of power from CPU utilisation (configured idle and maximum watts).
    Estimate,
}

impl PowerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerSource::Rapl => "rapl",
            PowerSource::Nvml => "nvml",
            PowerSource::Estimate => "estimate",
        }
    }

    /// The label of a figure built from these sources: sorted, `+`-joined
    /// (`"rapl+nvml"`), `"none"` when empty.
    pub fn label(sources: impl IntoIterator<Item = PowerSource>) -> String {
        let mut v: Vec<PowerSource> = sources.into_iter().collect();
        v.sort();
        v.dedup();
        if v.is_empty() {
            return "none".into();
        }
        v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("+")
    }
}

/// The energy of one power domain (`package-0`, `dram-0`, `gpu-0`, `cpu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct DomainEnergy {
    pub domain: String,
    pub source: PowerSource,
    pub joules: f64,
}

/// What an attempt (or, summed over its attempts, a job) cost in energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct Energy {
    pub energy_joules: f64,
    /// `energy_joules` over `measured_s`.
    pub mean_power_watts: f64,
    /// Where the figure came from: `rapl`, `nvml`, `estimate`, or a
    /// `+`-joined mix (`rapl+nvml`).
    pub energy_source: String,
    /// True when any part of the figure is an estimate, not a measurement.
    pub estimate: bool,
    /// Seconds over which the energy was sampled.
    pub measured_s: f64,
    /// Per output frame, when frames were counted.
    pub joules_per_frame: Option<f64>,
    /// Per minute of output video, when the output duration is known.
    pub joules_per_output_minute: Option<f64>,
    /// The parts, one per domain.
    pub domains: Vec<DomainEnergy>,
}

impl Energy {
    /// The figures for `domains` sampled over `measured_s` seconds, for an
    /// output of `frames` frames and `output_s` seconds (either may be
    /// unknown: zero or absent gives no per-unit figure).
    pub fn new(
        mut domains: Vec<DomainEnergy>,
        measured_s: f64,
        frames: Option<u64>,
        output_s: Option<f64>,
    ) -> Energy {
        domains.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.source.cmp(&b.source)));
        let energy_joules: f64 = domains.iter().map(|d| d.joules).sum();
        let per = |units: f64| (units > 0.0 && units.is_finite()).then(|| energy_joules / units);
        Energy {
            energy_joules,
            mean_power_watts: per(measured_s).unwrap_or(0.0),
            energy_source: PowerSource::label(domains.iter().map(|d| d.source)),
            estimate: domains.iter().any(|d| d.source == PowerSource::Estimate),
            measured_s,
            joules_per_frame: frames.and_then(|f| per(f as f64)),
            joules_per_output_minute: output_s.and_then(|s| per(s / 60.0)),
            domains,
        }
    }

    /// The sum of several attempts' energy, with per-unit figures for the
    /// output the job finally produced. `None` when no attempt was measured.
    pub fn total<'a>(
        parts: impl IntoIterator<Item = &'a Energy>,
        frames: Option<u64>,
        output_s: Option<f64>,
    ) -> Option<Energy> {
        let mut domains: Vec<DomainEnergy> = Vec::new();
        let mut measured_s = 0.0;
        let mut any = false;
        for e in parts {
            any = true;
            measured_s += e.measured_s;
            for d in &e.domains {
                match domains
                    .iter_mut()
                    .find(|x| x.domain == d.domain && x.source == d.source)
                {
                    Some(x) => x.joules += d.joules,
                    None => domains.push(d.clone()),
                }
            }
        }
        any.then(|| Energy::new(domains, measured_s, frames, output_s))
    }
}

/// One power domain's current reading on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct DomainPower {
    pub domain: String,
    pub source: PowerSource,
    /// Mean power over the last sampling interval.
    pub watts: f64,
    /// Energy since the sampler started.
    pub joules_total: f64,
}

/// A node's power, as its `PowerSamplerActor` last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct NodePower {
    pub domains: Vec<DomainPower>,
    /// Sum over the domains.
    pub watts: f64,
    pub joules_total: f64,
    /// Energy attributed to jobs since the sampler started.
    pub attributed_joules_total: f64,
    /// The rest: energy no job was charged for (idle, the OS, other
    /// processes). `attributed + idle = joules_total`.
    pub idle_joules_total: f64,
    /// Sampling rate in Hz.
    pub sample_hz: f64,
    /// Sampling cycles since the sampler started.
    pub samples: u64,
    /// Mean duration of one sampling cycle since the previous report, in seconds.
    pub cycle_seconds: f64,
    /// Why a source is missing (e.g. an unreadable RAPL counter), said once.
    pub notes: Vec<String>,
}

#[cfg(test)]
mod energy_tests {
    use super::*;

    fn d(domain: &str, source: PowerSource, joules: f64) -> DomainEnergy {
        DomainEnergy {
            domain: domain.into(),
            source,
            joules,
        }
    }

    #[test]
    fn energy_figures_follow_from_the_domains() {
        let e = Energy::new(
            vec![
                d("package-0", PowerSource::Rapl, 90.0),
                d("dram-0", PowerSource::Rapl, 10.0),
                d("gpu-0", PowerSource::Nvml, 20.0),
            ],
            4.0,
            Some(240),
            Some(30.0),
        );
        assert_eq!(e.energy_joules, 120.0);
        assert_eq!(e.mean_power_watts, 30.0);
        assert_eq!(e.energy_source, "rapl+nvml");
        assert!(!e.estimate);
        assert_eq!(e.joules_per_frame, Some(0.5));
        assert_eq!(e.joules_per_output_minute, Some(240.0));
        // No frames, no duration: no per-unit figures rather than infinities.
        let e = Energy::new(
            vec![d("cpu", PowerSource::Estimate, 5.0)],
            0.0,
            Some(0),
            None,
        );
        assert!(e.estimate);
        assert_eq!(e.energy_source, "estimate");
        assert_eq!(
            (e.joules_per_frame, e.joules_per_output_minute),
            (None, None)
        );
        assert_eq!(e.mean_power_watts, 0.0);
    }

    #[test]
    fn a_jobs_total_sums_its_attempts_by_domain() {
        let a = Energy::new(
            vec![d("package-0", PowerSource::Rapl, 30.0)],
            2.0,
            None,
            None,
        );
        let b = Energy::new(
            vec![
                d("package-0", PowerSource::Rapl, 60.0),
                d("dram-0", PowerSource::Rapl, 10.0),
            ],
            3.0,
            Some(100),
            Some(6.0),
        );
        let t = Energy::total([&a, &b], Some(100), Some(6.0)).expect("measured");
        assert_eq!(t.energy_joules, 100.0);
        assert_eq!(t.measured_s, 5.0);
        assert_eq!(t.domains.len(), 2);
        assert_eq!(t.joules_per_frame, Some(1.0));
        assert_eq!(t.joules_per_output_minute, Some(1000.0));
        assert!(Energy::total([], None, None).is_none());
    }
}
