//! Decoders under attack: the master's decoding of a worker's hello and join
//! request, and the worker's decoding of the master's answers, fed arbitrary
//! bytes and mutated valid frames. These are the functions `accept`,
//! `connect` and the join exchange run on what they read from the network.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use ffrtmp_runtime::wire::{self, AttemptRef, Capabilities, ToMaster, PROTOCOL_VERSION};
use ffrtmp_transport_quic::endpoint::{
    close, decode_hello, decode_hello_reply, encode_hello, encode_hello_reply, HelloError,
    HelloReply, TransportError,
};
use ffrtmp_transport_quic::join::{
    decode_join_reply, decode_join_request, encode_join_reply, encode_join_request, JoinReply,
    JoinRequest,
};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9é._ -]{0,40}"
}

fn hello() -> impl Strategy<Value = ToMaster> {
    (
        text(),
        any::<u32>(),
        prop::collection::vec(text(), 0..4),
        prop::collection::vec((text(), any::<u64>()), 0..4),
    )
        .prop_map(|(node_id, slots, encoders, running)| ToMaster::Hello {
            node_id,
            protocol_version: PROTOCOL_VERSION,
            slots,
            capabilities: Capabilities {
                encoders,
                cores: slots,
                memory_bytes: u64::from(slots) * 1024,
                unavailable_encoders: Vec::new(),
                metrics: Vec::new(),
            },
            unacked: running
                .iter()
                .rev()
                .map(|(job_id, token)| AttemptRef {
                    job_id: job_id.clone(),
                    token: token.wrapping_add(1),
                })
                .collect(),
            running: running
                .into_iter()
                .map(|(job_id, token)| AttemptRef { job_id, token })
                .collect(),
        })
}

fn join_request() -> impl Strategy<Value = JoinRequest> {
    (text(), text(), text()).prop_map(|(token, node_id, csr_pem)| JoinRequest {
        token,
        node_id,
        csr_pem,
    })
}

fn join_reply() -> impl Strategy<Value = JoinReply> {
    (any::<bool>(), text(), text(), text()).prop_map(|(accepted, reason, cert_pem, ca_pem)| {
        JoinReply {
            accepted,
            reason,
            cert_pem,
            ca_pem,
        }
    })
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, bool)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..6)
}

/// Flip bits in, or overwrite, bytes of a valid frame (its length and
/// version fields included).
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

/// The only hellos `decode_hello` lets through: a `ToMaster::Hello`.
fn hello_or_refused(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode_hello(bytes) {
        Ok(ToMaster::Hello { .. }) => {}
        Ok(other) => prop_assert!(false, "accepted a non-hello: {:?}", other),
        Err(e) => {
            let code = e.close_code();
            prop_assert!(code == close::BAD_HELLO || code == close::VERSION_MISMATCH);
            prop_assert!(!e.to_string().is_empty());
            // The transport error the master returns keeps the kind.
            let t = TransportError::from(e.clone());
            match e {
                HelloError::Version { ours, theirs } => {
                    prop_assert_eq!(ours, PROTOCOL_VERSION);
                    prop_assert_ne!(theirs, PROTOCOL_VERSION);
                    prop_assert!(
                        matches!(t, TransportError::VersionMismatch { .. }),
                        "{:?}",
                        t
                    );
                }
                HelloError::Envelope(_) | HelloError::NotHello => {
                    prop_assert!(matches!(t, TransportError::Malformed(_)));
                }
            }
        }
    }
    Ok(())
}

/// Every decoder in the handshake and join exchanges, on the same bytes.
fn all_decoders_cope(bytes: &[u8]) -> Result<(), TestCaseError> {
    hello_or_refused(bytes)?;
    let _ = decode_hello_reply(bytes);
    if let Ok(req) = decode_join_request(bytes) {
        // What the master does next with the request's strings.
        let _ = ffrtmp_transport_quic::pki::JoinToken::parse(&req.token);
        let _ = ffrtmp_transport_quic::pki::validate_node_id(&req.node_id);
    }
    let _ = decode_join_reply(bytes);
    Ok(())
}

/// All strict prefixes refused (the frozen layouts are bincode, which is
/// prefix-free, and the decoders refuse trailing bytes), as is any suffix.
fn prefixes_and_suffixes_refused<T: std::fmt::Debug>(
    bytes: &[u8],
    extra: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, TransportError>,
) -> Result<(), TestCaseError> {
    for cut in 0..bytes.len() {
        prop_assert!(decode(&bytes[..cut]).is_err(), "prefix of {} bytes", cut);
    }
    if !extra.is_empty() {
        let mut long = bytes.to_vec();
        long.extend_from_slice(extra);
        prop_assert!(
            matches!(decode(&long), Err(TransportError::Malformed(_))),
            "trailing bytes accepted"
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        all_decoders_cope(&bytes)?;
    }

    #[test]
    fn a_valid_hello_round_trips_and_its_mutations_are_refused_or_hellos(
        h in hello(),
        extra in prop::collection::vec(any::<u8>(), 0..8),
        edits in edits(),
    ) {
        let frame = encode_hello(PROTOCOL_VERSION, &h).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode_hello(&frame), Ok(h));
        for cut in 0..frame.len() {
            prop_assert!(
                matches!(decode_hello(&frame[..cut]), Err(HelloError::Envelope(_))),
                "prefix of {} bytes", cut
            );
        }
        let mut long = frame.clone();
        long.extend_from_slice(&extra);
        if !extra.is_empty() {
            prop_assert!(matches!(decode_hello(&long), Err(HelloError::Envelope(_))));
        }
        all_decoders_cope(&mutate(&frame, &edits))?;
    }

    /// The version is checked before the payload is even looked at: a
    /// worker of another version learns why, whatever it sent.
    #[test]
    fn another_version_is_refused_as_a_mismatch(
        h in hello(),
        version in any::<u32>().prop_filter("not ours", |v| *v != PROTOCOL_VERSION),
    ) {
        let frame = encode_hello(version, &h).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let err = decode_hello(&frame).err();
        prop_assert_eq!(
            err.clone(),
            Some(HelloError::Version { ours: PROTOCOL_VERSION, theirs: version })
        );
        prop_assert_eq!(err.map(|e| e.close_code()), Some(close::VERSION_MISMATCH));
    }

    /// A well-formed envelope of our version whose payload is any other
    /// message (or junk) is `NotHello`.
    #[test]
    fn a_non_hello_payload_is_refused(sent_ms in any::<u64>(), junk in prop::collection::vec(any::<u8>(), 0..64)) {
        for msg in [ToMaster::Ping { sent_ms }, ToMaster::Draining] {
            let frame = encode_hello(PROTOCOL_VERSION, &msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode_hello(&frame), Err(HelloError::NotHello));
        }
        // Junk as the payload: built by hand with the frozen layout
        // (varint version, varint length, bytes).
        let mut frame = vec![PROTOCOL_VERSION as u8, junk.len() as u8];
        frame.extend_from_slice(&junk);
        let res = decode_hello(&frame);
        match wire::decode::<ToMaster>(&junk) {
            Ok(h @ ToMaster::Hello { .. }) => prop_assert_eq!(res, Ok(h)),
            _ => prop_assert_eq!(res, Err(HelloError::NotHello)),
        }
    }

    #[test]
    fn replies_and_join_messages_round_trip_and_refuse_prefixes(
        version in any::<u32>(),
        accepted in any::<bool>(),
        reason in text(),
        req in join_request(),
        jr in join_reply(),
        extra in prop::collection::vec(any::<u8>(), 0..8),
        edits in edits(),
    ) {
        let fail = |e: TransportError| TestCaseError::fail(e.to_string());
        let reply = HelloReply { protocol_version: version, accepted, reason };
        let bytes = encode_hello_reply(&reply).map_err(fail)?;
        prop_assert_eq!(decode_hello_reply(&bytes).map_err(fail)?, reply);
        prefixes_and_suffixes_refused(&bytes, &extra, decode_hello_reply)?;
        all_decoders_cope(&mutate(&bytes, &edits))?;

        let bytes = encode_join_request(&req).map_err(fail)?;
        prop_assert_eq!(decode_join_request(&bytes).map_err(fail)?, req);
        prefixes_and_suffixes_refused(&bytes, &extra, decode_join_request)?;
        all_decoders_cope(&mutate(&bytes, &edits))?;

        let bytes = encode_join_reply(&jr).map_err(fail)?;
        prop_assert_eq!(decode_join_reply(&bytes).map_err(fail)?, jr);
        prefixes_and_suffixes_refused(&bytes, &extra, decode_join_reply)?;
        all_decoders_cope(&mutate(&bytes, &edits))?;
    }

    /// A string length claiming more than the 64 KiB hello limit is refused
    /// from the claim, however little follows it.
    #[test]
    fn huge_length_claims_are_refused(claim in (64u64 * 1024 + 1)..u64::MAX, tail in prop::collection::vec(any::<u8>(), 0..32)) {
        // JoinRequest { token: String, .. }: the token's length comes first,
        // here as a u64 varint (tag 253).
        let mut forged = vec![253];
        forged.extend_from_slice(&claim.to_le_bytes());
        forged.extend_from_slice(&tail);
        prop_assert!(matches!(decode_join_request(&forged), Err(TransportError::Malformed(_))));
        // HelloEnvelope { protocol_version, hello: Vec<u8> }.
        let mut forged = vec![PROTOCOL_VERSION as u8, 253];
        forged.extend_from_slice(&claim.to_le_bytes());
        forged.extend_from_slice(&tail);
        prop_assert!(matches!(decode_hello(&forged), Err(HelloError::Envelope(_))));
    }
}
