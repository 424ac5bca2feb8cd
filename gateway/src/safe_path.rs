//! Module paths a backend could read as another path. The gateway forwards a path as it
//! came (it never normalises), so a path is refused (400 `unsafe_path`) when any decoding of
//! it a backend or a library might do could climb out of `/<module>/api/` or split a
//! segment differently than the gateway sees it:
//!
//! - a dot-segment, `.` or `..`, also before `;` parameters (`..;x`, which servlet-style
//!   servers read as `..`);
//! - an encoded slash or backslash (`%2f`, `%5c`), a backslash, NUL or any other control
//!   character;
//! - any of those after percent-decoding once, twice or three times (`%2e%2e`,
//!   `%252e%252e`, `%25252f`), and anything still encoded after three rounds;
//! - bytes that are not UTF-8 once decoded (overlong forms such as `%c0%ae` decode to `.`
//!   in some decoders).
//!
//! An encoded dot inside a name (`a%2ejson`) is fine: only whole dot-segments climb.

use std::borrow::Cow;

/// Rounds of percent-decoding looked through: a backend decodes once, a library behind it
/// may again; no legitimate API path nests encodings deeper.
const DECODE_ROUNDS: usize = 3;

/// `path` could mean another path to something behind the gateway.
pub fn is_unsafe(path: &str) -> bool {
    !plainly_safe(path.as_bytes()) && climbs_or_splits(path)
}

/// One pass that clears most paths: nothing encoded, no backslash or control character,
/// and no segment that starts with a dot (so no dot-segment). Such a path decodes to
/// itself, and none of the forms below is in it.
fn plainly_safe(path: &[u8]) -> bool {
    let mut after_slash = true;
    for &b in path {
        if b == b'%' || b == b'\\' || b.is_ascii_control() || (b == b'.' && after_slash) {
            return false;
        }
        after_slash = b == b'/';
    }
    true
}

/// The whole check, through every round of decoding.
fn climbs_or_splits(path: &str) -> bool {
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(path.as_bytes());
    for _ in 0..=DECODE_ROUNDS {
        if has_unsafe_form(&current) {
            return true;
        }
        match percent_decoded(&current) {
            Some(decoded) => current = Cow::Owned(decoded),
            None => return false,
        }
    }
    true
}

fn has_unsafe_form(path: &[u8]) -> bool {
    path.iter().any(|&b| b == b'\\' || b.is_ascii_control())
        || std::str::from_utf8(path).is_err()
        || contains_ignoring_case(path, b"%2f")
        || contains_ignoring_case(path, b"%5c")
        || path.split(|&b| b == b'/').any(is_dot_segment)
}

/// `.` or `..`, with or without `;` parameters after it.
fn is_dot_segment(segment: &[u8]) -> bool {
    let name = segment.split(|&b| b == b';').next().unwrap_or(segment);
    name == b"." || name == b".."
}

fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// `path` with every `%XX` decoded, or `None` when it has none.
fn percent_decoded(path: &[u8]) -> Option<Vec<u8>> {
    if !path.contains(&b'%') {
        return None;
    }
    let mut decoded = Vec::with_capacity(path.len());
    let mut changed = false;
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%'
            && let (Some(high), Some(low)) = (
                path.get(i + 1).and_then(|&b| hex(b)),
                path.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            decoded.push(high << 4 | low);
            changed = true;
            i += 3;
        } else {
            decoded.push(path[i]);
            i += 1;
        }
    }
    changed.then_some(decoded)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::{climbs_or_splits, is_unsafe, plainly_safe};

    #[test]
    fn climbing_and_splitting_paths_are_unsafe() {
        for path in [
            "/operator/api/../x",
            "/operator/api/./x",
            "/operator/api/..",
            "/operator/api/.",
            "/operator/api/%2e%2e/x",
            "/operator/api/%2E%2E/x",
            "/operator/api/.%2e/x",
            "/operator/api/%2E/x",
            "/operator/api/%252e%252e/x",
            "/operator/api/%25252e%25252e/x",
            "/operator/api/%2525252e/x",
            "/operator/api/a%2fb",
            "/operator/api/a%2Fb",
            "/operator/api/a%252fb",
            "/operator/api/a%5cb",
            "/operator/api/a%5Cb",
            "/operator/api/..%5cx",
            "/operator/api/a\\b",
            "/operator/api/..;/x",
            "/operator/api/..;jsessionid=1/x",
            "/operator/api/.;x/y",
            "/operator/api/%2e%2e;x/y",
            "/operator/api/a%00b",
            "/operator/api/a%2500b",
            "/operator/api/a%0ab",
            "/operator/api/a%0db",
            "/operator/api/%c0%ae%c0%ae/x",
            "/operator/api/%ff",
            "/operator/api/%%32%65%%32%65/x",
        ] {
            assert!(is_unsafe(path), "{path} passed");
        }
    }

    #[test]
    fn the_one_pass_clears_only_what_the_whole_check_clears() {
        let pieces = [
            "/", ".", "..", "%", "%2", "%2e", "%2E", "%2f", "%5c", "%25", "\\", ";", ";x", "a",
            "api", "json", ".json", "x.", "\0", "\x7f", "é", "%c0%ae", "//",
        ];
        let mut checked = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let path = format!("/operator/api{a}{b}{c}");
                    if plainly_safe(path.as_bytes()) {
                        assert!(!climbs_or_splits(&path), "{path:?} cleared in one pass");
                        checked += 1;
                    }
                    let bare = format!("{a}{b}{c}");
                    if plainly_safe(bare.as_bytes()) {
                        assert!(!climbs_or_splits(&bare), "{bare:?} cleared in one pass");
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked} paths cleared in one pass");
        assert!(plainly_safe(b"/operator/api/health"));
        assert!(plainly_safe(b"/operator/api/a.json/x./y"));
        assert!(!plainly_safe(b"/operator/api/.well-known"));
        assert!(!plainly_safe(b"./operator"));
    }

    #[test]
    fn ordinary_paths_are_safe() {
        for path in [
            "/operator/api",
            "/operator/api/",
            "/operator/api/events/stream",
            "/operator/api/a.b/c",
            "/operator/api/...",
            "/operator/api/..x",
            "/operator/api/x..",
            "/operator/api/a%2ejson",
            "/operator/api/a%20b",
            "/operator/api/caf%C3%A9",
            "/operator/api/100%",
            "/operator/api/%zz",
            "/operator/api/a;b=c",
            "/operator/api//x",
        ] {
            assert!(!is_unsafe(path), "{path} refused");
        }
    }
}
