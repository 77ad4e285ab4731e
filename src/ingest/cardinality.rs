//! The cardinality hook of ingest: asks the metrics store's series guard
//! which data points may create series, and removes the refused ones from
//! both the model batch and the WAL payload before anything is
//! acknowledged.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

use crate::model::{Metric, MetricData};
use crate::storage::metrics::SeriesGuard;

/// Keeps the data points whose ordinal (in batch order) is true in `keep`.
fn filter_model(metrics: &mut [Metric], keep: &[bool]) {
    let mut n = 0usize;
    let mut k = || {
        let r = keep.get(n).copied().unwrap_or(true);
        n += 1;
        r
    };
    for m in metrics {
        match &mut m.data {
            MetricData::Gauge(p) => p.retain(|_| k()),
            MetricData::Sum { points, .. } => points.retain(|_| k()),
            MetricData::Histogram { points, .. } => points.retain(|_| k()),
            MetricData::ExponentialHistogram { points, .. } => points.retain(|_| k()),
            MetricData::Summary(p) => p.retain(|_| k()),
        }
    }
}

/// The same filter over the protobuf request (same order as the model).
fn filter_proto(req: &mut ExportMetricsServiceRequest, keep: &[bool]) {
    let mut n = 0usize;
    let mut k = || {
        let r = keep.get(n).copied().unwrap_or(true);
        n += 1;
        r
    };
    for rm in &mut req.resource_metrics {
        for sm in &mut rm.scope_metrics {
            for m in &mut sm.metrics {
                match &mut m.data {
                    None => {}
                    Some(Data::Gauge(g)) => g.data_points.retain(|_| k()),
                    Some(Data::Sum(s)) => s.data_points.retain(|_| k()),
                    Some(Data::Histogram(h)) => h.data_points.retain(|_| k()),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.retain(|_| k()),
                    Some(Data::Summary(s)) => s.data_points.retain(|_| k()),
                }
            }
        }
    }
}

/// Applies the guard to a prepared metrics batch whose WAL payload is
/// `payload` (tag 2 + `ExportMetricsServiceRequest`). Returns the number of
/// data points refused.
pub fn apply(guard: &SeriesGuard, metrics: &mut [Metric], payload: &mut Vec<u8>) -> u64 {
    let now = crate::storage::metrics::core::now_ms();
    let Some(keep) = guard.admit_metrics(metrics, now) else {
        return 0;
    };
    let refused = keep.iter().filter(|k| !**k).count() as u64;
    filter_model(metrics, &keep);
    if let Some((tag, body)) = payload.split_first() {
        if let Ok(mut req) = ExportMetricsServiceRequest::decode(body) {
            filter_proto(&mut req, &keep);
            let mut buf = Vec::with_capacity(1 + req.encoded_len());
            buf.push(*tag);
            // Encoding into a Vec cannot run out of space.
            let _ = req.encode(&mut buf);
            *payload = buf;
        }
    }
    refused
}
