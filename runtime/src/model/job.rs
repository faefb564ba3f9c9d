//! A job as the master stores it: its state, attempts, progress, result
//! and failure.

use super::*;

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
    /// Stored and waiting for a worker slot (or for its retry backoff).
    Queued,
    /// Given to a worker (`Assign` sent after the write was durable); FFmpeg
    /// not yet reported started.
    Assigned,
    /// The worker reported FFmpeg started.
    Running,
    /// FFmpeg exited 0 and the worker reported the result. Terminal.
    Succeeded,
    /// Ended without success and will not run again unless a user retries it.
    /// Terminal.
    Failed,
    /// Cancelled by a user. Terminal.
    Cancelled,
    /// `timeout_s` expired. Terminal.
    TimedOut,
    /// Its node was lost mid-attempt; a job leaves this state at once
    /// (requeued, or failed with no attempts left).
    Lost,
}

impl JobState {
    /// Every state, in declaration (lifecycle) order.
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

    /// Whether the job has ended: `succeeded`, `failed`, `cancelled` or
    /// `timed_out` (only a user's retry moves it on). `lost` is not terminal.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }

    /// The snake_case name used in the API (`timed_out`).
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

    /// The state named `s` in the API's spelling, or `None`.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// How a job's process was isolated on its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub enum Isolation {
    /// In a cgroup of the v1 hierarchy (`cgroup-v1`).
    #[serde(rename = "cgroup-v1")]
    CgroupV1,
    /// In a cgroup of the v2 (unified) hierarchy (`cgroup-v2`).
    #[serde(rename = "cgroup-v2")]
    CgroupV2,
    /// No cgroup could be used: the process ran with `nice` only.
    #[serde(rename = "none")]
    None,
}

/// Live progress, parsed from `-progress pipe:1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct Progress {
    /// Frames encoded so far.
    pub frame: u64,
    /// Encoding rate in frames per second, as FFmpeg reports it.
    pub fps: f64,
    /// Encoding speed relative to real time (`1.5` = 1.5x); absent while FFmpeg says `N/A`.
    pub speed: Option<f64>,
    /// Seconds of output written so far.
    pub out_time_s: f64,
    /// Percentage of the expected output duration, when that is known.
    pub percent: Option<f64>,
    /// Current output bitrate in kbit/s; absent while FFmpeg says `N/A`.
    pub bitrate_kbps: Option<f64>,
    /// Bytes of output written so far; absent while FFmpeg says `N/A`.
    pub total_size_bytes: Option<u64>,
}

/// What a successful attempt measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct JobResult {
    /// FFmpeg's exit code (always 0: only a successful attempt has a result).
    pub exit_code: i32,
    /// Wall time of the attempt in seconds, from FFmpeg's start to its exit.
    pub wall_s: f64,
    /// Frames encoded (FFmpeg's last `frame` progress figure).
    pub frames: u64,
    /// Mean frames per second over the wall time.
    pub avg_fps: f64,
    /// FFmpeg's last reported speed relative to real time; absent if it
    /// never reported one.
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
    /// Which failure class: decides whether the attempt is retried.
    pub reason: FailureReason,
    /// A human-readable account of the failure.
    pub message: String,
    /// FFmpeg's exit code, when it exited (absent when killed by a signal or
    /// never started).
    pub exit_code: Option<i32>,
    /// The signal that ended FFmpeg, when one did.
    pub signal: Option<i32>,
    /// The last lines of FFmpeg's stderr (bounded).
    pub stderr_tail: Vec<String>,
}

impl Failure {
    /// A failure with no exit status or stderr: for failures that are not
    /// FFmpeg's own exit (fill those fields in where known).
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
    /// FFmpeg exited 0.
    Succeeded {
        /// What the attempt measured.
        result: JobResult,
    },
    /// Terminal (FFmpeg's own fault, or it could not start).
    Failed {
        /// Why it failed.
        failure: Failure,
    },
    /// Not FFmpeg's fault: consumes an attempt and requeues while attempts remain.
    Transient {
        /// Why it failed; the job is requeued if attempts remain.
        failure: Failure,
    },
    /// `timeout_s` expired and the job was killed: terminal (`timed_out`).
    TimedOut {
        /// Why it was killed (reason `timeout`).
        failure: Failure,
    },
    /// A user cancelled the job and its FFmpeg was killed.
    Cancelled,
}

/// One attempt's record in a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode, ToSchema)]
pub struct AttemptRecord {
    /// The attempt's number (1-based; continues across manual retries).
    pub attempt: u32,
    /// The node the attempt was assigned to.
    #[schema(value_type = String)]
    pub node: NodeId,
    /// When the worker reported FFmpeg started (ms since the epoch);
    /// `None` if it never did.
    #[schema(value_type = Option<u64>)]
    pub started_ms: Option<UnixMs>,
    /// When the attempt ended (ms since the epoch); `None` while in flight.
    #[schema(value_type = Option<u64>)]
    pub ended_ms: Option<UnixMs>,
    /// How the attempt's FFmpeg was isolated, once it started.
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
    /// The job's id: a UUIDv7, assigned by the master at submission.
    #[schema(value_type = String)]
    pub id: JobId,
    /// Submission order; FIFO within one priority follows it.
    pub seq: u64,
    /// The validated request.
    pub spec: JobSpec,
    /// Where the job is in its lifecycle.
    pub state: JobState,
    /// Number of assignments so far (the current attempt's number, 1-based).
    pub attempt: u32,
    /// Fencing token of the current assignment (0 before the first).
    pub token: u64,
    /// The node of the current (or last) attempt; `None` before the first
    /// assignment and while queued again.
    #[schema(value_type = Option<String>)]
    pub node: Option<NodeId>,
    /// When the job was submitted (ms since the epoch).
    #[schema(value_type = u64)]
    pub created_ms: UnixMs,
    /// When the record last changed (ms since the epoch).
    #[schema(value_type = u64)]
    pub updated_ms: UnixMs,
    /// A requeued job waits until this time (retry backoff).
    #[schema(value_type = Option<u64>)]
    pub not_before_ms: Option<UnixMs>,
    /// How the current attempt's FFmpeg is isolated, once it started.
    pub isolation: Option<Isolation>,
    /// The current attempt's latest progress; `None` before any.
    pub progress: Option<Progress>,
    /// What the successful attempt measured; set when the job succeeds.
    pub result: Option<JobResult>,
    /// Why the job ended without success (the last attempt's failure).
    pub failure: Option<Failure>,
    /// Every attempt so far, oldest first.
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
    /// A `queued` job at attempt 0 and token 0, created and updated at `now`.
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
