//! What rustls makes of the certificates we issue: client and server
//! verification, foreign CAs, the pinned CA in the master's chain.

use super::*;

#[test]
fn issued_node_cert_verifies_as_client_cert_with_rustls() {
    let dir = init_dir();
    let id = issue(dir.path(), "worker-1");
    let verifier = client_verifier(&id.ca_pem);
    verifier
        .verify_client_cert(&cert_der(&id.cert_pem), &[], UnixTime::now())
        .unwrap();
    // The key works for rustls too.
    id.private_key().unwrap();
    assert_eq!(id.cert_chain().unwrap().len(), 2);
}

#[test]
fn master_cert_verifies_as_server_cert_for_name_and_loopback() {
    let dir = tempfile::tempdir().unwrap();
    init(
        dir.path(),
        &["10.9.8.7".into(), "master.example.org".into()],
    )
    .unwrap();
    let master = master_identity(dir.path()).unwrap();
    let verifier = server_verifier(&master.ca_pem);
    let leaf = cert_der(&master.cert_pem);
    for name in [
        MASTER_SERVER_NAME,
        "127.0.0.1",
        "::1",
        "localhost",
        "10.9.8.7",
        "master.example.org",
    ] {
        let sn = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &sn, &[], UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let other = ServerName::try_from("other.example.org").unwrap();
    assert!(verifier
        .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
        .is_err());
    // The master's own cert, presented as a client, also verifies.
    client_verifier(&master.ca_pem)
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .unwrap();
}

#[test]
fn node_cert_is_not_a_server_cert() {
    let dir = init_dir();
    let id = issue(dir.path(), "ffrtmp-master-x");
    let sn = ServerName::try_from(MASTER_SERVER_NAME).unwrap();
    assert!(server_verifier(&id.ca_pem)
        .verify_server_cert(&cert_der(&id.cert_pem), &[], &sn, &[], UnixTime::now())
        .is_err());
}

#[test]
fn certs_from_another_ca_fail_verification() {
    let ours = init_dir();
    let theirs = init_dir();
    let our_ca = fs::read_to_string(ours.path().join(CA_CERT_FILE)).unwrap();
    let foreign_node = issue(theirs.path(), "intruder");
    let foreign_master = master_identity(theirs.path()).unwrap();

    assert!(client_verifier(&our_ca)
        .verify_client_cert(&cert_der(&foreign_node.cert_pem), &[], UnixTime::now())
        .is_err());
    let sn = ServerName::try_from(MASTER_SERVER_NAME).unwrap();
    assert!(server_verifier(&our_ca)
        .verify_server_cert(
            &cert_der(&foreign_master.cert_pem),
            &[],
            &sn,
            &[],
            UnixTime::now()
        )
        .is_err());
    // Presenting the foreign CA as an intermediate does not help.
    let chain = foreign_master.cert_chain().unwrap();
    assert!(server_verifier(&our_ca)
        .verify_server_cert(&chain[0], &chain[1..], &sn, &[], UnixTime::now())
        .is_err());
}

#[test]
fn pinned_ca_is_found_in_the_masters_chain() {
    let dir = init_dir();
    let ca = CertificateAuthority::load(dir.path()).unwrap();
    let chain = master_identity(dir.path()).unwrap().cert_chain().unwrap();
    let found = find_pinned_ca(&chain, &ca.fingerprint()).unwrap();
    assert_eq!(found.as_ref(), ca.cert_der().as_ref());
    let other = init_dir();
    let other_fp = CertificateAuthority::load(other.path())
        .unwrap()
        .fingerprint();
    assert!(find_pinned_ca(&chain, &other_fp).is_none());
}
