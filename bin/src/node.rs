//! `ffrtmp-node`: the daemon. Thin: parse flags, set up logging and metrics,
//! start the actors, wait for a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ffrtmp_actors::standalone::{self, StandaloneConfig};
use ffrtmp_runtime::retry::RetryPolicy;
use ffrtmp_shared::{demo, ffmpeg_check};

#[derive(Parser, Debug)]
#[command(
    name = "ffrtmp-node",
    version,
    about = "ffrtmp daemon: runs FFmpeg transcode jobs and measures them"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeFlags,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a throw-away standalone node, run sample jobs through its HTTP API, show progress and
    /// results (the same as `ffrtmp demo`, with this command's node flags).
    Demo {
        /// Seconds of video each sample job encodes.
        #[arg(long, default_value_t = 6.0)]
        duration: f64,
    },
    /// The cluster PKI: the CA, the master's certificate, join tokens.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PkiCommand {
    /// Create the cluster CA and the master's certificate in DIR (refuses to overwrite).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Extra DNS name or IP address for the master's certificate (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Print a one-line token a worker joins with (reusable until it expires).
    JoinToken {
        #[arg(long)]
        dir: PathBuf,
        /// How long the token is valid, in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    /// Master and worker in one process, linked by the same messages a cluster uses.
    Standalone,
    /// Scheduler and HTTP API; workers connect over QUIC (needs --pki).
    Master,
    /// Runs jobs for a master (needs --master, and --join-token the first time).
    Worker,
}

#[derive(clap::Args, Debug)]
struct NodeFlags {
    #[arg(long, value_enum, default_value = "standalone", env = "FFRTMP_ROLE")]
    role: Role,
    /// Where the job store and the node id live.
    #[arg(long, default_value = "./data", env = "FFRTMP_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080", env = "FFRTMP_HTTP")]
    http: SocketAddr,
    /// Directory jobs may read inputs from and write outputs to (repeatable).
    #[arg(long = "media-root", env = "FFRTMP_MEDIA_ROOT", value_delimiter = ',')]
    media_roots: Vec<PathBuf>,
    /// Jobs run at once (default: half the cores, at least 1).
    #[arg(long, env = "FFRTMP_SLOTS")]
    slots: Option<u32>,
    /// Require `Authorization: Bearer KEY` on every route but /healthz and /readyz.
    #[arg(long, env = "FFRTMP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = ffrtmp_actors::admin::DEFAULT_MAX_BODY_BYTES, env = "FFRTMP_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    #[arg(long, default_value = "ffmpeg", env = "FFRTMP_FFMPEG")]
    ffmpeg: PathBuf,
    #[arg(long, default_value = "ffprobe", env = "FFRTMP_FFPROBE")]
    ffprobe: PathBuf,
    /// cgroup under which this node creates one cgroup per job.
    #[arg(long, default_value = "ffrtmp", env = "FFRTMP_CGROUP_PARENT")]
    cgroup_parent: String,
    /// Advertise only these encoders (comma-separated; default: every one that passes a test encode).
    #[arg(long, env = "FFRTMP_ENCODERS", value_delimiter = ',',
          value_parser = ["libx264", "libx265", "libvpx-vp9", "libsvtav1"])]
    encoders: Option<Vec<String>>,
    /// master: the cluster PKI directory (`ffrtmp-node pki init --dir DIR`).
    #[arg(long, env = "FFRTMP_PKI")]
    pki: Option<PathBuf>,
    /// master: QUIC address workers connect to.
    #[arg(long, default_value = "127.0.0.1:7400", env = "FFRTMP_LISTEN")]
    listen: SocketAddr,
    /// master: once QUIC listens, write its address to this file (useful with `--listen 127.0.0.1:0`).
    #[arg(long, env = "FFRTMP_LISTEN_ADDR_FILE")]
    listen_addr_file: Option<PathBuf>,
    /// worker: the master's QUIC address.
    #[arg(long, env = "FFRTMP_MASTER")]
    master: Option<SocketAddr>,
    /// worker: token from `ffrtmp-node pki join-token`; needed only until the worker has its certificate.
    #[arg(long, env = "FFRTMP_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// worker: on SIGTERM the worker drains: running jobs get this many seconds, then are handed back.
    #[arg(long, default_value_t = 600, env = "FFRTMP_DRAIN_DEADLINE_S")]
    drain_deadline_s: u64,
    /// QUIC keep-alive interval, in milliseconds (both ends).
    #[arg(long, default_value_t = 300, env = "FFRTMP_KEEP_ALIVE_MS")]
    keep_alive_ms: u64,
    /// QUIC idle timeout, in milliseconds (both ends; the smaller wins).
    #[arg(long, default_value_t = 1500, env = "FFRTMP_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: u64,
    /// Once the HTTP API listens, write its address to this file (useful with `--http 127.0.0.1:0`).
    #[arg(long, env = "FFRTMP_HTTP_ADDR_FILE")]
    http_addr_file: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    #[arg(long, default_value_t = 2.0, env = "FFRTMP_KILL_GRACE_S")]
    kill_grace_s: f64,
    /// master, standalone: the lease granted to workers, in milliseconds. A worker that cannot
    /// renew it stops its jobs; a lost worker's jobs move elsewhere only after it has run out.
    #[arg(long, default_value_t = ffrtmp_runtime::lease::DEFAULT_LEASE_MS, env = "FFRTMP_LEASE_MS",
          value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    lease_ms: u64,
    /// worker, standalone: where energy figures come from. `auto`: RAPL if readable, else an
    /// estimate from CPU utilisation (labelled `estimate`), plus NVML GPUs if a driver is present.
    #[arg(long, value_enum, default_value = "auto", env = "FFRTMP_POWER_SOURCE")]
    power_source: PowerSourceFlag,
    /// worker, standalone: the powercap sysfs root RAPL is read from.
    #[arg(
        long,
        default_value = "/sys/class/powercap",
        env = "FFRTMP_POWERCAP_ROOT"
    )]
    powercap_root: PathBuf,
    /// worker, standalone: power samples per second.
    #[arg(long, default_value_t = ffrtmp_actors::power::DEFAULT_SAMPLE_HZ, env = "FFRTMP_POWER_SAMPLE_HZ")]
    power_sample_hz: f64,
    /// worker, standalone: the estimate's power at 0 % CPU (default 10 W).
    #[arg(long, env = "FFRTMP_ESTIMATE_IDLE_WATTS")]
    estimate_idle_watts: Option<f64>,
    /// worker, standalone: the estimate's power at 100 % CPU (default 10 W + 10 W per core).
    #[arg(long, env = "FFRTMP_ESTIMATE_MAX_WATTS")]
    estimate_max_watts: Option<f64>,
    /// worker, standalone: append a line to FILE whenever a job's FFmpeg starts or stops
    /// (`<event> <CLOCK_MONOTONIC ns> <job id> <token> <worker pid>`), written by its guard
    /// process. A worker that is SIGKILLed takes its guards with it before they write.
    #[arg(long, env = "FFRTMP_RUN_LOG")]
    run_log: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PowerSourceFlag {
    Auto,
    Rapl,
    Nvml,
    Estimate,
}

/// The worker's power configuration from the flags (checked).
fn power_config(f: &NodeFlags) -> anyhow::Result<ffrtmp_actors::power::PowerConfig> {
    use ffrtmp_actors::power::{PowerChoice, PowerConfig};
    let mut p = PowerConfig::new(ffrtmp_actors::node::cores());
    p.choice = match f.power_source {
        PowerSourceFlag::Auto => PowerChoice::Auto,
        PowerSourceFlag::Rapl => PowerChoice::Rapl,
        PowerSourceFlag::Nvml => PowerChoice::Nvml,
        PowerSourceFlag::Estimate => PowerChoice::Estimate,
    };
    p.powercap_root = f.powercap_root.clone();
    p.sample_hz = f.power_sample_hz;
    if let Some(w) = f.estimate_idle_watts {
        p.estimate.idle_watts = w;
    }
    if let Some(w) = f.estimate_max_watts {
        p.estimate.max_watts = w;
    }
    p.validate().map_err(anyhow::Error::msg)?;
    Ok(p)
}

/// Logs go to stderr; `FFRTMP_LOG` (an env-filter) overrides the default level.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FFRTMP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

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
    if !(0.0..=600.0).contains(&f.kill_grace_s) {
        anyhow::bail!("--kill-grace-s must be between 0 and 600");
    }
    // The standalone's own worker holds the lease it grants; a cluster
    // worker learns the lease from its master and refuses jobs if it is too
    // short for its kill grace.
    if matches!(f.role, Role::Standalone) && f.kill_grace_s * 1000.0 * 2.0 > f.lease_ms as f64 {
        anyhow::bail!(
            "--kill-grace-s ({}) must be at most half of --lease-ms ({} ms): a worker stops its jobs one grace before its lease ends",
            f.kill_grace_s,
            f.lease_ms
        );
    }
    Ok(StandaloneConfig {
        data_dir: f.data_dir.clone(),
        http: f.http,
        media_roots,
        slots: f.slots.unwrap_or_else(standalone::default_slots).max(1),
        api_key: f.api_key.clone().filter(|k| !k.is_empty()),
        max_body_bytes: f.max_body_bytes,
        ffmpeg,
        ffprobe,
        cgroup_parent: f.cgroup_parent.clone(),
        nice: 10,
        kill_grace: Duration::from_secs_f64(f.kill_grace_s),
        retry: RetryPolicy::default(),
        lease: Duration::from_millis(f.lease_ms),
        metrics: ffrtmp_actors::metrics::install_prometheus(),
        encoder_allowlist: f.encoders.clone(),
        power: Some(power_config(f)?),
        run_log: f.run_log.clone(),
    })
}

/// Write an address to a file atomically (write, then rename).
fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}

fn timers(f: &NodeFlags) -> ffrtmp_transport_quic::endpoint::Timers {
    ffrtmp_transport_quic::endpoint::Timers {
        keep_alive: Duration::from_millis(f.keep_alive_ms),
        idle_timeout: Duration::from_millis(f.idle_timeout_ms),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = term.recv() => tracing::info!("SIGTERM; stopping"),
    }
    Ok(())
}

async fn run_node(flags: NodeFlags) -> anyhow::Result<()> {
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

async fn run_master(flags: NodeFlags) -> anyhow::Result<()> {
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

async fn run_worker(flags: NodeFlags) -> anyhow::Result<()> {
    use ffrtmp_actors::cluster;
    let master = flags
        .master
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(cluster::run_worker(net, config, stop_rx));
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

fn remove_cgroup_parent(cgroups: &ffrtmp_runtime::cgroup::CgroupManager) {
    if let Err(e) = cgroups.remove_parent() {
        tracing::warn!(error = %e, "node cgroup parent not removed");
    }
}

fn run_pki(cmd: PkiCommand) -> anyhow::Result<()> {
    use ffrtmp_transport_quic::pki;
    match cmd {
        PkiCommand::Init { dir, sans } => {
            pki::init(&dir, &sans).with_context(|| format!("pki init in {}", dir.display()))?;
            let ca = pki::CertificateAuthority::load(&dir)?;
            println!(
                "cluster CA and master certificate written to {}",
                dir.display()
            );
            println!("CA fingerprint (sha256): {}", ca.fingerprint());
            Ok(())
        }
        PkiCommand::JoinToken { dir, ttl_hours } => {
            if ttl_hours == 0 || ttl_hours > 24 * 365 {
                anyhow::bail!("--ttl-hours must be between 1 and 8760");
            }
            let token = pki::create_join_token(
                &dir,
                Duration::from_secs(ttl_hours * 3600),
                ffrtmp_actors::now_ms(),
            )
            .with_context(|| format!("creating a join token in {}", dir.display()))?;
            println!("{}", token.to_string_token());
            Ok(())
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo draws progress bars on the terminal: only warnings interrupt them.
    init_logging(if cli.command.is_some() {
        "warn"
    } else {
        "info"
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        match cli.command {
            Some(Command::Demo { duration }) => {
                let mut flags = cli.node;
                demo::run(duration, move |dir| {
                    flags.data_dir = dir.to_path_buf();
                    standalone_config(&flags)
                })
                .await
            }
            Some(Command::Pki { command }) => run_pki(command),
            None => run_node(cli.node).await,
        }
    })
}
