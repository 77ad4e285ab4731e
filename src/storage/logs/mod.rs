//! The log store: the engine-independent search model shared by every
//! [`LogStore`](super::LogStore) implementation, and the tantivy store.
//!
//! Owns the search filter ([`LogFilter`]), the search request and answer
//! ([`LogSearch`], [`LogPage`]), the opaque pagination cursor, the reference
//! matcher (used by the memory store and by live tail), the tokenization and
//! attribute flattening rules both implementations agree on, the compact
//! record encoding, and the live-tail broadcast. Only [`index`] imports
//! tantivy; the query language that produces a [`LogFilter`] lives in
//! `query::logs`.

pub mod bloom;
pub mod codec;
mod framed;
pub mod index;
mod matcher;
pub mod rows;
mod slots;
mod tail;
pub mod template;

use std::ops::Bound;

pub use matcher::matches;
pub use tail::{TailEvent, TailHub, TailReceiver};

use crate::model::{AnyValue, LogRecord};

/// Most records one search page returns.
pub const MAX_PAGE: usize = 1000;
/// Most histogram buckets one search computes.
pub const MAX_BUCKETS: usize = 2000;
/// Tokens longer than this (in bytes) are not indexed, as in tantivy's
/// default analyzer.
pub const MAX_TOKEN_BYTES: usize = 40;
/// Attribute `key=value` pairs longer than this (in bytes) are stored but
/// cannot be found by an exact field filter.
pub const MAX_KEYWORD_BYTES: usize = 1024;
/// Records per WAL record that get distinct ids (`seq << ID_SHIFT | index`).
pub const ID_SHIFT: u32 = 24;

/// A field that matches by exact value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogField {
    /// Severity name (`error`, `warn`...) or the sender's severity text,
    /// case-insensitive.
    Severity,
    /// The resource's `service.name`.
    Service,
    /// Trace id, lower-case hex.
    TraceId,
    /// Span id, lower-case hex.
    SpanId,
    /// A record attribute (or a key of a structured body) by dotted path.
    Attribute(String),
    /// A resource attribute by dotted path.
    Resource(String),
}

/// A numeric field for range filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumField {
    SeverityNumber,
    /// The record's time, in nanoseconds since the epoch.
    Time,
}

/// The search filter: an engine-independent boolean expression.
#[derive(Debug, Clone, PartialEq)]
pub enum LogFilter {
    /// Every record.
    All,
    /// Words in the body: one word is a term, several are a phrase.
    Text(String),
    /// The words of the text, adjacent and in order, in the body.
    Phrase(String),
    /// An exact field value.
    Term {
        field: LogField,
        value: String,
    },
    Range {
        field: NumField,
        lower: Bound<u64>,
        upper: Bound<u64>,
    },
    And(Vec<LogFilter>),
    Or(Vec<LogFilter>),
    Not(Box<LogFilter>),
}

/// Where a page starts: strictly older than this (time, id) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogCursor {
    pub time_ns: u64,
    pub id: u64,
}

impl LogCursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        format!("{:016x}{:016x}", self.time_ns, self.id)
    }

    pub fn decode(s: &str) -> Option<LogCursor> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let time_ns = u64::from_str_radix(&s[..16], 16).ok()?;
        let id = u64::from_str_radix(&s[16..], 16).ok()?;
        Some(LogCursor { time_ns, id })
    }
}

/// Count-over-time buckets: `count` buckets of `step_ns` from `start_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    pub start_ns: u64,
    pub step_ns: u64,
    pub count: usize,
}

impl Buckets {
    /// The bucket of a time, if inside.
    pub fn index(&self, t: u64) -> Option<usize> {
        if t < self.start_ns || self.step_ns == 0 {
            return None;
        }
        let i = ((t - self.start_ns) / self.step_ns) as usize;
        (i < self.count).then_some(i)
    }
}

/// A search: filter, time range, page and optional histogram.
#[derive(Debug, Clone)]
pub struct LogSearch {
    pub filter: LogFilter,
    /// Inclusive start, exclusive end, in nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Records to return (at most [`MAX_PAGE`]); 0 counts only.
    pub limit: usize,
    pub cursor: Option<LogCursor>,
    pub buckets: Option<Buckets>,
}

impl LogSearch {
    pub fn new(filter: LogFilter, start_ns: u64, end_ns: u64, limit: usize) -> Self {
        LogSearch {
            filter,
            start_ns,
            end_ns,
            limit,
            cursor: None,
            buckets: None,
        }
    }
}

/// A bulk scan (SQL's `logs` table): every record matching `filter` in
/// `[start_ns, end_ns)`, in no particular order.
#[derive(Debug, Clone)]
pub struct LogScan {
    pub filter: LogFilter,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Most records produced; `None` is unbounded.
    pub limit: Option<usize>,
    /// Report counts ([`LogChunk::Count`]) instead of records.
    pub count_only: bool,
}

/// One chunk of a log scan.
#[derive(Debug, Clone)]
pub enum LogChunk {
    Records(Vec<LogRecord>),
    Count(u64),
}

/// A record with its store id (unique, stable across restarts).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    pub id: u64,
    pub record: LogRecord,
}

impl StoredLog {
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            time_ns: self.record.time_ns,
            id: self.id,
        }
    }
}

/// Severity classes of the histogram, by OTLP severity number range.
pub const SEVERITY_CLASSES: [&str; 7] = [
    "unspecified",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "fatal",
];

/// The histogram class of a severity number.
pub fn severity_class(n: i64) -> usize {
    match n {
        1..=4 => 1,
        5..=8 => 2,
        9..=12 => 3,
        13..=16 => 4,
        17..=20 => 5,
        21..=24 => 6,
        _ => 0,
    }
}

/// One search answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPage {
    /// Newest first, then by id descending.
    pub records: Vec<StoredLog>,
    /// Every matching record in the time range (ignores the cursor).
    pub total: u64,
    /// Set when more records follow this page.
    pub next_cursor: Option<LogCursor>,
    /// Per bucket, counts by [`SEVERITY_CLASSES`] (empty without buckets).
    pub histogram: Vec<[u64; 7]>,
}

/// The id of the `index`-th record of WAL record `seq`.
pub fn record_id(seq: u64, index: usize) -> u64 {
    (seq << ID_SHIFT) | (index as u64 & ((1 << ID_SHIFT) - 1))
}

/// Splits text into lower-case words as the body index does: runs of
/// alphanumeric characters, words over [`MAX_TOKEN_BYTES`] dropped.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_word(text, |w| out.push(w.to_string()));
    out
}

/// Calls `f(lower-case word)` for each word [`tokenize`] yields, in order.
pub fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut words = Words::new(text);
    let mut lower = String::new();
    while words.next_into(&mut lower).is_some() {
        f(&lower);
    }
}

/// The words of a text one at a time, lower-cased into a reused buffer.
pub struct Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Words<'a> {
    pub fn new(text: &'a str) -> Self {
        Words { text, pos: 0 }
    }

    /// The byte range of the next word; its lower-case form is in `lower`.
    pub fn next_into(&mut self, lower: &mut String) -> Option<(usize, usize)> {
        loop {
            let (from, to) = self.next_run()?;
            let w = &self.text[from..to];
            if w.len() >= MAX_TOKEN_BYTES {
                continue;
            }
            lower_into(w, lower);
            return Some((from, to));
        }
    }

    /// The byte range of the next run of alphanumeric characters, words
    /// too long to index included.
    pub fn next_run(&mut self) -> Option<(usize, usize)> {
        let rest = &self.text[self.pos..];
        let from = self.pos + rest.find(char::is_alphanumeric)?;
        let to = self.text[from..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(self.text.len(), |e| from + e);
        self.pos = to;
        Some((from, to))
    }
}

/// The lower-case form of a word, into `out` (replacing its content).
pub fn lower_into(w: &str, out: &mut String) {
    out.clear();
    if w.is_ascii() {
        out.extend(w.bytes().map(|b| b.to_ascii_lowercase() as char));
    } else {
        out.push_str(&w.to_lowercase());
    }
}

/// The body as indexed text: strings as-is, structured bodies as JSON.
pub fn body_text(body: &AnyValue) -> String {
    match body {
        AnyValue::Empty => String::new(),
        other => other.to_text(),
    }
}

/// Scalar text of a value as exact-match filters see it.
fn scalar_text(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::Empty => None,
        AnyValue::String(s) => Some(s.clone()),
        AnyValue::Bool(b) => Some(b.to_string()),
        AnyValue::Int(i) => Some(i.to_string()),
        AnyValue::Double(d) => Some(d.to_string()),
        AnyValue::Bytes(b) => Some(hex::encode(b)),
        AnyValue::Array(_) | AnyValue::Map(_) => None,
    }
}

/// Deepest nesting that is flattened into keywords.
const MAX_FLATTEN_DEPTH: usize = 64;

/// Flattens attributes into `path=value` keywords: maps by dotted path,
/// arrays as several values of the same path. Pairs longer than
/// [`MAX_KEYWORD_BYTES`] are left out.
pub fn keywords(prefix: &str, attrs: &[(String, AnyValue)], out: &mut Vec<String>) {
    for (k, v) in attrs {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        flatten(&path, v, 0, out);
    }
}

fn flatten(path: &str, v: &AnyValue, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_FLATTEN_DEPTH {
        return;
    }
    match v {
        AnyValue::Map(items) => {
            for (k, v) in items {
                flatten(&format!("{path}.{k}"), v, depth + 1, out);
            }
        }
        AnyValue::Array(items) => {
            for v in items {
                flatten(path, v, depth + 1, out);
            }
        }
        other => {
            if let Some(s) = scalar_text(other) {
                let kw = keyword(path, &s);
                if kw.len() <= MAX_KEYWORD_BYTES {
                    out.push(kw);
                }
            }
        }
    }
}

/// The keyword an exact attribute filter looks for.
pub fn keyword(path: &str, value: &str) -> String {
    format!("{path}={value}")
}

/// Every attribute keyword of a record: record attributes and, for a
/// structured body, its keys under `body.`.
pub fn attribute_keywords(r: &LogRecord) -> Vec<String> {
    let mut out = Vec::new();
    keywords("", &r.attributes, &mut out);
    if let AnyValue::Map(items) = &r.body {
        keywords("body", items, &mut out);
    }
    out
}

/// Every resource attribute keyword of a record.
pub fn resource_keywords(r: &LogRecord) -> Vec<String> {
    let mut out = Vec::new();
    keywords("", &r.resource.attributes, &mut out);
    out
}

/// The severity keywords of a record: its class name and its text, lower case.
pub fn severity_keywords(r: &LogRecord) -> Vec<String> {
    let mut out = vec![SEVERITY_CLASSES[severity_class(r.severity_number as i64)].to_string()];
    let text = r.severity_text.to_lowercase();
    if !text.is_empty() && text != out[0] && text.len() <= MAX_KEYWORD_BYTES {
        out.push(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let c = LogCursor {
            time_ns: 1_700_000_000_000_000_000,
            id: record_id(42, 7),
        };
        assert_eq!(LogCursor::decode(&c.encode()), Some(c));
        assert_eq!(LogCursor::decode("zz"), None);
        assert_eq!(LogCursor::decode(&"é".repeat(16)), None);
    }

    #[test]
    fn tokenizer_and_keywords() {
        assert_eq!(
            tokenize("Connection RESET by peer: 10.0.0.1"),
            vec!["connection", "reset", "by", "peer", "10", "0", "0", "1"]
        );
        let mut out = Vec::new();
        keywords(
            "",
            &[
                ("http.status_code".into(), AnyValue::Int(500)),
                (
                    "user".into(),
                    AnyValue::Map(vec![("id".into(), AnyValue::String("u1".into()))]),
                ),
                (
                    "tags".into(),
                    AnyValue::Array(vec![AnyValue::Bool(true), AnyValue::Double(1.5)]),
                ),
            ],
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "http.status_code=500",
                "user.id=u1",
                "tags=true",
                "tags=1.5"
            ]
        );
    }
}
