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

/// Sends one request to the daemon listening on `socket`.
pub fn call(socket: &Path, request: &Request) -> Result<Reply> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to {} (is `xlb run` running, with this control_socket?)",
            socket.display()
        )
    })?;
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

/// Serves requests on `socket` until the task is dropped. `handle` runs on
/// the async runtime; it must not block for long. It is given the request
/// and the user id of the process that sent it (`SO_PEERCRED`; `None` if
/// the kernel did not say).
pub async fn serve<F, Fut>(socket: &Path, handle: F) -> Result<()>
where
    F: Fn(Request, Option<u32>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A stale socket from a crashed run would make bind fail; a live one
    // means another instance: refuse rather than steal it.
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            bail!(
                "{} is in use: another xlb is running with this control_socket",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale {}", socket.display()))?;
    }
    // Bound and listening under a temporary name, then renamed into place:
    // the path appears only once it accepts, so a client that finds it
    // (`xlb status` right at start) is never refused.
    let mut pending = socket.as_os_str().to_owned();
    pending.push(format!(".{}.new", std::process::id()));
    let pending = std::path::PathBuf::from(pending);
    let _ = std::fs::remove_file(&pending);
    let listener = tokio::net::UnixListener::bind(&pending)
        .with_context(|| format!("binding {}", pending.display()))?;
    std::fs::rename(&pending, socket).with_context(|| {
        let _ = std::fs::remove_file(&pending);
        format!("moving {} to {}", pending.display(), socket.display())
    })?;
    let handle = std::sync::Arc::new(handle);
    loop {
        let (stream, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            let reply = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(req) => handle(req, uid).await,
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
