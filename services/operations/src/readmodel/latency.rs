//! Step latencies as fixed exponential histograms: a handful of counters per handler, updated
//! in place, from which percentiles are read without keeping a single sample.
//!
//! Bucket `i` holds durations in `(bound(i - 1), bound(i)]` with `bound(i) = 2^(i/4)` ms:
//! four buckets per doubling, so an estimate is within 19 % of the true value, from 1 ms up
//! to about two years (the last bucket holds everything longer).

/// How many buckets there are.
pub const BUCKETS: usize = 146;

/// The upper bound of bucket `i`, in milliseconds (infinite for the last one).
pub fn upper_bound_ms(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        f64::INFINITY
    } else {
        2f64.powf(i as f64 / 4.0)
    }
}

/// The lower bound of bucket `i`, in milliseconds.
pub fn lower_bound_ms(i: usize) -> f64 {
    if i == 0 { 0.0 } else { upper_bound_ms(i - 1) }
}

/// The bucket a duration falls in.
pub fn bucket_of_micros(micros: i64) -> usize {
    let ms = micros.max(0) as f64 / 1000.0;
    if ms <= 1.0 {
        return 0;
    }
    // First guess from the logarithm, then settle it against the bounds themselves, so the
    // bucket and its bounds always agree.
    let mut i = ((ms.log2() * 4.0).ceil() as usize).min(BUCKETS - 1);
    while i > 0 && ms <= upper_bound_ms(i - 1) {
        i -= 1;
    }
    while ms > upper_bound_ms(i) {
        i += 1;
    }
    i
}

/// The `q`-quantile (0 < q ≤ 1) of the histogram `counts` (indexed by bucket), in
/// milliseconds: the bucket that holds the sample of rank ⌈q·n⌉, interpolated linearly
/// within it. `None` for an empty histogram.
pub fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && below + n >= rank {
            let lower = lower_bound_ms(i);
            let upper = upper_bound_ms(i);
            if upper.is_infinite() {
                return Some(lower);
            }
            let within = (rank - below) as f64 / n as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_bounds_agree() {
        assert_eq!(bucket_of_micros(-5), 0);
        assert_eq!(bucket_of_micros(0), 0);
        assert_eq!(bucket_of_micros(1_000), 0);
        assert_eq!(bucket_of_micros(1_001), 1);
        assert_eq!(bucket_of_micros(2_000), 4);
        assert_eq!(bucket_of_micros(2_001), 5);
        assert_eq!(bucket_of_micros(i64::MAX), BUCKETS - 1);
        for micros in [1_500, 7_777, 123_456, 9_999_999, 86_400_000_000] {
            let i = bucket_of_micros(micros);
            let ms = micros as f64 / 1000.0;
            assert!(
                lower_bound_ms(i) < ms && ms <= upper_bound_ms(i),
                "{micros}"
            );
        }
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let mut counts = vec![0u64; BUCKETS];
        assert_eq!(quantile_ms(&counts, 0.5), None);
        // 100 samples in the bucket (2 ms, 2.38 ms].
        counts[bucket_of_micros(2_100)] = 100;
        let p50 = quantile_ms(&counts, 0.5).unwrap();
        assert!((p50 - (2.0 + (upper_bound_ms(5) - 2.0) * 0.5)).abs() < 1e-9);
        let p100 = quantile_ms(&counts, 1.0).unwrap();
        assert!((p100 - upper_bound_ms(5)).abs() < 1e-9);
        // One slow outlier moves p99 but not p50.
        counts[bucket_of_micros(60_000_000)] = 2;
        assert!(quantile_ms(&counts, 0.99).unwrap() > 40_000.0);
        assert!(quantile_ms(&counts, 0.5).unwrap() < 2.4);
    }
}
