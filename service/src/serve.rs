//! Serving until SIGTERM: stop accepting, drain keep-alive connections (each one's next
//! response says `Connection: close`), let in-flight requests finish up to a deadline, and tell
//! open streams to end cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::client_connection::{Client, Worker, next_arrival, serve_connection};
use crate::client_tcp::{ClientListener, ClientTcp};
use crate::connection::Clocks;
use crate::connection_service::OpenConnection;
use crate::hyper_connection::HyperBuilders;
use crate::serving::{
    App, FORWARDING_HEADROOM, H2C_MAX_CONCURRENT_STREAMS, PUBLIC_MAX_CONCURRENT_STREAMS, Protocols,
    Serving,
};
use crate::settings::MIN_HEADER_BYTES;
use crate::shutdown::Shutdown;

/// How long, at most, keep-alive connections are drained before the ones still open are
/// closed. Closing an idle connection races with a client that is just sending its next
/// request on it (the request is lost); answering that request with `Connection: close`
/// instead lets the client open a new connection, to another pod once this one has left the
/// Service's endpoints. Bounded by the shutdown grace.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Serves `app` until `shutdown`, then drains keep-alive connections for up to [`DRAIN`] and
/// waits up to the grace in all for open connections (streams end themselves on
/// `shutdown`). Every connection lives under the listener's limits: it is refused past
/// `max_connections`, closed when idle for `idle_timeout` or when its TLS handshake or a
/// request head takes longer than `header_read_timeout`, and a head over
/// `max_header_bytes` or `max_headers` gets 431. The peer address is in each request's
/// extensions as [`axum::extract::ConnectInfo`]`<SocketAddr>`, and how the client came as
/// [`crate::ClientScheme`].
pub async fn serve_until_shutdown(
    listener: TcpListener,
    app: impl App,
    shutdown: Shutdown,
    serving: Serving,
) -> std::io::Result<()> {
    let clocks = Clocks {
        idle: serving.limits.idle_timeout,
        head: serving.limits.header_read_timeout,
        stall: serving.stall_timeout.saturating_mul(2),
    };
    let mut arrivals = serving
        .moves
        .as_ref()
        .and_then(|moves| moves.take_arrivals());
    let worker = Arc::new(Worker {
        builders: Arc::new(connection_builders(&serving)),
        serving,
        clocks,
        close_all: CancellationToken::new(),
        draining: Arc::new(AtomicBool::new(false)),
    });
    let open = Arc::new(AtomicUsize::new(0));
    let listener = ClientListener::new(listener)?;
    loop {
        let (tcp, peer, admitted) = tokio::select! {
            biased;
            () = shutdown.triggered() => break,
            Some(moved) = next_arrival(&mut arrivals) => {
                (ClientTcp::moved(moved.stream), moved.peer, moved.admitted)
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Some(admitted) = worker.serving.connections.admit() else {
                        drop(tcp);
                        continue;
                    };
                    (tcp, peer, admitted)
                }
                Err(error) => {
                    pause_after_accept_error(&error).await;
                    continue;
                }
            },
        };
        let client = Client {
            tcp,
            peer,
            admitted,
            open: OpenConnection::count(&open),
        };
        tokio::spawn(serve_connection(worker.clone(), app.clone(), client));
    }
    drop(listener);
    // Connections other workers move here from now on are closed, as idle ones are.
    drop(arrivals);
    worker.draining.store(true, Ordering::Relaxed);
    let drain = DRAIN.min(worker.serving.grace);
    let _ = tokio::time::timeout(drain, all_closed(&open)).await;
    worker.close_all.cancel();
    let grace = worker.serving.grace;
    if tokio::time::timeout(grace.saturating_sub(drain), all_closed(&open))
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?grace,
            "connections still open after the shutdown grace period; closing them"
        );
    }
    Ok(())
}

/// Resolves once no connection is left in `open`.
async fn all_closed(open: &AtomicUsize) {
    while open.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn connection_builders(serving: &Serving) -> HyperBuilders {
    let mut builder = AutoBuilder::new(TokioExecutor::new());
    let (max_header_bytes, max_headers) = match serving.protocols {
        Protocols::Http1AndH2c => (
            serving.limits.max_header_bytes + FORWARDING_HEADROOM.bytes,
            serving.limits.max_headers + FORWARDING_HEADROOM.fields,
        ),
        Protocols::Http1 | Protocols::Http1AndH2 => {
            (serving.limits.max_header_bytes, serving.limits.max_headers)
        }
    };
    // The read buffer bounds the request head: a head that does not fit gets 431. (It also
    // bounds what is buffered of a body or of a response for a slow reader.)
    let max_buf = max_header_bytes.max(MIN_HEADER_BYTES);
    match serving.protocols {
        Protocols::Http1 => builder = builder.http1_only(),
        Protocols::Http1AndH2 => {
            builder
                .http2()
                .max_concurrent_streams(PUBLIC_MAX_CONCURRENT_STREAMS)
                .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
                .max_send_buf_size(serving.h2_stream_buffer);
        }
        Protocols::Http1AndH2c => {
            builder
                .http2()
                .max_concurrent_streams(H2C_MAX_CONCURRENT_STREAMS)
                .max_send_buf_size(serving.h2_stream_buffer);
        }
    }
    HyperBuilders::new(builder, max_buf, max_headers)
}

/// Out of file descriptors (or memory): wait a moment instead of spinning on `accept`;
/// an aborted or reset connection is just skipped.
async fn pause_after_accept_error(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::bind_listener;

    #[test]
    fn a_client_socket_keeps_the_tls_state_out_of_line() {
        // Inline, the TLS state made every connection's task 1.2 KiB larger, in the clear
        // too, and every event stream held it.
        let size = std::mem::size_of::<crate::express::ClientSocket>();
        assert!(size <= 64, "a client socket takes {size} bytes");
    }

    /// Sends one request on `stream` and reads its whole answer (the body is "ok").
    async fn exchange(stream: &mut tokio::net::TcpStream) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.ends_with(b"ok") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before the answer: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).to_lowercase()
    }

    #[tokio::test]
    async fn after_shutdown_a_keep_alive_connection_gets_its_next_answer_then_is_closed() {
        use tokio::io::AsyncReadExt as _;
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), "TEST_ADDR").unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let shutdown = Shutdown::new();
        let server = tokio::spawn(serve_until_shutdown(
            listener,
            app,
            shutdown.clone(),
            Serving::with_defaults("api", Protocols::Http1),
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let first = exchange(&mut stream).await;
        assert!(first.starts_with("http/1.1 200") && !first.contains("connection: close"));

        shutdown.trigger();
        // Idle at the moment of shutdown, the connection is not cut: a request sent on it
        // now is answered, with `Connection: close`, and then the server closes it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = exchange(&mut stream).await;
        assert!(second.starts_with("http/1.1 200"), "{second}");
        assert!(second.contains("connection: close"), "{second}");
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0))),
            "not closed after the answer: {closed:?}"
        );
        // With no connection left, serving ends before the drain is over.
        tokio::time::timeout(DRAIN, server)
            .await
            .expect("served past the last connection")
            .unwrap()
            .unwrap();
    }
}
