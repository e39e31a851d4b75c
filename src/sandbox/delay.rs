//! The latency the sandbox adds (`--latency-ms`), kept to a fraction of a millisecond.
//!
//! tokio's timer counts whole milliseconds: it rounds a deadline up to its next 1 ms
//! tick and parks on a millisecond timeout, so a 50 ms sleep answers 51–52 ms after
//! the request. A simulator that answers late understates every client measured
//! against it; this one answers when the latency says.

use std::time::{Duration, Instant};

/// How long before the deadline tokio's timer is asked to wake: it wakes up to two
/// ticks late, and scheduling may add a little.
const COARSE_MARGIN: Duration = Duration::from_millis(3);

/// Waits until `deadline`, never returning before it: tokio's timer for all but the
/// last few milliseconds, then a blocking thread's sleep (a nanosecond timer) for the
/// rest, so no worker is held and the wait ends within the kernel's timer slack.
pub(crate) async fn until(deadline: Instant) {
    if let Some(coarse) = deadline.checked_sub(COARSE_MARGIN) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    if Instant::now() >= deadline {
        return;
    }
    let fine = tokio::task::spawn_blocking(move || {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    });
    if fine.await.is_err() {
        // The runtime is shutting down: the coarse timer still keeps the promise.
        tokio::time::sleep_until(deadline.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least of `samples` waits of `wait` each, past its deadline.
    async fn least_lateness(wait: Duration, samples: usize) -> Duration {
        let mut least = Duration::MAX;
        for _ in 0..samples {
            let deadline = Instant::now() + wait;
            until(deadline).await;
            let now = Instant::now();
            assert!(now >= deadline, "answered before the deadline");
            least = least.min(now - deadline);
        }
        least
    }

    /// Never early; and in the best of twenty (one quiet moment on a busy machine is
    /// enough) late by less than half a millisecond, where a millisecond timer is late
    /// by up to two.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_to_the_deadline_not_to_the_next_millisecond() {
        let least = least_lateness(Duration::from_micros(5_300), 20).await;
        assert!(least < Duration::from_micros(500), "{least:?} late at best");
    }
}
