//! Bootstrap of a master tree and a worker tree in one process
//! (`ffrtmp-node --role standalone`), built on [`crate::embed`]; also the
//! pieces the `master` and `worker` roles share with it (node id, node
//! configuration from the flags, the master tree).
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

use ffrtmp_os::cgroup::CgroupManager;
use ffrtmp_os::store::Store;
use ffrtmp_runtime::model::QualityMetric;
use ffrtmp_runtime::retry::RetryPolicy;
use ffrtmp_runtime::spec::MediaRoots;
use ffrtmp_transport_quic::endpoint::Timers;
use ffrtmp_transport_quic::pki::{self, CertificateAuthority, NodeIdentity};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::AdminArgs;
use crate::cluster::{self, WorkerNet};
use crate::embed;
use crate::events::JobEvents;
use crate::node::{NodeArgs, NodeConfig, NodeMsg};
use crate::scheduler::{SchedulerArgs, SchedulerMsg};

pub use crate::embed::{default_slots, probe_encoders};

/// Everything `--role standalone` needs (the `master` and `worker` roles use
/// the parts that concern them). Built from `ffrtmp-node`'s flags.
#[derive(Clone)]
pub struct StandaloneConfig {
    /// Holds the job store (`master.sled`), the outbox, the node id, the
    /// node secret and the standalone's private PKI.
    pub data_dir: PathBuf,
    /// Where the HTTP API listens (port 0: any free port).
    pub http: SocketAddr,
    /// Directories job files must lie in (at least one must exist).
    pub media_roots: Vec<PathBuf>,
    /// Jobs the worker runs at once.
    pub slots: u32,
    /// Bearer key for the HTTP API; `None`: no key is asked for.
    pub api_key: Option<String>,
    /// Largest HTTP request body accepted.
    pub max_body_bytes: usize,
    /// The most jobs one experiment may expand to.
    pub max_experiment_jobs: u64,
    /// The HTTP API's connection cap and read timeouts.
    pub http_limits: crate::http::HttpLimits,
    /// The FFmpeg binary jobs run (a path, or a name looked up in `PATH`).
    pub ffmpeg: PathBuf,
    /// The ffprobe binary (output file sizes and bitrates).
    pub ffprobe: PathBuf,
    /// `--vmaf-bin`: the `ffrtmp-vmaf` to use (`None`: beside the node's
    /// executable, else on `PATH`).
    pub vmaf_bin: Option<PathBuf>,
    /// cgroup parent under which this node's job cgroups live.
    pub cgroup_parent: String,
    /// The `nice` value jobs run at.
    pub nice: i32,
    /// SIGTERM, then SIGKILL this much later, when a job must stop.
    pub kill_grace: Duration,
    /// Backoff between attempts after a transient failure.
    pub retry: RetryPolicy,
    /// The lease the master grants its workers (docs/PROTOCOL.md, "Leases").
    pub lease: Duration,
    /// Group commit: the most writes the scheduler leaves waiting for a
    /// flush ([`crate::scheduler::SchedulerArgs::max_commit_batch`]).
    pub max_commit_batch: usize,
    /// Group commit: the least time between two store flushes
    /// ([`crate::scheduler::SchedulerArgs::commit_interval`]).
    pub commit_interval: Duration,
    /// Job writes are refused (`503 storage_full`) while the store's
    /// filesystem has fewer bytes free than this
    /// ([`ffrtmp_os::sidefile::DISK_RESERVE`] by default).
    pub store_reserve: u64,
    /// Serves `GET /metrics` when set.
    pub metrics: Option<PrometheusHandle>,
    /// Advertise only these encoders (of those that pass a test encode).
    pub encoder_allowlist: Option<Vec<String>>,
    /// How the worker measures energy (`None`: it does not).
    pub power: Option<crate::power::PowerConfig>,
    /// The worker's attempt run log (`--run-log`).
    pub run_log: Option<PathBuf>,
}

/// A running standalone node.
pub struct Standalone {
    /// The master tree's root.
    pub scheduler: ActorRef<SchedulerMsg>,
    /// The local worker, linked to the scheduler over loopback QUIC.
    pub node: ActorRef<NodeMsg>,
    /// Where the HTTP API listens.
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

impl Standalone {
    /// Orderly stop: the worker tree first (its jobs are killed and their
    /// cgroups removed; they are requeued on the next start), then the
    /// master tree, then the node's now empty cgroup parent.
    pub async fn shutdown(self) {
        embed::stop_node(&self.node, self.cgroups.clone()).await;
        self.link.abort();
        self.accept.abort();
        self.master_endpoint.close(
            ffrtmp_transport_quic::endpoint::close::NORMAL,
            b"standalone stopping",
        );
        embed::stop_scheduler(&self.scheduler).await;
    }
}

/// Why a standalone node (or a master tree) did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir could not be created, or its node id read or written.
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    /// A media root is missing or not a directory.
    #[error("media root: {0}")]
    MediaRoot(std::io::Error),
    /// The job store or the outbox could not be opened (a damaged, stale or
    /// foreign outbox is refused).
    #[error("store: {0}")]
    Store(String),
    /// The scheduler or the node failed to start (the message says why).
    #[error("actor: {0}")]
    Spawn(String),
    /// The HTTP API did not report its address (it could not bind).
    #[error("the HTTP API did not come up")]
    Http,
    /// The private CA or the local worker's certificate failed.
    #[error("pki: {0}")]
    Pki(String),
    /// The loopback QUIC endpoints failed.
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

/// A worker's node configuration from the shared flags: its cgroup manager
/// (`<cgroup_parent>/<node_id>`) and the encoders that pass a test encode.
pub async fn node_config(cfg: &StandaloneConfig, node_id: String) -> NodeConfig {
    let mut config = embed::node_config(
        node_id,
        cfg.ffmpeg.clone(),
        cfg.ffprobe.clone(),
        &cfg.cgroup_parent,
        cfg.encoder_allowlist.as_deref(),
    )
    .await;
    if let Some(flag) = &cfg.vmaf_bin {
        config.vmaf_bin = embed::find_vmaf(Some(flag)).await;
        config.metrics.retain(|m| *m != QualityMetric::Vmaf);
        if config.vmaf_bin.is_some() {
            config.metrics.insert(0, QualityMetric::Vmaf);
        }
    }
    config.slots = cfg.slots;
    config.nice = cfg.nice;
    config.kill_grace = cfg.kill_grace;
    config.power = cfg.power.clone();
    config.run_log = cfg.run_log.clone();
    // Canonical, as the master stores job paths; a root that cannot be
    // resolved fails the master's start (a standalone) or every file job of
    // this worker (path_outside_media_root), never opens anything outside.
    config.media_roots = match MediaRoots::new(&cfg.media_roots) {
        Ok(roots) => roots.roots().to_vec(),
        Err(e) => {
            tracing::error!(error = %e, "media roots unusable: file jobs will fail");
            Vec::new()
        }
    };
    config.work_dir = Some(cfg.data_dir.join("work"));
    config
}

/// A running master tree.
pub struct MasterTree {
    /// Its root.
    pub scheduler: ActorRef<SchedulerMsg>,
    /// Where the HTTP API listens.
    pub http: SocketAddr,
    /// Completes when the scheduler stops.
    pub done: JoinHandle<()>,
}

/// A standalone node's own worker, as its master tree knows it.
pub struct LocalWorker {
    /// The worker's node actor (for the test-only panic hook).
    pub node: ActorRef<NodeMsg>,
    /// Its node id: the API refuses to drain it, the node's only worker.
    pub id: String,
}

/// The master tree from the shared config: the job store in the data dir,
/// the scheduler, and its HTTP API over the media roots. `local` is the
/// worker of a standalone node (`None` for `--role master`).
pub async fn start_master(
    cfg: &StandaloneConfig,
    local: Option<LocalWorker>,
) -> Result<MasterTree, StartError> {
    let (fault_node, standalone_worker) = match local {
        Some(w) => (Some(w.node), Some(w.id)),
        None => (None, None),
    };
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let roots = MediaRoots::new(&cfg.media_roots).map_err(StartError::MediaRoot)?;
    // Opening verifies the whole store (and may wait for sled's lock):
    // blocking work, kept off the async workers.
    let path = cfg.data_dir.join("master.sled");
    let store = tokio::task::spawn_blocking(move || Store::open(&path))
        .await
        .map_err(|e| StartError::Store(format!("the store's opening task failed: {e}")))?
        .map_err(|e| StartError::Store(e.to_string()))?;
    store.set_disk_reserve(cfg.store_reserve);
    let events = JobEvents::default();
    let admin = AdminArgs {
        bind: cfg.http,
        store: store.clone(),
        events: events.clone(),
        media_roots: Arc::new(roots),
        ffprobe: Some(cfg.ffprobe.clone()),
        api_key: cfg.api_key.clone(),
        max_body_bytes: cfg.max_body_bytes,
        max_experiment_jobs: cfg.max_experiment_jobs,
        limits: cfg.http_limits,
        standalone_worker,
        metrics: cfg.metrics.clone(),
        scheduler: None,
        fault_node,
    };
    let args = SchedulerArgs {
        store,
        events,
        retry: cfg.retry,
        admin: Some(Arc::new(admin)),
        lease: cfg.lease,
        max_commit_batch: cfg.max_commit_batch,
        commit_interval: cfg.commit_interval,
    };
    let (scheduler, done) = embed::spawn_scheduler(args, None)
        .await
        .map_err(|e| StartError::Spawn(e.to_string()))?;
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
    let (node, node_done) = embed::spawn_node(
        NodeArgs {
            config: config.clone(),
            outbox,
        },
        None,
    )
    .await
    .map_err(|e| StartError::Spawn(e.to_string()))?;

    let local = LocalWorker {
        node: node.clone(),
        id: node_id.clone(),
    };
    let master = match start_master(&cfg, Some(local)).await {
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
    let worker_endpoint = cluster::worker_endpoint(&secret).map_err(|e| quic_err(e.to_string()))?;
    let net = WorkerNet {
        master: quic.into(),
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
