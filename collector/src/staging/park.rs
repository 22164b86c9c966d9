//! Waiting on futures from the writer's plain thread, with a deadline
//! finer than a millisecond.
//!
//! Tokio's timers tick in whole milliseconds, too coarse for a batch that
//! looks at the queue every 200 µs while the sync thread works, so the
//! writer polls its futures itself and sleeps with
//! [`std::thread::park_timeout`], which the kernel times to the
//! microsecond; a wake-up (a sender, the sync thread) unparks it.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Instant;

/// Blocks the thread that made it on futures, with an optional deadline.
pub(super) struct Parker {
    waker: Waker,
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl Parker {
    /// A parker for the calling thread; only that thread may use it.
    pub(super) fn for_this_thread() -> Self {
        Self {
            waker: Waker::from(Arc::new(Unpark(std::thread::current()))),
        }
    }

    /// Runs `future` to completion, or until `deadline` (`None`: no
    /// deadline) has passed, whichever comes first; `None` when the
    /// deadline ended it.
    pub(super) fn block_until<F: Future>(
        &self,
        future: F,
        deadline: Option<Instant>,
    ) -> Option<F::Output> {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(&self.waker);
        loop {
            if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                return Some(value);
            }
            // A wake-up that came between the poll and here left a token,
            // so the park returns at once; spurious returns just poll again.
            match deadline {
                None => std::thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn a_message_sent_from_another_thread_ends_the_wait() {
        let parker = Parker::for_this_thread();
        let (tx, mut rx) = mpsc::channel::<u32>(1);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.blocking_send(7).expect("send");
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(parker.block_until(rx.recv(), Some(deadline)), Some(Some(7)));
        sender.join().expect("sender");
    }

    #[test]
    fn the_deadline_ends_a_wait_for_nothing() {
        let parker = Parker::for_this_thread();
        let (_tx, mut rx) = mpsc::channel::<u32>(1);
        let started = Instant::now();
        let wait = Duration::from_micros(300);
        assert_eq!(parker.block_until(rx.recv(), Some(started + wait)), None);
        let took = started.elapsed();
        assert!(took >= wait, "returned after {took:?}, before the deadline");
        // Generous: a loaded machine may be slow to wake the thread, but a
        // millisecond-tick timer would always overshoot to a whole tick.
        assert!(took < Duration::from_millis(200), "took {took:?}");
    }

    #[test]
    fn a_ready_future_needs_no_wait() {
        let parker = Parker::for_this_thread();
        assert_eq!(parker.block_until(async { 3 }, None), Some(3));
    }
}
