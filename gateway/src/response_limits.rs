//! The limits of a backend's response head (`VX11_MAX_RESPONSE_HEADER_BYTES`,
//! `VX11_MAX_RESPONSE_HEADERS`) and the answer when a backend goes over them: `502
//! upstream_response_too_large`, naming the settings, so that nobody looks for a backend
//! that is down.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vx11_service::{ApiError, ErrorCode};

use crate::modules::Module;

/// The largest response head the gateway reads from a backend.
#[derive(Debug, Clone, Copy)]
pub struct ResponseLimits {
    /// `VX11_MAX_RESPONSE_HEADER_BYTES`.
    pub header_bytes: usize,
    /// `VX11_MAX_RESPONSE_HEADERS` (HTTP/1.1).
    pub headers: usize,
}

impl ResponseLimits {
    /// The answer for a head over the limits. (hyper tells neither which limit, nor by how
    /// much: both are named.)
    pub fn too_large(&self, module: &Module) -> Response {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamResponseTooLarge,
            format!(
                "the `{}` backend sent a response head over {} bytes (VX11_MAX_RESPONSE_HEADER_BYTES) or over {} header fields (VX11_MAX_RESPONSE_HEADERS); raise the setting, or make the backend send fewer or smaller headers",
                module.name, self.header_bytes, self.headers
            ),
        )
        .into_response()
    }
}

/// `error` (a failed backend request) is hyper finding the response head too large: over
/// the read buffer or over the header count.
pub fn is_response_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            return hyper.is_parse_too_large();
        }
        cause = error.source();
    }
    false
}
