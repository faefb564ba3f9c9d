//! Worker nodes as the API shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A node as the API shows it: the scheduling core's own view
/// (`ffrtmp_runtime::scheduler`), which builds it.
pub use ffrtmp_runtime::scheduler::NodeInfo;

/// `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    /// Sorted by id; nodes gone but holding fenced attempts included.
    pub nodes: Vec<NodeInfo>,
}
