//! quinn endpoints, transport timers, and the versioned handshake.
//!
//! A worker opens one bidirectional stream per connection and sends a
//! [`HelloEnvelope`]; the master answers with a [`HelloReply`]. Both types'
//! layouts are frozen: they carry the protocol version *outside* the
//! version-specific payload, so two versions can always tell each other why
//! they disagree. After an accepted hello the same stream carries the
//! [`wire`](ffrtmp_runtime::wire) messages as frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_runtime::wire::{ToMaster, PROTOCOL_VERSION};
use quinn::{Connection, Endpoint, EndpointConfig, RecvStream, SendStream, VarInt};

use crate::frame::{self, FrameError, MAX_FRAME_BYTES};
use crate::tls::{ALPN, ALPN_JOIN};

mod hello;

use hello::MAX_HELLO_BYTES;
pub use hello::{
    decode_hello, decode_hello_reply, encode_hello, encode_hello_reply, HelloEnvelope, HelloError,
    HelloReply,
};
pub(crate) use hello::{decode_limited, encode_limited};

/// Application close codes.
pub mod close {
    use quinn::VarInt;
    /// An orderly close: a link its owner dropped, a finished join.
    pub const NORMAL: VarInt = VarInt::from_u32(0);
    /// A `ffrtmp/1` client presented no certificate (it must join first).
    pub const NO_CLIENT_CERT: VarInt = VarInt::from_u32(1);
    /// The hello announced a protocol version the master does not speak.
    pub const VERSION_MISMATCH: VarInt = VarInt::from_u32(2);
    /// The first frame was not a valid hello, or the ALPN is unknown.
    pub const BAD_HELLO: VarInt = VarInt::from_u32(3);
    /// The hello's node id is not the certificate's, or the certificate
    /// names no node.
    pub const IDENTITY_MISMATCH: VarInt = VarInt::from_u32(4);
    /// A frame on an established link was malformed (over the maximum, or
    /// cut short).
    pub const MALFORMED_FRAME: VarInt = VarInt::from_u32(5);
}

/// How long either side waits for the other's hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// QUIC liveness timers, set on both ends (the effective idle timeout is the
/// smaller of the two). A killed peer is seen after about `idle_timeout`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timers {
    /// Interval of QUIC keep-alive pings; positive and shorter than
    /// `idle_timeout`.
    pub keep_alive: Duration,
    /// Silence after which the connection is declared lost.
    pub idle_timeout: Duration,
}

impl Default for Timers {
    /// 1.5 s idle with 300 ms keep-alives: a SIGKILLed worker is declared
    /// lost about 1.75 s after its last packet (idle timeout plus roughly
    /// one probe), inside the 2.5 s target with room for a loaded host. A
    /// busy worker still sends five keep-alives per idle window: they go out
    /// from the runtime's network task at normal priority while FFmpeg runs
    /// at nice 10.
    fn default() -> Self {
        Timers {
            keep_alive: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(1500),
        }
    }
}

/// Errors of the transport: endpoints, the hello and join exchanges, frames.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The [`Timers`] are unusable: the keep-alive is zero or not shorter
    /// than the idle timeout, or the idle timeout is out of QUIC's range.
    #[error("invalid timers: {0}")]
    Timers(String),
    /// A TLS configuration could not be built or used by QUIC (on the
    /// master's join path, also: the CA could not be loaded).
    #[error("TLS: {0}")]
    Tls(String),
    /// A socket could not be bound, or another I/O operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// quinn refused to start a connection (address or configuration).
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was lost.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading or writing a frame failed.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// Something the hello or join exchange carries could not be decoded or
    /// encoded (a hello, a join message, a token, a certificate), or the
    /// peer's ALPN is unknown.
    #[error("malformed handshake: {0}")]
    Malformed(String),
    /// The peer refused: the master's reason for a hello or join it did
    /// not accept (on the master, a join request it refused).
    #[error("refused by the master: {0}")]
    Refused(String),
    /// This node's TLS stack rejected the master's certificate (a TLS
    /// certificate alert): it is not from the cluster CA this node trusts.
    #[error("the master's certificate does not validate under this node's cluster CA ({0})")]
    UntrustedMaster(String),
    /// The two sides speak different protocol versions.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// The version this side speaks.
        ours: u32,
        /// The version the peer announced.
        theirs: u32,
    },
    /// The peer did not complete the handshake or the join exchange within
    /// [`HANDSHAKE_TIMEOUT`].
    #[error("timed out waiting for the handshake")]
    Timeout,
    /// (Master) a `ffrtmp/1` client presented no certificate.
    #[error("the client presented no cluster certificate")]
    NoClientCertificate,
    /// The node id a hello claims is not the one its certificate carries
    /// (or, on a join, the certificate the master issued names another
    /// node).
    #[error("node id {claimed:?} does not match its certificate ({certified:?})")]
    IdentityMismatch {
        /// The node id the peer claimed.
        claimed: String,
        /// The node id in the certificate.
        certified: String,
    },
    /// (Master) a client certificate signed by the cluster CA names no node:
    /// no common name, or an empty one.
    #[error("the client certificate names no node (no common name)")]
    UnnamedCertificate,
}

pub(crate) fn transport(t: Timers) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let idle = quinn::IdleTimeout::try_from(t.idle_timeout)
        .map_err(|e| TransportError::Timers(e.to_string()))?;
    if t.keep_alive.is_zero() || t.keep_alive >= t.idle_timeout {
        return Err(TransportError::Timers(
            "keep_alive must be positive and shorter than idle_timeout".into(),
        ));
    }
    let mut cfg = quinn::TransportConfig::default();
    cfg.keep_alive_interval(Some(t.keep_alive))
        .max_idle_timeout(Some(idle));
    Ok(Arc::new(cfg))
}

/// Endpoint config with a stable stateless-reset key and a keyed
/// connection-ID generator, both derived from `node_secret`: a restarted
/// node answers packets for its old connections with a valid stateless
/// reset, so its peer learns at once instead of after the idle timeout.
fn endpoint_config(node_secret: &[u8; 32]) -> EndpointConfig {
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, node_secret);
    let mut cfg = EndpointConfig::new(Arc::new(reset));
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, node_secret),
        b"ffrtmp connection-id key",
    );
    let mut k = [0u8; 8];
    k.copy_from_slice(&tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(k);
    cfg.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    cfg
}

/// The master's listening endpoint.
pub fn server_endpoint(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    timers: Timers,
    node_secret: &[u8; 32],
) -> Result<Endpoint, TransportError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport(timers)?);
    let socket = std::net::UdpSocket::bind(addr)?;
    Ok(Endpoint::new(
        endpoint_config(node_secret),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// A client endpoint (workers), bound to `bind` (use port 0).
pub fn client_endpoint(
    bind: SocketAddr,
    node_secret: &[u8; 32],
) -> Result<Endpoint, TransportError> {
    let socket = std::net::UdpSocket::bind(bind)?;
    Ok(Endpoint::new(
        endpoint_config(node_secret),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

fn client(
    tls: rustls::ClientConfig,
    timers: Timers,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport(timers)?);
    Ok(cfg)
}

/// An established, handshaken link: one connection, one stream pair.
pub struct Link {
    /// The QUIC connection.
    pub connection: Connection,
    /// The sending half of the link's one bidirectional stream.
    pub send: SendStream,
    /// Its receiving half.
    pub recv: RecvStream,
}

/// The reason a peer gave when it closed the connection, if it did.
fn refusal(e: &quinn::ConnectionError) -> Option<String> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        quinn::ConnectionError::ConnectionClosed(c) => {
            Some(String::from_utf8_lossy(&c.reason).into_owned())
        }
        _ => None,
    }
}

/// TLS alerts about a certificate (RFC 8446 §6.2): bad, unsupported,
/// revoked, expired, unknown, unknown CA.
const CERTIFICATE_ALERTS: [u64; 6] = [42, 43, 44, 45, 46, 48];

/// Our own TLS stack rejected the master's certificate: a client verifies
/// only the server's certificate, so a certificate alert raised here means
/// the master is not from the CA this node trusts (or its certificate is
/// invalid).
fn untrusted_master(e: &quinn::ConnectionError) -> Option<TransportError> {
    let quinn::ConnectionError::TransportError(t) = e else {
        return None;
    };
    let alert = u64::from(t.code).checked_sub(0x100)?;
    CERTIFICATE_ALERTS
        .contains(&alert)
        .then(|| TransportError::UntrustedMaster(t.reason.clone()))
}

/// Worker side: connect to the master as `server_name`, send `hello`
/// (a `ToMaster::Hello`), and wait for acceptance.
///
/// A master that refuses our certificate lets the TLS handshake finish and
/// closes right after: that close is reported as [`TransportError::Refused`].
pub async fn connect(
    endpoint: &Endpoint,
    master: SocketAddr,
    server_name: &str,
    tls: rustls::ClientConfig,
    timers: Timers,
    hello: &ToMaster,
) -> Result<Link, TransportError> {
    connect_versioned(
        endpoint,
        master,
        server_name,
        tls,
        timers,
        PROTOCOL_VERSION,
        hello,
    )
    .await
}

/// [`connect`] announcing an explicit protocol version (tests of the
/// mismatch path use this).
pub async fn connect_versioned(
    endpoint: &Endpoint,
    master: SocketAddr,
    server_name: &str,
    tls: rustls::ClientConfig,
    timers: Timers,
    protocol_version: u32,
    hello: &ToMaster,
) -> Result<Link, TransportError> {
    let connection = endpoint
        .connect_with(client(tls, timers)?, master, server_name)?
        .await
        .map_err(|e| match refusal(&e) {
            Some(r) => TransportError::Refused(r),
            None => untrusted_master(&e).unwrap_or(TransportError::Connection(e)),
        })?;
    let io = async {
        let (mut send, mut recv) = connection.open_bi().await?;
        frame::write_frame(&mut send, &encode_hello(protocol_version, hello)?).await?;
        let reply = frame::read_frame(&mut recv, MAX_HELLO_BYTES).await?;
        Ok::<_, TransportError>((send, recv, reply))
    };
    let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, io).await;
    let (send, recv, reply) = match outcome {
        Err(_) => return Err(TransportError::Timeout),
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            // The master may have closed the connection with its reason.
            if let Some(reason) = connection.close_reason().as_ref().and_then(refusal) {
                return Err(TransportError::Refused(reason));
            }
            return Err(e);
        }
    };
    let Some(reply) = reply else {
        let reason = connection
            .close_reason()
            .as_ref()
            .and_then(refusal)
            .unwrap_or_else(|| "the master closed the stream without answering".into());
        return Err(TransportError::Refused(reason));
    };
    let reply = decode_hello_reply(&reply)?;
    if reply.protocol_version != protocol_version {
        return Err(TransportError::VersionMismatch {
            ours: protocol_version,
            theirs: reply.protocol_version,
        });
    }
    if !reply.accepted {
        return Err(TransportError::Refused(reply.reason));
    }
    Ok(Link {
        connection,
        send,
        recv,
    })
}

/// What the master accepted.
pub enum Accepted {
    /// A worker with a cluster certificate whose hello was accepted.
    Node {
        /// The link, past the hello (the master's acceptance is sent).
        link: Link,
        /// The node id from its certificate, equal to the one in `hello`.
        node_id: String,
        /// The `ToMaster::Hello` it sent (boxed: messages are large next
        /// to `Join`).
        hello: Box<ToMaster>,
    },
    /// A worker asking to join: the caller checks its request and answers
    /// on `link`.
    Join {
        /// The link the join request arrives on.
        link: Link,
    },
}

fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The verified client certificate chain's end entity, if any.
fn peer_cert(conn: &Connection) -> Option<rustls::pki_types::CertificateDer<'static>> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().cloned()
}

async fn refuse(link: &mut Link, code: VarInt, reason: &str) {
    let reply = HelloReply {
        protocol_version: PROTOCOL_VERSION,
        accepted: false,
        reason: reason.to_string(),
    };
    if let Ok(bytes) = encode_hello_reply(&reply) {
        let _ = frame::write_frame(&mut link.send, &bytes).await;
        let _ = link.send.finish();
        // Give the reply a moment to leave before the close overtakes it.
        let _ = tokio::time::timeout(Duration::from_millis(500), link.send.stopped()).await;
    }
    link.connection.close(code, reason.as_bytes());
}

/// Master side: finish the TLS handshake of `incoming`, then the hello.
/// `node_id_of` maps a verified client certificate (DER) to its node id.
/// Every refusal closes the connection with a code and a reason the worker
/// can print.
pub async fn accept(
    incoming: quinn::Incoming,
    node_id_of: impl Fn(&[u8]) -> Option<String>,
) -> Result<Accepted, TransportError> {
    let connection = incoming.await?;
    let protocol = alpn(&connection);
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_bi())
        .await
        .map_err(|_| TransportError::Timeout)??;
    let mut link = Link {
        connection,
        send: stream.0,
        recv: stream.1,
    };
    if protocol.as_deref() == Some(ALPN_JOIN) {
        return Ok(Accepted::Join { link });
    }
    if protocol.as_deref() != Some(ALPN) {
        link.connection.close(close::BAD_HELLO, b"unknown ALPN");
        return Err(TransportError::Malformed("unknown ALPN".into()));
    }
    let Some(cert) = peer_cert(&link.connection) else {
        let why = "a cluster client certificate is required (join with a token first)";
        refuse(&mut link, close::NO_CLIENT_CERT, why).await;
        return Err(TransportError::NoClientCertificate);
    };
    // A certificate the cluster CA signed but that names no node (no
    // common name, or an empty one) is refused: it would otherwise become
    // the node id "".
    let Some(certified) = node_id_of(cert.as_ref()).filter(|id| !id.is_empty()) else {
        let why = "the client certificate names no node (no common name)";
        refuse(&mut link, close::IDENTITY_MISMATCH, why).await;
        return Err(TransportError::UnnamedCertificate);
    };
    let first = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        frame::read_frame(&mut link.recv, MAX_HELLO_BYTES),
    )
    .await
    .map_err(|_| TransportError::Timeout)?;
    let frame = match first
        .map_err(TransportError::from)
        .and_then(|f| f.ok_or_else(|| TransportError::Malformed("no hello".into())))
    {
        Ok(f) => f,
        Err(e) => {
            let why = format!("malformed hello: {e}");
            refuse(&mut link, close::BAD_HELLO, &why).await;
            return Err(e);
        }
    };
    let hello = match decode_hello(&frame) {
        Ok(h) => h,
        Err(e) => {
            refuse(&mut link, e.close_code(), &e.to_string()).await;
            return Err(e.into());
        }
    };
    let ToMaster::Hello { node_id, .. } = &hello else {
        return Err(HelloError::NotHello.into());
    };
    if *node_id != certified {
        let why = format!("node id {node_id:?} does not match its certificate ({certified:?})");
        refuse(&mut link, close::IDENTITY_MISMATCH, &why).await;
        return Err(TransportError::IdentityMismatch {
            claimed: node_id.clone(),
            certified,
        });
    }
    let reply = HelloReply {
        protocol_version: PROTOCOL_VERSION,
        accepted: true,
        reason: String::new(),
    };
    frame::write_frame(&mut link.send, &encode_hello_reply(&reply)?).await?;
    let node_id = node_id.clone();
    Ok(Accepted::Node {
        link,
        node_id,
        hello: Box::new(hello),
    })
}

/// Read one wire frame from a link's stream (None: the peer finished it).
pub async fn recv_frame(recv: &mut RecvStream) -> Result<Option<Vec<u8>>, FrameError> {
    frame::read_frame(recv, MAX_FRAME_BYTES).await
}
