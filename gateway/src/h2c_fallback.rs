//! Backends that do not speak h2c. The event streams of a module in `VX11_H2C_STREAMS` go
//! over HTTP/2 without TLS; a backend that speaks only HTTP/1.1 (go-httpbin, a Python
//! service) answers the HTTP/2 preface with an HTTP/1.1 response, which h2 reads as a frame
//! of an impossible size (`FRAME_SIZE_ERROR`) or a bad frame (`PROTOCOL_ERROR`). Such a
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
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut preface = [0u8; 24];
            let _ = stream.read_exact(&mut preface).await;
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
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
        assert!(is_not_h2c(&error), "{error:?}");
        assert!(!is_not_h2c(&std::io::Error::other("connection reset")));
    }
}
