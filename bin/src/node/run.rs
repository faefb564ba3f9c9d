//! Running a node of each role from its checked flags: the standalone,
//! master and worker configurations, their QUIC timers, the worker's
//! metrics endpoint, and the wait for a stop signal.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use ffrtmp_actors::standalone::{self, StandaloneConfig};
use ffrtmp_runtime::retry::RetryPolicy;
use ffrtmp_shared::ffmpeg_check;

use super::checks::{check_flags, check_kill_grace, power_config, raise_open_file_limit};
use super::{NodeFlags, Role};

pub(crate) fn standalone_config(f: &NodeFlags) -> anyhow::Result<StandaloneConfig> {
    let ffmpeg = ffmpeg_check::locate(&f.ffmpeg)?;
    let ffprobe = ffmpeg_check::locate(&f.ffprobe)?;
    let media_roots = if f.media_roots.is_empty() {
        let d = f.data_dir.join("media");
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        vec![d]
    } else {
        f.media_roots.clone()
    };
    check_kill_grace(f)?;
    Ok(StandaloneConfig {
        data_dir: f.data_dir.clone(),
        http: f.http,
        media_roots,
        slots: f.slots.unwrap_or_else(standalone::default_slots).max(1),
        api_key: f.api_key.clone().filter(|k| !k.is_empty()),
        max_body_bytes: f.max_body_bytes,
        max_experiment_jobs: f.max_experiment_jobs,
        http_limits: ffrtmp_actors::admin::HttpLimits {
            max_connections: usize::try_from(f.max_http_connections).unwrap_or(usize::MAX),
            header_timeout: Duration::from_secs(f.http_header_timeout_s),
            body_timeout: Duration::from_secs(f.http_body_timeout_s),
        },
        ffmpeg,
        ffprobe,
        vmaf_bin: f.vmaf_bin.clone(),
        cgroup_parent: f.cgroup_parent.clone(),
        nice: 10,
        kill_grace: Duration::from_secs_f64(f.kill_grace_s),
        retry: RetryPolicy::default(),
        lease: Duration::from_millis(f.lease_ms),
        max_commit_batch: f.max_commit_batch as usize,
        commit_interval: Duration::from_micros(f.commit_interval_us),
        store_reserve: f.store_reserve_mb << 20,
        metrics: ffrtmp_actors::metrics::install_prometheus(),
        encoder_allowlist: f.encoders.clone(),
        power: Some(power_config(f)?),
        run_log: f.run_log.clone(),
    })
}

/// Write an address to a file atomically (write, then rename).
pub(super) fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}

pub(super) fn timers(f: &NodeFlags) -> ffrtmp_transport_quic::endpoint::Timers {
    ffrtmp_transport_quic::endpoint::Timers {
        keep_alive: Duration::from_millis(f.keep_alive_ms),
        idle_timeout: Duration::from_millis(f.idle_timeout_ms),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(super) async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = term.recv() => tracing::info!("SIGTERM; stopping"),
    }
    Ok(())
}

pub(super) async fn run_node(flags: NodeFlags) -> anyhow::Result<()> {
    check_flags(&flags)?;
    raise_open_file_limit(flags.max_http_connections);
    match flags.role {
        Role::Standalone => {
            let cfg = standalone_config(&flags)?;
            let mut node = standalone::start(cfg).await?;
            tracing::info!(http = %node.http, "standalone node ready");
            if let Some(path) = &flags.http_addr_file {
                write_addr_file(path, node.http)?;
            }
            tokio::select! {
                r = stop_signal() => r?,
                _ = &mut node.scheduler_done => anyhow::bail!("the scheduler stopped"),
            }
            // Running jobs are killed (their cgroups removed) and requeued as
            // new attempts on the next start.
            node.shutdown().await;
            Ok(())
        }
        Role::Master => run_master(flags).await,
        Role::Worker => run_worker(flags).await,
    }
}

pub(super) async fn run_master(flags: NodeFlags) -> anyhow::Result<()> {
    use ffrtmp_actors::cluster;
    let pki_dir = flags.pki.clone().context(
        "--role master needs --pki DIR (create it with: ffrtmp-node pki init --dir DIR)",
    )?;
    let cfg = standalone_config(&flags)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let timers = timers(&flags);
    let secret = cluster::node_secret(&cfg.data_dir)?;
    let endpoint = cluster::master_endpoint(flags.listen, &pki_dir, timers, &secret)
        .map_err(|e| anyhow::anyhow!("QUIC listener on {}: {e}", flags.listen))?;
    let quic_addr = endpoint.local_addr()?;
    let standalone::MasterTree {
        scheduler,
        http,
        mut done,
    } = standalone::start_master(&cfg, None).await?;
    let accept = cluster::spawn_accept_loop(endpoint.clone(), scheduler.clone(), pki_dir);
    tracing::info!(%http, quic = %quic_addr, lease = ?cfg.lease, "master ready");
    if let Some(path) = &flags.http_addr_file {
        write_addr_file(path, http)?;
    }
    if let Some(path) = &flags.listen_addr_file {
        write_addr_file(path, quic_addr)?;
    }
    tokio::select! {
        r = stop_signal() => r?,
        _ = &mut done => anyhow::bail!("the scheduler stopped"),
    }
    accept.abort();
    endpoint.close(
        ffrtmp_transport_quic::endpoint::close::NORMAL,
        b"master stopping",
    );
    let _ = scheduler
        .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(20)))
        .await;
    Ok(())
}

pub(super) async fn run_worker(flags: NodeFlags) -> anyhow::Result<()> {
    use ffrtmp_actors::cluster;
    let master = flags
        .master
        .clone()
        .context("--role worker needs --master HOST:PORT")?;
    let cfg = standalone_config(&flags)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let node_id = standalone::node_id(&cfg.data_dir)?;
    let config = standalone::node_config(&cfg, node_id).await;
    let cgroups = config.cgroups.clone();
    let net = cluster::WorkerNet {
        master,
        data_dir: cfg.data_dir.clone(),
        join_token: flags.join_token.clone().filter(|t| !t.is_empty()),
        timers: timers(&flags),
        reconnect: ffrtmp_runtime::retry::RetryPolicy {
            base_ms: 200,
            max_ms: 2_000,
        },
        drain_deadline: Duration::from_secs(flags.drain_deadline_s),
    };
    let metrics = match flags.metrics_listen {
        Some(addr) => Some(serve_worker_metrics(addr, cfg.metrics.clone()).await?),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(cluster::run_worker(net, config, stop_rx));
    // Stop serving metrics when this function returns, however it does.
    let _metrics = metrics.map(AbortOnDrop);
    tokio::pin!(worker);
    tokio::select! {
        r = stop_signal() => r?,
        r = &mut worker => {
            // The worker left on its own (drained) or gave up.
            remove_cgroup_parent(&cgroups);
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(anyhow::anyhow!("worker task failed: {e}")),
            };
        }
    }
    // SIGTERM: the worker drains, then leaves.
    let _ = stop_tx.send(true);
    let _ = worker.await;
    remove_cgroup_parent(&cgroups);
    Ok(())
}

/// Aborts its task when dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A worker's own Prometheus listener (`--metrics-listen`): `/metrics` with
/// what only the worker sees (FFmpeg spawn failures, the sampler's cycle
/// histogram), and `/healthz`. Binds before returning, so a taken address
/// fails the start.
pub(super) async fn serve_worker_metrics(
    addr: SocketAddr,
    handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::{http::header, routing::get, Router};
    let handle = handle.context(
        "--metrics-listen: another metrics recorder is installed in this process, so there is \
         nothing to serve",
    )?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = handle.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
    let bound = listener.local_addr()?;
    tracing::info!(metrics = %bound, "serving /metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    }))
}

pub(super) fn remove_cgroup_parent(cgroups: &ffrtmp_os::cgroup::CgroupManager) {
    if let Err(e) = cgroups.remove_parent() {
        tracing::warn!(error = %e, "node cgroup parent not removed");
    }
}
