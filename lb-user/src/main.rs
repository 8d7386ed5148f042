//! `xlb`: the load balancer's command line.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::{Args, Parser, Subcommand};
use lb_user::{
    api::{BackendAction, BackendSpec, Reply, Request, TraceSpec},
    config::{Config, DEFAULT_CONTROL_SOCKET},
    control::{Controller, NoNeighbours, Node},
    ctl,
    maps::MemoryMaps,
};

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP load balancer with Maglev hashing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written (to stderr): `text` (coloured only on a
    /// terminal) or `json` (one object per line, for a log collector).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "XLB_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the configured NIC (or adopt the data plane pinned in
    /// state_dir) and serve the VIPs; SIGHUP reloads the file. On
    /// SIGINT/SIGTERM xlb exits and the data plane keeps forwarding.
    Run {
        /// The configuration file (see docs/config.md).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Discard the pinned data plane first and start afresh (every
        /// connection it carries is lost).
        #[arg(long)]
        reset_state: bool,
        /// Run this XDP object instead of the one built into xlb (swapped in
        /// atomically if another program runs).
        #[arg(long, value_name = "FILE")]
        xdp_object: Option<PathBuf>,
    },
    /// Take the node out: resign VRRP, withdraw the VRRP addresses, detach
    /// the XDP program and remove the pinned state (every connection the
    /// node carries is lost). Works with or without a running `xlb run`.
    Down {
        #[command(flatten)]
        target: Target,
    },
    /// Show VIPs, backends, health and counters of the running instance.
    Status {
        #[command(flatten)]
        target: Target,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the running instance's config file (same as SIGHUP). A file
    /// with errors is refused and the running config stays. Runtime
    /// drain/weight settings are reset to the file's.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Change one backend of the running instance (drain, undrain, weight:
    /// until the next reload), or add and remove backends at runtime (kept
    /// across reloads and restarts). Root or control_socket_admin_group.
    Backend {
        #[command(subcommand)]
        action: BackendCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Show what the data plane decides for each packet that matches, as it
    /// happens: VIP, connection table (hit, miss, expired, stale), backend,
    /// verdict and why. Stops after --count packets or --seconds, whichever
    /// comes first (the running instance also ends the trace at that time
    /// if this command dies). Needs root: it reads the pinned ring buffer.
    Trace {
        #[command(flatten)]
        target: Target,
        /// A VIP's name (its address, port and protocol), or an address
        /// (every packet to it).
        #[arg(long)]
        vip: Option<String>,
        /// The client's address or prefix (ADDR or ADDR/LEN).
        #[arg(long)]
        client: Option<String>,
        /// Either port of the flow.
        #[arg(long)]
        port: Option<u16>,
        /// Only packets the data plane dropped.
        #[arg(long)]
        drops: bool,
        /// Stop after this many packets.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Stop after this many seconds (at most 3600).
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// Also write the packets (their first 128 bytes, as xlb sent them
        /// on) to this pcapng file, the decision as each packet's comment.
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
    },
    /// Validate a config file without touching anything: parse and check
    /// it, then apply it to maps held in memory, which refuse what the
    /// kernel's would (more VIPs or backends than there are ids).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Which running instance to talk to.
#[derive(Args)]
struct Target {
    /// Control socket of the instance (default: from --config, else /run/xlb/xlb.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Take the control socket from this config file.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

impl Target {
    fn socket(self) -> Result<PathBuf> {
        Ok(match (self.socket, self.config) {
            (Some(s), _) => s,
            (None, Some(c)) => Config::load(&c).map_err(|e| anyhow!("{e}"))?.control_socket,
            (None, None) => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        })
    }
}

#[derive(Subcommand)]
enum BackendCmd {
    /// No new flows to the backend; established ones continue.
    Drain {
        /// VIP name.
        vip: String,
        /// Backend name or address.
        backend: String,
    },
    /// End a drain.
    Undrain { vip: String, backend: String },
    /// Set the backend's weight (0..=10000) in place of the file's.
    Weight {
        vip: String,
        backend: String,
        weight: u32,
    },
    /// Add a backend to a VIP, in its ring when this returns.
    /// It is not written to the file: a reload keeps it, a restart keeps
    /// it, `xlb backend remove` removes it.
    Add {
        /// VIP name.
        vip: String,
        /// The backend's address (the VIP's address family).
        address: std::net::IpAddr,
        /// The port it serves on (default: the VIP's; another port needs a
        /// NAT VIP).
        #[arg(long)]
        port: Option<u16>,
        /// Its weight, 0..=10000 (default 1).
        #[arg(long)]
        weight: Option<u32>,
        /// Its backup tier (default 0).
        #[arg(long)]
        tier: Option<u8>,
    },
    /// Remove a backend added with `xlb backend add`: no new flows,
    /// established ones continue until idle.
    Remove {
        /// VIP name.
        vip: String,
        /// Backend name or address.
        backend: String,
    },
}

/// Sends `request`; prints an `Ok` reply's message, fails on an error.
fn command(socket: &std::path::Path, request: &Request) -> Result<()> {
    match ctl::call(socket, request)? {
        Reply::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        Reply::Error { message } => Err(anyhow!("daemon: {message}")),
        Reply::Status(_) | Reply::Trace(_) => Err(anyhow!("daemon: unexpected reply")),
    }
}

/// `xlb down`: through the running daemon if there is one, else directly
/// on the state the config names.
fn down(target: Target) -> Result<()> {
    let config = match &target.config {
        Some(path) => Some(Config::load(path).map_err(|e| anyhow!("{e}"))?),
        None => None,
    };
    let socket = match (&target.socket, &config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.control_socket.clone(),
        (None, None) => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    };
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => return command(&socket, &Request::Down),
        // A daemon that this user may not talk to is running: taking its
        // data plane away underneath it is not the answer.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return ctl::connect(&socket).map(drop);
        }
        Err(_) => {}
    }
    let Some(config) = config else {
        anyhow::bail!(
            "no xlb answers on {}; to remove the data plane it left, say which: \
             `xlb down --config FILE`",
            socket.display()
        );
    };
    println!("{}", lb_user::daemon::down_offline(&config)?);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("XLB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        // Colour codes only where a person reads them: a file or the
        // journal gets plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            config: Some(path),
            reset_state,
            xdp_object,
        } => {
            let opts = lb_user::daemon::Options {
                reset_state,
                xdp_object,
            };
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(lb_user::daemon::run(&path, &opts))
        }
        // Refused rather than defaulted: a unit that lost its argument must
        // not start serving something nobody configured.
        Command::Run { config: None, .. } => Err(anyhow!(
            "`xlb run` needs --config FILE: the VIPs and backends to serve (docs/config.md; \
             `xlb check --config FILE` validates one). The live demo in network namespaces \
             is `cargo xtask run`, from the source tree."
        )),
        Command::Reload { target } => command(&target.socket()?, &Request::Reload),
        Command::Down { target } => down(target),
        Command::Backend { action, target } => {
            let request = match action {
                BackendCmd::Add {
                    vip,
                    address,
                    port,
                    weight,
                    tier,
                } => Request::BackendAdd {
                    vip,
                    backend: BackendSpec {
                        address,
                        port,
                        weight,
                        tier,
                    },
                },
                BackendCmd::Remove { vip, backend } => Request::BackendRemove { vip, backend },
                BackendCmd::Drain { vip, backend } => Request::Backend {
                    vip,
                    backend,
                    action: BackendAction::Drain,
                },
                BackendCmd::Undrain { vip, backend } => Request::Backend {
                    vip,
                    backend,
                    action: BackendAction::Undrain,
                },
                BackendCmd::Weight {
                    vip,
                    backend,
                    weight,
                } => Request::Backend {
                    vip,
                    backend,
                    action: BackendAction::Weight(weight),
                },
            };
            command(&target.socket()?, &request)
        }
        Command::Status { target, json } => {
            let socket = target.socket()?;
            match ctl::call(&socket, &Request::Status)? {
                Reply::Status(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                }
                Reply::Status(s) => print!("{}", s.render()),
                Reply::Error { message } => return Err(anyhow!("daemon: {message}")),
                Reply::Ok { message } => println!("{message}"),
                Reply::Trace(_) => return Err(anyhow!("daemon: unexpected reply")),
            }
            Ok(())
        }
        Command::Trace {
            target,
            vip,
            client,
            port,
            drops,
            count,
            seconds,
            pcap,
        } => {
            let opts = lb_user::trace::Options {
                spec: TraceSpec {
                    vip,
                    client,
                    port,
                    drops_only: drops,
                    seconds,
                },
                count,
                pcap,
            };
            let summary = lb_user::trace::run(&target.socket()?, &opts, &mut std::io::stdout())?;
            eprintln!("{}", lb_user::trace::summary_line(&summary, &opts));
            Ok(())
        }
        Command::Check { config } => {
            let c = Config::load(&config).map_err(|e| anyhow!("{e}"))?;
            // The groups named for the control socket exist here.
            lb_user::daemon::Policy::of(&c)
                .map_err(|e| anyhow!("{}: cannot be served: {e:#}", config.display()))?;
            let node = Node {
                interface: c.interface.clone(),
                mac: [0; 6],
            };
            Controller::new(MemoryMaps::new(), node)
                .apply(&c, &mut NoNeighbours)
                .map_err(|e| anyhow!("{}: cannot be served: {e}", config.display()))?;
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
