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
