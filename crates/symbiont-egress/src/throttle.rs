//! At most one log line a second for events anyone can cause (refused
//! connections, full queues), with the count of those not logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lets one event a second through; counts the rest.
#[derive(Debug, Default)]
pub struct Throttle {
    second: AtomicU64,
    skipped: AtomicU64,
}

impl Throttle {
    /// A throttle that has let nothing through yet.
    pub const fn new() -> Self {
        Self {
            second: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were
    /// not since the last one; `None` when it is only counted.
    pub fn admit(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.second.load(Ordering::Relaxed);
        if now != last
            && self
                .second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::Relaxed));
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_a_second_and_the_rest_counted() {
        let t = Throttle::new();
        let through = (0..10_000).filter(|_| t.admit().is_some()).count();
        // The loop may straddle a second.
        assert!((1..=2).contains(&through), "{through}");
    }
}
