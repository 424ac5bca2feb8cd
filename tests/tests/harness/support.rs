//! Helpers shared by the control-plane tests.

use std::time::Duration;

/// How long a condition that a controller or the API server brings about may take.
pub const SETTLE: Duration = Duration::from_secs(60);

/// The HTTP status of a failed API call, or a description of why there is none.
pub fn api_status<T: std::fmt::Debug>(result: &Result<T, kube::Error>) -> Result<u16, String> {
    match result {
        Err(kube::Error::Api(status)) => Ok(status.code),
        other => Err(format!("expected an API error, got {other:?}")),
    }
}
