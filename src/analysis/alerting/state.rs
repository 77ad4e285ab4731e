//! The alert lifecycle of one alerting rule, as Prometheus runs it:
//! inactive → pending (while `for` has not elapsed) → firing → resolved
//! (kept for [`RESOLVED_RETENTION_MS`] so that resolved notifications go
//! out), with `keep_firing_for` holding a firing alert after its condition
//! clears. Pure: the evaluation time is an argument, so tests drive it with
//! a simulated clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rules::CompiledRule;
use super::template::TemplateData;
use crate::model::{Labels, METRIC_NAME};

/// How long a resolved alert stays visible (and is re-sent as resolved).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;
/// Most alerts one rule may hold when its group sets no limit.
pub const DEFAULT_ALERT_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// One alert of a rule (one label set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    #[serde(with = "nan_as_null")]
    pub value: f64,
    pub active_at_ms: i64,
    #[serde(default)]
    pub fired_at_ms: Option<i64>,
    #[serde(default)]
    pub resolved_at_ms: Option<i64>,
    #[serde(default)]
    pub keep_firing_since_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Unknown,
    Ok,
    Err,
}

/// The state of one rule: its alerts by fingerprint, and how its last
/// evaluation went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub alerts: BTreeMap<String, ActiveAlert>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_eval_ms: Option<i64>,
    #[serde(default)]
    pub eval_seconds: f64,
}

impl RuleState {
    /// The rule's state as `/api/v1/rules` reports it: the most severe of
    /// its alerts.
    pub fn rule_state(&self) -> AlertState {
        let mut s = AlertState::Inactive;
        for a in self.alerts.values() {
            match a.state {
                AlertState::Firing => return AlertState::Firing,
                AlertState::Pending => s = AlertState::Pending,
                _ => {}
            }
        }
        s
    }
}

/// A state change of one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub t_ms: i64,
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub from: AlertState,
    pub to: AlertState,
    pub value: f64,
}

/// A stable 64-bit FNV-1a hash of a label set, in hex.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Applies one evaluation's result (`samples`: label set and value of
/// every series the query returned) at `t_ms`. Returns the transitions.
/// More samples than the rule's limit is an error and changes nothing.
pub fn apply(
    rule: &CompiledRule,
    state: &mut RuleState,
    samples: &[(Labels, f64)],
    t_ms: i64,
    external_url: &str,
) -> Result<Vec<Transition>, String> {
    let limit = if rule.limit == 0 {
        DEFAULT_ALERT_LIMIT
    } else {
        rule.limit
    };
    if samples.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} alerts",
            samples.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut transitions = Vec::new();
    for (sample_labels, value) in samples {
        let base: BTreeMap<String, String> = sample_labels
            .iter()
            .filter(|(k, _)| k != METRIC_NAME)
            .cloned()
            .collect();
        let data = TemplateData {
            labels: &base,
            value: *value,
            external_url,
        };
        let mut labels = base.clone();
        for (k, t) in &rule.labels {
            let v = t.expand(&data);
            if v.is_empty() {
                labels.remove(k);
            } else {
                labels.insert(k.clone(), v);
            }
        }
        labels.insert("alertname".into(), rule.name.clone());
        let annotations = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.expand(&data)))
            .collect();
        let fp = fingerprint(&labels);
        if !seen.insert(fp.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
        match state.alerts.get_mut(&fp) {
            Some(a) if a.state != AlertState::Resolved => {
                a.value = *value;
                a.annotations = annotations;
                a.keep_firing_since_ms = None;
            }
            _ => {
                let a = ActiveAlert {
                    labels: labels.clone(),
                    annotations,
                    state: AlertState::Pending,
                    value: *value,
                    active_at_ms: t_ms,
                    fired_at_ms: None,
                    resolved_at_ms: None,
                    keep_firing_since_ms: None,
                };
                transitions.push(Transition {
                    t_ms,
                    fingerprint: fp.clone(),
                    labels,
                    from: AlertState::Inactive,
                    to: AlertState::Pending,
                    value: *value,
                });
                state.alerts.insert(fp.clone(), a);
            }
        }
    }
    let mut remove = Vec::new();
    for (fp, a) in state.alerts.iter_mut() {
        let mut to = None;
        if seen.contains(fp) {
            if a.state == AlertState::Pending && t_ms - a.active_at_ms >= rule.for_.ms() {
                a.state = AlertState::Firing;
                a.fired_at_ms = Some(t_ms);
                to = Some((AlertState::Pending, AlertState::Firing));
            }
        } else {
            match a.state {
                AlertState::Pending => {
                    remove.push(fp.clone());
                    to = Some((AlertState::Pending, AlertState::Inactive));
                }
                AlertState::Firing => {
                    let keep = rule.keep_firing_for.ms();
                    let since = *a.keep_firing_since_ms.get_or_insert(t_ms);
                    if keep == 0 || t_ms - since >= keep {
                        a.state = AlertState::Resolved;
                        a.resolved_at_ms = Some(t_ms);
                        a.keep_firing_since_ms = None;
                        to = Some((AlertState::Firing, AlertState::Resolved));
                    }
                }
                AlertState::Resolved => {
                    if a.resolved_at_ms
                        .is_none_or(|r| t_ms - r > RESOLVED_RETENTION_MS)
                    {
                        remove.push(fp.clone());
                    }
                }
                AlertState::Inactive => remove.push(fp.clone()),
            }
        }
        if let Some((from, to)) = to {
            transitions.push(Transition {
                t_ms,
                fingerprint: fp.clone(),
                labels: a.labels.clone(),
                from,
                to,
                value: a.value,
            });
        }
    }
    for fp in remove {
        state.alerts.remove(&fp);
    }
    // A new alert with `for: 0` fires in the same evaluation: collapse its
    // inactive → pending → firing into one transition.
    let mut out: Vec<Transition> = Vec::with_capacity(transitions.len());
    for t in transitions {
        if let Some(prev) = out.iter_mut().find(|p| {
            p.fingerprint == t.fingerprint && p.to == t.from && p.from == AlertState::Inactive
        }) {
            prev.to = t.to;
            continue;
        }
        out.push(t);
    }
    Ok(out)
}
