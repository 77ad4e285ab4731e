//! RFC 3339 timestamps (UTC, milliseconds) for the Alertmanager and
//! Prometheus API shapes, and the wall clock.

pub use crate::model::time::now_ms;
use crate::model::time::{civil_from_days, days_from_civil};

/// `2024-05-01T12:00:00.123Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Parses RFC 3339 (`Z` or `±hh:mm`, optional fraction) into milliseconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let err = || format!("invalid RFC 3339 timestamp {s:?}");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(err)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(err());
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = s.get(start..i).ok_or_else(err)?;
        if digits.is_empty() {
            return Err(err());
        }
        let d3: String = digits.chars().chain("000".chars()).take(3).collect();
        frac_ms = d3.parse().map_err(|_| err())?;
    }
    let offset_s = match s.get(i..).ok_or_else(err)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let part = |r: std::ops::Range<usize>| -> Result<i64, String> {
                tz.get(r).and_then(|x| x.parse().ok()).ok_or_else(err)
            };
            let (hh, mm) = (part(1..3)?, part(4..6)?);
            let o = hh * 3600 + mm * 60;
            if tz.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return Err(err()),
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    Ok(secs * 1000 + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for ms in [0i64, 1_700_000_000_123, 951_782_400_000, -1000] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)).unwrap(), ms);
        }
        assert_eq!(
            format_rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z").unwrap(),
            1_700_000_000_123
        );
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("2023-13-14T22:13:20Z").is_err());
        assert!(parse_rfc3339("2023-11-14T22:13:20+0é00").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
            let _ = crate::analysis::alerting::template::Template::parse(&s);
            let _ = crate::analysis::alerting::notify::Matcher::parse(&s);
            let _ = crate::analysis::alerting::rules::Condition::parse(&s);
            let _ = crate::analysis::alerting::rules::PromDuration::parse(&s);
            let _ = crate::analysis::alerting::rules::SpanMeasure::parse(&s);
            let _ = crate::analysis::alerting::rules::parse_rule_file(&s);
        }

        #[test]
        fn timestamps_round_trip(ms in -62_135_596_800_000i64..253_402_300_799_999i64) {
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)).unwrap(), ms);
        }

        #[test]
        fn rfc3339_prefixes_never_panic(cut in 0usize..40, tz in "[+\\-Zé0-9:]{0,7}") {
            let full = format!("2024-05-01T12:00:00.123{tz}");
            let s: String = full.chars().take(cut).collect();
            let _ = parse_rfc3339(&s);
            let _ = parse_rfc3339(&full);
        }
    }
}
