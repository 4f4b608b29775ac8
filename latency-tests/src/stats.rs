//! Small statistics over repeated runs: median with min–max, and ratios
//! computed per interleaved pair (rep k of server A against rep k of server B),
//! so slow drift of the machine affects both sides of each ratio alike.

use serde::Serialize;

/// Median and range of a set of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
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
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
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
    fn ratios_are_per_pair_not_of_medians() {
        // Per-pair ratios: 2, 1, 3 -> median 2. Ratio of medians would be 1.5.
        let a = [2.0, 3.0, 9.0];
        let b = [1.0, 3.0, 3.0];
        let r = paired_ratio(&a, &b).unwrap();
        assert_eq!((r.median, r.min, r.max), (2.0, 1.0, 3.0));
        assert_eq!(paired_ratio(&[1.0], &[0.0]), None);
    }
}
