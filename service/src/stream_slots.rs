//! How many event streams may be open at once: in the whole process
//! (`VX11_MAX_STREAMS`) and with one token (`VX11_MAX_STREAMS_PER_TOKEN`, by token name, so a
//! rotated value counts with the one it replaces). A stream holds a [`StreamSlot`] for as
//! long as it lives; dropping it gives the slot back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::{ApiError, ErrorCode, StreamLimits};

/// The open streams of one process, shared by every worker.
#[derive(Debug)]
pub struct StreamSlots {
    max_total: usize,
    max_per_token: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_token: HashMap<Arc<str>, usize>,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    /// `VX11_MAX_STREAMS` are open.
    Full { max: usize },
    /// `VX11_MAX_STREAMS_PER_TOKEN` are open with this token.
    TokenFull { max: usize },
}

impl StreamSlots {
    pub fn new(limits: &StreamLimits) -> Arc<Self> {
        Arc::new(Self {
            max_total: limits.max_streams,
            max_per_token: limits.max_streams_per_token,
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for one more stream with token `name`, if both limits allow it.
    pub fn try_open(self: &Arc<Self>, name: &Arc<str>) -> Result<StreamSlot, StreamRefusal> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.total >= self.max_total {
            return Err(StreamRefusal::Full {
                max: self.max_total,
            });
        }
        let of_token = open.per_token.get(name).copied().unwrap_or(0);
        if of_token >= self.max_per_token {
            return Err(StreamRefusal::TokenFull {
                max: self.max_per_token,
            });
        }
        open.total += 1;
        open.per_token.insert(name.clone(), of_token + 1);
        Ok(StreamSlot {
            slots: self.clone(),
            name: name.clone(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .total
    }

    fn close(&self, name: &Arc<str>) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_token.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                open.per_token.remove(name);
            }
        }
    }
}

/// One open stream's place in the count; given back on drop.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    name: Arc<str>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.slots.close(&self.name);
    }
}

impl IntoResponse for StreamRefusal {
    /// 503 (the process is full: another pod may have room) or 429 (this token has too
    /// many), both with `Retry-After`, which EventSource clients ignore but others use.
    fn into_response(self) -> Response {
        let error = match self {
            StreamRefusal::Full { max } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyStreams,
                format!("{max} event streams are open here (VX11_MAX_STREAMS); retry later"),
            ),
            StreamRefusal::TokenFull { max } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyStreamsForToken,
                format!(
                    "{max} event streams are open with this token (VX11_MAX_STREAMS_PER_TOKEN); close one or retry later"
                ),
            ),
        };
        let mut response = error.into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slots(max_total: usize, max_per_token: usize) -> Arc<StreamSlots> {
        StreamSlots::new(&StreamLimits {
            stall_timeout: Duration::from_secs(60),
            buffer_bytes: 64 * 1024,
            max_streams: max_total,
            max_streams_per_token: max_per_token,
        })
    }

    #[test]
    fn a_token_cannot_take_more_than_its_share_and_slots_come_back_on_drop() {
        let slots = slots(3, 2);
        let (a, b): (Arc<str>, Arc<str>) = ("console".into(), "cli".into());
        let first = slots.try_open(&a).unwrap();
        let _second = slots.try_open(&a).unwrap();
        assert_eq!(
            slots.try_open(&a).unwrap_err(),
            StreamRefusal::TokenFull { max: 2 }
        );
        let _third = slots.try_open(&b).unwrap();
        assert_eq!(
            slots.try_open(&b).unwrap_err(),
            StreamRefusal::Full { max: 3 }
        );
        drop(first);
        assert_eq!(slots.open(), 2);
        let _again = slots.try_open(&a).unwrap();
        assert_eq!(slots.open(), 3);
    }

    #[test]
    fn refusals_answer_503_and_429_with_their_codes() {
        let full = StreamRefusal::Full { max: 1 }.into_response();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(full.headers().contains_key(header::RETRY_AFTER));
        let token = StreamRefusal::TokenFull { max: 1 }.into_response();
        assert_eq!(token.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
