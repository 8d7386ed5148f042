//! `agent_reply`: the agent reply parser (`lb_user::feedback::reply`).

use lb_user::feedback::reply::{self, MAX_REPLY, Reply, ReplyError};

/// `digits` or `digits.digits`, the grammar the docs give for a number.
fn is_number(s: &str) -> bool {
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('.') {
        Some((i, f)) => digits(i) && digits(f),
        None => digits(s),
    }
}

/// The value of a number of that grammar in hundredths, decimals after
/// the second cut off; `None` when it is above 100 (10,000 hundredths).
fn hundredths_up_to_100(s: &str) -> Option<u32> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let int = int.trim_start_matches('0');
    if int.len() > 3 {
        return None;
    }
    let whole: u32 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    let h = whole * 100 + frac.parse::<u32>().ok()?;
    (h <= 10_000).then_some(h)
}

pub fn agent_reply(data: &[u8]) {
    let got = reply::parse(data);
    assert_eq!(got, reply::parse(data), "the same reply twice");
    if data.len() > MAX_REPLY {
        assert_eq!(got, Err(ReplyError::TooLong));
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        assert_eq!(got, Err(ReplyError::NotUtf8));
        return;
    };
    let line = text.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    let tokens: Vec<&str> = line.split([' ', '\t']).filter(|t| !t.is_empty()).collect();
    match (&got, tokens.as_slice()) {
        (Err(ReplyError::Empty), []) => {}
        (Err(ReplyError::ExtraText(t)), [_, _, ..]) => assert_eq!(t, line.trim()),
        (Err(ReplyError::NotANumber(t)), [token]) => {
            assert_eq!(t, token);
            assert!(!is_number(token.strip_suffix('%').unwrap_or(token)));
        }
        (Err(ReplyError::OverHundred(t)), [token]) => {
            assert_eq!(t, token);
            let n = token.strip_suffix('%').unwrap_or(token);
            assert!(is_number(n) && hundredths_up_to_100(n).is_none());
        }
        (Ok(Reply { percent }), [token]) => {
            assert!(*percent <= 100, "percent {percent} over 100");
            let (n, is_weight) = match token.strip_suffix('%') {
                Some(n) => (n, true),
                None => (*token, false),
            };
            assert!(is_number(n), "{token:?} accepted");
            let h = hundredths_up_to_100(n).expect("accepted, so at most 100");
            let weight = if is_weight { h } else { 10_000 - h };
            // Rounded to the nearest integer, halves up.
            assert_eq!(u32::from(*percent), (weight + 50) / 100, "{token:?}");
            // The same number as the other kind: weight and load add up to
            // 100, or 101 when both round a half up.
            let other = if is_weight {
                n.to_owned()
            } else {
                format!("{n}%")
            };
            // The `%` can make it one byte too long (a finding): then that
            // is the reason it is refused.
            match reply::parse(other.as_bytes()) {
                Err(reply::ReplyError::TooLong) if other.len() > reply::MAX_REPLY => {}
                r => {
                    let p = r.expect("the other kind of the same number").percent;
                    let sum = u32::from(*percent) + u32::from(p);
                    assert!(
                        sum == 100 || (sum == 101 && h % 100 == 50),
                        "{token:?}: {sum}"
                    );
                }
            }
            // Later lines are not looked at.
            let mut longer = data.to_vec();
            if !text.contains('\n') {
                longer.push(b'\n');
            }
            longer.extend_from_slice(b"9 9 x");
            if longer.len() <= MAX_REPLY {
                assert_eq!(
                    reply::parse(&longer),
                    got,
                    "a later line changed the verdict"
                );
            }
        }
        (got, tokens) => panic!("{got:?} for tokens {tokens:?}"),
    }
}
