//! `ffrtmp`: the client CLI. It mirrors the HTTP API (docs/API.md) and adds
//! live progress bars; docs/CLI.md has every command, the environment
//! variables and the exit codes.
//!
//! A library so that the `ffrtmp` binary (package `ffrtmp`, `bin/src/ffrtmp.rs`)
//! is one call to [`main`], and so that `ffrtmp-node demo` shares the demo.
//! It depends on the API's types (`ffrtmp-api`) and the pure job model, never
//! on the server (actors, store, QUIC, axum): `ffrtmp demo` runs the node as
//! a child process ([`node_process`]).

#![forbid(unsafe_code)]

mod client;
pub mod demo;
mod experiment;
pub mod ffmpeg_check;
mod jobs;
pub mod node_process;
mod nodes;
mod output;
mod report;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use client::{CliError, CliResult, Client, Exit};
use output::Format;

const EXIT_CODES: &str = "\
Exit codes:
  0  ok (with --wait or watch: every job succeeded)
  1  with --wait or watch: a job failed, was cancelled or timed out
  2  usage: bad arguments, or a --file that cannot be read
  3  the master cannot be reached (check --master / FFRTMP_MASTER)
  4  the master refused the API key, or needs one (401; --api-key / FFRTMP_API_KEY)
  5  no such job or node (404)
  6  refused (any other 4xx: a field that does not validate, a job already finished)
  7  the master failed (5xx) or answered something that is not the API

Environment: FFRTMP_MASTER (--master), FFRTMP_API_KEY (--api-key),
FFRTMP_CA_CERT (--ca-cert).
See docs/CLI.md.";

#[derive(Parser, Debug)]
#[command(
    name = "ffrtmp",
    version,
    about = "ffrtmp client: submit, list, watch and cancel transcode jobs on an ffrtmp master",
    after_help = EXIT_CODES,
    propagate_version = true
)]
struct Cli {
    /// The master's HTTP API: http://HOST:PORT or https://HOST:PORT (a path prefix is kept).
    #[arg(
        long,
        global = true,
        env = "FFRTMP_MASTER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    master: String,
    /// The master's API key, sent as `Authorization: Bearer KEY`.
    #[arg(long, global = true, env = "FFRTMP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// PEM file of CA certificates to trust for an https:// master (e.g. a private CA), on top
    /// of the built-in public roots.
    #[arg(long, global = true, env = "FFRTMP_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// `table` for people, `json` for scripts (the API's documents; `watch`: one object per event).
    #[arg(
        long,
        short = 'o',
        global = true,
        value_enum,
        default_value_t = Format::Table
    )]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Jobs: submit, list, get, cancel, retry, logs, watch.
    #[command(subcommand, after_help = EXIT_CODES)]
    Jobs(jobs::JobsCmd),
    /// Worker nodes: list, drain.
    #[command(subcommand)]
    Nodes(nodes::NodesCmd),
    /// Reports over finished jobs.
    #[command(subcommand)]
    Report(report::ReportCmd),
    /// Experiments: a matrix of jobs from a TOML or JSON file, its progress and report.
    #[command(subcommand, after_help = EXIT_CODES)]
    Experiment(experiment::ExperimentCmd),
    /// Print a shell completion script (e.g. `ffrtmp completions bash > /etc/bash_completion.d/ffrtmp`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Start a throw-away local node, run sample jobs through its HTTP API, show progress and
    /// results (needs FFmpeg; installs it with apt-get when run as root).
    Demo {
        /// Seconds of video each sample job encodes.
        #[arg(long, default_value_t = 6.0)]
        duration: f64,
        /// Keep the demo's temporary data dir (its store and the encoded sample file) instead of
        /// removing it at the end.
        #[arg(long)]
        keep: bool,
    },
}

/// The `ffrtmp` binary: parse the arguments, run the command, report an
/// error on stderr; the exit code says how it went (`EXIT_CODES`).
pub fn main() -> ExitCode {
    // Usage errors exit 2 here (clap).
    let cli = Cli::parse();
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("ffrtmp: error: {e}");
            e.exit.into()
        }
    }
}

fn run(cli: Cli) -> CliResult<Exit> {
    let format = cli.output;
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut cmd, "ffrtmp", &mut out);
            Ok(Exit::Ok)
        }
        Command::Demo { duration, keep } => demo(duration, keep),
        Command::Jobs(cmd) => jobs::run(
            &client(&cli.master, cli.api_key, &cli.ca_cert)?,
            cmd,
            format,
        ),
        Command::Nodes(cmd) => nodes::run(
            &client(&cli.master, cli.api_key, &cli.ca_cert)?,
            cmd,
            format,
        ),
        Command::Experiment(cmd) => experiment::run(
            &client(&cli.master, cli.api_key, &cli.ca_cert)?,
            cmd,
            format,
        ),
        Command::Report(cmd) => report::run(
            &client(&cli.master, cli.api_key, &cli.ca_cert)?,
            cmd,
            format,
        ),
    }
}

/// Wall-clock milliseconds since the Unix epoch (job times are on the
/// master's clock, in the same unit).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn client(master: &str, key: Option<String>, ca_cert: &Option<PathBuf>) -> CliResult<Client> {
    Client::new(master, key, ca_cert.as_deref())
}

/// `ffrtmp demo`: the same demo as `ffrtmp-node demo`, its node an
/// `ffrtmp-node --role standalone` child process with the daemon's defaults.
fn demo(duration: f64, keep: bool) -> CliResult<Exit> {
    let failed = |e: anyhow::Error| CliError::new(Exit::JobFailed, format!("demo: {e:#}"));
    let exe = std::env::current_exe()
        .map_err(|e| failed(anyhow::anyhow!("finding the ffrtmp executable: {e}")))?;
    let node_bin = node_process::find_node_binary(&exe).map_err(failed)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Exit::JobFailed, format!("starting the tokio runtime: {e}")))?;
    rt.block_on(async {
        let run = demo::run(duration, keep, |setup| async move {
            node_process::NodeProcess::start(&node_bin, &setup).await
        });
        // Ctrl-C drops the demo: its node process is stopped and waited
        // for, its data dir removed.
        tokio::select! {
            r = run => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    })
    .map_err(failed)?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for code in [
            "3  the master cannot be reached",
            "4  the master refused",
            "6  refused",
        ] {
            assert!(help.contains(code), "{help}");
        }
    }
}
