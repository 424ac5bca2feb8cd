//! Opening a connection to a backend: bounded connect time, no Nagle delay, and a short retry
//! when the backend refuses.
//!
//! A refused connection has sent nothing, so trying again is safe for any request. Two
//! moments of a healthy cluster refuse for a fraction of a second: a gateway pod that has just
//! started, before the NetworkPolicy enforcer has let its new address reach the backend (a
//! rolling update lost 2 of 2 380 requests to that on the test node), and a backend container
//! that kubelet is restarting. Past [`REFUSED_RETRY_FOR`] the refusal is the answer (502).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::Service;

/// How long a refused connection is tried again, with growing pauses (25 ms, 50 ms, …), at
/// most: never more than half the time a request may wait for its response head, so that a
/// backend that stays down is still a 502, not a 504.
pub const REFUSED_RETRY_FOR: Duration = Duration::from_secs(2);

/// hyper's connector with the retry on refusal.
#[derive(Debug, Clone)]
pub struct BackendConnector {
    inner: HttpConnector,
    retry_for: Duration,
}

impl BackendConnector {
    /// `response_timeout` is the time a request may wait for its response head.
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        let mut inner = HttpConnector::new();
        inner.set_connect_timeout(Some(connect_timeout));
        inner.set_nodelay(true);
        Self {
            inner,
            retry_for: REFUSED_RETRY_FOR.min(response_timeout / 2),
        }
    }
}

type Connected = <HttpConnector as Service<Uri>>::Response;
type ConnectError = <HttpConnector as Service<Uri>>::Error;

impl Service<Uri> for BackendConnector {
    type Response = Connected;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let retry_for = self.retry_for;
        Box::pin(async move {
            let give_up = Instant::now() + retry_for;
            let mut pause = Duration::from_millis(25);
            loop {
                match inner.call(uri.clone()).await {
                    Err(error) if is_refused(&error) && Instant::now() + pause < give_up => {
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    done => return done,
                }
            }
        })
    }
}

fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backend_that_starts_listening_within_the_retry_time_is_reached() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let uri: Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let _ = listener.accept().await;
        });
        let connected = BackendConnector::new(Duration::from_secs(1), Duration::from_secs(10))
            .call(uri)
            .await;
        assert!(connected.is_ok(), "{connected:?}");
        late.await.unwrap();
    }

    #[tokio::test]
    async fn a_backend_that_stays_down_is_refused_after_the_retry_time() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let uri: Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
        let refused = BackendConnector::new(Duration::from_secs(1), Duration::from_secs(10))
            .call(uri)
            .await;
        let error = refused.expect_err("nothing listens there");
        assert!(is_refused(&error), "{error:?}");
    }
}
