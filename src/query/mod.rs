//! Query engines over the storage traits: trace search, log search, PromQL.
//! Nothing here knows HTTP types; `api` renders the results.
pub mod logs;
pub mod promql;
pub mod sql;
pub mod traces;
