//! `xlb`: the load balancer's command line.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use clap::{Parser, Subcommand};
use lb_user::{
    config::{Config, DEFAULT_CONTROL_SOCKET},
    ctl::{self, Reply, Request},
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP load balancer with Maglev hashing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the configured NIC and serve the VIPs until SIGINT/SIGTERM
    /// (SIGHUP reloads the file). Without --config: a live demo in network
    /// namespaces.
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show VIPs, backends and counters of the running instance.
    Status {
        /// Control socket of the instance (default: from --config, else /run/xlb/xlb.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Take the control socket from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file without touching anything.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("XLB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match real_main(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config: Some(path) } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(lb_user::daemon::run(&path)),
        Command::Run { config: None } => {
            let exe = std::env::current_exe().context("locating the xlb binary")?;
            lb_user::demo::run(&exe)
        }
        Command::Status {
            socket,
            config,
            json,
        } => {
            let socket = match (socket, config) {
                (Some(s), _) => s,
                (None, Some(c)) => Config::load(&c).map_err(|e| anyhow!("{e}"))?.control_socket,
                (None, None) => PathBuf::from(DEFAULT_CONTROL_SOCKET),
            };
            match ctl::call(&socket, &Request::Status)? {
                Reply::Status(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                }
                Reply::Status(s) => print!("{}", s.render()),
                Reply::Error { message } => return Err(anyhow!("daemon: {message}")),
            }
            Ok(())
        }
        Command::Check { config } => {
            let c = Config::load(&config).map_err(|e| anyhow!("{e}"))?;
            println!(
                "{}: OK ({} VIPs, {} backends)",
                config.display(),
                c.vips.len(),
                c.vips.iter().map(|v| v.backends.len()).sum::<usize>()
            );
            Ok(())
        }
    }
}
