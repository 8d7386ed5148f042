//! A minimal HTTP/1.0 client for checks: one GET on a new connection, the
//! response read until the server closes it, `Content-Length` is reached,
//! the head turns out not to be HTTP, or [`MAX_RESPONSE`] bytes. HTTP/1.0
//! so that servers answer without chunked encoding and close the
//! connection after the response. The status line and headers are parsed
//! by `httparse`, leniently: a check judges the status and the body, not
//! the server's header style.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Most bytes of a response read (head and body); a content match looks at
/// the body within this limit only, and a head not complete within it fails.
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
    #[error("HTTP header not complete within {MAX_RESPONSE} bytes")]
    HeadTooLarge,
    #[error("bad status line {0:?}")]
    BadStatusLine(String),
    #[error("malformed HTTP header: {0}")]
    BadHeader(httparse::Error),
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

/// What the head of a response says.
struct Head {
    status: u16,
    /// Bytes of the head, the blank line included: where the body starts.
    len: usize,
    content_length: Option<usize>,
}

/// Parses the head at the start of `buf`. `Ok(None)`: need more bytes.
fn head(buf: &[u8]) -> Result<Option<Head>, ParseError> {
    // Room for the usual few headers; more only for a server that sends
    // more (each header takes a line of at least two bytes).
    let mut room = 32;
    loop {
        let mut headers = vec![httparse::EMPTY_HEADER; room];
        match parse_head(buf, &mut headers) {
            Err(ParseError::BadHeader(httparse::Error::TooManyHeaders)) if room < buf.len() => {
                room *= 4;
            }
            r => return r,
        }
    }
}

fn parse_head<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<Head>, ParseError> {
    let mut response = httparse::Response::new(headers);
    let parsed = httparse::ParserConfig::default()
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .ignore_invalid_headers_in_responses(true)
        .parse_response(&mut response, buf);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE => {
            return Err(ParseError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version | httparse::Error::Status) => {
            return Err(bad_status_line(buf));
        }
        Err(e) => return Err(ParseError::BadHeader(e)),
    };
    let status = response
        .code
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| bad_status_line(buf))?;
    // The first one that parses, as before httparse.
    let content_length = response
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .find_map(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
    Ok(Some(Head {
        status,
        len,
        content_length,
    }))
}

fn bad_status_line(buf: &[u8]) -> ParseError {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    ParseError::BadStatusLine(line.trim_end_matches('\r').chars().take(80).collect())
}

/// Parses a complete response (everything the server sent).
pub fn parse(buf: &[u8]) -> Result<Response, ParseError> {
    if buf.is_empty() {
        return Err(ParseError::Empty);
    }
    let head = head(buf)?.ok_or(ParseError::Incomplete(buf.len()))?;
    let mut body = &buf[head.len..];
    if let Some(n) = head.content_length {
        body = &body[..n.min(body.len())];
    }
    Ok(Response {
        status: head.status,
        body: body.to_vec(),
    })
}

/// How far a response being read has got, to tell when it is complete
/// without parsing the head again on every read (which would make reading
/// a head that arrives in many small pieces quadratic).
#[derive(Default)]
struct Progress {
    /// Whether the status line has ended.
    first_line: bool,
    /// Once the head is parsed: where the body ends per `Content-Length`
    /// (`None` without one: only the close ends it).
    body_end: Option<Option<usize>>,
}

impl Progress {
    /// `buf` is everything read so far, its last `new` bytes just now. True
    /// once `buf` holds the whole response, as far as we can tell without
    /// waiting for the close: the head and `Content-Length` bytes of body,
    /// or the read limit; or a head that no more bytes can make valid.
    fn complete(&mut self, buf: &[u8], new: usize) -> bool {
        if buf.len() >= MAX_RESPONSE {
            return true;
        }
        if let Some(end) = self.body_end {
            return end.is_some_and(|end| buf.len() >= end);
        }
        let start = buf.len() - new;
        // The new bytes and the two before them: a blank line may straddle.
        let fresh = &buf[start.saturating_sub(2)..];
        let line_ended = !self.first_line && fresh.contains(&b'\n');
        self.first_line |= line_ended;
        // The head can change its verdict only in its first bytes (is it
        // HTTP at all), when the status line ends, or at the blank line.
        let blank_line =
            fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n");
        if !(start == 0 || line_ended || blank_line) {
            return false;
        }
        match head(buf) {
            Ok(None) => false,
            Ok(Some(h)) => {
                let end = h.content_length.map(|n| h.len + n);
                self.body_end = Some(end);
                end.is_some_and(|end| buf.len() >= end)
            }
            Err(_) => true,
        }
    }
}

/// Sends the request on a connected stream and reads the response. No
/// timeout here: the caller bounds the whole check.
pub async fn exchange(stream: &mut TcpStream, host: &str, path: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(request(host, path).as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    let mut progress = Progress::default();
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let take = n.min(MAX_RESPONSE - buf.len());
        buf.extend_from_slice(&chunk[..take]);
        if progress.complete(&buf, take) {
            break;
        }
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

    /// Whether `buf`, read in one piece, is a complete response.
    fn complete(buf: &[u8]) -> bool {
        Progress::default().complete(buf, buf.len())
    }

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
    fn a_head_larger_than_the_limit_is_a_clear_failure() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() < MAX_RESPONSE {
            big.extend_from_slice(b"X-Filler: 0123456789abcdef0123456789abcdef\r\n");
        }
        big.truncate(MAX_RESPONSE);
        assert!(complete(&big));
        assert_eq!(parse(&big), Err(ParseError::HeadTooLarge));
        // Still within the limit, it is only incomplete so far.
        assert!(!complete(&big[..MAX_RESPONSE - 1]));
    }

    #[test]
    fn a_non_http_answer_is_refused_without_waiting_for_more() {
        for garbage in [
            &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"220 smtp.example ESMTP\r\n",
            b"HTTP/1.1 OK 200\r\n\r\n",
        ] {
            assert!(complete(garbage), "{garbage:?}");
            assert!(
                matches!(parse(garbage), Err(ParseError::BadStatusLine(_))),
                "{garbage:?}: {:?}",
                parse(garbage)
            );
        }
        assert_eq!(
            parse(b"SSH-2.0-OpenSSH_9.6\r\n"),
            Err(ParseError::BadStatusLine("SSH-2.0-OpenSSH_9.6".into()))
        );
        // A bad header line is skipped, as a lenient reader would.
        let r =
            parse(b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 2\r\n\r\nokay").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }

    #[test]
    fn a_response_read_byte_by_byte_completes_at_its_last_byte() {
        let full = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 10\r\n\r\nbackend-1\n";
        let mut progress = Progress::default();
        for n in 1..full.len() {
            assert!(
                !progress.complete(&full[..n], 1),
                "complete after {n} bytes"
            );
            assert!(!complete(&full[..n]), "complete in one piece of {n} bytes");
        }
        assert!(progress.complete(full, 1));
        // Garbage is seen in the first byte, or when the first line ends.
        assert!(Progress::default().complete(b"S", 1));
        let mut progress = Progress::default();
        assert!(!progress.complete(b"HTTP/1.1 2", 10));
        assert!(!progress.complete(b"HTTP/1.1 2000 OK", 6));
        assert!(progress.complete(b"HTTP/1.1 2000 OK\r\n", 2));
    }

    /// Serves one connection on loopback: reads the request, writes
    /// `pieces` with `gap` between them, then holds the connection open
    /// until the client closes it (so only the client can end the read).
    async fn serve(pieces: Vec<Vec<u8>>, gap: std::time::Duration) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            conn.set_nodelay(true).unwrap();
            let mut req = Vec::new();
            let mut chunk = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&chunk[..n]),
                }
            }
            for p in pieces {
                if conn.write_all(&p).await.is_err() {
                    return;
                }
                if !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
            }
            while matches!(conn.read(&mut chunk).await, Ok(n) if n > 0) {}
        });
        addr
    }

    async fn fetch(addr: SocketAddr) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            exchange(&mut stream, "test", "/"),
        )
        .await
        .expect("the read ends before the server closes")
        .unwrap()
    }

    #[tokio::test]
    async fn a_response_split_across_many_reads_is_read_to_its_length() {
        let full = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 10\r\n\r\nbackend-1\n";
        let pieces = full.chunks(3).map(<[u8]>::to_vec).collect();
        let addr = serve(pieces, std::time::Duration::from_millis(2)).await;
        let raw = fetch(addr).await;
        assert_eq!(raw, full.to_vec());
        let r = parse(&raw).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"backend-1\n"[..]));
    }

    #[tokio::test]
    async fn an_endless_head_stops_the_read_at_the_limit() {
        let mut pieces = vec![b"HTTP/1.1 200 OK\r\n".to_vec()];
        pieces
            .extend((0..3000).map(|i| format!("X-Filler-{i}: 0123456789abcdef\r\n").into_bytes()));
        let addr = serve(pieces, std::time::Duration::ZERO).await;
        let raw = fetch(addr).await;
        assert_eq!(raw.len(), MAX_RESPONSE);
        assert_eq!(parse(&raw), Err(ParseError::HeadTooLarge));
    }

    #[tokio::test]
    async fn a_non_http_server_fails_the_check_without_a_timeout() {
        let addr = serve(
            vec![b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()],
            std::time::Duration::ZERO,
        )
        .await;
        let raw = fetch(addr).await;
        assert_eq!(
            parse(&raw),
            Err(ParseError::BadStatusLine("SSH-2.0-OpenSSH_9.6".into()))
        );
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
