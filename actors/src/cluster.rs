//! The cluster's edges: the master's QUIC accept loop and the worker's
//! connector. Both hand the actors a [`LinkEnd`], the same kind of link the
//! in-process tests use, so `NodeLink` and `NodeActor` do not know which
//! transport they are on.
//!
//! A worker's `NodeActor` outlives its links: [`maintain_link`] reconnects
//! (exponential backoff with jitter) and hands each new link to the same
//! node, whose jobs keep running for as long as its lease lasts
//! (docs/PROTOCOL.md, "Leases").

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ffrtmp_os::outbox::Outbox;
use ffrtmp_runtime::retry::RetryPolicy;
use ffrtmp_runtime::wire;
use ffrtmp_transport_quic::endpoint::{self, Accepted, Timers, TransportError};
use ffrtmp_transport_quic::pki::{self, NodeIdentity, MASTER_SERVER_NAME};
use ffrtmp_transport_quic::{bridge, join, tls};
use ractor::{Actor, ActorRef};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::link::LinkEnd;
use crate::node::{NodeActor, NodeArgs, NodeConfig, NodeMsg};
use crate::scheduler::SchedulerMsg;

/// A per-node secret (32 bytes, mode 0600 in the data dir) from which the
/// QUIC stateless-reset key and connection-ID key are derived.
pub fn node_secret(data_dir: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("node.secret");
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(secret) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(secret);
        }
        return Err(std::io::Error::other(format!(
            "{} is not 32 bytes",
            path.display()
        )));
    }
    let secret: [u8; 32] = rand::random();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&secret)?;
    f.sync_all()?;
    Ok(secret)
}

/// The master's listening endpoint, from its identity in `pki_dir`.
pub fn master_endpoint(
    listen: SocketAddr,
    pki_dir: &Path,
    timers: Timers,
    secret: &[u8; 32],
) -> Result<quinn::Endpoint, String> {
    let id = pki::master_identity(pki_dir).map_err(|e| e.to_string())?;
    let tls = tls::server_config(&id).map_err(|e| e.to_string())?;
    endpoint::server_endpoint(listen, tls, timers, secret).map_err(|e| e.to_string())
}

/// Accept workers for ever: each accepted node becomes a `NodeLink` under
/// the scheduler (its hello re-delivered as the first frame); joins get a
/// certificate when their token checks out.
pub fn spawn_accept_loop(
    endpoint: quinn::Endpoint,
    scheduler: ActorRef<SchedulerMsg>,
    pki_dir: PathBuf,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let scheduler = scheduler.clone();
            let pki_dir = pki_dir.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match endpoint::accept(incoming, pki::node_id_of_cert).await {
                    Ok(Accepted::Node {
                        link,
                        node_id,
                        hello,
                    }) => {
                        let first = match wire::encode(&hello) {
                            Ok(f) => f,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot re-encode a hello");
                                return;
                            }
                        };
                        tracing::info!(node = %node_id, %remote, "worker connected");
                        let (tx, rx) = bridge::bridge(link, vec![first]);
                        if scheduler
                            .cast(SchedulerMsg::AttachLink(LinkEnd { tx, rx }))
                            .is_err()
                        {
                            tracing::error!("scheduler gone; dropping a worker link");
                        }
                    }
                    Ok(Accepted::Join { link }) => {
                        if let Err(e) = join::serve_join(link, &pki_dir, crate::now_ms()).await {
                            tracing::warn!(%remote, error = %e, "join refused");
                        }
                    }
                    Err(e) => tracing::warn!(%remote, error = %e, "connection refused"),
                }
            });
        }
    })
}

/// The protocol version this worker announces: [`wire::PROTOCOL_VERSION`],
/// except in test builds (feature `fault-injection`) run with
/// `FFRTMP_FAULT_INJECTION` set and `FFRTMP_FAULT_PROTOCOL_VERSION=N`, so a
/// test can start a real worker that speaks another version.
fn protocol_version() -> u32 {
    #[cfg(feature = "fault-injection")]
    if std::env::var_os("FFRTMP_FAULT_INJECTION").is_some() {
        if let Some(v) = std::env::var("FFRTMP_FAULT_PROTOCOL_VERSION")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            return v;
        }
    }
    wire::PROTOCOL_VERSION
}

/// The master's QUIC address as the operator gave it: `HOST:PORT`, where
/// HOST is a DNS name, an IPv4 address or a bracketed IPv6 address. A name
/// is resolved again before every connection attempt, so a master that
/// moves to another address is found on the next reconnect. The master's
/// certificate is checked against the cluster CA and a fixed server name,
/// never against HOST, so any name that resolves to the master will do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterAddr {
    host: String,
    port: u16,
}

impl MasterAddr {
    /// The host part (a name or an address, IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every address HOST resolves to now (an address resolves to itself).
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect();
        if found.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} resolves to no address", self.host),
            ));
        }
        Ok(found)
    }
}

impl From<SocketAddr> for MasterAddr {
    fn from(a: SocketAddr) -> Self {
        MasterAddr {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl std::fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for MasterAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a.into());
        }
        let bad = |why: &str| format!("{s:?} is not HOST:PORT ({why})");
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number 0-65535"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        if host.starts_with('[') || host.contains(':') {
            return Err(bad("an IPv6 address goes in brackets: [ADDR]:PORT"));
        }
        // A DNS name: letters, digits, hyphens and dots, 1-63 bytes a label.
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let name = host.strip_suffix('.').unwrap_or(host);
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad("the host is neither an IP address nor a DNS name"));
        }
        Ok(MasterAddr {
            host: host.to_string(),
            port,
        })
    }
}

/// How a worker reaches its master.
#[derive(Clone)]
pub struct WorkerNet {
    /// The master's QUIC address (a name is resolved before each attempt).
    pub master: MasterAddr,
    /// Holds the worker's certificate, key and CA (after joining), its node
    /// secret and its outbox.
    pub data_dir: PathBuf,
    /// Exchanged once for a certificate when the data dir has none.
    pub join_token: Option<String>,
    /// QUIC keep-alive and idle timeout.
    pub timers: Timers,
    /// Backoff between connection attempts.
    pub reconnect: RetryPolicy,
    /// On shutdown (SIGTERM) the node drains: running jobs get this long.
    pub drain_deadline: Duration,
}

/// Why a worker stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The data dir holds no certificate and no join token was given.
    #[error("no node certificate in {0} and no --join-token to get one")]
    NotJoined(PathBuf),
    /// The certificate, key or CA could not be loaded, saved or used.
    #[error("identity: {0}")]
    Identity(String),
    /// The master refused the join token, the protocol version, or the
    /// node's identity: retrying would not help.
    #[error("the master refused this worker for good: {0}")]
    Refused(String),
    /// The outbox could not be opened (damaged, stale or another node's).
    #[error("outbox: {0}")]
    Outbox(String),
    /// The `NodeActor` stopped other than by draining, or failed to start.
    #[error("the node stopped: {0}")]
    NodeStopped(String),
    /// Reading or writing the data dir, or binding the endpoint, failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// This worker's identity: from its data dir, or obtained with the join token.
async fn identity(
    net: &WorkerNet,
    endpoint: &quinn::Endpoint,
    node_id: &str,
) -> Result<NodeIdentity, WorkerError> {
    if let Some(id) =
        NodeIdentity::load(&net.data_dir).map_err(|e| WorkerError::Identity(e.to_string()))?
    {
        return Ok(id);
    }
    let token = net
        .join_token
        .as_deref()
        .ok_or_else(|| WorkerError::NotJoined(net.data_dir.clone()))?;
    let mut attempt = 0u32;
    loop {
        let joined = match master_socket(net, endpoint, attempt).await {
            Ok(master) => join::join(endpoint, master, token, node_id, net.timers).await,
            Err(e) => Err(TransportError::Io(e)),
        };
        match joined {
            Ok(id) => {
                id.save(&net.data_dir)
                    .map_err(|e| WorkerError::Identity(e.to_string()))?;
                tracing::info!(node = node_id, "joined the cluster; certificate saved");
                return Ok(id);
            }
            Err(TransportError::Refused(r)) => return Err(WorkerError::Refused(r)),
            Err(e) => {
                attempt += 1;
                let wait = net.reconnect.delay_ms(attempt, rand::random::<f64>());
                tracing::warn!(error = %e, "join failed; retrying in {wait} ms");
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
    }
}

/// The outbox of worker `node_id` whose data dir is `data_dir`. A damaged,
/// stale or foreign outbox is refused (see [`Outbox::open`]): the worker
/// must not start and lose the results it may hold.
pub fn open_outbox(data_dir: &Path, node_id: &str) -> Result<Outbox, WorkerError> {
    Outbox::open(&data_dir.join("outbox.sled"), node_id)
        .map_err(|e| WorkerError::Outbox(e.to_string()))
}

/// A QUIC client endpoint for a worker, keyed by its node secret: a
/// dual-stack socket, so the master may resolve to IPv4 or IPv6 on any
/// reconnect; an IPv4 socket where the host has no IPv6.
pub fn worker_endpoint(secret: &[u8; 32]) -> Result<quinn::Endpoint, WorkerError> {
    let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
    let any4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0));
    endpoint::client_endpoint(any6, secret)
        .or_else(|_| endpoint::client_endpoint(any4, secret))
        .map_err(|e| WorkerError::Identity(e.to_string()))
}

/// The master's address for connection attempt `attempt` (0 after a
/// success): its name resolved afresh, and of the addresses the endpoint can
/// reach (an IPv4-only endpoint skips IPv6) the next in turn, so a name that
/// resolves to `::1` and `127.0.0.1` reaches a master listening on either.
async fn master_socket(
    net: &WorkerNet,
    ep: &quinn::Endpoint,
    attempt: u32,
) -> std::io::Result<SocketAddr> {
    let v6_ok = ep.local_addr()?.is_ipv6();
    let found = net.master.resolve().await?;
    let usable: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| v6_ok || a.is_ipv4())
        .collect();
    usable
        .get(attempt as usize % usable.len().max(1))
        .copied()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!(
                    "{} resolves only to IPv6 ({found:?}) and this host has no IPv6",
                    net.master
                ),
            )
        })
}

/// Run a worker until `shutdown` turns true: get an identity (joining with
/// the token the first time), start the `NodeActor`, and keep it linked to
/// the master ([`maintain_link`]).
pub async fn run_worker(
    net: WorkerNet,
    mut config: NodeConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let secret = node_secret(&net.data_dir)?;
    let ep = worker_endpoint(&secret)?;
    let id = tokio::select! {
        id = identity(&net, &ep, &config.node_id) => id?,
        _ = shutdown.changed() => return Ok(()),
    };
    config.node_id = id
        .node_id()
        .map_err(|e| WorkerError::Identity(e.to_string()))?;
    let outbox = open_outbox(&net.data_dir, &config.node_id)?;
    let name = format!("ffrtmp-node-{}", config.node_id);
    let args = NodeArgs {
        config: config.clone(),
        outbox,
    };
    let (node, done) = Actor::spawn(Some(name), NodeActor, args)
        .await
        .map_err(|e| WorkerError::NodeStopped(format!("spawning the node: {e}")))?;
    let result = maintain_link(&net, &ep, &id, &config, node, done, shutdown).await;
    // Let the last link finish sending (results of a drain) before we go.
    let _ = tokio::time::timeout(Duration::from_secs(5), ep.wait_idle()).await;
    result
}

/// Keep `node` linked to the master, reconnecting as needed, until it
/// stops: drained (after `shutdown` turns true it drains, and links are
/// still kept so its last results get out), or refused by the master for
/// good.
pub async fn maintain_link(
    net: &WorkerNet,
    ep: &quinn::Endpoint,
    id: &NodeIdentity,
    config: &NodeConfig,
    node: ActorRef<NodeMsg>,
    done: JoinHandle<()>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    tokio::pin!(done);
    let drained = || config.drained.load(std::sync::atomic::Ordering::SeqCst);
    // Set once shutdown began: past it, the node is stopped outright.
    let mut bound: Option<tokio::time::Instant> = None;
    let mut attempt = 0u32;
    loop {
        if bound.is_none() && *shutdown.borrow() {
            let _ = node.cast(NodeMsg::Drain {
                deadline: net.drain_deadline,
            });
            bound = Some(tokio::time::Instant::now() + net.drain_deadline + DRAIN_SLACK);
        }
        let until = bound;
        let give_up = async move {
            match until {
                Some(b) => tokio::time::sleep_until(b).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(give_up);
        let Ok(hello) = ractor::call_t!(node, NodeMsg::Hello, 10_000) else {
            // The node stopped (drained, or failed) while its link went down.
            return node_ended(drained());
        };
        let tls_cfg = tls::client_config(id).map_err(|e| WorkerError::Identity(e.to_string()))?;
        let version = protocol_version();
        let connect = async {
            let master = master_socket(net, ep, attempt)
                .await
                .map_err(TransportError::Io)?;
            endpoint::connect_versioned(
                ep,
                master,
                MASTER_SERVER_NAME,
                tls_cfg,
                net.timers,
                version,
                &hello,
            )
            .await
        };
        let connected = tokio::select! {
            r = connect => r,
            _ = shutdown.changed(), if bound.is_none() => continue,
            _ = &mut done => return node_ended(drained()),
            _ = &mut give_up => return stop_now(&node).await,
        };
        match connected {
            Ok(link) => {
                attempt = 0;
                tracing::info!(master = %net.master, node = %config.node_id, "connected to the master");
                let connection = link.connection.clone();
                let (tx, rx) = bridge::bridge(link, vec![]);
                let (down, link_down) = oneshot::channel();
                node.cast(NodeMsg::LinkUp {
                    link: LinkEnd { tx, rx },
                    down,
                })
                .map_err(|e| WorkerError::NodeStopped(e.to_string()))?;
                tokio::select! {
                    _ = link_down => {
                        // A restarted master answers our next packet with a
                        // stateless reset ("reset by peer"), so this is quick.
                        let why = connection
                            .close_reason()
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "closed by this node".into());
                        if matches!(
                            node.get_status(),
                            ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped
                        ) {
                            // Our own node is stopping (an embedder's or a
                            // standalone node's shutdown): nothing is wrong.
                            tracing::debug!(reason = %why, "link closed: the node is stopping");
                        } else {
                            tracing::warn!(reason = %why, "link to the master lost; reconnecting");
                        }
                    }
                    _ = &mut done => return node_ended(drained()),
                    _ = shutdown.changed(), if bound.is_none() => {
                        // Drain over this same link (it is still up).
                        let _ = node.cast(NodeMsg::Drain { deadline: net.drain_deadline });
                        let b = tokio::time::Instant::now() + net.drain_deadline + DRAIN_SLACK;
                        tokio::select! {
                            _ = &mut done => return node_ended(drained()),
                            _ = tokio::time::sleep_until(b) => return stop_now(&node).await,
                        }
                    }
                    _ = &mut give_up => return stop_now(&node).await,
                }
                continue;
            }
            Err(
                e @ (TransportError::VersionMismatch { .. }
                | TransportError::IdentityMismatch { .. }),
            ) => {
                stop_now(&node).await?;
                return Err(WorkerError::Refused(e.to_string()));
            }
            Err(e @ TransportError::UntrustedMaster(_)) => tracing::warn!(
                master = %net.master,
                ca = %net.data_dir.join(pki::CA_CERT_FILE).display(),
                error = %e,
                "the master is not trusted by this worker; retrying. Is --master another cluster's master, or was the cluster's PKI re-created? Then remove node.pem, node.key and ca.pem from the data dir and join again with a new --join-token"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot reach the master"),
        }
        attempt += 1;
        let wait = net.reconnect.delay_ms(attempt, rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = shutdown.changed(), if bound.is_none() => {}
            _ = &mut done => return node_ended(drained()),
            _ = &mut give_up => return stop_now(&node).await,
        }
    }
}

/// How long past its drain deadline a shutting-down worker waits for its
/// last results to be acknowledged.
const DRAIN_SLACK: Duration = Duration::from_secs(30);

fn node_ended(drained: bool) -> Result<(), WorkerError> {
    if drained {
        tracing::info!("drained; leaving the cluster");
        Ok(())
    } else {
        Err(WorkerError::NodeStopped("the node actor stopped".into()))
    }
}

/// Stop the node outright (its jobs are killed; unacknowledged results stay
/// in the outbox for the next start).
async fn stop_now(node: &ActorRef<NodeMsg>) -> Result<(), WorkerError> {
    let _ = node
        .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(20)))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests;
