//! Real QUIC on loopback with real certificates from the cluster PKI:
//! who gets in, who is refused, and what both sides are told.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_runtime::wire::{self, Capabilities, ToMaster, ToWorker, PROTOCOL_VERSION};
use ffrtmp_transport_quic::endpoint::{self, Accepted, Timers, TransportError};
use ffrtmp_transport_quic::pki::{self, CertificateAuthority, NodeIdentity, MASTER_SERVER_NAME};
use ffrtmp_transport_quic::{frame, tls};
use tokio::sync::mpsc;

const SECRET: [u8; 32] = [7; 32];

struct Cluster {
    _dir: tempfile::TempDir,
    pki: std::path::PathBuf,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        pki::init(&pki, &[]).expect("pki init");
        Cluster { _dir: dir, pki }
    }

    fn node(&self, node_id: &str) -> NodeIdentity {
        let ca = CertificateAuthority::load(&self.pki).expect("ca");
        let (key_pem, csr_pem) = pki::new_key_and_csr(node_id).expect("csr");
        let cert_pem = ca.issue_node_cert(node_id, &csr_pem).expect("issue");
        NodeIdentity {
            cert_pem,
            key_pem,
            ca_pem: ca.cert_pem().to_string(),
        }
    }

    /// A master that accepts connections and reports each result.
    fn master(&self) -> (SocketAddr, mpsc::Receiver<Result<Accepted, TransportError>>) {
        let id = pki::master_identity(&self.pki).expect("master identity");
        let cfg = tls::server_config(&id).expect("server tls");
        let ep = endpoint::server_endpoint(
            "127.0.0.1:0".parse().expect("addr"),
            cfg,
            Timers::default(),
            &SECRET,
        )
        .expect("server endpoint");
        let addr = ep.local_addr().expect("local addr");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let r = endpoint::accept(incoming, pki::node_id_of_cert).await;
                    let _ = tx.send(r).await;
                });
            }
        });
        (addr, rx)
    }
}

fn hello(node_id: &str) -> ToMaster {
    ToMaster::Hello {
        node_id: node_id.into(),
        protocol_version: PROTOCOL_VERSION,
        slots: 2,
        capabilities: Capabilities {
            encoders: vec!["libx264".into()],
            cores: 2,
            memory_bytes: 1 << 30,
            unavailable_encoders: Vec::new(),
            metrics: Vec::new(),
        },
        running: Vec::new(),
        unacked: Vec::new(),
    }
}

/// Connect to the master at `addr` with `cfg` and `hello`, expecting the
/// connection to be refused; returns why.
async fn refused(addr: SocketAddr, cfg: rustls::ClientConfig, hello: &ToMaster) -> TransportError {
    endpoint::connect(
        &client_ep(),
        addr,
        MASTER_SERVER_NAME,
        cfg,
        Timers::default(),
        hello,
    )
    .await
    .err()
    .expect("refused")
}

fn client_ep() -> quinn::Endpoint {
    endpoint::client_endpoint("127.0.0.1:0".parse().expect("addr"), &[9; 32])
        .expect("client endpoint")
}

async fn next(
    rx: &mut mpsc::Receiver<Result<Accepted, TransportError>>,
) -> Result<Accepted, TransportError> {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("the master saw the connection")
        .expect("accept loop alive")
}

#[tokio::test]
async fn mutual_tls_hello_and_frames_both_ways() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let node = c.node("node-a");
    let tls_cfg = tls::client_config(&node).expect("client tls");
    let ep = client_ep();
    let mut link = endpoint::connect(
        &ep,
        addr,
        MASTER_SERVER_NAME,
        tls_cfg,
        Timers::default(),
        &hello("node-a"),
    )
    .await
    .expect("accepted");
    let Accepted::Node {
        link: mut m,
        node_id,
        hello: h,
    } = next(&mut rx).await.expect("node accepted")
    else {
        panic!("expected a node");
    };
    assert_eq!(node_id, "node-a");
    assert_eq!(*h, hello("node-a"));
    // Master → worker and back, as wire frames.
    let msg = ToWorker::Cancel {
        job_id: "j1".into(),
        token: 4,
    };
    frame::write_frame(&mut m.send, &wire::encode(&msg).expect("encode"))
        .await
        .expect("send");
    let got = endpoint::recv_frame(&mut link.recv)
        .await
        .expect("recv")
        .expect("a frame");
    assert_eq!(wire::decode::<ToWorker>(&got).expect("decode"), msg);
    let back = ToMaster::Started {
        job_id: "j1".into(),
        token: 4,
        isolation: ffrtmp_runtime::model::Isolation::None,
    };
    frame::write_frame(&mut link.send, &wire::encode(&back).expect("encode"))
        .await
        .expect("send");
    let got = endpoint::recv_frame(&mut m.recv)
        .await
        .expect("recv")
        .expect("a frame");
    assert_eq!(wire::decode::<ToMaster>(&got).expect("decode"), back);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_after_connect_succeeds() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let ca = CertificateAuthority::load(&c.pki).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![tls::ALPN.to_vec()];
    let err = refused(addr, cfg, &hello("node-x")).await;
    match &err {
        TransportError::Refused(r) => assert!(r.contains("certificate"), "{r}"),
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(matches!(
        next(&mut rx).await,
        Err(TransportError::NoClientCertificate)
    ));
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let c = Cluster::new();
    let other = Cluster::new();
    let (addr, mut rx) = c.master();
    let stranger = other.node("node-s");
    // It trusts our CA (to get that far) but its own cert is from another CA.
    let ca = CertificateAuthority::load(&c.pki).expect("ca");
    let mixed = NodeIdentity {
        ca_pem: ca.cert_pem().to_string(),
        ..stranger
    };
    let cfg = tls::client_config(&mixed).expect("client tls");
    let res = endpoint::connect(
        &client_ep(),
        addr,
        MASTER_SERVER_NAME,
        cfg,
        Timers::default(),
        &hello("node-s"),
    )
    .await;
    assert!(res.is_err(), "a foreign certificate must not get in");
    assert!(next(&mut rx).await.is_err(), "the master refused it too");
}

#[tokio::test]
async fn a_worker_whose_ca_did_not_sign_the_masters_certificate_says_so() {
    let c = Cluster::new();
    let other = Cluster::new();
    let (addr, mut rx) = c.master();
    // A whole identity from another cluster: it trusts only that cluster's CA.
    let cfg = tls::client_config(&other.node("node-o")).expect("client tls");
    let err = refused(addr, cfg, &hello("node-o")).await;
    match &err {
        TransportError::UntrustedMaster(r) => assert!(r.contains("UnknownIssuer"), "{r}"),
        other => panic!("expected UntrustedMaster, got {other}"),
    }
    assert!(next(&mut rx).await.is_err(), "the master saw the abort");
}

#[tokio::test]
async fn a_protocol_version_mismatch_is_refused_with_a_clear_error_on_both_sides() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let node = c.node("node-v");
    let cfg = tls::client_config(&node).expect("client tls");
    let err = endpoint::connect_versioned(
        &client_ep(),
        addr,
        MASTER_SERVER_NAME,
        cfg,
        Timers::default(),
        99,
        &hello("node-v"),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        matches!(err, TransportError::VersionMismatch { ours: 99, theirs } if theirs == PROTOCOL_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains("we speak 99"), "{err}");
    match next(&mut rx).await {
        Err(TransportError::VersionMismatch { ours, theirs: 99 }) => {
            assert_eq!(ours, PROTOCOL_VERSION)
        }
        Err(e) => panic!("master: wrong error {e}"),
        Ok(_) => panic!("master accepted a mismatched version"),
    }
}

#[tokio::test]
async fn a_node_cannot_claim_another_nodes_id() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let node = c.node("node-a");
    let cfg = tls::client_config(&node).expect("client tls");
    let err = refused(addr, cfg, &hello("node-b")).await;
    assert!(
        matches!(&err, TransportError::Refused(r) if r.contains("does not match")),
        "{err}"
    );
    assert!(matches!(
        next(&mut rx).await,
        Err(TransportError::IdentityMismatch { .. })
    ));
}

/// A certificate the cluster CA really signed, but with no common name,
/// used to become the node id "" (a hello claiming "" matched it).
#[tokio::test]
async fn a_certificate_naming_no_node_is_refused() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let ca_pem = std::fs::read_to_string(c.pki.join(pki::CA_CERT_FILE)).expect("ca.pem");
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(c.pki.join(pki::CA_KEY_FILE)).expect("ca.key"),
    )
    .expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "ffrtmp");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("signed by the CA");
    let node = NodeIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem,
    };
    let cfg = tls::client_config(&node).expect("client tls");
    let err = refused(addr, cfg, &hello("")).await;
    assert!(
        matches!(&err, TransportError::Refused(r) if r.contains("names no node")),
        "{err}"
    );
    assert!(matches!(
        next(&mut rx).await,
        Err(TransportError::UnnamedCertificate)
    ));
}

#[tokio::test]
async fn a_joining_worker_pins_the_master_by_ca_fingerprint() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let ca = CertificateAuthority::load(&c.pki).expect("ca");
    // Right fingerprint: the join stream opens.
    let cfg = tls::join_client_config(&ca.fingerprint()).expect("join tls");
    let conn = client_ep()
        .connect_with(
            quinn::ClientConfig::new(Arc::new(
                quinn::crypto::rustls::QuicClientConfig::try_from(cfg).expect("quic tls"),
            )),
            addr,
            MASTER_SERVER_NAME,
        )
        .expect("connect")
        .await
        .expect("the master is who the token says");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    frame::write_frame(&mut send, b"join").await.expect("write");
    assert!(matches!(next(&mut rx).await, Ok(Accepted::Join { .. })));
    // Wrong fingerprint: the TLS handshake fails on the worker's side.
    let wrong = tls::join_client_config(&"00".repeat(32)).expect("join tls");
    let res = client_ep()
        .connect_with(
            quinn::ClientConfig::new(Arc::new(
                quinn::crypto::rustls::QuicClientConfig::try_from(wrong).expect("quic tls"),
            )),
            addr,
            MASTER_SERVER_NAME,
        )
        .expect("connect")
        .await;
    assert!(
        res.is_err(),
        "a master whose CA does not match the token is not trusted"
    );
}

#[test]
fn timers_must_leave_room_for_keep_alives() {
    let c = Cluster::new();
    let id = pki::master_identity(&c.pki).expect("master identity");
    let cfg = tls::server_config(&id).expect("server tls");
    let bad = Timers {
        keep_alive: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(2),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _g = rt.enter();
    assert!(matches!(
        endpoint::server_endpoint("127.0.0.1:0".parse().expect("addr"), cfg, bad, &SECRET),
        Err(TransportError::Timers(_))
    ));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serve whatever the master accepts next: answer joins, hand back nodes.
async fn serve_next(
    c: &Cluster,
    rx: &mut mpsc::Receiver<Result<Accepted, TransportError>>,
) -> Result<Option<Accepted>, TransportError> {
    match next(rx).await? {
        Accepted::Join { link } => {
            ffrtmp_transport_quic::join::serve_join(link, &c.pki, now_ms()).await?;
            Ok(None)
        }
        node => Ok(Some(node)),
    }
}

#[tokio::test]
async fn a_worker_joins_with_a_token_then_connects_with_its_certificate() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let token = pki::create_join_token(&c.pki, Duration::from_secs(3600), now_ms())
        .expect("token")
        .to_string_token();
    let ep = client_ep();
    let join = ffrtmp_transport_quic::join::join(&ep, addr, &token, "node-j", Timers::default());
    let (identity, served) = tokio::join!(join, serve_next(&c, &mut rx));
    let identity = identity.expect("joined");
    assert!(matches!(served, Ok(None)), "the master answered the join");
    assert_eq!(identity.node_id().expect("cn"), "node-j");
    // Kept on disk, it is all a restart needs: no token.
    let data = tempfile::tempdir().expect("data dir");
    identity.save(data.path()).expect("save");
    let loaded = NodeIdentity::load(data.path())
        .expect("load")
        .expect("present");
    let cfg = tls::client_config(&loaded).expect("tls");
    let h = hello("node-j");
    let connect = endpoint::connect(&ep, addr, MASTER_SERVER_NAME, cfg, Timers::default(), &h);
    let (link, accepted) = tokio::join!(connect, serve_next(&c, &mut rx));
    link.expect("connected with the issued certificate");
    match accepted {
        Ok(Some(Accepted::Node { node_id, .. })) => assert_eq!(node_id, "node-j"),
        _ => panic!("the master accepted the node"),
    }
}

#[tokio::test]
async fn a_bad_or_expired_token_is_refused_without_details() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let good = pki::create_join_token(&c.pki, Duration::from_secs(3600), now_ms()).expect("token");
    let mut wrong = good.clone();
    wrong.secret = "A".repeat(good.secret.len());
    let expired =
        pki::create_join_token(&c.pki, Duration::from_millis(1), now_ms() - 10_000).expect("token");
    for token in [wrong, expired] {
        let ep = client_ep();
        let token = token.to_string_token();
        let join =
            ffrtmp_transport_quic::join::join(&ep, addr, &token, "node-k", Timers::default());
        let (res, served) = tokio::join!(join, serve_next(&c, &mut rx));
        match res {
            Err(TransportError::Refused(r)) => assert_eq!(r, "token rejected"),
            Err(e) => panic!("expected a refusal, got {e}"),
            Ok(_) => panic!("a bad token got a certificate"),
        }
        assert!(served.is_err(), "the master refused it too");
    }
}

#[tokio::test]
async fn the_bridge_carries_frames_and_a_malformed_frame_closes_the_link() {
    let c = Cluster::new();
    let (addr, mut rx) = c.master();
    let node = c.node("node-b");
    let cfg = tls::client_config(&node).expect("client tls");
    let ep = client_ep();
    let mut worker = endpoint::connect(
        &ep,
        addr,
        MASTER_SERVER_NAME,
        cfg,
        Timers::default(),
        &hello("node-b"),
    )
    .await
    .expect("accepted");
    let Ok(Accepted::Node { link, hello: h, .. }) = next(&mut rx).await else {
        panic!("expected a node");
    };
    let first = wire::encode(&h).expect("encode");
    let (to_worker, mut from_worker) =
        ffrtmp_transport_quic::bridge::bridge(link, vec![first.clone()]);
    // The hello comes first, then what the worker sends.
    assert_eq!(from_worker.recv().await, Some(first));
    frame::write_frame(&mut worker.send, b"progress")
        .await
        .expect("send");
    assert_eq!(from_worker.recv().await.as_deref(), Some(&b"progress"[..]));
    to_worker.send(b"assign".to_vec()).await.expect("send");
    let got = endpoint::recv_frame(&mut worker.recv).await.expect("recv");
    assert_eq!(got.as_deref(), Some(&b"assign"[..]));
    // A hostile peer announces a frame over the maximum: the master's side
    // closes the connection (with a reason) and its receiver ends.
    worker
        .send
        .write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while from_worker.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the master's link ended");
    let reason = tokio::time::timeout(Duration::from_secs(10), worker.connection.closed())
        .await
        .expect("the worker saw the close");
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == endpoint::close::MALFORMED_FRAME),
        "{reason}"
    );
}
