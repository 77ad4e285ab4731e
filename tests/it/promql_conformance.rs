//! Runs Prometheus's own PromQL test files (`promqltest` format: `load`,
//! `clear`, `eval instant|range`, `expect ...`) against our evaluator over a
//! `VecSource`, and reports per file how many eval cases pass. The suite
//! fails when a file's pass count drops below its floor in
//! `tests/promql_floor.txt`.
//!
//! Native-histogram cases are skipped and counted as skipped: a case whose
//! expected output holds a native histogram (`{{...}}`), that calls a
//! native-histogram-only function, or that names a series loaded with
//! native-histogram samples. Expected warnings/infos (`expect warn`,
//! `expect info`) are not checked (the engine produces no annotations);
//! `expect fail` checks that the query fails, not the message.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use tern::query::promql::{
    instant_query, range_query, stale_nan, QueryLimits, QueryValue, Sample, Series, VecSource,
};

use crate::support::conformance_dir;

type Labels = Vec<(String, String)>;

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    cases: usize,
    passed: usize,
    failed: usize,
    skipped: usize,
}

#[derive(Debug)]
enum Kind {
    Instant(i64),
    Range(i64, i64, i64),
}

#[derive(Debug)]
struct Case {
    line: usize,
    expr: String,
    kind: Kind,
    fail: bool,
    ordered: bool,
    string: Option<String>,
    range_vector: Option<(i64, i64, i64)>,
    results: Vec<String>,
}

const NATIVE_ONLY_FUNCS: &[&str] = &[
    "histogram_count",
    "histogram_sum",
    "histogram_avg",
    "histogram_fraction",
    "histogram_stddev",
    "histogram_stdvar",
];

#[test]
fn promql_test_files() {
    let Some(dir) = conformance_dir("promql_test_files") else {
        return;
    };
    let dir = dir.join("promql");
    let floors = read_floors();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read promql test dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".test"))
        .collect();
    names.sort();
    let only = std::env::var("PROMQL_TEST_FILE").ok();
    let verbose = std::env::var("PROMQL_TEST_VERBOSE").is_ok();
    let mut report = String::new();
    let mut failures = String::new();
    let mut below = Vec::new();
    let mut total = Tally::default();
    let _ = writeln!(
        report,
        "{:<28} {:>6} {:>6} {:>6} {:>7} {:>6}",
        "file", "cases", "passed", "failed", "skipped", "floor"
    );
    for name in &names {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(name)).expect("read test file");
        let t = run_file(name, &text, &mut failures, verbose);
        let floor = floors.get(name.as_str()).copied().unwrap_or(0);
        let _ = writeln!(
            report,
            "{:<28} {:>6} {:>6} {:>6} {:>7} {:>6}",
            name, t.cases, t.passed, t.failed, t.skipped, floor
        );
        if t.passed < floor {
            below.push(format!("{name}: {} passed < floor {floor}", t.passed));
        }
        total.cases += t.cases;
        total.passed += t.passed;
        total.failed += t.failed;
        total.skipped += t.skipped;
    }
    let _ = writeln!(
        report,
        "{:<28} {:>6} {:>6} {:>6} {:>7}",
        "TOTAL", total.cases, total.passed, total.failed, total.skipped
    );
    eprintln!("{failures}");
    eprintln!("{report}");
    assert!(below.is_empty(), "pass count below floor: {below:?}");
}

fn read_floors() -> BTreeMap<String, usize> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promql_floor.txt");
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn is_command(l: &str) -> bool {
    l.starts_with("load") || l.starts_with("eval") || l.starts_with("clear")
}

fn run_file(name: &str, text: &str, failures: &mut String, verbose: bool) -> Tally {
    let lines: Vec<&str> = text.lines().collect();
    let mut tally = Tally::default();
    let mut series: Vec<Series> = Vec::new();
    let mut hist_names: HashSet<String> = HashSet::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        // The block: following lines up to a blank line or the next command.
        let mut block = Vec::new();
        let mut j = i + 1;
        while j < lines.len() {
            let raw = lines[j];
            let l = raw.trim();
            if l.is_empty() || (!raw.starts_with([' ', '\t']) && is_command(l)) {
                break;
            }
            if !l.starts_with('#') {
                block.push(l);
            }
            j += 1;
        }
        let header_line = i + 1;
        i = j;
        if line == "clear" {
            series.clear();
            hist_names.clear();
            continue;
        }
        if let Some(rest) = line.strip_prefix("load") {
            let nhcb = rest.starts_with("_with_nhcb");
            let interval = rest.trim_start_matches("_with_nhcb").trim();
            let Some(interval) = parse_time(interval) else {
                continue;
            };
            for l in &block {
                let Some((labels, vals, hist)) = parse_series_line(l) else {
                    continue;
                };
                let metric = name_of(&labels);
                if hist {
                    hist_names.insert(metric);
                    continue;
                }
                if nhcb {
                    for suffix in ["_bucket", "_count", "_sum"] {
                        if let Some(base) = metric.strip_suffix(suffix) {
                            hist_names.insert(base.to_string());
                        }
                    }
                }
                let samples = vals
                    .iter()
                    .enumerate()
                    .filter_map(|(k, v)| {
                        v.map(|v| Sample {
                            t_ms: k as i64 * interval,
                            v,
                        })
                    })
                    .collect();
                series.push(Series { labels, samples });
            }
            continue;
        }
        if line.starts_with("eval") {
            let Some(case) = parse_case(header_line, line, &block) else {
                tally.cases += 1;
                tally.failed += 1;
                let _ = writeln!(failures, "{name}:{header_line}: cannot parse case: {line}");
                continue;
            };
            tally.cases += 1;
            if is_native_case(&case, &block, &hist_names) {
                tally.skipped += 1;
                continue;
            }
            let src = VecSource::new(series.clone());
            match check_case(&src, &case) {
                Ok(()) => tally.passed += 1,
                Err(why) => {
                    tally.failed += 1;
                    if verbose {
                        let _ = writeln!(
                            failures,
                            "{name}:{}: FAIL {}\n    {why}",
                            case.line, case.expr
                        );
                    } else {
                        let _ = writeln!(failures, "{name}:{}: FAIL {}", case.line, case.expr);
                    }
                }
            }
        }
    }
    tally
}

fn name_of(labels: &Labels) -> String {
    labels
        .iter()
        .find(|(k, _)| k == "__name__")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn is_native_case(case: &Case, block: &[&str], hist: &HashSet<String>) -> bool {
    if block.iter().any(|l| l.contains("{{")) {
        return true;
    }
    if NATIVE_ONLY_FUNCS.iter().any(|f| case.expr.contains(f)) {
        return true;
    }
    hist.iter().any(|h| contains_word(&case.expr, h))
}

fn contains_word(s: &str, w: &str) -> bool {
    if w.is_empty() {
        return false;
    }
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut start = 0;
    while let Some(p) = s[start..].find(w) {
        let a = start + p;
        let b = a + w.len();
        let before = s[..a].chars().next_back().is_some_and(is_ident);
        let after = s[b..].chars().next().is_some_and(is_ident);
        if !before && !after {
            return true;
        }
        start = a + 1;
    }
    false
}

fn parse_case(line_no: usize, header: &str, block: &[&str]) -> Option<Case> {
    let (cmd, rest) = header.split_once(char::is_whitespace)?;
    let modifier = cmd.strip_prefix("eval").unwrap_or("");
    let mut fail = modifier == "_fail";
    let mut ordered = modifier == "_ordered";
    let rest = rest.trim();
    let (kind, expr) = if let Some(r) = rest.strip_prefix("instant") {
        let r = r.trim();
        if let Some(r) = r.strip_prefix("at ") {
            let (t, e) = r.trim().split_once(char::is_whitespace)?;
            (Kind::Instant(parse_time(t)?), e.trim())
        } else {
            (Kind::Instant(0), r)
        }
    } else if let Some(r) = rest.strip_prefix("range") {
        let r = r.trim().strip_prefix("from")?.trim();
        let (from, r) = r.split_once(" to ")?;
        let (to, r) = r.trim().split_once(" step ")?;
        let (step, e) = r.trim().split_once(char::is_whitespace)?;
        (
            Kind::Range(
                parse_time(from.trim())?,
                parse_time(to.trim())?,
                parse_time(step)?,
            ),
            e.trim(),
        )
    } else {
        return None;
    };
    let mut case = Case {
        line: line_no,
        expr: expr.to_string(),
        kind,
        fail,
        ordered,
        string: None,
        range_vector: None,
        results: Vec::new(),
    };
    for l in block {
        if let Some(e) = l.strip_prefix("expect ") {
            let e = e.trim();
            if e.starts_with("fail") {
                fail = true;
            } else if e == "ordered" {
                ordered = true;
            } else if let Some(s) = e.strip_prefix("string ") {
                let s = s.trim();
                case.string = Some(s[1..s.len().saturating_sub(1).max(1)].to_string());
            } else if let Some(r) = e.strip_prefix("range vector from ") {
                let (from, r) = r.split_once(" to ")?;
                let (to, step) = r.split_once(" step ")?;
                case.range_vector = Some((
                    parse_time(from.trim())?,
                    parse_time(to.trim())?,
                    parse_time(step.trim())?,
                ));
            }
            continue;
        }
        case.results.push(l.to_string());
    }
    case.fail = fail;
    case.ordered = ordered;
    Some(case)
}

/// `50m`, `1h30m`, `10s`, `0`, or plain (float) seconds, in milliseconds.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return Some((v * 1000.0).round() as i64);
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    let b = s.as_bytes();
    let mut k = 0;
    while k < b.len() {
        let c = b[k] as char;
        if c.is_ascii_digit() {
            num.push(c);
            k += 1;
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        let unit_ms = if s[k..].starts_with("ms") {
            k += 2;
            1
        } else {
            k += 1;
            match c {
                's' => 1000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                'w' => 7 * 86_400_000,
                'y' => 365 * 86_400_000,
                _ => return None,
            }
        };
        total += n * unit_ms;
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            if let Some(h) = s.strip_prefix("0x") {
                return i64::from_str_radix(h, 16).ok().map(|v| v as f64);
            }
            s.parse().ok()
        }
    }
}

/// Splits a series line into labels and the values part.
fn split_series(l: &str) -> Option<(Labels, &str)> {
    let l = l.trim();
    let (metric, rest) = match l.find('{') {
        Some(open) if !l[..open].contains(char::is_whitespace) => {
            let bytes = l.as_bytes();
            let mut in_q = false;
            let mut esc = false;
            let mut close = None;
            for (k, &c) in bytes.iter().enumerate().skip(open) {
                if in_q {
                    if esc {
                        esc = false;
                    } else if c == b'\\' {
                        esc = true;
                    } else if c == b'"' {
                        in_q = false;
                    }
                } else if c == b'"' {
                    in_q = true;
                } else if c == b'}' {
                    close = Some(k);
                    break;
                }
            }
            let close = close?;
            (&l[..=close], &l[close + 1..])
        }
        _ => match l.split_once(char::is_whitespace) {
            Some((m, r)) => (m, r),
            None => (l, ""),
        },
    };
    Some((parse_labels(metric)?, rest.trim()))
}

fn parse_labels(metric: &str) -> Option<Labels> {
    if metric == "{}" {
        return Some(Vec::new());
    }
    let expr = promql_parser::parser::parse(metric).ok()?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return None;
    };
    let mut labels: Labels = vs
        .matchers
        .matchers
        .iter()
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    if let Some(n) = vs.name {
        labels.push(("__name__".to_string(), n));
    }
    labels.sort();
    Some(labels)
}

/// A series line: labels, values (None = missing) and whether it holds
/// native histograms.
fn parse_series_line(l: &str) -> Option<(Labels, Vec<Option<f64>>, bool)> {
    let (labels, rest) = split_series(l)?;
    if rest.contains("{{") {
        return Some((labels, Vec::new(), true));
    }
    Some((labels, parse_values(rest)?, false))
}

fn parse_values(rest: &str) -> Option<Vec<Option<f64>>> {
    let mut out = Vec::new();
    for tok in rest.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().ok()?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if tok == "stale" {
            out.push(Some(stale_nan()));
            continue;
        }
        // a, a+bxN, a-bxN, axN
        if let Some(xpos) = tok.rfind('x') {
            let times = &tok[xpos + 1..];
            if !times.is_empty() && times.chars().all(|c| c.is_ascii_digit()) {
                let n: usize = times.parse().ok()?;
                let head = &tok[..xpos];
                let bytes = head.as_bytes();
                let mut op = None;
                for k in 1..bytes.len() {
                    if (bytes[k] == b'+' || bytes[k] == b'-')
                        && !matches!(bytes[k - 1], b'e' | b'E')
                    {
                        op = Some(k);
                    }
                }
                let (a, b) = match op {
                    Some(k) => {
                        let a = parse_float(&head[..k])?;
                        let b = parse_float(&head[k + 1..])?;
                        (a, if bytes[k] == b'-' { -b } else { b })
                    }
                    None => {
                        if head == "stale" {
                            out.extend(std::iter::repeat_n(Some(stale_nan()), n + 1));
                            continue;
                        }
                        (parse_float(head)?, 0.0)
                    }
                };
                let mut v = a;
                for _ in 0..=n {
                    out.push(Some(v));
                    v += b;
                }
                continue;
            }
        }
        out.push(Some(parse_float(tok)?));
    }
    Some(out)
}

fn almost_equal(a: f64, b: f64) -> bool {
    const EPS: f64 = 1e-6;
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPS * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPS
}

fn fmt_labels(l: &Labels) -> String {
    let v: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", v.join(","))
}

fn check_case(src: &VecSource, case: &Case) -> Result<(), String> {
    let limits = QueryLimits::default();
    let res = match case.kind {
        Kind::Instant(t) => instant_query(src, &case.expr, t, &limits, None),
        Kind::Range(s, e, st) => range_query(src, &case.expr, s, e, st, &limits, None),
    };
    let res = match (res, case.fail) {
        (Err(_), true) => return Ok(()),
        (Ok(v), true) => return Err(format!("expected failure, got {v:?}")),
        (Err(e), false) => return Err(format!("error: {e}")),
        (Ok(v), false) => v,
    };
    if let Some(s) = &case.string {
        return match res {
            QueryValue::String(_, got) if &got == s => Ok(()),
            other => Err(format!("expected string {s:?}, got {other:?}")),
        };
    }
    match (&case.kind, res) {
        (Kind::Instant(_), QueryValue::Scalar(_, v)) => {
            let want = case
                .results
                .first()
                .and_then(|l| parse_float(l.trim()))
                .ok_or_else(|| format!("got scalar {v}, expected {:?}", case.results))?;
            if case.results.len() == 1 && almost_equal(want, v) {
                Ok(())
            } else {
                Err(format!("expected scalar {want}, got {v}"))
            }
        }
        (Kind::Instant(_), QueryValue::Vector(got)) => {
            let mut want = Vec::new();
            for l in &case.results {
                let (labels, rest) = split_series(l).ok_or(format!("bad result line {l}"))?;
                let vals = parse_values(rest).ok_or(format!("bad result line {l}"))?;
                let [Some(v)] = vals.as_slice() else {
                    return Err(format!("bad instant result line {l}"));
                };
                want.push((labels, *v));
            }
            if want.len() != got.len() {
                return Err(format!(
                    "expected {} series, got {}: {:?}",
                    want.len(),
                    got.len(),
                    got.iter()
                        .map(|g| format!("{} {}", fmt_labels(&g.0), g.2))
                        .collect::<Vec<_>>()
                ));
            }
            for (k, (wl, wv)) in want.iter().enumerate() {
                let found = if case.ordered {
                    (got[k].0 == *wl).then_some(&got[k])
                } else {
                    got.iter().find(|g| g.0 == *wl)
                };
                match found {
                    Some(g) if almost_equal(g.2, *wv) => {}
                    Some(g) => {
                        return Err(format!("{}: expected {wv}, got {}", fmt_labels(wl), g.2))
                    }
                    None => {
                        return Err(format!(
                            "missing {} (ordered={}) in {:?}",
                            fmt_labels(wl),
                            case.ordered,
                            got.iter().map(|g| fmt_labels(&g.0)).collect::<Vec<_>>()
                        ))
                    }
                }
            }
            Ok(())
        }
        (kind, QueryValue::Matrix(got)) => {
            let (start, step) = match (kind, case.range_vector) {
                (Kind::Range(s, _, st), _) => (*s, *st),
                (Kind::Instant(_), Some((s, _, st))) => (s, st),
                (Kind::Instant(_), None) => {
                    if case.results.is_empty() && got.is_empty() {
                        return Ok(());
                    }
                    return Err("range vector result without `expect range vector`".into());
                }
            };
            let mut want = Vec::new();
            for l in &case.results {
                let (labels, rest) = split_series(l).ok_or(format!("bad result line {l}"))?;
                let vals = parse_values(rest).ok_or(format!("bad result line {l}"))?;
                let samples: Vec<(i64, f64)> = vals
                    .iter()
                    .enumerate()
                    .filter_map(|(k, v)| v.map(|v| (start + k as i64 * step, v)))
                    .collect();
                want.push((labels, samples));
            }
            want.retain(|w| !w.1.is_empty());
            if want.len() != got.len() {
                return Err(format!(
                    "expected {} series, got {}: {:?}",
                    want.len(),
                    got.len(),
                    got.iter()
                        .map(|g| fmt_labels(&g.labels))
                        .collect::<Vec<_>>()
                ));
            }
            for (wl, ws) in &want {
                let g = got
                    .iter()
                    .find(|g| g.labels == *wl)
                    .ok_or(format!("missing series {}", fmt_labels(wl)))?;
                let gs: Vec<(i64, f64)> = g.samples.iter().map(|s| (s.t_ms, s.v)).collect();
                let same = gs.len() == ws.len()
                    && gs
                        .iter()
                        .zip(ws)
                        .all(|(a, b)| a.0 == b.0 && almost_equal(a.1, b.1));
                if !same {
                    return Err(format!("{}: expected {ws:?}, got {gs:?}", fmt_labels(wl)));
                }
            }
            Ok(())
        }
        (_, other) => Err(format!("unexpected result {other:?}")),
    }
}
