//! `ffrtmp-node`: the daemon. Thin: parse flags, set up logging and metrics,
//! start the actors, wait for a signal.
#![forbid(unsafe_code)]

mod checks;
mod config;
mod run;
mod tools;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use ffrtmp_shared::demo;

use checks::check_flags;
use run::{run_node, standalone_config};
use tools::{run_pki, run_store};

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

/// Logs go to stderr; `FFRTMP_LOG` (an env-filter) overrides the default level.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FFRTMP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
