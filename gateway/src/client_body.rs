//! The client's request body on its way to the backend: limited to `VX11_MAX_BODY_BYTES`,
//! and remembering why it failed, if it did. When sending a request fails, that tells the
//! client's fault (a body over the limit: 413; a body that is not valid HTTP, such as a bad
//! chunk size or chunk terminator: 400) from the backend's (502), whatever error the
//! backend connection reports (over h2c the body's error reaches the response only as a
//! reset stream).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{LengthLimitError, Limited};
use pin_project_lite::pin_project;

use crate::body::BoxError;

pin_project! {
    /// A request body that records its failure in a [`BodyOutcome`].
    pub struct ClientBody<B> {
        #[pin]
        inner: Limited<B>,
        outcome: BodyOutcome,
    }
}

/// How the client's body ended, as far as it was read.
#[derive(Debug, Clone, Default)]
pub struct BodyOutcome(Arc<AtomicU8>);

/// Why a client's body could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// Over `VX11_MAX_BODY_BYTES`.
    TooLarge,
    /// Not valid HTTP framing, or the client went away in the middle.
    Invalid,
}

const FINE: u8 = 0;
const TOO_LARGE: u8 = 1;
const INVALID: u8 = 2;

impl BodyOutcome {
    /// The body's failure, if it failed.
    pub fn failure(&self) -> Option<BodyFailure> {
        match self.0.load(Ordering::Acquire) {
            TOO_LARGE => Some(BodyFailure::TooLarge),
            INVALID => Some(BodyFailure::Invalid),
            _ => None,
        }
    }

    fn record(&self, error: &BoxError) {
        let failure = if error.is::<LengthLimitError>() {
            TOO_LARGE
        } else {
            INVALID
        };
        let _ = self
            .0
            .compare_exchange(FINE, failure, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl<B> ClientBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// `body`, cut at `limit` bytes; its outcome is told by the returned [`BodyOutcome`].
    pub fn new(body: B, limit: usize) -> (Self, BodyOutcome) {
        let outcome = BodyOutcome::default();
        let body = Self {
            inner: Limited::new(body, limit),
            outcome: outcome.clone(),
        };
        (body, outcome)
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Err(error))) = &polled {
            this.outcome.record(error);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_over_the_limit_and_a_broken_body_are_told_apart() {
        let (body, outcome) =
            ClientBody::new(http_body_util::Full::new(Bytes::from(vec![0; 10])), 4);
        assert!(body.collect().await.is_err());
        assert_eq!(outcome.failure(), Some(BodyFailure::TooLarge));

        let broken = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err::<Frame<Bytes>, BoxError>("bad chunk size".into()),
        ]));
        let (body, outcome) = ClientBody::new(broken, 100);
        assert!(body.collect().await.is_err());
        assert_eq!(outcome.failure(), Some(BodyFailure::Invalid));

        let (body, outcome) =
            ClientBody::new(http_body_util::Full::new(Bytes::from_static(b"ok")), 4);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(outcome.failure(), None);
    }
}
