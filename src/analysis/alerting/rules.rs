//! Rule definitions: Prometheus rule files (`groups:` / `rules:`, alerting
//! and recording rules) plus tern's log-count and span rules, their parsing
//! from YAML or JSON and their validation.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::Template;
use super::AlertingError;

/// Most rules over all groups.
pub const MAX_RULES: usize = 10_000;
/// Most labels or annotations on one rule.
pub const MAX_LABELS: usize = 64;
/// Longest label name, label value, annotation or expression.
pub const MAX_TEXT: usize = 16 * 1024;
/// Longest label name.
pub const MAX_LABEL_NAME: usize = 256;

/// A duration in Prometheus notation (`30s`, `5m`, `1h30m`, `7d`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    pub fn ms(self) -> i64 {
        self.0.as_millis() as i64
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        // Prometheus accepts a zero duration with units (`for: 0s`); the
        // PromQL parser's duration rule does not.
        let zero_with_units = s.starts_with('0')
            && s.chars().all(|c| c == '0' || c.is_ascii_alphabetic())
            && promql_parser::util::parse_duration(&s.replace('0', "1")).is_ok();
        if s == "0" || zero_with_units {
            return Ok(PromDuration(Duration::ZERO));
        }
        promql_parser::util::parse_duration(s)
            .map(PromDuration)
            .map_err(|e| format!("invalid duration {s:?}: {e}"))
    }
}

impl fmt::Debug for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis() as u64;
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, size) in [
            ("d", 86_400_000u64),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for PromDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(PromDuration(Duration::from_secs(n))),
            Raw::Text(t) => PromDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// A Prometheus rule file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    /// Evaluation interval; the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<PromDuration>,
    /// Most alerts (or series, for recording rules) one rule may produce;
    /// 0 means the server's bound. Over it, the rule fails that evaluation.
    #[serde(default)]
    pub limit: usize,
    /// Labels added to every rule of the group (a rule's own win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// A PromQL expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// tern: count of log records matching a search over a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogRuleSpec>,
    /// tern: a RED figure of a service (or operation) over a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<SpanRuleSpec>,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Counts log records matching `query` (the log search syntax) in the
/// window before each evaluation; the alert fires when the count meets
/// `condition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRuleSpec {
    #[serde(default)]
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub window: PromDuration,
    pub condition: Condition,
}

/// A RED figure of a service's entry spans (or of one operation's spans)
/// over the window before each evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanRuleSpec {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub window: PromDuration,
    pub measure: SpanMeasure,
    pub condition: Condition,
}

/// `requests`, `errors`, `error_ratio`, `rate` (requests per second) or
/// `latency_p<NN>_ms` (e.g. `latency_p99_ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpanMeasure {
    Requests,
    Errors,
    ErrorRatio,
    Rate,
    /// Quantile (0..1) of the duration, in milliseconds.
    LatencyMs(f64),
}

impl SpanMeasure {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "requests" => SpanMeasure::Requests,
            "errors" => SpanMeasure::Errors,
            "error_ratio" => SpanMeasure::ErrorRatio,
            "rate" => SpanMeasure::Rate,
            other => {
                let q = other
                    .strip_prefix("latency_p")
                    .and_then(|r| r.strip_suffix("_ms"))
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|n| *n > 0.0 && *n < 100.0)
                    .ok_or_else(|| {
                        format!("unknown span measure {other:?}: use requests, errors, error_ratio, rate or latency_p<NN>_ms")
                    })?;
                SpanMeasure::LatencyMs(q / 100.0)
            }
        })
    }
}

impl fmt::Display for SpanMeasure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpanMeasure::Requests => write!(f, "requests"),
            SpanMeasure::Errors => write!(f, "errors"),
            SpanMeasure::ErrorRatio => write!(f, "error_ratio"),
            SpanMeasure::Rate => write!(f, "rate"),
            SpanMeasure::LatencyMs(q) => write!(f, "latency_p{}_ms", q * 100.0),
        }
    }
}

impl Serialize for SpanMeasure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SpanMeasure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SpanMeasure::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A threshold such as `> 10`, `>= 0.05`, `== 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    pub op: CmpOp,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Condition {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (op, rest) = [
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ]
        .iter()
        .find_map(|(p, op)| s.strip_prefix(p).map(|r| (*op, r)))
        .ok_or_else(|| format!("invalid condition {s:?}: expected e.g. \"> 10\""))?;
        let value = rest
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("invalid condition {s:?}: the threshold is not a number"))?;
        Ok(Condition { op, value })
    }

    pub fn holds(&self, v: f64) -> bool {
        match self.op {
            CmpOp::Gt => v > self.value,
            CmpOp::Ge => v >= self.value,
            CmpOp::Lt => v < self.value,
            CmpOp::Le => v <= self.value,
            CmpOp::Eq => v == self.value,
            CmpOp::Ne => v != self.value,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        };
        write!(f, "{op} {}", self.value)
    }
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Condition::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a rule evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleQuery {
    PromQl(String),
    Logs(LogRuleSpec),
    Spans(SpanRuleSpec),
    /// Generated for an SLO: fires while the burn rate over both windows
    /// is at least `factor`.
    SloBurn {
        slo: Box<crate::analysis::slo::SloDef>,
        factor: f64,
        long: PromDuration,
        short: PromDuration,
    },
}

impl RuleQuery {
    /// The text `/api/v1/rules` shows as `query`.
    pub fn describe(&self) -> String {
        match self {
            RuleQuery::PromQl(q) => q.clone(),
            RuleQuery::Logs(l) => format!(
                "count_logs({:?}{}[{}]) {}",
                l.query,
                l.service
                    .as_ref()
                    .map(|s| format!(", service={s:?}"))
                    .unwrap_or_default(),
                l.window,
                l.condition
            ),
            RuleQuery::Spans(s) => format!(
                "spans_{}(service={:?}{}[{}]) {}",
                s.measure,
                s.service,
                s.operation
                    .as_ref()
                    .map(|o| format!(", operation={o:?}"))
                    .unwrap_or_default(),
                s.window,
                s.condition
            ),
            RuleQuery::SloBurn {
                slo,
                factor,
                long,
                short,
            } => format!(
                "slo_burn_rate({n:?}[{long}]) >= {factor} and slo_burn_rate({n:?}[{short}]) >= {factor}",
                n = slo.name
            ),
        }
    }
}

/// A validated rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// `group/name#index`: unique, stable while the group's rules keep
    /// their order; alert state is kept under it.
    pub key: String,
    pub group: String,
    pub name: String,
    pub recording: bool,
    pub query: RuleQuery,
    pub for_: PromDuration,
    pub keep_firing_for: PromDuration,
    pub labels: BTreeMap<String, Template>,
    pub annotations: BTreeMap<String, Template>,
    pub limit: usize,
    pub def: Rule,
}

#[derive(Debug, Clone)]
pub struct CompiledGroup {
    pub name: String,
    pub interval: PromDuration,
    pub limit: usize,
    pub rules: Vec<CompiledRule>,
    pub def: RuleGroup,
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_LABEL_NAME
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a rule file in YAML (JSON is YAML too).
pub fn parse_rule_file(text: &str) -> Result<RuleFile, AlertingError> {
    serde_yaml::from_str::<RuleFile>(text)
        .map_err(|e| AlertingError::InvalidRule(format!("rule file: {e}")))
}

/// Validates and compiles a group; errors name the group and rule.
pub fn compile_group(
    g: &RuleGroup,
    default_interval: PromDuration,
) -> Result<CompiledGroup, AlertingError> {
    let bad = |m: String| AlertingError::InvalidRule(format!("group {:?}: {m}", g.name));
    if g.name.trim().is_empty() || g.name.len() > MAX_LABEL_NAME {
        return Err(bad("a group needs a name of at most 256 bytes".into()));
    }
    if g.name.contains('/') {
        return Err(bad("a group name must not contain '/'".into()));
    }
    let interval = g.interval.unwrap_or(default_interval);
    if interval.0 < Duration::from_millis(10) {
        return Err(bad("interval must be at least 10ms".into()));
    }
    if g.rules.len() > MAX_RULES {
        return Err(bad(format!("more than {MAX_RULES} rules")));
    }
    check_labels(&g.labels).map_err(|m| bad(format!("labels: {m}")))?;
    let mut rules = Vec::with_capacity(g.rules.len());
    for (i, r) in g.rules.iter().enumerate() {
        let c = compile_rule(g, i, r).map_err(|m| {
            let name = r.alert.as_deref().or(r.record.as_deref()).unwrap_or("");
            bad(format!("rule {} ({name:?}): {m}", i + 1))
        })?;
        rules.push(c);
    }
    Ok(CompiledGroup {
        name: g.name.clone(),
        interval,
        limit: g.limit,
        rules,
        def: g.clone(),
    })
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("more than {MAX_LABELS} entries"));
    }
    for (k, v) in labels {
        if !valid_label_name(k) {
            return Err(format!("invalid label name {k:?}"));
        }
        if v.len() > MAX_TEXT {
            return Err(format!("value of {k:?} is longer than {MAX_TEXT} bytes"));
        }
    }
    Ok(())
}

fn compile_rule(g: &RuleGroup, index: usize, r: &Rule) -> Result<CompiledRule, String> {
    let (name, recording) = match (&r.alert, &r.record) {
        (Some(a), None) => (a.clone(), false),
        (None, Some(rec)) => (rec.clone(), true),
        _ => return Err("exactly one of alert and record must be set".into()),
    };
    if recording {
        if !valid_metric_name(&name) {
            return Err(format!("invalid metric name {name:?} for record"));
        }
        if r.for_.is_some() || r.keep_firing_for.is_some() || !r.annotations.is_empty() {
            return Err("for, keep_firing_for and annotations apply to alerting rules only".into());
        }
    } else if name.trim().is_empty() || name.len() > MAX_LABEL_NAME {
        return Err("an alert needs a name of at most 256 bytes".into());
    }
    let query = match (&r.expr, &r.logs, &r.spans) {
        (Some(e), None, None) => {
            if e.len() > MAX_TEXT {
                return Err(format!("expr is longer than {MAX_TEXT} bytes"));
            }
            let parsed = crate::query::promql::parse(e).map_err(|e| format!("expr: {e}"))?;
            use promql_parser::parser::value::ValueType;
            if !matches!(parsed.value_type(), ValueType::Vector | ValueType::Scalar) {
                return Err("expr must be an instant vector or a scalar".into());
            }
            RuleQuery::PromQl(e.clone())
        }
        (None, Some(l), None) => {
            if !l.query.trim().is_empty() {
                crate::query::logs::parse(&l.query).map_err(|e| format!("logs.query: {e}"))?;
            }
            if l.window.0.is_zero() {
                return Err("logs.window must be positive".into());
            }
            RuleQuery::Logs(l.clone())
        }
        (None, None, Some(s)) => {
            if s.service.trim().is_empty() {
                return Err("spans.service must not be empty".into());
            }
            if s.window.0 < Duration::from_secs(60) {
                return Err(
                    "spans.window must be at least 1m (span aggregates are per minute)".into(),
                );
            }
            RuleQuery::Spans(s.clone())
        }
        _ => return Err("exactly one of expr, logs and spans must be set".into()),
    };
    if recording && !matches!(query, RuleQuery::PromQl(_)) {
        return Err("recording rules take a PromQL expr".into());
    }
    check_labels(&r.labels).map_err(|m| format!("labels: {m}"))?;
    if r.annotations.len() > MAX_LABELS {
        return Err(format!("more than {MAX_LABELS} annotations"));
    }
    let mut labels = BTreeMap::new();
    for (k, v) in g.labels.iter().chain(r.labels.iter()) {
        labels.insert(
            k.clone(),
            Template::parse(v).map_err(|e| format!("label {k:?}: {e}"))?,
        );
    }
    let mut annotations = BTreeMap::new();
    for (k, v) in &r.annotations {
        if v.len() > MAX_TEXT {
            return Err(format!("annotation {k:?} is longer than {MAX_TEXT} bytes"));
        }
        annotations.insert(
            k.clone(),
            Template::parse(v).map_err(|e| format!("annotation {k:?}: {e}"))?,
        );
    }
    Ok(CompiledRule {
        key: format!("{}/{}#{}", g.name, name, index),
        group: g.name.clone(),
        name,
        recording,
        query,
        for_: r.for_.unwrap_or_default(),
        keep_firing_for: r.keep_firing_for.unwrap_or_default(),
        labels,
        annotations,
        limit: g.limit,
        def: r.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
groups:
  - name: api
    interval: 30s
    rules:
      - record: job:http_errors:rate5m
        expr: sum by (job) (rate(http_errors_total[5m]))
      - alert: HighErrorRate
        expr: job:http_errors:rate5m > 0.5
        for: 1h30m
        keep_firing_for: 5m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} errors at {{ $value }}"
      - alert: ErrorLogs
        logs:
          query: 'level:error AND "timeout"'
          service: checkout
          window: 5m
          condition: "> 10"
      - alert: SlowCheckout
        spans:
          service: checkout
          operation: POST /pay
          window: 10m
          measure: latency_p99_ms
          condition: "> 300"
"#;

    #[test]
    fn prometheus_rule_files_parse_and_compile() {
        let f = parse_rule_file(FILE).unwrap();
        assert_eq!(f.groups.len(), 1);
        let g = compile_group(&f.groups[0], PromDuration(Duration::from_secs(60))).unwrap();
        assert_eq!(g.interval, PromDuration(Duration::from_secs(30)));
        assert_eq!(g.rules.len(), 4);
        assert!(g.rules[0].recording);
        assert_eq!(g.rules[1].for_.0, Duration::from_secs(5400));
        assert_eq!(g.rules[1].keep_firing_for.0, Duration::from_secs(300));
        assert_eq!(g.rules[1].key, "api/HighErrorRate#1");
        match &g.rules[3].query {
            RuleQuery::Spans(s) => {
                assert_eq!(s.measure, SpanMeasure::LatencyMs(0.99));
                assert_eq!(s.condition, Condition::parse(">300").unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
        // JSON round trip keeps the definition.
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["groups"][0]["rules"][1]["for"], "1h30m");
        let back: RuleFile = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn bad_rule_files_are_explained() {
        let cases = [
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'rate(x[5m]'\n", "expr"),
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        record: b\n        expr: x\n", "exactly one of alert and record"),
            ("groups:\n  - name: g\n    rules:\n      - record: 'bad name'\n        expr: x\n", "invalid metric name"),
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        for: 5 minutes\n", "invalid duration"),
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        labels:\n          bad-label: x\n", "invalid label name"),
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        annotations:\n          s: '{{ $nope }}'\n", "annotation"),
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x\n        colour: red\n", "colour"),
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'x[5m]'\n", "instant vector"),
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        logs: {query: 'a AND (', window: 5m, condition: '> 1'}\n", "logs.query"),
            ("groups:\n  - name: g\n    rules:\n      - alert: A\n        spans: {service: s, window: 5m, measure: p99, condition: '> 1'}\n", "span measure"),
            ("groups: [", "rule file"),
        ];
        for (text, want) in cases {
            let err = parse_rule_file(text)
                .and_then(|f| {
                    f.groups
                        .iter()
                        .map(|g| compile_group(g, PromDuration(Duration::from_secs(60))))
                        .collect::<Result<Vec<_>, _>>()
                })
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert_eq!(err.code(), "bad_rule");
            assert!(err.to_string().contains(want), "{want:?} not in {err}");
        }
    }

    #[test]
    fn durations_print_as_prometheus_does() {
        for (s, want) in [
            ("90m", "1h30m"),
            ("1h30m", "1h30m"),
            ("30s", "30s"),
            ("3d", "3d"),
            ("0", "0s"),
            ("0s", "0s"),
            ("0m", "0s"),
            ("0ms", "0s"),
        ] {
            assert_eq!(PromDuration::parse(s).unwrap().to_string(), want);
        }
        for bad in ["0x", "00q", "s", "-1m", "1 m"] {
            assert!(PromDuration::parse(bad).is_err(), "{bad}");
        }
    }
}
