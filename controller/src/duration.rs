//! Durations as the CRD writes them: `24h`, `10m`, `1h30m`, `45s` (see
//! [`crate::crd::DURATION_PATTERN`]). Config flags use the same form.

use std::time::Duration;

/// Parses hours, minutes and seconds, each optional, in that order; at least one present.
pub fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration like 24h, 10m, 1h30m or 45s");
    let mut rest = text;
    let mut seconds: u64 = 0;
    let mut last_unit = 0; // 1 = h, 2 = m, 3 = s: units must come in that order
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 || digits == rest.len() {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        let (unit, factor) = match rest.as_bytes()[digits] {
            b'h' => (1, 3600),
            b'm' => (2, 60),
            b's' => (3, 1),
            _ => return Err(invalid()),
        };
        if unit <= last_unit {
            return Err(invalid());
        }
        last_unit = unit;
        seconds += number * factor;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(seconds))
}

/// `chrono::Duration` for time arithmetic on timestamps.
pub fn parse_chrono(text: &str) -> Result<chrono::Duration, String> {
    let d = parse(text)?;
    chrono::Duration::from_std(d).map_err(|_| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse("1h2m3s").unwrap(), Duration::from_secs(3_723));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "", "h", "10", "10x", "1m1h", "1h1h", "-1s", "1.5h", "1d", " 1s", "1234567s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("1d").unwrap_err().contains("24h"));
    }
}
