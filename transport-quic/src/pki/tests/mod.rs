//! Tests of the PKI, by topic; the helpers they share are here.

use std::sync::Arc;

use proptest::prelude::*;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::UnixTime;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::cert::cert_common_name;
use super::crypto::{hex, sha256};
use super::*;

const HOUR: Duration = Duration::from_secs(3600);
const NOW_MS: u64 = 1_700_000_000_000;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn init_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &[]).unwrap();
    dir
}

fn client_verifier(ca_pem: &str) -> Arc<dyn ClientCertVerifier> {
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store_from_pem(ca_pem).unwrap()),
        provider(),
    )
    .build()
    .unwrap()
}

fn server_verifier(ca_pem: &str) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(root_store_from_pem(ca_pem).unwrap()),
        provider(),
    )
    .build()
    .unwrap()
}

fn cert_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn issue(dir: &Path, node_id: &str) -> NodeIdentity {
    let ca = CertificateAuthority::load(dir).unwrap();
    let (key_pem, csr_pem) = new_key_and_csr(node_id).unwrap();
    let cert_pem = ca.issue_node_cert(node_id, &csr_pem).unwrap();
    NodeIdentity {
        cert_pem,
        key_pem,
        ca_pem: ca.cert_pem().to_string(),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

mod ca;
mod cert;
mod identity;
mod token;
mod verify;
