#!/usr/bin/env bash
# Compare mode of the metrics benchmark: the same remote_write load and the
# same PromQL range query against tern, Prometheus (Debian `prometheus`) and
# VictoriaMetrics (Debian `victoria-metrics`), one system after the other on
# loopback. For each it reports samples/s ingested, the range query's
# p50/p99, and bytes on disk per sample after a graceful stop (tern writes
# its head to Parquet; Prometheus keeps recent data in its WAL and head
# chunks, so its figure includes the WAL, as it would on a real disk), then
# the ratios tern/peer.
#
# Usage: scripts/bench-metrics-compare.sh [SERIES] [HOURS]
#   defaults: 10000 series scraped every 15 s for the 24 h before now
#   (57.6M samples); the query is a 24 h (HOURS) range at a 60 s step of
#   sum by (code) (rate(http_requests_total[5m])) over 30% of the series.
# Output: one JSON line per system and per ratio, also written to
# bench-results/metrics-compare.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
SERIES="${1:-10000}"
HOURS="${2:-24}"
QUERY='sum by (code) (rate(http_requests_total[5m]))'
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}"

bash scripts/setup.sh bench
cargo build --release --bin tern
BENCH=$(cargo bench --bench metrics_store --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="metrics_store" and m.get("executable"):
        print(m["executable"])' | tail -1)
TERN="$CARGO_TARGET_DIR/release/tern"
WORK=$(mktemp -d)
mkdir -p bench-results
OUT=bench-results/metrics-compare.jsonl
: >"$OUT"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

wait_up() { for _ in $(seq 1 150); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "$1 did not come up" >&2; return 1; }

# tern acknowledges a write once it is in its WAL and applies it to the store
# right after; wait until the store has caught up (at most 2 min), so the
# query is timed on everything that was acknowledged, as on the others.
settle_tern() {
  local t0=$SECONDS
  for _ in $(seq 1 600); do
    if curl -sf "$1/metrics" | awk '/^tern_store_queue_batches\{signal="metrics"\} / {q=$2} /^tern_wal_queue_bytes / {w=$2} END {exit !(q == 0 && w == 0)}'; then
      echo "tern applied the load $((SECONDS - t0)) s after the last acknowledgement" >&2
      return 0
    fi
    sleep 0.2
  done
  echo "tern did not catch up within 2 min" >&2
}

run() { # name write_url query_base data_dir pid
  local load query
  load=$("$BENCH" --bench remote-write "$2" "$SERIES" "$HOURS")
  echo "$1 load: $load" >&2
  if [ "$1" = tern ]; then settle_tern "$3"; fi
  query=$("$BENCH" --bench query "$3" "$QUERY" "$HOURS" 60 5)
  echo "$1 query: $query" >&2
  kill -TERM "$5"; wait "$5" 2>/dev/null || true
  local bytes
  bytes=$(du -sb "$4" | cut -f1)
  python3 - "$1" "$bytes" "$load" "$query" <<'PY' | tee -a "$OUT"
import json, sys
name, disk, load, query = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(json.dumps({"system": name, "samples": load["samples"], "samples_per_s": round(load["samples_per_s"]),
                  "failed_requests": load["failed_requests"], "retries": load["retries"],
                  "disk_bytes": disk, "bytes_per_sample": round(disk / max(load["samples"], 1), 3),
                  "query_result_series": query["result_series"],
                  "query_p50_ms": round(query["p50_ms"], 1), "query_p99_ms": round(query["p99_ms"], 1)}))
PY
}

mkdir -p "$WORK/tern" "$WORK/prom" "$WORK/vm"
"$TERN" serve --data-dir "$WORK/tern" --http-addr 127.0.0.1:19300 --otlp-grpc-addr 127.0.0.1:0 \
  --otlp-http-addr 127.0.0.1:0 --log-level warn 2>"$WORK/tern.log" &
T=$!; wait_up http://127.0.0.1:19300/readyz
run tern http://127.0.0.1:19300/api/v1/write http://127.0.0.1:19300 "$WORK/tern" $T

printf 'global:\n  scrape_interval: 1h\n' >"$WORK/prom.yml"
prometheus --config.file="$WORK/prom.yml" --storage.tsdb.path="$WORK/prom" \
  --storage.tsdb.retention.time=100y --web.listen-address=127.0.0.1:19090 \
  --web.enable-remote-write-receiver --log.level=warn 2>"$WORK/prom.log" &
P=$!; wait_up http://127.0.0.1:19090/-/ready
run prometheus http://127.0.0.1:19090/api/v1/write http://127.0.0.1:19090 "$WORK/prom" $P

victoria-metrics -storageDataPath="$WORK/vm" -httpListenAddr=127.0.0.1:19428 \
  -retentionPeriod=100y -loggerLevel=ERROR 2>"$WORK/vm.log" &
V=$!; wait_up http://127.0.0.1:19428/health
run victoria-metrics http://127.0.0.1:19428/api/v1/write http://127.0.0.1:19428 "$WORK/vm" $V

python3 - "$OUT" <<'PY' | tee -a "$OUT"
import json, sys
r = {x["system"]: x for x in map(json.loads, open(sys.argv[1])) if "system" in x}
t = r["tern"]
for peer in ("prometheus", "victoria-metrics"):
    p = r[peer]
    print(json.dumps({"ratio": f"tern/{peer}",
                      "ingest_rate": round(t["samples_per_s"] / max(p["samples_per_s"], 1e-9), 3),
                      "bytes_per_sample": round(t["bytes_per_sample"] / max(p["bytes_per_sample"], 1e-9), 3),
                      "query_p50": round(t["query_p50_ms"] / max(p["query_p50_ms"], 1e-9), 3)}))
PY
