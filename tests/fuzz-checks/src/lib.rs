//! The invariants of every xlb parser that takes outside input, one
//! function per fuzz target: `tests/fuzz/fuzz_targets/<name>.rs` calls
//! `xlb_fuzz_checks::<name>` on what libFuzzer generates, and
//! `tests/fuzz_corpus.rs` replays the committed corpora
//! (`tests/fuzz/corpus/<name>/`) through the same function. Each panics
//! when an invariant does not hold: beyond "no panic", an accepted input
//! is within its documented bounds and round-trips where there is an
//! encoder, a refused one changes no state, and the same input gets the
//! same answer.

mod agent;
mod config;
mod ctl;
mod http;
mod icmp;
mod input;
pub mod seeds;
mod sync;
mod vrrp;

pub use agent::agent_reply;
pub use config::config;
pub use ctl::ctl_request;
pub use http::http_response;
pub use icmp::icmp_echo;
pub use sync::sync_message;
pub use vrrp::vrrp_advert;

/// The checks of one target: panics when an invariant does not hold.
pub type Check = fn(&[u8]);

/// Every target, by name.
pub const TARGETS: [(&str, Check); 7] = [
    ("agent_reply", agent_reply),
    ("config", config),
    ("ctl_request", ctl_request),
    ("http_response", http_response),
    ("icmp_echo", icmp_echo),
    ("sync_message", sync_message),
    ("vrrp_advert", vrrp_advert),
];
