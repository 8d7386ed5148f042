//! `xlb-bench`: the benchmarks behind `cargo xtask bench`, which sets the
//! machine up, builds the release `xlb` and runs this (as root).

mod bench;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// Fewer trials and shorter runs: under two minutes.
    #[arg(long)]
    quick: bool,
    /// Run only these sections (comma-separated) and print the results
    /// without writing docs/benchmarks.md.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<bench::Section>,
    /// The release `xlb` binary (the end-to-end cases run the real daemon).
    #[arg(long)]
    xlb_exe: PathBuf,
    /// Where benchmarks.md and benchmarks/*.png are written.
    #[arg(long)]
    docs: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench::run(&bench::Options {
        quick: cli.quick,
        only: cli.only,
        xlb_exe: cli.xlb_exe,
        docs: cli.docs,
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
