//! The integration test binary: real servers on port 0 over temp data dirs.

mod support;

mod config_example;
mod crash;
mod metrics_store;
mod otlp_grpc;
mod otlp_http;
mod python_sdk;
