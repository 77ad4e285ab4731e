//! SLO arithmetic against hand-computed budgets and burn rates, and the
//! generated burn-rate alerts over a constructed incident.

use std::sync::Arc;

use super::*;
use crate::analysis::alerting::state::{apply, AlertState, RuleState};
use crate::analysis::alerting::tests::{series, sources, MIN};
use crate::query::promql::{QueryLimits, VecSource};
use crate::storage::TraceStore;

const HOUR: i64 = 60 * MIN;

fn promql_slo(window: &str) -> SloDef {
    SloDef {
        name: "api-availability".into(),
        description: String::new(),
        target: 0.99,
        window: PromDuration::parse(window).unwrap(),
        indicator: Indicator::Promql {
            good: r#"sum(increase(requests_total{code!~"5.."}[$window]))"#.into(),
            total: "sum(increase(requests_total[$window]))".into(),
        },
        labels: [("team".to_string(), "api".to_string())].into(),
        alerts: true,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * b.abs().max(1.0)
}

#[test]
fn budget_and_burn_rate_match_hand_computation() {
    // 995 good and 5 bad requests a minute for 3 hours. Over the last
    // hour: 60 000 requests, 300 bad. SLI 0.995; budget 1 % of 60 000 =
    // 600 bad requests, 300 consumed (50 %), 300 left; burn rate
    // 0.005 / 0.01 = 0.5 over every window.
    let src = sources(vec![
        series(
            &[("__name__", "requests_total"), ("code", "200")],
            "1000+995x180",
            MIN,
        ),
        series(
            &[("__name__", "requests_total"), ("code", "500")],
            "1000+5x180",
            MIN,
        ),
    ]);
    let def = promql_slo("1h");
    def.validate().unwrap();
    let r = report(&def, &src, 3 * HOUR).unwrap();
    assert!(close(r.events.total, 60_000.0), "{:?}", r.events);
    assert!(close(r.events.good, 59_700.0), "{:?}", r.events);
    assert!(close(r.sli.unwrap(), 0.995));
    assert!(close(r.error_budget.total, 600.0));
    assert!(close(r.error_budget.consumed, 300.0));
    assert!(close(r.error_budget.remaining, 300.0));
    assert!(close(r.error_budget.consumed_percent, 50.0));
    assert!(close(r.error_budget.remaining_percent, 50.0));
    for (w, b) in &r.burn_rates {
        assert!(close(*b, 0.5), "burn rate over {w}: {b}");
    }
    assert_eq!(
        r.burn_rates.keys().cloned().collect::<Vec<_>>(),
        vec!["1h", "30m", "5m"]
    );
    // Burn-down over the window: half the budget gone throughout.
    let pts = burn_down(&def, &src, 3 * HOUR, 4).unwrap();
    assert_eq!(pts.len(), 4);
    assert_eq!(pts[3].t_ms, 3 * HOUR);
    for p in &pts {
        assert!(close(p.remaining_percent, 50.0), "{p:?}");
    }
}

#[test]
fn no_events_means_no_sli_and_a_full_budget() {
    let src = sources(vec![]);
    let r = report(&promql_slo("1h"), &src, HOUR).unwrap();
    assert_eq!(r.sli, None);
    assert_eq!(r.error_budget.remaining_percent, 100.0);
    assert_eq!(r.burn_rates["1h"], 0.0);
}

#[test]
fn latency_slo_from_spans() {
    use crate::storage::memory::MemoryTraceStore;
    use crate::storage::suite::span;
    // 100 checkout requests in one minute: 95 take 100 ms, 5 take 900 ms.
    // "99 % under 300 ms": SLI 0.95, budget 1 request, 5 consumed
    // (500 %), remaining -4 (-400 %), burn rate 0.05 / 0.01 = 5.
    let traces = Arc::new(MemoryTraceStore::default());
    let spans: Vec<_> = (0..100u32)
        .map(|i| {
            let mut s = span((i % 250) as u8 + 1, (i / 250) as u8 + 1, 0, "checkout");
            s.trace_id = crate::model::TraceId([i as u8 + 1; 16]);
            s.start_time_ns = 10 * 60_000_000_000 + u64::from(i) * 100_000_000;
            s.end_time_ns = s.start_time_ns + if i < 95 { 100_000_000 } else { 900_000_000 };
            s.name = "POST /checkout".into();
            s
        })
        .collect();
    traces.write(1, spans).unwrap();
    let src = crate::analysis::alerting::eval::Sources {
        series: Arc::new(VecSource::default()),
        traces: Some(traces),
        logs: None,
        limits: QueryLimits::default(),
    };
    let def = SloDef {
        name: "checkout-latency".into(),
        description: String::new(),
        target: 0.99,
        window: PromDuration::parse("1h").unwrap(),
        indicator: Indicator::Spans {
            service: "checkout".into(),
            operation: Some("POST /checkout".into()),
            latency_threshold_ms: Some(300.0),
        },
        labels: Default::default(),
        alerts: true,
    };
    def.validate().unwrap();
    let r = report(&def, &src, 20 * MIN).unwrap();
    assert_eq!(
        r.events,
        Events {
            good: 95.0,
            total: 100.0
        }
    );
    assert!(close(r.sli.unwrap(), 0.95));
    assert!(close(r.error_budget.total, 1.0));
    assert!(close(r.error_budget.consumed, 5.0));
    assert!(close(r.error_budget.remaining, -4.0));
    assert!(close(r.error_budget.remaining_percent, -400.0));
    assert!(close(r.burn_rates["1h"], 5.0));
    // Availability of the same spans: all succeeded.
    let mut avail = def.clone();
    avail.indicator = Indicator::Spans {
        service: "checkout".into(),
        operation: None,
        latency_threshold_ms: None,
    };
    let r = report(&avail, &src, 20 * MIN).unwrap();
    assert_eq!(r.sli, Some(1.0));
    // A threshold inside a histogram bucket counts that bucket pro rata.
    let e = span_events(
        &{
            let mut a = Agg::default();
            a.record(100_000_000, false);
            a
        },
        Some(99.0),
    );
    assert!(e.good > 0.0 && e.good < 1.0, "{e:?}");
}

#[test]
fn invalid_slos_are_explained() {
    let mut d = promql_slo("30d");
    d.target = 1.0;
    assert!(d.validate().unwrap_err().to_string().contains("target"));
    let mut d = promql_slo("30d");
    d.indicator = Indicator::Promql {
        good: "sum(rate(x[$window])".into(),
        total: "y".into(),
    };
    assert!(d.validate().unwrap_err().to_string().contains("good"));
    let mut d = promql_slo("1m");
    d.name = "x".into();
    assert!(d.validate().unwrap_err().to_string().contains("window"));
}

#[test]
fn burn_rate_alerts_fire_at_the_right_time_for_an_incident() {
    // 1000 requests a minute throughout (counters start at 10^6 so that
    // rate extrapolation treats both alike). All good for 10 hours, then
    // an incident: 200 bad a minute (error ratio 20 %, burn rate 20).
    // At t = 10h + m the bad counter has grown over the last m one-minute
    // intervals. A window of W minutes holds samples t-(W-1)..t, both
    // counters extrapolated by the same factor, so the bad share is
    // 200m / (1000 (W-1)):
    //  - 1h and 5m (14.4x): m/295 >= 0.144 -> m >= 42.48 -> 10h43m
    //    (the 5m window burns at 20 from the first minutes);
    //  - 6h and 30m (6x): m/1795 >= 0.06 -> m >= 107.7 -> 11h48m;
    //  - 3d and 6h (1x): the 3d window holds everything since 0, so the
    //    share is 200m / (1000 (600 + m)) >= 0.01 -> m >= 31.6 -> 10h32m
    //    (6h: m/1795 >= 0.01 from m = 18).
    let good = "1000000+1000x600 1600800+800x179";
    let bad = "1000000x600 1000200+200x179";
    let src = sources(vec![
        series(
            &[("__name__", "requests_total"), ("code", "200")],
            good,
            MIN,
        ),
        series(&[("__name__", "requests_total"), ("code", "500")], bad, MIN),
    ]);
    let def = promql_slo("30d");
    let g = burn_rate_group(&def, PromDuration::parse("1m").unwrap());
    assert_eq!(g.rules.len(), 3);
    let mut states = vec![RuleState::default(); 3];
    let mut fired_at: Vec<Option<i64>> = vec![None; 3];
    let mut t = 10 * HOUR - 5 * MIN;
    while t <= 12 * HOUR {
        for (i, r) in g.rules.iter().enumerate() {
            let samples = crate::analysis::alerting::eval::evaluate(r, &src, t).unwrap();
            apply(r, &mut states[i], &samples, t, "").unwrap();
            if fired_at[i].is_none() && states[i].rule_state() == AlertState::Firing {
                fired_at[i] = Some(t);
            }
        }
        t += MIN;
    }
    let minute = |h: i64, m: i64| Some(h * HOUR + m * MIN);
    assert_eq!(fired_at[0], minute(10, 43), "14.4x over 1h and 5m");
    assert_eq!(fired_at[1], minute(11, 48), "6x over 6h and 30m");
    assert_eq!(fired_at[2], minute(10, 32), "1x over 3d and 6h");
    let a = states[0].alerts.values().next().unwrap();
    assert_eq!(a.labels["severity"], "page");
    assert_eq!(a.labels["slo"], "api-availability");
    assert_eq!(a.labels["team"], "api");
    assert_eq!(a.labels["long_window"], "1h");
    assert!(a.annotations["summary"].contains("api-availability"));
    assert_eq!(
        states[2].alerts.values().next().unwrap().labels["severity"],
        "ticket"
    );
}
