//! Every decoder of the handshake and join exchanges on arbitrary bytes: the
//! master's `decode_hello` (envelope, version, then the `ToMaster::Hello`)
//! and `decode_join_request` (then the token and node id checks it runs
//! next), and the worker's `decode_hello_reply` / `decode_join_reply`.
#![no_main]

use ffrtmp_runtime::wire::{ToMaster, PROTOCOL_VERSION};
use ffrtmp_transport_quic::endpoint::{close, decode_hello, decode_hello_reply, HelloError};
use ffrtmp_transport_quic::join::{decode_join_reply, decode_join_request};
use ffrtmp_transport_quic::pki::{validate_node_id, JoinToken};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_hello(data) {
        Ok(ToMaster::Hello { .. }) => {}
        Ok(other) => panic!("accepted a non-hello: {other:?}"),
        Err(HelloError::Version { ours, theirs }) => {
            assert_eq!(ours, PROTOCOL_VERSION);
            assert_ne!(theirs, PROTOCOL_VERSION);
        }
        Err(e) => assert_eq!(e.close_code(), close::BAD_HELLO),
    }
    let _ = decode_hello_reply(data);
    if let Ok(req) = decode_join_request(data) {
        let _ = JoinToken::parse(&req.token);
        let _ = validate_node_id(&req.node_id);
    }
    let _ = decode_join_reply(data);
});
