//! Prometheus metrics (`[metrics]`): what `xlb status` shows, as
//! OpenMetrics text on `GET /metrics`.
//!
//! - [`Snapshot`]: everything one scrape shows, taken from the same
//!   sources as `xlb status` (the controller with the data plane's
//!   counters, VRRP, announcements, sync) plus the health checks' tallies
//!   and the connection tables' fill.
//! - [`render`]: a snapshot as OpenMetrics text, pure (written with
//!   `prometheus-client`'s encoder). Every metric, its type, labels and
//!   meaning: the metrics reference in `docs/operations.md`.
//! - [`server`]: the HTTP responder, GET `/metrics` only, with bounded
//!   requests, timeouts and connections.
//!
//! Reading the per-CPU counters is a map lookup from user space: it does
//! not run on, or wait for, the XDP program's path.

mod render;
pub mod server;

use std::time::Duration;

pub use render::{CONTENT_TYPE, render};

use crate::{api::Status, health::CheckTally, maps::TableUse};

/// What one scrape shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// As `xlb status --json` would show it at this moment.
    pub status: Status,
    /// Every checked backend's results so far.
    pub checks: Vec<CheckTally>,
    /// The connection tables' fill; `None` if they could not be counted.
    pub tables: Option<TablesCount>,
    pub build: BuildInfo,
}

/// The last count of the connection tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TablesCount {
    pub flows: TableUse,
    pub nat_reverse: TableUse,
    /// How long the walk over both tables took.
    pub took: Duration,
    /// How long ago it was made (counts are reused for [`COUNT_EVERY`]).
    pub age: Duration,
}

/// The tables are walked at most this often: a full default table is a
/// quarter of a million system calls, too many for every scrape.
pub const COUNT_EVERY: Duration = Duration::from_secs(10);

/// What this `xlb` binary is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    /// The git commit it was built from, "unknown" outside a git checkout.
    pub commit: String,
}

impl BuildInfo {
    pub fn of_this_binary() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: option_env!("XLB_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
