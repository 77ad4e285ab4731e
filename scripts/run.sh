#!/usr/bin/env bash
# Builds tern in release mode and runs the server with its defaults:
# data in ./data, OTLP gRPC on 127.0.0.1:4317, OTLP HTTP on 127.0.0.1:4318,
# API and UI on http://127.0.0.1:3000. Extra arguments go to `tern serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
exec cargo run --release --locked --bin tern -- serve "$@"
