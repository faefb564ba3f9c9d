//! `ffrtmp nodes ...` and `ffrtmp report efficiency`.

use clap::Subcommand;
use ffrtmp_runtime::model::NodePower;
use ffrtmp_runtime::wire::Capabilities;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{CliError, CliResult, Client, Exit};
use crate::output::{self, Format, Table};

#[derive(Subcommand, Debug)]
pub enum NodesCmd {
    /// The worker nodes: slots, running jobs, encoders, power.
    List,
    /// Drain a node: it takes no new jobs, finishes its running ones, then leaves.
    Drain {
        /// The node's id (from `ffrtmp nodes list`).
        id: String,
        /// Seconds its running jobs get before they are stopped and requeued (master default 600).
        #[arg(long, value_name = "SECONDS")]
        deadline_s: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReportCmd {
    /// Configurations (scenario x encoder x node) ranked by median joules per output minute.
    Efficiency,
}

/// A node as `GET /v1/nodes` shows it (the fields the table uses).
#[derive(Deserialize)]
struct Node {
    id: String,
    slots: u32,
    running: Vec<String>,
    capabilities: Capabilities,
    draining: bool,
    connected: bool,
    power: Option<NodePower>,
}

/// A row of `GET /v1/reports/efficiency`.
#[derive(Deserialize)]
struct Row {
    rank: u32,
    scenario: String,
    encoder: String,
    node: String,
    energy_source: String,
    estimate: bool,
    samples: u64,
    median_joules_per_output_minute: f64,
    median_joules_per_frame: Option<f64>,
    median_mean_power_watts: f64,
    median_fps: f64,
}

#[derive(Deserialize)]
struct Report {
    rows: Vec<Row>,
    jobs_considered: u64,
    jobs_without_energy: u64,
}

fn parse<T: serde::de::DeserializeOwned>(raw: &Value, what: &str) -> CliResult<T> {
    serde_json::from_value(raw.clone()).map_err(|e| {
        CliError::new(
            Exit::Server,
            format!("unexpected answer for {what} ({e}); is the master the same version?"),
        )
    })
}

pub fn run(client: &Client, cmd: NodesCmd, format: Format) -> CliResult<Exit> {
    match cmd {
        NodesCmd::List => {
            let raw = client.get(&["v1", "nodes"], &[])?;
            if format == Format::Json {
                output::json(&raw);
                return Ok(Exit::Ok);
            }
            #[derive(Deserialize)]
            struct List {
                nodes: Vec<Node>,
            }
            let list: List = parse(&raw, "GET /v1/nodes")?;
            if list.nodes.is_empty() {
                eprintln!("no nodes");
                return Ok(Exit::Ok);
            }
            let mut t = Table::new(&[
                "ID", "STATUS", ">SLOTS", ">RUNNING", ">CORES", ">MEMORY", ">WATTS", "ENCODERS",
            ]);
            for n in &list.nodes {
                let status = match (n.connected, n.draining) {
                    (false, _) => "gone",
                    (true, true) => "draining",
                    (true, false) => "ready",
                };
                t.row(vec![
                    n.id.clone(),
                    status.to_string(),
                    n.slots.to_string(),
                    n.running.len().to_string(),
                    n.capabilities.cores.to_string(),
                    output::bytes(Some(n.capabilities.memory_bytes)),
                    output::num(n.power.as_ref().map(|p| p.watts), 1),
                    n.capabilities.encoders.join(","),
                ]);
            }
            t.print();
            Ok(Exit::Ok)
        }
        NodesCmd::Drain { id, deadline_s } => {
            let query: Vec<(&str, String)> = deadline_s
                .map(|d| vec![("deadline_s", d.to_string())])
                .unwrap_or_default();
            let (_, raw) = client.post(&["v1", "nodes", &id, "drain"], &query, None)?;
            match format {
                Format::Json => output::json(&raw),
                Format::Table => {
                    let node: Node = parse(&raw, "POST /v1/nodes/{id}/drain")?;
                    output::line(&format!(
                        "draining {}: no new jobs; its {} running job(s) get {} s, then are requeued",
                        node.id,
                        node.running.len(),
                        deadline_s
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "the master's default (600)".to_string()),
                    ));
                }
            }
            Ok(Exit::Ok)
        }
    }
}

pub fn report(client: &Client, cmd: ReportCmd, format: Format) -> CliResult<Exit> {
    match cmd {
        ReportCmd::Efficiency => {
            let raw = client.get(&["v1", "reports", "efficiency"], &[])?;
            if format == Format::Json {
                output::json(&raw);
                return Ok(Exit::Ok);
            }
            print_efficiency(&raw)?;
            Ok(Exit::Ok)
        }
    }
}

/// Print an efficiency report (`GET /v1/reports/efficiency`, or an
/// experiment's) as a table, its totals on stderr.
pub fn print_efficiency(raw: &Value) -> CliResult<()> {
    let r: Report = parse(raw, "an efficiency report")?;
    if r.rows.is_empty() {
        eprintln!("no configurations with energy figures yet");
    } else {
        let mut t = Table::new(&[
            ">RANK",
            "SCENARIO",
            "ENCODER",
            "NODE",
            "SOURCE",
            ">JOBS",
            ">J/OUT MIN",
            ">J/FRAME",
            ">WATTS",
            ">FPS",
        ]);
        for row in &r.rows {
            t.row(vec![
                row.rank.to_string(),
                row.scenario.clone(),
                row.encoder.clone(),
                row.node.clone(),
                crate::watch::energy_source(&row.energy_source, row.estimate),
                row.samples.to_string(),
                output::num(Some(row.median_joules_per_output_minute), 1),
                output::num(row.median_joules_per_frame, 3),
                output::num(Some(row.median_mean_power_watts), 1),
                output::num(Some(row.median_fps), 1),
            ]);
        }
        t.print();
    }
    eprintln!(
        "{} succeeded job(s) considered, {} without energy figures; medians per configuration",
        r.jobs_considered, r.jobs_without_energy
    );
    Ok(())
}
