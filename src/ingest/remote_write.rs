//! Prometheus remote_write 1.0: the protobuf messages (`prompb`), snappy
//! block decompression under a size cap, validation, and the WAL payload.
//!
//! Metadata, exemplars and native histograms in a request are skipped (the
//! decoder ignores their fields). A series whose label set is invalid
//! (empty or duplicate names, no `__name__`) fails the whole request with
//! 400, as in Prometheus. Labels with empty values are dropped.
//!
//! WAL payload: tag byte 4 followed by the validated `WriteRequest`.

use prost::Message;

use super::IngestError;
use crate::model::{Labels, Sample, Series, METRIC_NAME};

/// The WAL payload tag of a remote_write request.
pub const WAL_TAG: u8 = 4;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PromSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PromSample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Decompresses a snappy block, refusing output over `max_bytes` before
/// allocating it.
pub fn unsnappy(body: &[u8], max_bytes: u64) -> Result<Vec<u8>, IngestError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| IngestError::Malformed(format!("invalid snappy body: {e}")))?;
    if len as u64 > max_bytes {
        return Err(IngestError::TooLarge { limit: max_bytes });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| IngestError::Malformed(format!("invalid snappy body: {e}")))
}

/// Decodes a (decompressed) request.
pub fn decode(body: &[u8]) -> Result<WriteRequest, IngestError> {
    WriteRequest::decode(body)
        .map_err(|e| IngestError::Malformed(format!("invalid remote_write protobuf: {e}")))
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Normalises every series in place (sorted labels, empty values dropped)
/// and checks it.
pub fn validate(
    req: &mut WriteRequest,
    limits: &super::otlp::Limits,
    now_ms: i64,
) -> Result<u64, IngestError> {
    let max_t = now_ms.saturating_add((limits.max_future_skew_ns / 1_000_000) as i64);
    let mut dropped = 0u64;
    for (i, ts) in req.timeseries.iter_mut().enumerate() {
        ts.labels.retain(|l| !l.value.is_empty());
        ts.labels.sort_by(|a, b| a.name.cmp(&b.name));
        let bad = |m: String| Err(IngestError::Malformed(format!("time series {i}: {m}")));
        if !ts.labels.iter().any(|l| l.name == METRIC_NAME) {
            return bad("no __name__ label".into());
        }
        if ts.labels.len() > limits.max_attributes {
            return bad(format!(
                "{} labels, more than the limit of {}",
                ts.labels.len(),
                limits.max_attributes
            ));
        }
        let label_bytes: usize = ts.labels.iter().map(|l| l.name.len() + l.value.len()).sum();
        if label_bytes > limits.max_record_bytes {
            return bad(format!(
                "labels of {label_bytes} bytes, more than the limit of {}",
                limits.max_record_bytes
            ));
        }
        for w in ts.labels.windows(2) {
            if w[0].name == w[1].name {
                return bad(format!("duplicate label name {:?}", w[0].name));
            }
        }
        if let Some(l) = ts.labels.iter().find(|l| !valid_label_name(&l.name)) {
            return bad(format!("invalid label name {:?}", l.name));
        }
        let before = ts.samples.len();
        ts.samples.retain(|s| s.timestamp <= max_t);
        dropped += (before - ts.samples.len()) as u64;
    }
    Ok(dropped)
}

/// Converts a validated request to series.
pub fn to_series(req: WriteRequest) -> Vec<Series> {
    req.timeseries
        .into_iter()
        .map(|ts| Series {
            labels: ts
                .labels
                .into_iter()
                .map(|l| (l.name, l.value))
                .collect::<Labels>(),
            samples: ts
                .samples
                .into_iter()
                .map(|s| Sample {
                    t_ms: s.timestamp,
                    v: s.value,
                })
                .collect(),
        })
        .collect()
}

/// The WAL payload of a validated request.
pub fn wal_payload(req: &WriteRequest) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + req.encoded_len());
    buf.push(WAL_TAG);
    // Encoding into a Vec cannot run out of space.
    let _ = req.encode(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(labels: &[(&str, &str)]) -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: vec![PromSample {
                    value: 1.5,
                    timestamp: 1000,
                }],
            }],
        }
    }

    #[test]
    fn round_trip_and_validation() {
        let mut r = req(&[("job", "a"), ("__name__", "up"), ("empty", "")]);
        let body = snap::raw::Encoder::new()
            .compress_vec(&r.encode_to_vec())
            .unwrap();
        let mut decoded = decode(&unsnappy(&body, 1 << 20).unwrap()).unwrap();
        assert_eq!(decoded, r);
        let limits = crate::ingest::otlp::Limits::default();
        assert_eq!(validate(&mut decoded, &limits, 2000).unwrap(), 0);
        let s = to_series(decoded);
        assert_eq!(
            s[0].labels,
            vec![("__name__".into(), "up".into()), ("job".into(), "a".into())]
        );
        assert_eq!(s[0].samples, vec![Sample { t_ms: 1000, v: 1.5 }]);
        assert!(matches!(
            unsnappy(&body, 3),
            Err(IngestError::TooLarge { limit: 3 })
        ));
        assert!(matches!(
            unsnappy(b"\xff\xff\xff", 100),
            Err(IngestError::Malformed(_))
        ));
        let check = |r: &mut WriteRequest| validate(r, &limits, 2000);
        assert!(check(&mut req(&[("job", "a")])).is_err());
        assert!(check(&mut req(&[("__name__", "a"), ("1x", "b")])).is_err());
        r.timeseries[0].labels.push(Label {
            name: "job".into(),
            value: "b".into(),
        });
        assert!(check(&mut r).is_err());

        // Too many labels, or labels too large: the request is refused.
        let many: Vec<(String, String)> = (0..=limits.max_attributes)
            .map(|i| (format!("l{i}"), "v".to_string()))
            .chain([("__name__".to_string(), "m".to_string())])
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let e = check(&mut req(&many)).unwrap_err().to_string();
        assert!(e.contains("labels, more than the limit"), "{e}");
        let huge = "x".repeat(limits.max_record_bytes);
        assert!(check(&mut req(&[("__name__", "m"), ("big", &huge)])).is_err());

        // Samples too far ahead are dropped and counted; the rest stay.
        let mut r = req(&[("__name__", "m")]);
        r.timeseries[0].samples.push(PromSample {
            value: 2.0,
            timestamp: 2000 + 3_600_001,
        });
        assert_eq!(validate(&mut r, &limits, 2000).unwrap(), 1);
        assert_eq!(r.timeseries[0].samples.len(), 1);
    }
}
