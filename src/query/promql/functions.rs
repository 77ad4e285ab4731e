//! PromQL functions over the evaluator's values.

use std::collections::HashMap;

use promql_parser::parser::{Call, Expr};

use super::eval::{
    cmp_asc_nan_last, dedupe, desc_nan_last, drop_name, kahan_sum, mean, quantile, set_label,
    variance, Ctx, Grid, Sv, Val, Windows, DUP_LABELSET,
};
use crate::model::time::{civil_from_days, days_from_civil};

use super::{label, LabelMatcher, Labels, MatchOp, PromError, Sample, Series, METRIC_NAME};

pub(crate) fn call(ctx: &Ctx<'_>, c: &Call, g: Grid) -> Result<Val, PromError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|b| b.as_ref()).collect();
    match name {
        "time" => Ok(Val::Scalar(
            (0..g.n).map(|i| g.ts(i) as f64 / 1000.0).collect(),
        )),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; g.n])),
        "vector" => {
            let s = scalar_arg(ctx, args.first(), g)?;
            Ok(Val::Vector(vec![Sv {
                labels: Vec::new(),
                vals: s.into_iter().map(Some).collect(),
            }]))
        }
        "scalar" => {
            let v = vector_arg(ctx, args.first(), g)?;
            Ok(Val::Scalar(
                (0..g.n)
                    .map(|i| {
                        let mut it = v.iter().filter_map(|s| s.vals[i]);
                        match (it.next(), it.next()) {
                            (Some(x), None) => x,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let mut inner = args.first().copied();
            while let Some(Expr::Paren(p)) = inner {
                inner = Some(p.expr.as_ref());
            }
            let svs = match inner {
                Some(Expr::VectorSelector(vs)) => ctx.select_instant(vs, g, true)?,
                _ => {
                    let v = vector_arg(ctx, args.first(), g)?;
                    v.into_iter()
                        .map(|s| Sv {
                            labels: s.labels,
                            vals: s
                                .vals
                                .iter()
                                .enumerate()
                                .map(|(i, x)| x.map(|_| g.ts(i) as f64 / 1000.0))
                                .collect(),
                        })
                        .collect()
                }
            };
            map_vector(svs, true, |x| x)
        }
        "abs" => simple(ctx, &args, g, f64::abs),
        "ceil" => simple(ctx, &args, g, f64::ceil),
        "floor" => simple(ctx, &args, g, f64::floor),
        "exp" => simple(ctx, &args, g, f64::exp),
        "sqrt" => simple(ctx, &args, g, f64::sqrt),
        "ln" => simple(ctx, &args, g, f64::ln),
        "log2" => simple(ctx, &args, g, f64::log2),
        "log10" => simple(ctx, &args, g, f64::log10),
        "sin" => simple(ctx, &args, g, f64::sin),
        "cos" => simple(ctx, &args, g, f64::cos),
        "tan" => simple(ctx, &args, g, f64::tan),
        "asin" => simple(ctx, &args, g, f64::asin),
        "acos" => simple(ctx, &args, g, f64::acos),
        "atan" => simple(ctx, &args, g, f64::atan),
        "sinh" => simple(ctx, &args, g, f64::sinh),
        "cosh" => simple(ctx, &args, g, f64::cosh),
        "tanh" => simple(ctx, &args, g, f64::tanh),
        "asinh" => simple(ctx, &args, g, f64::asinh),
        "acosh" => simple(ctx, &args, g, f64::acosh),
        "atanh" => simple(ctx, &args, g, f64::atanh),
        "deg" => simple(ctx, &args, g, |x| x * 180.0 / std::f64::consts::PI),
        "rad" => simple(ctx, &args, g, |x| x * std::f64::consts::PI / 180.0),
        "sgn" => simple(ctx, &args, g, |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }),
        "round" => {
            let v = vector_arg(ctx, args.first(), g)?;
            let to = match args.get(1) {
                Some(_) => scalar_arg(ctx, args.get(1), g)?,
                None => vec![1.0; g.n],
            };
            map_vector_i(v, true, |i, x| {
                let inv = 1.0 / to[i];
                (x * inv + 0.5).floor() / inv
            })
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = vector_arg(ctx, args.first(), g)?;
            let (lo, hi) = match name {
                "clamp" => (
                    scalar_arg(ctx, args.get(1), g)?,
                    scalar_arg(ctx, args.get(2), g)?,
                ),
                "clamp_min" => (scalar_arg(ctx, args.get(1), g)?, vec![f64::INFINITY; g.n]),
                _ => (
                    vec![f64::NEG_INFINITY; g.n],
                    scalar_arg(ctx, args.get(1), g)?,
                ),
            };
            let out = v
                .into_iter()
                .map(|s| Sv {
                    labels: drop_name(&s.labels),
                    vals: s
                        .vals
                        .iter()
                        .enumerate()
                        .map(|(i, x)| {
                            let x = (*x)?;
                            if hi[i] < lo[i] {
                                return None;
                            }
                            if x.is_nan() || lo[i].is_nan() || hi[i].is_nan() {
                                return Some(f64::NAN);
                            }
                            Some(x.max(lo[i]).min(hi[i]))
                        })
                        .collect(),
                })
                .collect();
            Ok(Val::Vector(dedupe(out, DUP_LABELSET)?))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let v = match args.first() {
                Some(_) => vector_arg(ctx, args.first(), g)?,
                None => vec![Sv {
                    labels: Vec::new(),
                    vals: (0..g.n).map(|i| Some(g.ts(i) as f64 / 1000.0)).collect(),
                }],
            };
            map_vector(v, true, |x| date_part(name, x))
        }
        "absent" => {
            let v = vector_arg(ctx, args.first(), g)?;
            let labels = absent_labels(args.first().copied());
            let vals: Vec<Option<f64>> = (0..g.n)
                .map(|i| (!v.iter().any(|s| s.vals[i].is_some())).then_some(1.0))
                .collect();
            Ok(Val::Vector(nonempty(vec![Sv { labels, vals }])))
        }
        "absent_over_time" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            let labels = absent_labels(args.first().copied());
            let vals: Vec<Option<f64>> = (0..g.n)
                .map(|i| (!w.series.iter().any(|s| !w.window(s, i).is_empty())).then_some(1.0))
                .collect();
            Ok(Val::Vector(nonempty(vec![Sv { labels, vals }])))
        }
        "sort" | "sort_desc" => {
            let mut v = vector_arg(ctx, args.first(), g)?;
            if g.n == 1 {
                let key = |s: &Sv| s.vals[0].unwrap_or(f64::NAN);
                if name == "sort" {
                    v.sort_by(|a, b| cmp_asc_nan_last(key(a), key(b)));
                } else {
                    v.sort_by(|a, b| desc_nan_last(key(a), key(b)));
                }
            }
            Ok(Val::Vector(v))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let mut v = vector_arg(ctx, args.first(), g)?;
            let mut names = Vec::new();
            for a in &args[1..] {
                names.push(string_arg(ctx, Some(a), g)?);
            }
            v.sort_by(|a, b| {
                let mut ord = std::cmp::Ordering::Equal;
                for n in &names {
                    let x = label(&a.labels, n).unwrap_or("");
                    let y = label(&b.labels, n).unwrap_or("");
                    ord = natural_cmp(x, y);
                    if ord != std::cmp::Ordering::Equal {
                        break;
                    }
                }
                if ord == std::cmp::Ordering::Equal {
                    ord = a.labels.cmp(&b.labels);
                }
                if name == "sort_by_label_desc" {
                    ord.reverse()
                } else {
                    ord
                }
            });
            Ok(Val::Vector(v))
        }
        "label_replace" => {
            let v = vector_arg(ctx, args.first(), g)?;
            let dst = string_arg(ctx, args.get(1), g)?;
            let repl = string_arg(ctx, args.get(2), g)?;
            let src = string_arg(ctx, args.get(3), g)?;
            let re_s = string_arg(ctx, args.get(4), g)?;
            let re = ctx.regex.get(&re_s).map_err(|_| {
                PromError::BadData(format!(
                    "invalid regular expression in label_replace(): {re_s}"
                ))
            })?;
            if dst.is_empty() {
                return Err(PromError::BadData(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let out = v
                .into_iter()
                .map(|mut s| {
                    let sv = label(&s.labels, &src).unwrap_or("").to_string();
                    if let Some(caps) = re.captures(&sv) {
                        let mut res = String::new();
                        caps.expand(&repl, &mut res);
                        set_label(&mut s.labels, &dst, &res);
                    }
                    s
                })
                .collect();
            Ok(Val::Vector(dedupe(out, DUP_LABELSET)?))
        }
        "label_join" => {
            let v = vector_arg(ctx, args.first(), g)?;
            let dst = string_arg(ctx, args.get(1), g)?;
            let sep = string_arg(ctx, args.get(2), g)?;
            let mut srcs = Vec::new();
            for a in args.iter().skip(3) {
                srcs.push(string_arg(ctx, Some(a), g)?);
            }
            if dst.is_empty() {
                return Err(PromError::BadData(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let out = v
                .into_iter()
                .map(|mut s| {
                    let joined: Vec<&str> = srcs
                        .iter()
                        .map(|n| label(&s.labels, n).unwrap_or(""))
                        .collect();
                    let joined = joined.join(&sep);
                    set_label(&mut s.labels, &dst, &joined);
                    s
                })
                .collect();
            Ok(Val::Vector(dedupe(out, DUP_LABELSET)?))
        }
        "histogram_quantile" => {
            let q = scalar_arg(ctx, args.first(), g)?;
            let v = vector_arg(ctx, args.get(1), g)?;
            histogram_quantile(&q, v, g)
        }
        "rate" | "increase" | "delta" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            let counter = name != "delta";
            let is_rate = name == "rate";
            // Counter resets per series as prefix counts, so a window with
            // none (nearly all) skips the reset walk.
            over_windows_prep(
                ctx,
                &w,
                g,
                false,
                |s| counter.then(|| reset_counts(&s.samples)),
                |resets, win, lo, i| {
                    let has_resets = match resets {
                        Some(r) if !win.is_empty() => r[lo + win.len() - 1] != r[lo],
                        _ => false,
                    };
                    let (start, end) = (w.ends[i] - w.range, w.ends[i]);
                    extrapolated_rate(win, counter, has_resets, is_rate, start, end)
                },
            )
        }
        "irate" | "idelta" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            let is_rate = name == "irate";
            over_windows(ctx, &w, g, false, |win, _| {
                if win.len() < 2 {
                    return None;
                }
                let (a, b) = (win[win.len() - 2], win[win.len() - 1]);
                let dv = if is_rate && b.v < a.v { b.v } else { b.v - a.v };
                if is_rate {
                    let dt = (b.t_ms - a.t_ms) as f64 / 1000.0;
                    if dt == 0.0 {
                        return None;
                    }
                    Some(dv / dt)
                } else {
                    Some(dv)
                }
            })
        }
        "deriv" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            over_windows(ctx, &w, g, false, |win, _| {
                if win.len() < 2 {
                    return None;
                }
                Some(linear_regression(win, win[0].t_ms).0)
            })
        }
        "predict_linear" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            let d = scalar_arg(ctx, args.get(1), g)?;
            over_windows(ctx, &w, g, false, |win, i| {
                if win.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(win, g.ts(i));
                Some(intercept + slope * d[i])
            })
        }
        "resets" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            over_windows(ctx, &w, g, false, |win, _| {
                if win.is_empty() {
                    return None;
                }
                Some(win.windows(2).filter(|p| p[1].v < p[0].v).count() as f64)
            })
        }
        "changes" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            over_windows(ctx, &w, g, false, |win, _| {
                if win.is_empty() {
                    return None;
                }
                Some(
                    win.windows(2)
                        .filter(|p| !(p[1].v == p[0].v || (p[1].v.is_nan() && p[0].v.is_nan())))
                        .count() as f64,
                )
            })
        }
        "avg_over_time"
        | "sum_over_time"
        | "count_over_time"
        | "min_over_time"
        | "max_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "last_over_time"
        | "first_over_time"
        | "present_over_time"
        | "mad_over_time"
        | "ts_of_max_over_time"
        | "ts_of_min_over_time"
        | "ts_of_last_over_time"
        | "ts_of_first_over_time" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            let keep_name = name == "last_over_time" || name == "first_over_time";
            let mut buf: Vec<f64> = Vec::new();
            over_windows_mut(ctx, &w, g, keep_name, |win, _| {
                if win.is_empty() {
                    return None;
                }
                buf.clear();
                buf.extend(win.iter().map(|s| s.v));
                Some(match name {
                    "avg_over_time" => mean(&buf),
                    "sum_over_time" => kahan_sum(&buf),
                    "count_over_time" => buf.len() as f64,
                    "min_over_time" => {
                        buf.iter().copied().fold(
                            f64::NAN,
                            |m, v| {
                                if m.is_nan() || v < m {
                                    v
                                } else {
                                    m
                                }
                            },
                        )
                    }
                    "max_over_time" => {
                        buf.iter().copied().fold(
                            f64::NAN,
                            |m, v| {
                                if m.is_nan() || v > m {
                                    v
                                } else {
                                    m
                                }
                            },
                        )
                    }
                    "stddev_over_time" => variance(&buf).sqrt(),
                    "stdvar_over_time" => variance(&buf),
                    "last_over_time" => buf[buf.len() - 1],
                    "first_over_time" => buf[0],
                    "present_over_time" => 1.0,
                    "mad_over_time" => {
                        let med = quantile(0.5, &mut buf);
                        let mut dev: Vec<f64> = buf.iter().map(|x| (x - med).abs()).collect();
                        quantile(0.5, &mut dev)
                    }
                    "ts_of_last_over_time" => win[win.len() - 1].t_ms as f64 / 1000.0,
                    "ts_of_first_over_time" => win[0].t_ms as f64 / 1000.0,
                    "ts_of_max_over_time" | "ts_of_min_over_time" => {
                        let max = name == "ts_of_max_over_time";
                        let mut best = win[0];
                        for s in &win[1..] {
                            if best.v.is_nan() || (max && s.v >= best.v) || (!max && s.v <= best.v)
                            {
                                best = *s;
                            }
                        }
                        best.t_ms as f64 / 1000.0
                    }
                    _ => f64::NAN,
                })
            })
        }
        "quantile_over_time" => {
            let q = scalar_arg(ctx, args.first(), g)?;
            let w = matrix_arg(ctx, args.get(1), g)?;
            let mut buf: Vec<f64> = Vec::new();
            over_windows_mut(ctx, &w, g, false, |win, i| {
                if win.is_empty() {
                    return None;
                }
                buf.clear();
                buf.extend(win.iter().map(|s| s.v));
                Some(quantile(q[i], &mut buf))
            })
        }
        "holt_winters" | "double_exponential_smoothing" => {
            let w = matrix_arg(ctx, args.first(), g)?;
            let sf = scalar_arg(ctx, args.get(1), g)?;
            let tf = scalar_arg(ctx, args.get(2), g)?;
            for i in 0..g.n {
                if !(sf[i] > 0.0 && sf[i] < 1.0) {
                    return Err(PromError::Execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
                        sf[i]
                    )));
                }
                if !(tf[i] > 0.0 && tf[i] < 1.0) {
                    return Err(PromError::Execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {}",
                        tf[i]
                    )));
                }
            }
            over_windows(ctx, &w, g, false, |win, i| {
                if win.len() < 2 {
                    return None;
                }
                let (sf, tf) = (sf[i], tf[i]);
                let (mut s0, mut s1, mut b) = (0.0, win[0].v, win[1].v - win[0].v);
                for (k, x) in win.iter().enumerate().skip(1) {
                    if k > 1 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let next = sf * x.v + (1.0 - sf) * (s1 + b);
                    s0 = s1;
                    s1 = next;
                }
                Some(s1)
            })
        }
        other => Err(PromError::BadData(format!(
            "function {other:?} is not supported"
        ))),
    }
}

fn nonempty(v: Vec<Sv>) -> Vec<Sv> {
    v.into_iter()
        .filter(|s| s.vals.iter().any(Option::is_some))
        .collect()
}

/// Labels of `absent()`'s result: the selector's equality matchers, except
/// `__name__` and names matched more than once.
fn absent_labels(arg: Option<&Expr>) -> Labels {
    let mut e = arg;
    while let Some(Expr::Paren(p)) = e {
        e = Some(p.expr.as_ref());
    }
    let vs = match e {
        Some(Expr::VectorSelector(vs)) => vs,
        Some(Expr::MatrixSelector(ms)) => &ms.vs,
        _ => return Vec::new(),
    };
    let groups = super::selector_matchers(vs);
    if groups.len() != 1 {
        return Vec::new();
    }
    let ms: &[LabelMatcher] = &groups[0];
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in ms {
        *counts.entry(m.name.as_str()).or_default() += 1;
    }
    let mut l: Labels = ms
        .iter()
        .filter(|m| m.op == MatchOp::Equal && m.name != METRIC_NAME && counts[m.name.as_str()] == 1)
        .map(|m| (m.name.clone(), m.value.clone()))
        .collect();
    l.sort();
    l
}

fn scalar_arg(ctx: &Ctx<'_>, e: Option<&&Expr>, g: Grid) -> Result<Vec<f64>, PromError> {
    let e = e.ok_or_else(|| PromError::BadData("missing function argument".into()))?;
    match ctx.eval(e, g)? {
        Val::Scalar(v) => Ok(v),
        other => Err(PromError::BadData(format!(
            "expected scalar argument, got {}",
            other.kind()
        ))),
    }
}

fn string_arg(ctx: &Ctx<'_>, e: Option<&&Expr>, g: Grid) -> Result<String, PromError> {
    let e = e.ok_or_else(|| PromError::BadData("missing function argument".into()))?;
    match ctx.eval(e, g)? {
        Val::Str(s) => Ok(s),
        other => Err(PromError::BadData(format!(
            "expected string argument, got {}",
            other.kind()
        ))),
    }
}

fn vector_arg(ctx: &Ctx<'_>, e: Option<&&Expr>, g: Grid) -> Result<Vec<Sv>, PromError> {
    let e = e.ok_or_else(|| PromError::BadData("missing function argument".into()))?;
    match ctx.eval(e, g)? {
        Val::Vector(v) => Ok(v),
        other => Err(PromError::BadData(format!(
            "expected instant vector argument, got {}",
            other.kind()
        ))),
    }
}

fn matrix_arg(ctx: &Ctx<'_>, e: Option<&&Expr>, g: Grid) -> Result<Windows, PromError> {
    let e = e.ok_or_else(|| PromError::BadData("missing function argument".into()))?;
    match ctx.eval(e, g)? {
        Val::Matrix(w) => Ok(w),
        other => Err(PromError::BadData(format!(
            "expected range vector argument, got {}",
            other.kind()
        ))),
    }
}

fn simple(ctx: &Ctx<'_>, args: &[&Expr], g: Grid, f: fn(f64) -> f64) -> Result<Val, PromError> {
    let v = vector_arg(ctx, args.first(), g)?;
    map_vector(v, true, f)
}

fn map_vector(v: Vec<Sv>, drop: bool, f: impl Fn(f64) -> f64) -> Result<Val, PromError> {
    map_vector_i(v, drop, |_, x| f(x))
}

fn map_vector_i(v: Vec<Sv>, drop: bool, f: impl Fn(usize, f64) -> f64) -> Result<Val, PromError> {
    let out = v
        .into_iter()
        .map(|s| Sv {
            labels: if drop { drop_name(&s.labels) } else { s.labels },
            vals: s
                .vals
                .iter()
                .enumerate()
                .map(|(i, x)| x.map(|x| f(i, x)))
                .collect(),
        })
        .collect();
    Ok(Val::Vector(if drop {
        dedupe(out, DUP_LABELSET)?
    } else {
        out
    }))
}

fn over_windows(
    ctx: &Ctx<'_>,
    w: &Windows,
    g: Grid,
    keep_name: bool,
    f: impl Fn(&[Sample], usize) -> Option<f64> + Sync,
) -> Result<Val, PromError> {
    over_windows_prep(ctx, w, g, keep_name, |_| (), |_, win, _, i| f(win, i))
}

/// Applies `f` to every series' window at every step, one series after
/// the other (for stateful `f`).
fn over_windows_mut(
    ctx: &Ctx<'_>,
    w: &Windows,
    g: Grid,
    keep_name: bool,
    mut f: impl FnMut(&[Sample], usize) -> Option<f64>,
) -> Result<Val, PromError> {
    ctx.add_samples(w.series.len() * g.n)?;
    let mut out = Vec::with_capacity(w.series.len());
    for s in &w.series {
        ctx.check()?;
        out.extend(series_windows(w, s, g, keep_name, |win, _, i| f(win, i)));
    }
    finish_windows(out, keep_name)
}

/// How many counter resets (a value below the one before) there are up to
/// and including each sample.
fn reset_counts(s: &[Sample]) -> Vec<u32> {
    let mut n = 0u32;
    let mut prev = f64::NEG_INFINITY;
    s.iter()
        .map(|x| {
            if x.v < prev {
                n += 1;
            }
            prev = x.v;
            n
        })
        .collect()
}

/// Series × steps above which windows are evaluated on several threads.
const PARALLEL_WINDOWS: usize = 200_000;

/// Applies `f(prep(series), window, index of its first sample, step)` to
/// every series' window at every step; large inputs are split over the
/// available cores.
fn over_windows_prep<P>(
    ctx: &Ctx<'_>,
    w: &Windows,
    g: Grid,
    keep_name: bool,
    prep: impl Fn(&Series) -> P + Sync,
    f: impl Fn(&P, &[Sample], usize, usize) -> Option<f64> + Sync,
) -> Result<Val, PromError> {
    ctx.add_samples(w.series.len() * g.n)?;
    let one = |s: &Series| {
        let p = prep(s);
        series_windows(w, s, g, keep_name, |win, lo, i| f(&p, win, lo, i))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let out: Vec<Sv> = if threads > 1 && w.series.len() * g.n >= PARALLEL_WINDOWS {
        ctx.check()?;
        let chunk = w.series.len().div_ceil(threads);
        let parts: Vec<Vec<Sv>> = std::thread::scope(|scope| {
            let handles: Vec<_> = w
                .series
                .chunks(chunk)
                .map(|part| scope.spawn(|| part.iter().filter_map(one).collect::<Vec<Sv>>()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        ctx.check()?;
        parts.into_iter().flatten().collect()
    } else {
        let mut out = Vec::with_capacity(w.series.len());
        for s in &w.series {
            ctx.check()?;
            out.extend(one(s));
        }
        out
    };
    finish_windows(out, keep_name)
}

/// One series' values over the grid, if any step has one.
fn series_windows(
    w: &Windows,
    s: &Series,
    g: Grid,
    keep_name: bool,
    mut f: impl FnMut(&[Sample], usize, usize) -> Option<f64>,
) -> Option<Sv> {
    let mut any = false;
    let mut vals: Vec<Option<f64>> = Vec::with_capacity(g.n);
    w.each_window(s, |i, lo, win| {
        let v = f(win, lo, i);
        any |= v.is_some();
        vals.push(v);
    });
    any.then(|| Sv {
        labels: if keep_name {
            s.labels.clone()
        } else {
            drop_name(&s.labels)
        },
        vals,
    })
}

fn finish_windows(out: Vec<Sv>, keep_name: bool) -> Result<Val, PromError> {
    Ok(Val::Vector(if keep_name {
        out
    } else {
        dedupe(out, DUP_LABELSET)?
    }))
}

/// `rate`, `increase` and `delta` with Prometheus's extrapolation to the
/// window boundaries.
fn extrapolated_rate(
    s: &[Sample],
    counter: bool,
    has_resets: bool,
    is_rate: bool,
    range_start: i64,
    range_end: i64,
) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let first = s[0];
    let last = s[s.len() - 1];
    let mut result = last.v - first.v;
    if counter && has_resets {
        let mut prev = first.v;
        for x in &s[1..] {
            if x.v < prev {
                result += prev;
            }
            prev = x.v;
        }
    }
    let mut to_start = (first.t_ms - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.t_ms) as f64 / 1000.0;
    let sampled = (last.t_ms - first.t_ms) as f64 / 1000.0;
    let avg = sampled / (s.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if counter && result > 0.0 && first.v >= 0.0 {
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= (range_end - range_start) as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Least-squares slope and intercept (at `intercept_t`) of the samples.
fn linear_regression(s: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let init_y = s[0].v;
    let mut const_y = true;
    for (i, x) in s.iter().enumerate() {
        if i > 0 && x.v != s[i - 1].v {
            const_y = false;
        }
        n += 1.0;
        let t = (x.t_ms - intercept_t) as f64 / 1000.0;
        sx += t;
        sy += x.v;
        sxy += t * x.v;
        sx2 += t * t;
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

fn histogram_quantile(q: &[f64], v: Vec<Sv>, g: Grid) -> Result<Val, PromError> {
    // Group buckets by their labels without `le` and `__name__`.
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    for (si, s) in v.iter().enumerate() {
        let Some(le) = label(&s.labels, "le") else {
            continue;
        };
        let Ok(upper) = parse_le(le) else {
            continue;
        };
        let key: Labels = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le" && k != METRIC_NAME)
            .cloned()
            .collect();
        let j = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[j].1.push((upper, si));
    }
    let mut out = Vec::with_capacity(groups.len());
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for (key, mut members) in groups {
        // Sorted (stably) by bound once, so each step's buckets arrive in
        // the order bucket_quantile's stable sort puts them (a NaN bound
        // has no such order: those groups are sorted per step only).
        if !members.iter().any(|m| m.0.is_nan()) {
            members.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        }
        let vals: Vec<Option<f64>> = (0..g.n)
            .map(|i| {
                buckets.clear();
                buckets.extend(
                    members
                        .iter()
                        .filter_map(|&(ub, si)| v[si].vals[i].map(|c| (ub, c))),
                );
                if buckets.is_empty() {
                    return None;
                }
                Some(bucket_quantile(q[i], &mut buckets))
            })
            .collect();
        out.push(Sv { labels: key, vals });
    }
    Ok(Val::Vector(nonempty(out)))
}

fn parse_le(s: &str) -> Result<f64, std::num::ParseFloatError> {
    let t = s.trim();
    match t {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => t.parse::<f64>(),
    }
}

/// Prometheus's classic-histogram quantile: linear interpolation inside the
/// bucket holding the rank. `buckets` are `(upper bound, cumulative count)`.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds, in place.
    let mut w = 0;
    for r in 0..buckets.len() {
        if w > 0 && buckets[w - 1].0 == buckets[r].0 {
            buckets[w - 1].1 += buckets[r].1;
        } else {
            buckets[w] = buckets[r];
            w += 1;
        }
    }
    buckets.truncate(w);
    // Enforce monotonic counts, ignoring tiny floating point deltas.
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) || cur < prev {
            b.1 = prev;
            continue;
        }
        prev = cur;
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let n = buckets.len();
    let b = buckets[..n - 1].partition_point(|x| x.1 < rank);
    if b == n - 1 {
        return buckets[n - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// Calendar fields of a Unix time in seconds (UTC).
fn date_part(name: &str, secs: f64) -> f64 {
    if !secs.is_finite() {
        return f64::NAN;
    }
    let t = secs.floor() as i64;
    let days = t.div_euclid(86_400);
    let sod = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match name {
        "hour" => (sod / 3600) as f64,
        "minute" => ((sod % 3600) / 60) as f64,
        "day_of_month" => d as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (days - days_from_civil(y, 1, 1) + 1) as f64,
        "days_in_month" => {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as f64
        }
        "month" => m as f64,
        "year" => y as f64,
        _ => f64::NAN,
    }
}

/// Natural order: runs of digits compare by numeric value.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}
