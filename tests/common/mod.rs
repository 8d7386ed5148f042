//! Shared helpers for the integration tests.

/// Whether a root-only test can run. Not root: under `CI=true` that is a
/// failure; otherwise the test says loudly that it was skipped.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and CI=true requires it to run");
    }
    eprintln!("SKIPPED (needs root): {test}");
    false
}
