"""Sends log records to a tern server with the OpenTelemetry Python SDK
(logging handler, OTLP exporter) and prints what it sent as JSON, for the
Rust log search end-to-end test.

Usage: logs_e2e.py --protocol grpc|http --grpc HOST:PORT --http URL --service NAME --count N
"""

import argparse
import json
import logging
import sys
import time

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider


def log_exporter(protocol, grpc_addr, http_url):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=grpc_addr, insecure=True)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=f"{http_url}/v1/logs")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args()

    resource = Resource.create({"service.name": args.service, "deployment.environment": "e2e"})
    tp = TracerProvider(resource=resource)
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exporter(args.protocol, args.grpc, args.http)))
    logger = logging.getLogger("logs.e2e")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=lp))
    tracer = tp.get_tracer("logs.e2e")

    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]
    names = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}
    counts = {"debug": 0, "info": 0, "warn": 0, "error": 0}
    templates = [
        "GET /api/cart/{i} served in {ms}ms",
        "connection reset by peer while talking to db-{n}",
        "payment {i} declined: insufficient funds",
        "cache miss for key user:{i}",
        "upstream timeout after {ms}ms",
    ]
    sent = {"timeout": 0, "connection reset": 0, "status_500": 0, "phrase_reversed": 0}
    start_ns = time.time_ns()
    with tracer.start_as_current_span("handle order") as span:
        ctx = span.get_span_context()
        trace_id = format(ctx.trace_id, "032x")
        span_id = format(ctx.span_id, "016x")
        for i in range(20):
            logger.info("order step %d inside the span", i, extra={"step": i, "order.id": "o-42"})
            counts["info"] += 1
    for i in range(args.count):
        level = levels[i % 4]
        t = templates[i % 5]
        msg = t.format(i=i, ms=100 + i, n=i % 3)
        status = 500 if i % 7 == 0 else 200
        if "timeout" in msg:
            sent["timeout"] += 1
        if "connection reset" in msg:
            sent["connection reset"] += 1
        if status == 500:
            sent["status_500"] += 1
        logger.log(level, msg, extra={"http.status_code": status, "user.tier": "gold" if i % 2 else "free"})
        counts[names[level]] += 1
    ok = lp.force_flush(10_000)
    end_ns = time.time_ns()
    lp.shutdown()
    tp.shutdown()
    print(json.dumps({
        "ok": bool(ok),
        "trace_id": trace_id,
        "span_id": span_id,
        "in_span": 20,
        "counts": counts,
        "sent": sent,
        "total": sum(counts.values()),
        "start_ns": start_ns,
        "end_ns": end_ns,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
