//! Certificates and names: PEM/DER parsing, the node id a certificate
//! carries, fingerprints, the pinned CA of a join, node id rules.

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::crypto::{ct_eq, hex, sha256};
use super::error::PkiError;

/// DNS name every master certificate carries; workers verify the master against it whatever address they dial.
pub const MASTER_SERVER_NAME: &str = "ffrtmp-master";

/// Suffix of the DNS SAN of node certificates: node `w1` gets `w1.node.ffrtmp`.
pub const NODE_DNS_SUFFIX: &str = ".node.ffrtmp";

/// Parses the first certificate of a PEM string.
pub(super) fn parse_cert_pem(pem: &str, what: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::InvalidCertificate {
        what: what.to_string(),
        reason: format!("no PEM certificate found ({e})"),
    })
}

/// Parses a PEM PKCS#8 private key into an rcgen key pair.
pub(super) fn parse_key_pem(pem: &str, what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem).map_err(|e| PkiError::InvalidKey {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Parses a DER certificate (x509-parser).
fn parse_cert<'a>(
    cert_der: &'a [u8],
    what: &str,
) -> Result<x509_parser::certificate::X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(cert_der)
        .map(|(_, c)| c)
        .map_err(|e| PkiError::InvalidCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        })
}

/// Checks that `key` is the private key of `cert_der`'s public key.
pub(super) fn check_key_matches(
    key: &KeyPair,
    cert_der: &[u8],
    key_what: &str,
    cert_what: &str,
) -> Result<(), PkiError> {
    let cert = parse_cert(cert_der, cert_what)?;
    if key.subject_public_key_info() != cert.public_key().raw {
        return Err(PkiError::KeyMismatch {
            key: key_what.to_string(),
            cert: cert_what.to_string(),
        });
    }
    Ok(())
}

/// The single commonName of a certificate.
pub(super) fn cert_common_name(cert_der: &[u8], what: &str) -> Result<String, PkiError> {
    let invalid = |reason: &str| PkiError::InvalidCertificate {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    let cert = parse_cert(cert_der, what)?;
    let cns: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|cn| {
            cn.as_str()
                .map_err(|_| invalid("the common name is not a string"))
        })
        .collect::<Result<_, _>>()?;
    match cns.as_slice() {
        [cn] => Ok((*cn).to_string()),
        [] => Err(invalid("the subject has no common name")),
        _ => Err(invalid("the subject has several common names")),
    }
}

/// The node id a verified client certificate (DER) carries: its CN.
/// `None` for anything unparsable or without exactly one CN.
pub fn node_id_of_cert(cert_der: &[u8]) -> Option<String> {
    cert_common_name(cert_der, "peer certificate").ok()
}

/// Fingerprint of a DER certificate: lowercase hex SHA-256 of the DER.
pub fn fingerprint_der(cert_der: &[u8]) -> String {
    hex(&sha256(cert_der))
}

/// Fingerprint of a PEM certificate (same format as above).
///
/// The fingerprint of the first certificate in `cert_pem`: lowercase hex
/// SHA-256 of its DER, 64 characters.
pub fn fingerprint_pem(cert_pem: &str) -> Result<String, PkiError> {
    let der = parse_cert_pem(cert_pem, "PEM input")?;
    Ok(fingerprint_der(&der))
}

/// Finds, among certificates a peer presented (e.g. the master's chain), the
/// one whose fingerprint is `fingerprint` (as in a join token). A joining
/// worker uses it as the only trust root to verify the master.
pub fn find_pinned_ca<'a>(
    certs: &'a [CertificateDer<'a>],
    fingerprint: &str,
) -> Option<&'a CertificateDer<'a>> {
    let want = fingerprint.to_ascii_lowercase();
    certs
        .iter()
        .find(|c| ct_eq(fingerprint_der(c).as_bytes(), want.as_bytes()))
}

/// A rustls root store holding the certificates of a PEM string (the cluster CA).
pub fn root_store_from_pem(ca_pem: &str) -> Result<rustls::RootCertStore, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| PkiError::InvalidCertificate {
            what: "CA certificate".to_string(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| PkiError::InvalidCertificate {
            what: "CA certificate".to_string(),
            reason: e.to_string(),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(PkiError::InvalidCertificate {
            what: "CA certificate".to_string(),
            reason: "no PEM certificate found".to_string(),
        });
    }
    Ok(roots)
}

/// The DNS SAN a node certificate carries: `<node_id>.node.ffrtmp`.
pub fn node_dns_name(node_id: &str) -> String {
    format!("{node_id}{NODE_DNS_SUFFIX}")
}

/// Node ids are safe names: 1..=64 chars of [a-z0-9-], not starting with '-'.
pub fn validate_node_id(id: &str) -> Result<(), PkiError> {
    let bad = |reason| {
        Err(PkiError::InvalidNodeId {
            id: id.chars().take(80).collect(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > 64 {
        return bad("longer than 64 characters");
    }
    if id.starts_with('-') {
        return bad("starts with '-'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only a-z, 0-9 and '-' are allowed");
    }
    Ok(())
}
