//! A std-only HTTP/1.1 client for the tests and the demo (one connection
//! per request, or a keep-alive connection), and a raw TCP probe.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};

use crate::netns::NetNs;

/// One `GET path` to `addr` from inside `ns` on a new connection
/// (`Connection: close`); returns (status, body).
pub fn http_get(
    ns: &NetNs,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    ns.in_ns(|| get_once(addr, path, timeout))
}

/// After this many consecutive failures [`http_get_many`] stops early.
pub const MAX_CONSECUTIVE_FAILURES: usize = 3;

/// `count` sequential [`http_get`]s (each on a new connection) in one
/// namespace thread; per-request results, in order. Stops early after
/// [`MAX_CONSECUTIVE_FAILURES`] consecutive failures (the remaining entries
/// are errors saying so), so a broken path costs a few timeouts, not `count`.
pub fn http_get_many(
    ns: &NetNs,
    addr: SocketAddr,
    path: &str,
    count: usize,
    timeout: Duration,
) -> Vec<anyhow::Result<(u16, String)>> {
    ns.in_ns(|| {
        let mut out = Vec::with_capacity(count);
        let mut failed_in_a_row = 0;
        for _ in 0..count {
            if failed_in_a_row >= MAX_CONSECUTIVE_FAILURES {
                out.push(Err(anyhow!(
                    "GET http://{addr}{path}: not sent, {MAX_CONSECUTIVE_FAILURES} requests in a row failed"
                )));
                continue;
            }
            let r = get_once(addr, path, timeout);
            failed_in_a_row = if r.is_ok() { 0 } else { failed_in_a_row + 1 };
            out.push(r);
        }
        out
    })
}

/// [`http_get_many`] where every request must succeed with 200: the
/// answers' bodies (trimmed: each backend answers its name), or the first
/// request that failed.
pub fn http_bodies(
    ns: &NetNs,
    addr: SocketAddr,
    path: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    http_get_many(ns, addr, path, count, timeout)
        .into_iter()
        .enumerate()
        .map(|(n, res)| {
            let (code, body) = res.map_err(|e| e.context(format!("request {n} to {addr}")))?;
            anyhow::ensure!(code == 200, "request {n} to {addr}: {code} {body:?}");
            Ok(body.trim().to_owned())
        })
        .collect()
}

/// One `GET path` from the calling thread's namespace.
pub(crate) fn get_once(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!("GET http://{addr}{path}: timed out after {timeout:?}"))
    };
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(remaining()?))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xlb-test\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .with_context(|| format!("send to {addr}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        s.set_read_timeout(Some(remaining()?))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if buf.is_empty() => {
                return Err(e).with_context(|| format!("read from {addr}"));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("read from {addr} after {} bytes", buf.len()));
            }
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    parse_response(&buf).with_context(|| format!("GET http://{addr}{path}"))
}

fn parse_response(buf: &[u8]) -> anyhow::Result<(u16, String)> {
    let (status, start, length) =
        head(buf)?.ok_or_else(|| anyhow!("incomplete response ({} bytes)", buf.len()))?;
    let mut body = &buf[start..];
    if let Some(len) = length {
        ensure!(
            body.len() >= len,
            "short body: {} of {len} bytes",
            body.len()
        );
        body = &body[..len];
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

/// The status, the length of the head and the Content-Length of the
/// response head at the start of `buf`; `None` while it is incomplete.
fn head(buf: &[u8]) -> anyhow::Result<Option<(u16, usize, Option<usize>)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let first_line = || {
        String::from_utf8_lossy(buf.split(|b| *b == b'\n').next().unwrap_or_default()).into_owned()
    };
    let end = match response
        .parse(buf)
        .with_context(|| format!("bad response head, starting {:?}", first_line()))?
    {
        httparse::Status::Complete(end) => end,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("no status code")?;
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| anyhow!("bad Content-Length {:?}", String::from_utf8_lossy(h.value)))
        })
        .transpose()?;
    Ok(Some((status, end, length)))
}

/// Proves `server_ns` answers TCP on `ip`: binds a listener there (ephemeral
/// port), connects from `client_ns`, and reads a greeting back.
pub fn tcp_probe(
    server_ns: &NetNs,
    client_ns: &NetNs,
    ip: IpAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let listener = server_ns
        .in_ns(|| TcpListener::bind(SocketAddr::new(ip, 0)))
        .with_context(|| format!("bind {ip} in {}", server_ns.name()))?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    std::thread::scope(|s| {
        let server = s.spawn(|| -> anyhow::Result<()> {
            loop {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false)?;
                        conn.set_write_timeout(Some(timeout))?;
                        conn.write_all(b"xlb-node\n")?;
                        return Ok(());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            bail!("no connection accepted on {addr} within {timeout:?}");
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        });
        let client = client_ns.in_ns(|| -> anyhow::Result<()> {
            let mut c = TcpStream::connect_timeout(&addr, timeout)
                .with_context(|| format!("connect to {addr}"))?;
            c.set_read_timeout(Some(timeout))?;
            let mut got = String::new();
            c.read_to_string(&mut got)
                .with_context(|| format!("read from {addr}"))?;
            ensure!(
                got == "xlb-node\n",
                "unexpected greeting {got:?} from {addr}"
            );
            Ok(())
        });
        let server = server
            .join()
            .map_err(|_| anyhow!("probe server panicked"))?;
        client.and(server)
    })
}

/// A keep-alive HTTP/1.1 connection: many requests on one TCP connection
/// (which therefore stays on one backend as long as the balancer keeps it).
#[derive(Debug)]
pub struct KeepAlive {
    stream: TcpStream,
    addr: SocketAddr,
    /// Received bytes not yet consumed by a response.
    buf: Vec<u8>,
}

impl KeepAlive {
    /// Connects to `addr` from inside `ns`; every later read and write is
    /// bounded by `timeout`.
    pub fn connect(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> anyhow::Result<KeepAlive> {
        let stream = ns
            .in_ns(|| TcpStream::connect_timeout(&addr, timeout))
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(KeepAlive {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    /// Like [`KeepAlive::connect`], from the client's port `local_port`
    /// (bound with `SO_REUSEADDR`): the same 5-tuple every time, as long
    /// as the previous connection on it ended with [`KeepAlive::reset`].
    pub fn connect_from(
        ns: &NetNs,
        addr: SocketAddr,
        local_port: u16,
        timeout: Duration,
    ) -> anyhow::Result<KeepAlive> {
        use socket2::{Domain, Socket, Type};
        let stream = ns
            .in_ns(|| -> std::io::Result<TcpStream> {
                let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                let any: IpAddr = if addr.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
                socket.bind(&SocketAddr::new(any, local_port).into())?;
                socket.connect_timeout(&addr.into(), timeout)?;
                Ok(socket.into())
            })
            .with_context(|| format!("connect to {addr} from port {local_port}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(KeepAlive {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    /// Closes with a RST (`SO_LINGER` 0): no TIME_WAIT on either side, so
    /// the same 5-tuple can connect again at once.
    pub fn reset(self) -> anyhow::Result<()> {
        socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO))?;
        drop(self.stream);
        Ok(())
    }

    /// The peer as the client's socket sees it.
    pub fn peer_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.stream.peer_addr()?)
    }

    /// The client's own address and port.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// `GET path` on this connection; returns (status, body).
    pub fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = self.addr;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xlb-test\r\nConnection: keep-alive\r\n\r\n"
        );
        self.stream
            .write_all(req.as_bytes())
            .with_context(|| format!("send to {addr}"))?;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((status, body, used)) =
                complete_response(&self.buf).with_context(|| format!("GET http://{addr}{path}"))?
            {
                self.buf.drain(..used);
                return Ok((status, body));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!(
                    "GET http://{addr}{path}: connection closed by the peer ({} bytes of response)",
                    self.buf.len()
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "GET http://{addr}{path}: read after {} bytes of response",
                            self.buf.len()
                        )
                    });
                }
            }
        }
    }
}

/// `Some((status, body, bytes used))` once `buf` holds a whole response
/// with a Content-Length; `None` while more is needed.
fn complete_response(buf: &[u8]) -> anyhow::Result<Option<(u16, String, usize)>> {
    let Some((status, start, length)) = head(buf)? else {
        return Ok(None);
    };
    let len = length.ok_or_else(|| anyhow!("keep-alive response without Content-Length"))?;
    let total = start + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = String::from_utf8_lossy(&buf[start..total]).into_owned();
    Ok(Some((status, body, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_response_honours_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 10\r\n\r\nbackend-1\nTRAILING";
        assert_eq!(
            parse_response(raw).unwrap(),
            (200, "backend-1\n".to_owned())
        );
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nback";
        assert!(parse_response(short).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn complete_response_waits_for_the_whole_body_and_says_what_it_used() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nbackend-2\n";
        let mut two = one.to_vec();
        two.extend_from_slice(b"HTTP/1.1 200");
        assert_eq!(
            complete_response(&two).unwrap(),
            Some((200, "backend-2\n".to_owned(), one.len()))
        );
        assert_eq!(complete_response(&one[..one.len() - 1]).unwrap(), None);
        assert_eq!(complete_response(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(complete_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
