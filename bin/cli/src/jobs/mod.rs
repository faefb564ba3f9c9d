//! `ffrtmp jobs ...`: submit, list, get, cancel, retry, logs, watch.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use ffrtmp_runtime::model::{Codec, JobState, Priority};

mod existing;
mod submit;

use existing::{cancel, get, list, logs, retry};
use submit::submit;

use crate::client::{CliResult, Client, Exit};
use crate::output::Format;
use crate::watch::{self};

#[derive(Subcommand, Debug)]
pub(crate) enum JobsCmd {
    /// Submit a job (flags, or --file with the JSON body); prints its id.
    Submit(Box<SubmitArgs>),
    /// Jobs in submission order, a page at a time.
    List(ListArgs),
    /// One job: spec, state, progress, result or failure, energy.
    Get {
        /// The job's id.
        id: String,
    },
    /// Cancel a job: a queued one at once, a running one when its worker has stopped it.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Queue a failed, cancelled or timed-out job again: the same job (same id), a fresh retry budget.
    Retry {
        /// The job's id.
        id: String,
        /// Follow the job to its end (exit 1 if it does not succeed).
        #[arg(long)]
        wait: bool,
    },
    /// FFmpeg's last stderr lines of each attempt (what the master keeps: failed attempts only).
    Logs {
        /// The job's id.
        id: String,
    },
    /// Live progress of jobs until they end, then their outcome and energy.
    Watch(watch::WatchArgs),
}

#[derive(Args, Debug, Default)]
pub(crate) struct SubmitArgs {
    /// The job as JSON, the body of POST /v1/jobs (`-`: stdin). Flags given too override its fields.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A preset: {480p30,720p30,1080p30,1080p60,2160p30}-{h264,h265,vp9,av1}.
    #[arg(long)]
    pub scenario: Option<String>,
    /// The codec (required without --scenario).
    #[arg(long, value_parser = PossibleValuesParser::new(Codec::ALL.map(Codec::as_str)))]
    pub codec: Option<String>,
    /// Frame width (even, 16-7680).
    #[arg(long, conflicts_with = "size")]
    pub width: Option<u64>,
    /// Frame height (even, 16-4320).
    #[arg(long, conflicts_with = "size")]
    pub height: Option<u64>,
    /// Frame size as WIDTHxHEIGHT, e.g. 1280x720.
    #[arg(long, value_parser = parse_size, value_name = "WxH")]
    pub size: Option<Size>,
    /// Frames per second (1-240).
    #[arg(long)]
    pub fps: Option<u64>,
    /// Video bitrate: kbit/s (3000), or 2500k, 6M.
    #[arg(long)]
    pub bitrate: Option<String>,
    /// Encoder preset (x264/x265 ultrafast..veryslow, vp9 realtime/good/best, av1 0..13).
    #[arg(long)]
    pub preset: Option<String>,
    /// testsrc:SECONDS (a synthetic pattern), or a file path inside a media root.
    #[arg(long, value_name = "SRC")]
    pub input: Option<String>,
    /// null (encode and discard; the default), a file path inside a media root, or rtmp[s]://host/app/key.
    #[arg(long = "to", visible_alias = "dest", value_name = "DST")]
    pub to: Option<String>,
    /// Queue priority (default medium).
    #[arg(long, value_parser = PossibleValuesParser::new(Priority::ALL.map(Priority::as_str)))]
    pub priority: Option<String>,
    /// CPU quota, percent of one core.
    #[arg(long, value_name = "PERCENT")]
    pub max_cpu_percent: Option<u64>,
    /// Memory (and swap) limit.
    #[arg(long, value_name = "MB")]
    pub max_memory_mb: Option<u64>,
    /// Wall-clock limit; the job then ends `timed_out`.
    #[arg(long, value_name = "SECONDS")]
    pub timeout_s: Option<u64>,
    /// No progress this long: killed and retried.
    #[arg(long, value_name = "SECONDS")]
    pub stall_timeout_s: Option<u64>,
    /// Extra attempts after transient failures (0-10, default 3).
    #[arg(long, visible_alias = "retries", value_name = "N")]
    pub max_retries: Option<u64>,
    /// Follow the job to its end; exit 1 if it does not succeed.
    #[arg(long)]
    pub wait: bool,
}

/// `--size WxH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Size {
    pub width: u64,
    pub height: u64,
}

fn parse_size(s: &str) -> Result<Size, String> {
    let bad = || format!("{s:?} is not WIDTHxHEIGHT (e.g. 1280x720)");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok(Size {
        width: w.trim().parse().map_err(|_| bad())?,
        height: h.trim().parse().map_err(|_| bad())?,
    })
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// Only jobs in this state.
    #[arg(long, value_parser = PossibleValuesParser::new(JobState::ALL.map(JobState::as_str)))]
    pub state: Option<String>,
    /// Only jobs of this priority.
    #[arg(long, value_parser = PossibleValuesParser::new(Priority::ALL.map(Priority::as_str)))]
    pub priority: Option<String>,
    /// Only jobs on this node. The API has no such filter: the CLI filters each page, so a page
    /// may hold fewer than --limit jobs.
    #[arg(long)]
    pub node: Option<String>,
    /// Jobs per page (1-1000; the master's default is 100).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Start after this cursor (a previous page's `next_cursor`).
    #[arg(long)]
    pub cursor: Option<u64>,
    /// Follow `next_cursor` to the last page.
    #[arg(long)]
    pub all: bool,
    /// Only jobs carrying this label (`KEY=VALUE`); repeat it for several (all must match).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Only jobs of this experiment.
    #[arg(long, value_name = "ID")]
    pub experiment: Option<String>,
}

pub(crate) fn run(client: &Client, cmd: JobsCmd, format: Format) -> CliResult<Exit> {
    match cmd {
        JobsCmd::Submit(args) => submit(client, &args, format),
        JobsCmd::List(args) => list(client, &args, format),
        JobsCmd::Get { id } => get(client, &id, format),
        JobsCmd::Cancel { id } => cancel(client, &id, format),
        JobsCmd::Retry { id, wait } => retry(client, &id, wait, format),
        JobsCmd::Logs { id } => logs(client, &id, format),
        JobsCmd::Watch(args) => watch::run(client, args, format),
    }
}

#[cfg(test)]
mod tests;
