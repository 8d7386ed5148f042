//! `xlb-demo`: builds a client, an xlb node and three nginx backends in
//! network namespaces, runs the real `xlb` binary on the node, sends
//! requests through an IPv4 and an IPv6 VIP, prints how they were balanced,
//! and removes everything it created. `cargo xtask run` runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "xlb-demo",
    about = "xlb live, in network namespaces (needs root)"
)]
struct Cli {
    /// The `xlb` binary to run (default: `xlb` next to this program).
    #[arg(long)]
    xlb: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let xlb = match cli.xlb {
        Some(p) => p,
        None => match std::env::current_exe() {
            Ok(me) => me.with_file_name("xlb"),
            Err(e) => {
                eprintln!("xlb-demo: locating this program: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if !xlb.is_file() {
        eprintln!(
            "xlb-demo: no xlb binary at {} (build it with `cargo build --release --bin xlb`, or pass --xlb)",
            xlb.display()
        );
        return ExitCode::FAILURE;
    }
    match xlb_testbed::demo::run(&xlb) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
