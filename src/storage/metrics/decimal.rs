//! Values as decimal mantissas, `v = m / 10^k` with `k` fraction digits:
//! how the samples files and the head chunks store a value when that gives
//! back exactly its bits (counters, most gauges).

/// Most fraction digits a mantissa may carry.
pub const MAX_DIGITS: usize = 6;
const POW10: [f64; MAX_DIGITS + 1] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
/// Integers up to 2^53 convert to f64 exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// The value of mantissa `m` with `k` fraction digits (`k` clamped to
/// `0..=MAX_DIGITS`).
pub fn decode(m: i64, k: i8) -> f64 {
    m as f64 / POW10[k.clamp(0, MAX_DIGITS as i8) as usize]
}

/// The mantissa of `v` with `k` fraction digits, if [`decode`] gives back
/// exactly `v`'s bits (never for NaN, infinities, -0.0, values needing
/// more digits or beyond 2^53).
pub fn mantissa(v: f64, k: usize) -> Option<i64> {
    let m = (v * POW10.get(k)?).round();
    (m.abs() < MAX_EXACT && decode(m as i64, k as i8).to_bits() == v.to_bits()).then_some(m as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mantissas_round_trip_exactly_or_not_at_all() {
        assert_eq!(mantissa(42.0, 0), Some(42));
        assert_eq!(mantissa(0.3, 0), None);
        assert_eq!(mantissa(0.3, 1), Some(3));
        assert_eq!(mantissa(12.34, 2), Some(1234));
        assert_eq!(mantissa(-7.5, 1), Some(-75));
        for v in [f64::NAN, f64::INFINITY, -0.0, 1e300, 0.1 + 0.2] {
            assert!((0..=MAX_DIGITS).all(|k| mantissa(v, k).is_none()), "{v}");
        }
        assert_eq!(mantissa(1.0, MAX_DIGITS + 1), None);
        assert_eq!(decode(1234, 2), 12.34);
        assert_eq!(decode(5, 99), 5e-6);
    }
}
