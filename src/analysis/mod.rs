//! Analysis over the stores: alert rules and notification
//! (`alerting`), service level objectives (`slo`).
//!
//! Reads the stores only through their traits (`SeriesSource`,
//! `TraceStore`, `LogStore`) and keeps its definitions and state in the
//! meta store; knows nothing of HTTP.

pub mod alerting;
pub mod slo;
