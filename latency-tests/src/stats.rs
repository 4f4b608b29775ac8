//! Small statistics over repeated runs: median with interquartile range and
//! min–max, and ratios computed per interleaved pair (rep k of server A
//! against rep k of server B), so slow drift of the machine affects both sides
//! of each ratio alike. A verdict against a goal is given only when the
//! interquartile range lies on one side of it ([`Spread::verdict`]).

use serde::Serialize;

/// Median, quartiles and range of a set of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// First quartile (linear interpolation between order statistics).
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub n: usize,
}

impl Spread {
    /// Median and range of `values`, ignoring NaNs; `None` if nothing is left.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let quantile = |q: f64| {
            let pos = q * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Some(Spread {
            median,
            q1: quantile(0.25),
            q3: quantile(0.75),
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// Where a spread stands against a goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// The whole interquartile range meets the goal.
    Met,
    /// The whole interquartile range misses the goal.
    Missed,
    /// The interquartile range straddles the goal, or there are fewer than 3
    /// values to compute one from.
    Inconclusive,
}

impl Verdict {
    /// Lower-case label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl Spread {
    /// The verdict against `goal` (`at_least`: the goal is a minimum).
    pub fn verdict(&self, goal: f64, at_least: bool) -> Verdict {
        if self.n < 3 {
            return Verdict::Inconclusive;
        }
        let meets = |x: f64| if at_least { x >= goal } else { x <= goal };
        match (meets(self.q1), meets(self.q3)) {
            (true, true) => Verdict::Met,
            (false, false) => Verdict::Missed,
            _ => Verdict::Inconclusive,
        }
    }
}

/// `a[k] - b[k]` for every rep present on both sides, then their spread.
pub fn paired_difference(a: &[f64], b: &[f64]) -> Option<Spread> {
    let d: Vec<f64> = a.iter().zip(b).map(|(&x, &y)| x - y).collect();
    Spread::of(&d)
}

/// `a[k] / b[k]` for every rep present on both sides with a non-zero
/// denominator, then their spread.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Option<Spread> {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|&(_, &d)| d != 0.0)
        .map(|(&n, &d)| n / d)
        .collect();
    Spread::of(&ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN, 5.0]).unwrap().median, 5.0);
    }

    #[test]
    fn quartiles_interpolate() {
        let s = Spread::of(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (2.0, 3.0, 4.0));
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.q1, s.q3), (1.75, 3.25));
    }

    #[test]
    fn verdict_needs_the_whole_iqr_on_one_side() {
        // IQR 0.6..0.8 straddles 0.7: inconclusive, although the median meets it.
        let s = Spread::of(&[0.5, 0.6, 0.65, 0.8, 0.9]).unwrap();
        assert_eq!(s.verdict(0.7, false), Verdict::Inconclusive);
        assert_eq!(s.verdict(1.0, false), Verdict::Met);
        assert_eq!(s.verdict(0.55, false), Verdict::Missed);
        assert_eq!(s.verdict(0.55, true), Verdict::Met);
        // Too few values for a range.
        let s = Spread::of(&[0.1, 0.2]).unwrap();
        assert_eq!(s.verdict(1.0, false), Verdict::Inconclusive);
        let d = paired_difference(&[10.0, 12.0, 20.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(d.median, 10.0);
    }

    #[test]
    fn ratios_are_per_pair_not_of_medians() {
        // Per-pair ratios: 2, 1, 3 -> median 2. Ratio of medians would be 1.5.
        let a = [2.0, 3.0, 9.0];
        let b = [1.0, 3.0, 3.0];
        let r = paired_ratio(&a, &b).unwrap();
        assert_eq!((r.median, r.min, r.max), (2.0, 1.0, 3.0));
        assert_eq!(paired_ratio(&[1.0], &[0.0]), None);
    }
}
