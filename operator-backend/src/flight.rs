//! What one stream has handed to hyper and hyper has not written to the socket yet.
//!
//! A stream's frames are [`Bytes`] that share the event's buffer (no copy). Each one sent
//! is wrapped ([`Flight::send`]) so that dropping it, which hyper does once the bytes are
//! written to the socket (HTTP/1.1) or framed out (HTTP/2), counts it as delivered. The
//! stream then knows how many bytes and frames are held for its client in this process, so
//! it can stop reading the history while they are over its budget, and tell a client that
//! reads nothing (frames held, none delivered for the stall timeout) from one that is just
//! quiet (nothing held).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Context;

use axum::body::Bytes;
use futures_util::task::AtomicWaker;

/// The held bytes and frames of one stream.
#[derive(Debug, Default)]
pub struct Flight {
    bytes: AtomicUsize,
    frames: AtomicUsize,
    /// Frames delivered so far: a change means the client read something.
    delivered: AtomicU64,
    /// Set while the stream waits for a delivery to make room; the next one wakes it.
    waiting: AtomicBool,
    waker: AtomicWaker,
}

/// A frame in flight: the bytes, and the flight to tell when they are dropped.
struct Held {
    frame: Bytes,
    flight: Arc<Flight>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let flight = &self.flight;
        flight.bytes.fetch_sub(self.frame.len(), Ordering::AcqRel);
        flight.frames.fetch_sub(1, Ordering::AcqRel);
        flight.delivered.fetch_add(1, Ordering::AcqRel);
        if flight.waiting.swap(false, Ordering::AcqRel) {
            flight.waker.wake();
        }
    }
}

impl Flight {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// `frame`, counted as held until the returned bytes (and every slice of them) are
    /// dropped.
    pub fn send(self: &Arc<Self>, frame: Bytes) -> Bytes {
        self.bytes.fetch_add(frame.len(), Ordering::AcqRel);
        self.frames.fetch_add(1, Ordering::AcqRel);
        Bytes::from_owner(Held {
            frame,
            flight: self.clone(),
        })
    }

    /// Bytes of frames held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Frames held now.
    pub fn frames(&self) -> usize {
        self.frames.load(Ordering::Acquire)
    }

    /// How many frames were delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Wakes `cx`'s task at the next delivery. The caller looks at the counts again after
    /// this, so a delivery in between is not missed.
    pub fn wake_on_delivery(&self, cx: &mut Context<'_>) {
        self.waker.register(cx.waker());
        self.waiting.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn frames_are_held_until_every_copy_is_dropped() {
        let flight = Flight::new();
        let shared = Bytes::from_static(b"id: 1\nevent: chat\ndata: {}\n\n");
        let first = flight.send(shared.clone());
        let second = flight.send(shared.clone());
        assert_eq!(first, shared, "the same bytes");
        assert_eq!((flight.bytes(), flight.frames()), (2 * shared.len(), 2));
        let slice = first.slice(3..);
        drop(first);
        assert_eq!(flight.frames(), 2, "a slice still holds the frame");
        drop(slice);
        assert_eq!((flight.bytes(), flight.frames()), (shared.len(), 1));
        assert_eq!(flight.delivered(), 1);
        drop(second);
        assert_eq!(
            (flight.bytes(), flight.frames(), flight.delivered()),
            (0, 0, 2)
        );
    }

    #[test]
    fn a_waiting_stream_is_woken_by_the_next_delivery_only() {
        let flight = Flight::new();
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let (a, b) = (
            flight.send(Bytes::from_static(b"a")),
            flight.send(Bytes::from_static(b"b")),
        );
        drop(a);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0, "nobody waits");
        flight.wake_on_delivery(&mut cx);
        drop(b);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        drop(flight.send(Bytes::from_static(b"c")));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "once per wait");
    }
}
