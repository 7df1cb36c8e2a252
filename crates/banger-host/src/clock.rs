//! Time: wall-clock timestamps for the store, monotonic instants for deadlines, and sleeps.
//! Every deadline loop in the daemon goes through [`Clock`], so tests can drive time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Now as RFC 3339 text (what the store keeps).
    fn now_rfc3339(&self) -> String {
        self.now().to_string()
    }

    /// A monotonic instant, for deadlines.
    fn instant(&self) -> Instant;

    /// Blocks the calling thread for `d` (a fake clock advances instead).
    fn sleep(&self, d: Duration);

    /// Polls `done` every `every` until it holds or `timeout` passed; returns whether it held.
    fn wait_until(
        &self,
        timeout: Duration,
        every: Duration,
        done: &mut dyn FnMut() -> bool,
    ) -> bool {
        let deadline = self.instant() + timeout;
        loop {
            if done() {
                return true;
            }
            if self.instant() >= deadline {
                return false;
            }
            self.sleep(every);
        }
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock tests set and advance by hand; [`Clock::sleep`] advances it instead of waiting.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<(Timestamp, Instant)>,
}

impl FakeClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        FakeClock {
            now: Mutex::new((start, Instant::now())),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: SignedDuration) {
        let mut t = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.0 = t.0.saturating_add(by).unwrap_or(t.0);
        if let Ok(d) = Duration::try_from(by) {
            t.1 += d;
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    fn instant(&self) -> Instant {
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
    }

    fn sleep(&self, d: Duration) {
        self.advance(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX));
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fake_clock_advances() {
        let c = FakeClock::new(Timestamp::UNIX_EPOCH);
        c.advance(SignedDuration::from_secs(90));
        assert_eq!(c.now_rfc3339(), "1970-01-01T00:01:30Z");
    }

    #[test]
    fn test_fake_clock_sleeps_by_advancing_and_wait_until_times_out() {
        let c = FakeClock::new(Timestamp::UNIX_EPOCH);
        let t0 = c.instant();
        let mut polls = 0;
        let held = c.wait_until(Duration::from_secs(5), Duration::from_secs(1), &mut || {
            polls += 1;
            false
        });
        assert!(!held);
        assert_eq!(polls, 6, "polled at 0..=5 s, then gave up");
        assert_eq!(c.instant() - t0, Duration::from_secs(5));
        assert_eq!(c.now_rfc3339(), "1970-01-01T00:00:05Z");
        assert!(c.wait_until(Duration::ZERO, Duration::from_secs(1), &mut || true));
    }
}
