//! Bootstrap of a master tree and a worker tree in one process
//! (`ffrtmp-node --role standalone`), and the building blocks an embedding
//! application uses to do the same under its own supervisor.
//!
//! Standalone is a one-node cluster: the worker reaches the master over a
//! loopback QUIC connection with mutual TLS (a private CA in
//! `<data-dir>/pki`, created on first start), with leases, outbox and
//! reconnection exactly as in a cluster, so the default single-machine path
//! runs the cluster code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_runtime::cgroup::CgroupManager;
use ffrtmp_runtime::ffmpeg;
use ffrtmp_runtime::model::Codec;
use ffrtmp_runtime::retry::RetryPolicy;
use ffrtmp_runtime::spec::MediaRoots;
use ffrtmp_runtime::store::Store;
use ffrtmp_transport_quic::endpoint::Timers;
use ffrtmp_transport_quic::pki::{self, CertificateAuthority, NodeIdentity};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorCell, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::AdminArgs;
use crate::cluster::{self, WorkerNet};
use crate::events::JobEvents;
use crate::node::{NodeActor, NodeArgs, NodeConfig, NodeMsg};
use crate::scheduler::{SchedulerActor, SchedulerArgs, SchedulerMsg};

/// Everything `--role standalone` needs.
#[derive(Clone)]
pub struct StandaloneConfig {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub media_roots: Vec<PathBuf>,
    pub slots: u32,
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// cgroup parent under which this node's job cgroups live.
    pub cgroup_parent: String,
    pub nice: i32,
    pub kill_grace: Duration,
    pub retry: RetryPolicy,
    /// The lease the master grants its workers (docs/PROTOCOL.md, "Leases").
    pub lease: Duration,
    pub metrics: Option<PrometheusHandle>,
    /// Advertise only these encoders (of those that pass a test encode).
    pub encoder_allowlist: Option<Vec<String>>,
    /// How the worker measures energy (`None`: it does not).
    pub power: Option<crate::power::PowerConfig>,
    /// The worker's attempt run log (`--run-log`).
    pub run_log: Option<PathBuf>,
}

/// Default slots: half the cores, at least one.
pub fn default_slots() -> u32 {
    (crate::node::cores() / 2).max(1)
}

/// A running standalone node.
pub struct Standalone {
    pub scheduler: ActorRef<SchedulerMsg>,
    pub node: ActorRef<NodeMsg>,
    pub http: SocketAddr,
    /// Completes when the scheduler stops.
    pub scheduler_done: JoinHandle<()>,
    /// The node's cgroups (its parent is removed on [`Standalone::shutdown`]).
    pub cgroups: Arc<CgroupManager>,
    /// The master's loopback QUIC address.
    pub quic: SocketAddr,
    master_endpoint: quinn::Endpoint,
    accept: JoinHandle<()>,
    link: JoinHandle<()>,
    _stop: watch::Sender<bool>,
}

/// How long shutdown waits for each tree to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

impl Standalone {
    /// Orderly stop: the worker tree first (its jobs are killed and their
    /// cgroups removed; they are requeued on the next start), then the
    /// master tree, then the node's now empty cgroup parent.
    pub async fn shutdown(self) {
        let _ = self
            .node
            .stop_and_wait(Some("shutdown".into()), Some(SHUTDOWN_TIMEOUT))
            .await;
        self.link.abort();
        self.accept.abort();
        self.master_endpoint.close(
            ffrtmp_transport_quic::endpoint::close::NORMAL,
            b"standalone stopping",
        );
        let _ = self
            .scheduler
            .stop_and_wait(Some("shutdown".into()), Some(SHUTDOWN_TIMEOUT))
            .await;
        let cgroups = self.cgroups.clone();
        match tokio::task::spawn_blocking(move || cgroups.remove_parent()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "node cgroup parent not removed"),
            Err(e) => tracing::warn!(error = %e, "cgroup cleanup task failed"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("media root: {0}")]
    MediaRoot(std::io::Error),
    #[error("store: {0}")]
    Store(String),
    #[error("actor: {0}")]
    Spawn(String),
    #[error("the HTTP API did not come up")]
    Http,
    #[error("pki: {0}")]
    Pki(String),
    #[error("QUIC: {0}")]
    Quic(String),
}

/// A node id stable across restarts: created once in the data dir.
pub fn node_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// Encoders that pass a real test encode on this machine, limited to
/// `allow` when given.
pub async fn probe_encoders(ffmpeg_path: &Path, allow: Option<&[String]>) -> Vec<String> {
    let candidates: Vec<&str> = Codec::ALL
        .iter()
        .map(|c| c.encoder())
        .filter(|e| allow.is_none_or(|a| a.iter().any(|x| x == e)))
        .collect();
    ffmpeg::probe_encoders(ffmpeg_path, &candidates).await
}

/// A worker's node configuration from the shared flags: its cgroup manager
/// (`<cgroup_parent>/<node_id>`) and the encoders that pass a test encode.
pub async fn node_config(cfg: &StandaloneConfig, node_id: String) -> NodeConfig {
    let cgroups = Arc::new(CgroupManager::detect(&format!(
        "{}/{}",
        cfg.cgroup_parent, node_id
    )));
    tracing::info!(isolation = ?cgroups.isolation(), "job isolation");
    let encoders = probe_encoders(&cfg.ffmpeg, cfg.encoder_allowlist.as_deref()).await;
    tracing::info!(?encoders, "encoders that passed a test encode");
    NodeConfig {
        node_id,
        slots: cfg.slots,
        ffmpeg: cfg.ffmpeg.clone(),
        ffprobe: cfg.ffprobe.clone(),
        cgroups,
        nice: cfg.nice,
        kill_grace: cfg.kill_grace,
        encoders,
        drained: Default::default(),
        power: cfg.power.clone(),
        run_log: cfg.run_log.clone(),
    }
}

/// Spawn the master tree (scheduler + HTTP API), optionally linked under an
/// embedding application's supervisor.
pub async fn spawn_master(
    store: Store,
    events: JobEvents,
    retry: RetryPolicy,
    admin: Option<AdminArgs>,
    lease: Duration,
    supervisor: Option<ActorCell>,
) -> Result<(ActorRef<SchedulerMsg>, JoinHandle<()>), StartError> {
    let args = SchedulerArgs {
        store,
        events,
        retry,
        admin,
        lease,
    };
    let spawned = match supervisor {
        Some(sup) => Actor::spawn_linked(None, SchedulerActor, args, sup).await,
        None => Actor::spawn(None, SchedulerActor, args).await,
    };
    spawned.map_err(|e| StartError::Spawn(e.to_string()))
}

/// A running master tree.
pub struct MasterTree {
    pub scheduler: ActorRef<SchedulerMsg>,
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// Completes when the scheduler stops.
    pub done: JoinHandle<()>,
}

/// The master tree from the shared config: the job store in the data dir,
/// the scheduler, and its HTTP API over the media roots. `fault_node` is the
/// local worker of a standalone node (for the test-only panic hook).
pub async fn start_master(
    cfg: &StandaloneConfig,
    fault_node: Option<ActorRef<NodeMsg>>,
) -> Result<MasterTree, StartError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let roots = MediaRoots::new(&cfg.media_roots).map_err(StartError::MediaRoot)?;
    let store = Store::open(&cfg.data_dir.join("master.sled"))
        .map_err(|e| StartError::Store(e.to_string()))?;
    let events = JobEvents::default();
    let admin = AdminArgs {
        bind: cfg.http,
        store: store.clone(),
        events: events.clone(),
        media_roots: Arc::new(roots),
        api_key: cfg.api_key.clone(),
        max_body_bytes: cfg.max_body_bytes,
        metrics: cfg.metrics.clone(),
        scheduler: None,
        fault_node,
    };
    let (scheduler, done) =
        spawn_master(store, events, cfg.retry, Some(admin), cfg.lease, None).await?;
    let http = ractor::call_t!(scheduler, SchedulerMsg::HttpAddr, 10_000)
        .ok()
        .flatten()
        .ok_or(StartError::Http)?;
    Ok(MasterTree {
        scheduler,
        http,
        done,
    })
}

/// The local worker's identity: loaded from the data dir, or issued by the
/// standalone node's own CA (`<data-dir>/pki`, created on first use).
pub fn local_identity(data_dir: &Path, node_id: &str) -> Result<NodeIdentity, StartError> {
    let err = |e: pki::PkiError| StartError::Pki(e.to_string());
    if let Some(id) = NodeIdentity::load(data_dir).map_err(err)? {
        return Ok(id);
    }
    let pki_dir = data_dir.join("pki");
    let ca = match CertificateAuthority::load(&pki_dir) {
        Ok(ca) => ca,
        Err(_) => {
            pki::init(&pki_dir, &[]).map_err(err)?;
            CertificateAuthority::load(&pki_dir).map_err(err)?
        }
    };
    let (key_pem, csr_pem) = pki::new_key_and_csr(node_id).map_err(err)?;
    let cert_pem = ca.issue_node_cert(node_id, &csr_pem).map_err(err)?;
    let id = NodeIdentity {
        cert_pem,
        key_pem,
        ca_pem: ca.cert_pem().to_string(),
    };
    id.save(data_dir).map_err(err)?;
    Ok(id)
}

/// Start a standalone node: the master tree, listening for QUIC on
/// loopback only, and one worker tree linked to it over that connection.
pub async fn start(cfg: StandaloneConfig) -> Result<Standalone, StartError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let node_id =
        node_id(&cfg.data_dir).map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let identity = local_identity(&cfg.data_dir, &node_id)?;

    // The worker first: its start-up sweep must run before any old attempt
    // is requeued.
    let config = node_config(&cfg, node_id.clone()).await;
    let cgroups = config.cgroups.clone();
    let outbox = cluster::open_outbox(&cfg.data_dir, &node_id)
        .map_err(|e| StartError::Store(e.to_string()))?;
    let (node, node_done) = Actor::spawn(
        Some(format!("ffrtmp-node-{node_id}")),
        NodeActor,
        NodeArgs {
            config: config.clone(),
            outbox,
        },
    )
    .await
    .map_err(|e| StartError::Spawn(e.to_string()))?;

    let master = match start_master(&cfg, Some(node.clone())).await {
        Ok(m) => m,
        Err(e) => {
            node.stop(Some("master failed to start".into()));
            return Err(e);
        }
    };
    let quic_err = |e: String| StartError::Quic(e);
    let secret = cluster::node_secret(&cfg.data_dir).map_err(|e| quic_err(e.to_string()))?;
    let timers = Timers::default();
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let master_endpoint =
        cluster::master_endpoint(loopback, &cfg.data_dir.join("pki"), timers, &secret)
            .map_err(quic_err)?;
    let quic = master_endpoint
        .local_addr()
        .map_err(|e| quic_err(e.to_string()))?;
    let accept = cluster::spawn_accept_loop(
        master_endpoint.clone(),
        master.scheduler.clone(),
        cfg.data_dir.join("pki"),
    );
    let worker_endpoint =
        cluster::worker_endpoint(quic, &secret).map_err(|e| quic_err(e.to_string()))?;
    let net = WorkerNet {
        master: quic,
        data_dir: cfg.data_dir.clone(),
        join_token: None,
        timers,
        reconnect: RetryPolicy {
            base_ms: 50,
            max_ms: 1_000,
        },
        drain_deadline: Duration::ZERO,
    };
    let (stop, stop_rx) = watch::channel(false);
    let link_node = node.clone();
    let link = tokio::spawn(async move {
        let r = cluster::maintain_link(
            &net,
            &worker_endpoint,
            &identity,
            &config,
            link_node,
            node_done,
            stop_rx,
        )
        .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "standalone link ended");
        }
    });
    tracing::info!(%quic, "standalone: worker linked to the master over loopback QUIC");
    Ok(Standalone {
        scheduler: master.scheduler,
        node,
        http: master.http,
        scheduler_done: master.done,
        cgroups,
        quic,
        master_endpoint,
        accept,
        link,
        _stop: stop,
    })
}
