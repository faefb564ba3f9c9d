//! Energy per job, the pure parts: how an interval's measured energy is
//! split among the jobs that ran in it ([`attribution`]), and the labelled
//! linear model of power from CPU utilisation for hosts with no meter
//! ([`estimate`]). The sources themselves (RAPL, NVML, `/proc/stat`, a
//! job's CPU time) read the machine and live in `ffrtmp_os::energy`.
//!
//! - **Attribution**. [`attribution::attribute`] is the one pure function that
//!   splits an interval's energy among the jobs that ran in it, in proportion
//!   to their share of the node's usage; what no job used stays
//!   *unattributed* (idle, the OS, other processes), so the parts always add
//!   up to what was measured.

pub mod attribution;
pub mod estimate;
