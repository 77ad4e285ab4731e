//! Service level objectives: good/total event counts from PromQL or from
//! spans (availability or latency), the SLI, error budget and burn rates
//! over the SLO window, a budget burn-down series, and the
//! multi-window multi-burn-rate alert rules generated for every SLO (the
//! SRE workbook's pairs: 14.4× over 1h and 5m, 6× over 6h and 30m — both
//! `severity: page` — and 1× over 3d and 6h, `severity: ticket`).
//!
//! Reads only through `alerting::eval::Sources`; storing definitions is
//! the alerting service's job (meta store).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::analysis::alerting::eval::{promql_samples, red_agg, Sources};
use crate::analysis::alerting::rules::{
    CompiledGroup, CompiledRule, PromDuration, Rule, RuleGroup, RuleQuery,
};
use crate::analysis::alerting::template::Template;
use crate::analysis::alerting::AlertingError;
use crate::storage::traces::types::{Agg, Histogram};

/// The `(factor, long window, short window, severity)` burn-rate alert pairs.
pub const BURN_RATE_ALERTS: [(f64, u64, u64, &str); 3] = [
    (14.4, 3600, 300, "page"),
    (6.0, 6 * 3600, 1800, "page"),
    (1.0, 3 * 86_400, 6 * 3600, "ticket"),
];

/// Burn rates every report shows, besides the whole window.
pub const REPORT_WINDOWS: [u64; 6] = [300, 1800, 3600, 6 * 3600, 86_400, 3 * 86_400];

/// The placeholder PromQL indicators use for the window (`[$window]`).
pub const WINDOW_PLACEHOLDER: &str = "$window";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The objective, as a ratio of good events: `0.99` is 99 %.
    pub target: f64,
    /// The rolling window the objective holds over, e.g. `30d`.
    pub window: PromDuration,
    pub indicator: Indicator,
    /// Labels added to the generated burn-rate alerts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Whether burn-rate alert rules are generated (default true).
    #[serde(default = "yes")]
    pub alerts: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Indicator {
    /// Two PromQL expressions giving event counts over `$window`, e.g.
    /// `sum(increase(http_requests_total{code!~"5.."}[$window]))`.
    Promql { good: String, total: String },
    /// The entry spans of a service (or the spans of one operation). Good
    /// means not an error, or, with `latency_threshold_ms`, at most that
    /// long.
    Spans {
        service: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operation: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_threshold_ms: Option<f64>,
    },
}

impl SloDef {
    pub fn validate(&self) -> Result<(), AlertingError> {
        let bad = |m: String| {
            Err(AlertingError::InvalidRequest(format!(
                "slo {:?}: {m}",
                self.name
            )))
        };
        if self.name.trim().is_empty() || self.name.len() > 256 || self.name.contains('/') {
            return bad("a name of 1 to 256 bytes without '/' is required".into());
        }
        if !(self.target > 0.0 && self.target < 1.0) {
            return bad(format!(
                "target must be between 0 and 1 (exclusive), got {}",
                self.target
            ));
        }
        if self.window.0 < Duration::from_secs(300)
            || self.window.0 > Duration::from_secs(400 * 86_400)
        {
            return bad("window must be between 5m and 400d".into());
        }
        match &self.indicator {
            Indicator::Promql { good, total } => {
                for (n, q) in [("good", good), ("total", total)] {
                    let expanded = expand_window(q, self.window);
                    crate::query::promql::parse(&expanded).map_err(|e| {
                        AlertingError::InvalidRequest(format!("slo {:?}: {n}: {e}", self.name))
                    })?;
                }
            }
            Indicator::Spans {
                service,
                latency_threshold_ms,
                ..
            } => {
                if service.trim().is_empty() {
                    return bad("indicator.spans.service must not be empty".into());
                }
                if latency_threshold_ms.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
                    return bad("latency_threshold_ms must be positive".into());
                }
            }
        }
        for k in self.labels.keys() {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return bad(format!("invalid label name {k:?}"));
            }
        }
        Ok(())
    }
}

fn expand_window(q: &str, w: PromDuration) -> String {
    q.replace(WINDOW_PLACEHOLDER, &w.to_string())
}

/// Good and total events over a window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Events {
    pub good: f64,
    pub total: f64,
}

impl Events {
    pub fn bad(&self) -> f64 {
        (self.total - self.good).max(0.0)
    }

    /// Bad events as a share of all; 0 without events.
    pub fn error_ratio(&self) -> f64 {
        if self.total > 0.0 {
            self.bad() / self.total
        } else {
            0.0
        }
    }
}

fn sum_samples(src: &Sources, q: &str, t_ms: i64) -> Result<f64, String> {
    Ok(promql_samples(src, q, t_ms)?
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .sum())
}

/// Events in the window of `window_ms` ending at `t_ms`.
pub fn events(def: &SloDef, src: &Sources, window_ms: i64, t_ms: i64) -> Result<Events, String> {
    let w = PromDuration(Duration::from_millis(window_ms.max(1) as u64));
    match &def.indicator {
        Indicator::Promql { good, total } => Ok(Events {
            good: sum_samples(src, &expand_window(good, w), t_ms)?,
            total: sum_samples(src, &expand_window(total, w), t_ms)?,
        }),
        Indicator::Spans {
            service,
            operation,
            latency_threshold_ms,
        } => {
            let agg = red_agg(src, service, operation.as_deref(), t_ms - window_ms, t_ms)?;
            Ok(span_events(&agg, *latency_threshold_ms))
        }
    }
}

/// Good/total of a RED aggregate: non-errors, or requests at most
/// `threshold_ms` long (the histogram bucket holding the threshold counts
/// pro rata).
pub fn span_events(agg: &Agg, threshold_ms: Option<f64>) -> Events {
    let total = agg.count as f64;
    let good = match threshold_ms {
        None => (agg.count - agg.errors.min(agg.count)) as f64,
        Some(ms) => {
            let th = ms * 1e6;
            let mut good = 0.0;
            for (&idx, &n) in &agg.hist.buckets {
                let lo = Histogram::lower_ns(idx) as f64;
                let hi = Histogram::lower_ns(idx.saturating_add(1)) as f64;
                if hi <= th {
                    good += n as f64;
                } else if lo < th {
                    good += n as f64 * (th - lo) / (hi - lo);
                }
            }
            good
        }
    };
    Events { good, total }
}

/// The burn rate over a window: the error ratio divided by the error
/// ratio the objective allows (1 spends the budget exactly over the SLO
/// window).
pub fn burn_rate(def: &SloDef, src: &Sources, window_ms: i64, t_ms: i64) -> Result<f64, String> {
    let e = events(def, src, window_ms, t_ms)?;
    Ok(e.error_ratio() / (1.0 - def.target))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    /// Bad events the objective allows over the window.
    pub total: f64,
    pub consumed: f64,
    pub remaining: f64,
    pub consumed_percent: f64,
    pub remaining_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloReport {
    pub name: String,
    pub target: f64,
    pub window: PromDuration,
    pub t_ms: i64,
    /// Good / total over the window; `None` without events.
    pub sli: Option<f64>,
    pub events: Events,
    pub error_budget: Budget,
    /// Burn rate by window (`5m`, `1h`, ..., and the SLO window itself).
    pub burn_rates: BTreeMap<String, f64>,
}

pub fn budget(target: f64, e: &Events) -> Budget {
    let total = (1.0 - target) * e.total;
    let consumed = e.bad();
    let remaining = total - consumed;
    let pct = |x: f64| if total > 0.0 { x / total * 100.0 } else { 0.0 };
    Budget {
        total,
        consumed,
        remaining,
        consumed_percent: pct(consumed),
        remaining_percent: if total > 0.0 { pct(remaining) } else { 100.0 },
    }
}

/// SLI, error budget and burn rates at `t_ms`.
pub fn report(def: &SloDef, src: &Sources, t_ms: i64) -> Result<SloReport, String> {
    let e = events(def, src, def.window.ms(), t_ms)?;
    let mut burn_rates = BTreeMap::new();
    for w in REPORT_WINDOWS {
        let d = PromDuration(Duration::from_secs(w));
        if d < def.window {
            burn_rates.insert(d.to_string(), burn_rate(def, src, d.ms(), t_ms)?);
        }
    }
    burn_rates.insert(def.window.to_string(), e.error_ratio() / (1.0 - def.target));
    Ok(SloReport {
        name: def.name.clone(),
        target: def.target,
        window: def.window,
        t_ms,
        sli: (e.total > 0.0).then(|| e.good / e.total),
        events: e,
        error_budget: budget(def.target, &e),
        burn_rates,
    })
}

/// One point of the burn-down: the budget left at `t_ms` of what the
/// window that started at `start_ms` has allowed so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetPoint {
    pub t_ms: i64,
    pub remaining_percent: f64,
    pub consumed: f64,
}

/// The burn-down over the window ending at `t_ms`, in `points` steps.
pub fn burn_down(
    def: &SloDef,
    src: &Sources,
    t_ms: i64,
    points: usize,
) -> Result<Vec<BudgetPoint>, String> {
    let points = points.clamp(1, 500) as i64;
    let w = def.window.ms();
    let start = t_ms - w;
    let mut out = Vec::with_capacity(points as usize);
    for i in 1..=points {
        let t = start + w * i / points;
        let e = events(def, src, t - start, t)?;
        let b = budget(def.target, &e);
        out.push(BudgetPoint {
            t_ms: t,
            remaining_percent: b.remaining_percent,
            consumed: b.consumed,
        });
    }
    Ok(out)
}

/// The group name of an SLO's generated rules.
pub fn group_name(slo: &str) -> String {
    format!("slo:{slo}")
}

/// The burn-rate alert rules of an SLO, as a group evaluated every
/// `interval`.
pub fn burn_rate_group(def: &SloDef, interval: PromDuration) -> CompiledGroup {
    let name = group_name(&def.name);
    let mut rules = Vec::new();
    for (i, (factor, long, short, severity)) in BURN_RATE_ALERTS.iter().enumerate() {
        let long = PromDuration(Duration::from_secs(*long));
        let short = PromDuration(Duration::from_secs(*short));
        let mut labels: BTreeMap<String, String> = def.labels.clone();
        labels.insert("severity".into(), severity.to_string());
        labels.insert("long_window".into(), long.to_string());
        labels.insert("short_window".into(), short.to_string());
        let summary = format!(
            "SLO {} is burning its error budget at {{{{ $value | printf \"%.1f\" }}}}x (threshold {factor}x over {long} and {short})",
            def.name
        );
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), summary);
        let query = RuleQuery::SloBurn {
            slo: Box::new(def.clone()),
            factor: *factor,
            long,
            short,
        };
        let rule_def = Rule {
            alert: Some("SLOBurnRate".into()),
            expr: Some(query.describe()),
            labels: labels.clone(),
            annotations: annotations.clone(),
            ..Default::default()
        };
        rules.push(CompiledRule {
            key: format!("{name}/SLOBurnRate#{i}"),
            group: name.clone(),
            name: "SLOBurnRate".into(),
            recording: false,
            query,
            for_: PromDuration::default(),
            keep_firing_for: PromDuration::default(),
            labels: labels
                .iter()
                .filter_map(|(k, v)| Template::parse(v).ok().map(|t| (k.clone(), t)))
                .collect(),
            annotations: annotations
                .iter()
                .filter_map(|(k, v)| Template::parse(v).ok().map(|t| (k.clone(), t)))
                .collect(),
            limit: 0,
            def: rule_def.clone(),
        });
    }
    CompiledGroup {
        name: name.clone(),
        interval,
        limit: 0,
        def: RuleGroup {
            name,
            interval: Some(interval),
            limit: 0,
            labels: BTreeMap::new(),
            rules: rules.iter().map(|r| r.def.clone()).collect(),
        },
        rules,
    }
}

#[cfg(test)]
mod tests;
