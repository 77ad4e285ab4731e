#!/usr/bin/env bash
# Sends the same remote_write load to tern, Prometheus (Debian `prometheus`)
# and VictoriaMetrics (Debian `victoria-metrics`), one after the other on
# loopback, and prints samples/s and bytes on disk per sample for each, with
# the ratios tern/peer. Disk is measured after a graceful stop (tern flushes
# its head to Parquet; Prometheus keeps recent data in its WAL/head chunks,
# so its figure includes the WAL, as it would on a real disk).
#
# Usage: scripts/bench-metrics-compare.sh [SECONDS]   (release build used)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-30}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

if ! command -v prometheus >/dev/null || ! command -v victoria-metrics >/dev/null; then
  apt-get install -y prometheus victoria-metrics >/dev/null
fi
cargo build --release --bin tern
BENCH=$(cargo bench --bench metrics_store --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="metrics_store" and m.get("executable"):
        print(m["executable"])' | tail -1)
TERN="$CARGO_TARGET_DIR/release/tern"
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

wait_up() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "$1 did not come up" >&2; return 1; }

run() { # name url data_dir pid
  local out
  out=$("$BENCH" remote-write "$2" "$SECONDS_EACH")
  kill -TERM "$4"; wait "$4" 2>/dev/null || true
  local bytes samples
  bytes=$(du -sb "$3" | cut -f1)
  samples=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples"])')
  rate=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_per_s"])')
  echo "{\"system\":\"$1\",\"samples\":$samples,\"samples_per_s\":$rate,\"disk_bytes\":$bytes,\"bytes_per_sample\":$(python3 -c "print($bytes/max($samples,1))")}" | tee -a "$WORK/results.jsonl"
}

mkdir -p "$WORK/tern" "$WORK/prom" "$WORK/vm"
"$TERN" serve --data-dir "$WORK/tern" --http-addr 127.0.0.1:19300 --otlp-grpc-addr 127.0.0.1:0 \
  --otlp-http-addr 127.0.0.1:0 --log-level warn 2>"$WORK/tern.log" &
T=$!; wait_up http://127.0.0.1:19300/readyz
run tern http://127.0.0.1:19300/api/v1/write "$WORK/tern" $T

printf 'global:\n  scrape_interval: 1h\n' >"$WORK/prom.yml"
prometheus --config.file="$WORK/prom.yml" --storage.tsdb.path="$WORK/prom" \
  --web.listen-address=127.0.0.1:19090 --web.enable-remote-write-receiver \
  --log.level=warn 2>"$WORK/prom.log" &
P=$!; wait_up http://127.0.0.1:19090/-/ready
run prometheus http://127.0.0.1:19090/api/v1/write "$WORK/prom" $P

victoria-metrics -storageDataPath="$WORK/vm" -httpListenAddr=127.0.0.1:19428 \
  -retentionPeriod=100y -loggerLevel=ERROR 2>"$WORK/vm.log" &
V=$!; wait_up http://127.0.0.1:19428/health
run victoria-metrics http://127.0.0.1:19428/api/v1/write "$WORK/vm" $V

python3 - "$WORK/results.jsonl" <<'PY'
import json, sys
r = {x["system"]: x for x in map(json.loads, open(sys.argv[1]))}
t = r["tern"]
for peer in ("prometheus", "victoria-metrics"):
    p = r[peer]
    print(json.dumps({"ratio": f"tern/{peer}",
                      "ingest_rate": round(t["samples_per_s"] / max(p["samples_per_s"], 1e-9), 3),
                      "bytes_per_sample": round(t["bytes_per_sample"] / max(p["bytes_per_sample"], 1e-9), 3)}))
PY
