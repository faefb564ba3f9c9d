//! `ffrtmp-node`: the daemon. Thin: parse flags, set up logging and metrics,
//! start the actors, wait for a signal.
#![forbid(unsafe_code)]
#![warn(unreachable_pub, unsafe_op_in_unsafe_fn)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod config;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
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
    /// Read the node's settings from this TOML file (docs/CONFIG.md); FFRTMP_* variables and
    /// flags override it. Not read by subcommands.
    #[arg(long, value_name = "FILE", env = "FFRTMP_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML (secrets left out), check it, and exit.
    #[arg(long)]
    print_config: bool,
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
        /// Keep the demo's temporary data dir (its store and the encoded sample file) instead of
        /// removing it at the end.
        #[arg(long)]
        keep: bool,
    },
    /// The cluster PKI: the CA, the master's certificate, join tokens.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// The master's job store: check it for damage, salvage a damaged one (node stopped).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Verify the job store in DATA_DIR/master.sled; exits 1 if it is damaged.
    Check {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Copy every readable job of a damaged store into a fresh one, keep the damaged one aside,
    /// and list what was lost.
    Salvage {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Write the fresh store into this data directory instead (NEWDIR/master.sled) and
        /// leave DATA_DIR as it is.
        #[arg(long, value_name = "NEWDIR")]
        to: Option<PathBuf>,
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
    /// What this node is.
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
    #[arg(long, env = "FFRTMP_SLOTS", value_parser = clap::value_parser!(u32).range(1..))]
    slots: Option<u32>,
    /// Accept a media root that is `/`, a system directory (`/etc`, `/usr`, `/var/lib`, ...) or
    /// the node's own data directory: everything in a media root can be read and overwritten
    /// through the API.
    #[arg(long, env = "FFRTMP_ALLOW_SYSTEM_MEDIA_ROOT")]
    allow_system_media_root: bool,
    /// Require `Authorization: Bearer KEY` on every route but /healthz and /readyz.
    #[arg(long, env = "FFRTMP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = ffrtmp_actors::admin::DEFAULT_MAX_BODY_BYTES, env = "FFRTMP_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    /// The most jobs one experiment (`POST /v1/experiments`) may expand to: the product of its
    /// matrix's list lengths times its repeat count.
    #[arg(long, default_value_t = ffrtmp_runtime::experiment::DEFAULT_MAX_JOBS,
          env = "FFRTMP_MAX_EXPERIMENT_JOBS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_experiment_jobs: u64,
    /// Open HTTP API connections at most. At the cap, a new connection replaces the oldest one
    /// that has sent nothing yet, or is refused (503) if every one has.
    #[arg(long, default_value_t = ffrtmp_actors::admin::DEFAULT_MAX_HTTP_CONNECTIONS as u64,
          env = "FFRTMP_MAX_HTTP_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_http_connections: u64,
    /// Seconds an HTTP client has to send a request's headers (an idle connection included)
    /// before it is disconnected.
    #[arg(long, default_value_t = ffrtmp_actors::admin::DEFAULT_HTTP_READ_TIMEOUT.as_secs(),
          env = "FFRTMP_HTTP_HEADER_TIMEOUT_S", value_parser = clap::value_parser!(u64).range(1..=3600))]
    http_header_timeout_s: u64,
    /// Seconds an HTTP client has to send a request's body once its headers are in (then 408).
    #[arg(long, default_value_t = ffrtmp_actors::admin::DEFAULT_HTTP_READ_TIMEOUT.as_secs(),
          env = "FFRTMP_HTTP_BODY_TIMEOUT_S", value_parser = clap::value_parser!(u64).range(1..=3600))]
    http_body_timeout_s: u64,
    /// The ffmpeg program: a name looked up in PATH, or a path.
    #[arg(long, default_value = "ffmpeg", env = "FFRTMP_FFMPEG")]
    ffmpeg: PathBuf,
    /// The ffprobe program: a name looked up in PATH, or a path.
    #[arg(long, default_value = "ffprobe", env = "FFRTMP_FFPROBE")]
    ffprobe: PathBuf,
    /// The `ffrtmp-vmaf` program (VMAF quality metrics). Default: beside this
    /// executable, else on PATH; a node without one that passes its
    /// self-test does not compute VMAF.
    #[arg(long, env = "FFRTMP_VMAF_BIN")]
    vmaf_bin: Option<PathBuf>,
    /// cgroup under which this node creates one cgroup per job.
    #[arg(long, default_value = "ffrtmp", env = "FFRTMP_CGROUP_PARENT")]
    cgroup_parent: String,
    /// Advertise only these encoders (comma-separated; default: every one that passes a test encode).
    #[arg(long, env = "FFRTMP_ENCODERS", value_delimiter = ',',
          value_parser = clap::builder::PossibleValuesParser::new(
              ffrtmp_runtime::encoders::ENCODERS.map(|e| e.name)))]
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
    /// worker: the master's QUIC address, HOST:PORT (a DNS name, an IPv4 address or [IPv6]).
    #[arg(long, env = "FFRTMP_MASTER")]
    master: Option<ffrtmp_actors::cluster::MasterAddr>,
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
    /// worker: serve Prometheus `/metrics` (and `/healthz`) on this address, without a key
    /// (bind it to an address only your Prometheus reaches). Default: no listener (the master
    /// exports the workers' power and energy).
    #[arg(long, env = "FFRTMP_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    #[arg(long, default_value_t = 2.0, env = "FFRTMP_KILL_GRACE_S")]
    kill_grace_s: f64,
    /// master, standalone: the lease granted to workers, in milliseconds. A worker that cannot
    /// renew it stops its jobs; a lost worker's jobs move elsewhere only after it has run out.
    #[arg(long, default_value_t = ffrtmp_runtime::lease::DEFAULT_LEASE_MS, env = "FFRTMP_LEASE_MS",
          value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    lease_ms: u64,
    /// master, standalone: group commit. The scheduler applies state changes without waiting
    /// for the disk and holds back what they allow (assignments, acknowledgements, replies)
    /// until a flush covers them; at this many unflushed changes it waits for the flush
    /// itself. 1: every change waits for its own flush.
    #[arg(long, default_value_t = ffrtmp_actors::scheduler::DEFAULT_MAX_COMMIT_BATCH as u64,
          env = "FFRTMP_MAX_COMMIT_BATCH", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_commit_batch: u64,
    /// master, standalone: group commit. Store flushes start at most once per this many
    /// microseconds, so under load each covers more changes (fewer fsyncs, less CPU); a
    /// flush after a quiet spell starts at once. 0: flush back to back.
    #[arg(long, default_value_t = ffrtmp_actors::scheduler::DEFAULT_COMMIT_INTERVAL.as_micros() as u64,
          env = "FFRTMP_COMMIT_INTERVAL_US", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    commit_interval_us: u64,
    /// master, standalone: job writes are refused with `503 storage_full` while the data
    /// directory's filesystem has less than this many MiB free, so sled never meets a full
    /// disk in the normal course (it refuses every write after one failed log write, until
    /// the store reopens it). 0: no reserve; writes then go on to the last byte, and a
    /// failed flush is mended by that reopen (docs/OPERATIONS.md, "A full disk").
    #[arg(long, default_value_t = ffrtmp_os::sidefile::DISK_RESERVE >> 20,
          env = "FFRTMP_STORE_RESERVE_MB", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    store_reserve_mb: u64,
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

fn check_kill_grace(f: &NodeFlags) -> anyhow::Result<()> {
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
    Ok(())
}

/// Operator mistakes refused at start, each naming its flag, variable and
/// key: an empty API key (an unset secret in a template would leave the API
/// open), and media roots that would hand the host or the node's own files
/// to API clients (`check_media_roots`).
fn check_operator_mistakes(f: &NodeFlags) -> anyhow::Result<()> {
    if f.api_key.as_deref().is_some_and(str::is_empty) {
        anyhow::bail!(
            "--api-key is empty (FFRTMP_API_KEY, `api_key` in the config file): an empty key \
             would leave the HTTP API open to anyone. Set a key, or leave it out entirely to \
             run without one"
        );
    }
    check_media_roots(f)
}

/// Directories no media root may be or contain; no media root may lie in
/// one either, but for `/var/lib` (whose subdirectories hold applications'
/// data, a node's data dir and its `media` folder among them).
const SYSTEM_DIRS: [&str; 7] = ["/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/var/lib"];

/// Refuses a media root that is `/`, is, contains or (but for `/var/lib`)
/// lies in a system directory, or is, contains or lies in the data dir (but
/// for `<data-dir>/media`, the default root), unless
/// `--allow-system-media-root`. Paths are compared with symlinks resolved.
fn check_media_roots(f: &NodeFlags) -> anyhow::Result<()> {
    use std::path::Path;
    if f.allow_system_media_root {
        return Ok(());
    }
    let data = resolved(&f.data_dir);
    let data_media = data.join("media");
    for root in &f.media_roots {
        let r = resolved(root);
        let system = SYSTEM_DIRS.iter().map(Path::new);
        let why = if r == Path::new("/") {
            "it is `/`, the whole file system".to_string()
        } else if let Some(sys) = system.clone().find(|sys| sys.starts_with(&r)) {
            format!("it is or contains the system directory {}", sys.display())
        } else if let Some(sys) = system
            .filter(|sys| *sys != Path::new("/var/lib"))
            .find(|sys| r.starts_with(sys))
        {
            format!("it lies in the system directory {}", sys.display())
        } else if data.starts_with(&r) {
            format!(
                "it is or contains the node's data directory {} (--data-dir: the job store, \
                 the node's keys and secret)",
                data.display()
            )
        } else if r.starts_with(&data) && !r.starts_with(&data_media) {
            format!(
                "it lies in the node's data directory {} (only {} is meant for media)",
                data.display(),
                data_media.display()
            )
        } else {
            continue;
        };
        anyhow::bail!(
            "--media-root {} (FFRTMP_MEDIA_ROOT, `media_root` in the config file) is refused: \
             {why}. Every file in a media root can be read and overwritten through the API; \
             name a directory of media files, or pass --allow-system-media-root if you mean it",
            root.display()
        );
    }
    Ok(())
}

/// `p` absolute, with symlinks resolved as far as it exists.
fn resolved(p: &std::path::Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut existing = abs.as_path();
    let mut missing = Vec::new();
    loop {
        if let Ok(mut real) = existing.canonicalize() {
            real.extend(missing.iter().rev());
            return real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

/// Raise the soft limit on open files to the hard one and log both: the
/// HTTP API's connections, the store, QUIC and every job's pipes share them
/// (docs/OPERATIONS.md, "Open files").
fn raise_open_file_limit(max_http_connections: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
            return;
        }
    };
    let now = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(soft_was = soft, soft = hard, hard, "open-file limit raised");
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        }
    } else {
        tracing::info!(soft, hard, "open-file limit");
        soft
    };
    if max_http_connections.saturating_mul(2) > now {
        tracing::warn!(
            max_http_connections,
            open_file_limit = now,
            "--max-http-connections is not well under the open-file limit: a flood of \
             connections could leave jobs without descriptors"
        );
    }
}

/// The checks of a node's flags that need nothing outside this process (no
/// FFmpeg; the disk only to resolve paths): before a node starts, and for
/// `--print-config`.
fn check_flags(f: &NodeFlags) -> anyhow::Result<()> {
    check_operator_mistakes(f)?;
    match f.role {
        Role::Master if f.pki.is_none() => anyhow::bail!(
            "--role master needs --pki DIR (create it with: ffrtmp-node pki init --dir DIR)"
        ),
        Role::Worker if f.master.is_none() => {
            anyhow::bail!("--role worker needs --master HOST:PORT")
        }
        _ => {}
    }
    check_kill_grace(f)?;
    power_config(f)?;
    Ok(())
}

/// The command line, parsed, with the config file layered under it.
#[derive(Debug)]
struct Parsed {
    cli: Cli,
    /// clap's matches for `cli`: where each value came from.
    matches: ArgMatches,
    /// The config file read, if any.
    config: Option<PathBuf>,
    /// The ids of the flags the config file set.
    from_file: BTreeSet<String>,
}

/// A command holding the node's flags only: one config key each.
fn node_command() -> clap::Command {
    NodeFlags::augment_args(clap::Command::new("ffrtmp-node"))
}

/// Parse `argv` (program name first). With a config file (`--config`,
/// `FFRTMP_CONFIG`) and no subcommand, the file's keys fill every flag that
/// neither the command line nor an `FFRTMP_*` variable set (config.rs).
/// clap's own errors (and `--help`) come back as `clap::Error`.
fn parse_args(argv: Vec<OsString>) -> anyhow::Result<Parsed> {
    let to_cli =
        |m: &ArgMatches| Cli::from_arg_matches(m).map_err(|e| e.format(&mut Cli::command()));
    let matches = Cli::command().try_get_matches_from(&argv)?;
    let cli = to_cli(&matches)?;
    let path = match (&cli.command, &cli.config) {
        (None, Some(path)) if !path.as_os_str().is_empty() => path.clone(),
        _ => {
            return Ok(Parsed {
                cli,
                matches,
                config: None,
                from_file: BTreeSet::new(),
            })
        }
    };
    let settings = config::load(&path, &config::keys(&node_command()))?;
    let (args, from_file) = config::merge(&argv, &settings, &matches);
    let matches = Cli::command().try_get_matches_from(&args)?;
    let cli = to_cli(&matches)?;
    Ok(Parsed {
        cli,
        matches,
        config: Some(path),
        from_file,
    })
}

/// `--print-config`: the effective configuration on stdout, then its checks.
fn print_config(p: &Parsed) -> anyhow::Result<()> {
    if p.cli.command.is_some() {
        anyhow::bail!("--print-config prints the node's configuration: leave out the subcommand");
    }
    print!(
        "{}",
        config::render(
            &config::keys(&node_command()),
            &p.matches,
            p.config.as_deref(),
            &p.from_file,
        )
    );
    check_flags(&p.cli.node)
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
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A worker's own Prometheus listener (`--metrics-listen`): `/metrics` with
/// what only the worker sees (FFmpeg spawn failures, the sampler's cycle
/// histogram), and `/healthz`. Binds before returning, so a taken address
/// fails the start.
async fn serve_worker_metrics(
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

fn remove_cgroup_parent(cgroups: &ffrtmp_os::cgroup::CgroupManager) {
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

/// `ffrtmp-node store check|salvage` (docs/CLI.md, docs/OPERATIONS.md).
/// Returns the exit status: 0, or 1 when `check` finds damage.
fn run_store(cmd: StoreCommand) -> anyhow::Result<i32> {
    use ffrtmp_os::store;
    match cmd {
        StoreCommand::Check { data_dir } => {
            let path = data_dir.join("master.sled");
            let found = match store::check(&path) {
                Ok(found) => found,
                Err(e @ store::StoreError::Damaged { .. }) => {
                    println!("DAMAGED {}: {e}", path.display());
                    return Ok(1);
                }
                Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
            };
            println!("store: {}", path.display());
            println!("readable jobs: {}", found.readable);
            println!("writes counted in the store: {}", found.writes);
            match &found.side {
                Some(s) => println!(
                    "side file: {} writes durable{}",
                    s.writes,
                    s.records
                        .map(|n| format!(", closed cleanly with {n} jobs"))
                        .unwrap_or_default()
                ),
                None => println!("side file: none"),
            }
            if !found.undecodable.is_empty() {
                println!("undecodable records: {}", found.undecodable.join(" "));
            }
            if !found.lost_ids.is_empty() {
                println!(
                    "ids in the indexes without a record: {}",
                    found.lost_ids.join(" ")
                );
            }
            if found.problems.is_empty() {
                println!("OK");
                return Ok(0);
            }
            for p in &found.problems {
                println!("DAMAGED: {p}");
            }
            println!(
                "recover the readable jobs with: ffrtmp-node store salvage --data-dir {}",
                data_dir.display()
            );
            Ok(1)
        }
        StoreCommand::Salvage { data_dir, to } => {
            let (report, aside) = store::salvage_data_dir(&data_dir, to.as_deref())
                .with_context(|| format!("salvaging the job store in {}", data_dir.display()))?;
            let new_dir = to.as_deref().unwrap_or(&data_dir);
            println!(
                "recovered {} jobs into {}",
                report.recovered,
                new_dir.join("master.sled").display()
            );
            println!("the damaged store is kept at {}", aside.display());
            if let Some(why) = &report.stopped {
                println!("reading stopped early: {why}");
            }
            if let Some((first, last)) = report.lost_writes {
                println!(
                    "lost: job writes number {first} to {last} (submissions or state changes \
                     after the damage; jobs they created are not in the store)"
                );
            }
            if !report.undecodable.is_empty() {
                println!("lost (record unreadable): {}", report.undecodable.join(" "));
            }
            if !report.lost_ids.is_empty() {
                println!(
                    "lost (named by an index, no record): {}",
                    report.lost_ids.join(" ")
                );
            }
            if report.lost_writes.is_none()
                && report.undecodable.is_empty()
                && report.lost_ids.is_empty()
                && report.stopped.is_none()
            {
                println!("nothing known to be lost");
            }
            Ok(0)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let parsed = match parse_args(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(e) => e.exit(),
            Err(e) => return Err(e),
        },
    };
    if parsed.cli.print_config {
        return print_config(&parsed);
    }
    let cli = parsed.cli;
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
    if let Some(path) = &parsed.config {
        tracing::info!(config = %path.display(), keys = parsed.from_file.len(), "config file read");
    }
    rt.block_on(async move {
        match cli.command {
            Some(Command::Demo { duration, keep }) => {
                let mut flags = cli.node;
                demo::run(duration, keep, move |dir| {
                    flags.data_dir = dir.to_path_buf();
                    standalone_config(&flags)
                })
                .await
            }
            Some(Command::Pki { command }) => run_pki(command),
            // 0 sound, 1 damaged (check), 2 could not look at all.
            Some(Command::Store { command }) => match run_store(command) {
                Ok(0) => Ok(()),
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    std::process::exit(2)
                }
            },
            None => run_node(cli.node).await,
        }
    })
}

#[cfg(test)]
mod tests;
