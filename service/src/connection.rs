//! One connection's clock: how long it has been idle, and how long the request head it is
//! receiving has taken. The serving loop closes it when either runs out
//! ([`ListenerLimits::idle_timeout`], [`ListenerLimits::header_read_timeout`]).
//!
//! hyper's own header timer starts when a connection begins to wait for a request, so it
//! cannot tell a keep-alive connection at rest from a client sending its head one byte at a
//! time. Here the two are apart: the head timer starts at the head's first byte (seen by
//! [`Watched`], the connection's socket), the idle timer when the last response body is
//! dropped ([`InFlight`]), and neither runs while a request is being answered (a long
//! event stream is never idle).
//!
//! [`ListenerLimits::idle_timeout`]: crate::ListenerLimits::idle_timeout
//! [`ListenerLimits::header_read_timeout`]: crate::ListenerLimits::header_read_timeout

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// `0` in a time field: not set.
const UNSET: u64 = 0;

/// The HTTP/2 connection preface starts so; such a connection has no request heads to time.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// What a connection is doing, shared by its socket, its service and its timer.
#[derive(Debug)]
pub struct ConnectionClock {
    /// Times below are milliseconds since this, plus one (so that `0` is [`UNSET`]).
    opened: Instant,
    /// Requests whose response body has not been dropped yet.
    in_flight: AtomicUsize,
    /// When the last response ended (or the connection opened).
    idle_since: AtomicU64,
    /// When the first byte of the request head being received arrived.
    head_since: AtomicU64,
    /// Since when the socket has taken nothing of what is written to it (the peer reads
    /// nothing, its receive window and our send buffer are full).
    write_blocked_since: AtomicU64,
    /// HTTP/2: streams are counted, heads are not timed (h2 frames them itself).
    multiplexed: AtomicBool,
    /// A head has begun and [`ConnectionClock::expired`] has not been told yet: it is told
    /// only if the head is still incomplete when the socket has nothing more to read, so a
    /// head that arrives whole in one read costs no wake-up.
    head_untold: AtomicBool,
    /// The deadline [`ConnectionClock::expired`] sleeps until (ms as above), [`UNSET`]
    /// while it waits for a change with none or is working out the next one. A request
    /// that ends tells it only when the idle deadline it starts is earlier than that: a
    /// busy connection moves its idle deadline on every request without a wake-up (the
    /// clock looks again when the old deadline comes).
    armed: AtomicU64,
    /// `limits.idle` of [`ConnectionClock::expired`], in ms ([`UNSET`] until it runs).
    idle_limit: AtomicU64,
    /// Wakes [`ConnectionClock::expired`] when the state changes.
    changed: Notify,
}

/// Why a connection is closed by its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request for the idle timeout.
    Idle,
    /// A request head took longer than the header read timeout.
    SlowHead,
    /// A TLS handshake took longer than the header read timeout.
    SlowHandshake,
    /// The peer read nothing of what was written to it for the stall timeout.
    Stalled,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Idle => "idle",
            Expiry::SlowHead => "header_timeout",
            Expiry::SlowHandshake => "tls_handshake_timeout",
            Expiry::Stalled => "stalled",
        }
    }
}

impl ConnectionClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            head_since: AtomicU64::new(UNSET),
            write_blocked_since: AtomicU64::new(UNSET),
            multiplexed: AtomicBool::new(false),
            head_untold: AtomicBool::new(false),
            armed: AtomicU64::new(UNSET),
            idle_limit: AtomicU64::new(UNSET),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    fn instant_of(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms.saturating_sub(1))
    }

    /// No request is being answered.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// A request's head is complete and its service called.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(UNSET, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn bytes_read(&self, first: &[u8]) {
        if self.multiplexed.load(Ordering::Relaxed) {
            return;
        }
        if self.head_since.load(Ordering::Relaxed) == UNSET
            && self.in_flight.load(Ordering::Acquire) == 0
        {
            if first.starts_with(H2_PREFACE_START) {
                self.multiplexed.store(true, Ordering::Relaxed);
                return;
            }
            self.head_since.store(self.now_ms(), Ordering::Relaxed);
            self.head_untold.store(true, Ordering::SeqCst);
        }
    }

    /// The socket has nothing more to read for now: a head still arriving is timed from
    /// here on.
    fn read_would_block(&self) {
        if self.head_untold.swap(false, Ordering::SeqCst)
            && self.head_since.load(Ordering::Relaxed) != UNSET
        {
            self.changed.notify_one();
        }
    }

    /// The last request in flight ended: the idle clock starts.
    fn all_answered(&self) {
        let now = self.now_ms();
        self.idle_since.store(now, Ordering::SeqCst);
        let armed = self.armed.load(Ordering::SeqCst);
        let limit = self.idle_limit.load(Ordering::SeqCst);
        if armed == UNSET || limit == UNSET || armed > now.saturating_add(limit) {
            self.changed.notify_one();
        }
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.written(),
            Poll::Ready(_) => {}
        }
    }

    fn write_blocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) == UNSET {
            self.write_blocked_since
                .store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    fn written(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) != UNSET {
            self.write_blocked_since.store(UNSET, Ordering::Relaxed);
        }
    }

    /// Resolves when the connection has been idle for `limits.idle`, a request head has
    /// been arriving for longer than `limits.head`, or the socket has taken nothing for
    /// `limits.stall` (whether a request is in flight or not).
    pub async fn expired(&self, limits: Clocks) -> Expiry {
        let idle_ms = u64::try_from(limits.idle.as_millis()).unwrap_or(u64::MAX / 2);
        self.idle_limit.store(idle_ms.max(1), Ordering::SeqCst);
        loop {
            let changed = self.changed.notified();
            // Working it out: a request that ends meanwhile tells us.
            self.armed.store(UNSET, Ordering::SeqCst);
            let mut next = None;
            let blocked = self.write_blocked_since.load(Ordering::Relaxed);
            if blocked != UNSET {
                next = Some((self.instant_of(blocked) + limits.stall, Expiry::Stalled));
            }
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                let head_since = self.head_since.load(Ordering::Relaxed);
                let (since, limit, expiry) = if head_since != UNSET {
                    (head_since, limits.head, Expiry::SlowHead)
                } else {
                    (
                        self.idle_since.load(Ordering::Relaxed),
                        limits.idle,
                        Expiry::Idle,
                    )
                };
                let deadline = self.instant_of(since) + limit;
                if next.is_none_or(|(earliest, _)| deadline < earliest) {
                    next = Some((deadline, expiry));
                }
            }
            let Some((deadline, expiry)) = next else {
                changed.await;
                continue;
            };
            if Instant::now() >= deadline {
                return expiry;
            }
            let armed_ms =
                u64::try_from(deadline.saturating_duration_since(self.opened).as_millis())
                    .unwrap_or(u64::MAX - 1);
            self.armed.store(armed_ms + 1, Ordering::SeqCst);
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }
}

/// The three waits a connection's clock measures.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// No request in flight (`VX11_IDLE_TIMEOUT`).
    pub idle: Duration,
    /// From a head's first byte to its last (`VX11_HEADER_READ_TIMEOUT`).
    pub head: Duration,
    /// The socket taking nothing (`VX11_STREAM_STALL_TIMEOUT`).
    pub stall: Duration,
}

/// A request in flight on its connection, until its response body is dropped.
#[derive(Debug)]
pub struct InFlight(Arc<ConnectionClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.all_answered();
        }
    }
}

pin_project! {
    /// A response body that keeps its request [`InFlight`] until it is dropped (sent whole,
    /// or cut with its connection).
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> InFlightBody<B> {
    pub fn new(inner: B, in_flight: Option<InFlight>) -> Self {
        Self { inner, in_flight }
    }
}

impl<B: Body<Data = Bytes>> Body for InFlightBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A connection's socket, telling its [`ConnectionClock`] when a request head begins.
    #[derive(Debug)]
    pub struct Watched<T> {
        #[pin]
        inner: T,
        clock: Arc<ConnectionClock>,
    }
}

impl<T> Watched<T> {
    pub fn new(inner: T, clock: Arc<ConnectionClock>) -> Self {
        Self { inner, clock }
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.bytes_read(&buf.filled()[before..]);
        } else if polled.is_pending() {
            this.clock.read_would_block();
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        this.clock.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        this.clock.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clocks(idle: u64, head: u64, stall: u64) -> Clocks {
        Clocks {
            idle: Duration::from_secs(idle),
            head: Duration::from_secs(head),
            stall: Duration::from_secs(stall),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_nothing_expires_after_the_stall_timeout_even_in_flight() {
        let clock = ConnectionClock::new();
        let _in_flight = clock.request_started();
        clock.write_blocked();
        // A write that goes through restarts the wait; a later block counts from then.
        tokio::time::sleep(Duration::from_secs(40)).await;
        clock.written();
        clock.write_blocked();
        let started = Instant::now();
        assert_eq!(clock.expired(clocks(75, 10, 60)).await, Expiry::Stalled);
        assert!(started.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let clock = ConnectionClock::new();
        let started = Instant::now();
        let expiry = clock.expired(clocks(75, 10, 60)).await;
        assert_eq!(expiry, Expiry::Idle);
        assert!(started.elapsed() >= Duration::from_secs(75));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_has_begun_expires_after_the_header_timeout() {
        let clock = ConnectionClock::new();
        clock.bytes_read(b"GET / HT");
        let started = Instant::now();
        let expiry = clock.expired(clocks(75, 10, 60)).await;
        assert_eq!(expiry, Expiry::SlowHead);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_stops_both_clocks_until_its_body_is_dropped() {
        let clock = ConnectionClock::new();
        clock.bytes_read(b"GET / HTTP/1.1\r\n\r\n");
        let in_flight = clock.request_started();
        // Body bytes of that request do not start a head timer.
        clock.bytes_read(b"more body");
        let expiring = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.expired(clocks(5, 1, 60)).await })
        };
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(
            !expiring.is_finished(),
            "expired while a request was in flight"
        );
        let ended = Instant::now();
        drop(in_flight);
        assert_eq!(expiring.await.unwrap(), Expiry::Idle);
        assert!(ended.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_while_the_clock_waits_is_timed_once_the_socket_has_no_more() {
        let clock = ConnectionClock::new();
        let expiring = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.expired(clocks(75, 10, 60)).await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        let begun = Instant::now();
        clock.bytes_read(b"GET / HT");
        clock.read_would_block();
        assert_eq!(expiring.await.unwrap(), Expiry::SlowHead);
        let waited = begun.elapsed();
        assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_expires_the_idle_timeout_after_its_last_request_only() {
        let clock = ConnectionClock::new();
        let expiring = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.expired(clocks(75, 10, 60)).await })
        };
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            clock.bytes_read(b"GET / HTTP/1.1\r\n\r\n");
            drop(clock.request_started());
        }
        let last = Instant::now();
        assert_eq!(expiring.await.unwrap(), Expiry::Idle);
        let waited = last.elapsed();
        assert!(waited >= Duration::from_secs(75) && waited < Duration::from_secs(76));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_never_timed_as_a_slow_head() {
        let clock = ConnectionClock::new();
        clock.bytes_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        clock.bytes_read(b"\x00\x00\x00\x04");
        let expiry = clock.expired(clocks(75, 10, 60)).await;
        assert_eq!(expiry, Expiry::Idle);
    }
}
