//! The answer to an event-stream request while its backend is down.
//!
//! EventSource gives up for good on any answer that is not `200 text/event-stream`, so a
//! 502 or 504 JSON answer during a backend outage would leave every open console page dead
//! until it is reloaded. A request that asks for an event stream (`Accept:
//! text/event-stream`) therefore gets, instead of the 502 `backend_unavailable` or 504
//! `backend_timeout` JSON, a short stream: a `retry:` line (`VX11_STREAM_RETRY`), one
//! `backend_unavailable` event with the module, the error code and its detail, and the end
//! of the stream. The event has no `id:`, so the client's `Last-Event-ID` stays at the last
//! real event: EventSource reconnects after the retry time with it, and once the backend is
//! back the stream resumes after that event. The failure is counted and logged as before
//! (`vx11_gateway_upstream_errors_total`, the `backend unavailable` warning).

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use vx11_service::{ErrorCode, parse_duration};

/// The setting of the outage stream, a flag and an environment variable of the same name.
#[derive(Debug, Clone, clap::Args)]
pub struct OutageArgs {
    /// While a backend is down, event-stream requests get a short `200 text/event-stream`
    /// answer that tells EventSource to reconnect after this long (its `retry:` field),
    /// rather than a 502/504 that would end it for good.
    #[arg(long, env = "VX11_STREAM_RETRY", default_value = "3s", value_parser = parse_duration)]
    pub stream_retry: Duration,
}

/// The `event:` of the outage stream's one event.
pub const OUTAGE_EVENT: &str = "backend_unavailable";

/// Largest refusal body read for its detail (the gateway's own JSON is far smaller).
const MAX_REFUSAL_BYTES: usize = 16 * 1024;

/// `answer` (the gateway's refusal for a request that asked for an event stream) as the
/// outage stream when it is a 502 `backend_unavailable` or a 504 `backend_timeout`;
/// any other answer unchanged.
pub async fn stream_answer(module: &str, answer: Response, retry: Duration) -> Response {
    let Some(code) = answer.extensions().get::<ErrorCode>().copied() else {
        return answer;
    };
    if !matches!(
        code,
        ErrorCode::BackendUnavailable | ErrorCode::BackendTimeout
    ) {
        return answer;
    }
    let status = answer.status();
    let detail = axum::body::to_bytes(answer.into_body(), MAX_REFUSAL_BYTES)
        .await
        .ok()
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .and_then(|json| {
            json.get("detail")
                .and_then(|d| d.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("the `{module}` backend is not reachable"));
    let data = serde_json::json!({
        "module": module,
        "error": code.as_str(),
        "status": status.as_u16(),
        "detail": detail,
        "retry_ms": retry_ms(retry),
    });
    outage_stream(retry, &data)
}

/// `retry: <ms>`, one event without `id:`, the end.
fn outage_stream(retry: Duration, data: &serde_json::Value) -> Response {
    // Compact JSON is one line: one `data:` line.
    let body = format!(
        "retry: {}\nevent: {OUTAGE_EVENT}\ndata: {data}\n\n",
        retry_ms(retry)
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::OK;
    *response.headers_mut() = vx11_service::event_stream_headers();
    response
}

fn retry_ms(retry: Duration) -> u64 {
    u64::try_from(retry.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use vx11_service::ApiError;

    async fn text(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_down_backend_is_a_stream_that_says_so_and_asks_to_retry() {
        for (status, code) in [
            (StatusCode::BAD_GATEWAY, ErrorCode::BackendUnavailable),
            (StatusCode::GATEWAY_TIMEOUT, ErrorCode::BackendTimeout),
        ] {
            let refusal =
                ApiError::new(status, code, "the `operator` backend is down").into_response();
            let answer = stream_answer("operator", refusal, Duration::from_millis(2500)).await;
            assert_eq!(answer.status(), StatusCode::OK);
            assert_eq!(answer.headers()["content-type"], "text/event-stream");
            assert_eq!(answer.headers()["cache-control"], "no-cache");
            let text = text(answer).await;
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("retry: 2500"));
            assert_eq!(lines.next(), Some("event: backend_unavailable"));
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            let data: serde_json::Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["module"], "operator");
            assert_eq!(data["error"], code.as_str());
            assert_eq!(data["status"], status.as_u16());
            assert_eq!(data["detail"], "the `operator` backend is down");
            assert_eq!(lines.next(), Some(""));
            assert_eq!(lines.next(), None);
            assert!(!text.contains("id:"), "{text}");
            assert!(text.ends_with("\n\n"));
        }
    }

    #[tokio::test]
    async fn other_refusals_are_left_as_they_are() {
        let refusal = ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidBody, "bad chunk")
            .into_response();
        let answer = stream_answer("operator", refusal, Duration::from_secs(3)).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        assert!(text(answer).await.contains("invalid_body"));
    }
}
