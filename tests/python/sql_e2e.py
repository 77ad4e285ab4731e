"""Sends traces, logs and metrics of two services to a tern server with the
OpenTelemetry Python SDK (OTLP/gRPC) and prints the truth the SQL API must
reproduce, as JSON, for tests/it/sql.rs.

Each of N orders is a `checkout` SERVER span of service `shop` with a
`charge` CLIENT span calling a `charge` SERVER span of service `pay` (context
passed as over the wire). Durations are set explicitly (start and end
times), every 5th order fails (error status on both server spans), and
every order logs one record from inside the `pay` server span: INFO
"charged order N" or ERROR "charge declined for order N". A counter
`orders` counts orders by outcome.

Usage: sql_e2e.py --grpc HOST:PORT --http URL --orders N
"""

import argparse
import json
import logging
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--orders", type=int, default=100)
    args = ap.parse_args()

    def res(service):
        return Resource.create({"service.name": service, "deployment.environment": "sql-e2e"})

    def tracer_provider(service):
        tp = TracerProvider(resource=res(service))
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=args.grpc, insecure=True)))
        return tp

    shop_tp, pay_tp = tracer_provider("shop"), tracer_provider("pay")
    shop, pay = shop_tp.get_tracer("sql.e2e"), pay_tp.get_tracer("sql.e2e")

    lp = LoggerProvider(resource=res("pay"))
    lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=args.grpc, insecure=True)))
    logger = logging.getLogger("sql.e2e")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=lp))

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=args.grpc, insecure=True), export_interval_millis=3_600_000
    )
    mp = MeterProvider(resource=res("shop"), metric_readers=[reader])
    orders = mp.get_meter("sql.e2e").create_counter("orders", description="orders by outcome")

    truth = {
        "spans": {"shop": 0, "pay": 0},
        "errors": {"shop": 0, "pay": 0},
        "shop_duration_ms_sum": 0,
        "logs": {"info": 0, "error": 0},
        "orders": {"ok": 0, "failed": 0},
        "slowest": None,
    }
    base = time.time_ns() - 10 * 60 * 10**9
    slowest = (-1, None)
    for i in range(args.orders):
        failed = i % 5 == 0
        start = base + i * 1_000_000_000
        shop_ms = 20 + (i % 7) * 10
        pay_ms = 5 + (i % 3) * 5
        root = shop.start_span("checkout", kind=SpanKind.SERVER, start_time=start,
                               attributes={"order.id": i})
        ctx = trace.set_span_in_context(root)
        client = shop.start_span("charge", context=ctx, kind=SpanKind.CLIENT, start_time=start + 1_000_000)
        carrier = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(client))
        server = pay.start_span("charge", context=TraceContextTextMapPropagator().extract(carrier),
                                kind=SpanKind.SERVER, start_time=start + 2_000_000)
        with trace.use_span(server, end_on_exit=False):
            if failed:
                logger.error("charge declined for order %d", i)
            else:
                logger.info("charged order %d", i)
        if failed:
            server.set_status(Status(StatusCode.ERROR, "declined"))
            root.set_status(Status(StatusCode.ERROR, "payment failed"))
        server.end(end_time=start + 2_000_000 + pay_ms * 1_000_000)
        client.end(end_time=start + 3_000_000 + pay_ms * 1_000_000)
        root.end(end_time=start + shop_ms * 1_000_000)
        truth["spans"]["shop"] += 2
        truth["spans"]["pay"] += 1
        truth["errors"]["shop"] += 1 if failed else 0
        truth["errors"]["pay"] += 1 if failed else 0
        truth["shop_duration_ms_sum"] += shop_ms
        truth["logs"]["error" if failed else "info"] += 1
        outcome = "failed" if failed else "ok"
        orders.add(1, {"outcome": outcome})
        truth["orders"][outcome] += 1
        if shop_ms > slowest[0]:
            slowest = (shop_ms, format(root.get_span_context().trace_id, "032x"), i)
    truth["slowest"] = {"duration_ms": slowest[0], "trace_id": slowest[1], "order": slowest[2]}

    ok = shop_tp.force_flush(10_000) and pay_tp.force_flush(10_000)
    ok = lp.force_flush(10_000) and ok
    ok = mp.force_flush(10_000) and ok
    shop_tp.shutdown()
    pay_tp.shutdown()
    lp.shutdown()
    mp.shutdown()
    truth["ok"] = bool(ok)
    print(json.dumps(truth))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
