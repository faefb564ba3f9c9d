//! The join exchange (ALPN `ffrtmp-join/1`): a worker with a token and no
//! certificate sends a CSR; the master checks the token and answers with a
//! node certificate signed by the cluster CA. The worker authenticates the
//! master by the CA fingerprint in its token ([`tls::join_client_config`]).
//!
//! Both message layouts are frozen, like the hello's.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bincode::{Decode, Encode};
use quinn::Endpoint;

use crate::endpoint::{
    close, decode_limited, encode_limited, Link, Timers, TransportError, HANDSHAKE_TIMEOUT,
};
use crate::frame;
use crate::pki::{self, CertificateAuthority, JoinToken, NodeIdentity};
use crate::tls;

const MAX_JOIN_BYTES: usize = 64 * 1024;

/// Worker → master.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct JoinRequest {
    /// The whole token string as the operator gave it.
    pub token: String,
    /// The node id the worker asks a certificate for.
    pub node_id: String,
    /// Its certificate signing request, PEM (the key stays on the worker).
    pub csr_pem: String,
}

/// Master → worker.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct JoinReply {
    /// Whether a certificate was issued.
    pub accepted: bool,
    /// Why not, when not accepted. Deliberately vague about tokens.
    pub reason: String,
    /// The node certificate, PEM; empty when refused.
    pub cert_pem: String,
    /// The cluster CA certificate, PEM; empty when refused.
    pub ca_pem: String,
}

/// The master's decoding of a join request (untrusted bytes from a peer with
/// no certificate). Pure, for tests and fuzzing.
pub fn decode_join_request(frame: &[u8]) -> Result<JoinRequest, TransportError> {
    decode_limited::<MAX_JOIN_BYTES, _>(frame)
}

/// The worker's decoding of the master's join answer.
pub fn decode_join_reply(frame: &[u8]) -> Result<JoinReply, TransportError> {
    decode_limited::<MAX_JOIN_BYTES, _>(frame)
}

/// The master's join answer as it goes on the wire.
pub fn encode_join_reply(reply: &JoinReply) -> Result<Vec<u8>, TransportError> {
    encode_limited::<MAX_JOIN_BYTES, _>(reply)
}

/// A join request as it goes on the wire.
pub fn encode_join_request(req: &JoinRequest) -> Result<Vec<u8>, TransportError> {
    encode_limited::<MAX_JOIN_BYTES, _>(req)
}

/// Worker side: trade `token` for a node identity for `node_id`. The caller
/// saves it ([`NodeIdentity::save`]) and connects with it from then on.
pub async fn join(
    endpoint: &Endpoint,
    master: SocketAddr,
    token: &str,
    node_id: &str,
    timers: Timers,
) -> Result<NodeIdentity, TransportError> {
    let parsed = JoinToken::parse(token).map_err(|e| TransportError::Malformed(e.to_string()))?;
    let tls_cfg = tls::join_client_config(&parsed.ca_fingerprint)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls_cfg)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(crate::endpoint::transport(timers)?);
    let (key_pem, csr_pem) =
        pki::new_key_and_csr(node_id).map_err(|e| TransportError::Malformed(e.to_string()))?;
    let connection = endpoint
        .connect_with(client, master, pki::MASTER_SERVER_NAME)?
        .await?;
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        let req = JoinRequest {
            token: token.trim().to_string(),
            node_id: node_id.to_string(),
            csr_pem,
        };
        frame::write_frame(&mut send, &encode_join_request(&req)?).await?;
        let _ = send.finish();
        let reply = frame::read_frame(&mut recv, MAX_JOIN_BYTES)
            .await?
            .ok_or_else(|| {
                TransportError::Refused("the master closed the join without answering".into())
            })?;
        decode_join_reply(&reply)
    };
    let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| TransportError::Timeout)??;
    connection.close(close::NORMAL, b"joined");
    if !reply.accepted {
        return Err(TransportError::Refused(reply.reason));
    }
    // The CA we are given must be the one the token pinned.
    let got = pki::fingerprint_pem(&reply.ca_pem)
        .map_err(|e| TransportError::Malformed(e.to_string()))?;
    if got != parsed.ca_fingerprint {
        return Err(TransportError::Refused(
            "the master sent a CA that does not match the token".into(),
        ));
    }
    let identity = NodeIdentity {
        cert_pem: reply.cert_pem,
        key_pem,
        ca_pem: reply.ca_pem,
    };
    let certified = identity
        .node_id()
        .map_err(|e| TransportError::Malformed(e.to_string()))?;
    if certified != node_id {
        return Err(TransportError::IdentityMismatch {
            claimed: node_id.to_string(),
            certified,
        });
    }
    Ok(identity)
}

/// Master side: answer the join request on `link` (from
/// [`Accepted::Join`](crate::endpoint::Accepted::Join)). Returns the node id
/// a certificate was issued to. Token details are logged, never sent.
pub async fn serve_join(
    mut link: Link,
    pki_dir: &Path,
    now_ms: u64,
) -> Result<String, TransportError> {
    let req = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        frame::read_frame(&mut link.recv, MAX_JOIN_BYTES),
    )
    .await
    .map_err(|_| TransportError::Timeout)??
    .ok_or_else(|| TransportError::Malformed("no join request".into()))?;
    let outcome = decode_join_request(&req).and_then(|req| {
        let token = JoinToken::parse(&req.token)
            .map_err(|e| TransportError::Refused(format!("token: {e}")))?;
        pki::verify_join_token(pki_dir, &token, now_ms).map_err(|e| {
            tracing::warn!(node = %req.node_id, error = %e, "join refused");
            TransportError::Refused("token rejected".into())
        })?;
        pki::validate_node_id(&req.node_id).map_err(|e| TransportError::Refused(e.to_string()))?;
        let ca =
            CertificateAuthority::load(pki_dir).map_err(|e| TransportError::Tls(e.to_string()))?;
        let cert_pem = ca
            .issue_node_cert(&req.node_id, &req.csr_pem)
            .map_err(|e| TransportError::Refused(e.to_string()))?;
        Ok((req.node_id, cert_pem, ca.cert_pem().to_string()))
    });
    let (reply, result) = match outcome {
        Ok((node_id, cert_pem, ca_pem)) => (
            JoinReply {
                accepted: true,
                reason: String::new(),
                cert_pem,
                ca_pem,
            },
            Ok(node_id),
        ),
        Err(e) => {
            let reason = match &e {
                TransportError::Refused(r) => r.clone(),
                _ => "join failed".to_string(),
            };
            (
                JoinReply {
                    accepted: false,
                    reason,
                    cert_pem: String::new(),
                    ca_pem: String::new(),
                },
                Err(e),
            )
        }
    };
    frame::write_frame(&mut link.send, &encode_join_reply(&reply)?).await?;
    let _ = link.send.finish();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), link.send.stopped()).await;
    if let Ok(node_id) = &result {
        tracing::info!(node = %node_id, "issued a node certificate");
    }
    result
}
