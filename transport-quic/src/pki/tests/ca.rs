//! `init`, loading the CA, issuing node certificates.

use super::*;

#[test]
fn init_creates_files_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("pki");
    init(&dir, &["master.example.org".into(), "10.1.2.3".into()]).unwrap();
    for f in [CA_CERT_FILE, CA_KEY_FILE, MASTER_CERT_FILE, MASTER_KEY_FILE] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(MASTER_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let master = master_identity(&dir).unwrap();
    assert_eq!(master.node_id().unwrap(), MASTER_SERVER_NAME);
    assert_eq!(
        master.ca_fingerprint().unwrap(),
        CertificateAuthority::load(&dir).unwrap().fingerprint()
    );
}

#[test]
fn init_refuses_to_run_twice() {
    let dir = init_dir();
    let ca_before = fs::read(dir.path().join(CA_CERT_FILE)).unwrap();
    let err = init(dir.path(), &[]).unwrap_err();
    assert!(matches!(err, PkiError::AlreadyInitialized { .. }), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(fs::read(dir.path().join(CA_CERT_FILE)).unwrap(), ca_before);
}

#[test]
fn init_refuses_a_bad_san_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let err = init(tmp.path(), &["not a name".into()]).unwrap_err();
    assert!(matches!(err, PkiError::InvalidSan(_)), "{err}");
    assert!(!tmp.path().join(CA_KEY_FILE).exists());
}

#[test]
fn fingerprint_is_lowercase_sha256_hex() {
    let dir = init_dir();
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let fp = ca.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(fingerprint_pem(ca.cert_pem()).unwrap(), fp);
    assert_eq!(fp, fingerprint_der(&cert_der(ca.cert_pem())));
    assert!(fingerprint_pem("not a pem").is_err());
}

#[test]
fn a_node_cert_issued_for_a_past_window_is_refused_as_expired() {
    let dir = init_dir();
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let (_key, csr) = new_key_and_csr("worker-old").unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let pem = ca
        .issue_node_cert_valid_between("worker-old", &csr, now - 2 * day, now - day)
        .unwrap();
    let err = client_verifier(ca.cert_pem())
        .verify_client_cert(&cert_der(&pem), &[], UnixTime::now())
        .unwrap_err();
    assert!(format!("{err:?}").contains("Expired"), "{err:?}");
    let err = ca
        .issue_node_cert_valid_between("worker-old", &csr, now, now - day)
        .unwrap_err();
    assert!(err.to_string().contains("ends before it begins"), "{err}");
}

#[test]
fn issue_ignores_the_csr_subject_and_sans() {
    let dir = init_dir();
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    // A CSR asking to be the master, with the master's SANs and CA rights.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(vec![MASTER_SERVER_NAME.to_string(), "127.0.0.1".into()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, MASTER_SERVER_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let cert_pem = ca.issue_node_cert("worker-7", &csr).unwrap();
    let id = NodeIdentity {
        cert_pem,
        key_pem: key.serialize_pem(),
        ca_pem: ca.cert_pem().to_string(),
    };
    assert_eq!(id.node_id().unwrap(), "worker-7");
    let leaf = cert_der(&id.cert_pem);
    let sv = server_verifier(&id.ca_pem);
    for name in [MASTER_SERVER_NAME, "127.0.0.1", "worker-7.node.ffrtmp"] {
        let sn = ServerName::try_from(name).unwrap();
        assert!(
            sv.verify_server_cert(&leaf, &[], &sn, &[], UnixTime::now())
                .is_err(),
            "{name}"
        );
    }
    client_verifier(&id.ca_pem)
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .unwrap();
    // The issued cert cannot sign: a cert "issued" by it is rejected.
    let issuer = Issuer::from_ca_cert_pem(&id.cert_pem, &key).unwrap();
    let key2 = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p2 = CertificateParams::default();
    p2.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let sub = p2.signed_by(&key2, &issuer).unwrap();
    assert!(client_verifier(&id.ca_pem)
        .verify_client_cert(sub.der(), &[leaf], UnixTime::now())
        .is_err());
}

#[test]
fn issue_rejects_bad_input() {
    let dir = init_dir();
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let (_, csr) = new_key_and_csr("w1").unwrap();
    assert!(matches!(
        ca.issue_node_cert("Bad_Id", &csr),
        Err(PkiError::InvalidNodeId { .. })
    ));
    assert!(matches!(
        ca.issue_node_cert(MASTER_SERVER_NAME, &csr),
        Err(PkiError::InvalidNodeId { .. })
    ));
    assert!(matches!(
        ca.issue_node_cert("w1", "garbage"),
        Err(PkiError::InvalidCsr(_))
    ));
    // A CSR whose signature does not match (body tampered).
    let mut tampered = csr.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(ca.issue_node_cert("w1", &tampered).is_err());
    assert!(ca.issue_node_cert("w1", &"A".repeat(100_000)).is_err());
}

#[test]
fn missing_ca_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = CertificateAuthority::load(tmp.path()).unwrap_err();
    assert!(err.to_string().contains(CA_CERT_FILE), "{err}");
    let err = master_identity(tmp.path()).unwrap_err();
    assert!(matches!(err, PkiError::MissingFile { .. }), "{err}");
}

#[test]
fn ca_load_rejects_mismatched_key() {
    let a = init_dir();
    let b = init_dir();
    fs::copy(b.path().join(CA_KEY_FILE), a.path().join(CA_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load(a.path()).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
}
