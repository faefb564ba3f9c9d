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
    pub job_id: JobId,
    pub attempt: u32,
    /// Fencing token, stored with the job before the worker is told.
    pub token: u64,
    pub spec: JobSpec,
}

/// What a worker offers.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode, utoipa::ToSchema,
)]
pub struct Capabilities {
    /// FFmpeg encoders that passed a real test encode.
    pub encoders: Vec<String>,
    pub cores: u32,
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
    pub job_id: JobId,
    pub token: u64,
}

/// Master → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub enum ToWorker {
    Assign(Box<Assignment>),
    /// A user cancelled the job.
    Cancel {
        job_id: JobId,
        token: u64,
    },
    /// The worker spoke about an attempt the master no longer recognises: kill it.
    Kill {
        job_id: JobId,
        token: u64,
    },
    /// Take no new jobs; finish the running ones within `deadline_ms`
    /// (then stop them as transient failures) and leave.
    Drain {
        deadline_ms: u64,
    },
    /// Answer to [`ToMaster::Ping`]: the worker's lease now runs until its
    /// own `sent_ms` plus `lease_ms` (docs/PROTOCOL.md, "Leases").
    Pong {
        sent_ms: u64,
        lease_ms: u64,
    },
    /// The master has durably applied (or already had) this `Finished`: the
    /// worker may drop it from its outbox.
    Ack(AttemptRef),
}

/// Worker → master. Every message about a job carries its fencing token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub enum ToMaster {
    Hello {
        node_id: NodeId,
        protocol_version: u32,
        slots: u32,
        capabilities: Capabilities,
        /// Attempts whose FFmpeg runs on this worker now (a reconnecting
        /// worker's; empty for a fresh process).
        running: Vec<AttemptRef>,
        /// Attempts whose `Finished` sits in the worker's outbox, not yet
        /// acknowledged; they follow the hello.
        unacked: Vec<AttemptRef>,
    },
    /// Lease renewal request; `sent_ms` is the worker's monotonic clock.
    Ping { sent_ms: u64 },
    Started {
        job_id: JobId,
        token: u64,
        isolation: Isolation,
    },
    Progress {
        job_id: JobId,
        token: u64,
        progress: Progress,
    },
    Finished {
        job_id: JobId,
        token: u64,
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
    #[error("message of {0} bytes exceeds the maximum of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("trailing bytes after message: {0}")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

pub fn encode<T: Encode>(msg: &T) -> Result<Vec<u8>, WireError> {
    let bytes =
        bincode::encode_to_vec(msg, config()).map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

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
mod tests {
    use super::*;
    use crate::model::{Input, Output};

    fn spec() -> JobSpec {
        crate::test_util::test_spec()
    }

    #[test]
    fn round_trips_an_assignment() {
        let msg = ToWorker::Assign(Box::new(Assignment {
            job_id: "j1".into(),
            attempt: 2,
            token: 77,
            spec: spec(),
        }));
        let bytes = encode(&msg).expect("encode");
        let back: ToWorker = decode(&bytes).expect("decode");
        assert_eq!(back, msg);
    }

    #[test]
    fn round_trips_internally_tagged_enums() {
        use crate::model::{Failure, FailureReason, Outcome};
        let msg = ToMaster::Finished {
            job_id: "j1".into(),
            token: 9,
            outcome: Outcome::Transient {
                failure: Failure::new(FailureReason::Stalled, "no progress"),
            },
            energy: None,
        };
        let back: ToMaster = decode(&encode(&msg).expect("encode")).expect("decode");
        assert_eq!(back, msg);
        let mut s = spec();
        s.input = Input::File {
            path: "/media/in.mp4".into(),
        };
        s.output = Output::Rtmp {
            url: "rtmp://127.0.0.1/live/x".into(),
        };
        let a = ToWorker::Assign(Box::new(Assignment {
            job_id: "j2".into(),
            attempt: 1,
            token: 1,
            spec: s,
        }));
        let back: ToWorker = decode(&encode(&a).expect("encode")).expect("decode");
        assert_eq!(back, a);
    }

    #[test]
    fn rejects_truncated_and_garbage_input_without_panicking() {
        let bytes = encode(&ToWorker::Cancel {
            job_id: "j1".into(),
            token: 5,
        })
        .expect("encode");
        for cut in 0..bytes.len() {
            assert!(decode::<ToWorker>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode::<ToMaster>(&[0xff; 64]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<ToWorker>(&long),
            Err(WireError::Trailing(1))
        ));
    }

    #[test]
    fn rejects_oversize_input() {
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode::<ToWorker>(&big),
            Err(WireError::TooLarge(_))
        ));
    }

    // --- properties: decoders under attack ------------------------------

    use crate::model::{
        DomainEnergy, DomainPower, Failure, FailureReason, JobResult, PowerSource, Priority,
    };
    use proptest::prelude::*;

    fn finite() -> impl Strategy<Value = f64> {
        -1e12f64..1e12
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-z0-9é/._-]{0,24}"
    }

    fn attempt_ref() -> impl Strategy<Value = AttemptRef> {
        (text(), any::<u64>()).prop_map(|(job_id, token)| AttemptRef { job_id, token })
    }

    fn failure() -> impl Strategy<Value = Failure> {
        (
            prop::sample::select(vec![
                FailureReason::FfmpegError,
                FailureReason::Stalled,
                FailureReason::NodeLost,
                FailureReason::RetriesExhausted,
            ]),
            text(),
            any::<Option<i32>>(),
            prop::collection::vec(text(), 0..3),
        )
            .prop_map(|(reason, message, exit_code, stderr_tail)| Failure {
                reason,
                message,
                exit_code,
                signal: exit_code.map(|c| c.wrapping_neg()),
                stderr_tail,
            })
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            (
                any::<i32>(),
                finite(),
                any::<u64>(),
                prop::option::of(finite())
            )
                .prop_map(|(exit_code, wall_s, frames, speed)| Outcome::Succeeded {
                    result: JobResult {
                        exit_code,
                        wall_s,
                        frames,
                        avg_fps: wall_s / 2.0,
                        speed,
                        output_bytes: Some(frames),
                        output_bitrate_kbps: speed,
                        cpu_s: None,
                        peak_memory_bytes: None,
                        output_duration_s: Some(wall_s),
                        quality: None,
                        encoder: None,
                    },
                }),
            failure().prop_map(|failure| Outcome::Failed { failure }),
            failure().prop_map(|failure| Outcome::Transient { failure }),
            failure().prop_map(|failure| Outcome::TimedOut { failure }),
            Just(Outcome::Cancelled),
        ]
    }

    fn energy() -> impl Strategy<Value = Energy> {
        (finite(), text(), any::<bool>(), prop::option::of(finite())).prop_map(
            |(joules, energy_source, estimate, per_frame)| Energy {
                energy_joules: joules,
                mean_power_watts: joules / 3.0,
                energy_source,
                estimate,
                measured_s: 3.0,
                joules_per_frame: per_frame,
                joules_per_output_minute: None,
                domains: vec![DomainEnergy {
                    domain: "package-0".into(),
                    source: PowerSource::Rapl,
                    joules,
                }],
            },
        )
    }

    fn job_spec() -> impl Strategy<Value = JobSpec> {
        (
            any::<u32>(),
            any::<u32>(),
            prop::option::of(text()),
            prop::sample::select(Priority::ALL.to_vec()),
            prop_oneof![
                finite().prop_map(|duration_s| Input::Testsrc { duration_s }),
                text().prop_map(|p| Input::File { path: p.into() }),
            ],
            prop_oneof![
                Just(Output::Null),
                text().prop_map(|p| Output::File { path: p.into() }),
                text().prop_map(|url| Output::Rtmp { url }),
            ],
        )
            .prop_map(|(w, retries, scenario, priority, input, output)| {
                let mut s = spec();
                s.encode.width = w;
                s.max_retries = retries;
                s.scenario = scenario;
                s.priority = priority;
                s.input = input;
                s.output = output;
                s
            })
    }

    fn to_master() -> impl Strategy<Value = ToMaster> {
        prop_oneof![
            (
                text(),
                any::<u32>(),
                any::<u32>(),
                prop::collection::vec(text(), 0..4),
                prop::collection::vec(attempt_ref(), 0..4),
                prop::collection::vec(attempt_ref(), 0..4),
            )
                .prop_map(
                    |(node_id, protocol_version, slots, encoders, running, unacked)| {
                        ToMaster::Hello {
                            node_id,
                            protocol_version,
                            slots,
                            capabilities: Capabilities {
                                unavailable_encoders: encoders
                                    .iter()
                                    .map(|e| crate::ffmpeg::UnavailableEncoder {
                                        encoder: e.clone(),
                                        reason: format!("no {e}"),
                                    })
                                    .collect(),
                                encoders,
                                cores: slots,
                                memory_bytes: u64::from(slots) << 20,
                                metrics: vec![crate::model::QualityMetric::Vmaf],
                            },
                            running,
                            unacked,
                        }
                    }
                ),
            any::<u64>().prop_map(|sent_ms| ToMaster::Ping { sent_ms }),
            (text(), any::<u64>()).prop_map(|(job_id, token)| ToMaster::Started {
                job_id,
                token,
                isolation: Isolation::CgroupV2,
            }),
            (text(), any::<u64>(), finite(), prop::option::of(finite())).prop_map(
                |(job_id, token, fps, speed)| ToMaster::Progress {
                    job_id,
                    token,
                    progress: Progress {
                        frame: token,
                        fps,
                        speed,
                        out_time_s: fps,
                        percent: speed,
                        bitrate_kbps: None,
                        total_size_bytes: Some(token),
                    },
                }
            ),
            (text(), any::<u64>(), outcome(), prop::option::of(energy())).prop_map(
                |(job_id, token, outcome, energy)| ToMaster::Finished {
                    job_id,
                    token,
                    outcome,
                    energy,
                }
            ),
            Just(ToMaster::Draining),
            (finite(), any::<u64>(), prop::collection::vec(text(), 0..3)).prop_map(
                |(watts, samples, notes)| ToMaster::Power(NodePower {
                    domains: vec![DomainPower {
                        domain: "gpu-0".into(),
                        source: PowerSource::Nvml,
                        watts,
                        joules_total: watts * 2.0,
                    }],
                    watts,
                    joules_total: watts * 2.0,
                    attributed_joules_total: watts,
                    idle_joules_total: watts,
                    sample_hz: 1.0,
                    samples,
                    cycle_seconds: 0.001,
                    notes,
                })
            ),
        ]
    }

    fn to_worker() -> impl Strategy<Value = ToWorker> {
        prop_oneof![
            (text(), any::<u32>(), any::<u64>(), job_spec()).prop_map(
                |(job_id, attempt, token, spec)| ToWorker::Assign(Box::new(Assignment {
                    job_id,
                    attempt,
                    token,
                    spec,
                }))
            ),
            (text(), any::<u64>()).prop_map(|(job_id, token)| ToWorker::Cancel { job_id, token }),
            (text(), any::<u64>()).prop_map(|(job_id, token)| ToWorker::Kill { job_id, token }),
            any::<u64>().prop_map(|deadline_ms| ToWorker::Drain { deadline_ms }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(sent_ms, lease_ms)| ToWorker::Pong { sent_ms, lease_ms }),
            attempt_ref().prop_map(ToWorker::Ack),
        ]
    }

    /// What a decoder may do with hostile bytes: refuse them, or return a
    /// value whose own encoding decodes back to the same encoding (bincode
    /// accepts non-minimal varints, so the bytes themselves need not match).
    fn decoded_or_refused<T: Encode + Decode<()>>(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(v) = decode::<T>(bytes) {
            let again = encode(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(again.len() <= bytes.len(), "canonical form is never longer");
            let back: T = decode(&again).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                encode(&back).map_err(|e| TestCaseError::fail(e.to_string()))?,
                again
            );
        }
        Ok(())
    }

    /// Every strict prefix of an encoding is refused (bincode encodings are
    /// prefix-free and `decode` refuses trailing bytes), and so is any
    /// encoding with bytes appended.
    fn truncations_and_extensions_refused<T: Decode<()>>(
        bytes: &[u8],
        extra: &[u8],
    ) -> Result<(), TestCaseError> {
        for cut in 0..bytes.len() {
            prop_assert!(
                decode::<T>(&bytes[..cut]).is_err(),
                "prefix of {} bytes",
                cut
            );
        }
        if !extra.is_empty() {
            let mut long = bytes.to_vec();
            long.extend_from_slice(extra);
            prop_assert!(matches!(
                decode::<T>(&long),
                Err(WireError::Trailing(n)) if n == extra.len()
            ));
        }
        Ok(())
    }

    /// Flip bits and overwrite bytes (length prefixes included) of a valid
    /// encoding.
    fn mutate(bytes: &[u8], edits: &[(usize, u8, bool)]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        if out.is_empty() {
            return out;
        }
        for &(at, v, flip) in edits {
            let i = at % out.len();
            if flip {
                out[i] ^= 1 << (v % 8);
            } else {
                out[i] = v;
            }
        }
        out
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            decoded_or_refused::<ToMaster>(&bytes)?;
            decoded_or_refused::<ToWorker>(&bytes)?;
        }

        #[test]
        fn to_master_round_trips_and_its_mutations_are_safe(
            msg in to_master(),
            extra in prop::collection::vec(any::<u8>(), 0..8),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..6),
        ) {
            let bytes = encode(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: ToMaster = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &msg);
            truncations_and_extensions_refused::<ToMaster>(&bytes, &extra)?;
            decoded_or_refused::<ToMaster>(&mutate(&bytes, &edits))?;
            // The other direction's decoder must refuse or cope too.
            decoded_or_refused::<ToWorker>(&bytes)?;
        }

        #[test]
        fn to_worker_round_trips_and_its_mutations_are_safe(
            msg in to_worker(),
            extra in prop::collection::vec(any::<u8>(), 0..8),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..6),
        ) {
            let bytes = encode(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: ToWorker = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &msg);
            truncations_and_extensions_refused::<ToWorker>(&bytes, &extra)?;
            decoded_or_refused::<ToWorker>(&mutate(&bytes, &edits))?;
            decoded_or_refused::<ToMaster>(&bytes)?;
        }

        /// A length prefix claiming far more than the message holds is
        /// refused, not trusted (no allocation of the claimed size either:
        /// bincode's limit is checked against the claim first).
        #[test]
        fn huge_length_prefixes_are_refused(job in text(), claim in (1u64 << 20)..u64::MAX) {
            let msg = ToWorker::Cancel { job_id: job, token: 1 };
            let bytes = encode(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Variant index 1, then the job id's varint length: rewrite it
            // as a u64 varint (tag 253) claiming `claim` bytes.
            let mut forged = vec![bytes[0], 253];
            forged.extend_from_slice(&claim.to_le_bytes());
            forged.extend_from_slice(&bytes[2..]);
            prop_assert!(matches!(decode::<ToWorker>(&forged), Err(WireError::Malformed(_))));
        }
    }
}
