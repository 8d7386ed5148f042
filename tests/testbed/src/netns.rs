//! Low-level network-namespace primitives for the test topology and demo.
//!
//! * [`NetNs`]: a named namespace (`ip netns add`), deleted on drop; `exec`,
//!   `run`, `ip` and `in_ns` run things inside it.
//! * [`ManagedChild`]: a process we started, SIGTERMed (then SIGKILLed) on drop.
//! * [`TempDir`]: a scratch directory, removed on drop.
//! * A process-wide cleanup registry: every live one of those is registered,
//!   and the first registration installs (once per process) a SIGINT/SIGTERM
//!   handler that kills the processes, deletes the namespaces and directories,
//!   and exits with status 130. Drop also runs during panic unwinding.
//!
//! Nothing here configures the root namespace: its only side effects there
//! are the `/run/netns/NAME` entries that `ip netns` manages and temp dirs.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Path of the `ip` binary (iproute2).
pub const IP: &str = "ip";

/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Whether we run with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the environment says this is CI, where every root test must
/// run: `CI` set to anything but empty, `0` or `false` (any case).
pub fn in_ci() -> bool {
    means_ci(std::env::var("CI").ok().as_deref())
}

fn means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !v.is_empty() && v != "0" && v != "false"
    })
}

/// For tests that need root: true if we are root. Otherwise panics in CI
/// (see [`in_ci`]) and prints a loud skip notice elsewhere.
pub fn require_root(test_name: &str) -> bool {
    if is_root() {
        return true;
    }
    if in_ci() {
        panic!(
            "{test_name} needs root (network namespaces, XDP, raw sockets) in CI: refusing to skip"
        );
    }
    // Straight to the stderr handle, not eprintln!: the test harness
    // captures the latter for a passing test.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "\n==================================================================\n  \
             SKIPPED (needs root): {test_name}\n\
             ==================================================================\n"
        )
        .as_bytes(),
    );
    false
}

/// Runs `cmd` to completion; on failure the error names the command line and
/// carries its stderr. Returns stdout.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<String> {
    let line = cmd_line(cmd);
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Renders a command for error messages.
pub fn cmd_line(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

/// A named network namespace created with `ip netns add`; deleted on drop
/// (which also destroys the veths inside it).
#[derive(Debug)]
pub struct NetNs {
    name: String,
    reg: Registration,
}

impl NetNs {
    /// Creates the namespace `name` (fails if it already exists).
    pub fn create(name: &str) -> anyhow::Result<NetNs> {
        anyhow::ensure!(
            !name.is_empty() && name.len() <= 64 && !name.contains('/'),
            "bad namespace name {name:?}"
        );
        // Register an empty slot and hold its lock while creating, so a
        // signal arriving meanwhile waits and then deletes the namespace; a
        // namespace we failed to create (e.g. someone else's) is never
        // recorded, hence never deleted.
        let reg = Registration::new(None);
        {
            let mut slot = lock(&reg.entry);
            run_cmd(Command::new(IP).args(["netns", "add", name]))?;
            *slot = Some(Resource::Netns(name.to_owned()));
        }
        Ok(NetNs {
            name: name.to_owned(),
            reg,
        })
    }

    /// The namespace name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME args...`, not yet started.
    pub fn exec<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(IP);
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` inside the namespace; returns stdout. Errors carry the
    /// command line and stderr.
    pub fn run<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cmd(&mut self.exec(args))
    }

    /// Runs `ip -n NAME args...`; returns stdout.
    pub fn ip<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cmd(Command::new(IP).args(["-n", &self.name]).args(args))
    }

    /// Creates the veth pair `a`–`b` with both ends inside the namespace,
    /// and sets both up: a NIC for a program under test whose peer is
    /// there to keep the link up.
    pub fn add_veth_pair(&self, a: &str, b: &str) -> anyhow::Result<()> {
        self.ip(["link", "add", a, "type", "veth", "peer", "name", b])?;
        self.ip(["link", "set", a, "up"])?;
        self.ip(["link", "set", b, "up"]).map(drop)
    }

    /// Sets sysctls (`key=value`) inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["sysctl", "-q", "-w"];
        args.extend_from_slice(settings);
        self.run(args).map(drop)
    }

    /// Runs `f` on a fresh thread that first joins this namespace; sockets
    /// opened by `f` live in the namespace (also after `f` returns).
    ///
    /// Panics (never running `f`) if the namespace cannot be entered; a panic
    /// inside `f` is propagated.
    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        let joined = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(s, move || {
                    let file =
                        File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns({path}) failed: {e}"));
                    drop(file);
                    f()
                })
                .expect("cannot spawn a thread")
                .join()
        });
        match joined {
            Ok(v) => v,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    /// Runs `f` on a new thread that first joins this namespace, and
    /// returns at once. Panics in the thread (never running `f`) if the
    /// namespace cannot be entered.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns({path}) failed: {e}"));
                drop(file);
                f()
            })
            .expect("cannot spawn a thread")
    }

    /// Deletes the namespace now, reporting errors (drop ignores them).
    pub fn delete(self) -> anyhow::Result<()> {
        self.reg.teardown_checked()
    }
}

/// A fresh directory under the system temp dir, removed (recursively) on
/// drop and on SIGINT/SIGTERM.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    /// Removes the directory on drop.
    _reg: Registration,
}

impl TempDir {
    /// Creates `$TMPDIR/NAME`; fails if it exists.
    pub fn create(name: &str) -> std::io::Result<TempDir> {
        let path = std::env::temp_dir().join(name);
        let reg = Registration::new(None);
        {
            let mut slot = lock(&reg.entry);
            std::fs::create_dir(&path)?;
            *slot = Some(Resource::Dir(path.clone()));
        }
        Ok(TempDir { path, _reg: reg })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A directory on bpffs for a test's pinned xlb state (`/sys/fs/bpf/NAME`),
/// unpinned and removed on drop and on SIGINT/SIGTERM: whatever a test
/// leaves pinned there (maps, XDP links) goes with it.
#[derive(Debug)]
pub struct BpfDir {
    path: PathBuf,
    _reg: Registration,
}

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

impl BpfDir {
    /// Creates `/sys/fs/bpf/NAME`, mounting bpffs there first if nothing
    /// is mounted (as `xlb run` does); fails if it exists.
    pub fn create(name: &str) -> anyhow::Result<BpfDir> {
        let path = Path::new(BPFFS).join(name);
        lb_user::state::ensure_bpffs(&path)?;
        let reg = Registration::new(None);
        {
            let mut slot = lock(&reg.entry);
            std::fs::create_dir(&path)
                .with_context(|| format!("creating {} (is bpffs mounted?)", path.display()))?;
            *slot = Some(Resource::Pins(path.clone()));
        }
        Ok(BpfDir { path, _reg: reg })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Unpins everything under `dir` (bpffs pins are files) and removes it.
fn unpin_all(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            unpin_all(&p)?;
        } else {
            std::fs::remove_file(&p).with_context(|| format!("unpinning {}", p.display()))?;
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// A child process we started; on drop it gets SIGTERM, a bounded wait, then
/// SIGKILL. Registered so that SIGINT/SIGTERM of this process kills it too.
#[derive(Debug)]
pub struct ManagedChild {
    what: String,
    child: Arc<Mutex<Child>>,
    reg: Registration,
}

/// How long a [`ManagedChild`] gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

impl ManagedChild {
    /// Spawns `cmd`; `what` names it in messages. stdin is set to null.
    pub fn spawn(what: &str, cmd: &mut Command) -> anyhow::Result<ManagedChild> {
        let line = cmd_line(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {what}: `{line}`"))?;
        let child = Arc::new(Mutex::new(child));
        let reg = Registration::new(Some(Resource::Process {
            what: what.to_owned(),
            child: Arc::clone(&child),
        }));
        Ok(ManagedChild {
            what: what.to_owned(),
            child,
            reg,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        lock(&self.child).id()
    }

    /// What this process is (for messages).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// `Some(status)` if the process has exited.
    pub fn try_wait(&self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(lock(&self.child).try_wait()?)
    }

    /// SIGKILL now, by the PID of the child we own, and reap it: a crash,
    /// with no chance to clean up.
    pub fn kill_now(&self) -> anyhow::Result<()> {
        let mut child = lock(&self.child);
        if child.try_wait()?.is_none() {
            child.kill()?;
        }
        child.wait()?;
        Ok(())
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the child, by the PID of the
    /// child we own (refused once it has exited, so the PID cannot have
    /// been reused).
    pub fn freeze(&self, frozen: bool) -> anyhow::Result<()> {
        let mut child = lock(&self.child);
        anyhow::ensure!(child.try_wait()?.is_none(), "{} has exited", self.what);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let sig = if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(pid, sig)?;
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns whether the process
    /// exited on SIGTERM alone.
    pub fn stop(self, grace: Duration) -> bool {
        let mut slot = lock(&self.reg.entry);
        match slot.take() {
            Some(Resource::Process { child, .. }) => terminate(&child, grace),
            Some(other) => {
                *slot = Some(other);
                false
            }
            None => false,
        }
    }
}

/// SIGTERM, bounded wait, SIGKILL. Only ever called on processes we spawned
/// and have not reaped yet (the `Child` is still owned).
fn terminate(child: &Mutex<Child>, grace: Duration) -> bool {
    let mut child = lock(child);
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    let Ok(raw) = i32::try_from(child.id()) else {
        return false;
    };
    let pid = Pid::from_raw(raw);
    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Writes a line straight to stderr: `eprintln!` output is captured by the
/// test harness (also in threads spawned from a test), and these messages
/// must be seen.
fn say(msg: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Process-wide cleanup registry and signal handling.

#[derive(Debug)]
enum Resource {
    Netns(String),
    Dir(PathBuf),
    /// A bpffs directory of pins.
    Pins(PathBuf),
    Process {
        what: String,
        child: Arc<Mutex<Child>>,
    },
}

impl Resource {
    fn teardown(self) -> anyhow::Result<()> {
        match self {
            Resource::Netns(name) => {
                run_cmd(Command::new(IP).args(["netns", "del", &name])).map(drop)
            }
            Resource::Dir(path) => std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display())),
            Resource::Pins(path) => unpin_all(&path),
            Resource::Process { what, child } => {
                if !terminate(&child, TERM_GRACE) {
                    tracing::warn!("{what} did not exit on SIGTERM; killed");
                }
                Ok(())
            }
        }
    }
}

type Slot = Arc<Mutex<Option<Resource>>>;

struct Registry {
    entries: Vec<(u64, Slot)>,
    /// Set by the signal thread: no new registrations are accepted.
    closing: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
    closing: false,
});
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static SIGNAL_HANDLER: Once = Once::new();

/// A registered resource. The slot is emptied by whoever tears it down
/// first (the owner's drop or the signal thread); the slot's lock is held
/// during teardown, so the signal thread waits for an in-progress drop.
#[derive(Debug)]
struct Registration {
    id: u64,
    entry: Slot,
}

impl Registration {
    fn new(resource: Option<Resource>) -> Registration {
        install_signal_cleanup();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Mutex::new(resource));
        let mut reg = lock(&REGISTRY);
        if reg.closing {
            // The process is exiting on a signal; do not start anything new.
            drop(reg);
            loop {
                std::thread::park();
            }
        }
        reg.entries.push((id, Arc::clone(&entry)));
        Registration { id, entry }
    }

    fn teardown_checked(&self) -> anyhow::Result<()> {
        let result = {
            let mut slot = lock(&self.entry);
            match slot.take() {
                Some(r) => r.teardown(),
                None => Ok(()),
            }
        };
        lock(&REGISTRY).entries.retain(|(id, _)| *id != self.id);
        result
    }
}

/// Dropping a registration (with its owner, also during unwinding) tears the
/// resource down unless that already happened.
impl Drop for Registration {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_checked() {
            say(&format!("xlb cleanup: {e:#}"));
        }
        if lock(&REGISTRY).closing {
            // The signal thread is tearing everything down and will exit
            // with 130; don't let this thread race it to a different exit
            // (e.g. an error caused by the teardown itself).
            loop {
                std::thread::park();
            }
        }
    }
}

/// Installs (once per process) the SIGINT/SIGTERM handler that tears down
/// every live namespace and child process, then exits with status 130.
/// Called automatically by the first [`NetNs::create`] / [`ManagedChild::spawn`].
pub fn install_signal_cleanup() {
    SIGNAL_HANDLER.call_once(|| {
        let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let spawned = std::thread::Builder::new()
            .name("xlb-netns-signals".into())
            .spawn(move || signal_thread(tx));
        match spawned {
            Ok(_) => match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => say(&format!("xlb: no Ctrl-C cleanup: {e:#}")),
                Err(_) => say("xlb: no Ctrl-C cleanup: signal thread died"),
            },
            Err(e) => say(&format!("xlb: no Ctrl-C cleanup: {e}")),
        }
    });
}

fn signal_thread(ready: std::sync::mpsc::Sender<anyhow::Result<()>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let got = rt.block_on(async move {
        let mut int = match signal(SignalKind::interrupt()) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return None;
            }
        };
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return None;
            }
        };
        let _ = ready.send(Ok(()));
        tokio::select! {
            _ = int.recv() => Some("SIGINT"),
            _ = term.recv() => Some("SIGTERM"),
        }
    });
    let Some(name) = got else { return };
    say(&format!(
        "\nxlb: {name} received; tearing down test namespaces and processes"
    ));
    teardown_all();
    std::process::exit(130);
}

/// Tears down every registered resource: processes first, then pinned
/// state, then namespaces, then directories. Leaves the registry closed (used only before exiting).
fn teardown_all() {
    let slots: Vec<Slot> = {
        let mut reg = lock(&REGISTRY);
        reg.closing = true;
        reg.entries.iter().map(|(_, s)| Arc::clone(s)).collect()
    };
    for phase in 0..4 {
        for slot in &slots {
            let mut slot = lock(slot);
            let rank = match *slot {
                Some(Resource::Process { .. }) => 0,
                Some(Resource::Pins(_)) => 1,
                Some(Resource::Netns(_)) => 2,
                Some(Resource::Dir(_)) => 3,
                None => continue,
            };
            if rank != phase {
                continue;
            }
            if let Some(r) = slot.take()
                && let Err(e) = r.teardown()
            {
                say(&format!("xlb cleanup: {e:#}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::means_ci;

    #[test]
    fn any_ci_value_but_empty_zero_or_false_means_ci() {
        for v in ["true", "True", "1", "yes", "woodpecker"] {
            assert!(means_ci(Some(v)), "{v}");
        }
        for v in ["", " ", "0", "false", "FALSE"] {
            assert!(!means_ci(Some(v)), "{v:?}");
        }
        assert!(!means_ci(None));
    }
}
