"""Sends metrics to a tern server with the OpenTelemetry Python SDK over
OTLP/HTTP protobuf, in several export rounds (the SDK re-exports cumulative
state on every flush and at shutdown), and prints what it recorded as JSON.

Usage: metrics_e2e.py --http http://127.0.0.1:4318 --service NAME --temporality cumulative|delta
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableGauge, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc", help="unused: this script exports over OTLP/HTTP")
    ap.add_argument("--http", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--temporality", default="cumulative")
    args = ap.parse_args()

    t = AggregationTemporality.DELTA if args.temporality == "delta" else AggregationTemporality.CUMULATIVE
    pref = {Counter: t, UpDownCounter: t, Histogram: t, ObservableGauge: AggregationTemporality.CUMULATIVE}
    exporter = OTLPMetricExporter(endpoint=f"{args.http}/v1/metrics", preferred_temporality=pref)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create(
        {"service.name": args.service, "service.instance.id": "i-1", "service.version": "1.2.3"}
    )
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    meter = mp.get_meter("e2e.meter", "0.1")
    counter = meter.create_counter("e2e_requests", unit="1", description="requests served")
    updown = meter.create_up_down_counter("e2e_inflight")
    hist = meter.create_histogram("e2e_latency", unit="ms")
    meter.create_observable_gauge("e2e_temperature", callbacks=[lambda _o: [Observation(7.5, {"room": "a"})]])

    ok = True
    counter.add(3, {"route": "/checkout"})
    updown.add(3)
    hist.record(1.0, {"route": "/checkout"})
    hist.record(5.0, {"route": "/checkout"})
    ok &= mp.force_flush(10_000)
    counter.add(2, {"route": "/checkout"})
    updown.add(-1)
    hist.record(50.0, {"route": "/checkout"})
    ok &= mp.force_flush(10_000)
    # Nothing new: a cumulative reader exports the same totals again.
    ok &= mp.force_flush(10_000)
    mp.shutdown()
    print(json.dumps({"ok": bool(ok)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
