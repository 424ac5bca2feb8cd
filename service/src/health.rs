//! `GET /health` (liveness, public) and `GET /ready` (a non-empty token set is loaded).
//!
//! Both are public, so they say only whether the service is ready, the generation it serves
//! (also on the metrics port's `/generation`) and a generic reason. Why a token file was
//! refused stays in the logs, the `vx11_tokens_load_error` metric and the backend's
//! authenticated `/operator/api/health`: an error may name paths and positions, and a
//! public probe is no place for either.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use vx11_tokenset::TokenStore;

/// The two public probe routes; `tokens_dir` is named in the not-ready answer.
pub fn health_routes(store: Arc<TokenStore>, tokens_dir: String) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .with_state((store, Arc::<str>::from(tokens_dir)))
}

/// Where the details of a refused token source are.
const DETAILS_ELSEWHERE: &str =
    "details in the service's logs, the vx11_tokens_load_error metric and the authenticated health";

async fn ready(
    State((store, dir)): State<(Arc<TokenStore>, Arc<str>)>,
) -> (StatusCode, Json<Value>) {
    let snapshot = store.snapshot();
    let refused = store.health().last_error.is_some();
    let ready = !snapshot.set.is_empty();
    let (reason, detail) = match (ready, refused) {
        (true, false) => return (StatusCode::OK, Json(body("ready", &snapshot))),
        (true, true) => (
            "token_source_refused",
            format!(
                "serving the last good token set; the newest token files were refused ({DETAILS_ELSEWHERE})"
            ),
        ),
        (false, true) => (
            "token_source_refused",
            format!("no tokens loaded: the token files were refused ({DETAILS_ELSEWHERE})"),
        ),
        (false, false) => (
            "no_tokens",
            format!(
                "no tokens loaded: put tokens.json (or a plain `tokens` list) in {dir}, or set VX11_OPERATOR_TOKEN"
            ),
        ),
    };
    let mut answer = body(if ready { "ready" } else { "not_ready" }, &snapshot);
    answer["reason"] = json!(reason);
    answer["detail"] = json!(detail);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(answer))
}

fn body(status: &str, snapshot: &vx11_tokenset::Snapshot) -> Value {
    json!({"status": status, "generation": snapshot.generation})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;
    use vx11_tokenset::{Origin, SetEntry, TokenDigest, TokenSet};

    async fn ready_of(store: &Arc<TokenStore>) -> (StatusCode, Value) {
        let response = health_routes(store.clone(), "/etc/vx11/tokens".into())
            .oneshot(Request::get("/ready").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn one_token() -> TokenSet {
        TokenSet::new(vec![SetEntry::new(
            "operator",
            TokenDigest::of(b"vx11-operator-test-token"),
            Origin::TokenFile,
        )])
    }

    #[tokio::test]
    async fn ready_says_only_ready_and_a_generic_reason() {
        let store = Arc::new(TokenStore::new());
        let (status, body) = ready_of(&store).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "no_tokens");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("/etc/vx11/tokens")
        );

        store.install(one_token(), Some(3));
        let (status, body) = ready_of(&store).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "ready", "generation": 3}));

        let error = "/etc/vx11/tokens/tokens.json not valid JSON: vx11_secret_looking_detail";
        store.record_error(error.into());
        let (status, body) = ready_of(&store).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ready");
        assert_eq!(body["reason"], "token_source_refused");
        assert!(!body.to_string().contains("secret_looking"), "{body}");
        assert!(!body.to_string().contains("tokens.json"), "{body}");

        store.install(TokenSet::default(), Some(4));
        store.record_error(error.into());
        let (status, body) = ready_of(&store).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], "token_source_refused");
        assert!(!body.to_string().contains("secret_looking"), "{body}");
    }
}
