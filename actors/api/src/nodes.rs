//! Worker nodes as the API shows them.

use ffrtmp_runtime::model::{JobId, NodeId, NodePower};
use ffrtmp_runtime::wire::Capabilities;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A node as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeInfo {
    /// The node's id (from its certificate in a cluster).
    #[schema(value_type = String)]
    pub id: NodeId,
    /// Jobs it runs at once (0 for a node that is gone).
    pub slots: u32,
    /// The jobs the master believes it runs, sorted.
    #[schema(value_type = Vec<String>)]
    pub running: Vec<JobId>,
    /// What it said it can do when it connected.
    pub capabilities: Capabilities,
    /// It takes no new jobs and leaves once its jobs are done.
    pub draining: bool,
    /// False for a node that is gone but whose attempts are fenced: they
    /// may still run there until its lease ends, or be adopted when it
    /// reconnects.
    pub connected: bool,
    /// The node's power by domain and source, from its last report
    /// (absent until the first, and for a node without a sampler).
    pub power: Option<NodePower>,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// Sorted by id; nodes gone but holding fenced attempts included.
    pub nodes: Vec<NodeInfo>,
}
