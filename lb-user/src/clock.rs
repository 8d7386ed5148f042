//! The two clocks xlb reads: CLOCK_MONOTONIC, which `bpf_ktime_get_ns`
//! reads too (connection-table times, the control-plane lease), and the
//! wall clock in Unix milliseconds (what crosses between nodes).

use std::time::{SystemTime, UNIX_EPOCH};

/// Monotonic nanoseconds, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Unix time in milliseconds (0 before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
