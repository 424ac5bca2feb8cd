//! hyper's side of one connection: the service each of its requests goes through (the
//! peer's address, the scheme, the connection's place and clock go into the request; the
//! answer says `Connection: close` while draining) and the connection's place in the
//! counts the cap and the shutdown keep.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use tower::ServiceExt as _;

use crate::connection::{ConnectionClock, InFlight, InFlightBody};
use crate::express::First;

/// `app` as one connection serves it: each request carries the peer's address and the
/// connection's scheme, and keeps the connection's clock stopped until its response body is
/// dropped; while draining, an answer says `Connection: close`.
pub(crate) struct ConnectionService<S> {
    pub(crate) app: S,
    pub(crate) peer: std::net::SocketAddr,
    pub(crate) scheme: crate::ClientScheme,
    pub(crate) clock: Arc<ConnectionClock>,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) place: ConnectionPlace,
    /// For the first request: what the express lane left for it.
    pub(crate) first: std::sync::Mutex<Option<First>>,
}

/// A connection's place under `VX11_MAX_CONNECTIONS` and in the count the shutdown waits
/// for, in every request's extensions. Given back when the connection ends and no clone is
/// left: a connection upgraded out of HTTP (a WebSocket tunnel), which hyper's connection
/// task no longer sees, keeps its place while the tunnel holds a clone.
#[derive(Clone)]
pub struct ConnectionPlace {
    _place: Arc<Place>,
}

struct Place {
    _open: OpenConnection,
    _admitted: crate::connection_cap::Admitted,
}

impl ConnectionPlace {
    pub(crate) fn new(open: OpenConnection, admitted: crate::connection_cap::Admitted) -> Self {
        Self {
            _place: Arc::new(Place {
                _open: open,
                _admitted: admitted,
            }),
        }
    }
}

impl std::fmt::Debug for ConnectionPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionPlace")
    }
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for ConnectionService<S>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone,
{
    type Response = hyper::Response<InFlightBody<Body>>;
    type Error = Infallible;
    type Future = Answer<tower::util::Oneshot<S, axum::extract::Request>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.clock.request_started();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(self.scheme);
        request.extensions_mut().insert(self.place.clone());
        if let Some(First(put)) = self.first.lock().ok().and_then(|mut first| first.take()) {
            put(request.extensions_mut());
        }
        Answer {
            inner: self.app.clone().oneshot(request),
            in_flight: Some(in_flight),
            draining: self.draining.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way to hyper.
    pub(crate) struct Answer<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        draining: Arc<AtomicBool>,
    }
}

impl<F> std::future::Future for Answer<F>
where
    F: std::future::Future<Output = Result<axum::response::Response, Infallible>>,
{
    type Output = Result<hyper::Response<InFlightBody<Body>>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let response = close_if_draining(response, this.draining);
        let in_flight = this.in_flight.take();
        std::task::Poll::Ready(Ok(response.map(|body| InFlightBody::new(body, in_flight))))
    }
}

/// While draining, an HTTP/1.1 response closes its connection after it. (On an HTTP/2
/// connection hyper drops the header, which is not allowed there; the graceful shutdown's
/// GOAWAY does that job.)
fn close_if_draining(
    mut response: axum::response::Response,
    draining: &AtomicBool,
) -> axum::response::Response {
    if draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// One open connection in a count, for as long as it lives.
pub(crate) struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    pub(crate) fn count(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
