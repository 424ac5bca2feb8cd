//! WebSocket through the gateway: a real WebSocket backend (tokio-tungstenite) and client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{OTHER_TOKEN, TOKEN, eventually, gateway, raw_backend};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use vx11_tokenset::{Origin, SetEntry, TokenDigest, TokenSet};

/// An echo WebSocket backend; counts the upgrades it accepted.
async fn echo_backend() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrades = Arc::new(AtomicUsize::new(0));
    let count = upgrades.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        if ws.send(message).await.is_err() {
                            return;
                        }
                    } else if message.is_close() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), upgrades)
}

fn ws_url(gateway: &common::RunningGateway, query: &str) -> String {
    format!("ws://{}/operator/api/ws{query}", gateway.addr)
}

async fn connect_with_header(
    url: &str,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Error,
> {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-vx11-token", token.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn text_and_binary_are_echoed_through_the_gateway_and_the_slot_comes_back() {
    let (backend, upgrades) = echo_backend().await;
    let gw = gateway(&backend, &[]).await;
    let mut ws = connect_with_header(&ws_url(&gw, ""), TOKEN).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    assert_eq!(upgrades.load(Ordering::SeqCst), 1);
    assert_eq!(gw.slots.open(), 1);
    assert_eq!(gw.metrics.open_tunnels.get(), 1);
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    assert!(
        eventually(Duration::from_secs(5), || gw.slots.open() == 0
            && gw.metrics.open_tunnels.get() == 0)
        .await
    );
}

#[tokio::test]
async fn the_token_in_the_query_works_and_a_missing_or_bad_one_gets_401_before_the_backend() {
    let (backend, upgrades) = echo_backend().await;
    let gw = gateway(&backend, &[]).await;
    for url in [ws_url(&gw, ""), ws_url(&gw, "?token=vx11-not-a-token")] {
        match tokio_tungstenite::connect_async(url).await {
            Err(Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("not refused: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(upgrades.load(Ordering::SeqCst), 0);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&gw, &format!("?token={TOKEN}")))
        .await
        .unwrap();
    ws.send(Message::text("q")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("q"));
}

#[tokio::test]
async fn a_backend_refusing_the_upgrade_is_passed_on_as_is() {
    let (addr, _) = raw_backend(|_| {
        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\nx-why: backend\r\n\r\nnot ok".to_vec()
    })
    .await;
    let gw = gateway(&format!("http://{addr}"), &[]).await;
    match connect_with_header(&ws_url(&gw, ""), TOKEN).await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            assert_eq!(response.headers()["x-why"], "backend");
        }
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    assert!(eventually(Duration::from_secs(5), || gw.slots.open() == 0).await);
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_the_tunnel() {
    let (backend, _) = echo_backend().await;
    let gw = gateway(&backend, &["--websocket-max-frame-bytes", "1024"]).await;
    let mut ws = connect_with_header(&ws_url(&gw, ""), TOKEN).await.unwrap();
    ws.send(Message::binary(vec![7u8; 1000])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().len(), 1000);
    let _ = ws.send(Message::binary(vec![7u8; 4096])).await;
    // The next thing the client hears is the close (1009), or the end of the connection.
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        Some(Ok(Message::Close(None))) => {}
        Some(Ok(other)) => panic!("the large frame came back: {} bytes", other.len()),
        None | Some(Err(_)) => {}
    }
    assert!(
        eventually(Duration::from_secs(5), || gw
            .metrics
            .ended_tunnels
            .get_or_create(&vx11_gateway::metrics::TunnelEndLabel {
                reason: "too_large"
            })
            .get()
            == 1)
        .await
    );
    assert!(eventually(Duration::from_secs(5), || gw.slots.open() == 0).await);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let (backend, _) = echo_backend().await;
    let gw = gateway(&backend, &["--websocket-idle-timeout", "300ms"]).await;
    let mut ws = connect_with_header(&ws_url(&gw, ""), TOKEN).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("not closed as idle: {other:?}"),
    }
    assert!(
        eventually(Duration::from_secs(5), || gw.metrics.open_tunnels.get()
            == 0)
        .await
    );
}

#[tokio::test]
async fn the_per_token_cap_refuses_a_second_tunnel_with_429() {
    let (backend, upgrades) = echo_backend().await;
    let gw = gateway(&backend, &["--max-streams-per-token", "1"]).await;
    let _first = connect_with_header(&ws_url(&gw, ""), TOKEN).await.unwrap();
    match connect_with_header(&ws_url(&gw, ""), TOKEN).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    assert_eq!(upgrades.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_backend_closing_closes_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    let gw = gateway(&format!("http://{addr}"), &[]).await;
    let mut ws = connect_with_header(&ws_url(&gw, ""), TOKEN).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Close(_)))));
    while ws.next().await.is_some() {}
    drop(ws);
    assert!(eventually(Duration::from_secs(5), || gw.slots.open() == 0).await);
}

/// The next message that is not an echo of ours: the close frame's code, or `None` when the
/// connection ended without one.
async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<CloseCode> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
            Err(_) => panic!("no close within 10 s"),
        }
    }
}

async fn echoes(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    text: &str,
) -> bool {
    if ws.send(Message::text(text)).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(5), ws.next()).await,
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text
    )
}

#[tokio::test]
async fn a_token_removed_from_the_set_closes_its_open_tunnels_with_1008_and_no_other() {
    let (backend, upgrades) = echo_backend().await;
    let gw = gateway(&backend, &[]).await;
    let mut revoked = connect_with_header(&ws_url(&gw, ""), TOKEN).await.unwrap();
    let mut kept = connect_with_header(&ws_url(&gw, ""), OTHER_TOKEN)
        .await
        .unwrap();
    assert!(echoes(&mut revoked, "before").await);
    assert!(echoes(&mut kept, "before").await);

    // A reload without `operator`: its tunnel ends, `console`'s goes on.
    gw.store.install(
        TokenSet::new(vec![SetEntry::new(
            "console",
            TokenDigest::of(OTHER_TOKEN.as_bytes()),
            Origin::TokenFile,
        )]),
        Some(2),
    );
    assert_eq!(close_code(&mut revoked).await, Some(CloseCode::Policy));
    assert!(!echoes(&mut revoked, "after").await, "the tunnel is gone");
    assert!(echoes(&mut kept, "after").await);
    assert_eq!(upgrades.load(Ordering::SeqCst), 2);
    assert!(eventually(Duration::from_secs(5), || gw.slots.open() == 1).await);
    // And the value is refused from now on, at the upgrade.
    match connect_with_header(&ws_url(&gw, ""), TOKEN).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn on_shutdown_open_tunnels_get_1001_and_their_slots_come_back() {
    let (backend, _) = echo_backend().await;
    let gw = gateway(&backend, &[]).await;
    let mut tunnels = Vec::new();
    for token in [TOKEN, OTHER_TOKEN, TOKEN] {
        let mut ws = connect_with_header(&ws_url(&gw, ""), token).await.unwrap();
        assert!(echoes(&mut ws, "up").await);
        tunnels.push(ws);
    }
    assert_eq!(gw.slots.open(), 3);
    gw.shutdown.trigger();
    for ws in &mut tunnels {
        assert_eq!(close_code(ws).await, Some(CloseCode::Away));
    }
    assert!(eventually(Duration::from_secs(5), || gw.slots.open() == 0).await);
}
