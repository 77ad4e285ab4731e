//! Evaluates a rule's query at one time over the stores' read traits:
//! PromQL over a [`SeriesSource`], log counts over a [`LogStore`], RED
//! figures over a [`TraceStore`], SLO burn rates through `analysis::slo`.

use std::sync::Arc;

use super::rules::{CompiledRule, RuleQuery, SpanMeasure};
use crate::model::Labels;
use crate::query::promql::{self, QueryLimits, QueryValue};
use crate::storage::traces::types::Agg;
use crate::storage::traces::RedQuery;
use crate::storage::{LogStore, SeriesSource, TraceStore};

/// Where rules read from. Log and span rules fail with a clear error when
/// their store is absent.
#[derive(Clone)]
pub struct Sources {
    pub series: Arc<dyn SeriesSource>,
    pub traces: Option<Arc<dyn TraceStore>>,
    pub logs: Option<Arc<dyn LogStore>>,
    pub limits: QueryLimits,
}

/// Most RED rows one span rule reads.
const MAX_RED_ROWS: usize = 200_000;

fn ms_to_ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

/// The series a rule's query returns at `t_ms`: label sets and values.
pub fn evaluate(
    rule: &CompiledRule,
    src: &Sources,
    t_ms: i64,
) -> Result<Vec<(Labels, f64)>, String> {
    match &rule.query {
        RuleQuery::PromQl(q) => promql_samples(src, q, t_ms),
        RuleQuery::Logs(l) => {
            let logs = src.logs.as_ref().ok_or("log rules need the log store")?;
            let mut filters = Vec::new();
            if !l.query.trim().is_empty() {
                filters.push(crate::query::logs::parse(&l.query).map_err(|e| e.to_string())?);
            }
            if let Some(s) = &l.service {
                filters.push(crate::storage::logs::LogFilter::Term {
                    field: crate::storage::logs::LogField::Service,
                    value: s.clone(),
                });
            }
            let filter = match filters.len() {
                0 => crate::storage::logs::LogFilter::All,
                1 => filters.remove(0),
                _ => crate::storage::logs::LogFilter::And(filters),
            };
            let search = crate::storage::logs::LogSearch::new(
                filter,
                ms_to_ns(t_ms - l.window.ms()),
                ms_to_ns(t_ms),
                0,
            );
            let count = logs.search(&search).map_err(|e| e.to_string())?.total as f64;
            let mut labels = Labels::new();
            if let Some(s) = &l.service {
                labels.push(("service".into(), s.clone()));
            }
            Ok(if l.condition.holds(count) {
                vec![(labels, count)]
            } else {
                vec![]
            })
        }
        RuleQuery::Spans(s) => {
            let agg = red_agg(
                src,
                &s.service,
                s.operation.as_deref(),
                t_ms - s.window.ms(),
                t_ms,
            )?;
            let window_s = s.window.0.as_secs_f64();
            let v = match s.measure {
                SpanMeasure::Requests => agg.count as f64,
                SpanMeasure::Errors => agg.errors as f64,
                SpanMeasure::ErrorRatio => {
                    if agg.count == 0 {
                        return Ok(vec![]);
                    }
                    agg.errors as f64 / agg.count as f64
                }
                SpanMeasure::Rate => agg.count as f64 / window_s,
                SpanMeasure::LatencyMs(q) => match agg.hist.quantile(q) {
                    Some(ns) => ns as f64 / 1e6,
                    None => return Ok(vec![]),
                },
            };
            let mut labels: Labels = vec![("service".into(), s.service.clone())];
            if let Some(op) = &s.operation {
                labels.insert(0, ("operation".into(), op.clone()));
            }
            Ok(if s.condition.holds(v) {
                vec![(labels, v)]
            } else {
                vec![]
            })
        }
        RuleQuery::SloBurn {
            slo,
            factor,
            long,
            short,
        } => {
            let l = crate::analysis::slo::burn_rate(slo, src, long.ms(), t_ms)?;
            let s = crate::analysis::slo::burn_rate(slo, src, short.ms(), t_ms)?;
            Ok(if l >= *factor && s >= *factor {
                vec![(vec![("slo".to_string(), slo.name.clone())], l.min(s))]
            } else {
                vec![]
            })
        }
    }
}

/// An instant PromQL query as label sets and values (a scalar is one
/// sample without labels).
pub fn promql_samples(src: &Sources, q: &str, t_ms: i64) -> Result<Vec<(Labels, f64)>, String> {
    match promql::instant_query(src.series.as_ref(), q, t_ms, &src.limits, None)
        .map_err(|e| e.to_string())?
    {
        QueryValue::Vector(v) => Ok(v.into_iter().map(|(l, _, v)| (l, v)).collect()),
        QueryValue::Scalar(_, v) => Ok(vec![(Labels::new(), v)]),
        QueryValue::String(..) | QueryValue::Matrix(_) => {
            Err("the expression must return an instant vector or a scalar".into())
        }
    }
}

/// The RED aggregate of a service's entry spans (or of one operation)
/// with start times in `[start_ms, end_ms)`, at minute resolution.
pub fn red_agg(
    src: &Sources,
    service: &str,
    operation: Option<&str>,
    start_ms: i64,
    end_ms: i64,
) -> Result<Agg, String> {
    let traces = src
        .traces
        .as_ref()
        .ok_or("span rules need the trace store")?;
    let rows = traces
        .red(&RedQuery {
            service: Some(service.to_string()),
            start_ns: ms_to_ns(start_ms),
            end_ns: ms_to_ns(end_ms),
            max_rows: MAX_RED_ROWS,
        })
        .map_err(|e| e.to_string())?;
    let mut agg = Agg::default();
    for r in rows {
        if r.service == service && r.operation.as_deref() == operation {
            agg.merge(&r.agg);
        }
    }
    Ok(agg)
}
