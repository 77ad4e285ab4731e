"""Sends a small, known set of telemetry to a tern server with the
OpenTelemetry Python SDK (OTLP/HTTP) for the browser tests of the web UI,
and prints what it sent as JSON.

Two services: `ui-frontend` serves GET /checkout and calls `ui-checkout`,
whose `charge card` span fails with an exception. Logs are written inside
the spans (so they carry the trace id); a counter `ui_requests` (exported as
`ui_requests_total`) gets points on two routes.

Usage: ui_seed.py --http URL [--grpc HOST:PORT]
"""

import argparse
import json
import logging
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


class Service:
    def __init__(self, name, http):
        res = Resource.create({"service.name": name, "service.version": "2.0.1", "host.name": "web-1"})
        self.tp = TracerProvider(resource=res)
        self.tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{http}/v1/traces")))
        self.lp = LoggerProvider(resource=res)
        self.lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{http}/v1/logs")))
        self.tracer = self.tp.get_tracer("ui.seed", "1.0")
        self.log = logging.getLogger(f"ui.{name}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=self.lp))

    def flush(self):
        ok = self.tp.force_flush(10_000) and self.lp.force_flush(10_000)
        self.tp.shutdown()
        self.lp.shutdown()
        return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", required=True)
    ap.add_argument("--grpc", default="")
    args = ap.parse_args()

    front = Service("ui-frontend", args.http)
    back = Service("ui-checkout", args.http)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{args.http}/v1/metrics"), export_interval_millis=3_600_000
    )
    mp = MeterProvider(resource=Resource.create({"service.name": "ui-frontend"}), metric_readers=[reader])
    counter = mp.get_meter("ui.seed").create_counter("ui_requests", description="requests served")

    with front.tracer.start_as_current_span(
        "GET /checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout", "http.status_code": 500}
    ) as root:
        front.log.info("checkout request received", extra={"order_id": "o-42"})
        with front.tracer.start_as_current_span("POST checkout", kind=SpanKind.CLIENT):
            with back.tracer.start_as_current_span("process order", kind=SpanKind.SERVER) as server:
                back.log.info("processing order o-42")
                with back.tracer.start_as_current_span("charge card", kind=SpanKind.INTERNAL) as charge:
                    try:
                        raise ValueError("card declined by issuer")
                    except ValueError as e:
                        charge.record_exception(e)
                        charge.set_status(Status(StatusCode.ERROR, "declined"))
                        back.log.error("payment failed for order o-42")
                server.set_status(Status(StatusCode.ERROR, "payment failed"))
        root.set_status(Status(StatusCode.ERROR))
        trace_id = format(root.get_span_context().trace_id, "032x")
    counter.add(5, {"route": "/checkout"})
    counter.add(2, {"route": "/cart"})
    mp.force_flush(10_000)
    counter.add(3, {"route": "/checkout"})

    ok = front.flush() and back.flush() and mp.force_flush(10_000)
    mp.shutdown()
    print(json.dumps({"ok": bool(ok), "trace_id": trace_id}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
