use super::{Attributes, SharedResource, SharedScope, SpanId, TraceId};

/// OTLP `DataPointFlags.NO_RECORDED_VALUE`: the point marks a series as stale.
pub const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// Aggregation temporality of sums and histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Temporality {
    #[default]
    Unspecified,
    Delta,
    Cumulative,
}

impl Temporality {
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => Temporality::Delta,
            2 => Temporality::Cumulative,
            _ => Temporality::Unspecified,
        }
    }

    pub fn as_i32(self) -> i32 {
        match self {
            Temporality::Unspecified => 0,
            Temporality::Delta => 1,
            Temporality::Cumulative => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub filtered_attributes: Attributes,
    pub time_ns: u64,
    pub value: f64,
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
}

/// A gauge or sum point. Integer values are converted to `f64`.
#[derive(Clone, Debug, PartialEq)]
pub struct NumberPoint {
    pub attributes: Attributes,
    pub start_time_ns: u64,
    pub time_ns: u64,
    pub value: f64,
    pub exemplars: Vec<Exemplar>,
    pub flags: u32,
}

/// An explicit-bucket histogram point. `bucket_counts` has one more entry
/// than `explicit_bounds` (the last bucket is +Inf), or is empty.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramPoint {
    pub attributes: Attributes,
    pub start_time_ns: u64,
    pub time_ns: u64,
    pub count: u64,
    pub sum: Option<f64>,
    pub bucket_counts: Vec<u64>,
    pub explicit_bounds: Vec<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub exemplars: Vec<Exemplar>,
    pub flags: u32,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ExpBuckets {
    pub offset: i32,
    pub bucket_counts: Vec<u64>,
}

/// An exponential (base-2 scaled) histogram point.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpHistogramPoint {
    pub attributes: Attributes,
    pub start_time_ns: u64,
    pub time_ns: u64,
    pub count: u64,
    pub sum: Option<f64>,
    pub scale: i32,
    pub zero_count: u64,
    pub zero_threshold: f64,
    pub positive: ExpBuckets,
    pub negative: ExpBuckets,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub exemplars: Vec<Exemplar>,
    pub flags: u32,
}

/// A summary point: count, sum and precomputed quantiles `(quantile, value)`.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryPoint {
    pub attributes: Attributes,
    pub start_time_ns: u64,
    pub time_ns: u64,
    pub count: u64,
    pub sum: f64,
    pub quantiles: Vec<(f64, f64)>,
    pub flags: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetricData {
    Gauge(Vec<NumberPoint>),
    Sum {
        points: Vec<NumberPoint>,
        temporality: Temporality,
        monotonic: bool,
    },
    Histogram {
        points: Vec<HistogramPoint>,
        temporality: Temporality,
    },
    ExponentialHistogram {
        points: Vec<ExpHistogramPoint>,
        temporality: Temporality,
    },
    Summary(Vec<SummaryPoint>),
}

impl MetricData {
    pub fn type_name(&self) -> &'static str {
        match self {
            MetricData::Gauge(_) => "gauge",
            MetricData::Sum { .. } => "sum",
            MetricData::Histogram { .. } => "histogram",
            MetricData::ExponentialHistogram { .. } => "exponential_histogram",
            MetricData::Summary(_) => "summary",
        }
    }
}

/// One metric with its points, as reported by one scope of one resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub resource: SharedResource,
    pub scope: SharedScope,
    pub name: String,
    pub description: String,
    pub unit: String,
    pub metadata: Attributes,
    pub data: MetricData,
}

impl Metric {
    pub fn point_count(&self) -> usize {
        match &self.data {
            MetricData::Gauge(p) => p.len(),
            MetricData::Sum { points, .. } => points.len(),
            MetricData::Histogram { points, .. } => points.len(),
            MetricData::ExponentialHistogram { points, .. } => points.len(),
            MetricData::Summary(p) => p.len(),
        }
    }
}
