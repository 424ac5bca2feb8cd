//! A future a stream waits on besides its events (shutdown, a token-set change, the token's
//! expiry, the keep-alive timer), polled only after it woke.
//!
//! A broadcast wakes every open stream for the new event. Polling each stream's other
//! futures then would cost every stream the locks shared behind them (a waiting
//! `Notify` future takes its `Notify`'s mutex on every poll, and all streams wait on the
//! same shutdown token and token store). An [`Alarm`] polls its future with a waker of its
//! own, which sets the alarm's bit in the stream's [`Bell`] before waking the stream's
//! task; a stream woken by anything else passes over it by reading that bit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::future::BoxFuture;
use futures_util::task::AtomicWaker;

/// What one stream's alarms ring: a bit each, and the stream's task. One allocation, so a
/// woken stream checks all its alarms on one cache line.
pub struct Bell {
    rung: AtomicU8,
    /// Bits handed out to alarms.
    used: AtomicU8,
    task: AtomicWaker,
}

pub struct Alarm<T> {
    future: BoxFuture<'static, T>,
    bell: Arc<Bell>,
    bit: u8,
    /// Rings `bit` of `bell`; built once.
    waker: Waker,
}

struct Ringer {
    bell: Arc<Bell>,
    bit: u8,
}

impl Wake for Ringer {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.bell.rung.fetch_or(self.bit, Ordering::Release);
        self.bell.task.wake();
    }
}

impl Bell {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            rung: AtomicU8::new(0),
            used: AtomicU8::new(0),
            task: AtomicWaker::new(),
        })
    }

    /// An alarm on this bell (eight at most).
    pub fn alarm<T>(self: &Arc<Self>, future: BoxFuture<'static, T>) -> Alarm<T> {
        let index = self.used.fetch_add(1, Ordering::Relaxed);
        assert!(index < 8, "a bell rings for eight alarms at most");
        let bit = 1 << index;
        // Polled first time round.
        self.rung.fetch_or(bit, Ordering::Release);
        Alarm {
            future,
            waker: Waker::from(Arc::new(Ringer {
                bell: self.clone(),
                bit,
            })),
            bell: self.clone(),
            bit,
        }
    }
}

impl<T> Alarm<T> {
    /// Replaces the future (polled at the next [`Alarm::poll`]). A future that completed
    /// must be replaced before the alarm is polled again.
    pub fn set(&mut self, future: BoxFuture<'static, T>) {
        self.future = future;
        self.bell.rung.fetch_or(self.bit, Ordering::Release);
    }

    /// Polls the future if it woke since it was last polled, or was just set; `cx`'s task
    /// is woken when it next wakes.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        // Registered before the bell is read, so a wake in between is not lost.
        self.bell.task.register(cx.waker());
        if self.bell.rung.load(Ordering::Acquire) & self.bit == 0 {
            return Poll::Pending;
        }
        self.bell.rung.fetch_and(!self.bit, Ordering::AcqRel);
        self.future
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
    }
}

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bell")
            .field("rung", &self.rung.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for Alarm<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alarm")
            .field("bit", &self.bit)
            .field("bell", &self.bell)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// A future that counts its polls and completes once notified.
    fn counted(notify: Arc<Notify>, polls: Arc<AtomicUsize>) -> BoxFuture<'static, ()> {
        let mut notified = Box::pin(notify.notified_owned());
        Box::pin(poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            notified.as_mut().poll(cx)
        }))
    }

    #[tokio::test]
    async fn the_future_is_polled_only_after_it_woke() {
        let notify = Arc::new(Notify::new());
        let polls = Arc::new(AtomicUsize::new(0));
        let mut alarm = Bell::new().alarm(counted(notify.clone(), polls.clone()));
        let woken = Arc::new(Notify::new());
        let task = {
            let woken = woken.clone();
            tokio::spawn(async move {
                poll_fn(|cx| {
                    woken.notify_one();
                    alarm.poll(cx)
                })
                .await;
            })
        };
        // On this single-threaded runtime the task has polled the alarm once, and waits.
        woken.notified().await;
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        notify.notify_one();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the alarm wakes its task")
            .unwrap();
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_task_woken_by_something_else_passes_it_over() {
        let (notify, other) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (polls, other_polls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let bell = Bell::new();
        let mut alarm = bell.alarm(counted(notify.clone(), polls.clone()));
        let mut other_alarm = bell.alarm(counted(other.clone(), other_polls.clone()));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            assert!(alarm.poll(&mut cx).is_pending());
            assert!(other_alarm.poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        assert_eq!(other_polls.load(Ordering::Relaxed), 1);
        alarm.set(counted(notify.clone(), polls.clone()));
        assert!(alarm.poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2, "a new future is polled");
        // The other alarm ringing leaves this one alone, and the other way round.
        other.notify_one();
        assert!(alarm.poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        notify.notify_one();
        assert!(alarm.poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 3);
        assert!(other_alarm.poll(&mut cx).is_ready());
        assert_eq!(other_polls.load(Ordering::Relaxed), 2);
    }
}
