//! What of an event stream the gateway has handed to the client's connection and that is
//! not written to the client's socket yet: the bytes "in flight".
//!
//! hyper's HTTP/1.1 connection keeps the body chunks it was given in a queue until the
//! socket takes them, and asks the body for more whenever that queue has room (fewer than
//! 16 chunks and fewer bytes than its buffer limit). Left alone, a client that reads
//! nothing had up to 16 backend chunks queued there, each keeping the backend read buffer
//! it was cut from alive: ~127 KB per stalled stream. Here every chunk handed to hyper is a
//! copy whose drop (hyper drops a chunk once it is written to the socket) gives its bytes
//! back, and a stream hands over at most [`IN_FLIGHT_BYTES`] in at most
//! [`IN_FLIGHT_CHUNKS`] chunks. Two things follow: what a stalled client holds in hyper is
//! bounded, and hyper's queue is never full, so hyper keeps polling the body, which is how
//! a body's stall timer gets to end it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use bytes::Bytes;

/// Bytes of one stream handed to hyper and not yet written to the client's socket, at
/// most. Under half of hyper's smallest write buffer limit (8 KiB), so hyper always has room
/// for the stream's next chunk and keeps polling its body.
pub const IN_FLIGHT_BYTES: usize = 4 * 1024;

/// Chunks of one stream in hyper's write queue, at most: under its 16.
pub const IN_FLIGHT_CHUNKS: usize = 8;

/// One stream's bytes in flight.
#[derive(Debug, Clone, Default)]
pub struct Flight(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    bytes: AtomicUsize,
    chunks: AtomicUsize,
    /// Bytes written to the socket so far: grows whenever the client reads.
    written: AtomicU64,
    /// The body, waiting for room.
    waiting: Mutex<Option<Waker>>,
}

impl Flight {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes that may be handed over now (0 while the chunk count is at its limit).
    pub fn room(&self) -> usize {
        if self.0.chunks.load(Ordering::Acquire) >= IN_FLIGHT_CHUNKS {
            return 0;
        }
        IN_FLIGHT_BYTES.saturating_sub(self.0.bytes.load(Ordering::Acquire))
    }

    /// Bytes handed over and not written yet.
    pub fn in_flight(&self) -> usize {
        self.0.bytes.load(Ordering::Acquire)
    }

    /// Bytes written to the client's socket so far.
    pub fn written(&self) -> u64 {
        self.0.written.load(Ordering::Acquire)
    }

    /// A copy of `data` to hand to hyper, counted in flight until hyper drops it.
    pub fn hand(&self, data: &[u8]) -> Bytes {
        self.0.bytes.fetch_add(data.len(), Ordering::AcqRel);
        self.0.chunks.fetch_add(1, Ordering::AcqRel);
        Bytes::from_owner(Chunk {
            data: data.into(),
            counters: self.0.clone(),
        })
    }

    /// Wakes `waker` when a chunk in flight is written.
    pub fn wake_when_written(&self, waker: &Waker) {
        let mut waiting = self
            .0
            .waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match waiting.as_ref() {
            Some(current) if current.will_wake(waker) => {}
            _ => *waiting = Some(waker.clone()),
        }
    }
}

/// A chunk in hyper's write queue.
struct Chunk {
    data: Box<[u8]>,
    counters: Arc<Counters>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let len = self.data.len();
        self.counters.bytes.fetch_sub(len, Ordering::AcqRel);
        self.counters.chunks.fetch_sub(1, Ordering::AcqRel);
        self.counters
            .written
            .fetch_add(len as u64, Ordering::AcqRel);
        let waiting = self
            .counters
            .waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_count_until_dropped_and_room_follows() {
        let flight = Flight::new();
        assert_eq!(flight.room(), IN_FLIGHT_BYTES);
        let a = flight.hand(&[1; 1000]);
        let b = flight.hand(&[2; 3000]);
        assert_eq!(&a[..3], &[1, 1, 1]);
        assert_eq!(
            (flight.in_flight(), flight.room()),
            (4000, IN_FLIGHT_BYTES - 4000)
        );
        drop(a);
        assert_eq!((flight.in_flight(), flight.written()), (3000, 1000));
        // A slice keeps the chunk in flight until the last part of it is gone.
        let tail = b.slice(2000..);
        drop(b);
        assert_eq!(flight.in_flight(), 3000);
        drop(tail);
        assert_eq!((flight.in_flight(), flight.written()), (0, 4000));
    }

    #[test]
    fn room_is_zero_at_the_chunk_limit() {
        let flight = Flight::new();
        let chunks: Vec<Bytes> = (0..IN_FLIGHT_CHUNKS).map(|_| flight.hand(b"x")).collect();
        assert_eq!(flight.room(), 0);
        drop(chunks);
        assert_eq!(flight.room(), IN_FLIGHT_BYTES);
    }
}
