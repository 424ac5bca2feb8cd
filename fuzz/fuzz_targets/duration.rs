//! Durations (`vx11_service::parse_duration`, every setting and the CRD): never panics;
//! what parses is written back in canonical form and parses to the same duration.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vx11_service::parse_duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(duration) = parse_duration(text) else {
        return;
    };
    // At most 999999 of each unit.
    assert!(duration <= Duration::from_millis(999_999 * (3_600_000 + 60_000 + 1_000 + 1)));
    if let Some(canonical) = canonical(duration) {
        assert_eq!(
            parse_duration(&canonical),
            Ok(duration),
            "{text} -> {canonical}"
        );
    }
});

/// `1h2m3s4ms`, the zero parts left out (`0s` for zero); `None` past 999999 hours.
fn canonical(d: Duration) -> Option<String> {
    let ms = d.as_millis();
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 999_999 {
        return None;
    }
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    Some(if out.is_empty() { "0s".into() } else { out })
}
