//! The body of a proxied response: streamed frame by frame and ended by an idle timeout.
//! An event stream (SSE) also holds its place in the stream count, ends cleanly on
//! shutdown, hands the client's connection a bounded number of bytes at a time
//! ([`crate::pacing`]), and ends with an error when the client has read nothing for the
//! stall timeout while bytes wait for it (`VX11_STREAM_STALL_TIMEOUT`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use vx11_service::StreamSlot;

use crate::pacing::Flight;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// A backend's response body on its way to the client.
    pub struct ProxiedBody {
        #[pin]
        inner: Incoming,
        #[pin]
        idle: Sleep,
        idle_after: Duration,
        stream: Option<OpenStream>,
    }
}

/// An SSE stream in flight: counted while it lives, ended when the gateway shuts down or
/// its client stalls.
pub struct OpenStream {
    gauge: Gauge,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    _slot: Option<StreamSlot>,
    flight: Flight,
    /// Taken from the backend, not handed to the client's connection yet (an owned copy).
    pending: Bytes,
    stall: Stall,
}

/// The stall timer of one stream: armed while bytes are in flight, moved on whenever the
/// client reads some.
struct Stall {
    after: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
    written: u64,
    stalled: Counter,
    /// For the log line: which module, which token (by name).
    module: Arc<str>,
    token: Arc<str>,
}

/// What a stream needs besides the backend's body.
#[derive(Debug)]
pub struct StreamParts {
    pub gauge: Gauge,
    pub shutdown: WaitForCancellationFutureOwned,
    pub slot: Option<StreamSlot>,
    pub stall_after: Duration,
    pub stalled: Counter,
    pub module: Arc<str>,
    pub token: Arc<str>,
}

impl OpenStream {
    pub fn new(parts: StreamParts) -> Self {
        parts.gauge.inc();
        Self {
            gauge: parts.gauge,
            shutdown: Box::pin(parts.shutdown),
            _slot: parts.slot,
            flight: Flight::new(),
            pending: Bytes::new(),
            stall: Stall {
                after: parts.stall_after,
                timer: Box::pin(tokio::time::sleep(parts.stall_after)),
                armed: false,
                written: 0,
                stalled: parts.stalled,
                module: parts.module,
                token: parts.token,
            },
        }
    }
}

impl std::fmt::Debug for OpenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStream")
            .field("in_flight", &self.flight.in_flight())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl ProxiedBody {
    pub fn new(inner: Incoming, idle_after: Duration, stream: Option<OpenStream>) -> Self {
        Self {
            inner,
            idle: tokio::time::sleep(idle_after),
            idle_after,
            stream,
        }
    }
}

/// The backend sent nothing for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing for {0:?} (VX11_UPSTREAM_IDLE_TIMEOUT); the response was cut")]
pub struct IdleTimeout(Duration);

/// The client read nothing for the stall timeout while the stream had bytes for it.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing for {0:?} (VX11_STREAM_STALL_TIMEOUT); the stream was ended")]
pub struct Stalled(Duration);

impl Body for ProxiedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let Some(stream) = this.stream.as_mut() else {
            return match this.inner.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle.as_mut().reset(Instant::now() + *this.idle_after);
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => match this.idle.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(IdleTimeout(*this.idle_after).into()))),
                    Poll::Pending => Poll::Pending,
                },
            };
        };
        stream.stall.note_progress(&stream.flight);
        if stream.stall.poll_stalled(cx, &stream.flight).is_ready() {
            return Poll::Ready(Some(Err(Stalled(stream.stall.after).into())));
        }
        let room = stream.flight.room();
        if room > 0 {
            if !stream.pending.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(stream.hand_pending(room)))));
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle.as_mut().reset(Instant::now() + *this.idle_after);
                    return Poll::Ready(Some(Ok(match frame.into_data() {
                        Ok(data) => Frame::data(stream.hand(room, &data)),
                        Err(other) => other,
                    })));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {}
            }
        } else {
            // Waiting for the client, not the backend: the backend is not idle.
            this.idle.as_mut().reset(Instant::now() + *this.idle_after);
            stream.flight.wake_when_written(cx.waker());
        }
        // Checked only while waiting: a stream ends at a frame boundary.
        if stream.shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if room > 0 && this.idle.poll(cx).is_ready() {
            return Poll::Ready(Some(Err(IdleTimeout(*this.idle_after).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.stream.as_ref().is_none_or(|s| s.pending.is_empty()) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(stream) = &self.stream
            && !stream.pending.is_empty()
        {
            let pending = stream.pending.len() as u64;
            let upper = hint.upper().map(|upper| upper + pending);
            hint.set_lower(hint.lower() + pending);
            if let Some(upper) = upper {
                hint.set_upper(upper);
            }
        }
        hint
    }
}

impl OpenStream {
    /// Up to `room` bytes of a frame from the backend, copied for the client's connection;
    /// the rest is kept, as a copy of its own, for the next polls.
    fn hand(&mut self, room: usize, data: &Bytes) -> Bytes {
        let n = room.min(data.len());
        if n < data.len() {
            self.pending = Bytes::copy_from_slice(&data[n..]);
        }
        self.flight.hand(&data[..n])
    }

    /// Up to `room` bytes of what is kept from the backend's last frame.
    fn hand_pending(&mut self, room: usize) -> Bytes {
        let n = room.min(self.pending.len());
        let chunk = self.flight.hand(&self.pending[..n]);
        self.pending.advance(n);
        if self.pending.is_empty() {
            // An emptied `Bytes` still holds its buffer.
            self.pending = Bytes::new();
        }
        chunk
    }
}

impl Stall {
    /// Moves the timer on when the client has read since the last look.
    fn note_progress(&mut self, flight: &Flight) {
        let written = flight.written();
        if written != self.written {
            self.written = written;
            self.armed = false;
        }
    }

    /// Ready when bytes have waited in flight for the stall timeout with nothing written.
    fn poll_stalled(&mut self, cx: &mut Context<'_>, flight: &Flight) -> Poll<()> {
        if flight.in_flight() == 0 {
            self.armed = false;
            return Poll::Pending;
        }
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.after);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stalled.inc();
        tracing::info!(
            module = %self.module,
            token = %self.token,
            waiting_bytes = flight.in_flight(),
            stall_timeout = ?self.after,
            "event stream ended: its client read nothing for the stall timeout (VX11_STREAM_STALL_TIMEOUT)"
        );
        Poll::Ready(())
    }
}
