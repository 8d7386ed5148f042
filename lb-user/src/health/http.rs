//! A minimal HTTP/1.0 client for checks: one GET on a new connection, the
//! response read until the server closes it, `Content-Length` is reached,
//! or [`MAX_RESPONSE`] bytes. HTTP/1.0 so that servers answer without
//! chunked encoding and close the connection after the response.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Most bytes of a response read (head and body); a content match looks at
/// the body within this limit only.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no HTTP answer (connection closed before any byte)")]
    Empty,
    #[error("incomplete HTTP header ({0} bytes)")]
    Incomplete(usize),
    #[error("bad status line {0:?}")]
    BadStatusLine(String),
}

/// The request line and headers of a check.
pub fn request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: xlb-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// The `Host` header value for `addr` (IPv6 in brackets; port if not 80).
pub fn host_header(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    };
    if addr.port() == 80 {
        ip
    } else {
        format!("{ip}:{}", addr.port())
    }
}

/// Where the head ends and how long the body is, once the head is complete.
/// `Ok(None)`: need more bytes.
fn head(buf: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>, ParseError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let status = match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") && code.len() == 3 => code.parse().ok(),
        _ => None,
    }
    .filter(|c| (100..=599).contains(c))
    .ok_or_else(|| ParseError::BadStatusLine(status_line.chars().take(80).collect()))?;
    let length = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    });
    Ok(Some((status, end + 4, length)))
}

/// Parses a complete response (everything the server sent).
pub fn parse(buf: &[u8]) -> Result<Response, ParseError> {
    if buf.is_empty() {
        return Err(ParseError::Empty);
    }
    let (status, start, length) = head(buf)?.ok_or(ParseError::Incomplete(buf.len()))?;
    let mut body = &buf[start..];
    if let Some(n) = length {
        body = &body[..n.min(body.len())];
    }
    Ok(Response {
        status,
        body: body.to_vec(),
    })
}

/// True once `buf` holds the whole response, as far as we can tell without
/// waiting for the close: the head and `Content-Length` bytes of body, or
/// the read limit.
fn complete(buf: &[u8]) -> bool {
    if buf.len() >= MAX_RESPONSE {
        return true;
    }
    matches!(head(buf), Ok(Some((_, start, Some(n)))) if buf.len() >= start + n)
}

/// Sends the request on a connected stream and reads the response. No
/// timeout here: the caller bounds the whole check.
pub async fn exchange(stream: &mut TcpStream, host: &str, path: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(request(host, path).as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    while !complete(&buf) {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let take = n.min(MAX_RESPONSE - buf.len());
        buf.extend_from_slice(&chunk[..take]);
    }
    Ok(buf)
}

/// True if `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body_by_content_length() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nbackend-1\nEXTRA").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"backend-1\n"[..]));
    }

    #[test]
    fn body_without_length_runs_to_the_end() {
        let r = parse(b"HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n\r\ndown").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, &b"down"[..]));
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-LENGTH:  2\r\n\r\nokay").unwrap();
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n"),
            Err(ParseError::Incomplete(17))
        );
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ParseError::BadStatusLine(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Err(ParseError::BadStatusLine(_))
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 099 Low\r\n\r\n"),
            Err(ParseError::BadStatusLine(_))
        ));
    }

    #[test]
    fn completeness_follows_content_length() {
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd"
        ));
        // Without a length only the close (or the limit) ends it.
        assert!(!complete(b"HTTP/1.1 200 OK\r\n\r\nabcd"));
        assert!(complete(&vec![b'x'; MAX_RESPONSE]));
    }

    #[test]
    fn request_and_host_header() {
        let r = request("example.test", "/health?x=1");
        assert!(r.starts_with("GET /health?x=1 HTTP/1.0\r\nHost: example.test\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        assert_eq!(
            host_header("198.18.0.11:80".parse().unwrap()),
            "198.18.0.11"
        );
        assert_eq!(
            host_header("[fd00:18::11]:8080".parse().unwrap()),
            "[fd00:18::11]:8080"
        );
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"hello backend-1", b"backend-"));
        assert!(!contains(b"hello", b"backend"));
        assert!(!contains(b"ba", b"backend"));
    }
}
