//! `ffrtmp nodes ...`.

use clap::Subcommand;
use ffrtmp_api::{NodeInfo, NodeList};
use serde_json::Value;

use crate::client::{CliError, CliResult, Client, Exit};
use crate::output::{self, Format, Table};

#[derive(Subcommand, Debug)]
pub(crate) enum NodesCmd {
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

fn parse<T: serde::de::DeserializeOwned>(raw: &Value, what: &str) -> CliResult<T> {
    serde_json::from_value(raw.clone()).map_err(|e| {
        CliError::new(
            Exit::Server,
            format!("unexpected answer for {what} ({e}); is the master the same version?"),
        )
    })
}

pub(crate) fn run(client: &Client, cmd: NodesCmd, format: Format) -> CliResult<Exit> {
    match cmd {
        NodesCmd::List => {
            let raw = client.get(&["v1", "nodes"], &[])?;
            if format == Format::Json {
                output::json(&raw);
                return Ok(Exit::Ok);
            }
            let list: NodeList = parse(&raw, "GET /v1/nodes")?;
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
                    let node: NodeInfo = parse(&raw, "POST /v1/nodes/{id}/drain")?;
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
