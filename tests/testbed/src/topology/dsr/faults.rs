//! Backend faults for health-check tests: stop and restart one backend's
//! nginx, have it serve a wrong body, or replace it with a server that
//! accepts connections and never answers. Only processes and sockets this
//! topology created are touched (by their handles, never by name).

use std::{
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, ensure};

use super::{Topology, VIP_PORT, nginx};

/// What a restarted backend's nginx answers on `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// `backend-<i>\n`, as at start.
    Normal,
    /// Status 200 with a body that does not name the backend
    /// (`maintenance\n`): healthy for a status check, not for a content check.
    WrongBody,
}

/// How long a stopped nginx gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a (re)started nginx gets to listen.
const START_TIMEOUT: Duration = Duration::from_secs(5);

impl Topology {
    /// Stops backend `i`'s nginx (and a silent server there, if any):
    /// connections to its port are refused from now on.
    pub fn stop_backend(&mut self, i: usize) -> anyhow::Result<()> {
        ensure!((1..=self.nginx.len()).contains(&i), "no backend {i}");
        if let Some(child) = self.nginx[i - 1].take() {
            child.stop(STOP_GRACE);
        }
        self.silent.retain(|s| s.backend != i);
        Ok(())
    }

    /// (Re)starts backend `i`'s nginx serving `serve`, after stopping what
    /// ran there, and waits until it listens.
    pub fn start_backend(&mut self, i: usize, serve: Serve) -> anyhow::Result<()> {
        self.stop_backend(i)?;
        let body = match serve {
            Serve::Normal => format!("backend-{i}\n"),
            Serve::WrongBody => "maintenance\n".to_owned(),
        };
        let child = nginx::spawn(self.dir(), self.backend(i), i, VIP_PORT, &body)?;
        let targets = [
            SocketAddr::new(self.backend_addr4(i).into(), VIP_PORT),
            SocketAddr::new(self.backend_addr6(i).into(), VIP_PORT),
        ];
        let dir = self.dir().join(format!("b{i}"));
        let started =
            nginx::wait_listening(self.backend(i), &child, &dir, i, &targets, START_TIMEOUT);
        self.nginx[i - 1] = Some(child);
        started
    }

    /// Replaces backend `i`'s nginx by a server that accepts TCP connections
    /// on the VIP port (IPv4 and IPv6) and never sends a byte.
    pub fn silence_backend(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_backend(i)?;
        let listener = self
            .backend(i)
            .in_ns(|| TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, VIP_PORT))))
            .with_context(|| format!("binding [::]:{VIP_PORT} in backend-{i}"))?;
        self.silent.push(SilentServer::start(i, listener)?);
        Ok(())
    }
}

/// Accepts and holds connections until dropped.
#[derive(Debug)]
pub(super) struct SilentServer {
    pub(super) backend: usize,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    /// `listener` is a dual-stack `[::]` socket (IPv4 arrives mapped), so
    /// one thread serves both families.
    fn start(backend: usize, listener: TcpListener) -> anyhow::Result<SilentServer> {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("silent-backend-{backend}"))
            .spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => held.push(conn),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        Ok(SilentServer {
            backend,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
