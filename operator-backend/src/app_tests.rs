//! The router, driven with `oneshot`: no sockets, a token store filled by hand.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use vx11_service::Shutdown;
use vx11_tokenset::{Origin, SetEntry, TokenDigest, TokenSet, TokenStore};

use crate::config::PolicyMode;
use crate::events::EventKind;
use crate::{AppState, Settings, app};

const TOKEN: &str = "vx11-operator-test-token";
const OTHER: &str = "vx11-other-operator-token";

fn entry(name: &str, token: &str, expires_at: Option<DateTime<Utc>>) -> SetEntry {
    let mut entry = SetEntry::new(name, TokenDigest::of(token.as_bytes()), Origin::TokenFile);
    entry.expires_at = expires_at;
    entry
}

fn state_with(entries: Vec<SetEntry>) -> AppState {
    let store = Arc::new(TokenStore::new());
    if !entries.is_empty() {
        store.install(TokenSet::new(entries), Some(7));
    }
    let settings = Settings {
        policy_mode: PolicyMode::SoloMadre,
        history: crate::events::HistoryLimits {
            events: 100,
            ..crate::events::HistoryLimits::DEFAULT
        },
        sse_keep_alive: Duration::from_secs(15),
        streams: vx11_service::StreamLimits {
            stall_timeout: Duration::from_secs(60),
            buffer_bytes: 64 * 1024,
            max_streams: 100,
            max_streams_per_token: 50,
        },
        tokens_dir: "/var/run/vx11/tokens".into(),
    };
    AppState::new(store, settings, Shutdown::new())
}

fn state() -> AppState {
    state_with(vec![
        entry("operator", TOKEN, None),
        entry("other", OTHER, None),
    ])
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("x-vx11-token", TOKEN)
        .body(Body::empty())
        .unwrap()
}

fn chat(body: impl Into<Body>) -> Request<Body> {
    Request::post("/operator/api/chat")
        .header("x-vx11-token", TOKEN)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn send(state: &AppState, request: Request<Body>) -> Response {
    app(state.clone()).oneshot(request).await.unwrap()
}

async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// The next SSE frame of a response body, as text; `None` at the end.
async fn next_frame(body: &mut Body) -> Option<String> {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an SSE frame within 5 s")?
        .unwrap();
    Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
}

fn field<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

#[tokio::test]
async fn probes_are_public() {
    let (status, body) = json_of(
        send(
            &state(),
            Request::get("/health").body(Body::empty()).unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let response = send(
        &state(),
        Request::get("/ready").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let empty = state_with(vec![]);
    let response = send(&empty, Request::get("/ready").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn operator_health_needs_a_token_and_reports_the_set() {
    let state = state();
    let request = Request::get("/operator/api/health")
        .body(Body::empty())
        .unwrap();
    let (status, body) = json_of(send(&state, request).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "missing_token");

    let request = Request::get("/operator/api/health")
        .header("x-vx11-token", "vx11-not-a-member-token")
        .body(Body::empty())
        .unwrap();
    let (status, body) = json_of(send(&state, request).await).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_token"))
    );

    let (status, body) = json_of(send(&state, get("/operator/api/health")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["mode"], "solo_madre");
    assert_eq!(body["generation"], 7);
    assert_eq!(body["tokens"], 2);
    assert_eq!(body["openStreams"], 0);
    assert_eq!(body["caller"]["name"], "operator");
    assert!(body["loadedAt"].is_string());
    assert!(body["lastError"].is_null());
    assert!(!body.to_string().contains(TOKEN));
}

#[tokio::test]
async fn chat_stores_the_message_as_an_event() {
    let state = state();
    let (status, body) = json_of(send(&state, chat(r#"{"message":"hello"}"#)).await).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["id"].as_u64().unwrap();
    assert!(body["receivedAt"].is_string());
    let events = state.events.subscribe(None).take(usize::MAX, u64::MAX);
    let last = events.last().unwrap();
    assert_eq!((last.id, last.kind), (id, EventKind::Chat));
    let data: Value = serde_json::from_slice(&last.data).unwrap();
    assert_eq!(data["message"], "hello");
    assert_eq!(data["from"]["name"], "operator");

    // No content type is read as JSON too (curl -d without -H).
    let request = Request::post("/operator/api/chat")
        .header("x-vx11-token", TOKEN)
        .body(Body::from(r#"{"message":"hi"}"#))
        .unwrap();
    assert_eq!(send(&state, request).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn chat_refuses_bad_bodies_with_json_errors() {
    let state = state();
    let at_limit = json!({"message": "x".repeat(16 * 1024)}).to_string();
    let over_limit = json!({"message": "x".repeat(16 * 1024 + 1)}).to_string();
    let cases: Vec<(Body, StatusCode, &str)> = vec![
        (
            Body::from("{\"message\":"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Body::from("not json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Body::from("{}"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_message",
        ),
        (
            Body::from("[1]"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_message",
        ),
        (
            Body::from(r#"{"message":null}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_message",
        ),
        (
            Body::from(r#"{"message":""}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_message",
        ),
        (
            Body::from(r#"{"message":"  "}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_message",
        ),
        (
            Body::from(r#"{"message":42}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_message",
        ),
        (
            Body::from(over_limit),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
        (
            Body::from(vec![b' '; 200 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
    ];
    for (body, expected, code) in cases {
        let (status, answer) = json_of(send(&state, chat(body)).await).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (expected, Some(code)),
            "{answer}"
        );
        assert!(answer["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert_eq!(send(&state, chat(at_limit)).await.status(), StatusCode::OK);

    // A client that waits for `100 Continue` is refused before it sends the body.
    let request = Request::post("/operator/api/chat")
        .header("x-vx11-token", TOKEN)
        .header(header::CONTENT_LENGTH, "10000000")
        .header(header::EXPECT, "100-continue")
        .body(Body::empty())
        .unwrap();
    let (status, answer) = json_of(send(&state, request).await).await;
    assert_eq!(
        (status, &answer["error"]),
        (StatusCode::PAYLOAD_TOO_LARGE, &json!("message_too_large"))
    );

    let request = Request::post("/operator/api/chat")
        .header("x-vx11-token", TOKEN)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("hello"))
        .unwrap();
    let (status, answer) = json_of(send(&state, request).await).await;
    assert_eq!(
        (status, &answer["error"]),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &json!("unsupported_media_type")
        )
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let (status, body) = json_of(send(&state(), get("/operator/api/nope")).await).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    let (status, body) = json_of(send(&state(), get("/operator/api/chat")).await).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::METHOD_NOT_ALLOWED, &json!("method_not_allowed"))
    );
}

#[tokio::test]
async fn replay_sends_the_history_and_ends() {
    let state = state();
    for message in ["one", "two", "three"] {
        send(&state, chat(json!({ "message": message }).to_string())).await;
    }
    let response = send(&state, get("/operator/api/events")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.into_body();
    let mut ids = Vec::new();
    while let Some(frame) = next_frame(&mut body).await {
        assert_eq!(field(&frame, "event"), Some("chat"));
        ids.push(field(&frame, "id").unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    // Resume after the first, by header and by query; the header wins.
    for request in [
        Request::get("/operator/api/events")
            .header("x-vx11-token", TOKEN)
            .header("last-event-id", ids[0].to_string())
            .body(Body::empty())
            .unwrap(),
        get(&format!("/operator/api/events?lastEventId={}", ids[0])),
        Request::get("/operator/api/events?lastEventId=1")
            .header("x-vx11-token", TOKEN)
            .header("last-event-id", ids[0].to_string())
            .body(Body::empty())
            .unwrap(),
    ] {
        let body = send(&state, request)
            .await
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains(&format!("id: {}\n", ids[0])), "{text}");
        assert!(text.contains(&format!("id: {}\n", ids[2])), "{text}");
    }
    assert_eq!(state.metrics.streams.open(), 0);
    assert_eq!(state.events.subscribers(), 0);
}

#[tokio::test]
async fn bad_stream_parameters_are_400() {
    for uri in [
        "/operator/api/events?follow=maybe",
        "/operator/api/events?lastEventId=abc",
        "/operator/api/events/stream?lastEventId=-1",
    ] {
        let (status, body) = json_of(send(&state(), get(uri)).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
    }
}

/// Opens a following stream and reads past its replay.
async fn open_stream(state: &AppState, uri: &str) -> Body {
    let response = send(state, get(uri)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

#[tokio::test]
async fn a_following_stream_gets_live_events_and_releases_everything_when_dropped() {
    let state = state();
    let mut body = open_stream(&state, "/operator/api/events/stream").await;
    assert_eq!(state.metrics.streams.open(), 1);
    assert_eq!(state.events.subscribers(), 1);

    send(&state, chat(r#"{"message":"live"}"#)).await;
    let frame = next_frame(&mut body).await.unwrap();
    assert_eq!(field(&frame, "event"), Some("chat"));
    assert!(field(&frame, "data").unwrap().contains("\"live\""));

    drop(body);
    assert_eq!(
        state.metrics.streams.open(),
        0,
        "open-stream gauge back to 0"
    );
    assert_eq!(state.events.subscribers(), 0, "subscription dropped");
    let metrics = render_metrics(&state);
    assert!(
        metrics.contains("vx11_backend_streams_ended_total{reason=\"disconnected\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn follow_false_on_the_stream_route_and_follow_true_on_events() {
    let state = state();
    send(&state, chat(r#"{"message":"x"}"#)).await;
    let body = send(&state, get("/operator/api/events/stream?follow=false")).await;
    let text = body.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("event: chat"));

    let mut body = open_stream(&state, "/operator/api/events?follow=true").await;
    assert!(next_frame(&mut body).await.unwrap().contains("event: chat"));
    send(&state, chat(r#"{"message":"y"}"#)).await;
    assert!(next_frame(&mut body).await.unwrap().contains("\"y\""));
}

#[tokio::test]
async fn a_revoked_token_ends_its_stream_with_an_auth_event() {
    let state = state();
    let mut body = open_stream(&state, "/operator/api/events/stream").await;
    // A stream opened with the other token, by query parameter.
    let request = Request::get(format!("/operator/api/events/stream?token={OTHER}"))
        .body(Body::empty())
        .unwrap();
    let mut other = send(&state, request).await.into_body();

    state
        .store
        .install(TokenSet::new(vec![entry("other", OTHER, None)]), Some(8));
    let frame = next_frame(&mut body).await.unwrap();
    assert_eq!(field(&frame, "event"), Some("auth"));
    assert_eq!(field(&frame, "id"), None);
    let data: Value = serde_json::from_str(field(&frame, "data").unwrap()).unwrap();
    assert_eq!(data["error"], "token_revoked");
    assert_eq!(data["name"], "operator");
    assert!(!frame.contains(TOKEN));
    assert_eq!(
        next_frame(&mut body).await,
        None,
        "the stream ends after the auth event"
    );
    assert_eq!(
        state.metrics.streams.open(),
        1,
        "the other stream stays open"
    );

    state
        .events
        .publish(EventKind::Chat, &json!({"message": "still here"}))
        .unwrap();
    assert!(next_frame(&mut other).await.unwrap().contains("still here"));
    drop(other);
    let metrics = render_metrics(&state);
    assert!(metrics.contains("reason=\"token_revoked\"} 1"), "{metrics}");
}

#[tokio::test]
async fn an_expiring_token_ends_its_stream_at_the_expiry() {
    let expires_at = Utc::now() + chrono::Duration::milliseconds(300);
    let state = state_with(vec![entry("operator", TOKEN, Some(expires_at))]);
    let mut body = open_stream(&state, "/operator/api/events/stream").await;
    let frame = next_frame(&mut body).await.unwrap();
    let ended = Utc::now();
    assert_eq!(field(&frame, "event"), Some("auth"));
    assert!(frame.contains("\"expired_token\""), "{frame}");
    assert!(ended >= expires_at, "not before the expiry");
    assert!(
        ended - expires_at < chrono::Duration::seconds(1),
        "within 1 s of it"
    );
    assert_eq!(next_frame(&mut body).await, None);
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let state = state();
    let mut body = open_stream(&state, "/operator/api/events/stream").await;
    state.shutdown.trigger();
    assert_eq!(next_frame(&mut body).await, None);
    assert_eq!(state.metrics.streams.open(), 0);
    assert!(render_metrics(&state).contains("reason=\"shutdown\"} 1"));
}

#[tokio::test]
async fn keep_alive_comments_on_a_quiet_stream() {
    let mut state = state();
    state.settings = Arc::new(Settings {
        sse_keep_alive: Duration::from_millis(50),
        ..(*state.settings).clone()
    });
    let mut body = open_stream(&state, "/operator/api/events/stream").await;
    assert_eq!(
        next_frame(&mut body).await.as_deref(),
        Some(": keep-alive\n\n")
    );
    // After an event, the next quiet interval brings the next comment.
    send(&state, chat(r#"{"message":"between"}"#)).await;
    assert!(next_frame(&mut body).await.unwrap().contains("\"between\""));
    assert_eq!(
        next_frame(&mut body).await.as_deref(),
        Some(": keep-alive\n\n")
    );
}

fn render_metrics(state: &AppState) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry).unwrap();
    text
}

fn with_streams(state: &mut AppState, streams: vx11_service::StreamLimits) {
    state.settings = Arc::new(Settings {
        streams,
        ..(*state.settings).clone()
    });
    state.slots = vx11_service::StreamSlots::new(&state.settings.streams);
}

fn limits(stall: Duration, buffer_bytes: usize) -> vx11_service::StreamLimits {
    vx11_service::StreamLimits {
        stall_timeout: stall,
        buffer_bytes,
        max_streams: 100,
        max_streams_per_token: 50,
    }
}

/// The next data frame, kept (as hyper keeps what it has not written yet); `None` when the
/// body is waiting.
async fn frame_within(body: &mut Body, limit: Duration) -> Option<Result<Bytes, String>> {
    let frame = tokio::time::timeout(limit, body.frame()).await.ok()??;
    Some(
        frame
            .map(|frame| frame.into_data().unwrap())
            .map_err(|e| e.to_string()),
    )
}

#[tokio::test]
async fn a_stream_holds_at_most_its_buffer_and_takes_more_once_the_client_reads() {
    let mut state = state();
    with_streams(&mut state, limits(Duration::from_secs(60), 10_000));
    let message = "m".repeat(1_000);
    for _ in 0..50 {
        send(&state, chat(json!({ "message": message }).to_string())).await;
    }
    let mut body = open_stream(&state, "/operator/api/events?follow=false").await;
    // Frames kept unread: the stream stops at its buffer, whatever is left to replay.
    let mut held = Vec::new();
    while let Some(frame) = frame_within(&mut body, Duration::from_millis(300)).await {
        held.push(frame.unwrap());
    }
    let held_bytes: usize = held.iter().map(Bytes::len).sum();
    assert!(!held.is_empty());
    assert!(
        held_bytes <= 10_000 + 1_200,
        "{held_bytes} bytes held in {} frames",
        held.len()
    );
    // The client reads them: the stream goes on from its cursor, to the end of the replay.
    // (A frame may reach hyper in pieces: the events are counted in the bytes.)
    let mut received: Vec<u8> = held.iter().flat_map(|frame| frame.to_vec()).collect();
    held.clear();
    while let Some(frame) = frame_within(&mut body, Duration::from_secs(5)).await {
        received.extend_from_slice(&frame.unwrap());
    }
    let text = String::from_utf8(received).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        (ids.len(), unique.len()),
        (50, 50),
        "every event once, none lost or repeated"
    );
}

#[tokio::test]
async fn a_stream_whose_client_reads_nothing_is_dropped_after_the_stall_timeout() {
    let mut state = state();
    with_streams(&mut state, limits(Duration::from_millis(300), 64 * 1024));
    send(&state, chat(r#"{"message":"one"}"#)).await;
    let mut body = open_stream(&state, "/operator/api/events/stream").await;
    let opened = std::time::Instant::now();
    let unread = frame_within(&mut body, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let end = frame_within(&mut body, Duration::from_secs(5))
        .await
        .unwrap();
    let error = end.unwrap_err();
    assert!(
        error.contains("read nothing") && error.contains("VX11_STREAM_STALL_TIMEOUT"),
        "{error}"
    );
    assert!(opened.elapsed() >= Duration::from_millis(300));
    drop(unread);
    assert_eq!(state.metrics.streams.open(), 0);
    assert_eq!(state.slots.open(), 0, "the slot is given back");
    assert!(render_metrics(&state).contains("reason=\"stalled\"} 1"));
}

#[tokio::test]
async fn a_quiet_stream_whose_client_has_everything_is_not_stalled() {
    let mut state = state();
    with_streams(&mut state, limits(Duration::from_millis(200), 64 * 1024));
    let mut body = open_stream(&state, "/operator/api/events/stream").await;
    // Nothing to send for three stall timeouts: the stream waits, it is not dropped.
    assert!(
        frame_within(&mut body, Duration::from_millis(600))
            .await
            .is_none()
    );
    send(&state, chat(r#"{"message":"later"}"#)).await;
    let frame = frame_within(&mut body, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&frame).contains("later"));
}

#[tokio::test]
async fn streams_over_the_caps_are_refused_before_they_start() {
    let mut state = state();
    with_streams(
        &mut state,
        vx11_service::StreamLimits {
            max_streams: 3,
            max_streams_per_token: 2,
            ..limits(Duration::from_secs(60), 64 * 1024)
        },
    );
    let first = open_stream(&state, "/operator/api/events/stream").await;
    let _second = open_stream(&state, "/operator/api/events/stream").await;
    let (status, body) = json_of(send(&state, get("/operator/api/events/stream")).await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "too_many_streams_for_token");
    let other = |uri: &str| {
        Request::get(uri)
            .header("x-vx11-token", OTHER)
            .body(Body::empty())
            .unwrap()
    };
    let third = send(&state, other("/operator/api/events")).await;
    assert_eq!(third.status(), StatusCode::OK);
    let (status, body) = json_of(send(&state, other("/operator/api/events/stream")).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "too_many_streams");
    drop(first);
    assert_eq!(
        send(&state, get("/operator/api/events/stream"))
            .await
            .status(),
        StatusCode::OK
    );
    drop(third);
    assert!(
        render_metrics(&state).contains("streams_refused_total{reason=\"too_many_streams\"} 1")
    );
}

#[tokio::test]
async fn a_chat_message_whose_event_is_too_large_once_escaped_gets_413() {
    let state = state();
    // 16 KiB of control characters: within the message limit, 98 KB once escaped.
    let control = json!({ "message": "\u{1}".repeat(16 * 1024) }).to_string();
    let (status, body) = json_of(send(&state, chat(control)).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "message_too_large");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("65536") && detail.contains("VX11_MAX_EVENT_BYTES"),
        "{detail}"
    );
    assert_eq!(state.events.last_id(), None, "nothing stored");
    // 16 KiB of quotes is 32 KiB once escaped: stored.
    let quotes = json!({ "message": "\"".repeat(16 * 1024) }).to_string();
    assert_eq!(send(&state, chat(quotes)).await.status(), StatusCode::OK);
}
