//! One run of a check against one backend, bounded by the check's timeout.
//! Every way of failing becomes an [`Outcome`] whose `detail` says what was
//! seen, for the log line of a state change and for `xlb status`.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{net::TcpStream, time::Instant};

use super::{Outcome, http, icmp::Pinger};
use crate::config::{CheckConfig, CheckKind};

/// Runs `check` against `addr` once. Never takes (much) longer than
/// `check.timeout`; a timeout is a failure.
pub async fn run(check: &CheckConfig, addr: IpAddr, pinger: &Pinger) -> Outcome {
    let start = Instant::now();
    let deadline = start + check.timeout;
    let result = match check.kind {
        CheckKind::Icmp => icmp(addr, pinger, deadline, check.timeout).await,
        CheckKind::Tcp => tcp(SocketAddr::new(addr, check.port), deadline, check.timeout)
            .await
            .map(|_| "connected".to_owned()),
        CheckKind::Http | CheckKind::HttpContent => http(check, addr, deadline).await,
    };
    let (ok, detail) = match result {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    Outcome {
        ok,
        latency: start.elapsed(),
        detail,
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

async fn icmp(
    addr: IpAddr,
    pinger: &Pinger,
    deadline: Instant,
    timeout: Duration,
) -> Result<String, String> {
    match tokio::time::timeout_at(deadline, pinger.ping(addr)).await {
        Ok(Ok(())) => Ok("echo reply".to_owned()),
        Ok(Err(e)) => Err(format!("echo request failed: {e}")),
        Err(_) => Err(format!("no echo reply within {} ms", ms(timeout))),
    }
}

async fn tcp(addr: SocketAddr, deadline: Instant, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connect to {addr}: {e}")),
        Err(_) => Err(format!(
            "connect to {addr}: no answer within {} ms",
            ms(timeout)
        )),
    }
}

async fn http(check: &CheckConfig, addr: IpAddr, deadline: Instant) -> Result<String, String> {
    let target = SocketAddr::new(addr, check.port);
    let mut stream = tcp(target, deadline, check.timeout).await?;
    let host = check
        .host
        .clone()
        .unwrap_or_else(|| http::host_header(target));
    let raw =
        match tokio::time::timeout_at(deadline, http::exchange(&mut stream, &host, &check.path))
            .await
        {
            Ok(Ok(raw)) => raw,
            Ok(Err(e)) => return Err(format!("GET {}: {e}", check.path)),
            Err(_) => {
                return Err(format!(
                    "GET {}: connected, but no complete HTTP answer within {} ms",
                    check.path,
                    ms(check.timeout)
                ));
            }
        };
    let response = http::parse(&raw).map_err(|e| format!("GET {}: {e}", check.path))?;
    judge(check, &response)
}

/// Whether a response passes `check` (status, then body); the detail says why.
pub fn judge(check: &CheckConfig, response: &http::Response) -> Result<String, String> {
    let status = response.status;
    if !check.expect_status.contains(status) {
        return Err(format!("HTTP {status}, expected {}", check.expect_status));
    }
    match (&check.kind, &check.expect_body) {
        (CheckKind::HttpContent, Some(want)) => {
            if http::contains(&response.body, want.as_bytes()) {
                Ok(format!("HTTP {status}, body contains {want:?}"))
            } else {
                let seen: String = String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(40)
                    .collect();
                Err(format!(
                    "HTTP {status} but the body lacks {want:?} (body starts {seen:?})"
                ))
            }
        }
        _ => Ok(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusCodes;

    fn check(kind: CheckKind, body: Option<&str>) -> CheckConfig {
        CheckConfig {
            kind,
            port: 80,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            path: "/".into(),
            host: None,
            expect_status: StatusCodes::parse("200-299").unwrap(),
            expect_body: body.map(str::to_owned),
        }
    }

    fn resp(status: u16, body: &str) -> http::Response {
        http::Response {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn status_check_ignores_the_body_and_content_check_does_not() {
        let status_only = check(CheckKind::Http, None);
        let content = check(CheckKind::HttpContent, Some("backend-"));
        let wrong = resp(200, "maintenance page\n");
        assert_eq!(judge(&status_only, &wrong), Ok("HTTP 200".into()));
        let err = judge(&content, &wrong).unwrap_err();
        assert!(err.contains("lacks \"backend-\""), "{err}");
        assert!(judge(&content, &resp(200, "backend-1\n")).is_ok());
    }

    #[test]
    fn unexpected_status_fails_both() {
        for c in [
            check(CheckKind::Http, None),
            check(CheckKind::HttpContent, Some("backend-")),
        ] {
            assert_eq!(
                judge(&c, &resp(503, "backend-1")),
                Err("HTTP 503, expected 200-299".into())
            );
        }
    }

    /// Real sockets on loopback: refused, accepted-but-silent, answered.
    #[tokio::test]
    async fn loopback_servers() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let pinger = Pinger::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();

        // Refused: a port nobody listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = check(CheckKind::Tcp, None);
        c.port = port;
        let o = run(&c, lo, &pinger).await;
        assert!(!o.ok && o.detail.contains("refused"), "{o:?}");

        // Accepts and never answers: TCP up, HTTP down by timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        c.port = silent.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = silent.accept().await.unwrap();
                held.push(s);
            }
        });
        assert!(run(&c, lo, &pinger).await.ok);
        let mut h = check(CheckKind::Http, None);
        h.port = c.port;
        let o = run(&h, lo, &pinger).await;
        assert!(
            !o.ok && o.detail.contains("no complete HTTP answer"),
            "{o:?}"
        );
        assert!(o.latency >= h.timeout && o.latency < h.timeout * 2, "{o:?}");
        hold.abort();

        // Answers.
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        h.port = server.local_addr().unwrap().port();
        let serve = tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET / HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                .await
                .unwrap();
            // Keeps the connection open: Content-Length must end the read.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let o = run(&h, lo, &pinger).await;
        assert!(o.ok, "{o:?}");
        assert_eq!(o.detail, "HTTP 200");
        serve.abort();
    }
}
