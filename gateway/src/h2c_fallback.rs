//! Backends that do not speak h2c. The event streams of a module in `VX11_H2C_STREAMS` go
//! over HTTP/2 without TLS; a backend that speaks only HTTP/1.1 (go-httpbin, a Python
//! service) answers the HTTP/2 preface with an HTTP/1.1 response, which h2 reads as a frame
//! of an impossible size (`FRAME_SIZE_ERROR`) or a bad frame (`PROTOCOL_ERROR`), or, when
//! the backend closes first, as a broken pipe; after any failure of an h2c request, a short
//! probe ([`answers_http1`]) tells a backend that answers HTTP/1.1 from one that is down or
//! broken in another way. Such a
//! backend is remembered here, for the whole process (all workers share one set: a backend
//! either speaks h2c or not, whichever worker asks, and one log line per backend is enough),
//! and its event streams go over HTTP/1.1 from then on, until the gateway restarts.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// The backends (by base URL) whose event streams go over HTTP/1.1 instead of h2c.
#[derive(Debug, Default)]
pub struct H2cFallbacks(Mutex<HashSet<String>>);

impl H2cFallbacks {
    /// `backend` was found not to speak h2c.
    pub fn falls_back(&self, backend: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(backend)
    }

    /// Remembers `backend`; true the first time (for the one log line).
    pub fn remember(&self, backend: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(backend.to_owned())
    }
}

/// `error` (a failed h2c request) says the backend answered the HTTP/2 preface with
/// something that is not HTTP/2: h2 itself found the peer's bytes invalid as frames.
pub fn is_not_h2c(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_library()
                && matches!(
                    h2.reason(),
                    Some(h2::Reason::FRAME_SIZE_ERROR | h2::Reason::PROTOCOL_ERROR)
                );
        }
        cause = error.source();
    }
    false
}

/// Sends the HTTP/2 preface to `authority` on a new connection: true if the answer starts
/// with `HTTP/` (an HTTP/1.x server). Down, silent or speaking HTTP/2: false.
pub async fn answers_http1(authority: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        stream.write_all(PREFACE).await.ok()?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// How long the probe waits for the backend's first bytes.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_is_remembered_once() {
        let fallbacks = H2cFallbacks::default();
        assert!(!fallbacks.falls_back("http://a:1"));
        assert!(fallbacks.remember("http://a:1"));
        assert!(!fallbacks.remember("http://a:1"));
        assert!(fallbacks.falls_back("http://a:1"));
        assert!(!fallbacks.falls_back("http://b:1"));
    }

    #[tokio::test]
    async fn an_http1_backend_answering_the_preface_is_not_h2c() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut preface = [0u8; 24];
                let _ = stream.read_exact(&mut preface).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let client = crate::upstream::stream_client(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(5),
            65_535,
            16 * 1024,
        );
        let request = hyper::Request::get(format!("http://{addr}/x"))
            .body(axum::body::Body::empty())
            .unwrap();
        let error = client.request(request).await.unwrap_err();
        // h2 reads the answer as a bad frame, or finds the connection closed first.
        let _ = error;
        assert!(answers_http1(&addr.to_string()).await);
        assert!(!is_not_h2c(&std::io::Error::other("connection reset")));
        let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let down_addr = down.local_addr().unwrap().to_string();
        drop(down);
        assert!(!answers_http1(&down_addr).await);
    }
}
