//! The express lane: a connection's plain HTTP/1.1 requests answered before hyper sees the
//! connection, by a service that knows how (the gateway's proxy, `vx11-gateway`'s
//! `express` module). hyper's general machinery (its dispatcher, header maps, a boxed body
//! and a task hand-off per request on each side) cost the gateway about twice nginx's CPU
//! per proxied request (`docs/BENCHMARKS.md`); most requests need none of it.
//!
//! The lane takes a connection from its first byte. At the first request it does not take
//! whole (anything but the plain case it knows), it hands the connection over, with the
//! bytes it has read and not answered, to hyper, which serves the rest of the connection as
//! it would have from the start. The lane runs under the same connection clock as hyper
//! (idle, head and stall timeouts), under the same cap, and in the same shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

pub use crate::client_tcp::ClientTcp;
use crate::connection::{Clocks, ConnectionClock, InFlight, Watched};
use crate::connection_cap::ConnectionCap;
pub use crate::moves::Destination;
use crate::moves::{CHECK_EVERY, WorkerMoves};

/// A client's connection: in the clear, or TLS (`VX11_TLS_DIR`). The TLS state (1.2 KiB) is
/// boxed: inline, it made every connection's task that much larger, in the clear too.
pub type ClientSocket = Either<ClientTcp, Box<tokio_rustls::server::TlsStream<ClientTcp>>>;

/// A client's socket as the express lane and hyper read it: bytes the lane read and handed
/// back first, then the socket; watched by the connection's clock.
pub type ClientIo = Watched<Prefixed<ClientSocket>>;

/// What is written to `io` from now on is the last it carries (the connection is dropped
/// right after): in the clear, the last part leaves with the FIN, one segment fewer.
pub fn closing(io: &mut ClientIo) {
    if let Either::Left(tcp) = io.get_mut().get_mut() {
        tcp.closing();
    }
}

/// How an express lane's time on a connection ended.
#[derive(Debug)]
pub enum ExpressEnd {
    /// The connection is done with (closed by either side, or broken).
    Closed,
    /// hyper serves the rest, starting with these bytes (the first request not answered);
    /// `first` goes into that first request's extensions.
    HandOver { bytes: Bytes, first: Option<First> },
    /// Between two requests, nothing of it read: another worker serves it on
    /// ([`ExpressConnection::moves_now`]).
    Move(Destination),
}

/// What the lane leaves for the first request hyper reads after it (put into the
/// request's extensions): the gateway's backend response already under way.
pub struct First(pub Box<dyn FnOnce(&mut http::Extensions) + Send>);

impl std::fmt::Debug for First {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("First")
    }
}

/// What an express lane gets of a connection.
#[derive(Debug)]
pub struct ExpressConnection<'a> {
    pub io: &'a mut ClientIo,
    pub peer: SocketAddr,
    clock: Arc<ConnectionClock>,
    draining: Arc<AtomicBool>,
    /// The other workers, when connections follow their client's CPU (`crate::moves`).
    moves: Option<&'a WorkerMoves>,
    /// Answers until the next look at the CPU the connection's packets arrive on.
    until_check: u32,
}

impl<'a> ExpressConnection<'a> {
    pub(crate) fn new(
        io: &'a mut ClientIo,
        peer: SocketAddr,
        clock: Arc<ConnectionClock>,
        draining: Arc<AtomicBool>,
        moves: Option<&'a WorkerMoves>,
    ) -> Self {
        Self {
            io,
            peer,
            clock,
            draining,
            moves,
            until_check: CHECK_EVERY,
        }
    }

    /// Called after each answer, when nothing of the next request has been read: where the
    /// connection is to move, if its packets now arrive on another worker's CPU (looked at
    /// every [`CHECK_EVERY`] answers; never while draining). The lane then ends with
    /// [`ExpressEnd::Move`].
    pub fn moves_now(&mut self) -> Option<Destination> {
        let moves = self.moves?;
        self.until_check -= 1;
        if self.until_check > 0 {
            return None;
        }
        self.until_check = CHECK_EVERY;
        if self.draining() {
            return None;
        }
        let Either::Left(tcp) = self.io.get_mut().get_mut() else {
            return None;
        };
        moves.destination(tcp.incoming_cpu()?)
    }

    pub(crate) fn clock(&self) -> Arc<ConnectionClock> {
        self.clock.clone()
    }

    /// A request's head is complete and the lane answers it: the connection is not idle
    /// until this is dropped.
    pub fn request_started(&self) -> InFlight {
        self.clock.request_started()
    }

    /// The server is shutting down: every answer from now on closes its connection, which
    /// hyper does (the lane hands such requests over).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// A lane that answers some plain HTTP/1.1 requests itself (see the module's doc).
pub trait ExpressLane: Send + Sync + std::fmt::Debug + 'static {
    /// Serves requests on `connection` from its first byte for as long as it takes them.
    fn serve<'a>(
        &'a self,
        connection: ExpressConnection<'a>,
    ) -> Pin<Box<dyn Future<Output = ExpressEnd> + Send + 'a>>;
}

/// The express lane on a new connection, under the connection's clock and the shutdown:
/// whether hyper serves the rest.
pub(crate) async fn run(
    express: &dyn ExpressLane,
    connection: ExpressConnection<'_>,
    close_all: &CancellationToken,
    clocks: Clocks,
    connections: &ConnectionCap,
) -> ExpressEnd {
    let clock = connection.clock();
    let lane = express.serve(connection);
    let watch = async {
        tokio::select! {
            () = close_all.cancelled() => {}
            expiry = clock.expired(clocks) => {
                connections.closed(expiry);
                return ExpressEnd::Closed;
            }
        }
        // Between requests the connection just closes, as hyper's does; a request being
        // answered finishes first (looked at every 20 ms).
        while !clock.is_idle() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ExpressEnd::Closed
    };
    first_of(lane, watch).await
}

/// What ends first of `lane` and `watch`, polling `watch` only when something it waits on
/// woke it (and once at the start): the lane is woken twice per request, and polling the
/// clock's and the shutdown's futures each time cost about a tenth of the lane's CPU.
async fn first_of<T>(lane: impl Future<Output = T>, watch: impl Future<Output = T>) -> T {
    let branch = Arc::new(WatchWake::default());
    let watch_waker = Waker::from(branch.clone());
    let mut lane = std::pin::pin!(lane);
    let mut watch = std::pin::pin!(watch);
    let mut first = true;
    std::future::poll_fn(|cx| {
        branch.task.register(cx.waker());
        if let Poll::Ready(end) = lane.as_mut().poll(cx) {
            return Poll::Ready(end);
        }
        if std::mem::take(&mut first) || branch.woken.swap(false, Ordering::SeqCst) {
            let mut watch_cx = Context::from_waker(&watch_waker);
            if let Poll::Ready(end) = watch.as_mut().poll(&mut watch_cx) {
                return Poll::Ready(end);
            }
        }
        Poll::Pending
    })
    .await
}

/// The waker of [`first_of`]'s watch: notes that the watch is to be polled, and wakes the
/// task.
#[derive(Debug, Default)]
struct WatchWake {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for WatchWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}

pin_project_lite::pin_project! {
    /// A socket with bytes already read from it put back in front.
    #[derive(Debug)]
    pub struct Prefixed<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> Prefixed<T> {
    pub fn new(inner: T) -> Self {
        Self {
            prefix: Bytes::new(),
            inner,
        }
    }

    /// Reads return `bytes` first (before anything left of an earlier prefix: there is none
    /// when the lane hands over, as it reads only through this).
    pub fn put_back(&mut self, bytes: Bytes) {
        debug_assert!(self.prefix.is_empty());
        self.prefix = bytes;
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The socket, if nothing put back is left to read.
    pub fn into_inner(self) -> Option<T> {
        self.prefix.is_empty().then_some(self.inner)
    }
}

impl<T: AsyncRead> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // An empty view still holds the buffer it was cut from (the lane's 16 KiB
                // head buffer): let it go, or a long-lived connection (an event stream) keeps
                // it to its end.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
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

/// The room [`read_some`] makes in its buffer when it has less than a quarter of that left
/// (less if the limit is nearer). A buffer created with at least a quarter of it is not
/// grown (and copied) for its first read.
pub const READ_ROOM: usize = 16 * 1024;

/// Reads what `io` has into `buf` (at most `limit` bytes in all): `Ok(0)` at the end of the
/// stream.
pub async fn read_some<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> io::Result<usize> {
    use tokio::io::AsyncReadExt as _;
    let room = limit.saturating_sub(buf.len());
    if room == 0 {
        return Ok(0);
    }
    if buf.capacity() - buf.len() < READ_ROOM / 4 {
        buf.reserve(room.min(READ_ROOM));
    }
    let mut limited = (&mut *io).take(room as u64);
    limited.read_buf(buf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn bytes_put_back_are_read_first_and_their_buffer_let_go_once_read() {
        let original = Bytes::from(b"GET / HTTP/1.1\r\n\r\n".to_vec());
        let (client, mut server) = tokio::io::duplex(64);
        let mut prefixed = Prefixed::new(client);
        prefixed.put_back(original.slice(4..));
        tokio::io::AsyncWriteExt::write_all(&mut server, b"next")
            .await
            .unwrap();
        drop(server);
        assert!(!original.is_unique());
        let mut read = Vec::new();
        prefixed.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"/ HTTP/1.1\r\n\r\nnext");
        assert!(
            original.is_unique(),
            "the socket still holds the bytes' buffer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_ends_a_lane_that_waits_and_is_polled_only_when_woken() {
        use std::sync::atomic::AtomicUsize;
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let watch = std::future::poll_fn(move |cx| {
            // Wakes itself at its first five polls.
            if counted.fetch_add(1, Ordering::SeqCst) < 5 {
                cx.waker().wake_by_ref();
            }
            Poll::<&str>::Pending
        });
        // A watch is polled again each time it is woken…
        let lane = tokio::time::sleep(Duration::from_millis(10));
        let lane = async move {
            lane.await;
            "lane"
        };
        assert_eq!(first_of(lane, watch).await, "lane");
        assert_eq!(polls.load(Ordering::SeqCst), 6);

        // …one that waits on a timer is polled at the start and when the timer fires, however
        // often the lane is woken meanwhile.
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(5)));
        let watch = std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            timer.as_mut().poll(cx).map(|()| "watch")
        });
        let lane = async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
            std::future::pending::<&str>().await
        };
        assert_eq!(first_of(lane, watch).await, "watch");
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bytes_put_back_are_read_before_the_socket() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut io = Prefixed::new(far);
        io.put_back(Bytes::from_static(b"GET / "));
        tokio::io::AsyncWriteExt::write_all(&mut near, b"HTTP/1.1\r\n")
            .await
            .unwrap();
        drop(near);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
    }
}
