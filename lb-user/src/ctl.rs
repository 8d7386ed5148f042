//! The local control socket's transport: one JSON request per connection,
//! one JSON reply (the types are [`crate::api`]'s). `xlb status`, `xlb
//! reload` and `xlb backend ...` talk to the running daemon through it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::api::{Reply, Request};

mod bind;
mod peer;

pub use bind::{SocketFile, bind};
pub use peer::Peer;

/// Connects to the daemon listening on `socket`. A refusal by the
/// socket's mode says who may connect.
pub fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            who_may_connect(socket)
        } else {
            "is `xlb run` running, with this control_socket?".to_owned()
        };
        anyhow::anyhow!("connecting to {}: {e} ({hint})", socket.display())
    })
}

/// Why a connection was refused, from the socket file's owner, group and
/// mode (`control_socket_group` in the config sets them).
fn who_may_connect(socket: &Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let me = nix::unistd::geteuid();
    let meta = match std::fs::metadata(socket) {
        Ok(m) => m,
        Err(_) => {
            let dir = socket.parent().unwrap_or(Path::new("/"));
            return format!(
                "uid {me} may not enter {}: the daemon's control_socket_group decides who may",
                dir.display()
            );
        }
    };
    let mode = meta.mode() & 0o777;
    if mode & 0o020 != 0 {
        let gid = meta.gid();
        let name = nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map_or_else(
                || format!("gid {gid}"),
                |g| format!("group {} (gid {gid})", g.name),
            );
        format!(
            "the socket is mode {mode:04o}: only uid {} and members of {name} may connect, \
             and uid {me} is neither (control_socket_group)",
            meta.uid()
        )
    } else {
        format!(
            "the socket is mode {mode:04o}: only uid {} may connect; a control_socket_group \
             in the daemon's config lets a group in",
            meta.uid()
        )
    }
}

/// Sends one request to the daemon listening on `socket`.
pub fn call(socket: &Path, request: &Request) -> Result<Reply> {
    let stream = connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = &stream;
    serde_json::to_writer(&mut writer, request)?;
    writer.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("reading the daemon's reply")?;
    if line.is_empty() {
        bail!("the daemon closed the connection without replying");
    }
    serde_json::from_str(&line).context("decoding the daemon's reply")
}

/// Who the socket file lets in, besides its owner (the daemon's user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    /// The socket's group (mode 0660) and, when xlb creates the socket's
    /// directory, the directory's (mode 0750). `None`: 0600 and 0700.
    pub group: Option<u32>,
}

impl SocketAccess {
    pub fn socket_mode(self) -> u32 {
        if self.group.is_some() { 0o660 } else { 0o600 }
    }

    pub fn dir_mode(self) -> u32 {
        if self.group.is_some() { 0o750 } else { 0o700 }
    }
}

/// Longest request line read: the longest request (`xlb backend add`) is
/// a few hundred bytes; whoever may connect must not make xlb buffer
/// without end.
pub const MAX_REQUEST: usize = 64 * 1024;

/// How long a connection may take to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves requests on `listener` (from [`bind`]) until the task is
/// dropped. `handle` runs on the async runtime; it must not block for
/// long. It is given the request and the credentials of the process that
/// sent it (`None` if the kernel gave none); it decides what that peer may
/// do. A request longer than [`MAX_REQUEST`], or not in within
/// [`REQUEST_TIMEOUT`], gets an error.
pub async fn serve<F, Fut>(listener: std::os::unix::net::UnixListener, handle: F) -> Result<()>
where
    F: Fn(Request, Option<Peer>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let handle = std::sync::Arc::new(handle);
    loop {
        let (stream, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            let peer = Peer::of(&stream);
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64 + 1);
            let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
            let error = |message: String| Reply::Error { message };
            let reply = match read {
                Err(_) => error(format!("no request within {} s", REQUEST_TIMEOUT.as_secs())),
                Ok(Err(e)) => error(format!("reading request: {e}")),
                Ok(Ok(_)) if line.len() > MAX_REQUEST => {
                    error(format!("bad request: longer than {MAX_REQUEST} bytes"))
                }
                Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => handle(req, peer).await,
                    Err(e) => error(format!("bad request: {e}")),
                },
            };
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A server on a socket in a fresh directory that answers every
    /// request with who sent it.
    fn server(name: &str) -> (std::path::PathBuf, tokio::task::JoinHandle<Result<()>>) {
        let dir = std::env::temp_dir().join(format!("xlb-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let socket = dir.join("s.sock");
        let (listener, file) = bind(&socket, SocketAccess { group: None }).unwrap();
        let task = tokio::spawn(async move {
            let _file = file;
            serve(listener, |_req, peer| async move {
                Reply::Ok {
                    message: format!("uid {:?}", peer.map(|p| p.uid)),
                }
            })
            .await
        });
        (socket, task)
    }

    /// Stops the server; its socket and the directory it made are gone.
    async fn stop(socket: &Path, task: tokio::task::JoinHandle<Result<()>>) {
        task.abort();
        let _ = task.await;
        assert!(
            !socket.parent().unwrap().exists(),
            "removed with the server"
        );
    }

    async fn reply_to(socket: &Path, sent: &[u8]) -> String {
        let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
        s.write_all(sent).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_request_is_answered_with_the_senders_credentials() {
        let (socket, task) = server("ok");
        let out = reply_to(&socket, b"{\"cmd\":\"status\"}\n").await;
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(
            out,
            format!("{{\"result\":\"ok\",\"message\":\"uid Some({me})\"}}\n")
        );
        stop(&socket, task).await;
    }

    #[tokio::test]
    async fn an_endless_request_is_cut_off_at_the_limit() {
        let (socket, task) = server("long");
        let mut long = vec![b'x'; MAX_REQUEST * 2];
        long.push(b'\n');
        let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
        // The server answers after MAX_REQUEST + 1 bytes and closes; the
        // rest may not be taken.
        let _ = s.write_all(&long).await;
        // What arrived before the reset that closing with unread bytes
        // causes.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
        let out = String::from_utf8_lossy(&got);
        assert!(
            out.contains(&format!("bad request: longer than {MAX_REQUEST} bytes")),
            "{out}"
        );
        stop(&socket, task).await;
    }

    #[tokio::test]
    async fn a_silent_client_is_answered_and_dropped_after_the_timeout() {
        let (socket, task) = server("silent");
        let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let started = std::time::Instant::now();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.contains("no request within 5 s"), "{out}");
        assert!(started.elapsed() >= REQUEST_TIMEOUT);
        stop(&socket, task).await;
    }
}
