//! A token bucket in bytes per second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate shared by everything that takes from it. Taking more than is
/// there is allowed and waits until the debt is paid, so a large read is
/// delayed by exactly the time it costs at the rate; the burst is what an
/// idle bucket holds (a tenth of a second at the rate, at least 16 KiB).
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A bucket of `bytes_per_second`, full.
    pub fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` bytes' worth and returns how long the caller must wait
    /// before sending them.
    pub fn take(&self, n: usize) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.saturating_duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst) - n as f64;
        s.1 = now;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }

    /// Takes `n` bytes' worth, waiting as long as the rate says.
    pub async fn spend(&self, n: usize) {
        let wait = self.take(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_paid_at_the_rate() {
        let b = Bucket::new(1_000_000);
        // The burst (100 kB) goes at once; the next 1 MB costs about 1 s.
        assert_eq!(b.take(100_000), Duration::ZERO);
        let w = b.take(1_000_000);
        assert!(
            w > Duration::from_millis(950) && w <= Duration::from_millis(1000),
            "{w:?}"
        );
        // Shared: the next taker waits behind that debt.
        let w2 = b.take(500_000);
        assert!(w2 > Duration::from_millis(1400), "{w2:?}");
    }
}
