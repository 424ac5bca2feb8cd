//! The time a backend has for its response head (`VX11_UPSTREAM_TIMEOUT`), kept by one timer
//! per client connection that is moved only when it must be: a busy connection's requests
//! would otherwise register and remove a timer each. The timer is set a sixteenth of the
//! timeout past what the request needs; a later request whose deadline still falls before
//! it leaves it alone, and when it fires early for such a request it is set to the exact
//! deadline. So the answer (504) comes never before the timeout and at most a sixteenth of
//! it after.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// One connection's response-head timer.
#[derive(Debug)]
pub struct HeadTimer {
    sleep: Pin<Box<Sleep>>,
    /// Where `sleep` is set to.
    at: Instant,
    slack: Duration,
}

impl HeadTimer {
    pub fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            sleep: Box::pin(tokio::time::sleep_until(now)),
            at: now,
            slack: timeout / 16,
        }
    }

    /// Makes sure the timer fires no earlier than `deadline`, and at most the slack after.
    pub fn cover(&mut self, deadline: Instant) {
        if self.at < deadline || self.at > deadline + self.slack {
            self.at = deadline + self.slack;
            self.sleep.as_mut().reset(self.at);
        }
    }

    /// Resolves when `deadline` has passed (the timer set exactly when it fires early).
    pub async fn passed(&mut self, deadline: Instant) {
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= deadline {
                return;
            }
            self.at = deadline;
            self.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_passes_never_early_and_at_most_the_slack_late() {
        let mut timer = HeadTimer::new(Duration::from_secs(16));
        let first = Instant::now() + Duration::from_secs(16);
        timer.cover(first);
        // A later request within the slack keeps the timer where it is…
        tokio::time::sleep(Duration::from_millis(500)).await;
        let second = Instant::now() + Duration::from_secs(16);
        timer.cover(second);
        assert_eq!(timer.at, first + Duration::from_secs(1));
        timer.passed(second).await;
        let now = Instant::now();
        assert!(now >= second && now <= second + Duration::from_secs(1));

        // …and a deadline past the slack moves it.
        let third = Instant::now() + Duration::from_secs(16);
        timer.cover(third);
        timer.passed(third).await;
        assert!(Instant::now() >= third && Instant::now() <= third + Duration::from_secs(1));

        // Once fired, it is set again for the next request.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let fourth = Instant::now() + Duration::from_secs(16);
        timer.cover(fourth);
        timer.passed(fourth).await;
        assert!(Instant::now() >= fourth && Instant::now() <= fourth + Duration::from_secs(1));
    }
}
