//! Serving until SIGTERM: stop accepting, let in-flight requests finish up to a deadline,
//! and tell open streams to end cleanly.

use std::future::IntoFuture;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Pending connections the kernel queues for a listener. `TcpListener::bind` asks for std's
/// 128: a burst of new connections beyond that (EventSource clients reconnecting after a
/// restart) has SYNs dropped and retried only after 1 s. The kernel caps it at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` with [`LISTEN_BACKLOG`]; the error names the address and the setting
/// it came from.
pub fn bind_listener(addr: std::net::SocketAddr, setting: &str) -> std::io::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|error: std::io::Error| {
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {addr} ({setting}): {error}"),
        )
    })
}

/// Cancelled on SIGTERM or SIGINT. Streams watch it to end themselves.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels on the first SIGTERM or SIGINT.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let token = self.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            token.cancel();
        });
        Ok(())
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    pub async fn triggered(&self) {
        self.0.cancelled().await
    }

    pub fn token(&self) -> &CancellationToken {
        &self.0
    }
}

/// Serves `app` until `shutdown`, then waits up to `grace` for open connections.
pub async fn serve_until_shutdown(
    listener: TcpListener,
    app: Router,
    shutdown: Shutdown,
    grace: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let signal = shutdown.clone();
    // Small responses and SSE events go out at once rather than waiting on Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { signal.triggered().await })
    .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = shutdown.triggered() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?grace,
                "connections still open after the shutdown grace period; closing them"
            );
            Ok(())
        }
    }
}
