//! `http_response`: the health checks' HTTP response parser and the
//! content match (`lb_user::health::http`).

use lb_user::health::http::{self, MAX_RESPONSE, ParseError};

use crate::input::Input;

/// How many bytes of empty lines come before the status line: httparse
/// ignores them (as RFC 9112 section 2.2 allows before a request line).
fn empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        if buf[at..].starts_with(b"\r\n") {
            at += 2;
        } else if buf[at..].starts_with(b"\n") {
            at += 1;
        } else {
            return at;
        }
    }
}

/// Where the body starts: after the first blank line (CRLF or bare LF)
/// after the status line, which ends the head.
fn body_start(buf: &[u8]) -> Option<usize> {
    let skip = empty_lines(buf);
    let buf = &buf[skip..];
    (0..buf.len())
        .find_map(|i| {
            let rest = &buf[i..];
            if rest.starts_with(b"\n\n") {
                Some(i + 2)
            } else if rest.starts_with(b"\n\r\n") {
                Some(i + 3)
            } else {
                None
            }
        })
        .map(|at| skip + at)
}

/// Substring search written the slow, obvious way.
fn naive_contains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.len() > haystack.len() {
        return needle.is_empty();
    }
    (0..=haystack.len() - needle.len()).any(|i| {
        needle
            .iter()
            .enumerate()
            .all(|(j, b)| haystack[i + j] == *b)
    })
}

/// Input: a needle length (0..16), the needle, then everything the server
/// sent.
pub fn http_response(data: &[u8]) {
    let mut input = Input::new(data);
    let n = usize::from(input.byte() % 16);
    let needle = input.take(n);
    let buf = input.rest();
    let got = http::parse(buf);
    assert_eq!(got, http::parse(buf), "the same response twice");
    match &got {
        Err(ParseError::Empty) => assert!(buf.is_empty()),
        Err(ParseError::Incomplete(n)) => {
            assert_eq!(*n, buf.len());
            assert!(buf.len() < MAX_RESPONSE && body_start(buf).is_none());
        }
        Err(ParseError::HeadTooLarge) => assert!(buf.len() >= MAX_RESPONSE),
        Err(ParseError::BadStatusLine(line)) => {
            assert!(
                line.chars().count() <= 80 && !line.contains('\n'),
                "{line:?}"
            );
        }
        Err(ParseError::BadHeader(_)) => assert!(!buf.is_empty()),
        Ok(r) => {
            assert!((100..=599).contains(&r.status), "status {}", r.status);
            let start = body_start(buf).expect("a complete head ends with a blank line");
            assert!(
                buf[start..].starts_with(&r.body),
                "the body is not what follows the head"
            );
            // The status line's code is the status.
            let line = buf[empty_lines(buf)..]
                .split(|b| *b == b'\n')
                .next()
                .unwrap_or_default();
            let code = String::from_utf8_lossy(line).to_string();
            assert!(
                code.split_whitespace()
                    .nth(1)
                    .is_some_and(|c| c.parse() == Ok(r.status)),
                "status {} from {code:?}",
                r.status
            );
            // The content match, against the body.
            assert_eq!(
                http::contains(&r.body, needle),
                naive_contains(&r.body, needle)
            );
            if !r.body.is_empty() {
                let a = usize::from(needle.first().copied().unwrap_or(0)) % r.body.len();
                let b = a + (n % (r.body.len() - a + 1));
                assert!(http::contains(&r.body, &r.body[a..b]));
            }
        }
    }
    assert_eq!(http::contains(buf, needle), naive_contains(buf, needle));
    assert!(http::contains(buf, b""));
}
