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

/// Serves requests on `listener` (from [`bind`]) until the task is
/// dropped. `handle` runs on the async runtime; it must not block for
/// long. It is given the request and the credentials of the process that
/// sent it (`None` if the kernel gave none); it decides what that peer may
/// do.
pub async fn serve<F, Fut>(listener: std::os::unix::net::UnixListener, handle: F) -> Result<()>
where
    F: Fn(Request, Option<Peer>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

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
            let mut reader = tokio::io::BufReader::new(read);
            let reply = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => handle(req, peer).await,
                    Err(e) => Reply::Error {
                        message: format!("bad request: {e}"),
                    },
                },
                Err(e) => Reply::Error {
                    message: format!("reading request: {e}"),
                },
            };
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}
