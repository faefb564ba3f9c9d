//! The cluster CA: `pki init` (CA and master certificate), loading the CA,
//! and issuing node certificates from CSRs.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, ServerName};

use super::cert::{
    check_key_matches, fingerprint_der, node_dns_name, parse_cert_pem, parse_key_pem,
    validate_node_id, MASTER_SERVER_NAME,
};
use super::crypto::{hex, random_bytes, random_serial};
use super::error::PkiError;
use super::files::{
    ensure_dir, read_to_string, warn_if_key_readable_by_others, write_atomic, CA_CERT_FILE,
    CA_KEY_FILE, MASTER_CERT_FILE, MASTER_KEY_FILE,
};

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const MASTER_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are valid from a little before their issuance, for clock skew.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Largest CSR (PEM) accepted from a peer.
const MAX_CSR_PEM_LEN: usize = 16 * 1024;

/// Sets `params` valid for `validity` from now (backdated a little for clock skew).
fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + validity;
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let tag: [u8; 4] = random_bytes()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ffrtmp");
    dn.push(
        DnType::CommonName,
        format!("ffrtmp cluster CA {}", hex(&tag)),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn master_params(extra_sans: &[String]) -> Result<CertificateParams, PkiError> {
    let mut sans: Vec<SanType> = Vec::new();
    let mut seen = BTreeSet::new();
    let base = [
        MASTER_SERVER_NAME.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for name in base.iter().chain(extra_sans) {
        let name = name.trim();
        let san = match ServerName::try_from(name) {
            Ok(ServerName::DnsName(dns)) => {
                let dns = dns.as_ref().to_ascii_lowercase();
                SanType::DnsName(
                    dns.clone()
                        .try_into()
                        .map_err(|_| PkiError::InvalidSan(name.to_string()))?,
                )
            }
            Ok(ServerName::IpAddress(ip)) => SanType::IpAddress(IpAddr::from(ip)),
            _ => return Err(PkiError::InvalidSan(name.to_string())),
        };
        if seen.insert(format!("{san:?}")) {
            sans.push(san);
        }
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ffrtmp");
    dn.push(DnType::CommonName, MASTER_SERVER_NAME);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, MASTER_VALIDITY);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Create ca.pem, ca.key, master.pem, master.key in `dir` (keys mode 0600, dir created). Refuses to overwrite an existing CA (error). `extra_sans`: extra DNS names / IP addresses for the master cert (MASTER_SERVER_NAME, "localhost", 127.0.0.1 and ::1 always included).
///
/// Nothing is written unless all four files are absent
/// ([`PkiError::AlreadyInitialized`] names the first one found); every file is
/// created without ever replacing an existing one.
pub fn init(dir: &Path, extra_sans: &[String]) -> Result<(), PkiError> {
    for name in [CA_KEY_FILE, CA_CERT_FILE, MASTER_KEY_FILE, MASTER_CERT_FILE] {
        let path = dir.join(name);
        if path.exists() {
            return Err(PkiError::AlreadyInitialized { path });
        }
    }
    // Build everything in memory first: a bad SAN writes nothing.
    let master = master_params(extra_sans)?;
    let ca = ca_params()?;

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let master_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let master_cert = master.signed_by(&master_key, &issuer)?;

    ensure_dir(dir)?;
    // The CA key last: its presence is what makes a directory "initialized".
    for (name, pem, mode) in [
        (MASTER_KEY_FILE, master_key.serialize_pem(), 0o600),
        (MASTER_CERT_FILE, master_cert.pem(), 0o644),
        (CA_CERT_FILE, ca_cert.pem(), 0o644),
        (CA_KEY_FILE, ca_key.serialize_pem(), 0o600),
    ] {
        write_atomic(&dir.join(name), pem.as_bytes(), mode, false)?;
    }
    tracing::info!(
        dir = %dir.display(),
        ca_fingerprint = %fingerprint_der(ca_cert.der()),
        "cluster PKI initialized"
    );
    Ok(())
}

/// The CA (cert + key) for signing, loaded from `dir`.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads `ca.pem` and `ca.key` from `dir` and checks that they belong together.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_to_string(&cert_path)?;
        let key_pem = read_to_string(&key_path)?;
        warn_if_key_readable_by_others(&key_path);
        let cert_what = cert_path.display().to_string();
        let key_what = key_path.display().to_string();
        let cert_der = parse_cert_pem(&cert_pem, &cert_what)?;
        let key = parse_key_pem(&key_pem, &key_what)?;
        check_key_matches(&key, &cert_der, &key_what, &cert_what)?;
        // Fail now, not at the first signing, if rcgen cannot use it as an issuer.
        Issuer::from_ca_cert_der(&cert_der, &key).map_err(|e| PkiError::InvalidCertificate {
            what: cert_what,
            reason: e.to_string(),
        })?;
        Ok(Self {
            cert_pem,
            cert_der,
            key,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Lowercase hex SHA-256 of the CA cert DER.
    pub fn fingerprint(&self) -> String {
        fingerprint_der(&self.cert_der)
    }

    /// Sign a node certificate for `node_id` from a CSR (PEM). The CSR's own subject/SANs are IGNORED: the CA sets CN = node_id and SAN DNS = "<node_id>.node.ffrtmp"; client-auth EKU; validity ~1 year; random serial.
    ///
    /// The CSR's signature is checked (proof of possession of the key), its
    /// key must be ECDSA P-256 or P-384 or Ed25519, and `node_id` must pass
    /// [`validate_node_id`] and not be [`MASTER_SERVER_NAME`]. Returns the
    /// certificate as PEM.
    pub fn issue_node_cert(&self, node_id: &str, csr_pem: &str) -> Result<String, PkiError> {
        let now = SystemTime::now();
        let not_before = now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH);
        self.issue_node_cert_valid_between(node_id, csr_pem, not_before, now + NODE_VALIDITY)
    }

    /// [`issue_node_cert`](Self::issue_node_cert) with an explicit validity
    /// window instead of about a year from now (tests use it to make a
    /// certificate that has already expired). Refuses a window that ends
    /// before it begins.
    pub fn issue_node_cert_valid_between(
        &self,
        node_id: &str,
        csr_pem: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<String, PkiError> {
        if not_after < not_before {
            return Err(PkiError::InvalidCertificate {
                what: format!("node certificate for {node_id}"),
                reason: "validity ends before it begins".into(),
            });
        }
        validate_node_id(node_id)?;
        if node_id == MASTER_SERVER_NAME {
            return Err(PkiError::InvalidNodeId {
                id: node_id.to_string(),
                reason: "reserved for the master",
            });
        }
        if csr_pem.len() > MAX_CSR_PEM_LEN {
            return Err(PkiError::InvalidCsr(format!(
                "larger than {MAX_CSR_PEM_LEN} bytes"
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        let alg = csr.public_key.algorithm();
        if !(alg == &PKCS_ECDSA_P256_SHA256
            || alg == &rcgen::PKCS_ECDSA_P384_SHA384
            || alg == &rcgen::PKCS_ED25519)
        {
            return Err(PkiError::InvalidCsr(format!(
                "unsupported key algorithm {alg:?}"
            )));
        }

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "ffrtmp");
        dn.push(DnType::CommonName, node_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(node_dns_name(node_id).try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + since_epoch(not_before);
        params.not_after = epoch + since_epoch(not_after);
        params.serial_number = Some(random_serial()?);

        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)?;
        let cert = params.signed_by(&csr.public_key, &issuer)?;
        tracing::info!(node_id, "issued node certificate");
        Ok(cert.pem())
    }
}

/// A fresh key pair and CSR for `node_id` (PEM key, PEM CSR).
pub fn new_key_and_csr(node_id: &str) -> Result<(String, String), PkiError> {
    validate_node_id(node_id)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![node_dns_name(node_id)])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}
