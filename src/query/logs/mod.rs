//! The log search language: a Lucene-style query string compiled to the
//! engine-independent [`LogFilter`].
//!
//! ```text
//! timeout                      a word of the body (case-insensitive)
//! "connection reset"           a phrase of the body
//! connection-reset             several words without quotes: a phrase
//! severity:error  level:warn   severity name or the sender's severity text
//! service:checkout             resource service.name (exact)
//! trace_id:<hex>  span_id:<hex>
//! attributes.http.status_code:500   attr.user.id:u1   body.key:value
//! resource.host.name:web-1
//! severity_number:>=17  severity_number:[9 TO 12]  timestamp:{1700000000000000000 TO *}
//! a AND b   a b (implicit AND)   a OR b   NOT a   -a   !a   (a OR b) AND c
//! *                            every record
//! ```
//!
//! Owns the syntax only; the time range, paging and histogram are request
//! parameters. Errors carry the byte position and what was expected.

use std::ops::Bound;

use crate::storage::logs::{LogField, LogFilter, NumField};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 8192;
/// Deepest parenthesis / NOT nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// A syntax error at a byte offset of the query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} at {position}, found {found}")]
pub struct ParseError {
    pub position: usize,
    pub expected: String,
    pub found: String,
}

impl ParseError {
    pub fn code(&self) -> &'static str {
        "invalid_query"
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    LParen,
    RParen,
    Colon,
    LBracket(bool),
    RBracket(bool),
    And,
    Or,
    Not,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("{w:?}"),
            Tok::Quoted(q) => format!("\"{q}\""),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Colon => "':'".into(),
            Tok::LBracket(true) => "'['".into(),
            Tok::LBracket(false) => "'{'".into(),
            Tok::RBracket(true) => "']'".into(),
            Tok::RBracket(false) => "'}'".into(),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::Not => "NOT".into(),
        }
    }
}

struct Lexed {
    tok: Tok,
    pos: usize,
    /// Whether whitespace follows this token directly.
    spaced_after: bool,
}

fn err(position: usize, expected: &str, found: impl Into<String>) -> ParseError {
    ParseError {
        position,
        expected: expected.into(),
        found: found.into(),
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '(' | ')' | ':' | '"' | '[' | ']' | '{' | '}')
}

fn lex(q: &str) -> Result<Vec<Lexed>, ParseError> {
    let mut out: Vec<Lexed> = Vec::new();
    let mut it = q.char_indices().peekable();
    while let Some(&(pos, c)) = it.peek() {
        if c.is_whitespace() {
            if let Some(last) = out.last_mut() {
                last.spaced_after = true;
            }
            it.next();
            continue;
        }
        let tok = match c {
            '(' => {
                it.next();
                Tok::LParen
            }
            ')' => {
                it.next();
                Tok::RParen
            }
            ':' => {
                it.next();
                Tok::Colon
            }
            '[' | '{' => {
                it.next();
                Tok::LBracket(c == '[')
            }
            ']' | '}' => {
                it.next();
                Tok::RBracket(c == ']')
            }
            '"' => {
                it.next();
                let mut s = String::new();
                let mut closed = false;
                while let Some((_, c)) = it.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some((_, e)) = it.next() {
                                s.push(e);
                            }
                        }
                        c => s.push(c),
                    }
                }
                if !closed {
                    return Err(err(q.len(), "'\"' to close the phrase", "end of query"));
                }
                Tok::Quoted(s)
            }
            '!' if out
                .last()
                .is_none_or(|l| l.spaced_after || l.tok != Tok::Colon) =>
            {
                it.next();
                Tok::Not
            }
            '-' if out
                .last()
                .is_none_or(|l| l.spaced_after || l.tok == Tok::LParen)
                && it.clone().nth(1).is_some_and(|(_, n)| !n.is_whitespace()) =>
            {
                it.next();
                Tok::Not
            }
            _ => {
                let mut s = String::new();
                while let Some(&(_, c)) = it.peek() {
                    if c.is_whitespace() || is_special(c) {
                        break;
                    }
                    it.next();
                    if c == '\\' {
                        if let Some((_, e)) = it.next() {
                            s.push(e);
                        }
                    } else {
                        s.push(c);
                    }
                }
                match s.as_str() {
                    "AND" | "&&" => Tok::And,
                    "OR" | "||" => Tok::Or,
                    "NOT" => Tok::Not,
                    _ => Tok::Word(s),
                }
            }
        };
        out.push(Lexed {
            tok,
            pos,
            spaced_after: false,
        });
    }
    Ok(out)
}

/// Parses a query string; an empty query matches every record.
pub fn parse(q: &str) -> Result<LogFilter, ParseError> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(err(
            MAX_QUERY_BYTES,
            &format!("a query of at most {MAX_QUERY_BYTES} bytes"),
            format!("{} bytes", q.len()),
        ));
    }
    let toks = lex(q)?;
    if toks.is_empty() {
        return Ok(LogFilter::All);
    }
    let mut p = Parser {
        toks,
        i: 0,
        end: q.len(),
    };
    let f = p.or(0)?;
    if let Some(t) = p.peek() {
        let what = if t.tok == Tok::RParen {
            "end of query (unbalanced ')')"
        } else {
            "an operator or end of query"
        };
        return Err(err(t.pos, what, t.tok.describe()));
    }
    Ok(f)
}

struct Parser {
    toks: Vec<Lexed>,
    i: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Lexed> {
        self.toks.get(self.i)
    }

    fn pos(&self) -> usize {
        self.peek().map_or(self.end, |t| t.pos)
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "end of query".into(), |t| t.tok.describe())
    }

    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.tok.clone());
        self.i += 1;
        t
    }

    fn or(&mut self, depth: usize) -> Result<LogFilter, ParseError> {
        let mut items = vec![self.and(depth)?];
        while self.peek().is_some_and(|t| t.tok == Tok::Or) {
            self.i += 1;
            items.push(self.and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            LogFilter::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> Result<LogFilter, ParseError> {
        let mut items = vec![self.unary(depth)?];
        loop {
            match self.peek().map(|t| &t.tok) {
                Some(Tok::And) => {
                    self.i += 1;
                    items.push(self.unary(depth)?);
                }
                Some(Tok::Or) | Some(Tok::RParen) | None => break,
                Some(_) => items.push(self.unary(depth)?),
            }
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            LogFilter::And(items)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<LogFilter, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(err(
                self.pos(),
                &format!("at most {MAX_DEPTH} levels of nesting"),
                self.found(),
            ));
        }
        if self.peek().is_some_and(|t| t.tok == Tok::Not) {
            self.i += 1;
            return Ok(LogFilter::Not(Box::new(self.unary(depth + 1)?)));
        }
        self.primary(depth)
    }

    fn primary(&mut self, depth: usize) -> Result<LogFilter, ParseError> {
        let pos = self.pos();
        match self.bump() {
            Some(Tok::LParen) => {
                let f = self.or(depth + 1)?;
                match self.bump() {
                    Some(Tok::RParen) => Ok(f),
                    _ => {
                        self.i -= 1;
                        Err(err(self.pos(), "')'", self.found()))
                    }
                }
            }
            Some(Tok::Quoted(s)) => Ok(LogFilter::Phrase(s)),
            Some(Tok::Word(w)) => {
                let glued_colon = self.toks.get(self.i - 1).is_some_and(|t| !t.spaced_after)
                    && self.peek().is_some_and(|t| t.tok == Tok::Colon);
                if glued_colon {
                    self.i += 1;
                    return self.field_value(&w, pos);
                }
                if w == "*" {
                    return Ok(LogFilter::All);
                }
                Ok(LogFilter::Text(w))
            }
            Some(t) => {
                self.i -= 1;
                Err(err(
                    pos,
                    "a word, a phrase, a field filter or '('",
                    t.describe(),
                ))
            }
            None => Err(err(
                pos,
                "a word, a phrase, a field filter or '('",
                "end of query",
            )),
        }
    }

    fn field_value(&mut self, name: &str, name_pos: usize) -> Result<LogFilter, ParseError> {
        let target = field(name).ok_or_else(|| {
            err(
                name_pos,
                "a field (severity, level, service, trace_id, span_id, body, severity_number, \
                 timestamp, attributes.<key>, resource.<key>)",
                format!("{name:?}"),
            )
        })?;
        let pos = self.pos();
        match target {
            Target::Body => match self.bump() {
                Some(Tok::Word(w)) => Ok(LogFilter::Text(w)),
                Some(Tok::Quoted(q)) => Ok(LogFilter::Phrase(q)),
                _ => {
                    self.i -= 1;
                    Err(err(pos, "a word or a phrase", self.found()))
                }
            },
            Target::Keyword(field) => match self.bump() {
                Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => {
                    let value = match field {
                        LogField::Severity => severity_alias(&w),
                        LogField::TraceId | LogField::SpanId => {
                            let n = if field == LogField::TraceId { 32 } else { 16 };
                            if w.len() != n || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return Err(err(pos, &format!("{n} hex digits"), format!("{w:?}")));
                            }
                            w.to_lowercase()
                        }
                        _ => w,
                    };
                    Ok(LogFilter::Term { field, value })
                }
                _ => {
                    self.i -= 1;
                    Err(err(pos, "a value", self.found()))
                }
            },
            Target::Number(field) => self.numeric(field),
        }
    }

    fn number(&mut self) -> Result<Option<u64>, ParseError> {
        let pos = self.pos();
        match self.bump() {
            Some(Tok::Word(w)) if w == "*" => Ok(None),
            Some(Tok::Word(w)) => w
                .parse::<u64>()
                .map(Some)
                .map_err(|_| err(pos, "a non-negative integer or '*'", format!("{w:?}"))),
            _ => {
                self.i -= 1;
                Err(err(pos, "a non-negative integer or '*'", self.found()))
            }
        }
    }

    fn numeric(&mut self, field: NumField) -> Result<LogFilter, ParseError> {
        let pos = self.pos();
        match self.bump() {
            Some(Tok::LBracket(incl_lo)) => {
                let lo = self.number()?;
                let to_pos = self.pos();
                match self.bump() {
                    Some(Tok::Word(w)) if w == "TO" => {}
                    _ => {
                        self.i -= 1;
                        return Err(err(to_pos, "TO", self.found()));
                    }
                }
                let hi = self.number()?;
                let close_pos = self.pos();
                let incl_hi = match self.bump() {
                    Some(Tok::RBracket(b)) => b,
                    _ => {
                        self.i -= 1;
                        return Err(err(close_pos, "']' or '}'", self.found()));
                    }
                };
                let b = |v: Option<u64>, incl: bool| match v {
                    None => Bound::Unbounded,
                    Some(v) if incl => Bound::Included(v),
                    Some(v) => Bound::Excluded(v),
                };
                Ok(LogFilter::Range {
                    field,
                    lower: b(lo, incl_lo),
                    upper: b(hi, incl_hi),
                })
            }
            Some(Tok::Word(w)) => {
                let (op, num) = if let Some(n) = w.strip_prefix(">=") {
                    (">=", n)
                } else if let Some(n) = w.strip_prefix("<=") {
                    ("<=", n)
                } else if let Some(n) = w.strip_prefix('>') {
                    (">", n)
                } else if let Some(n) = w.strip_prefix('<') {
                    ("<", n)
                } else {
                    ("=", w.as_str())
                };
                let v: u64 = num.parse().map_err(|_| {
                    err(
                        pos + op.len() * usize::from(op != "="),
                        "a non-negative integer",
                        format!("{num:?}"),
                    )
                })?;
                let (lower, upper) = match op {
                    ">=" => (Bound::Included(v), Bound::Unbounded),
                    ">" => (Bound::Excluded(v), Bound::Unbounded),
                    "<=" => (Bound::Unbounded, Bound::Included(v)),
                    "<" => (Bound::Unbounded, Bound::Excluded(v)),
                    _ => (Bound::Included(v), Bound::Included(v)),
                };
                Ok(LogFilter::Range {
                    field,
                    lower,
                    upper,
                })
            }
            _ => {
                self.i -= 1;
                Err(err(
                    pos,
                    "a number, a comparison such as >=17 or a range such as [9 TO 12]",
                    self.found(),
                ))
            }
        }
    }
}

enum Target {
    Body,
    Keyword(LogField),
    Number(NumField),
}

fn field(name: &str) -> Option<Target> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(match name {
        "body" | "message" | "msg" => Target::Body,
        "severity" | "level" | "severity_text" => Target::Keyword(LogField::Severity),
        "service" | "service.name" | "service_name" => Target::Keyword(LogField::Service),
        "trace_id" | "traceid" | "trace" => Target::Keyword(LogField::TraceId),
        "span_id" | "spanid" | "span" => Target::Keyword(LogField::SpanId),
        "severity_number" => Target::Number(NumField::SeverityNumber),
        "timestamp" | "time" | "time_ns" => Target::Number(NumField::Time),
        other => {
            if let Some(k) = other
                .strip_prefix("attributes.")
                .or_else(|| other.strip_prefix("attr."))
            {
                Target::Keyword(LogField::Attribute(non_empty(k)?))
            } else if let Some(k) = other.strip_prefix("resource.") {
                Target::Keyword(LogField::Resource(non_empty(k)?))
            } else if let Some(k) = other.strip_prefix("body.") {
                Target::Keyword(LogField::Attribute(format!("body.{}", non_empty(k)?)))
            } else {
                return None;
            }
        }
    })
}

/// Common spellings of severity names.
fn severity_alias(v: &str) -> String {
    let l = v.to_lowercase();
    match l.as_str() {
        "warning" => "warn".into(),
        "err" => "error".into(),
        "critical" | "crit" | "fatal" => "fatal".into(),
        "information" => "info".into(),
        _ => l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(field: LogField, v: &str) -> LogFilter {
        LogFilter::Term {
            field,
            value: v.into(),
        }
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("").unwrap(), LogFilter::All);
        assert_eq!(parse("  * ").unwrap(), LogFilter::All);
        assert_eq!(parse("timeout").unwrap(), LogFilter::Text("timeout".into()));
        assert_eq!(
            parse("\"connection reset\"").unwrap(),
            LogFilter::Phrase("connection reset".into())
        );
        assert_eq!(
            parse("severity:ERROR service:checkout").unwrap(),
            LogFilter::And(vec![
                term(LogField::Severity, "error"),
                term(LogField::Service, "checkout")
            ])
        );
        assert_eq!(
            parse("level:warning").unwrap(),
            term(LogField::Severity, "warn")
        );
        assert_eq!(
            parse("attributes.http.status_code:500").unwrap(),
            term(LogField::Attribute("http.status_code".into()), "500")
        );
        assert_eq!(
            parse("resource.host.name:\"web 1\"").unwrap(),
            term(LogField::Resource("host.name".into()), "web 1")
        );
        assert_eq!(
            parse(&format!("trace_id:{}", "AB".repeat(16))).unwrap(),
            term(LogField::TraceId, &"ab".repeat(16))
        );
        assert_eq!(
            parse("a OR b AND NOT c").unwrap(),
            LogFilter::Or(vec![
                LogFilter::Text("a".into()),
                LogFilter::And(vec![
                    LogFilter::Text("b".into()),
                    LogFilter::Not(Box::new(LogFilter::Text("c".into())))
                ])
            ])
        );
        assert_eq!(
            parse("-debug (x || y) && !z").unwrap(),
            LogFilter::And(vec![
                LogFilter::Not(Box::new(LogFilter::Text("debug".into()))),
                LogFilter::Or(vec![
                    LogFilter::Text("x".into()),
                    LogFilter::Text("y".into())
                ]),
                LogFilter::Not(Box::new(LogFilter::Text("z".into()))),
            ])
        );
        assert_eq!(
            parse("severity_number:>=17").unwrap(),
            LogFilter::Range {
                field: NumField::SeverityNumber,
                lower: Bound::Included(17),
                upper: Bound::Unbounded
            }
        );
        assert_eq!(
            parse("timestamp:[10 TO *}").unwrap(),
            LogFilter::Range {
                field: NumField::Time,
                lower: Bound::Included(10),
                upper: Bound::Unbounded
            }
        );
        assert_eq!(
            parse("severity_number:{9 TO 12]").unwrap(),
            LogFilter::Range {
                field: NumField::SeverityNumber,
                lower: Bound::Excluded(9),
                upper: Bound::Included(12)
            }
        );
        // A hyphenated word stays one word (a phrase for the store).
        assert_eq!(
            parse("connection-reset").unwrap(),
            LogFilter::Text("connection-reset".into())
        );
        assert_eq!(parse(r"path\:x").unwrap(), LogFilter::Text("path:x".into()));
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = parse("(timeout OR error").unwrap_err();
        assert_eq!(e.position, 17);
        assert_eq!(e.to_string(), "expected ')' at 17, found end of query");
        let e = parse("severity:").unwrap_err();
        assert_eq!((e.position, e.expected.as_str()), (9, "a value"));
        let e = parse("nosuch:x").unwrap_err();
        assert_eq!(e.position, 0);
        assert!(e.expected.starts_with("a field"), "{e}");
        let e = parse("a )").unwrap_err();
        assert_eq!(e.position, 2);
        let e = parse("\"open").unwrap_err();
        assert_eq!(e.position, 5);
        let e = parse("severity_number:[1 TO x]").unwrap_err();
        assert_eq!(e.position, 22);
        let e = parse("severity_number:>=abc").unwrap_err();
        assert_eq!(e.position, 18);
        let e = parse("trace_id:xyz").unwrap_err();
        assert_eq!(e.expected, "32 hex digits");
        assert!(parse("a AND").is_err());
        assert!(parse("OR").is_err());
        assert!(parse(&"(".repeat(1000)).is_err());
        assert!(parse(&"NOT ".repeat(1000)).is_err());
        assert!(parse(&"x".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(q in "\\PC{0,64}") {
            let _ = parse(&q);
        }

        #[test]
        fn never_panics_on_query_characters(q in "[a-z:()\\[\\]{}\"*<>=! \\-&|TOANDR0-9]{0,40}") {
            let _ = parse(&q);
        }
    }
}
