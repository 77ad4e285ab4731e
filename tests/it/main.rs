//! The integration test binary: real servers on port 0 over temp data dirs.

mod support;

mod alerting;
mod bench_smoke;
mod config_example;
mod crash;
mod logs;
mod metrics_store;
mod otlp_grpc;
mod otlp_http;
mod prometheus_alerting;
mod prometheus_remote_write;
mod promql_api;
mod python_sdk;
mod sql;
mod traces;
mod ui;
