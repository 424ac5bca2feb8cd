//! Bounded waits: tests wait for a condition with a deadline, never for a fixed time.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// A condition that did not hold before its deadline; `last` is the check's last complaint.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}; last: {last}")]
pub struct Timeout {
    pub what: String,
    pub waited: Duration,
    pub last: String,
}

/// Runs `check` every 100 ms until it returns `Ok`, for at most `timeout`.
///
/// ```no_run
/// # async fn demo(api: kube::Api<k8s_openapi::api::core::v1::ConfigMap>) {
/// use std::time::Duration;
/// let gone = vx11_tests::eventually("configmap deleted", Duration::from_secs(30), || async {
///     match api.get_opt("child").await {
///         Ok(None) => Ok(()),
///         Ok(Some(_)) => Err("still there".to_owned()),
///         Err(e) => Err(e.to_string()),
///     }
/// })
/// .await;
/// gone.expect("garbage collected");
/// # }
/// ```
pub async fn eventually<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, Timeout>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= timeout {
            return Err(Timeout {
                what: what.to_owned(),
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
