//! Identities: a node's (or the master's) certificate, key and CA, as
//! files and as what rustls needs.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::cert::{
    cert_common_name, check_key_matches, fingerprint_pem, parse_cert_pem, parse_key_pem,
    root_store_from_pem,
};
use super::error::PkiError;
use super::files::{
    ensure_dir, read_to_string, warn_if_key_readable_by_others, write_atomic, CA_CERT_FILE,
    MASTER_CERT_FILE, MASTER_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE,
};

/// A node's identity files in its data dir: node.pem (cert), node.key (0600), ca.pem.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The node's certificate, PEM.
    pub cert_pem: String,
    /// The node's private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id().ok())
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Loads `node.pem`, `node.key` and `ca.pem` from `data_dir`.
    ///
    /// `Ok(None)` if none of them exists (the node has not joined yet). An
    /// error if only some exist, if they do not parse, or if the key is not
    /// the certificate's.
    pub fn load(data_dir: &Path) -> Result<Option<NodeIdentity>, PkiError> {
        let files = [NODE_CERT_FILE, NODE_KEY_FILE, CA_CERT_FILE];
        let present: Vec<bool> = files.iter().map(|f| data_dir.join(f).exists()).collect();
        if present.iter().all(|p| !p) {
            return Ok(None);
        }
        if let Some(i) = present.iter().position(|p| !p) {
            return Err(PkiError::IncompleteIdentity {
                dir: data_dir.to_path_buf(),
                missing: files[i],
            });
        }
        Self::read(
            &data_dir.join(NODE_CERT_FILE),
            &data_dir.join(NODE_KEY_FILE),
            &data_dir.join(CA_CERT_FILE),
        )
        .map(Some)
    }

    /// Reads a certificate, its key and the CA from these files and checks
    /// them ([`check`](Self::check)); errors name the file.
    fn read(cert_path: &Path, key_path: &Path, ca_path: &Path) -> Result<NodeIdentity, PkiError> {
        warn_if_key_readable_by_others(key_path);
        let id = NodeIdentity {
            cert_pem: read_to_string(cert_path)?,
            key_pem: read_to_string(key_path)?,
            ca_pem: read_to_string(ca_path)?,
        };
        id.check(
            &cert_path.display().to_string(),
            &key_path.display().to_string(),
            &ca_path.display().to_string(),
        )?;
        Ok(id)
    }

    /// Writes the three files to `data_dir` (created if needed): atomic
    /// writes, the key with mode 0600. Replaces an existing identity.
    pub fn save(&self, data_dir: &Path) -> Result<(), PkiError> {
        self.check("node certificate", "node key", "CA certificate")?;
        ensure_dir(data_dir)?;
        for (name, pem, mode) in [
            (CA_CERT_FILE, &self.ca_pem, 0o644),
            (NODE_KEY_FILE, &self.key_pem, 0o600),
            (NODE_CERT_FILE, &self.cert_pem, 0o644),
        ] {
            write_atomic(&data_dir.join(name), pem.as_bytes(), mode, true)?;
        }
        Ok(())
    }

    /// Parses all three parts and checks the key belongs to the certificate.
    fn check(&self, cert_what: &str, key_what: &str, ca_what: &str) -> Result<(), PkiError> {
        let cert = parse_cert_pem(&self.cert_pem, cert_what)?;
        let key = parse_key_pem(&self.key_pem, key_what)?;
        check_key_matches(&key, &cert, key_what, cert_what)?;
        parse_cert_pem(&self.ca_pem, ca_what)?;
        cert_common_name(&cert, cert_what)?;
        Ok(())
    }

    /// node_id taken from the certificate's CN.
    pub fn node_id(&self) -> Result<String, PkiError> {
        let cert = parse_cert_pem(&self.cert_pem, "node certificate")?;
        cert_common_name(&cert, "node certificate")
    }

    /// The chain to present in TLS: `[own certificate, CA certificate]`. The
    /// CA certificate lets a joining worker find the CA it pinned by
    /// fingerprint ([`find_pinned_ca`](super::find_pinned_ca)); verifiers
    /// that already trust the CA are unaffected.
    pub fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, PkiError> {
        Ok(vec![
            parse_cert_pem(&self.cert_pem, "node certificate")?,
            parse_cert_pem(&self.ca_pem, "CA certificate")?,
        ])
    }

    /// The private key, for rustls.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| PkiError::InvalidKey {
            what: "node key".to_string(),
            reason: e.to_string(),
        })
    }

    /// A root store trusting only the cluster CA.
    pub fn root_store(&self) -> Result<rustls::RootCertStore, PkiError> {
        root_store_from_pem(&self.ca_pem)
    }

    /// Fingerprint of the cluster CA this identity trusts.
    pub fn ca_fingerprint(&self) -> Result<String, PkiError> {
        fingerprint_pem(&self.ca_pem)
    }
}

/// The master's own identity (master.pem/master.key + ca.pem) from the pki dir.
pub fn master_identity(dir: &Path) -> Result<NodeIdentity, PkiError> {
    NodeIdentity::read(
        &dir.join(MASTER_CERT_FILE),
        &dir.join(MASTER_KEY_FILE),
        &dir.join(CA_CERT_FILE),
    )
}
