//! Accepting a client and its socket, in the event loop only once it has to wait.
//!
//! A client that opens a connection for one request (`Connection: close`) usually has its
//! request in the socket by the time it is accepted, and takes the answer without making
//! the server wait. For such a connection the event loop is of no use, and registering the
//! socket with it costs two system calls (`epoll_ctl` ADD at the start, DEL at the end) of
//! about ten. So the socket is read and written directly at first and registered only when
//! an operation would block, or at its second read (a keep-alive connection's next request,
//! which is usually not there yet).
//!
//! Accepting asks the kernel for a non-blocking socket in the same call, and the socket
//! inherits `TCP_NODELAY` from the listener (on Linux), which saves a `setsockopt` each.

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// At most this much is read before the socket is registered. A request head is usually far
/// shorter; a longer one is read on after registration.
const FIRST_READ: usize = 4096;

thread_local! {
    /// Where a read before registration lands: a safe read needs initialised memory (tokio's
    /// own reads skip that), and zeroing this once per thread, then copying what was read
    /// out of it, is cheaper than zeroing 4 KiB of the caller's buffer for every connection.
    static FIRST_READ_ROOM: std::cell::RefCell<Box<[u8; FIRST_READ]>> =
        std::cell::RefCell::new(Box::new([0; FIRST_READ]));
}

/// A listening socket that accepts clients as [`ClientTcp`]s.
#[derive(Debug)]
pub struct ClientListener {
    listener: AsyncFd<std::net::TcpListener>,
    /// Accepted sockets have `TCP_NODELAY` already (inherited from the listener).
    nodelay_inherited: bool,
}

impl ClientListener {
    /// Takes over `listener`. Small responses and SSE events go out at once rather than
    /// waiting on Nagle: `TCP_NODELAY` is set on the listener, whose accepted sockets inherit
    /// it on Linux, or else on each accepted socket.
    pub fn new(listener: tokio::net::TcpListener) -> io::Result<Self> {
        let listener = listener.into_std()?;
        let nodelay_inherited = cfg!(target_os = "linux")
            && socket2::SockRef::from(&listener)
                .set_tcp_nodelay(true)
                .is_ok();
        // `with_interest` is deprecated for file descriptors that may change or close under
        // it (tokio#8587); a `std::net::TcpListener` owns its descriptor, which stays the same
        // and open until the `AsyncFd` drops it, so it is sound here (and
        // `register_with_interest` would need `unsafe`, which this workspace forbids).
        #[allow(deprecated)]
        let listener = AsyncFd::with_interest(listener, Interest::READABLE)?;
        Ok(Self {
            listener,
            nodelay_inherited,
        })
    }

    /// The next client.
    pub async fn accept(&self) -> io::Result<(ClientTcp, SocketAddr)> {
        loop {
            let mut ready = self.listener.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| accept_nonblocking(listener.get_ref())) {
                let (stream, peer) = accepted?;
                if !self.nodelay_inherited {
                    let _ = stream.set_nodelay(true);
                }
                return Ok((ClientTcp::new(stream), peer));
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn accept_nonblocking(
    listener: &std::net::TcpListener,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let (socket, peer) =
        socket2::SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let peer = peer
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a connection that is not TCP/IP"))?;
    Ok((socket.into(), peer))
}

#[cfg(not(target_os = "linux"))]
fn accept_nonblocking(
    listener: &std::net::TcpListener,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let (stream, peer) = listener.accept()?;
    stream.set_nonblocking(true)?;
    Ok((stream, peer))
}

/// A client's TCP socket (see the module's documentation).
#[derive(Debug)]
pub struct ClientTcp {
    state: State,
    /// The connection closes after what is written now: writes hold back their last part
    /// so that it leaves with the FIN in one segment.
    closing: bool,
}

#[derive(Debug)]
enum State {
    /// Read and written directly; `read` once already.
    Direct {
        stream: std::net::TcpStream,
        read: bool,
    },
    /// In the runtime's event loop.
    Registered(tokio::net::TcpStream),
    /// Registering failed; the error was returned.
    Failed,
}

impl ClientTcp {
    fn new(stream: std::net::TcpStream) -> Self {
        Self {
            state: State::Direct {
                stream,
                read: false,
            },
            closing: false,
        }
    }

    /// A connection another worker served (`crate::moves`): it waits for its next request,
    /// which may be there already.
    pub(crate) fn moved(stream: std::net::TcpStream) -> Self {
        Self::new(stream)
    }

    /// The socket out of this worker's event loop, for another worker to serve.
    pub(crate) fn into_std(self) -> io::Result<std::net::TcpStream> {
        match self.state {
            State::Direct { stream, .. } => Ok(stream),
            State::Registered(stream) => stream.into_std(),
            State::Failed => Err(io::Error::other("the socket could not join the event loop")),
        }
    }

    /// The CPU the connection's packets last arrived on (`SO_INCOMING_CPU`): on loopback,
    /// the CPU the client sent from.
    pub(crate) fn incoming_cpu(&self) -> Option<usize> {
        let cpu = match &self.state {
            State::Direct { stream, .. } => socket2::SockRef::from(stream).cpu_affinity(),
            State::Registered(stream) => socket2::SockRef::from(stream).cpu_affinity(),
            State::Failed => return None,
        };
        cpu.ok()
    }

    /// What is written from now on is the last the connection carries: it is dropped
    /// right after, and the last part leaves with the FIN. (Until the drop that part is
    /// held back, so nothing may wait between these writes and the drop.)
    pub fn closing(&mut self) {
        self.closing = true;
    }

    /// Whether the socket is in the event loop (for tests).
    #[cfg(test)]
    fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered(_))
    }

    /// The socket in the event loop, registered now if it was not yet.
    fn registered(&mut self) -> io::Result<Pin<&mut tokio::net::TcpStream>> {
        if matches!(self.state, State::Direct { .. }) {
            self.state = match std::mem::replace(&mut self.state, State::Failed) {
                State::Direct { stream, .. } => {
                    State::Registered(tokio::net::TcpStream::from_std(stream)?)
                }
                other => other,
            };
        }
        match &mut self.state {
            State::Registered(stream) => Ok(Pin::new(stream)),
            _ => Err(io::Error::other("the socket could not join the event loop")),
        }
    }

    /// A write: directly while the socket is not registered and the write does not block;
    /// else registered, through tokio.
    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        direct_write: impl FnOnce(&std::net::TcpStream) -> io::Result<usize>,
        registered_write: impl FnOnce(
            Pin<&mut tokio::net::TcpStream>,
            &mut Context<'_>,
        ) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if let State::Direct { stream, .. } = &self.state
            && let Some(done) = direct(direct_write(stream))
        {
            return Poll::Ready(done);
        }
        match self.registered() {
            Ok(stream) => registered_write(stream, cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

/// A write the FIN follows: `MSG_MORE` holds back a last part shorter than a segment until
/// the socket is closed, which then sends it with the FIN (one segment and one wake-up of
/// the client fewer per connection).
#[cfg(target_os = "linux")]
fn write_before_fin(stream: &std::net::TcpStream, buf: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(stream).send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
}

#[cfg(not(target_os = "linux"))]
fn write_before_fin(mut stream: &std::net::TcpStream, buf: &[u8]) -> io::Result<usize> {
    stream.write(buf)
}

/// What a direct operation came to: done, or it would block (register and wait).
fn direct<T>(attempt: io::Result<T>) -> Option<io::Result<T>> {
    match attempt {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => None,
        other => Some(other),
    }
}

impl AsyncRead for ClientTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let State::Direct { stream, read } = &mut this.state
            && !*read
        {
            *read = true;
            let room = buf.remaining().min(FIRST_READ);
            let attempt = FIRST_READ_ROOM.with_borrow_mut(|landing| {
                let landing = &mut landing[..room];
                let read = (&*stream).read(landing);
                if let Ok(n) = read {
                    buf.put_slice(&landing[..n]);
                }
                read
            });
            if let Some(done) = direct(attempt) {
                return Poll::Ready(done.map(|_| ()));
            }
        }
        match this.registered() {
            Ok(stream) => stream.poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for ClientTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let closing = this.closing;
        this.write_with(
            cx,
            |stream| {
                if closing {
                    write_before_fin(stream, buf)
                } else {
                    (&*stream).write(buf)
                }
            },
            |stream, cx| stream.poll_write(cx, buf),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_with(
            cx,
            |mut stream| stream.write_vectored(bufs),
            |stream, cx| stream.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Direct { stream, .. } => Poll::Ready(stream.shutdown(std::net::Shutdown::Write)),
            State::Registered(stream) => Pin::new(stream).poll_shutdown(cx),
            State::Failed => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn listener() -> (ClientListener, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (ClientListener::new(listener).unwrap(), addr)
    }

    #[tokio::test]
    async fn a_request_already_there_is_read_and_answered_without_the_event_loop() {
        let (listener, addr) = listener().await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (mut socket, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let mut head = [0u8; 64];
        let n = socket.read(&mut head).await.unwrap();
        assert_eq!(&head[..n], b"GET / HTTP/1.1\r\n\r\n");
        socket
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        socket.shutdown().await.unwrap();
        assert!(!socket.is_registered());
        drop(socket);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_accepted_socket_has_nodelay_from_the_listener() {
        let (listener, addr) = listener().await;
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let State::Direct { stream, .. } = &socket.state else {
            panic!("registered before any read or write");
        };
        assert!(socket2::SockRef::from(stream).tcp_nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_client_that_sends_later_is_waited_for_in_the_event_loop() {
        let (listener, addr) = listener().await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut socket, _) = listener.accept().await.unwrap();
        let reading = tokio::spawn(async move {
            let mut head = [0u8; 64];
            let n = socket.read(&mut head).await.unwrap();
            (socket, head[..n].to_vec())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"late").await.unwrap();
        let (socket, head) = tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head, b"late");
        assert!(socket.is_registered());
    }

    #[tokio::test]
    async fn a_second_request_on_the_connection_is_read_after_registering() {
        let (listener, addr) = listener().await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"one").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 8];
        let n = socket.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one");
        assert!(!socket.is_registered());
        client.write_all(b"two").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"two");
        assert!(socket.is_registered());
    }

    #[tokio::test]
    async fn a_head_longer_than_the_first_read_arrives_whole() {
        let (listener, addr) = listener().await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let sent: Vec<u8> = (0..3 * FIRST_READ).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        client.shutdown().await.unwrap();
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn a_write_the_client_is_slow_to_take_waits_in_the_event_loop_and_loses_nothing() {
        let (listener, addr) = listener().await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut socket, _) = listener.accept().await.unwrap();
        // Far more than the socket buffers on both sides hold: the direct write fills
        // them and the rest waits for the client to read.
        let sent: Vec<u8> = (0..32 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
        let expected = sent.clone();
        let writing = tokio::spawn(async move {
            socket.write_all(&sent).await.unwrap();
            assert!(socket.is_registered());
            socket.shutdown().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        writing.await.unwrap();
        assert!(
            got == expected,
            "got {} of {} bytes",
            got.len(),
            expected.len()
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_last_answer_of_a_closing_connection_leaves_with_the_fin() {
        let (listener, addr) = listener().await;
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.closing();
        socket
            .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        assert!(!socket.is_registered());
        // Held back for the FIN while the socket is open…
        client.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 128];
        let early = (&client).read(&mut buf);
        assert!(
            early
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock),
            "{early:?}"
        );
        // …and all there, followed by the end, once it is closed.
        drop(socket);
        client.set_nonblocking(false).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        (&client).read_to_end(&mut answer).unwrap();
        assert_eq!(
            answer,
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_client_that_closes_at_once_reads_as_the_end() {
        let (listener, addr) = listener().await;
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        drop(client);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(socket.read(&mut buf).await.unwrap(), 0);
    }
}
