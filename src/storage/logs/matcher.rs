//! The reference matcher: evaluates a [`LogFilter`] on one record. The memory
//! store and live tail use it; the tantivy store must agree with it (the
//! shared suite checks both).

use std::ops::Bound;

use super::{
    attribute_keywords, body_text, keyword, resource_keywords, severity_keywords, tokenize,
    LogField, LogFilter, NumField,
};
use crate::model::LogRecord;

/// Whether `r` matches `f`.
pub fn matches(f: &LogFilter, r: &LogRecord) -> bool {
    let mut body: Option<Vec<String>> = None;
    eval(f, r, &mut body)
}

fn eval(f: &LogFilter, r: &LogRecord, body: &mut Option<Vec<String>>) -> bool {
    match f {
        LogFilter::All => true,
        LogFilter::Text(t) | LogFilter::Phrase(t) => {
            let words = tokenize(t);
            if words.is_empty() {
                return false;
            }
            let tokens = body.get_or_insert_with(|| tokenize(&body_text(&r.body)));
            holds_phrase(tokens, &words)
        }
        LogFilter::Term { field, value } => match field {
            LogField::Severity => severity_keywords(r).contains(&value.to_lowercase()),
            LogField::Service => r.service_name() == value,
            LogField::TraceId => r
                .trace_id
                .is_some_and(|t| t.to_hex() == value.to_lowercase()),
            LogField::SpanId => r
                .span_id
                .is_some_and(|s| s.to_hex() == value.to_lowercase()),
            LogField::Attribute(path) => attribute_keywords(r).contains(&keyword(path, value)),
            LogField::Resource(path) => resource_keywords(r).contains(&keyword(path, value)),
        },
        LogFilter::Range {
            field,
            lower,
            upper,
        } => {
            let v = match field {
                NumField::SeverityNumber => r.severity_number.max(0) as u64,
                NumField::Time => r.time_ns,
            };
            in_bounds(v, lower, upper)
        }
        LogFilter::And(fs) => fs.iter().all(|f| eval(f, r, body)),
        LogFilter::Or(fs) => fs.iter().any(|f| eval(f, r, body)),
        LogFilter::Not(f) => !eval(f, r, body),
    }
}

/// Whether the body words hold `words` adjacent and in order (the rule of
/// text and phrase filters; `words` is not empty).
pub(crate) fn holds_phrase(body: &[String], words: &[String]) -> bool {
    body.windows(words.len()).any(|w| w == words)
}

pub(crate) fn in_bounds(v: u64, lower: &Bound<u64>, upper: &Bound<u64>) -> bool {
    let lo = match lower {
        Bound::Included(l) => v >= *l,
        Bound::Excluded(l) => v > *l,
        Bound::Unbounded => true,
    };
    let hi = match upper {
        Bound::Included(u) => v <= *u,
        Bound::Excluded(u) => v < *u,
        Bound::Unbounded => true,
    };
    lo && hi
}
