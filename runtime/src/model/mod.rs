//! The job data model shared by every layer: what a user asked for (after
//! validation), what the master stores, and what a worker reports.
//!
//! Field names here are part of the HTTP API and of the on-disk format: rename
//! nothing without a migration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A job's identifier: a UUIDv7 in its hyphenated text form (time-ordered).
pub type JobId = String;

/// A node's identifier (stable across restarts of that node).
pub type NodeId = String;

/// Milliseconds since the Unix epoch. Passed into pure code as data; pure code
/// never reads a clock.
pub type UnixMs = u64;

mod energy;
mod job;
mod request;

pub use energy::*;
pub use job::*;
pub use request::*;
