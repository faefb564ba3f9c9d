//! Node id rules and certificate parsing of garbage.

use super::*;

#[test]
fn node_id_validation() {
    for ok in ["a", "w1", "worker-01", "0", &"a".repeat(64), "a-", "x--y"] {
        validate_node_id(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "",
        "-a",
        "A",
        "w_1",
        "w.1",
        "w 1",
        "wé",
        "../x",
        "a/b",
        &"a".repeat(65),
    ] {
        assert!(
            matches!(validate_node_id(bad), Err(PkiError::InvalidNodeId { .. })),
            "{bad:?}"
        );
    }
    assert!(new_key_and_csr("Bad").is_err());
}

#[test]
fn garbage_certificates_are_errors() {
    for input in [
        &[][..],
        &[0x30],
        &[0x30, 0x85, 1, 2, 3, 4, 5],
        &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        &[0x30, 0x03, 0x30, 0x01],
        &[0x1f, 0x00],
    ] {
        assert!(cert_common_name(input, "x").is_err());
        assert!(node_id_of_cert(input).is_none());
    }
}

proptest! {
    #[test]
    fn certificate_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = cert_common_name(&bytes, "fuzz");
    }

    #[test]
    fn validate_node_id_never_panics(s in ".{0,80}") {
        let _ = validate_node_id(&s);
    }
}
