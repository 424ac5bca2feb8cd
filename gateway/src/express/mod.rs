//! The gateway's express lane ([`vx11_service::express`]): a plain proxied request, a `GET`
//! over HTTP/1.1 with a token that passes, read from the socket, checked, written to a
//! backend connection of this worker's own pool and answered with the backend's bytes, in
//! one task and without hyper's machinery; nginx's model. The full path serves the rest:
//!
//! - a request the lane does not take ([`request`]: another method, a body, a token that
//!   fails, an event stream, headers that ask more of a proxy, CORS on, …) goes to hyper
//!   with the rest of its connection;
//! - a response the lane does not take ([`response`]: an event stream, a redirect to
//!   rewrite, a body to the end of the connection, a head over the limits, none at all)
//!   is handed over with the request: the full path reads it from the backend socket
//!   ([`crate::already_sent`]) and answers as it answers every other (a stream, 502, …);
//!   a backend the lane cannot reach is the full path's to try.
//!
//! Either way the client gets what the full path would give it, and the access line,
//! metrics and limits are the same.

mod body;
mod buffers;
mod own_answer;
mod pool;
mod request;
mod response;
mod timer;

use foldhash::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use hyper::Uri;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tower::Service as _;
use vx11_service::express::{
    ExpressConnection, ExpressEnd, ExpressLane, First, READ_ROOM, read_some,
};
use vx11_service::{AnsweredRecord, ListenerLimits};

use crate::already_sent::AlreadySent;
use crate::connect::BackendConnector;
use crate::forwarded::PeerText;
use crate::gateway::Gateway;
use crate::metrics::{ExpressLabel, GatewayMetrics, ModuleLabel};
use crate::modules::Module;
use crate::upstream::UPSTREAM_READ_BUFFER;

use body::{Cut, From, To};
use buffers::{Buffers, Sizes, Spare};
use own_answer::write_answer;
use pool::Pool;
use request::{Forwarding, Plain};
use timer::HeadTimer;

/// One worker's express lane.
#[derive(Debug)]
pub struct GatewayExpress {
    gateway: Arc<Gateway>,
    limits: ListenerLimits,
    pool: Pool,
    /// Spare buffers for new connections.
    spare: Spare,
    connector: BackendConnector,
    counts: Counts,
    /// `vx11_gateway_upstream_duration_seconds` of each module.
    upstream_seconds: HashMap<String, Histogram>,
    /// `vx11_gateway_requests_total` by route and status, as met.
    requests: Mutex<Vec<(&'static str, u16, Counter)>>,
}

/// `vx11_gateway_express_requests`, by outcome.
#[derive(Debug)]
struct Counts {
    answered: Counter,
    handed_over: Counter,
    response_handed_over: Counter,
}

impl Counts {
    fn of(metrics: &GatewayMetrics) -> Self {
        let count = |outcome| {
            metrics
                .express
                .get_or_create(&ExpressLabel { outcome })
                .clone()
        };
        Self {
            answered: count("answered"),
            handed_over: count("handed_over"),
            response_handed_over: count("response_handed_over"),
        }
    }
}

/// What one client connection's exchanges reuse: the client's bytes being written, the
/// backend's being read, and the response-head timer.
struct Exchange<'a> {
    out: &'a mut Vec<u8>,
    rbuf: &'a mut BytesMut,
    timer: HeadTimer,
}

/// How sending a request to a backend went.
enum Sent {
    /// The lane passes the response on.
    Plain(TcpStream, response::Head),
    /// The request went out; its response is the full path's to read.
    Left(AlreadySent),
    /// Nothing went out (no connection): the full path sends the request itself.
    Not,
}

/// How one exchange with a backend ended.
enum Exchanged {
    /// The client has its answer.
    Answered { status: u16 },
    /// The full path answers the request: from the response already under way, or
    /// (`None`) by sending it itself.
    FullPath(Option<AlreadySent>),
    /// The answer was cut: the client's connection is closed.
    Cut,
}

impl GatewayExpress {
    /// The lane of the worker whose requests share `gateway`; `limits`: the listener's
    /// (head size and field count).
    pub fn new(gateway: Arc<Gateway>, limits: ListenerLimits, connector: BackendConnector) -> Self {
        let upstream_seconds = gateway
            .modules
            .names()
            .into_iter()
            .map(|name| {
                let histogram = gateway
                    .metrics
                    .upstream_seconds
                    .get_or_create(&ModuleLabel {
                        module: name.to_owned(),
                    })
                    .clone();
                (name.to_owned(), histogram)
            })
            .collect();
        let spare = Spare::new(Sizes {
            head: max_head(&limits).min(READ_ROOM),
            upstream_head: 1024,
            out: 1024,
            from_backend: UPSTREAM_READ_BUFFER,
        });
        Self {
            upstream_seconds,
            requests: Mutex::new(Vec::new()),
            counts: Counts::of(&gateway.metrics),
            gateway,
            limits,
            pool: Pool::default(),
            spare,
            connector,
        }
    }

    async fn serve_connection(&self, connection: ExpressConnection<'_>) -> ExpressEnd {
        let mut buffers = self.spare.take();
        let end = self.serve_requests(connection, &mut buffers).await;
        self.spare.give_back(buffers);
        end
    }

    async fn serve_requests(
        &self,
        mut connection: ExpressConnection<'_>,
        buffers: &mut Buffers,
    ) -> ExpressEnd {
        let forwarding = Forwarding {
            forwarded_for: PeerText::of(connection.peer.ip()),
            trusted: self.gateway.trusted_proxies.trusts(connection.peer.ip()),
        };
        let max_head = max_head(&self.limits);
        let Buffers {
            head: buf,
            upstream_head,
            out,
            from_backend,
        } = buffers;
        let mut this = Exchange {
            out,
            rbuf: from_backend,
            timer: HeadTimer::new(self.gateway.upstreams.timeout),
        };
        loop {
            let plain = loop {
                if !buf.is_empty() {
                    match request::look(
                        &self.gateway,
                        &forwarding,
                        buf,
                        self.limits.max_headers,
                        upstream_head,
                    ) {
                        request::Look::Plain(plain) => break plain,
                        request::Look::Other => return self.hand_over(buf),
                        request::Look::Partial if buf.len() >= max_head => {
                            return self.hand_over(buf);
                        }
                        request::Look::Partial => {}
                    }
                }
                match read_some(connection.io, buf, max_head).await {
                    Ok(n) if n > 0 => {}
                    _ => return ExpressEnd::Closed,
                }
            };
            if connection.draining() {
                // The answer must say `Connection: close`: hyper's.
                return self.hand_over(buf);
            }
            let in_flight = connection.request_started();
            let started = Instant::now();
            let exchanged = self
                .exchange(&plain, upstream_head, connection.io, &mut this, started)
                .await;
            let status = match exchanged {
                Exchanged::Answered { status } => status,
                Exchanged::FullPath(already) => {
                    self.counts.response_handed_over.inc();
                    let first = already.map(|already| {
                        First(Box::new(move |extensions: &mut axum::http::Extensions| {
                            extensions.insert(already);
                        }))
                    });
                    return ExpressEnd::HandOver {
                        bytes: std::mem::take(buf).freeze(),
                        first,
                    };
                }
                Exchanged::Cut => return ExpressEnd::Closed,
            };
            let requests = self.requests_of(plain.module.route, status);
            self.gateway.metrics.http.record_answered(
                AnsweredRecord {
                    started,
                    method: "GET",
                    path: utf8(&buf[plain.path.clone()]),
                    query: plain.query.clone().map(|q| utf8(&buf[q])),
                    route: plain.module.route,
                    status,
                    who: Some(&plain.who),
                },
                &requests,
            );
            self.counts.answered.inc();
            drop(in_flight);
            buf.advance(plain.head_len);
            if plain.close {
                // Closing the socket sends the FIN (no shutdown first: a system call less).
                return ExpressEnd::Closed;
            }
            if buf.is_empty()
                && let Some(destination) = connection.moves_now()
            {
                return ExpressEnd::Move(destination);
            }
        }
    }

    /// `vx11_gateway_requests_total{route, status}`, kept after the first look-up.
    fn requests_of(&self, route: &'static str, status: u16) -> Counter {
        let mut known = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, counter)) = known
            .iter()
            .find(|(r, s, _)| *s == status && std::ptr::eq(*r, route))
        {
            return counter.clone();
        }
        let counter = self.gateway.metrics.http.requests_of(route, status);
        known.push((route, status, counter.clone()));
        counter
    }

    /// The rest of the connection, from the bytes in `buf` (taken), is the full path's.
    fn hand_over(&self, buf: &mut BytesMut) -> ExpressEnd {
        self.counts.handed_over.inc();
        ExpressEnd::HandOver {
            bytes: std::mem::take(buf).freeze(),
            first: None,
        }
    }

    /// Sends the request to its backend and the answer to the client.
    async fn exchange(
        &self,
        plain: &Plain,
        upstream_head: &[u8],
        client: &mut vx11_service::express::ClientIo,
        this: &mut Exchange<'_>,
        started: Instant,
    ) -> Exchanged {
        let module = &plain.module;
        let upstreams = &self.gateway.upstreams;
        let limits = upstreams.limits();
        let deadline = tokio::time::Instant::from_std(started) + upstreams.timeout;
        this.timer.cover(deadline);
        let Exchange { out, rbuf, timer } = this;
        let sent = {
            let send = self.send(
                module,
                upstream_head,
                rbuf,
                limits.header_bytes,
                limits.headers,
                plain.close,
                out,
            );
            tokio::select! {
                biased;
                sent = send => Some(sent),
                () = timer.passed(deadline) => None,
            }
        };
        let (mut upstream, head) = match sent {
            Some(Sent::Plain(upstream, head)) => (upstream, head),
            Some(Sent::Left(already)) => return Exchanged::FullPath(Some(already)),
            Some(Sent::Not) => return Exchanged::FullPath(None),
            None => {
                let answer = upstreams.timed_out(module, &self.gateway.metrics);
                return match write_answer(answer, plain.close, client, out).await {
                    Some(status) => Exchanged::Answered { status },
                    None => Exchanged::Cut,
                };
            }
        };
        if let Some(histogram) = self.upstream_seconds.get(&*module.name) {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        rbuf.advance(head.len);
        let mut from = From {
            upstream: &mut upstream,
            buf: rbuf,
            idle: self.gateway.upstream_idle_timeout,
            max_line: limits.header_bytes,
        };
        let mut to = To { client, out };
        let copied = match head.framing {
            response::Framing::Length(length) => from.length(length, &mut to).await,
            response::Framing::Chunked => from.chunked(&mut to).await,
        };
        let copied = match copied {
            Ok(()) => {
                if plain.close {
                    vx11_service::express::closing(to.client);
                }
                to.flush().await
            }
            cut => cut,
        };
        match copied {
            Ok(()) => {
                // Bytes past the response are not an answer to anything: the connection is
                // not used again.
                if head.reusable && rbuf.is_empty() {
                    self.pool.give_back(&module.name, upstream);
                }
                rbuf.clear();
                Exchanged::Answered {
                    status: head.status,
                }
            }
            Err(Cut::Backend | Cut::Client) => {
                rbuf.clear();
                Exchanged::Cut
            }
        }
    }

    /// Writes the request to a backend connection (a pooled one, or a new one if that one
    /// turns out closed) and reads the response head; the client's head is in `out`.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        module: &Module,
        upstream_head: &[u8],
        rbuf: &mut BytesMut,
        max_head: usize,
        max_headers: usize,
        close: bool,
        out: &mut Vec<u8>,
    ) -> Sent {
        let max_head = max_head.max(UPSTREAM_READ_BUFFER);
        let mut pooled = self.pool.take(&module.name);
        loop {
            let reused = pooled.is_some();
            let mut upstream = match pooled.take() {
                Some(stream) => stream,
                None => match self.connect(module).await {
                    Some(stream) => stream,
                    None => return Sent::Not,
                },
            };
            rbuf.clear();
            out.clear();
            if upstream.write_all(upstream_head).await.is_err() {
                if reused {
                    continue;
                }
                return Sent::Not;
            }
            loop {
                match read_some(&mut upstream, rbuf, max_head).await {
                    Ok(n) if n > 0 => {}
                    // A pooled connection the backend closed meanwhile: once more on a new
                    // one (nothing was answered, so nothing was done).
                    _ if reused && rbuf.is_empty() => break,
                    // Closed or broken mid-way: the full path tells the client.
                    _ => return Sent::Left(AlreadySent::new(upstream, rbuf.split().freeze())),
                }
                match response::look(
                    rbuf,
                    max_headers,
                    self.gateway.rewrite_redirects,
                    close,
                    out,
                ) {
                    response::Look::Plain(head) => return Sent::Plain(upstream, head),
                    response::Look::Partial if rbuf.len() < max_head => {}
                    response::Look::Partial | response::Look::Other => {
                        return Sent::Left(AlreadySent::new(upstream, rbuf.split().freeze()));
                    }
                }
            }
        }
    }

    async fn connect(&self, module: &Module) -> Option<TcpStream> {
        let uri: Uri = module.upstream.url.parse().ok()?;
        let mut connector = self.connector.clone();
        let connected = connector.call(uri).await.ok()?;
        Some(connected.into_inner())
    }
}

/// The express lane of a worker whose requests share `gateway`, for its `Serving`: `None`
/// when `on` is false (`VX11_EXPRESS`) or CORS is on (its headers are the full path's).
/// `limits`: the listener's.
pub fn lane_for(
    gateway: &Arc<Gateway>,
    on: bool,
    limits: &ListenerLimits,
) -> Option<Arc<dyn ExpressLane>> {
    (on && !gateway.cors.is_on()).then(|| {
        Arc::new(GatewayExpress::new(
            gateway.clone(),
            limits.clone(),
            gateway.upstreams.connector.clone(),
        )) as Arc<dyn ExpressLane>
    })
}

impl ExpressLane for GatewayExpress {
    fn serve<'a>(
        &'a self,
        connection: ExpressConnection<'a>,
    ) -> Pin<Box<dyn Future<Output = ExpressEnd> + Send + 'a>> {
        Box::pin(self.serve_connection(connection))
    }
}

/// The longest request head the lane reads before handing it over: the listener's limit.
fn max_head(limits: &ListenerLimits) -> usize {
    limits.max_header_bytes.max(vx11_service::MIN_HEADER_BYTES)
}

fn utf8(bytes: &[u8]) -> &str {
    // httparse admits only visible ASCII in a request target.
    std::str::from_utf8(bytes).unwrap_or("")
}
