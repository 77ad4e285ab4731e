//! PII redaction of log records at ingest, before anything is written (the
//! WAL and the stores only ever see the masked text).
//!
//! Patterns are built in (`email`, `card_number` with a Luhn check,
//! `bearer_token`) or custom regular expressions; every match in a string
//! value of a log body or attribute (nested values included; keys and
//! resource attributes are left alone) is replaced by the mask. Each
//! replacement counts in `tern_ingest_redactions_total{pattern}`.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use prometheus::{IntCounterVec, Opts, Registry};
use regex::Regex;

use crate::config::RedactionConfig;

/// Names of the built-in patterns.
pub const BUILTIN: [&str; 3] = ["email", "card_number", "bearer_token"];

fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "email" => r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
        "card_number" => r"\b\d(?:[ \-]?\d){12,18}\b",
        "bearer_token" => r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*",
        _ => return None,
    })
}

/// Deepest value nesting visited (ingest validation bounds it further).
const MAX_DEPTH: usize = 64;

struct Pattern {
    name: String,
    re: Regex,
    luhn: bool,
}

/// The configured patterns and their counter.
pub struct Redactor {
    patterns: Vec<Pattern>,
    mask: String,
    counter: IntCounterVec,
}

/// Whether a digit string (spaces and dashes ignored) passes the Luhn check.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    digits.len() >= 13 && sum.is_multiple_of(10)
}

impl Redactor {
    /// Builds the redactor; `None` when no pattern is configured.
    pub fn new(cfg: &RedactionConfig, registry: &Registry) -> Result<Option<Self>, String> {
        let mut patterns = Vec::new();
        for name in &cfg.builtin {
            let src = builtin(name).ok_or_else(|| {
                format!(
                    "unknown built-in redaction pattern {name:?}: use one of {}",
                    BUILTIN.join(", ")
                )
            })?;
            patterns.push(Pattern {
                name: name.clone(),
                re: Regex::new(src).map_err(|e| e.to_string())?,
                luhn: name == "card_number",
            });
        }
        for (i, src) in cfg.custom.iter().enumerate() {
            let re = regex::RegexBuilder::new(src)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("invalid redaction regex {src:?}: {e}"))?;
            patterns.push(Pattern {
                name: format!("custom_{i}"),
                re,
                luhn: false,
            });
        }
        if patterns.is_empty() {
            return Ok(None);
        }
        let counter = IntCounterVec::new(
            Opts::new(
                "tern_ingest_redactions_total",
                "Values masked by log redaction, by pattern",
            ),
            &["pattern"],
        )
        .map_err(|e| e.to_string())?;
        registry
            .register(Box::new(counter.clone()))
            .map_err(|e| e.to_string())?;
        Ok(Some(Redactor {
            patterns,
            mask: cfg.mask.clone(),
            counter,
        }))
    }

    /// Masks one string; returns the number of replacements.
    pub fn redact_str(&self, s: &mut String) -> u64 {
        let mut total = 0;
        for p in &self.patterns {
            let mut n = 0u64;
            let out = p.re.replace_all(s, |c: &regex::Captures| {
                let m = &c[0];
                if p.luhn && !luhn(m) {
                    return m.to_string();
                }
                n += 1;
                self.mask.clone()
            });
            if let Cow::Owned(o) = out {
                if n > 0 {
                    *s = o;
                    self.counter.with_label_values(&[p.name.as_str()]).inc_by(n);
                }
            }
            total += n;
        }
        total
    }

    fn value(&self, v: &mut AnyValue, depth: usize) -> u64 {
        if depth > MAX_DEPTH {
            return 0;
        }
        match &mut v.value {
            Some(Value::StringValue(s)) => self.redact_str(s),
            Some(Value::ArrayValue(a)) => {
                a.values.iter_mut().map(|v| self.value(v, depth + 1)).sum()
            }
            Some(Value::KvlistValue(kv)) => self.attrs(&mut kv.values, depth + 1),
            _ => 0,
        }
    }

    fn attrs(&self, kvs: &mut [KeyValue], depth: usize) -> u64 {
        kvs.iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .map(|v| self.value(v, depth))
            .sum()
    }

    /// Masks the bodies and attributes of every log record; returns the
    /// number of replacements.
    pub fn redact_logs(&self, req: &mut ExportLogsServiceRequest) -> u64 {
        let mut n = 0;
        for rl in &mut req.resource_logs {
            for sl in &mut rl.scope_logs {
                for r in &mut sl.log_records {
                    if let Some(b) = r.body.as_mut() {
                        n += self.value(b, 0);
                    }
                    n += self.attrs(&mut r.attributes, 0);
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(builtin: &[&str], custom: &[&str]) -> Redactor {
        let cfg = RedactionConfig {
            builtin: builtin.iter().map(|s| s.to_string()).collect(),
            custom: custom.iter().map(|s| s.to_string()).collect(),
            mask: "[REDACTED]".into(),
        };
        Redactor::new(&cfg, &Registry::new()).unwrap().unwrap()
    }

    #[test]
    fn masks_builtin_patterns() {
        let r = redactor(&BUILTIN, &[r"ssn=\d{3}-\d{2}-\d{4}"]);
        let mut s = "mail jane.doe@example.co.uk paid with 4111 1111 1111 1111 \
                     (order 1234567890123) auth Bearer abc.DEF-123= ssn=123-45-6789"
            .to_string();
        assert_eq!(r.redact_str(&mut s), 4);
        assert_eq!(
            s,
            "mail [REDACTED] paid with [REDACTED] (order 1234567890123) auth [REDACTED] [REDACTED]"
        );
        let mut clean = "nothing here".to_string();
        assert_eq!(r.redact_str(&mut clean), 0);
        assert_eq!(clean, "nothing here");
    }

    #[test]
    fn bad_config_is_an_error() {
        let cfg = RedactionConfig {
            builtin: vec!["phone".into()],
            ..Default::default()
        };
        assert!(Redactor::new(&cfg, &Registry::new()).is_err());
        let cfg = RedactionConfig {
            custom: vec!["(".into()],
            ..Default::default()
        };
        assert!(Redactor::new(&cfg, &Registry::new()).is_err());
        assert!(Redactor::new(&RedactionConfig::default(), &Registry::new())
            .unwrap()
            .is_none());
    }

    #[test]
    fn masks_nested_values_of_a_request() {
        use opentelemetry_proto::tonic::common::v1::KeyValueList;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let s = |v: &str| AnyValue {
            value: Some(Value::StringValue(v.into())),
        };
        let mut req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(s("login a@b.io")),
                        attributes: vec![KeyValue {
                            key: "user".into(),
                            value: Some(AnyValue {
                                value: Some(Value::KvlistValue(KeyValueList {
                                    values: vec![KeyValue {
                                        key: "email".into(),
                                        value: Some(s("c@d.org")),
                                        ..Default::default()
                                    }],
                                })),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let r = redactor(&["email"], &[]);
        assert_eq!(r.redact_logs(&mut req), 2);
        let rec = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.body, Some(s("login [REDACTED]")));
        let Some(Value::KvlistValue(kv)) = &rec.attributes[0].value.as_ref().unwrap().value else {
            panic!()
        };
        assert_eq!(kv.values[0].value, Some(s("[REDACTED]")));
    }
}
