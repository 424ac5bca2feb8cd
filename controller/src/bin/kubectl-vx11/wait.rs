//! `kubectl vx11 wait`: polls the set every 500 ms until a condition is True for the
//! current spec, bounded by a timeout. The polling loop also serves `rotate --wait`.

use std::time::{Duration, Instant};

use vx11_controller::crd::Vx11TokenSet;

use crate::cli::WaitArgs;
use crate::connect::Target;
use crate::error::{Error, Result};
use crate::sets;
use crate::status::condition;

const INTERVAL: Duration = Duration::from_millis(500);

/// Reads the set every 500 ms until `check` returns `Some` (`Ok(Ok(value))`) or `timeout`
/// passes (`Ok(Err(last set read))`). A missing set or resource type, or a refused request,
/// ends the wait at once; other API errors are retried until the timeout.
pub async fn poll<T>(
    target: &Target,
    name: &str,
    timeout: Duration,
    mut check: impl FnMut(&Vx11TokenSet) -> Option<T>,
) -> Result<Result<T, Option<Vx11TokenSet>>> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    let mut last_error = String::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining.max(INTERVAL), sets::get(target, name)).await {
            Ok(Ok(set)) => {
                if let Some(value) = check(&set) {
                    return Ok(Ok(value));
                }
                last = Some(set);
            }
            Ok(Err(
                error @ (Error::SetNotFound { .. } | Error::NoCrd(_) | Error::Forbidden { .. }),
            )) => return Err(error),
            Ok(Err(error)) => {
                let text = error.to_string();
                if text != last_error {
                    eprintln!("retrying: {text}");
                    last_error = text;
                }
            }
            Err(_elapsed) => {}
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(Err(last));
        }
        tokio::time::sleep(remaining.min(INTERVAL)).await;
    }
}

/// The condition `type_` is True and was computed for the current `metadata.generation`
/// (its own `observedGeneration`, else the status').
pub fn condition_met(set: &Vx11TokenSet, type_: &str) -> bool {
    let Some(found) = condition(set, type_) else {
        return false;
    };
    let observed = found
        .observed_generation
        .or_else(|| set.status.as_ref().and_then(|s| s.observed_generation));
    found.status == "True" && observed == set.metadata.generation
}

/// Why `type_` is not met, for the timeout message.
pub fn why_not(set: &Vx11TokenSet, type_: &str) -> String {
    let Some(found) = condition(set, type_) else {
        return format!(
            "the controller has not reported {type_} yet (is vx11-controller running?)"
        );
    };
    let observed = found
        .observed_generation
        .or_else(|| set.status.as_ref().and_then(|s| s.observed_generation));
    if found.status == "True" {
        return format!(
            "{type_}=True describes spec generation {}, the current one is {}: the controller has not caught up",
            observed.map_or_else(|| "?".to_owned(), |g| g.to_string()),
            set.metadata
                .generation
                .map_or_else(|| "?".to_owned(), |g| g.to_string()),
        );
    }
    let message = if found.message.is_empty() {
        String::new()
    } else {
        format!(": {}", found.message)
    };
    format!("{type_}={} ({}){message}", found.status, found.reason)
}

/// `; stale consumer pods: a (detail), b (serves generation 6, current 7)`, or nothing.
pub fn stale_consumers(set: &Vx11TokenSet) -> String {
    let Some(status) = set.status.as_ref() else {
        return String::new();
    };
    let stale: Vec<String> = status
        .consumers
        .iter()
        .filter(|c| c.state != "Synced")
        .map(|c| match (&c.detail, c.generation, status.generation) {
            (Some(detail), _, _) => format!("{} ({detail})", c.pod),
            (None, Some(served), Some(current)) => {
                format!("{} (serves generation {served}, current {current})", c.pod)
            }
            _ => c.pod.clone(),
        })
        .collect();
    if stale.is_empty() {
        String::new()
    } else {
        format!("; stale consumer pods: {}", stale.join(", "))
    }
}

/// `90s` → `1m30s`, as the flags are written.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

pub async fn run(target: &Target, args: &WaitArgs) -> Result<String> {
    let type_ = args.condition.condition_type();
    let outcome = poll(target, &args.set, args.timeout, |set| {
        condition_met(set, type_).then_some(())
    })
    .await?;
    match outcome {
        Ok(()) => Ok(format!(
            "vx11tokenset.vx11.dev/{} condition met ({type_}=True)\n",
            args.set
        )),
        Err(set) => {
            let why = set
                .as_ref()
                .map(|set| why_not(set, type_))
                .unwrap_or_else(|| "no answer from the API server".to_owned());
            Err(Error::Timeout(format!(
                "timed out after {} waiting for {type_}=True on Vx11TokenSet {}/{}: {why}{}; see `kubectl vx11 status {}`",
                human(args.timeout),
                target.namespace,
                args.set,
                set.as_ref().map(stale_consumers).unwrap_or_default(),
                args.set
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sets::tests::sample;
    use crate::status::tests::rotating;

    #[test]
    fn a_condition_counts_only_when_true_for_the_current_spec() {
        let mut set = rotating();
        assert!(condition_met(&set, "Ready"));
        assert!(!condition_met(&set, "Propagated"));
        assert_eq!(
            why_not(&set, "Propagated"),
            "Propagated=False (StaleConsumers): 1 of 2 consumer pods serve an older generation: gateway-7d9f-b"
        );
        set.metadata.generation = Some(4);
        assert!(!condition_met(&set, "Ready"));
        assert!(why_not(&set, "Ready").contains("spec generation 3, the current one is 4"));
        assert!(!condition_met(&sample(), "Ready"));
        assert!(why_not(&sample(), "Ready").contains("has not reported Ready yet"));
    }

    #[test]
    fn names_the_stale_consumers() {
        assert_eq!(
            stale_consumers(&rotating()),
            "; stale consumer pods: gateway-7d9f-b (serves generation 7, current 8), backend-5c4-x (no answer on :8001/ready: connection refused)"
        );
        assert_eq!(stale_consumers(&sample()), "");
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
    }
}
