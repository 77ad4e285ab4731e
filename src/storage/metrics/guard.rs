//! Cardinality protection: a registry of active series with a limit per
//! metric name and in total, consulted by ingest before the WAL
//! acknowledges a write, so that samples of new series over a limit are
//! rejected (and reported) instead of stored.
//!
//! A series is active while it received a sample within the configured
//! window; [`SeriesGuard::sweep`] forgets the others. The store registers
//! every series it writes (including WAL replay) without a limit check, so
//! the registry is rebuilt on restart.

use std::collections::HashMap;

use parking_lot::Mutex;
use prometheus::IntCounterVec;

use super::mapping::{map_metrics, MappingOptions};
use crate::model::{label, Labels, Metric, METRIC_NAME};

/// Limits of the guard; 0 disables a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    pub per_metric: usize,
    pub total: usize,
    pub window_ms: i64,
}

#[derive(Default)]
struct GuardState {
    /// Series hash → (metric name slot, last seen ms).
    series: HashMap<u64, (u32, i64), foldhash::fast::RandomState>,
    /// Metric names and their active series counts.
    names: HashMap<String, u32>,
    counts: Vec<(String, usize)>,
}

impl GuardState {
    fn slot(&mut self, name: &str) -> u32 {
        if let Some(s) = self.names.get(name) {
            return *s;
        }
        let s = self.counts.len() as u32;
        self.counts.push((name.to_string(), 0));
        self.names.insert(name.to_string(), s);
        s
    }
}

/// The shared registry of active series.
pub struct SeriesGuard {
    limits: SeriesLimits,
    mapping: MappingOptions,
    state: Mutex<GuardState>,
    rejected: Option<IntCounterVec>,
}

/// A hash of a label set, the same for the life of the process.
pub fn labels_hash(labels: &Labels) -> u64 {
    pairs_hash(labels.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
}

/// [`labels_hash`] of label pairs (as UTF-8 bytes) in any representation.
pub fn pairs_hash<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<foldhash::fast::FixedState> = std::sync::OnceLock::new();
    let state = SEED.get_or_init(|| {
        foldhash::fast::FixedState::with_seed(foldhash::fast::RandomState::default().hash_one(0u8))
    });
    let mut h = state.build_hasher();
    for (k, v) in pairs {
        // 0xff never occurs in UTF-8, so the pairs cannot run together.
        h.write(k);
        h.write_u8(0xff);
        h.write(v);
        h.write_u8(0xff);
    }
    h.finish()
}

/// Why a new series was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerMetric,
    Total,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerMetric => "per_metric_limit",
            Refusal::Total => "total_limit",
        }
    }
}

impl SeriesGuard {
    /// A guard counting refusals in `rejected` (label `reason`), if given.
    pub fn new(
        limits: SeriesLimits,
        mapping: MappingOptions,
        rejected: Option<IntCounterVec>,
    ) -> Self {
        SeriesGuard {
            limits,
            mapping,
            state: Mutex::new(GuardState::default()),
            rejected,
        }
    }

    pub fn limits(&self) -> SeriesLimits {
        self.limits
    }

    /// Admits a group of series all or nothing (the series of one OTLP data
    /// point, or one remote_write time series): known series are refreshed,
    /// new ones are added only if every one of them fits under the limits.
    pub fn admit_group(&self, group: &[&Labels], now_ms: i64) -> Result<(), Refusal> {
        let mut st = self.state.lock();
        let hashes: Vec<u64> = group.iter().map(|l| labels_hash(l)).collect();
        // Count new series per metric name first.
        let mut new_per_name: Vec<(&str, usize)> = Vec::new();
        let mut new_total = 0usize;
        for (l, h) in group.iter().zip(&hashes) {
            if st.series.contains_key(h) {
                continue;
            }
            let name = label(l, METRIC_NAME).unwrap_or("");
            new_total += 1;
            match new_per_name.iter_mut().find(|(n, _)| *n == name) {
                Some(e) => e.1 += 1,
                None => new_per_name.push((name, 1)),
            }
        }
        if new_total > 0 {
            if self.limits.total > 0 && st.series.len() + new_total > self.limits.total {
                return Err(self.refuse(Refusal::Total));
            }
            if self.limits.per_metric > 0 {
                for (name, n) in &new_per_name {
                    let have = st.names.get(*name).map_or(0, |s| st.counts[*s as usize].1);
                    if have + n > self.limits.per_metric {
                        return Err(self.refuse(Refusal::PerMetric));
                    }
                }
            }
        }
        for (l, h) in group.iter().zip(hashes) {
            Self::touch(&mut st, label(l, METRIC_NAME).unwrap_or(""), h, now_ms);
        }
        Ok(())
    }

    fn refuse(&self, r: Refusal) -> Refusal {
        if let Some(c) = &self.rejected {
            c.with_label_values(&[r.as_str()]).inc();
        }
        r
    }

    fn touch(st: &mut GuardState, name: &str, h: u64, now_ms: i64) {
        if let Some(e) = st.series.get_mut(&h) {
            e.1 = e.1.max(now_ms);
            return;
        }
        let slot = st.slot(name);
        st.counts[slot as usize].1 += 1;
        st.series.insert(h, (slot, now_ms));
    }

    /// Admits the series of OTLP metrics, one OTLP data point at a time
    /// (all series of a point or none). Returns the keep-mask over data
    /// points in batch order, or `None` when every point is admitted.
    pub fn admit_metrics(&self, metrics: &[Metric], now_ms: i64) -> Option<Vec<bool>> {
        let mapped = map_metrics(metrics, &self.mapping);
        let mut keep = vec![true; mapped.otlp_points];
        let mut any_refused = false;
        let mut i = 0;
        let points = &mapped.points;
        while i < points.len() {
            let src = points[i].src;
            let j = i + points[i..].iter().take_while(|p| p.src == src).count();
            let group: Vec<&Labels> = points[i..j].iter().map(|p| &p.labels).collect();
            if src == usize::MAX {
                // target_info is bookkeeping, never refused.
                self.register(group, now_ms);
            } else if self.admit_group(&group, now_ms).is_err() {
                if let Some(k) = keep.get_mut(src) {
                    *k = false;
                    any_refused = true;
                }
            }
            i = j;
        }
        any_refused.then_some(keep)
    }

    /// Registers series written to the store, without a limit check.
    pub fn register<'a>(&self, series: impl IntoIterator<Item = &'a Labels>, now_ms: i64) {
        let mut st = self.state.lock();
        for l in series {
            let name = label(l, METRIC_NAME).unwrap_or("");
            Self::touch(&mut st, name, labels_hash(l), now_ms);
        }
    }

    /// [`SeriesGuard::register`] for series given as (labels hash, metric
    /// name).
    pub fn register_hashed<'a>(
        &self,
        series: impl IntoIterator<Item = (u64, &'a str)>,
        now_ms: i64,
    ) {
        let mut st = self.state.lock();
        for (h, name) in series {
            Self::touch(&mut st, name, h, now_ms);
        }
    }

    /// Forgets series not seen within the window before `now_ms`.
    pub fn sweep(&self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.limits.window_ms);
        let mut st = self.state.lock();
        let GuardState { series, counts, .. } = &mut *st;
        series.retain(|_, (slot, seen)| {
            let keep = *seen >= cutoff;
            if !keep {
                counts[*slot as usize].1 -= 1;
            }
            keep
        });
    }

    /// Active series in total.
    pub fn active(&self) -> usize {
        self.state.lock().series.len()
    }

    /// Active series of one metric name.
    pub fn active_for(&self, name: &str) -> usize {
        let st = self.state.lock();
        st.names.get(name).map_or(0, |s| st.counts[*s as usize].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(name: &str, v: &str) -> Labels {
        vec![(METRIC_NAME.into(), name.into()), ("x".into(), v.into())]
    }

    #[test]
    fn limits_per_metric_and_total() {
        let g = SeriesGuard::new(
            SeriesLimits {
                per_metric: 2,
                total: 3,
                window_ms: 1000,
            },
            MappingOptions::default(),
            None,
        );
        assert!(g.admit_group(&[&l("a", "1"), &l("a", "2")], 0).is_ok());
        assert_eq!(g.admit_group(&[&l("a", "3")], 0), Err(Refusal::PerMetric));
        // Known series stay admitted.
        assert!(g.admit_group(&[&l("a", "1")], 10).is_ok());
        assert!(g.admit_group(&[&l("b", "1")], 10).is_ok());
        assert_eq!(g.admit_group(&[&l("c", "1")], 10), Err(Refusal::Total));
        // A group is all or nothing.
        assert_eq!(
            g.admit_group(&[&l("b", "1"), &l("b", "2"), &l("b", "3")], 10),
            Err(Refusal::Total)
        );
        assert_eq!(g.active(), 3);
        // a/2 was last seen at 0: forgotten after the window.
        g.sweep(1005);
        assert_eq!(g.active(), 2);
        assert_eq!(g.active_for("a"), 1);
        assert!(g.admit_group(&[&l("c", "1")], 1005).is_ok());
    }
}
