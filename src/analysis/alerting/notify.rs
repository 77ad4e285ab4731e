//! Notification dispatch, as Alertmanager does it: alerts (from our rules
//! or posted to `/api/v2/alerts`) are routed through a tree of label
//! matchers to receivers (channels), grouped by labels, and flushed after
//! `group_wait`, then every `group_interval` when the group changed, and
//! again after `repeat_interval` while it still fires. Silenced and
//! inhibited alerts are muted. Resolved alerts are notified once when their
//! firing was. When a silence expires, the groups of the alerts it muted
//! are flushed at once.
//!
//! Pure and synchronous: [`Dispatcher::tick`] takes the time and returns
//! the notifications to deliver (`channels` delivers them), so tests run
//! it on a simulated clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::rules::PromDuration;
use super::state::fingerprint;
use super::AlertingError;

/// A label matcher written as `name=value`, `name!=value`, `name=~regex`
/// or `name!~regex` (the value may be double-quoted).
#[derive(Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchKind,
    pub value: String,
    re: Option<regex::Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchKind::Eq => "=",
            MatchKind::Ne => "!=",
            MatchKind::Re => "=~",
            MatchKind::NotRe => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

impl Matcher {
    pub fn new(name: &str, op: MatchKind, value: &str) -> Result<Matcher, String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid label name {name:?} in matcher"));
        }
        let re = match op {
            MatchKind::Re | MatchKind::NotRe => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regular expression {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let pos = s
            .find(['=', '!'])
            .ok_or_else(|| format!("invalid matcher {s:?}: expected name=value, !=, =~ or !~"))?;
        let name = s[..pos].trim();
        let rest = &s[pos..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchKind::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchKind::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchKind::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchKind::Eq, v)
        } else {
            return Err(format!("invalid matcher {s:?}"));
        };
        let value = value.trim();
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            serde_json::from_str::<String>(value)
                .map_err(|_| format!("invalid quoted value in {s:?}"))?
        } else {
            value.to_string()
        };
        Matcher::new(name, op, &value)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match self.op {
            MatchKind::Eq => v == self.value,
            MatchKind::Ne => v != self.value,
            MatchKind::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchKind::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

pub fn all_match(ms: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    ms.iter().all(|m| m.matches(labels))
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            // Alertmanager v2 API shape.
            Obj {
                name: String,
                value: String,
                #[serde(rename = "isRegex", default)]
                is_regex: bool,
                #[serde(rename = "isEqual", default = "yes")]
                is_equal: bool,
            },
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => Matcher::parse(&t),
            Raw::Obj {
                name,
                value,
                is_regex,
                is_equal,
            } => {
                let op = match (is_regex, is_equal) {
                    (false, true) => MatchKind::Eq,
                    (false, false) => MatchKind::Ne,
                    (true, true) => MatchKind::Re,
                    (true, false) => MatchKind::NotRe,
                };
                Matcher::new(&name, op, &value)
            }
        }
        .map_err(serde::de::Error::custom)
    }
}

fn yes() -> bool {
    true
}

/// A node of the routing tree. Unset timings and `group_by` inherit from
/// the parent; the root's come from the configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The channel notified; unset on the root means every channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<Matcher>,
    /// Labels to group by; `["..."]` groups by all labels. Default: none
    /// (one group per route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_wait: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_interval: Option<PromDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval: Option<PromDuration>,
    /// Keep matching siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// Mutes alerts matching `target_matchers` while an alert matching
/// `source_matchers` fires with the same values of the `equal` labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    pub source_matchers: Vec<Matcher>,
    pub target_matchers: Vec<Matcher>,
    #[serde(default)]
    pub equal: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub route: Route,
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRule>,
}

impl RoutingConfig {
    /// Checks that every receiver names a channel.
    pub fn validate(&self, channels: &BTreeSet<String>) -> Result<(), AlertingError> {
        fn walk(r: &Route, channels: &BTreeSet<String>, depth: usize) -> Result<(), String> {
            if depth > 16 {
                return Err("the routing tree is deeper than 16 levels".into());
            }
            if let Some(rc) = &r.receiver {
                if !channels.contains(rc) {
                    return Err(format!("route receiver {rc:?} is not a channel"));
                }
            }
            for c in &r.routes {
                walk(c, channels, depth + 1)?;
            }
            Ok(())
        }
        walk(&self.route, channels, 0).map_err(AlertingError::InvalidRequest)
    }
}

/// A silence: alerts matching every matcher are muted between `starts_at`
/// and `ends_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    #[serde(default)]
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    /// Set once the expiry has been acted on.
    #[serde(default)]
    pub expiry_handled: bool,
}

impl Silence {
    pub fn active(&self, now: i64) -> bool {
        self.starts_at_ms <= now && now < self.ends_at_ms
    }

    pub fn state(&self, now: i64) -> &'static str {
        if now < self.starts_at_ms {
            "pending"
        } else if now < self.ends_at_ms {
            "active"
        } else {
            "expired"
        }
    }
}

/// An alert as the dispatcher holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at_ms: i64,
    /// When it resolves (or resolved); `None` is open-ended.
    pub ends_at_ms: Option<i64>,
    #[serde(default)]
    pub generator_url: String,
    pub updated_at_ms: i64,
}

impl Alert {
    pub fn resolved(&self, now: i64) -> bool {
        self.ends_at_ms.is_some_and(|e| e <= now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
}

/// What a group last notified (the notification log entry).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sent {
    pub at_ms: i64,
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
}

/// One notification for one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub group_key: String,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    /// Firing first, then resolved, each by fingerprint.
    pub alerts: Vec<NotifiedAlert>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotifiedAlert {
    pub fingerprint: String,
    pub alert: Alert,
    pub resolved: bool,
}

impl Notification {
    pub fn firing(&self) -> bool {
        self.alerts.iter().any(|a| !a.resolved)
    }
}

#[derive(Debug, Default)]
pub struct TickOutput {
    pub notifications: Vec<Notification>,
    /// Notification log entries to persist (group key → what was sent).
    pub log: Vec<(String, Sent)>,
    /// Silences whose expiry was handled in this tick.
    pub expired_silences: Vec<String>,
}

struct EffectiveRoute {
    id: String,
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    timing: Timing,
}

struct Group {
    receiver: Option<String>,
    labels: BTreeMap<String, String>,
    timing: Timing,
    alerts: BTreeSet<String>,
    next_flush_ms: i64,
    last: Option<Sent>,
}

/// Why an alert is muted, for the Alertmanager API view.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertStatus {
    pub fingerprint: String,
    pub alert: Alert,
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
    pub receivers: Vec<String>,
}

/// How long resolved alerts are kept after they were notified or ended.
const RESOLVED_KEEP_MS: i64 = 15 * 60 * 1000;

pub struct Dispatcher {
    routing: RoutingConfig,
    defaults: Timing,
    channels: Vec<String>,
    alerts: HashMap<String, Alert>,
    groups: BTreeMap<String, Group>,
    silences: BTreeMap<String, Silence>,
    nflog: HashMap<String, Sent>,
    max_alerts: usize,
}

impl Dispatcher {
    pub fn new(defaults: Timing, max_alerts: usize) -> Self {
        Dispatcher {
            routing: RoutingConfig::default(),
            defaults,
            channels: Vec::new(),
            alerts: HashMap::new(),
            groups: BTreeMap::new(),
            silences: BTreeMap::new(),
            nflog: HashMap::new(),
            max_alerts,
        }
    }

    /// Replaces the routing tree and the channel list; alerts are regrouped.
    pub fn configure(&mut self, routing: RoutingConfig, channels: Vec<String>, now: i64) {
        self.routing = routing;
        self.channels = channels;
        for (k, g) in std::mem::take(&mut self.groups) {
            if let Some(l) = g.last {
                self.nflog.insert(k, l);
            }
        }
        let fps: Vec<String> = self.alerts.keys().cloned().collect();
        for fp in fps {
            self.route_alert(&fp, now);
        }
    }

    pub fn set_silences(&mut self, silences: Vec<Silence>) {
        self.silences = silences.into_iter().map(|s| (s.id.clone(), s)).collect();
    }

    pub fn restore_log(&mut self, entries: Vec<(String, Sent)>) {
        self.nflog.extend(entries);
    }

    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    /// Adds or updates an alert. Fails when the bound of alerts held is
    /// reached and the alert is new.
    pub fn put(&mut self, mut alert: Alert, now: i64) -> Result<String, AlertingError> {
        let fp = fingerprint(&alert.labels);
        match self.alerts.get(&fp) {
            // A continuing alert keeps its start.
            Some(old) if !old.resolved(now) && old.starts_at_ms < alert.starts_at_ms => {
                alert.starts_at_ms = old.starts_at_ms;
            }
            Some(_) => {}
            None if self.alerts.len() >= self.max_alerts => {
                return Err(AlertingError::LimitExceeded(format!(
                    "more than {} alerts are held",
                    self.max_alerts
                )))
            }
            None => {}
        }
        alert.updated_at_ms = now;
        self.alerts.insert(fp.clone(), alert);
        self.route_alert(&fp, now);
        Ok(fp)
    }

    fn route_alert(&mut self, fp: &str, now: i64) {
        let Some(alert) = self.alerts.get(fp) else {
            return;
        };
        let mut found = Vec::new();
        let root = &self.routing.route;
        let t = Timing {
            group_wait_ms: root
                .group_wait
                .map_or(self.defaults.group_wait_ms, |d| d.ms()),
            group_interval_ms: root
                .group_interval
                .map_or(self.defaults.group_interval_ms, |d| d.ms()),
            repeat_interval_ms: root
                .repeat_interval
                .map_or(self.defaults.repeat_interval_ms, |d| d.ms()),
        };
        match_route(
            root,
            "0",
            &alert.labels,
            root.receiver.clone(),
            root.group_by.clone(),
            t,
            &mut found,
        );
        for r in found {
            let group_labels: BTreeMap<String, String> = match &r.group_by {
                Some(g) if g.iter().any(|l| l == "...") => alert.labels.clone(),
                Some(g) => g
                    .iter()
                    .filter_map(|l| alert.labels.get(l).map(|v| (l.clone(), v.clone())))
                    .collect(),
                None => BTreeMap::new(),
            };
            let key = format!(
                "{}:{}:{}",
                r.id,
                r.receiver.as_deref().unwrap_or("*"),
                serde_json::to_string(&group_labels).unwrap_or_default()
            );
            let nflog = &mut self.nflog;
            let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
                receiver: r.receiver.clone(),
                labels: group_labels,
                timing: r.timing,
                alerts: BTreeSet::new(),
                next_flush_ms: now + r.timing.group_wait_ms,
                last: nflog.remove(&key),
            });
            g.alerts.insert(fp.to_string());
        }
    }

    fn silenced_by(&self, a: &Alert, now: i64) -> Vec<String> {
        self.silences
            .values()
            .filter(|s| s.active(now) && all_match(&s.matchers, &a.labels))
            .map(|s| s.id.clone())
            .collect()
    }

    fn inhibited_by(&self, fp: &str, a: &Alert, now: i64) -> Vec<String> {
        let mut out = Vec::new();
        for rule in &self.routing.inhibit_rules {
            if !all_match(&rule.target_matchers, &a.labels) {
                continue;
            }
            for (sfp, s) in &self.alerts {
                if sfp == fp || s.resolved(now) || !all_match(&rule.source_matchers, &s.labels) {
                    continue;
                }
                if rule
                    .equal
                    .iter()
                    .all(|l| s.labels.get(l) == a.labels.get(l))
                {
                    out.push(sfp.clone());
                }
            }
        }
        out
    }

    fn muted(&self, fp: &str, a: &Alert, now: i64) -> bool {
        !self.silenced_by(a, now).is_empty() || !self.inhibited_by(fp, a, now).is_empty()
    }

    /// Every alert held, with why it is muted and where it goes.
    pub fn statuses(&self, now: i64) -> Vec<AlertStatus> {
        let mut out: Vec<AlertStatus> = self
            .alerts
            .iter()
            .map(|(fp, a)| AlertStatus {
                fingerprint: fp.clone(),
                alert: a.clone(),
                silenced_by: self.silenced_by(a, now),
                inhibited_by: self.inhibited_by(fp, a, now),
                receivers: self
                    .groups
                    .values()
                    .filter(|g| g.alerts.contains(fp))
                    .map(|g| g.receiver.clone().unwrap_or_else(|| "*".into()))
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        out
    }

    /// Flushes the groups that are due at `now`.
    pub fn tick(&mut self, now: i64) -> TickOutput {
        let mut out = TickOutput::default();
        // Silence expiry: flush the groups of the alerts it muted now.
        let expired: Vec<Silence> = self
            .silences
            .values()
            .filter(|s| !s.expiry_handled && s.ends_at_ms <= now)
            .cloned()
            .collect();
        for s in expired {
            if let Some(x) = self.silences.get_mut(&s.id) {
                x.expiry_handled = true;
            }
            out.expired_silences.push(s.id.clone());
            for g in self.groups.values_mut() {
                let hit = g.alerts.iter().any(|fp| {
                    self.alerts
                        .get(fp)
                        .is_some_and(|a| all_match(&s.matchers, &a.labels))
                });
                if hit {
                    g.next_flush_ms = g.next_flush_ms.min(now);
                }
            }
        }
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_flush_ms <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.flush_group(&key, now, &mut out);
        }
        // Forget resolved alerts nobody needs any more.
        let referenced: BTreeSet<&String> =
            self.groups.values().flat_map(|g| g.alerts.iter()).collect();
        let drop: Vec<String> = self
            .alerts
            .iter()
            .filter(|(fp, a)| {
                !referenced.contains(fp)
                    && a.ends_at_ms
                        .is_some_and(|e| e + RESOLVED_KEEP_MS <= now || a.resolved(now))
            })
            .map(|(fp, _)| fp.clone())
            .collect();
        for fp in drop {
            self.alerts.remove(&fp);
        }
        out
    }

    fn flush_group(&mut self, key: &str, now: i64, out: &mut TickOutput) {
        let Some(g) = self.groups.get(key) else {
            return;
        };
        let mut firing = BTreeSet::new();
        let mut resolved = BTreeSet::new();
        let mut gone = Vec::new();
        let prev_firing = g
            .last
            .as_ref()
            .map(|l| l.firing.clone())
            .unwrap_or_default();
        for fp in &g.alerts {
            let Some(a) = self.alerts.get(fp) else {
                gone.push(fp.clone());
                continue;
            };
            let muted = self.muted(fp, a, now);
            if a.resolved(now) {
                if prev_firing.contains(fp) && !muted {
                    resolved.insert(fp.clone());
                } else {
                    gone.push(fp.clone());
                }
            } else if !muted {
                firing.insert(fp.clone());
            }
        }
        let timing = g.timing;
        let last = g.last.clone();
        let send = if firing.is_empty() && resolved.is_empty() {
            false
        } else {
            match &last {
                None => true,
                Some(l) => {
                    !firing.is_subset(&l.firing)
                        || !resolved.is_subset(&l.resolved)
                        || (!firing.is_empty() && now - l.at_ms >= timing.repeat_interval_ms)
                }
            }
        };
        if send {
            let receivers: Vec<String> = match &g.receiver {
                Some(r) => vec![r.clone()],
                None => self.channels.clone(),
            };
            let alerts: Vec<NotifiedAlert> = firing
                .iter()
                .map(|fp| (fp, false))
                .chain(resolved.iter().map(|fp| (fp, true)))
                .filter_map(|(fp, r)| {
                    self.alerts.get(fp).map(|a| NotifiedAlert {
                        fingerprint: fp.clone(),
                        alert: a.clone(),
                        resolved: r,
                    })
                })
                .collect();
            for receiver in receivers {
                out.notifications.push(Notification {
                    group_key: key.to_string(),
                    receiver,
                    group_labels: g.labels.clone(),
                    alerts: alerts.clone(),
                });
            }
            let sent = Sent {
                at_ms: now,
                firing: firing.clone(),
                resolved: resolved.clone(),
            };
            out.log.push((key.to_string(), sent.clone()));
            gone.extend(resolved.iter().cloned());
            if let Some(g) = self.groups.get_mut(key) {
                g.last = Some(sent);
            }
        } else if firing.is_empty() && resolved.is_empty() {
            // Nothing left to tell: an all-resolved group forgets what it
            // sent once its resolved alerts are gone.
        }
        if let Some(g) = self.groups.get_mut(key) {
            for fp in &gone {
                g.alerts.remove(fp);
            }
            g.next_flush_ms = now + timing.group_interval_ms;
            if g.alerts.is_empty() {
                self.groups.remove(key);
            }
        }
    }
}

fn match_route(
    r: &Route,
    id: &str,
    labels: &BTreeMap<String, String>,
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    timing: Timing,
    out: &mut Vec<EffectiveRoute>,
) -> bool {
    if !all_match(&r.matchers, labels) {
        return false;
    }
    let receiver = r.receiver.clone().or(receiver);
    let group_by = r.group_by.clone().or(group_by);
    let timing = Timing {
        group_wait_ms: r.group_wait.map_or(timing.group_wait_ms, |d| d.ms()),
        group_interval_ms: r
            .group_interval
            .map_or(timing.group_interval_ms, |d| d.ms()),
        repeat_interval_ms: r
            .repeat_interval
            .map_or(timing.repeat_interval_ms, |d| d.ms()),
    };
    let mut matched_child = false;
    for (i, c) in r.routes.iter().enumerate() {
        let cid = format!("{id}.{i}");
        if match_route(
            c,
            &cid,
            labels,
            receiver.clone(),
            group_by.clone(),
            timing,
            out,
        ) {
            matched_child = true;
            if !c.continue_ {
                break;
            }
        }
    }
    if !matched_child {
        out.push(EffectiveRoute {
            id: id.to_string(),
            receiver,
            group_by,
            timing,
        });
    }
    true
}
