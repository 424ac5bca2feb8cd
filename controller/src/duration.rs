//! Durations as the CRD writes them: `24h`, `10m`, `1h30m`, `45s` (see
//! [`crate::crd::DURATION_PATTERN`]). Config flags use the same parser as every other
//! binary's settings ([`vx11_service::parse_duration`], which also takes `500ms`).

use std::time::Duration;

/// Parses hours, minutes and seconds (and milliseconds), each optional, in that order; at
/// least one present.
pub fn parse(text: &str) -> Result<Duration, String> {
    vx11_service::parse_duration(text)
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
