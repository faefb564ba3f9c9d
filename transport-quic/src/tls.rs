//! rustls configurations for the cluster: TLS 1.3 only, the ring provider
//! passed explicitly (never a process-default provider), mutual TLS against
//! the cluster CA.
//!
//! One listener serves two ALPNs:
//! - [`ALPN`] (`ffrtmp/1`): the cluster protocol. The client must present a
//!   certificate signed by the cluster CA.
//! - [`ALPN_JOIN`] (`ffrtmp-join/1`): a worker with a join token but no
//!   certificate yet asks for one. It authenticates the master by the CA
//!   fingerprint in its token ([`join_client_config`]).
//!
//! rustls picks its client-certificate policy before ALPN is known, so the
//! server *allows* an unauthenticated client and the accept path refuses a
//! `ffrtmp/1` connection without a verified certificate (quinn's `connect()`
//! succeeds first and the refusal follows as a connection close).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::pki::{NodeIdentity, PkiError};

/// ALPN of the cluster protocol.
pub const ALPN: &[u8] = b"ffrtmp/1";
/// ALPN of the join exchange (token → node certificate).
pub const ALPN_JOIN: &[u8] = b"ffrtmp-join/1";

/// Why a rustls configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The identity's certificate, key or CA does not parse.
    #[error("identity: {0}")]
    Identity(#[from] PkiError),
    /// rustls refused the configuration (versions, certificate chain, key).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// The only crypto provider ffrtmp uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The master's server config, from its identity. The chain it presents
/// carries the CA certificate too ([`NodeIdentity::cert_chain`]), so a
/// joining worker can check it against the fingerprint in its token.
pub fn server_config(master: &NodeIdentity) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(master.root_store()?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(master.cert_chain()?, master.private_key()?)?;
    cfg.alpn_protocols = vec![ALPN.to_vec(), ALPN_JOIN.to_vec()];
    Ok(cfg)
}

/// A node's client config: its certificate, the cluster CA as the only root.
pub fn client_config(node: &NodeIdentity) -> Result<ClientConfig, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(node.root_store()?)
        .with_client_auth_cert(node.cert_chain()?, node.private_key()?)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// A joining worker's config: no client certificate; the master must present
/// a chain whose CA has `ca_fingerprint` and that validates under it.
pub fn join_client_config(ca_fingerprint: &str) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = PinnedCaVerifier {
        fingerprint: ca_fingerprint.to_ascii_lowercase(),
        provider: provider.clone(),
    };
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    Ok(cfg)
}

/// Accepts a server chain only if one of its certificates is the pinned CA
/// and the end entity validates under that CA alone (normal WebPKI checks:
/// signature, validity, name).
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = crate::pki::find_pinned_ca(intermediates, &self.fingerprint).ok_or_else(|| {
            rustls::Error::General("the master's CA does not match the join token".into())
        })?;
        let mut store = RootCertStore::empty();
        store.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
