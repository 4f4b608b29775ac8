//! HdrHistogram's classic percentile-distribution text (`.hgrm`), as written
//! by Java's `Histogram.outputPercentileDistribution` and wrk2, so the files
//! load in the usual plotters (e.g. hdrhistogram.github.io/HdrHistogram/plotFiles.html).
//!
//! Histograms here record nanoseconds; files are written in microseconds
//! (`scale` = 1000), with as many decimals as the histogram has significant
//! digits, like the Java original.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// Sub-buckets per bucket for `sigfig` significant digits (HdrHistogram's
/// `2^ceil(log2(2 * 10^sigfig))`).
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(sigfig as u32)).next_power_of_two()
}

/// Renders `hist` in the classic format, values divided by `scale`, with
/// `ticks` percentile ticks per half-distance (Java's default is 5).
pub fn render(hist: &Histogram<u64>, scale: f64, ticks: u32) -> String {
    let digits = hist.sigfig() as usize;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !hist.is_empty() {
        for v in hist.iter_quantiles(ticks) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.digits$} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.digits$} {q:>2.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.digits$}, StdDeviation   = {:>12.digits$}]",
        hist.mean() / scale,
        hist.stdev() / scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.digits$}, Total count    = {:>12}]",
        hist.max() as f64 / scale,
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        hist.buckets(),
        sub_bucket_count(hist.sigfig())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_format_rows_and_footer() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap(); // 1..1000 us in ns
        }
        let text = render(&h, 1000.0, 5);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], vec!["1.000", "0.000000000000", "1", "1.00"]);
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3, "last row has no 1/(1-p): {last:?}");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        // Percentiles and counts never decrease; values are in microseconds.
        for w in rows.windows(2) {
            let p = |r: &Vec<&str>| r[1].parse::<f64>().unwrap();
            let c = |r: &Vec<&str>| r[2].parse::<u64>().unwrap();
            assert!(p(&w[1]) >= p(&w[0]) && c(&w[1]) >= c(&w[0]));
        }
        let p50 = rows.iter().find(|r| r[1] == "0.500000000000").unwrap();
        assert!((p50[0].parse::<f64>().unwrap() - 500.0).abs() <= 0.5);
        // Mean and deviation come from bucket-equivalent values: within 0.01%.
        let mean_line = text
            .lines()
            .find(|l| l.starts_with("#[Mean    = "))
            .unwrap();
        assert_eq!(
            mean_line.len(),
            "#[Mean    = ".len() + 12 + ", StdDeviation   = ".len() + 12 + 1
        );
        let nums: Vec<f64> = mean_line
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter_map(|t| t.parse().ok())
            .collect();
        assert!((nums[0] - 500.5).abs() < 0.05, "{mean_line}");
        assert!((nums[1] - 288.675).abs() < 0.05, "{mean_line}");
        assert!(
            text.contains("#[Max     =     1000.447, Total count    =         1000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn empty_histogram_still_has_a_footer() {
        let h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        let text = render(&h, 1000.0, 5);
        assert!(text.contains("Total count    =            0]"));
    }
}
