#!/usr/bin/env bash
# The end-to-end benchmark: builds a release binary, then `tern bench` starts
# a server on a temporary data dir, loads traces, logs and metrics over OTLP,
# measures throughput, server RSS/CPU, bytes on disk per record and query
# latency, and writes bench-results/bench.json and bench-results/bench.md.
# Arguments go to `tern bench` (see `tern bench --help`), e.g.
#   scripts/bench.sh --spans 10000000 --logs 0 --samples 0
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
cargo build --release --locked --bin tern
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/tern" bench "$@"
