//! What a batch of spans changes, whatever the engine: which spans are new
//! (a span id already stored is a duplicate and ignored), the updated trace
//! summary, the RED increments and the dependency edges, including those
//! that a late parent completes for children stored before it.

use std::collections::{HashMap, HashSet};

use super::types::{is_entry_span, minute_of, Agg, TraceSummary};
use crate::model::{Span, SpanId, TraceId};

/// What the store already holds of a span of the trace.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub service: String,
    pub start_ns: u64,
    pub error: bool,
}

/// RED increments keyed by (service, minute, operation); `None` is the
/// service row (entry spans).
pub type RedDelta = HashMap<(String, u64, Option<String>), Agg>;
/// Dependency increments keyed by (minute, caller, callee): (calls, errors).
pub type DepDelta = HashMap<(u64, String, String), (u64, u64)>;

/// Plans one trace's part of a batch. `new` are the batch's spans of this
/// trace; returns the indexes (into `new`) of the spans to store and the
/// summary after them. RED and dependency increments are added to `red`
/// and `deps`.
pub fn plan_trace(
    trace_id: TraceId,
    summary: Option<TraceSummary>,
    stored: &[StoredSpan],
    new: &[&Span],
    red: &mut RedDelta,
    deps: &mut DepDelta,
) -> (Vec<usize>, TraceSummary) {
    let mut seen: HashSet<SpanId> = stored.iter().map(|s| s.span_id).collect();
    let accepted: Vec<usize> = (0..new.len())
        .filter(|&i| seen.insert(new[i].span_id))
        .collect();
    let mut summary = summary.unwrap_or_else(|| TraceSummary::new(trace_id));
    if accepted.is_empty() {
        return (accepted, summary);
    }

    // Service of every span of the trace, stored or new.
    let mut service_of: HashMap<SpanId, &str> = stored
        .iter()
        .map(|s| (s.span_id, s.service.as_str()))
        .collect();
    for &i in &accepted {
        service_of.insert(new[i].span_id, new[i].service_name());
    }

    let mut edge = |minute: u64, caller: &str, callee: &str, error: bool| {
        if caller != callee {
            let e = deps
                .entry((minute, caller.to_string(), callee.to_string()))
                .or_default();
            e.0 += 1;
            e.1 += u64::from(error);
        }
    };

    let new_ids: HashSet<SpanId> = accepted.iter().map(|&i| new[i].span_id).collect();
    for &i in &accepted {
        let s = new[i];
        summary.add(s);
        let svc = s.service_name();
        let minute = minute_of(s.start_time_ns);
        let (dur, err) = (s.duration_ns(), s.is_error());
        red.entry((svc.to_string(), minute, Some(s.name.clone())))
            .or_default()
            .record(dur, err);
        if is_entry_span(s) {
            red.entry((svc.to_string(), minute, None))
                .or_default()
                .record(dur, err);
        }
        if let Some(caller) = s.parent_span_id.and_then(|p| service_of.get(&p)) {
            edge(minute, caller, svc, err);
        }
    }
    // Children stored before their parent arrived.
    for c in stored {
        if let Some(p) = c.parent.filter(|p| new_ids.contains(p)) {
            if let Some(caller) = service_of.get(&p) {
                edge(minute_of(c.start_ns), caller, &c.service, c.error);
            }
        }
    }
    (accepted, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::suite::span;

    fn child(mut s: Span, parent: u8) -> Span {
        s.parent_span_id = Some(SpanId([parent; 8]));
        s.kind = crate::model::SpanKind::Server;
        s
    }

    #[test]
    fn late_parent_completes_the_edge_and_summary() {
        let (mut red, mut deps) = (RedDelta::new(), DepDelta::new());
        let t = TraceId([1; 16]);
        let c = child(span(1, 2, 200, "backend"), 1);
        let (acc, sum) = plan_trace(t, None, &[], &[&c], &mut red, &mut deps);
        assert_eq!(acc, vec![0]);
        assert!(!sum.root_known);
        assert!(deps.is_empty(), "parent unknown yet");
        let stored = vec![StoredSpan {
            span_id: c.span_id,
            parent: c.parent_span_id,
            service: "backend".into(),
            start_ns: 200,
            error: false,
        }];
        let mut p = span(1, 1, 100, "frontend");
        p.kind = crate::model::SpanKind::Client;
        // The parent arrives twice: the second copy is a duplicate.
        let (acc, sum) = plan_trace(t, Some(sum), &stored, &[&p, &p], &mut red, &mut deps);
        assert_eq!(acc, vec![0]);
        assert!(sum.root_known);
        assert_eq!(sum.root_service, "frontend");
        assert_eq!(sum.span_count, 2);
        assert_eq!(sum.start_ns, 100);
        assert_eq!(
            deps.get(&(0, "frontend".to_string(), "backend".to_string())),
            Some(&(1, 0))
        );
        // A span already stored is not counted again.
        let (acc, _) = plan_trace(t, None, &stored, &[&c], &mut red, &mut deps);
        assert!(acc.is_empty());
    }
}
