//! Durations, one syntax for every setting of every binary and for the CRD: hours, minutes,
//! seconds and milliseconds, each optional, in that order (`24h`, `10m`, `1h30m`, `45s`,
//! `500ms`, `1s500ms`). The CRD's pattern allows the first three only.

use std::time::Duration;

/// Parses `[<n>h][<n>m][<n>s][<n>ms]`, at least one part, each number at most six digits.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration like 24h, 10m, 1h30m, 45s or 500ms");
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut last_unit = 0; // 1 = h, 2 = m, 3 = s, 4 = ms: units must come in that order
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 || digits == rest.len() {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        let after = &rest[digits..];
        let (unit, part, len) = if after.starts_with("ms") {
            (4, Duration::from_millis(number), 2)
        } else {
            match after.as_bytes()[0] {
                b'h' => (1, Duration::from_secs(number * 3600), 1),
                b'm' => (2, Duration::from_secs(number * 60), 1),
                b's' => (3, Duration::from_secs(number), 1),
                _ => return Err(invalid()),
            }
        };
        if unit <= last_unit {
            return Err(invalid());
        }
        last_unit = unit;
        total += part;
        rest = &after[len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_combinations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_duration("1h2m3s4ms").unwrap(),
            Duration::from_millis(3_723_004)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in [
            "ms",
            "5msx",
            "1ms1s",
            "5 minutes",
            "soon",
            "1m ",
            "500 ms",
            "1ms1ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
