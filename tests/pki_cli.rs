//! `ffrtmp-node pki init|join-token`: what an operator types to set up a cluster.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ffrtmp-node");

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[test]
fn pki_init_then_join_token_produces_a_token_the_master_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let out = Command::new(BIN)
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .expect("run pki init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.pem", "ca.key", "master.pem", "master.key"] {
        assert!(pki.join(f).is_file(), "{f} written");
    }
    // A second init must not replace the CA.
    let ca_before = std::fs::read(pki.join("ca.pem")).expect("ca");
    let again = Command::new(BIN)
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .expect("run pki init again");
    assert!(!again.status.success(), "refuses to overwrite");
    assert!(
        !String::from_utf8_lossy(&again.stderr).is_empty(),
        "says why"
    );
    assert_eq!(std::fs::read(pki.join("ca.pem")).expect("ca"), ca_before);

    let out = Command::new(BIN)
        .args(["pki", "join-token", "--dir"])
        .arg(&pki)
        .output()
        .expect("run join-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stdout:?}");
    let token = ffrtmp_transport_quic::pki::JoinToken::parse(lines[0]).expect("a token");
    ffrtmp_transport_quic::pki::verify_join_token(&pki, &token, now_ms())
        .expect("the master accepts it");
    let ca = ffrtmp_transport_quic::pki::CertificateAuthority::load(&pki).expect("ca");
    assert_eq!(
        token.ca_fingerprint,
        ca.fingerprint(),
        "the token pins this CA"
    );
}

#[test]
fn join_token_without_a_pki_dir_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["pki", "join-token", "--dir"])
        .arg(dir.path().join("missing"))
        .output()
        .expect("run join-token");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "no token printed"
    );
}
