//! The size of each WebSocket frame, read from its header as the bytes of a tunnel pass
//! (RFC 6455 §5.2: 2 to 14 bytes, the payload length in the low 7 bits of the second byte,
//! or in the 2 or 8 bytes after it). Payloads are skipped, never buffered: all a guard
//! keeps is the header it is reading (at most 14 bytes) or the count of payload bytes left.
//!
//! A limit per frame, not per message: a message sent in many fragments (continuation
//! frames) passes whatever its total size.

/// The longest frame header: 2 bytes, 8 of extended length, 4 of masking key.
const MAX_HEADER: usize = 14;

/// Follows the frames of one direction of a tunnel.
#[derive(Debug)]
pub struct FrameGuard {
    max_payload: u64,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Reading a header: its first `have` bytes.
    Header {
        bytes: [u8; MAX_HEADER],
        have: usize,
    },
    /// Skipping the rest of a payload.
    Payload { left: u64 },
}

/// A frame whose payload is over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// Bytes of the chunk before the header of that frame: they may still be passed on.
    /// When the header began in an earlier chunk, 0 (and part of it has been passed on).
    pub pass: usize,
    /// The frame's payload length as its header gives it.
    pub length: u64,
}

impl FrameGuard {
    pub fn new(max_payload: u64) -> Self {
        Self {
            max_payload,
            state: State::Header {
                bytes: [0; MAX_HEADER],
                have: 0,
            },
        }
    }

    /// Between two frames: a frame of our own (a close frame) can be written here.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Follows `chunk`, the next bytes of the direction; `Err` at the first frame whose
    /// payload is over the limit (the guard is then left as it was at that frame's header).
    pub fn inspect(&mut self, chunk: &[u8]) -> Result<(), TooLarge> {
        let mut at = 0;
        // Where in this chunk the header being read began, if it did in this chunk.
        let mut header_start = None;
        while at < chunk.len() {
            match &mut self.state {
                State::Payload { left } => {
                    let skip = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(chunk.len() - at);
                    at += skip;
                    *left -= skip as u64;
                    if *left == 0 {
                        self.state = State::Header {
                            bytes: [0; MAX_HEADER],
                            have: 0,
                        };
                    }
                }
                State::Header { bytes, have } => {
                    if *have == 0 {
                        header_start = Some(at);
                    }
                    bytes[*have] = chunk[at];
                    *have += 1;
                    at += 1;
                    let Some(needed) = header_len(&bytes[..*have]) else {
                        continue;
                    };
                    while *have < needed && at < chunk.len() {
                        bytes[*have] = chunk[at];
                        *have += 1;
                        at += 1;
                    }
                    if *have < needed {
                        continue;
                    }
                    let length = payload_len(&bytes[..needed]);
                    if length > self.max_payload {
                        let pass = header_start.unwrap_or(0);
                        return Err(TooLarge { pass, length });
                    }
                    self.state = if length == 0 {
                        State::Header {
                            bytes: [0; MAX_HEADER],
                            have: 0,
                        }
                    } else {
                        State::Payload { left: length }
                    };
                }
            }
        }
        Ok(())
    }
}

/// The whole header's length once its first two bytes are known.
fn header_len(start: &[u8]) -> Option<usize> {
    let second = *start.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => header[2..10]
            .iter()
            .fold(0u64, |length, byte| (length << 8) | u64::from(*byte)),
        short => u64::from(short),
    }
}

/// A close frame from the server (unmasked) with `code` and no reason (RFC 6455 §5.5.1).
pub fn server_close_frame(code: u16) -> [u8; 4] {
    let [high, low] = code.to_be_bytes();
    [0x88, 0x02, high, low]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame header (FIN, binary) for `length` bytes, masked or not.
    fn header(length: u64, masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut h = vec![0x82];
        match length {
            0..=125 => h.push(mask_bit | length as u8),
            126..=0xffff => {
                h.push(mask_bit | 126);
                h.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                h.push(mask_bit | 127);
                h.extend_from_slice(&length.to_be_bytes());
            }
        }
        if masked {
            h.extend_from_slice(&[1, 2, 3, 4]);
        }
        h
    }

    fn frame(length: u64, masked: bool) -> Vec<u8> {
        let mut f = header(length, masked);
        f.resize(f.len() + length as usize, 7);
        f
    }

    #[test]
    fn frames_under_the_limit_pass_in_any_chunking() {
        let mut bytes = Vec::new();
        for (length, masked) in [
            (0, false),
            (5, true),
            (125, false),
            (126, true),
            (70_000, false),
        ] {
            bytes.extend(frame(length, masked));
        }
        for chunk in [1, 2, 3, 13, 1000, bytes.len()] {
            let mut guard = FrameGuard::new(70_000);
            for piece in bytes.chunks(chunk) {
                guard.inspect(piece).unwrap();
            }
            assert!(guard.at_boundary(), "chunks of {chunk}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_found_at_its_header_with_what_may_pass() {
        let mut bytes = frame(10, true);
        let first = bytes.len();
        bytes.extend(header(1025, true));
        let mut guard = FrameGuard::new(1024);
        assert_eq!(
            guard.inspect(&bytes),
            Err(TooLarge {
                pass: first,
                length: 1025
            })
        );
        // A header split over two chunks: its start has gone on already.
        let mut guard = FrameGuard::new(1024);
        let big = header(u64::MAX >> 1, false);
        guard.inspect(&big[..3]).unwrap();
        assert!(!guard.at_boundary());
        assert_eq!(guard.inspect(&big[3..]).unwrap_err().pass, 0);
    }

    #[test]
    fn a_guard_is_mid_frame_inside_a_payload() {
        let mut guard = FrameGuard::new(100);
        let f = frame(50, false);
        guard.inspect(&f[..20]).unwrap();
        assert!(!guard.at_boundary());
        guard.inspect(&f[20..]).unwrap();
        assert!(guard.at_boundary());
    }

    #[test]
    fn the_close_frame_carries_its_code() {
        assert_eq!(server_close_frame(1009), [0x88, 0x02, 0x03, 0xf1]);
    }
}
