//! The HTTP side of `[metrics]`: a GET-only HTTP/1.1 responder for
//! Prometheus. One request per connection (`Connection: close`), read up
//! to a bounded size within a timeout and parsed with `httparse`; only
//! `GET` and `HEAD` of `/metrics` are answered (404 for other paths, 405
//! for other methods), a few connections at a time. The page is made on a
//! blocking thread: it reads maps and takes the controller's lock, which
//! must not stall the runtime the health checks run on.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::CONTENT_TYPE;

/// What one server accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The request head (request line and headers) must fit in this.
    pub max_request: usize,
    /// The whole request must arrive within this.
    pub read_timeout: Duration,
    /// The whole answer must be taken within this.
    pub write_timeout: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
}

impl Limits {
    /// Prometheus sends a request of a few hundred bytes and waits up to
    /// its scrape timeout (10 s by default).
    pub const DEFAULT: Limits = Limits {
        max_request: 8 * 1024,
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(10),
        max_connections: 8,
    };
}

/// Makes the page: the text, or what went wrong. Called on a blocking
/// thread for each scrape.
pub type Page = Arc<dyn Fn() -> Result<String> + Send + Sync>;

/// Binds `addr` (before anything else starts, so that a taken port stops
/// xlb before it touches the data plane).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics.listen {addr}: cannot listen"))
}

/// Answers scrapes on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, page: Page, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: pass, and try again.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections, closing this one");
            continue;
        };
        let page = page.clone();
        tokio::spawn(async move {
            answer(stream, &page, &limits).await;
            drop(permit);
        });
    }
}

/// A response: status line, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
    /// HEAD: the head only, with the body's length.
    pub head_only: bool,
    pub allow: bool,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            head_only: false,
            allow: false,
        }
    }

    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Asked {
    /// `GET /metrics` (`head`: `HEAD /metrics`).
    Metrics { head: bool },
    /// Not one we answer with the page: this answer instead.
    Refused(Response),
    /// The head is not complete yet.
    More,
}

/// Reads the request in `buf` (all that arrived so far).
pub(super) fn parse(buf: &[u8], limits: &Limits) -> Asked {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_request => {
            return Asked::Refused(Response::text(
                "431 Request Header Fields Too Large",
                "request too large",
            ));
        }
        Ok(httparse::Status::Partial) => return Asked::More,
        Err(httparse::Error::TooManyHeaders) => {
            return Asked::Refused(Response::text(
                "431 Request Header Fields Too Large",
                "too many headers",
            ));
        }
        Err(e) => return Asked::Refused(Response::text("400 Bad Request", &e.to_string())),
    }
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => {
            return Asked::Refused(Response {
                allow: true,
                ..Response::text("405 Method Not Allowed", "only GET /metrics")
            });
        }
    };
    // Prometheus may add URL parameters (`params` in a scrape config):
    // they change nothing here.
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Asked::Refused(Response {
            head_only: head,
            ..Response::text("404 Not Found", "not found: xlb serves /metrics only")
        });
    }
    Asked::Metrics { head }
}

async fn answer(mut stream: TcpStream, page: &Page, limits: &Limits) {
    let asked = match tokio::time::timeout(limits.read_timeout, read(&mut stream, limits)).await {
        Ok(Ok(a)) => a,
        // Gone or too slow: nobody to answer.
        Ok(Err(_)) | Err(_) => return,
    };
    let response = match asked {
        Asked::Metrics { head } => {
            let page = page.clone();
            let made = tokio::task::spawn_blocking(move || page())
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
            match made {
                Ok(body) => Response {
                    status: "200 OK",
                    content_type: CONTENT_TYPE,
                    body,
                    head_only: head,
                    allow: false,
                },
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "metrics: the page failed");
                    Response::text("500 Internal Server Error", &format!("{e:#}"))
                }
            }
        }
        Asked::Refused(r) => r,
        Asked::More => return,
    };
    let bytes = response.bytes();
    let _ = tokio::time::timeout(limits.write_timeout, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
}

/// Reads until the request head is complete or refused (or the peer
/// closes: `More`).
async fn read(stream: &mut TcpStream, limits: &Limits) -> std::io::Result<Asked> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let room = limits
            .max_request
            .saturating_sub(buf.len())
            .min(chunk.len());
        let n = stream.read(&mut chunk[..room.max(1)]).await?;
        if n == 0 {
            return Ok(Asked::More);
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf, limits) {
            Asked::More => {}
            done => return Ok(done),
        }
    }
}
