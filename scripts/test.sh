#!/usr/bin/env bash
# Runs the whole test suite: installs the build and test dependencies, then
# unit, integration, end-to-end (OpenTelemetry Python SDK) and conformance
# tests, and the browser tests of the web UI (headless Chromium).
# Conformance tests read third-party data from $SHARED_TESTDATA, else from
# ../shared/testdata beside the checkout; without either they report
# themselves as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
if [ -z "${SHARED_TESTDATA:-}" ] && [ -d ../shared/testdata ]; then
  export SHARED_TESTDATA="$(cd ../shared/testdata && pwd)"
fi
# Benchmarks first, in test mode (each runs once, so they keep working), then
# every unit, integration, end-to-end and conformance test.
cargo test --locked --benches
cargo test --locked --lib --bins --tests "$@"
# Browser tests of the web UI: the debug binary in headless Chromium
# (screenshots in $CARGO_TARGET_DIR/ui-artifacts, else target/ui-artifacts).
cargo build --locked --bin tern
node --test web/tests/ui.test.mjs
