use super::*;

fn s(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
    let mut labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    Series {
        labels,
        samples: samples
            .iter()
            .map(|&(t_ms, v)| Sample { t_ms, v })
            .collect(),
    }
}

fn counter_source() -> VecSource {
    // Two counters scraped every 15 s for 10 minutes.
    let a: Vec<(i64, f64)> = (0..=40).map(|i| (i * 15_000, i as f64 * 15.0)).collect();
    let b: Vec<(i64, f64)> = (0..=40).map(|i| (i * 15_000, i as f64 * 30.0)).collect();
    VecSource::new(vec![
        s(&[("__name__", "req_total"), ("code", "200")], &a),
        s(&[("__name__", "req_total"), ("code", "500")], &b),
    ])
}

fn instant(src: &VecSource, q: &str, t_ms: i64) -> QueryValue {
    instant_query(src, q, t_ms, &QueryLimits::default(), None).expect("query")
}

#[test]
fn rate_of_a_steady_counter_is_its_slope() {
    let src = counter_source();
    let QueryValue::Vector(v) = instant(&src, "rate(req_total[1m])", 300_000) else {
        panic!("not a vector")
    };
    assert_eq!(v.len(), 2);
    let mut vals: Vec<f64> = v.iter().map(|x| x.2).collect();
    vals.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!((vals[0] - 1.0).abs() < 1e-9, "{vals:?}");
    assert!((vals[1] - 2.0).abs() < 1e-9, "{vals:?}");
    assert!(v.iter().all(|x| label(&x.0, METRIC_NAME).is_none()));
}

#[test]
fn range_query_steps_and_aggregation() {
    let src = counter_source();
    let QueryValue::Matrix(m) = range_query(
        &src,
        "sum by (code) (rate(req_total[1m])) * 60",
        120_000,
        300_000,
        60_000,
        &QueryLimits::default(),
        None,
    )
    .unwrap() else {
        panic!("not a matrix")
    };
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].labels, vec![("code".to_string(), "200".to_string())]);
    let ts: Vec<i64> = m[0].samples.iter().map(|s| s.t_ms).collect();
    assert_eq!(ts, vec![120_000, 180_000, 240_000, 300_000]);
    for x in &m[0].samples {
        assert!((x.v - 60.0).abs() < 1e-9);
    }
}

#[test]
fn lookback_and_stale_markers_end_a_series() {
    let src = VecSource::new(vec![s(
        &[("__name__", "up")],
        &[(0, 1.0), (60_000, stale_nan())],
    )]);
    assert!(matches!(instant(&src, "up", 30_000), QueryValue::Vector(v) if v.len() == 1));
    assert!(matches!(instant(&src, "up", 61_000), QueryValue::Vector(v) if v.is_empty()));
    let src = VecSource::new(vec![s(&[("__name__", "up")], &[(0, 1.0)])]);
    assert!(matches!(instant(&src, "up", 299_999), QueryValue::Vector(v) if v.len() == 1));
    assert!(matches!(instant(&src, "up", 300_000), QueryValue::Vector(v) if v.is_empty()));
}

#[test]
fn histogram_quantile_interpolates_within_the_bucket() {
    let src = VecSource::new(vec![
        s(&[("__name__", "h_bucket"), ("le", "1")], &[(0, 10.0)]),
        s(&[("__name__", "h_bucket"), ("le", "2")], &[(0, 20.0)]),
        s(&[("__name__", "h_bucket"), ("le", "+Inf")], &[(0, 20.0)]),
    ]);
    let QueryValue::Vector(v) = instant(&src, "histogram_quantile(0.75, h_bucket)", 0) else {
        panic!()
    };
    assert_eq!(v.len(), 1);
    assert!((v[0].2 - 1.5).abs() < 1e-9, "{v:?}");
}

#[test]
fn errors_have_prometheus_types() {
    let src = counter_source();
    let e = instant_query(&src, "sum(", 0, &QueryLimits::default(), None).unwrap_err();
    assert_eq!(e.error_type(), "bad_data");
    let limits = QueryLimits {
        max_samples: 10,
        ..QueryLimits::default()
    };
    let e = instant_query(&src, "req_total[10m]", 600_000, &limits, None).unwrap_err();
    assert_eq!(e.error_type(), "execution");
    assert!(e.to_string().contains("too many samples"), "{e}");
    let e = instant_query(
        &src,
        "req_total + on() req_total",
        300_000,
        &QueryLimits::default(),
        None,
    )
    .unwrap_err();
    assert_eq!(e.error_type(), "execution");
}

#[test]
fn vec_source_matchers_are_anchored() {
    let src = counter_source();
    let m = vec![LabelMatcher {
        name: "code".into(),
        op: MatchOp::Regex,
        value: "2.".into(),
    }];
    assert!(src.select(&m, 0, 1).unwrap().is_empty());
    let m = vec![LabelMatcher {
        name: "code".into(),
        op: MatchOp::Regex,
        value: "2..".into(),
    }];
    assert_eq!(src.select(&m, 0, 1).unwrap().len(), 1);
    let m = vec![LabelMatcher {
        name: "missing".into(),
        op: MatchOp::Equal,
        value: "".into(),
    }];
    assert_eq!(src.series(&m, 0, 1_000_000).unwrap().len(), 2);
}
