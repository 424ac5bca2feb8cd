//! An answer the gateway makes itself in the express lane (an [`vx11_service::ApiError`],
//! such as the backend's timeout), written to the client as hyper would write it.

use axum::response::Response;
use tokio::io::AsyncWriteExt as _;

use super::{request, response};

/// Writes an answer made by the gateway itself (an [`vx11_service::ApiError`]) as hyper
/// would; its status, or `None` when the client's socket failed.
pub async fn write_answer(
    answer: Response,
    close: bool,
    client: &mut vx11_service::express::ClientIo,
    out: &mut Vec<u8>,
) -> Option<u16> {
    let (parts, body) = answer.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024).await.ok()?;
    out.clear();
    response::push_status_line(out, parts.status);
    for (name, value) in &parts.headers {
        request::push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if close {
        request::push_field(out, b"connection", b"close");
    }
    request::push_field(out, b"content-length", body.len().to_string().as_bytes());
    response::push_date_field(out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    if close {
        vx11_service::express::closing(client);
    }
    client.write_all(out).await.ok()?;
    out.clear();
    Some(parts.status.as_u16())
}
