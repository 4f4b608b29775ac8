//! Arrival process of an open-loop run: the intended send time of every
//! request, fixed before the run and independent of how the server behaves.
//!
//! Invariants: intended times are non-decreasing nanoseconds since the start of
//! the run; a `Schedule` never looks at responses, which is what makes the load
//! open-loop (a slow server cannot slow the arrivals down).

use serde::{Deserialize, Serialize};

/// Small, fast, seedable PRNG (SplitMix64). Not cryptographic; runs are
/// reproducible from their seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi]` (inclusive). `lo > hi` returns `lo`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (self.next_u64() as u128 % span) as i128) as i64
    }
}

/// How requests arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Exactly `1/rate` apart.
    Constant,
    /// Exponentially distributed gaps with mean `1/rate` (a Poisson process),
    /// which is how independent clients arrive.
    Poisson,
}

/// The sequence of intended send times at a given rate.
#[derive(Clone, Debug)]
pub struct Schedule {
    arrival: Arrival,
    interval_ns: f64,
    index: u64,
    poisson_ns: f64,
    rng: Rng,
}

impl Schedule {
    /// A schedule of `rate` requests per second. `rate` must be positive.
    pub fn new(arrival: Arrival, rate: f64, seed: u64) -> Self {
        assert!(rate > 0.0, "rate must be positive, got {rate}");
        Schedule {
            arrival,
            interval_ns: 1e9 / rate,
            index: 0,
            poisson_ns: 0.0,
            rng: Rng::new(seed),
        }
    }

    /// The intended send time of the next request (ns since the start).
    pub fn next_ns(&mut self) -> u64 {
        let t = match self.arrival {
            // Multiplying instead of accumulating keeps rounding from drifting.
            Arrival::Constant => self.index as f64 * self.interval_ns,
            Arrival::Poisson => {
                let t = self.poisson_ns;
                // 1 - u is in (0, 1], so ln never sees 0.
                self.poisson_ns += -(1.0 - self.rng.next_f64()).ln() * self.interval_ns;
                t
            }
        };
        self.index += 1;
        t as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_gaps_are_exact_and_do_not_drift() {
        let mut s = Schedule::new(Arrival::Constant, 3.0, 1);
        let times: Vec<u64> = (0..4).map(|_| s.next_ns()).collect();
        assert_eq!(times, vec![0, 333_333_333, 666_666_666, 1_000_000_000]);
        let mut s = Schedule::new(Arrival::Constant, 1e5, 1);
        let last = (0..1_000_001).map(|_| s.next_ns()).last().unwrap();
        assert_eq!(last, 10_000_000_000);
    }

    #[test]
    fn poisson_has_the_requested_mean_and_is_monotonic() {
        let mut s = Schedule::new(Arrival::Poisson, 10_000.0, 42);
        let n = 200_000;
        let mut prev = 0;
        let mut gaps_over_2x = 0;
        for _ in 0..n {
            let t = s.next_ns();
            assert!(t >= prev);
            if t - prev > 200_000 {
                gaps_over_2x += 1;
            }
            prev = t;
        }
        let mean_gap = prev as f64 / (n - 1) as f64;
        assert!(
            (mean_gap - 100_000.0).abs() < 2_000.0,
            "mean gap {mean_gap}"
        );
        // P(gap > 2 * mean) = e^-2 ~ 13.5% for an exponential distribution.
        let frac = gaps_over_2x as f64 / n as f64;
        assert!((frac - 0.1353).abs() < 0.01, "tail fraction {frac}");
    }

    #[test]
    fn rng_between_stays_in_bounds_and_covers_them() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = rng.between(10, 14);
            assert!((10..=14).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.between(3, 3), 3);
        // The full range must not overflow.
        let _ = rng.between(i64::MIN, i64::MAX);
    }
}
