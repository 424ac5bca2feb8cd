//! The body of a proxied response: streamed frame by frame, ended by an idle timeout, and,
//! for SSE, counted as an open stream and ended cleanly on shutdown.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

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

/// An SSE stream in flight: counted while it lives, ended when the gateway shuts down.
pub struct OpenStream {
    gauge: Gauge,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl OpenStream {
    pub fn new(gauge: Gauge, shutdown: WaitForCancellationFutureOwned) -> Self {
        gauge.inc();
        Self {
            gauge,
            shutdown: Box::pin(shutdown),
        }
    }
}

impl std::fmt::Debug for OpenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenStream")
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

impl Body for ProxiedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.as_mut().reset(Instant::now() + *this.idle_after);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // Checked only while waiting: a stream ends at a frame boundary.
                if let Some(stream) = this.stream.as_mut()
                    && stream.shutdown.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(None);
                }
                match this.idle.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(IdleTimeout(*this.idle_after).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
