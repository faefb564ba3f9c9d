//! Energy per job: reading a node's power sources and charging jobs for it.
//!
//! The parts:
//! - **Sources** of node energy. [`rapl`] reads Intel/AMD RAPL counters
//!   through powercap sysfs (one figure per CPU package and per DRAM domain);
//!   [`nvml`] reads NVIDIA GPUs through NVML (a total-energy counter, or power
//!   integrated over time on older boards); [`estimate`] is a linear model of
//!   power from CPU utilisation for hosts with neither, and its figures are
//!   always labelled as estimates.
//! - **Usage** that energy is divided by. [`procstat`] gives the whole node's
//!   busy CPU time (`/proc/stat`); [`cpu`] gives one job's CPU time (its
//!   cgroup, or its processes when it has none). For GPUs, NVML's per-process
//!   utilisation plays that role.
//! - **Attribution**. [`attribution::attribute`] is the one pure function that
//!   splits an interval's energy among the jobs that ran in it, in proportion
//!   to their share of the node's usage; what no job used stays
//!   *unattributed* (idle, the OS, other processes), so the parts always add
//!   up to what was measured.
//!
//! **Why no zone is counted twice.** Powercap shows the same energy several
//! times: the `core` and `uncore` subzones are parts of their package, the
//! subzones appear again at the top level (`intel-rapl:0:0`), `intel-rapl-mmio`
//! duplicates a package, and `psys` covers the whole SoC (packages included).
//! [`rapl::Rapl::open`] keeps exactly the package zones and the DRAM zones
//! (which lie outside the packages), each once, so summing its domains gives
//! the node's CPU-side energy without overlap. GPU energy is a separate
//! device's and adds to it.

pub mod attribution;
pub mod cpu;
pub mod estimate;
pub mod nvml;
pub mod procstat;
pub mod rapl;
