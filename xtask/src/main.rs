//! Developer tasks cargo cannot express: installing the toolchain pieces and
//! Debian packages the build and the tests need, then running them.
//!
//! `cargo xtask run`   set up, build, and run the live demo (`xlb-demo`);
//!                     with arguments, run `xlb` with them
//! `cargo xtask test`  set up and run every test binary, even when one fails
//! `cargo xtask setup` only the set-up (idempotent, quiet when all is present)
//! `cargo xtask fuzz [--minutes N] [--target NAME]`  the fuzz targets, minutes each
//! `cargo xtask bench [--quick]`  benchmarks, written to docs/benchmarks.md

use std::{
    path::PathBuf,
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod fuzz;
mod test_run;

/// The bpf-linker that loads LLVM from the Rust toolchain itself; newer
/// releases need a system LLVM these machines do not have.
const BPF_LINKER_VERSION: &str = "0.10.0";

/// Debian packages the tests and the demo use, with a binary that proves
/// each is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "/usr/sbin/ip"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("nginx-light", "/usr/sbin/nginx"),
    ("tcpdump", "/usr/bin/tcpdump"),
    // The VRRP interop test runs keepalived as the peer of an xlb node.
    ("keepalived", "/usr/sbin/keepalived"),
    // The benchmark's comparison points and its plot labels.
    ("wrk", "/usr/bin/wrk"),
    ("haproxy", "/usr/sbin/haproxy"),
    ("nftables", "/usr/sbin/nft"),
    // The ECMP tests run a BGP router and a daemon per xlb node, with
    // BIRD 2 and with FRR.
    ("bird2", "/usr/sbin/bird"),
    ("frr", "/usr/lib/frr/bgpd"),
    // The metrics test scrapes xlb with a real Prometheus and checks the
    // documented alert rules with promtool (same package).
    ("prometheus", "/usr/bin/prometheus"),
    // Must match xlb-bench's plot font (xtask/bench/src/bench/plot.rs).
    (
        "fonts-dejavu-core",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ),
];

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (nightly rust-src, bpf-linker, cargo-fuzz,
    /// Debian packages).
    Setup,
    /// Set up, then build and run every test binary (unit, golden-packet,
    /// end-to-end, the fuzz corpora), each even when another failed, then
    /// (with the fuzz corpora's) each fuzz target for a few seconds; ends
    /// with one line saying what failed.
    Test {
        /// Before `--`: what to build, as for `cargo test` (`-p lb-user`,
        /// `--test golden`). After `--`: arguments for every test binary
        /// (a name filter, `--nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the live demo in network namespaces
    /// (`xlb-demo`); with arguments, run `xlb` with them instead.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run each fuzz target (tests/fuzz) for minutes on its
    /// corpus, keep what it finds in the corpus and minimize it; fails
    /// listing the targets with findings.
    Fuzz {
        /// Minutes per target.
        #[arg(long, default_value_t = 3.0)]
        minutes: f64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Set up, then run the benchmarks (needs root) and write
    /// docs/benchmarks.md with its plots. Fails only if a case cannot run.
    Bench {
        /// Fewer trials and shorter runs: under two minutes.
        #[arg(long)]
        quick: bool,
        /// Run only these sections (comma-separated) and print the results
        /// without writing docs/benchmarks.md.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<ExitCode> {
    match Cli::parse().task {
        Task::Setup => setup().map(|()| ExitCode::SUCCESS),
        Task::Test { args } => {
            setup()?;
            warn_if_not_root("the golden-packet and end-to-end tests");
            Ok(if test_run::run(&args)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Task::Fuzz { minutes, target } => {
            setup()?;
            Ok(if fuzz::main(minutes, target.as_deref())? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Task::Run { args } => {
            setup()?;
            let demo = args.is_empty();
            warn_if_not_root(if demo { "the demo" } else { "xlb" });
            let mut build = cargo();
            build.args(["build", "--release", "--bin", "xlb"]);
            if demo {
                build.args(["--bin", "xlb-demo"]);
            }
            if status(build)? != ExitCode::SUCCESS {
                bail!("building xlb failed");
            }
            let release = workspace_root().join("target/release");
            let cmd = if demo {
                let mut cmd = Command::new(release.join("xlb-demo"));
                cmd.arg("--xlb").arg(release.join("xlb"));
                cmd
            } else {
                let mut cmd = Command::new(release.join("xlb"));
                cmd.args(&args);
                cmd
            };
            status(cmd)
        }
        Task::Bench { quick, only } => {
            setup()?;
            if !is_root() {
                bail!(
                    "the benchmarks need root (BPF, XDP, network namespaces): sudo -E cargo xtask bench"
                );
            }
            let mut build = cargo();
            build.args(["build", "--release", "--quiet", "--bin", "xlb"]);
            if status(build)? != ExitCode::SUCCESS {
                bail!("building xlb failed");
            }
            // Timings (Maglev builds above all) only mean something in a
            // release build.
            let root = workspace_root();
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "xlb-bench",
                "--",
            ])
            .arg("--xlb-exe")
            .arg(root.join("target/release/xlb"))
            .arg("--docs")
            .arg(root.join("docs"));
            if quick {
                cmd.arg("--quick");
            }
            if !only.is_empty() {
                cmd.arg(format!("--only={}", only.join(",")));
            }
            status(cmd)
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn status(mut cmd: Command) -> Result<ExitCode> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    Ok(match st.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn warn_if_not_root(what: &str) {
    if !is_root() {
        eprintln!(
            "xtask: WARNING: not root: {what} need root (BPF, XDP, network namespaces); \
             they will say SKIPPED, or fail under CI=true. Try: sudo -E cargo xtask ..."
        );
    }
}

/// Runs `cmd`, failing with its stderr if it fails.
fn run(mut cmd: Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup() -> Result<()> {
    ensure_nightly_components()?;
    ensure_bpf_linker()?;
    ensure_cargo_fuzz()?;
    ensure_packages()
}

/// Nightly builds the XDP program (`-Z build-std=core` needs `rust-src`)
/// and CI lints it with nightly's clippy.
fn ensure_nightly_components() -> Result<()> {
    const NEEDED: [&str; 2] = ["rust-src", "clippy"];
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the nightly toolchain's {}",
        missing.join(", ")
    );
    // Add components to the nightly that is there: `rustup toolchain
    // install` would also upgrade it, and bpf-linker 0.10.0 loads the LLVM
    // of the nightly it was meant for (a newer nightly ships a newer LLVM).
    // Only a machine without any nightly gets one installed.
    let has_nightly = output("rustup", &["run", "nightly", "rustc", "--version"]).is_some();
    let mut cmd = Command::new("rustup");
    if has_nightly {
        cmd.args(["component", "add", "--toolchain", "nightly"]);
        cmd.args(&missing);
    } else {
        cmd.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
        for c in &missing {
            cmd.args(["--component", c]);
        }
    }
    run(cmd).context("installing nightly components")
}

fn ensure_bpf_linker() -> Result<()> {
    if output("bpf-linker", &["--version"])
        .is_some_and(|v| v.split_whitespace().any(|w| w == BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
    ]);
    run(cmd).context("installing bpf-linker")?;
    if output("bpf-linker", &["--version"]).is_none() {
        bail!("bpf-linker installed but not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let version = fuzz::CARGO_FUZZ_VERSION;
    if output("cargo", &["fuzz", "--version"])
        .is_some_and(|v| v.split_whitespace().any(|w| w == version))
    {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {version} (about two minutes)");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "install",
        "cargo-fuzz",
        "--version",
        version,
        "--locked",
        "--force",
    ]);
    run(cmd).context("installing cargo-fuzz")?;
    if output("cargo", &["fuzz", "--version"]).is_none() {
        bail!("cargo-fuzz installed but `cargo fuzz` does not run: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, bin)| !std::path::Path::new(bin).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {} and not root to install them: \
             sudo apt-get install {}",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    run(update).context("apt-get update")?;
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing);
    run(install).context("apt-get install")?;
    // Debian starts nginx on install; the tests run their own instances in
    // namespaces and need nothing listening in the root namespace.
    // Same for HAProxy, which the benchmark runs in a namespace, and for
    // the routing daemons, which the tests start per namespace.
    for (pkg, service) in [
        ("nginx-light", "nginx"),
        ("haproxy", "haproxy"),
        ("bird2", "bird"),
        ("frr", "frr"),
        ("prometheus", "prometheus"),
    ] {
        if missing.contains(&pkg) {
            let mut stop = Command::new("systemctl");
            stop.args(["disable", "--now", service]);
            let _ = stop.status();
        }
    }
    Ok(())
}
