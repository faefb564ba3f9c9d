//! Messages between the master tree and a worker tree. They cross QUIC (in a
//! cluster, and over loopback in `standalone`) or, for an embedder, an
//! in-process link; either way they are encoded with bincode 2, so what works
//! in one process works across machines.
//!
//! The codec uses bincode's own `Encode`/`Decode` derives rather than its
//! serde path: the model's enums are internally tagged for the JSON API
//! (`{"type": "testsrc", ...}`), and serde's internally tagged enums need a
//! self-describing format (`deserialize_any`), which bincode is not.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::model::{Energy, Isolation, JobId, JobSpec, NodeId, NodePower, Outcome, Progress};

/// Bumped on any incompatible change to these types.
///
/// 2: round-trip leases (`Ping`/`Pong`), the worker's outbox (`Ack`), and a
/// hello that reports the attempts the worker holds.
///
/// 3: energy — `Finished` carries the attempt's [`Energy`], and the worker
/// reports its power with [`ToMaster::Power`].
///
/// 4: confinement — a job spec's `overwrite`, and the failure reasons
/// `path_outside_media_root`, `input_refused`, `output_exists`.
///
/// 5: energy per quality — an encode's `encoder`, `hardware`, `crf` and
/// `pix_fmt`; a job's `quality`, `labels` and `experiment`; a result's
/// `quality` and `encoder`; a hello's `unavailable_encoders`.
pub const PROTOCOL_VERSION: u32 = 5;

/// Upper bound on one encoded message.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// One assignment of a job to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct Assignment {
    /// The job to run.
    pub job_id: JobId,
    /// The attempt's number (1-based), as stored with the job.
    pub attempt: u32,
    /// Fencing token, stored with the job before the worker is told.
    pub token: u64,
    /// What to run: the validated spec.
    pub spec: JobSpec,
}

/// What a worker offers.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, utoipa::ToSchema,
)]
pub struct Capabilities {
    /// FFmpeg encoders that passed a real test encode.
    pub encoders: Vec<String>,
    /// CPU cores the node has, as the worker counted them.
    pub cores: u32,
    /// The node's memory in bytes.
    pub memory_bytes: u64,
    /// Encoders the node tried and that failed their test encode (Debian's
    /// FFmpeg lists NVENC, QSV and VAAPI encoders that fail without their
    /// device), each with FFmpeg's reason. Jobs never go to a node for these.
    #[serde(default)]
    pub unavailable_encoders: Vec<crate::ffmpeg::UnavailableEncoder>,
    /// Quality metrics it computes, probed at its start (`psnr`/`ssim`:
    /// FFmpeg has the filters; `vmaf`: `ffrtmp-vmaf` passed its self-test).
    #[serde(default)]
    pub metrics: Vec<crate::model::QualityMetric>,
}

/// One attempt of one job, as the fencing token names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
pub struct AttemptRef {
    /// The job the attempt belongs to.
    pub job_id: JobId,
    /// The attempt's fencing token (unique per assignment).
    pub token: u64,
}

/// Master → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub enum ToWorker {
    /// Run this attempt (sent once the assignment is durable).
    Assign(Box<Assignment>),
    /// A user cancelled the job.
    Cancel {
        /// The job to cancel.
        job_id: JobId,
        /// The fencing token of the attempt to stop.
        token: u64,
    },
    /// The worker spoke about an attempt the master no longer recognises: kill it.
    Kill {
        /// The job whose attempt to kill.
        job_id: JobId,
        /// The token the worker used, which the master refused.
        token: u64,
    },
    /// Take no new jobs; finish the running ones within `deadline_ms`
    /// (then stop them as transient failures) and leave.
    Drain {
        /// How long the worker has to finish its running jobs, in ms.
        deadline_ms: u64,
    },
    /// Answer to [`ToMaster::Ping`]: the worker's lease now runs until its
    /// own `sent_ms` plus `lease_ms` (docs/PROTOCOL.md, "Leases").
    Pong {
        /// The `sent_ms` of the `Ping` answered, echoed.
        sent_ms: u64,
        /// How long the lease runs from `sent_ms`, in ms.
        lease_ms: u64,
    },
    /// The master has durably applied (or already had) this `Finished`: the
    /// worker may drop it from its outbox.
    Ack(AttemptRef),
}

/// Worker → master. Every message about a job carries its fencing token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub enum ToMaster {
    /// The worker's first message on a connection: who it is, what it
    /// offers and which attempts it still holds.
    Hello {
        /// The node's stable id.
        node_id: NodeId,
        /// The worker's [`PROTOCOL_VERSION`]; another version is refused.
        protocol_version: u32,
        /// How many jobs the worker runs at once.
        slots: u32,
        /// Its probed encoders, cores, memory and quality metrics.
        capabilities: Capabilities,
        /// Attempts whose FFmpeg runs on this worker now (a reconnecting
        /// worker's; empty for a fresh process).
        running: Vec<AttemptRef>,
        /// Attempts whose `Finished` sits in the worker's outbox, not yet
        /// acknowledged; they follow the hello.
        unacked: Vec<AttemptRef>,
    },
    /// Lease renewal request.
    Ping {
        /// The worker's monotonic clock when it sent the ping, in ms.
        sent_ms: u64,
    },
    /// FFmpeg started for this attempt.
    Started {
        /// The attempt's job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// How FFmpeg was isolated (which cgroup version, or none).
        isolation: Isolation,
    },
    /// FFmpeg's latest `-progress` block for this attempt.
    Progress {
        /// The attempt's job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// Frames, rate, speed and output time so far.
        progress: Progress,
    },
    /// The attempt ended; kept in the worker's outbox until `Ack`ed.
    Finished {
        /// The attempt's job.
        job_id: JobId,
        /// The attempt's fencing token.
        token: u64,
        /// How the attempt ended.
        outcome: Outcome,
        /// What the attempt cost, when the worker samples power.
        energy: Option<Energy>,
    },
    /// The worker is draining (asked to, or on SIGTERM): assign it nothing.
    Draining,
    /// The node's power by domain and its energy totals (about once a second).
    Power(NodePower),
}

/// Errors decoding a message: malformed input is rejected, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The message is longer than [`MAX_MESSAGE_BYTES`] (its length given).
    #[error("message of {0} bytes exceeds the maximum of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// bincode could not encode or decode it (bincode's error given).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message decoded but bytes were left over (their count given).
    #[error("trailing bytes after message: {0}")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encodes `msg` with bincode (standard configuration); refuses a message
/// over [`MAX_MESSAGE_BYTES`].
pub fn encode<T: Encode>(msg: &T) -> Result<Vec<u8>, WireError> {
    let bytes =
        bincode::encode_to_vec(msg, config()).map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes one message that must fill `bytes` exactly: too long, malformed
/// and trailing bytes are errors, never a panic.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (msg, used) = bincode::decode_from_slice(bytes, config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(WireError::Trailing(bytes.len() - used));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests;
