//! Rule evaluation in the style of Prometheus rule unit tests (input
//! series in `promtool` notation, evaluation on a simulated clock, expected
//! alerts at given times), the alert lifecycle, persistence across a
//! restart, and the dispatcher's grouping, dedup, repeat, inhibition and
//! silences on a simulated clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::eval::Sources;
use super::notify::{
    Alert, Dispatcher, InhibitRule, Matcher, Route, RoutingConfig, Silence, Timing,
};
use super::rules::{compile_group, parse_rule_file, CompiledGroup, PromDuration};
use super::service::{AlertingOptions, AlertingService, Clock};
use super::state::{apply, AlertState, RuleState};
use crate::model::{Sample, Series};
use crate::query::promql::{QueryLimits, VecSource};
use crate::storage::meta::{HistoryQuery, MetaStore};
use crate::storage::{LogStore, TraceStore};

pub const MIN: i64 = 60_000;

/// A series in `promtool` notation: `0+10x5` (0, 10, ... 50), `1x3`,
/// `_` (no sample), `_x3`, separated by spaces; one value per `step_ms`
/// from time 0.
pub fn series(labels: &[(&str, &str)], values: &str, step_ms: i64) -> Series {
    let mut samples = Vec::new();
    let mut i = 0i64;
    for tok in values.split_whitespace() {
        let (base, times) = match tok.split_once('x') {
            Some((b, n)) => (b, n.parse::<i64>().expect("repeat count")),
            None => (tok, 0),
        };
        if base == "_" {
            i += times + 1;
            continue;
        }
        let (start, inc) = match base[1..].find(['+', '-']) {
            Some(p) => {
                let (a, b) = base.split_at(p + 1);
                (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap())
            }
            None => (base.parse::<f64>().unwrap(), 0.0),
        };
        for k in 0..=times {
            samples.push(Sample {
                t_ms: i * step_ms,
                v: start + inc * k as f64,
            });
            i += 1;
        }
    }
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    Series { labels, samples }
}

pub fn sources(series: Vec<Series>) -> Sources {
    Sources {
        series: Arc::new(VecSource::new(series)),
        traces: None,
        logs: None,
        limits: QueryLimits::default(),
    }
}

fn group(yaml: &str) -> CompiledGroup {
    let f = parse_rule_file(yaml).unwrap();
    compile_group(&f.groups[0], PromDuration(Duration::from_secs(60))).unwrap()
}

/// An alert as seen at one evaluation: state, labels, annotations.
type Seen = (
    AlertState,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
);

/// Evaluates every rule of `g` at each step from 0 to `end`, returning per
/// evaluation time the alerts (state, labels, annotations) of all rules.
fn run(g: &CompiledGroup, src: &Sources, end_ms: i64) -> BTreeMap<i64, Vec<Seen>> {
    let mut states: Vec<RuleState> = vec![RuleState::default(); g.rules.len()];
    let mut out = BTreeMap::new();
    let mut t = 0;
    while t <= end_ms {
        let mut now = Vec::new();
        for (r, st) in g.rules.iter().zip(states.iter_mut()) {
            let samples = super::eval::evaluate(r, src, t).unwrap();
            apply(r, st, &samples, t, "http://tern").unwrap();
            for a in st.alerts.values() {
                now.push((a.state, a.labels.clone(), a.annotations.clone()));
            }
        }
        out.insert(t, now);
        t += g.interval.ms();
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const ERRORS_RULE: &str = r#"
groups:
  - name: api
    interval: 1m
    rules:
      - alert: HighErrorRate
        expr: rate(http_errors_total[5m]) > 0.5
        for: 3m
        labels:
          severity: page
          team: "{{ $labels.job }}-oncall"
        annotations:
          summary: "{{ $labels.job }} fails {{ printf \"%.2f\" $value }} req/s"
"#;

#[test]
fn rule_unit_test_alert_timeline() {
    // A counter rising 60/min for 10 minutes, then gone. By hand (Prometheus
    // rate extrapolation over (t-5m, t]): 0.2 at 1m, 0.4 at 2m, 0.6 at 3m
    // (pending), 0.8, 1.0, firing at 6m (for: 3m), 1.0 at 11m, 0.7 at 12m,
    // 0.5 at 13m (not > 0.5: resolved).
    let src = sources(vec![series(
        &[("__name__", "http_errors_total"), ("job", "api")],
        "0+60x10",
        MIN,
    )]);
    let g = group(ERRORS_RULE);
    let got = run(&g, &src, 20 * MIN);
    let want_labels = labels(&[
        ("alertname", "HighErrorRate"),
        ("job", "api"),
        ("severity", "page"),
        ("team", "api-oncall"),
    ]);
    let state_at = |t: i64| got[&(t * MIN)].first().map(|a| a.0);
    assert_eq!(state_at(2), None);
    assert_eq!(state_at(3), Some(AlertState::Pending));
    assert_eq!(state_at(5), Some(AlertState::Pending));
    assert_eq!(state_at(6), Some(AlertState::Firing));
    assert_eq!(state_at(12), Some(AlertState::Firing));
    assert_eq!(state_at(13), Some(AlertState::Resolved));
    let at6 = &got[&(6 * MIN)][0];
    assert_eq!(at6.1, want_labels);
    assert_eq!(at6.2["summary"], "api fails 1.00 req/s");
    let at12 = &got[&(12 * MIN)][0];
    assert_eq!(at12.2["summary"], "api fails 0.70 req/s");
    // Resolved alerts are kept 15 minutes, then forgotten.
    let g2 = group(ERRORS_RULE);
    let got = run(&g2, &src, 40 * MIN);
    assert_eq!(got[&(28 * MIN)].len(), 1);
    assert!(got[&(29 * MIN)].is_empty());
}

#[test]
fn pending_alerts_that_clear_before_for_never_fire() {
    let src = sources(vec![series(
        &[("__name__", "temp"), ("room", "a")],
        "10 10 30 30 10 10 30 30 30 30",
        MIN,
    )]);
    let g = group(
        "groups:\n  - name: g\n    interval: 1m\n    rules:\n      - alert: Hot\n        expr: temp > 20\n        for: 2m\n",
    );
    let got = run(&g, &src, 9 * MIN);
    let states: Vec<Option<AlertState>> = (0..=9)
        .map(|t| got[&(t * MIN)].first().map(|a| a.0))
        .collect();
    use AlertState::*;
    assert_eq!(
        states,
        vec![
            None,
            None,
            Some(Pending),
            Some(Pending),
            None,
            None,
            Some(Pending),
            Some(Pending),
            Some(Firing),
            Some(Firing)
        ]
    );
}

#[test]
fn keep_firing_for_holds_the_alert_after_the_condition_clears() {
    let src = sources(vec![series(
        &[("__name__", "up"), ("job", "db")],
        "0 0 1 1 1 1 1 1",
        MIN,
    )]);
    let g = group(
        "groups:\n  - name: g\n    interval: 1m\n    rules:\n      - alert: Down\n        expr: up == 0\n        keep_firing_for: 3m\n",
    );
    let got = run(&g, &src, 7 * MIN);
    let states: Vec<Option<AlertState>> = (0..=7)
        .map(|t| got[&(t * MIN)].first().map(|a| a.0))
        .collect();
    use AlertState::*;
    // for: 0 fires at once; cleared at 2m, held until 2m + 3m.
    assert_eq!(
        states,
        vec![
            Some(Firing),
            Some(Firing),
            Some(Firing),
            Some(Firing),
            Some(Firing),
            Some(Resolved),
            Some(Resolved),
            Some(Resolved)
        ]
    );
}

#[test]
fn one_alert_per_series_and_limits() {
    let src = sources(vec![
        series(&[("__name__", "up"), ("job", "a")], "0x3", MIN),
        series(&[("__name__", "up"), ("job", "b")], "0x3", MIN),
        series(&[("__name__", "up"), ("job", "c")], "1x3", MIN),
    ]);
    let g = group("groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n");
    let got = run(&g, &src, 0);
    let jobs: Vec<&str> = got[&0].iter().map(|a| a.1["job"].as_str()).collect();
    assert_eq!(jobs.len(), 2);
    assert!(jobs.contains(&"a") && jobs.contains(&"b"));
    let g = group("groups:\n  - name: g\n    limit: 1\n    rules:\n      - alert: Down\n        expr: up == 0\n");
    let samples = super::eval::evaluate(&g.rules[0], &src, 0).unwrap();
    let mut st = RuleState::default();
    let err = apply(&g.rules[0], &mut st, &samples, 0, "").unwrap_err();
    assert!(err.contains("limit of 1"), "{err}");
    assert!(st.alerts.is_empty());
}

#[test]
fn log_count_and_span_rules_read_their_stores() {
    use crate::storage::memory::{MemoryLogStore, MemoryTraceStore};
    use crate::storage::suite::{log, span};
    let logs = Arc::new(MemoryLogStore::default());
    let ns = |ms: i64| (ms as u64) * 1_000_000;
    let records: Vec<_> = (0..12)
        .map(|i| {
            log(
                ns(10 * MIN + i * 1000),
                "checkout",
                if i % 4 == 0 { "ok" } else { "payment timeout" },
                None,
            )
        })
        .collect();
    logs.write(1, records).unwrap();
    let traces = Arc::new(MemoryTraceStore::default());
    let mut spans = Vec::new();
    for i in 0..10u8 {
        let mut s = span(
            i + 1,
            i + 1,
            ns(10 * MIN) + u64::from(i) * 1_000_000_000,
            "checkout",
        );
        s.name = "POST /pay".into();
        s.end_time_ns = s.start_time_ns + if i < 8 { 100_000_000 } else { 900_000_000 };
        if i >= 7 {
            s.status.code = crate::model::StatusCode::Error;
        }
        spans.push(s);
    }
    traces.write(1, spans).unwrap();
    let src = Sources {
        series: Arc::new(VecSource::default()),
        traces: Some(traces),
        logs: Some(logs),
        limits: QueryLimits::default(),
    };
    let g = group(
        r#"
groups:
  - name: g
    rules:
      - alert: Timeouts
        logs: {query: '"timeout"', service: checkout, window: 5m, condition: "> 5"}
      - alert: FewTimeouts
        logs: {query: '"timeout"', service: checkout, window: 5m, condition: "> 9"}
      - alert: CheckoutErrors
        spans: {service: checkout, window: 5m, measure: errors, condition: ">= 3"}
      - alert: CheckoutErrorRatio
        spans: {service: checkout, operation: POST /pay, window: 5m, measure: error_ratio, condition: "> 0.2"}
      - alert: CheckoutSlow
        spans: {service: checkout, window: 5m, measure: latency_p90_ms, condition: "> 500"}
"#,
    );
    let t = 12 * MIN;
    let eval = |i: usize| super::eval::evaluate(&g.rules[i], &src, t).unwrap();
    assert_eq!(
        eval(0),
        vec![(vec![("service".to_string(), "checkout".to_string())], 9.0)]
    );
    assert!(eval(1).is_empty());
    assert_eq!(eval(2)[0].1, 3.0);
    assert_eq!(
        eval(3)[0].0[0],
        ("operation".to_string(), "POST /pay".to_string())
    );
    assert!((eval(3)[0].1 - 0.3).abs() < 1e-9);
    let p90 = eval(4)[0].1;
    assert!((850.0..=950.0).contains(&p90), "p90 {p90}");
    // Outside the window nothing counts.
    assert!(super::eval::evaluate(&g.rules[0], &src, 30 * MIN)
        .unwrap()
        .is_empty());
}

pub fn manual_clock(start: i64) -> (Clock, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(start));
    let n = now.clone();
    (Arc::new(move || n.load(Ordering::SeqCst)), now)
}

#[tokio::test]
async fn restart_keeps_pending_timers_firing_alerts_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let src = sources(vec![series(
        &[("__name__", "http_errors_total"), ("job", "api")],
        "0+60x30",
        MIN,
    )]);
    let (clock, now) = manual_clock(0);
    let open = |clock: Clock| {
        AlertingService::open(
            Arc::new(MetaStore::open(dir.path()).unwrap()),
            src.clone(),
            None,
            AlertingOptions::default(),
            &prometheus::Registry::new(),
            clock,
        )
        .unwrap()
    };
    {
        let svc = open(clock.clone());
        svc.import_rule_file(ERRORS_RULE, false).unwrap();
        for t in 0..=4 {
            now.store(t * MIN, Ordering::SeqCst);
            svc.evaluate_due(t * MIN);
        }
        let views = svc.rule_views();
        assert_eq!(views[0].rules[0].state.rule_state(), AlertState::Pending);
    }
    // A new process: the pending alert keeps its active time (3m), so it
    // fires at 6m, not 3m after the restart.
    let svc = open(clock.clone());
    for t in 5..=6 {
        now.store(t * MIN, Ordering::SeqCst);
        svc.evaluate_due(t * MIN);
        let views = svc.rule_views();
        let st = &views[0].rules[0].state;
        let want = if t < 6 {
            AlertState::Pending
        } else {
            AlertState::Firing
        };
        assert_eq!(st.rule_state(), want, "at {t}m");
        let a = st.alerts.values().next().unwrap();
        assert_eq!(a.active_at_ms, 3 * MIN);
    }
    drop(svc);
    let svc = open(clock);
    let views = svc.rule_views();
    assert_eq!(views[0].rules[0].state.rule_state(), AlertState::Firing);
    let h = svc
        .history(&HistoryQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    let steps: Vec<(i64, &str, &str)> = h
        .iter()
        .map(|e| (e.t_ms / MIN, e.from_state.as_str(), e.to_state.as_str()))
        .collect();
    assert_eq!(
        steps,
        vec![(6, "pending", "firing"), (3, "inactive", "pending")]
    );
    assert_eq!(h[0].labels["job"], "api");
}

#[tokio::test]
async fn recording_rules_write_their_results_as_series() {
    let dir = tempfile::tempdir().unwrap();
    let src = sources(vec![
        series(
            &[("__name__", "req_total"), ("job", "a"), ("code", "200")],
            "0+60x10",
            MIN,
        ),
        series(
            &[("__name__", "req_total"), ("job", "a"), ("code", "500")],
            "0+120x10",
            MIN,
        ),
    ]);
    let (clock, _) = manual_clock(0);
    let svc = AlertingService::open(
        Arc::new(MetaStore::open(dir.path()).unwrap()),
        src,
        None,
        AlertingOptions::default(),
        &prometheus::Registry::new(),
        clock,
    )
    .unwrap();
    svc.import_rule_file(
        "groups:\n  - name: rec\n    rules:\n      - record: job:req:rate1m\n        expr: sum by (job) (rate(req_total[2m]))\n        labels:\n          source: rule\n",
        false,
    )
    .unwrap();
    let out = svc.evaluate_due(6 * MIN);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].labels,
        vec![
            ("__name__".to_string(), "job:req:rate1m".to_string()),
            ("job".to_string(), "a".to_string()),
            ("source".to_string(), "rule".to_string())
        ]
    );
    assert_eq!(
        out[0].samples,
        vec![Sample {
            t_ms: 6 * MIN,
            v: 3.0
        }]
    );
}

// ---- dispatcher on a simulated clock ---------------------------------

fn timing() -> Timing {
    Timing {
        group_wait_ms: 30_000,
        group_interval_ms: 5 * MIN,
        repeat_interval_ms: 60 * MIN,
    }
}

fn alert(pairs: &[(&str, &str)], start: i64, end: Option<i64>) -> Alert {
    Alert {
        labels: labels(pairs),
        annotations: BTreeMap::new(),
        starts_at_ms: start,
        ends_at_ms: end,
        generator_url: String::new(),
        updated_at_ms: start,
    }
}

fn names(n: &super::notify::Notification) -> Vec<(String, bool)> {
    n.alerts
        .iter()
        .map(|a| (a.alert.labels["instance"].clone(), a.resolved))
        .collect()
}

#[test]
fn dispatcher_groups_waits_dedups_repeats_and_resolves() {
    let mut d = Dispatcher::new(timing(), 100);
    d.configure(
        RoutingConfig {
            route: Route {
                group_by: Some(vec!["alertname".into()]),
                ..Default::default()
            },
            ..Default::default()
        },
        vec!["hook".into()],
        0,
    );
    let a = |i: &str, end| alert(&[("alertname", "Down"), ("instance", i)], 0, end);
    d.put(a("a", None), 0).unwrap();
    d.put(a("b", None), 1000).unwrap();
    d.put(
        alert(&[("alertname", "Other"), ("instance", "c")], 0, None),
        0,
    )
    .unwrap();
    // group_wait: nothing before 30s.
    assert!(d.tick(29_000).notifications.is_empty());
    let out = d.tick(30_000);
    assert_eq!(out.notifications.len(), 2, "one notification per group");
    let down = out
        .notifications
        .iter()
        .find(|n| n.group_labels["alertname"] == "Down")
        .unwrap();
    let mut got = names(down);
    got.sort();
    assert_eq!(got, vec![("a".into(), false), ("b".into(), false)]);
    assert_eq!(down.receiver, "hook");
    // Dedup: unchanged groups stay quiet at the next group_interval.
    assert!(d.tick(30_000 + 5 * MIN).notifications.is_empty());
    // A new alert in the group is sent at the next group_interval, with
    // the others.
    d.put(a("x", None), 6 * MIN).unwrap();
    assert!(d.tick(7 * MIN).notifications.is_empty());
    let out = d.tick(30_000 + 10 * MIN);
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(names(&out.notifications[0]).len(), 3);
    // Resolved: sent once, then the alert is gone from the group.
    d.put(a("a", Some(11 * MIN)), 11 * MIN).unwrap();
    let out = d.tick(30_000 + 15 * MIN);
    let mut got = names(&out.notifications[0]);
    got[..2].sort();
    assert_eq!(
        got,
        vec![("b".into(), false), ("x".into(), false), ("a".into(), true)],
        "firing first, then resolved"
    );
    assert!(d.tick(30_000 + 20 * MIN).notifications.is_empty());
    // Repeat: after repeat_interval the still-firing groups are sent again.
    let out = d.tick(30_000 + 75 * MIN);
    assert_eq!(out.notifications.len(), 2);
    let down = out
        .notifications
        .iter()
        .find(|n| n.group_labels["alertname"] == "Down")
        .unwrap();
    let mut got = names(down);
    got.sort();
    assert_eq!(got, vec![("b".into(), false), ("x".into(), false)]);
}

#[test]
fn dispatcher_routes_by_matchers_with_continue_and_inherited_timing() {
    let mut d = Dispatcher::new(timing(), 100);
    let m = |s: &str| Matcher::parse(s).unwrap();
    d.configure(
        RoutingConfig {
            route: Route {
                receiver: Some("default".into()),
                routes: vec![
                    Route {
                        receiver: Some("pager".into()),
                        matchers: vec![m("severity=~\"page|critical\"")],
                        group_wait: Some(PromDuration(Duration::from_secs(1))),
                        continue_: true,
                        ..Default::default()
                    },
                    Route {
                        receiver: Some("team-db".into()),
                        matchers: vec![m("team=db")],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            inhibit_rules: vec![],
        },
        vec!["default".into(), "pager".into(), "team-db".into()],
        0,
    );
    d.put(
        alert(
            &[
                ("alertname", "A"),
                ("instance", "1"),
                ("severity", "page"),
                ("team", "db"),
            ],
            0,
            None,
        ),
        0,
    )
    .unwrap();
    d.put(
        alert(
            &[("alertname", "B"), ("instance", "2"), ("severity", "info")],
            0,
            None,
        ),
        0,
    )
    .unwrap();
    let out = d.tick(1000);
    let recv: Vec<&str> = out
        .notifications
        .iter()
        .map(|n| n.receiver.as_str())
        .collect();
    assert_eq!(recv, vec!["pager"], "the page route waits 1s only");
    let out = d.tick(30_000);
    let mut recv: Vec<(String, Vec<(String, bool)>)> = out
        .notifications
        .iter()
        .map(|n| (n.receiver.clone(), names(n)))
        .collect();
    recv.sort();
    assert_eq!(
        recv,
        vec![
            ("default".into(), vec![("2".into(), false)]),
            ("team-db".into(), vec![("1".into(), false)])
        ]
    );
}

#[test]
fn dispatcher_inhibits_and_silences_and_notifies_when_a_silence_expires() {
    let mut d = Dispatcher::new(timing(), 100);
    let m = |s: &str| Matcher::parse(s).unwrap();
    d.configure(
        RoutingConfig {
            route: Route {
                group_by: Some(vec!["...".into()]),
                ..Default::default()
            },
            inhibit_rules: vec![InhibitRule {
                source_matchers: vec![m("severity=critical")],
                target_matchers: vec![m("severity=warning")],
                equal: vec!["cluster".into()],
            }],
        },
        vec!["hook".into()],
        0,
    );
    d.set_silences(vec![Silence {
        id: "s1".into(),
        matchers: vec![m("instance=silenced")],
        starts_at_ms: 0,
        ends_at_ms: 10 * MIN,
        created_by: "ops".into(),
        comment: "maintenance".into(),
        expiry_handled: false,
    }]);
    d.put(
        alert(
            &[
                ("alertname", "Crit"),
                ("instance", "c"),
                ("severity", "critical"),
                ("cluster", "eu"),
            ],
            0,
            None,
        ),
        0,
    )
    .unwrap();
    d.put(
        alert(
            &[
                ("alertname", "Warn"),
                ("instance", "w1"),
                ("severity", "warning"),
                ("cluster", "eu"),
            ],
            0,
            None,
        ),
        0,
    )
    .unwrap();
    d.put(
        alert(
            &[
                ("alertname", "Warn"),
                ("instance", "w2"),
                ("severity", "warning"),
                ("cluster", "us"),
            ],
            0,
            None,
        ),
        0,
    )
    .unwrap();
    d.put(
        alert(&[("alertname", "Any"), ("instance", "silenced")], 0, None),
        0,
    )
    .unwrap();
    let out = d.tick(30_000);
    let mut sent: Vec<String> = out
        .notifications
        .iter()
        .flat_map(names)
        .map(|x| x.0)
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        vec!["c", "w2"],
        "w1 inhibited by c (same cluster), silenced muted"
    );
    let st = d.statuses(30_000);
    let w1 = st
        .iter()
        .find(|s| s.alert.labels["instance"] == "w1")
        .unwrap();
    assert_eq!(w1.inhibited_by.len(), 1);
    let sil = st
        .iter()
        .find(|s| s.alert.labels["instance"] == "silenced")
        .unwrap();
    assert_eq!(sil.silenced_by, vec!["s1".to_string()]);
    // The critical alert resolves: w1 is no longer inhibited and is sent
    // at its group's next flush.
    d.put(
        alert(
            &[
                ("alertname", "Crit"),
                ("instance", "c"),
                ("severity", "critical"),
                ("cluster", "eu"),
            ],
            0,
            Some(MIN),
        ),
        MIN,
    )
    .unwrap();
    let out = d.tick(30_000 + 5 * MIN);
    let mut sent: Vec<(String, bool)> = out.notifications.iter().flat_map(names).collect();
    sent.sort();
    assert_eq!(sent, vec![("c".into(), true), ("w1".into(), false)]);
    // The silence expires at 10m: its alert is notified right away, not at
    // the next group_interval.
    assert!(d.tick(10 * MIN - 1).notifications.is_empty());
    let out = d.tick(10 * MIN);
    assert_eq!(out.expired_silences, vec!["s1".to_string()]);
    let sent: Vec<(String, bool)> = out.notifications.iter().flat_map(names).collect();
    assert_eq!(sent, vec![("silenced".into(), false)]);
}

#[test]
fn dispatcher_bounds_the_alerts_it_holds() {
    let mut d = Dispatcher::new(timing(), 2);
    d.put(alert(&[("instance", "1")], 0, None), 0).unwrap();
    d.put(alert(&[("instance", "2")], 0, None), 0).unwrap();
    d.put(alert(&[("instance", "2")], 0, None), 0).unwrap();
    let e = d.put(alert(&[("instance", "3")], 0, None), 0).unwrap_err();
    assert_eq!(e.code(), "limit_exceeded");
}

#[test]
fn matchers_parse_and_match() {
    let l = labels(&[("severity", "page"), ("job", "api")]);
    for (m, want) in [
        ("severity=page", true),
        ("severity!=page", false),
        ("severity=~\"pa.*\"", true),
        ("severity=~pa", false),
        ("job!~db|cache", true),
        ("missing=\"\"", true),
    ] {
        assert_eq!(Matcher::parse(m).unwrap().matches(&l), want, "{m}");
    }
    assert!(Matcher::parse("nope").is_err());
    assert!(Matcher::parse("a=~(").is_err());
    let json: Matcher =
        serde_json::from_value(serde_json::json!({"name": "job", "value": "a.*", "isRegex": true}))
            .unwrap();
    assert!(json.matches(&labels(&[("job", "api")])));
}

#[tokio::test]
async fn a_stored_group_that_no_longer_compiles_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let meta = Arc::new(MetaStore::open(dir.path()).unwrap());
    // As an older version might have stored it (the expression does not parse).
    meta.put(
        crate::storage::meta::Kind::RuleGroup,
        "legacy",
        &serde_json::json!({"name": "legacy", "rules": [{"alert": "A", "expr": "rate(x[5m]"}]}),
    )
    .unwrap();
    let (clock, _) = manual_clock(0);
    let svc = AlertingService::open(
        meta,
        sources(vec![]),
        None,
        AlertingOptions::default(),
        &prometheus::Registry::new(),
        clock,
    )
    .unwrap();
    assert!(svc.rule_views().is_empty());
    assert_eq!(svc.stored_groups().unwrap()[0].name, "legacy");
    // It can be replaced through the API.
    svc.import_rule_file(
        "groups:\n  - name: legacy\n    rules:\n      - alert: A\n        expr: up == 0\n",
        false,
    )
    .unwrap();
    assert_eq!(svc.rule_views()[0].group.name, "legacy");
}
