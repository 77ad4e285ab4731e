//! The alerting service: keeps rule groups, channels, routing, silences
//! and SLOs in the meta store, evaluates each group on its interval,
//! keeps alert state (persisted, so a restart resumes pending `for`
//! timers and firing alerts) and history, writes recording-rule results
//! back through a [`SeriesSink`], and hands alerts to the dispatcher whose
//! notifications the channel workers deliver.
//!
//! Evaluation runs on the blocking pool from one background task
//! ([`AlertingService::run`]); delivery runs in the channel workers, so a
//! slow or failing receiver never delays evaluation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::channels::{ChannelDef, ChannelStatus, Delivery, RetryPolicy};
use super::eval::{evaluate, Sources};
use super::notify::{Alert, AlertStatus, Dispatcher, RoutingConfig, Sent, Silence, Timing};
use super::rules::{compile_group, CompiledGroup, PromDuration, RuleFile, RuleGroup, MAX_RULES};
use super::state::{apply, AlertState, RuleState, Transition};
use super::AlertingError;
use crate::analysis::slo::{self, SloDef};
use crate::model::{Sample, Series, METRIC_NAME};
use crate::storage::meta::{HistoryEntry, HistoryQuery, Kind, MetaStore};

/// Where recording rules write their results (the metrics store, through
/// the WAL, in the server).
pub trait SeriesSink: Send + Sync {
    fn write(&self, series: Vec<Series>) -> BoxFuture<'_, Result<(), String>>;
}

/// The alerting settings (from `[alerting]`).
#[derive(Debug, Clone)]
pub struct AlertingOptions {
    pub default_interval: PromDuration,
    pub external_url: String,
    pub timing: Timing,
    /// How long an alert posted without `endsAt` stays firing.
    pub resolve_timeout_ms: i64,
    /// How often groups are checked for due evaluations and notifications.
    pub tick: Duration,
    pub retry: RetryPolicy,
    pub max_alerts: usize,
    pub max_silences: usize,
    pub max_channels: usize,
    pub max_slos: usize,
    pub history_max_rows: usize,
    pub history_retention_ms: i64,
    /// Evaluation interval of the generated SLO burn-rate rules.
    pub slo_interval: PromDuration,
}

impl Default for AlertingOptions {
    fn default() -> Self {
        AlertingOptions {
            default_interval: PromDuration(Duration::from_secs(30)),
            external_url: "http://127.0.0.1:3000".into(),
            timing: Timing {
                group_wait_ms: 30_000,
                group_interval_ms: 300_000,
                repeat_interval_ms: 4 * 3_600_000,
            },
            resolve_timeout_ms: 300_000,
            tick: Duration::from_secs(1),
            retry: RetryPolicy {
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(60),
                max_attempts: 10,
                timeout: Duration::from_secs(10),
                queue_capacity: 1024,
            },
            max_alerts: 100_000,
            max_silences: 10_000,
            max_channels: 256,
            max_slos: 1000,
            history_max_rows: 100_000,
            history_retention_ms: 30 * 86_400_000,
            slo_interval: PromDuration(Duration::from_secs(60)),
        }
    }
}

/// A clock in milliseconds since the epoch (injectable for tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

struct GroupRt {
    group: CompiledGroup,
    /// Whether the group is generated from an SLO.
    generated: bool,
    next_eval_ms: i64,
    last_eval_ms: Option<i64>,
    eval_seconds: f64,
    /// Being evaluated (the run loop never evaluates a group twice at once).
    running: bool,
}

#[derive(Default)]
struct Inner {
    groups: Vec<GroupRt>,
    states: HashMap<String, RuleState>,
}

pub struct AlertingService {
    opts: AlertingOptions,
    meta: Arc<MetaStore>,
    sources: Sources,
    sink: Option<Arc<dyn SeriesSink>>,
    clock: Clock,
    inner: Mutex<Inner>,
    dispatcher: Mutex<Dispatcher>,
    delivery: Delivery,
    /// Serialises definition changes (read-modify-write of the meta store).
    admin: Mutex<()>,
    metrics: EvalMetrics,
}

/// The service's own metrics on `/metrics`.
struct EvalMetrics {
    evaluations: prometheus::IntCounterVec,
    alerts: prometheus::IntGaugeVec,
}

impl EvalMetrics {
    fn new(registry: &prometheus::Registry) -> Self {
        let evaluations = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "tern_alerting_rule_evaluations_total",
                "Rule evaluations by outcome (ok, error)",
            ),
            &["outcome"],
        )
        .unwrap_or_else(|e| panic!("evaluation counter definition is invalid: {e}"));
        let alerts = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "tern_alerting_alerts",
                "Alerts of the rules by state (pending, firing)",
            ),
            &["state"],
        )
        .unwrap_or_else(|e| panic!("alert gauge definition is invalid: {e}"));
        // Another service on the same registry (tests) keeps the first's.
        let _ = registry.register(Box::new(evaluations.clone()));
        let _ = registry.register(Box::new(alerts.clone()));
        EvalMetrics {
            evaluations,
            alerts,
        }
    }
}

/// A group as the API reports it.
pub struct GroupView {
    pub group: CompiledGroup,
    /// Generated from an SLO (not stored as a rule group).
    pub generated: bool,
    pub last_eval_ms: Option<i64>,
    pub eval_seconds: f64,
    pub rules: Vec<RuleView>,
}

/// A rule as the API reports it.
pub struct RuleView {
    pub group: String,
    pub rule: super::rules::CompiledRule,
    pub state: RuleState,
}

fn decode<T: serde::de::DeserializeOwned>(
    kind: &str,
    key: &str,
    v: serde_json::Value,
) -> Result<T, AlertingError> {
    serde_json::from_value(v)
        .map_err(|e| AlertingError::Internal(format!("stored {kind} {key:?} is invalid: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, AlertingError> {
    serde_json::to_value(v).map_err(|e| AlertingError::Internal(format!("cannot encode: {e}")))
}

impl AlertingService {
    /// Loads everything from the meta store. Blocking; call it from the
    /// blocking pool inside a tokio runtime (channel workers are spawned).
    pub fn open(
        meta: Arc<MetaStore>,
        sources: Sources,
        sink: Option<Arc<dyn SeriesSink>>,
        opts: AlertingOptions,
        registry: &prometheus::Registry,
        clock: Clock,
    ) -> Result<Arc<Self>, AlertingError> {
        let delivery = Delivery::new(opts.retry, opts.external_url.clone(), registry);
        let svc = Arc::new(AlertingService {
            dispatcher: Mutex::new(Dispatcher::new(opts.timing, opts.max_alerts)),
            opts,
            meta,
            sources,
            sink,
            clock,
            inner: Mutex::new(Inner::default()),
            delivery,
            admin: Mutex::new(()),
            metrics: EvalMetrics::new(registry),
        });
        // Alert state survives restarts.
        {
            let mut inner = svc.inner.lock();
            for (key, v) in svc.meta.list(Kind::AlertState)? {
                match serde_json::from_value::<RuleState>(v) {
                    Ok(s) => {
                        inner.states.insert(key, s);
                    }
                    Err(e) => {
                        tracing::warn!(rule = %key, error = %e, "ignoring unreadable alert state")
                    }
                }
            }
        }
        let log = svc.prune_notification_log()?;
        svc.dispatcher.lock().restore_log(log);
        svc.reload_notify()?;
        svc.reload_silences()?;
        svc.reload_groups()?;
        Ok(svc)
    }

    /// Deletes notification log entries older than the repeat interval
    /// (a group that old notifies again anyway) and returns the others.
    fn prune_notification_log(&self) -> Result<Vec<(String, Sent)>, AlertingError> {
        let oldest = self.now() - self.opts.timing.repeat_interval_ms;
        let mut keep = Vec::new();
        let mut stale = Vec::new();
        for (k, v) in self.meta.list(Kind::NotificationLog)? {
            match serde_json::from_value::<Sent>(v) {
                Ok(s) if s.at_ms >= oldest => keep.push((k, s)),
                _ => stale.push(k),
            }
        }
        if !stale.is_empty() {
            self.meta.put_many(Kind::NotificationLog, &[], &stale)?;
        }
        Ok(keep)
    }

    pub fn options(&self) -> &AlertingOptions {
        &self.opts
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    // ---- definitions -------------------------------------------------

    /// The stored rule groups (also those that no longer compile).
    pub fn stored_groups(&self) -> Result<Vec<RuleGroup>, AlertingError> {
        self.meta
            .list(Kind::RuleGroup)?
            .into_iter()
            .map(|(k, v)| decode("rule group", &k, v))
            .collect()
    }

    pub fn slos(&self) -> Result<Vec<SloDef>, AlertingError> {
        self.meta
            .list(Kind::Slo)?
            .into_iter()
            .map(|(k, v)| decode("slo", &k, v))
            .collect()
    }

    pub fn slo(&self, name: &str) -> Result<SloDef, AlertingError> {
        let v = self
            .meta
            .get(Kind::Slo, name)?
            .ok_or_else(|| AlertingError::NotFound(format!("slo {name:?}")))?;
        decode("slo", name, v)
    }

    /// Rebuilds the evaluated groups from the stored rule groups and SLOs,
    /// keeping the schedule of unchanged groups and the state of rules
    /// that still exist.
    fn reload_groups(&self) -> Result<(), AlertingError> {
        let mut compiled = Vec::new();
        for g in self.stored_groups()? {
            // A stored group that no longer compiles (stricter validation
            // after an upgrade) is skipped, not fatal; it stays listed.
            match compile_group(&g, self.opts.default_interval) {
                Ok(c) => compiled.push((c, false)),
                Err(e) => tracing::error!(group = %g.name, error = %e, "stored rule group skipped"),
            }
        }
        for s in self.slos()? {
            if s.alerts {
                compiled.push((slo::burn_rate_group(&s, self.opts.slo_interval), true));
            }
        }
        let now = self.now();
        let mut inner = self.inner.lock();
        let old: HashMap<String, GroupRt> = inner
            .groups
            .drain(..)
            .map(|g| (g.group.name.clone(), g))
            .collect();
        let mut keys = BTreeSet::new();
        for (group, generated) in compiled {
            keys.extend(group.rules.iter().map(|r| r.key.clone()));
            let (next, last, secs) = match old.get(&group.name) {
                Some(o) if o.group.interval == group.interval => {
                    (o.next_eval_ms, o.last_eval_ms, o.eval_seconds)
                }
                _ => (now, None, 0.0),
            };
            let running = old.get(&group.name).is_some_and(|o| o.running);
            inner.groups.push(GroupRt {
                group,
                generated,
                next_eval_ms: next,
                last_eval_ms: last,
                eval_seconds: secs,
                running,
            });
        }
        let gone: Vec<String> = inner
            .states
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        drop(inner);
        for k in gone {
            self.inner.lock().states.remove(&k);
            self.meta.delete(Kind::AlertState, &k)?;
        }
        Ok(())
    }

    fn reload_notify(&self) -> Result<(), AlertingError> {
        let channels = self.channels()?;
        let routing = self.routing()?;
        self.delivery.set_channels(&channels);
        self.dispatcher.lock().configure(
            routing,
            channels.into_iter().map(|c| c.name).collect(),
            self.now(),
        );
        Ok(())
    }

    fn reload_silences(&self) -> Result<(), AlertingError> {
        let s = self.silences()?;
        self.dispatcher.lock().set_silences(s);
        Ok(())
    }

    /// Saves groups (replacing same-named ones); with `replace_all`, every
    /// other stored group is deleted. One transaction; nothing is saved
    /// when any group is invalid.
    pub fn put_groups(
        &self,
        groups: Vec<RuleGroup>,
        replace_all: bool,
    ) -> Result<(), AlertingError> {
        let _admin = self.admin.lock();
        let mut names = BTreeSet::new();
        for g in &groups {
            compile_group(g, self.opts.default_interval)?;
            if g.name.starts_with("slo:") {
                return Err(AlertingError::InvalidRule(format!(
                    "group {:?}: names starting with \"slo:\" are reserved for SLO rules",
                    g.name
                )));
            }
            if !names.insert(g.name.clone()) {
                return Err(AlertingError::InvalidRule(format!(
                    "group {:?} appears twice",
                    g.name
                )));
            }
        }
        let existing = self.stored_groups()?;
        let delete: Vec<String> = if replace_all {
            existing
                .iter()
                .filter(|g| !names.contains(&g.name))
                .map(|g| g.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let total: usize = existing
            .iter()
            .filter(|g| !names.contains(&g.name) && !delete.contains(&g.name))
            .map(|g| g.rules.len())
            .sum::<usize>()
            + groups.iter().map(|g| g.rules.len()).sum::<usize>();
        if total > MAX_RULES {
            return Err(AlertingError::LimitExceeded(format!(
                "at most {MAX_RULES} rules may be stored ({total} requested)"
            )));
        }
        let docs = groups
            .iter()
            .map(|g| Ok((g.name.clone(), encode(g)?)))
            .collect::<Result<Vec<_>, AlertingError>>()?;
        self.meta.put_many(Kind::RuleGroup, &docs, &delete)?;
        self.reload_groups()
    }

    /// Imports a Prometheus rule file (YAML).
    pub fn import_rule_file(
        &self,
        text: &str,
        replace_all: bool,
    ) -> Result<Vec<String>, AlertingError> {
        let file: RuleFile = super::rules::parse_rule_file(text)?;
        let names = file.groups.iter().map(|g| g.name.clone()).collect();
        self.put_groups(file.groups, replace_all)?;
        Ok(names)
    }

    pub fn delete_group(&self, name: &str) -> Result<(), AlertingError> {
        let _admin = self.admin.lock();
        if !self.meta.delete(Kind::RuleGroup, name)? {
            return Err(AlertingError::NotFound(format!("rule group {name:?}")));
        }
        self.reload_groups()
    }

    pub fn group(&self, name: &str) -> Result<RuleGroup, AlertingError> {
        let v = self
            .meta
            .get(Kind::RuleGroup, name)?
            .ok_or_else(|| AlertingError::NotFound(format!("rule group {name:?}")))?;
        decode("rule group", name, v)
    }

    pub fn channels(&self) -> Result<Vec<ChannelDef>, AlertingError> {
        self.meta
            .list(Kind::Channel)?
            .into_iter()
            .map(|(k, v)| decode("channel", &k, v))
            .collect()
    }

    pub fn put_channel(&self, def: ChannelDef) -> Result<(), AlertingError> {
        let _admin = self.admin.lock();
        def.validate()?;
        let existing = self.channels()?;
        if !existing.iter().any(|c| c.name == def.name) && existing.len() >= self.opts.max_channels
        {
            return Err(AlertingError::LimitExceeded(format!(
                "at most {} channels",
                self.opts.max_channels
            )));
        }
        self.meta.put(Kind::Channel, &def.name, &encode(&def)?)?;
        self.reload_notify()
    }

    pub fn delete_channel(&self, name: &str) -> Result<(), AlertingError> {
        let _admin = self.admin.lock();
        let routing = self.routing()?;
        let mut others: BTreeSet<String> = self.channels()?.into_iter().map(|c| c.name).collect();
        if !others.remove(name) {
            return Err(AlertingError::NotFound(format!("channel {name:?}")));
        }
        routing.validate(&others).map_err(|_| {
            AlertingError::InvalidRequest(format!("channel {name:?} is used by the routing tree"))
        })?;
        self.meta.delete(Kind::Channel, name)?;
        self.reload_notify()
    }

    pub fn channel_status(&self) -> BTreeMap<String, ChannelStatus> {
        self.delivery.status()
    }

    pub fn routing(&self) -> Result<RoutingConfig, AlertingError> {
        match self.meta.get(Kind::Setting, "routing")? {
            Some(v) => decode("setting", "routing", v),
            None => Ok(RoutingConfig::default()),
        }
    }

    pub fn put_routing(&self, r: RoutingConfig) -> Result<(), AlertingError> {
        let _admin = self.admin.lock();
        let names: BTreeSet<String> = self.channels()?.into_iter().map(|c| c.name).collect();
        r.validate(&names)?;
        self.meta.put(Kind::Setting, "routing", &encode(&r)?)?;
        self.reload_notify()
    }

    pub fn silences(&self) -> Result<Vec<Silence>, AlertingError> {
        self.meta
            .list(Kind::Silence)?
            .into_iter()
            .map(|(k, v)| decode("silence", &k, v))
            .collect()
    }

    /// Creates (or, with an existing id, updates) a silence; returns its id.
    pub fn put_silence(&self, mut s: Silence) -> Result<String, AlertingError> {
        let _admin = self.admin.lock();
        if s.matchers.is_empty() {
            return Err(AlertingError::InvalidRequest(
                "a silence needs at least one matcher".into(),
            ));
        }
        if s.created_by.trim().is_empty() {
            return Err(AlertingError::InvalidRequest(
                "a silence needs createdBy".into(),
            ));
        }
        if s.ends_at_ms <= s.starts_at_ms {
            return Err(AlertingError::InvalidRequest(
                "a silence must end after it starts".into(),
            ));
        }
        if s.comment.len() > 4096 || s.created_by.len() > 256 || s.matchers.len() > 64 {
            return Err(AlertingError::InvalidRequest(
                "silence comment, creator or matchers too long".into(),
            ));
        }
        let now = self.now();
        let existing = self.silences()?;
        if s.id.is_empty() {
            let live = existing.iter().filter(|x| x.ends_at_ms > now).count();
            if live >= self.opts.max_silences {
                return Err(AlertingError::LimitExceeded(format!(
                    "at most {} silences may be active or pending",
                    self.opts.max_silences
                )));
            }
            s.id = new_id(now);
        } else if !existing.iter().any(|x| x.id == s.id) {
            return Err(AlertingError::NotFound(format!("silence {:?}", s.id)));
        }
        s.expiry_handled = false;
        self.meta.put(Kind::Silence, &s.id, &encode(&s)?)?;
        // Expired silences older than the history retention are dropped.
        for old in existing
            .iter()
            .filter(|x| x.ends_at_ms + self.opts.history_retention_ms < now)
        {
            self.meta.delete(Kind::Silence, &old.id)?;
        }
        self.reload_silences()?;
        Ok(s.id)
    }

    /// Expires a silence now (its alerts are notified if still firing).
    pub fn expire_silence(&self, id: &str) -> Result<(), AlertingError> {
        let _admin = self.admin.lock();
        let v = self
            .meta
            .get(Kind::Silence, id)?
            .ok_or_else(|| AlertingError::NotFound(format!("silence {id:?}")))?;
        let mut s: Silence = decode("silence", id, v)?;
        let now = self.now();
        if s.ends_at_ms > now {
            s.ends_at_ms = now.max(s.starts_at_ms);
            if s.starts_at_ms > now {
                s.starts_at_ms = now;
                s.ends_at_ms = now;
            }
            self.meta.put(Kind::Silence, id, &encode(&s)?)?;
        }
        self.reload_silences()
    }

    pub fn put_slo(&self, def: SloDef) -> Result<(), AlertingError> {
        let _admin = self.admin.lock();
        def.validate()?;
        let existing = self.slos()?;
        if !existing.iter().any(|s| s.name == def.name) && existing.len() >= self.opts.max_slos {
            return Err(AlertingError::LimitExceeded(format!(
                "at most {} SLOs",
                self.opts.max_slos
            )));
        }
        self.meta.put(Kind::Slo, &def.name, &encode(&def)?)?;
        self.reload_groups()
    }

    pub fn delete_slo(&self, name: &str) -> Result<(), AlertingError> {
        let _admin = self.admin.lock();
        if !self.meta.delete(Kind::Slo, name)? {
            return Err(AlertingError::NotFound(format!("slo {name:?}")));
        }
        self.reload_groups()
    }

    // ---- views -------------------------------------------------------

    /// Every group (stored and generated) with its rules' state.
    pub fn rule_views(&self) -> Vec<GroupView> {
        let inner = self.inner.lock();
        inner
            .groups
            .iter()
            .map(|g| {
                let rules = g
                    .group
                    .rules
                    .iter()
                    .map(|r| RuleView {
                        group: g.group.name.clone(),
                        rule: r.clone(),
                        state: inner.states.get(&r.key).cloned().unwrap_or_default(),
                    })
                    .collect();
                GroupView {
                    group: g.group.clone(),
                    generated: g.generated,
                    last_eval_ms: g.last_eval_ms,
                    eval_seconds: g.eval_seconds,
                    rules,
                }
            })
            .collect()
    }

    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryEntry>, AlertingError> {
        Ok(self.meta.history(q)?)
    }

    /// Alerts held by the dispatcher with their silence/inhibition status.
    pub fn alert_statuses(&self) -> Vec<AlertStatus> {
        self.dispatcher.lock().statuses(self.now())
    }

    /// Receives alerts from another Prometheus or vmalert
    /// (`POST /api/v2/alerts`).
    pub fn receive_alerts(&self, alerts: Vec<Alert>) -> Result<usize, AlertingError> {
        let now = self.now();
        let mut d = self.dispatcher.lock();
        let mut n = 0;
        for mut a in alerts {
            if a.labels.is_empty() {
                return Err(AlertingError::InvalidRequest(
                    "an alert needs labels".into(),
                ));
            }
            if a.ends_at_ms.is_none() {
                a.ends_at_ms = Some(now + self.opts.resolve_timeout_ms);
            }
            d.put(a, now)?;
            n += 1;
        }
        Ok(n)
    }

    // ---- evaluation --------------------------------------------------

    /// Evaluates every group due at `now` (blocking). Returns the series
    /// recording rules produced.
    pub fn evaluate_due(&self, now: i64) -> Vec<Series> {
        let mut recorded = Vec::new();
        for g in self.claim_due(now) {
            let started = std::time::Instant::now();
            recorded.extend(self.evaluate_group(&g, now));
            self.finish_group(&g, now, started);
        }
        recorded
    }

    /// The groups due at `now` that are not being evaluated, marked as
    /// running until [`finish_group`](Self::finish_group).
    fn claim_due(&self, now: i64) -> Vec<CompiledGroup> {
        let mut inner = self.inner.lock();
        inner
            .groups
            .iter_mut()
            .filter(|g| g.next_eval_ms <= now && !g.running)
            .map(|g| {
                g.running = true;
                g.group.clone()
            })
            .collect()
    }

    fn finish_group(&self, g: &CompiledGroup, now: i64, started: std::time::Instant) {
        let mut inner = self.inner.lock();
        if let Some(rt) = inner.groups.iter_mut().find(|x| x.group.name == g.name) {
            rt.running = false;
            rt.last_eval_ms = Some(now);
            rt.eval_seconds = started.elapsed().as_secs_f64();
            let iv = rt.group.interval.ms().max(1);
            // The next multiple of the interval after the evaluation time
            // (missed evaluations are skipped, as Prometheus does).
            rt.next_eval_ms = (self.now().max(now) / iv + 1) * iv;
        }
    }

    fn evaluate_group(&self, g: &CompiledGroup, now: i64) -> Vec<Series> {
        let mut recorded = Vec::new();
        let mut history = Vec::new();
        let mut to_save = Vec::new();
        for rule in &g.rules {
            let started = std::time::Instant::now();
            let result = evaluate(rule, &self.sources, now);
            let mut inner = self.inner.lock();
            let state = inner.states.entry(rule.key.clone()).or_default();
            let before = state.clone();
            state.last_eval_ms = Some(now);
            match result {
                Ok(samples) if rule.recording => {
                    let limit = if rule.limit == 0 {
                        super::state::DEFAULT_ALERT_LIMIT
                    } else {
                        rule.limit
                    };
                    if samples.len() > limit {
                        state.health = super::state::Health::Err;
                        state.last_error = Some(format!(
                            "exceeded limit of {limit} with {} series",
                            samples.len()
                        ));
                    } else {
                        state.health = super::state::Health::Ok;
                        state.last_error = None;
                        for (labels, v) in samples {
                            let mut l: Vec<(String, String)> = labels
                                .into_iter()
                                .filter(|(k, _)| k != METRIC_NAME)
                                .collect();
                            for (k, t) in &rule.labels {
                                l.retain(|(n, _)| n != k);
                                l.push((
                                    k.clone(),
                                    t.expand(&super::template::TemplateData {
                                        labels: &BTreeMap::new(),
                                        value: v,
                                        external_url: &self.opts.external_url,
                                    }),
                                ));
                            }
                            l.push((METRIC_NAME.to_string(), rule.name.clone()));
                            l.sort();
                            recorded.push(Series {
                                labels: l,
                                samples: vec![Sample { t_ms: now, v }],
                            });
                        }
                    }
                }
                Ok(samples) => match apply(rule, state, &samples, now, &self.opts.external_url) {
                    Ok(ts) => {
                        state.health = super::state::Health::Ok;
                        state.last_error = None;
                        history.extend(ts.into_iter().map(|t| (rule.key.clone(), t)));
                    }
                    Err(e) => {
                        state.health = super::state::Health::Err;
                        state.last_error = Some(e);
                    }
                },
                Err(e) => {
                    state.health = super::state::Health::Err;
                    state.last_error = Some(e);
                }
            }
            state.eval_seconds = started.elapsed().as_secs_f64();
            let outcome = if state.health == super::state::Health::Err {
                "error"
            } else {
                "ok"
            };
            self.metrics.evaluations.with_label_values(&[outcome]).inc();
            let changed = lifecycle_changed(&before, state)
                || before.health != state.health
                || before.last_error != state.last_error;
            let snapshot = state.clone();
            drop(inner);
            if changed {
                match serde_json::to_value(&snapshot) {
                    Ok(v) => to_save.push((rule.key.clone(), v)),
                    Err(e) => {
                        tracing::error!(rule = %rule.key, error = %e, "cannot encode alert state")
                    }
                }
            }
            if !rule.recording {
                self.push_alerts(rule, &snapshot, g.interval, now);
            }
        }
        // One transaction for the group's changed states.
        if !to_save.is_empty() {
            if let Err(e) = self.meta.put_many(Kind::AlertState, &to_save, &[]) {
                tracing::error!(group = %g.name, error = %e, "cannot persist alert state");
            }
        }
        if !history.is_empty() {
            let entries: Vec<HistoryEntry> = history
                .into_iter()
                .map(|(key, t): (String, Transition)| HistoryEntry {
                    id: 0,
                    t_ms: t.t_ms,
                    rule_key: key,
                    fingerprint: t.fingerprint,
                    from_state: t.from.as_str().into(),
                    to_state: t.to.as_str().into(),
                    value: Some(t.value),
                    labels: serde_json::to_value(&t.labels).unwrap_or_default(),
                })
                .collect();
            if let Err(e) = self.meta.append_history(
                &entries,
                self.opts.history_max_rows,
                now - self.opts.history_retention_ms,
            ) {
                tracing::error!(error = %e, "cannot record alert history");
            }
        }
        recorded
    }

    fn push_alerts(
        &self,
        rule: &super::rules::CompiledRule,
        state: &RuleState,
        interval: PromDuration,
        now: i64,
    ) {
        let mut d = self.dispatcher.lock();
        let resend = 4 * interval.ms().max(self.opts.tick.as_millis() as i64);
        for a in state.alerts.values() {
            let ends = match a.state {
                AlertState::Firing => now + resend,
                AlertState::Resolved => a.resolved_at_ms.unwrap_or(now),
                _ => continue,
            };
            let alert = Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at_ms: a.fired_at_ms.unwrap_or(a.active_at_ms),
                ends_at_ms: Some(ends),
                generator_url: format!(
                    "{}/alerts?rule={}",
                    self.opts.external_url,
                    url_escape(&rule.key)
                ),
                updated_at_ms: now,
            };
            if let Err(e) = d.put(alert, now) {
                tracing::warn!(rule = %rule.key, error = %e, "alert not handed to the dispatcher");
            }
        }
    }

    /// Flushes due notification groups and queues their notifications.
    pub fn notify(&self, now: i64) {
        {
            let inner = self.inner.lock();
            let (mut pending, mut firing) = (0i64, 0i64);
            for a in inner.states.values().flat_map(|s| s.alerts.values()) {
                match a.state {
                    AlertState::Pending => pending += 1,
                    AlertState::Firing => firing += 1,
                    _ => {}
                }
            }
            self.metrics
                .alerts
                .with_label_values(&["pending"])
                .set(pending);
            self.metrics
                .alerts
                .with_label_values(&["firing"])
                .set(firing);
        }
        let out = self.dispatcher.lock().tick(now);
        for (key, sent) in &out.log {
            if let Ok(v) = serde_json::to_value(sent) {
                if let Err(e) = self.meta.put(Kind::NotificationLog, key, &v) {
                    tracing::error!(error = %e, "cannot persist the notification log");
                }
            }
        }
        for id in &out.expired_silences {
            if let Ok(Some(v)) = self.meta.get(Kind::Silence, id) {
                if let Ok(mut s) = serde_json::from_value::<Silence>(v) {
                    s.expiry_handled = true;
                    if let Ok(v) = serde_json::to_value(&s) {
                        let _ = self.meta.put(Kind::Silence, id, &v);
                    }
                }
            }
        }
        for n in out.notifications {
            self.delivery.send(n);
        }
    }

    /// Runs evaluation and notification every `tick` until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.opts.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = std::time::Instant::now();
        // Each due group is evaluated in a task of its own, so a slow group
        // delays neither the others nor notifications.
        let mut evaluations = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            while evaluations.try_join_next().is_some() {}
            let now = self.now();
            for g in self.claim_due(now) {
                let svc = self.clone();
                evaluations.spawn(async move {
                    let started = std::time::Instant::now();
                    let (s, group) = (svc.clone(), g.clone());
                    let recorded =
                        tokio::task::spawn_blocking(move || s.evaluate_group(&group, now)).await;
                    svc.finish_group(&g, now, started);
                    match recorded {
                        Ok(rec) if !rec.is_empty() => {
                            if let Some(sink) = &svc.sink {
                                if let Err(e) = sink.write(rec).await {
                                    tracing::warn!(group = %g.name, error = %e, "recording rule results not written");
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(group = %g.name, error = %e, "rule evaluation task failed")
                        }
                    }
                });
            }
            let svc = self.clone();
            let prune = last_prune.elapsed() >= Duration::from_secs(3600);
            if prune {
                last_prune = std::time::Instant::now();
            }
            let done = tokio::task::spawn_blocking(move || {
                if prune {
                    if let Err(e) = svc.prune_notification_log() {
                        tracing::warn!(error = %e, "cannot prune the notification log");
                    }
                }
                svc.notify(svc.now());
            })
            .await;
            if let Err(e) = done {
                tracing::error!(error = %e, "notification task failed");
            }
        }
        self.delivery.stop();
        // Evaluations in flight end by their query deadline at the latest.
        while evaluations.join_next().await.is_some() {}
    }
}

/// Whether alerts appeared, disappeared or changed state or timers (value
/// and annotation updates alone are not worth a write: the next evaluation
/// after a restart refreshes them).
fn lifecycle_changed(a: &RuleState, b: &RuleState) -> bool {
    a.alerts.len() != b.alerts.len()
        || a.alerts
            .iter()
            .zip(b.alerts.iter())
            .any(|((ka, x), (kb, y))| {
                ka != kb
                    || x.state != y.state
                    || x.active_at_ms != y.active_at_ms
                    || x.fired_at_ms != y.fired_at_ms
                    || x.resolved_at_ms != y.resolved_at_ms
                    || x.keep_firing_since_ms != y.keep_firing_since_ms
            })
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn new_id(now: i64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let r = std::collections::hash_map::RandomState::new();
    use std::hash::BuildHasher;
    let h = r.hash_one((now, n));
    format!("{:012x}-{h:016x}", now as u64 & 0xffff_ffff_ffff)
}

impl AlertingOptions {
    /// The options of `[alerting]`; `http_addr` makes the default external URL.
    pub fn from_config(c: &crate::config::AlertingConfig, http_addr: std::net::SocketAddr) -> Self {
        let d = AlertingOptions::default();
        AlertingOptions {
            default_interval: PromDuration(c.evaluation_interval.0),
            external_url: if c.external_url.is_empty() {
                format!("http://{http_addr}")
            } else {
                c.external_url.trim_end_matches('/').to_string()
            },
            timing: Timing {
                group_wait_ms: c.group_wait.0.as_millis() as i64,
                group_interval_ms: c.group_interval.0.as_millis() as i64,
                repeat_interval_ms: c.repeat_interval.0.as_millis() as i64,
            },
            resolve_timeout_ms: c.resolve_timeout.0.as_millis() as i64,
            tick: c.resolution.0,
            retry: RetryPolicy {
                initial_backoff: c.retry_initial_backoff.0,
                max_backoff: c.retry_max_backoff.0,
                max_attempts: c.retry_max_attempts,
                timeout: c.delivery_timeout.0,
                queue_capacity: c.queue_capacity,
            },
            max_alerts: c.max_alerts,
            history_max_rows: c.history_max_rows,
            history_retention_ms: c.history_retention.0.as_millis() as i64,
            slo_interval: PromDuration(c.slo_evaluation_interval.0),
            ..d
        }
    }
}
