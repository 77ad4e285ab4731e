//! SQL functions tern adds to DataFusion's built-ins:
//! - `time_bucket(interval, ts)`: the start of the `interval`-wide bucket
//!   `ts` falls in (`'30s'`, `'1m'`, `'5 minutes'`, `'1h'`, `'1d'`), like
//!   `date_bin` with buckets aligned to the Unix epoch.
//! - `search('query')`: log records matching the log search syntax
//!   (`service:checkout AND "connection reset"`), answered by the log
//!   index; only valid as a `WHERE` condition on `logs`.
//! - `text_match(body, 'words')`: log records whose body contains the
//!   words, in order; also answered by the index.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{plan_err, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::tables::{MATCH_FN, SEARCH_FN};

/// Parses a bucket width: a number and a unit (`ms`, `s`, `m`, `h`, `d`,
/// `w` or their English names, singular or plural). Returns nanoseconds.
pub fn parse_interval(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit_ns: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => 1e6,
        "s" | "sec" | "second" | "seconds" => 1e9,
        "m" | "min" | "minute" | "minutes" => 60e9,
        "h" | "hour" | "hours" => 3600e9,
        "d" | "day" | "days" => 86400e9,
        "w" | "week" | "weeks" => 7.0 * 86400e9,
        _ => return None,
    };
    let ns = n * unit_ns;
    (ns >= 1.0 && ns < i64::MAX as f64).then_some(ns as i64)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeBucket {
    signature: Signature,
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Nanosecond,
            Some("UTC".into()),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [width, ts] = args.args.as_slice() else {
            return plan_err!("time_bucket takes an interval and a timestamp");
        };
        let width = match width {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)))
            | ColumnarValue::Scalar(ScalarValue::LargeUtf8(Some(s)))
            | ColumnarValue::Scalar(ScalarValue::Utf8View(Some(s))) => parse_interval(s)
                .ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "time_bucket: cannot read interval {s:?} (expected e.g. '30s', '5m', '1h', '1 day')"
                    ))
                })?,
            _ => return plan_err!("time_bucket: the interval must be a string literal such as '1m'"),
        };
        let target = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let floor = |v: i64| v - v.rem_euclid(width);
        match ts {
            ColumnarValue::Scalar(s) => {
                let arr = s.to_array()?;
                let arr = cast(&arr, &target)?;
                let a = arr
                    .as_any()
                    .downcast_ref::<TimestampNanosecondArray>()
                    .ok_or_else(|| DataFusionError::Plan("time_bucket needs a timestamp".into()))?;
                let v = (!a.is_null(0)).then(|| floor(a.value(0)));
                Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
                    v,
                    Some("UTC".into()),
                )))
            }
            ColumnarValue::Array(arr) => {
                let arr = cast(arr, &target)?;
                let a = arr
                    .as_any()
                    .downcast_ref::<TimestampNanosecondArray>()
                    .ok_or_else(|| DataFusionError::Plan("time_bucket needs a timestamp".into()))?;
                let out: TimestampNanosecondArray = a.unary(floor);
                Ok(ColumnarValue::Array(
                    Arc::new(out.with_timezone("UTC")) as ArrayRef
                ))
            }
        }
    }
}

/// A filter that only the log table's scan can answer.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IndexFilter {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for IndexFilter {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        plan_err!(
            "{}() is answered by the log index: use it in WHERE on the logs table, \
             with a string literal, combined with AND (not inside OR or NOT, not in SELECT)",
            self.name
        )
    }
}

/// Every function tern registers.
pub fn udfs() -> Vec<ScalarUDF> {
    let strings = |n: usize| {
        TypeSignature::OneOf(vec![
            TypeSignature::Exact(vec![DataType::Utf8; n]),
            TypeSignature::Exact(vec![DataType::Utf8View; n]),
        ])
    };
    vec![
        ScalarUDF::new_from_impl(TimeBucket {
            signature: Signature::any(2, Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(IndexFilter {
            name: SEARCH_FN,
            signature: Signature::new(strings(1), Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(IndexFilter {
            name: MATCH_FN,
            signature: Signature::new(strings(2), Volatility::Immutable),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_in_every_spelling() {
        assert_eq!(parse_interval("30s"), Some(30_000_000_000));
        assert_eq!(parse_interval("1m"), Some(60_000_000_000));
        assert_eq!(parse_interval("5 minutes"), Some(300_000_000_000));
        assert_eq!(parse_interval("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_interval("1 day"), Some(86_400_000_000_000));
        assert_eq!(parse_interval("250ms"), Some(250_000_000));
        assert_eq!(parse_interval("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_interval("0s"), None);
        assert_eq!(parse_interval("5 fortnights"), None);
        assert_eq!(parse_interval("m"), None);
        assert_eq!(parse_interval(""), None);
    }
}
