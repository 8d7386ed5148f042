//! The clocks xlb reads: CLOCK_MONOTONIC, which `bpf_ktime_get_ns`
//! reads too (connection-table times, the control-plane lease), and the
//! wall clock (Unix milliseconds cross between nodes; a trace stamps its
//! packets in Unix nanoseconds).

use std::time::{SystemTime, UNIX_EPOCH};

fn clock_ns(id: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(id).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Monotonic nanoseconds, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// Wall-clock nanoseconds since the Unix epoch (a trace's timestamps).
pub fn realtime_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_REALTIME)
}

/// Unix time in milliseconds (0 before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
