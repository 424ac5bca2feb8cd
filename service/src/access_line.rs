//! One access-log line, written straight to stderr as JSON in the shape of the `tracing`
//! lines around it (`timestamp`, `level`, `message`, the fields, `target: "access"`).
//!
//! It is written by hand because it is written once per request: through
//! `tracing-subscriber`'s JSON formatter the line cost ~6 µs, a tenth of the gateway's CPU
//! per proxied request; this costs well under 1 µs. `RUST_LOG` still decides whether it is
//! written (`tracing::enabled!` on the `access` target), so `RUST_LOG=warn` or
//! `RUST_LOG=info,access=off` turn it off.
//!
//! A thread that answers many requests (a gateway worker) keeps its lines and writes them
//! together, whenever it goes idle or has 4 KiB of them ([`keep_access_lines`]): one
//! `write` per line was a fifth of the gateway's system calls per proxied request.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::DateTime;

use vx11_tokenset::Fingerprint;

/// What one line says.
#[derive(Debug)]
pub struct AccessLine<'a> {
    pub method: &'a str,
    /// Already redacted ([`vx11_tokenset::redact_uri`]).
    pub uri: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency_ms: f64,
    /// The fingerprint and name of the token that passed, if one did.
    pub token: Option<(&'a Fingerprint, &'a str)>,
}

/// Whether `RUST_LOG` lets access lines through.
pub fn access_log_enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

impl AccessLine<'_> {
    /// Writes the line to stderr in one `write`, so lines from several threads never mix
    /// (up to `PIPE_BUF`, 4 KiB, on a pipe; any length on a file).
    pub fn write_to_stderr(&self) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            self.encode(SystemTime::now(), line);
            PENDING.with_borrow_mut(|pending| match pending {
                Some(pending) => pending.add(line),
                None => write_stderr(line),
            });
        });
    }

    /// The JSON line, ending in `\n`.
    pub fn encode(&self, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
        write_json_str(self.method, out);
        out.extend_from_slice(b",\"uri\":");
        write_json_str(self.uri, out);
        out.extend_from_slice(b",\"route\":");
        write_json_str(self.route, out);
        // Numbers without `fmt` (its machinery was a third of the line's cost).
        out.extend_from_slice(b",\"status\":");
        push_integer(out, u64::from(self.status));
        out.extend_from_slice(b",\"latency_ms\":");
        if self.latency_ms.is_finite() && self.latency_ms >= 0.0 {
            // `{:.3}` by integers (float formatting was a tenth of the line's cost).
            let micros = (self.latency_ms * 1000.0).round() as u64;
            push_integer(out, micros / 1000);
            out.push(b'.');
            push_digits(out, micros % 1000, 3);
        } else if self.latency_ms.is_finite() {
            let _ = write!(out, "{:.3}", self.latency_ms);
        } else {
            out.extend_from_slice(b"null");
        }
        if let Some((fingerprint, name)) = self.token {
            out.extend_from_slice(b",\"token\":\"");
            out.extend_from_slice(&fingerprint.to_text());
            out.extend_from_slice(b"\",\"token_name\":");
            write_json_str(name, out);
        }
        out.extend_from_slice(b",\"target\":\"access\"}\n");
    }
}

/// The most a write of kept lines holds: `PIPE_BUF`, so that on a pipe (a container's
/// stderr) lines written by several threads at once never mix.
const PENDING_MAX: usize = 4096;

thread_local! {
    /// Lines kept on a thread that writes them in batches ([`keep_access_lines`]).
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Access lines kept for one write; written when they would pass [`PENDING_MAX`], when
/// [`write_kept_access_lines`] is called, and when the thread ends.
struct Pending(Vec<u8>);

impl Pending {
    fn add(&mut self, line: &[u8]) {
        if self.0.len() + line.len() > PENDING_MAX {
            self.write();
        }
        if line.len() > PENDING_MAX {
            write_stderr(line);
        } else {
            self.0.extend_from_slice(line);
        }
    }

    fn write(&mut self) {
        if !self.0.is_empty() {
            write_stderr(&self.0);
            self.0.clear();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.write();
    }
}

/// From now on this thread keeps its access lines and writes them together, up to 4 KiB at
/// a time, instead of one `write` each: a busy worker saves a system call per request. The
/// thread must call [`write_kept_access_lines`] whenever it goes idle (a runtime's
/// `on_thread_park`), so that no line waits while nothing happens.
pub fn keep_access_lines() {
    PENDING.with_borrow_mut(|pending| {
        pending.get_or_insert_with(|| Pending(Vec::with_capacity(PENDING_MAX)));
    });
}

/// Writes the access lines this thread kept ([`keep_access_lines`]).
pub fn write_kept_access_lines() {
    PENDING.with_borrow_mut(|pending| {
        if let Some(pending) = pending {
            pending.write();
        }
    });
}

/// Logging must never fail a request; a closed stderr loses the line.
fn write_stderr(bytes: &[u8]) {
    let _ = match unlocked_stderr() {
        Some(mut file) => file.write_all(bytes),
        None => std::io::stderr().write_all(bytes),
    };
}

/// Stderr without `std::io::Stderr`'s process-wide lock: with one worker thread per core
/// each writing a line per request, threads queued on that lock (0.4 futex calls per
/// request at 15 000 requests/s). A `write` of one whole line needs no lock.
fn unlocked_stderr() -> Option<&'static std::fs::File> {
    use std::os::fd::AsFd as _;
    static STDERR: OnceLock<Option<std::fs::File>> = OnceLock::new();
    STDERR
        .get_or_init(|| {
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .ok()
                .map(std::fs::File::from)
        })
        .as_ref()
}

fn write_json_str(text: &str, out: &mut Vec<u8>) {
    // Nothing to escape (no control character, quote or backslash): as serde_json writes it.
    if !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json escapes exactly as the `tracing` lines do; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `2026-11-22T13:26:58.498507Z`, the `tracing` lines' format. The date and time of day
/// are formatted once per second and thread.
fn write_timestamp(now: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != seconds {
            *cached = seconds;
            text.clear();
            if let Some(time) = i64::try_from(seconds)
                .ok()
                .and_then(|s| DateTime::from_timestamp(s, 0))
            {
                let _ = std::fmt::Write::write_fmt(
                    text,
                    format_args!("{}", time.format("%Y-%m-%dT%H:%M:%S")),
                );
            }
        }
        out.extend_from_slice(text.as_bytes());
    });
    out.push(b'.');
    push_digits(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push(b'Z');
}

/// `value` in decimal.
fn push_integer(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// The last `width` decimal digits of `value`, zero-padded (`{:0width$}` for a value under
/// `10^width`).
fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for digit in out[start..].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use vx11_tokenset::TokenValue;

    fn decode(line: &AccessLine<'_>, at: SystemTime) -> serde_json::Value {
        let mut out = Vec::new();
        line.encode(at, &mut out);
        assert_eq!(out.last(), Some(&b'\n'), "one line");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn strings_and_latencies_are_written_as_serde_json_and_format_write_them() {
        for text in [
            "/operator/api/x",
            "a\"b",
            "back\\slash",
            "tab\there",
            "é ☃",
            "\u{7f}",
            "",
        ] {
            let mut fast = Vec::new();
            write_json_str(text, &mut fast);
            assert_eq!(fast, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        for ms in [
            0.0,
            0.0004,
            0.0005,
            0.047,
            2.80570312,
            999.9996,
            61_234.567_8,
        ] {
            let line = AccessLine {
                method: "GET",
                uri: "/",
                route: "/",
                status: 200,
                latency_ms: ms,
                token: None,
            };
            let mut out = Vec::new();
            line.encode(UNIX_EPOCH, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains(&format!("\"latency_ms\":{ms:.3},")),
                "{ms}: {text}"
            );
        }
    }

    #[test]
    fn a_line_has_the_tracing_shape_and_every_field() {
        let value = TokenValue::new("vx11-operator-test-token").unwrap();
        let fingerprint = value.fingerprint();
        let at = UNIX_EPOCH + Duration::from_micros(1_795_354_018_498_507);
        let line = AccessLine {
            method: "GET",
            uri: "/operator/api/events?token=REDACTED",
            route: "/operator/api/*",
            status: 200,
            latency_ms: 2.80570312,
            token: Some((&fingerprint, "operator")),
        };
        let json = decode(&line, at);
        assert_eq!(json["timestamp"], "2026-11-22T13:26:58.498507Z");
        assert_eq!(json["level"], "INFO");
        assert_eq!(json["message"], "request");
        assert_eq!(json["target"], "access");
        assert_eq!(json["method"], "GET");
        assert_eq!(json["uri"], "/operator/api/events?token=REDACTED");
        assert_eq!(json["route"], "/operator/api/*");
        assert_eq!(json["status"], 200);
        assert_eq!(json["latency_ms"], 2.806);
        assert_eq!(json["token"], fingerprint.to_string());
        assert_eq!(json["token_name"], "operator");
    }

    #[test]
    fn without_a_token_there_are_no_token_fields() {
        let line = AccessLine {
            method: "GET",
            uri: "/nope",
            route: "unmatched",
            status: 404,
            latency_ms: 0.01,
            token: None,
        };
        let json = decode(&line, SystemTime::now());
        assert!(json.get("token").is_none() && json.get("token_name").is_none());
    }

    #[test]
    fn quotes_control_characters_and_non_ascii_are_escaped() {
        let line = AccessLine {
            method: "GET",
            uri: "/a\"b\\c\n\u{1}é",
            route: "\"",
            status: 400,
            latency_ms: f64::NAN,
            token: None,
        };
        let json = decode(&line, SystemTime::now());
        assert_eq!(json["uri"], "/a\"b\\c\n\u{1}é");
        assert_eq!(json["route"], "\"");
        assert!(json["latency_ms"].is_null());
    }

    #[test]
    fn the_timestamp_follows_the_clock_across_seconds() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_354_018);
        let mut out = Vec::new();
        for (offset, expected) in [
            (0, "2026-11-22T13:26:58.000000Z"),
            (42, "2026-11-22T13:26:58.000042Z"),
            (999_999, "2026-11-22T13:26:58.999999Z"),
            (1_000_000, "2026-11-22T13:26:59.000000Z"),
            (0, "2026-11-22T13:26:58.000000Z"),
        ] {
            out.clear();
            write_timestamp(base + Duration::from_micros(offset), &mut out);
            assert_eq!(String::from_utf8_lossy(&out), expected);
        }
    }
}
