//! A request the express lane ([`crate::express`]) has already sent to a backend, when the
//! response is one the lane leaves to the full path (an event stream nobody announced, a
//! redirect to rewrite, a body to the end of the connection, a head over the limits, no
//! answer at all, …). The full path takes the request from the client's bytes as usual,
//! but instead of sending it again it reads the response already under way: hyper's client
//! runs over the backend socket with the bytes the lane read of it put back in front and
//! its own copy of the request written nowhere. So a backend sees every request once, and
//! the client gets what the full path makes of the response.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use vx11_service::express::Prefixed;

/// The backend exchange the lane started, in a request's extensions (taken once).
#[derive(Clone, Default)]
pub struct AlreadySent(Arc<Mutex<Option<Sent>>>);

/// A backend socket the request went out on, and what was read of it so far.
#[derive(Debug)]
pub struct Sent {
    stream: TcpStream,
    read: Bytes,
}

impl std::fmt::Debug for AlreadySent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlreadySent")
    }
}

impl AlreadySent {
    pub fn new(stream: TcpStream, read: Bytes) -> Self {
        Self(Arc::new(Mutex::new(Some(Sent { stream, read }))))
    }

    pub fn take(&self) -> Option<Sent> {
        self.0.lock().ok().and_then(|mut sent| sent.take())
    }
}

impl Sent {
    /// The backend's response to `request` (already sent), read by hyper's client with the
    /// full path's limits: a read buffer of at most `max_buf` bytes (the largest head) and
    /// at most `max_headers` fields.
    pub async fn response(
        self,
        request: hyper::Request<Body>,
        max_buf: usize,
        max_headers: usize,
    ) -> Result<hyper::Response<Incoming>, hyper::Error> {
        let mut socket = Prefixed::new(self.stream);
        socket.put_back(self.read);
        let io = TokioIo::new(Replayed {
            socket,
            asked: false,
            reader: None,
        });
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(max_buf)
            .max_headers(max_headers)
            .handshake(io)
            .await?;
        // Ends with the response's body (nothing else is sent on it).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        sender.send_request(request).await
    }
}

pin_project_lite::pin_project! {
    /// The backend socket as hyper's client sees it: what was read first, writes dropped.
    /// Nothing is read before hyper has written its request: a response read before it
    /// is one nobody asked for, to hyper.
    struct Replayed {
        #[pin]
        socket: Prefixed<TcpStream>,
        asked: bool,
        reader: Option<Waker>,
    }
}

impl AsyncRead for Replayed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !*this.asked {
            *this.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        this.socket.poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The lane sent the request already; the response may be read now.
        let this = self.project();
        *this.asked = true;
        if let Some(reader) = this.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn the_response_is_read_from_what_was_read_and_the_rest_of_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        let read = Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello");
        far.write_all(b" world").await.unwrap();
        let request = hyper::Request::get("http://backend/x")
            .body(Body::empty())
            .unwrap();
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            AlreadySent::new(near, read)
                .take()
                .unwrap()
                .response(request, 16 * 1024, 100),
        )
        .await
        .expect("no response within 5 s")
        .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello worl");
    }
}
