//! The upstream of the proxy benchmark: hyper's HTTP/1.1 server with nothing else, so that
//! the figures show the proxies, not the backend. Every request gets `200` and a small JSON
//! body; request bodies are read and dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

const BODY: &[u8] = br#"{"status":"ok","service":"vx11-bench-upstream"}"#;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on (loopback).
    #[arg(long, default_value = "127.0.0.1:18080")]
    addr: SocketAddr,
    /// Exit after this many seconds whatever happens (the benchmark is bounded).
    #[arg(long, default_value_t = 3600)]
    lifetime_secs: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.addr.ip().is_loopback(),
        "the bench upstream serves on loopback only"
    );
    // A deep backlog, like nginx's `listen … backlog=4096`, so a burst of new connections
    // from a proxy's pool never waits on a SYN retry.
    let listener = (|| {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(args.addr)?;
        socket.listen(4096)
    })()
    .with_context(|| format!("binding {}", args.addr))?;
    let serve = async {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(answer))
                    .await;
            });
        }
    };
    tokio::select! {
        () = serve => Ok(()),
        () = tokio::time::sleep(Duration::from_secs(args.lifetime_secs)) => Ok(()),
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body so the connection can be reused; its content does not matter.
    let _ = request.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
