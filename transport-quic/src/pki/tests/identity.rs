//! Node identities on disk.

use super::*;

#[test]
fn node_identity_save_load_round_trip() {
    let pki = init_dir();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("w1");
    assert!(NodeIdentity::load(&data_dir).unwrap().is_none());
    let id = issue(pki.path(), "w1");
    id.save(&data_dir).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&data_dir.join(NODE_KEY_FILE)), 0o600);
    let loaded = NodeIdentity::load(&data_dir).unwrap().unwrap();
    assert_eq!(loaded.cert_pem, id.cert_pem);
    assert_eq!(loaded.key_pem, id.key_pem);
    assert_eq!(loaded.ca_pem, id.ca_pem);
    assert_eq!(loaded.node_id().unwrap(), "w1");
    // Saving again replaces atomically.
    let id2 = issue(pki.path(), "w1");
    id2.save(&data_dir).unwrap();
    assert_eq!(
        NodeIdentity::load(&data_dir).unwrap().unwrap().cert_pem,
        id2.cert_pem
    );
    // Debug never shows the key.
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));
}

#[test]
fn node_identity_load_detects_partial_and_mismatched_files() {
    let pki = init_dir();
    let data = tempfile::tempdir().unwrap();
    let id = issue(pki.path(), "w2");
    id.save(data.path()).unwrap();
    fs::remove_file(data.path().join(NODE_KEY_FILE)).unwrap();
    let err = NodeIdentity::load(data.path()).unwrap_err();
    assert!(
        matches!(err, PkiError::IncompleteIdentity { missing, .. } if missing == NODE_KEY_FILE),
        "{err}"
    );
    // A key that is not the certificate's.
    let (other_key, _) = new_key_and_csr("w2").unwrap();
    fs::write(data.path().join(NODE_KEY_FILE), other_key).unwrap();
    let err = NodeIdentity::load(data.path()).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains(NODE_KEY_FILE), "{err}");
    // Garbage certificate.
    fs::write(data.path().join(NODE_CERT_FILE), "junk").unwrap();
    let err = NodeIdentity::load(data.path()).unwrap_err();
    assert!(matches!(err, PkiError::InvalidCertificate { .. }), "{err}");
    // save refuses a mismatched identity.
    let bad = NodeIdentity {
        key_pem: new_key_and_csr("w2").unwrap().0,
        ..id
    };
    assert!(bad.save(data.path()).is_err());
}
