//! What an agent's reply means, strictly. The reply is its first line
//! (up to LF, a CR before it dropped), which must hold exactly one token:
//!
//! - `N%`: N (0–100, an integer or a decimal such as `62.5`) is the
//!   weight percentage;
//! - `L`, a bare number (0–100): L is the load percentage, the weight
//!   percentage is 100 − L.
//!
//! Blanks around the token are allowed. Anything else (a sign, an
//! exponent, a second token, a value over 100, bytes that are not UTF-8, a
//! reply longer than [`MAX_REPLY`] bytes) is refused with the reason, and
//! the caller keeps the weight as it was.

/// Most bytes of a reply, its line ending included.
pub const MAX_REPLY: usize = 512;

/// Why a reply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply longer than {MAX_REPLY} bytes")]
    TooLong,
    #[error("reply is not UTF-8")]
    NotUtf8,
    #[error("empty reply")]
    Empty,
    #[error("more than one token in {0:?}")]
    ExtraText(String),
    #[error("{0:?} is not a number from 0 to 100 (optionally followed by %)")]
    NotANumber(String),
    #[error("{0:?} is more than 100")]
    OverHundred(String),
}

/// What a reply said, as a weight percentage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reply {
    /// The weight percentage it asks for, 0–100 (rounded to the nearest
    /// integer, halves up).
    pub percent: u8,
}

/// Parses a reply (every byte the agent sent, or the body of its HTTP
/// answer).
pub fn parse(bytes: &[u8]) -> Result<Reply, ReplyError> {
    if bytes.len() > MAX_REPLY {
        return Err(ReplyError::TooLong);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ReplyError::NotUtf8)?;
    let line = text.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut tokens = line.split([' ', '\t']).filter(|t| !t.is_empty());
    let token = tokens.next().ok_or(ReplyError::Empty)?;
    if tokens.next().is_some() {
        return Err(ReplyError::ExtraText(line.trim().to_owned()));
    }
    let (number, weight) = match token.strip_suffix('%') {
        Some(n) => (n, true),
        None => (token, false),
    };
    let hundredths = hundredths(number).ok_or_else(|| ReplyError::NotANumber(token.to_owned()))?;
    if hundredths > 10_000 {
        return Err(ReplyError::OverHundred(token.to_owned()));
    }
    let weight_hundredths = if weight {
        hundredths
    } else {
        10_000 - hundredths
    };
    // At most 10,000 hundredths: the rounded percent fits a u8.
    Ok(Reply {
        percent: u8::try_from((weight_hundredths + 50) / 100).unwrap_or(100),
    })
}

/// `digits` or `digits.digits` in hundredths (more decimals are cut off
/// after the second); `None` for anything else, or a value far above 100.
fn hundredths(s: &str) -> Option<u64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    // Leading zeros are fine; more than 6 significant digits is over 100
    // anyway (and would overflow below).
    let int = int.trim_start_matches('0');
    if int.len() > 6 {
        return Some(u64::MAX);
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: u64 = match frac {
        None => 0,
        Some(f) => {
            let two: String = f.chars().chain(std::iter::repeat('0')).take(2).collect();
            two.parse().ok()?
        }
    };
    Some(whole * 100 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &[u8]) -> Result<u8, ReplyError> {
        parse(s).map(|r| r.percent)
    }

    #[test]
    fn a_percent_sign_is_a_weight_and_a_bare_number_a_load() {
        assert_eq!(pct(b"75%"), Ok(75));
        assert_eq!(pct(b"25"), Ok(75), "load 25 % leaves 75 % of the weight");
        assert_eq!(pct(b"25%"), Ok(25));
        assert_eq!(pct(b"75"), Ok(25));
        assert_eq!(pct(b"0%"), Ok(0));
        assert_eq!(pct(b"100%"), Ok(100));
        assert_eq!(pct(b"0"), Ok(100));
        assert_eq!(pct(b"100"), Ok(0));
    }

    #[test]
    fn decimals_round_to_the_nearest_percent() {
        assert_eq!(pct(b"62.5%"), Ok(63));
        assert_eq!(pct(b"62.49%"), Ok(62));
        assert_eq!(pct(b"62.499%"), Ok(62), "digits after the second are cut");
        assert_eq!(pct(b"0.4%"), Ok(0));
        assert_eq!(pct(b"100.0%"), Ok(100));
        assert_eq!(pct(b"12.5"), Ok(88), "load 12.5: weight 87.5, rounded up");
        assert_eq!(pct(b"007%"), Ok(7));
    }

    #[test]
    fn blanks_and_line_endings_around_the_token_are_allowed() {
        for ok in [
            &b"50%\n"[..],
            b"50%\r\n",
            b"  50%  \r\n",
            b"\t50%",
            b"50%\nanything on later lines",
        ] {
            assert_eq!(pct(ok), Ok(50), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn everything_else_is_refused_with_the_reason() {
        use ReplyError::*;
        let cases: [(&[u8], ReplyError); 16] = [
            (b"", Empty),
            (b"\r\n", Empty),
            (b"   \n50%", Empty),
            (b"-5%", NotANumber("-5%".into())),
            (b"-5", NotANumber("-5".into())),
            (b"+5", NotANumber("+5".into())),
            (b"101%", OverHundred("101%".into())),
            (b"100.01", OverHundred("100.01".into())),
            (
                b"99999999999999999999%",
                OverHundred("99999999999999999999%".into()),
            ),
            (b"1e2", NotANumber("1e2".into())),
            (b".5%", NotANumber(".5%".into())),
            (b"5.%", NotANumber("5.%".into())),
            (b"%", NotANumber("%".into())),
            (b"50%%", NotANumber("50%%".into())),
            (b"up 75%", ExtraText("up 75%".into())),
            (b"\xff\xfe50%", NotUtf8),
        ];
        for (input, want) in cases {
            assert_eq!(
                pct(input),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_reply_over_the_bound_is_refused_whatever_it_says() {
        let mut long = b"50%".to_vec();
        long.resize(MAX_REPLY, b' ');
        assert_eq!(pct(&long), Ok(50), "exactly the bound is fine");
        long.push(b' ');
        assert_eq!(pct(&long), Err(ReplyError::TooLong));
    }
}
