"""Sends one multi-service trace to a tern server with the OpenTelemetry
Python SDK and prints the ids it created as JSON, for tests/it/traces.rs.

Two TracerProviders with different service.name stand for two services:
the frontend's SERVER span has a nested INTERNAL span and a CLIENT span
calling the backend; the backend's SERVER span (child of that CLIENT span,
context passed as it would be over the wire) has a nested INTERNAL span and
fails with an exception.

Usage: traces_e2e.py --protocol grpc|http --grpc HOST:PORT --http URL
"""

import argparse
import json
import sys
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def exporter(protocol, grpc_addr, http_url):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=grpc_addr, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{http_url}/v1/traces")


def provider(service, args):
    res = Resource.create({"service.name": service, "deployment.environment": "e2e"})
    tp = TracerProvider(resource=res)
    tp.add_span_processor(BatchSpanProcessor(exporter(args.protocol, args.grpc, args.http)))
    return tp


def hex_span(span):
    return format(span.get_span_context().span_id, "016x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", default="grpc")
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--frontend", default="shop-frontend")
    ap.add_argument("--backend", default="shop-backend")
    args = ap.parse_args()

    front_tp = provider(args.frontend, args)
    back_tp = provider(args.backend, args)
    front = front_tp.get_tracer("shop.frontend", "1.0")
    back = back_tp.get_tracer("shop.backend", "1.0")
    ids = {}

    with front.start_as_current_span(
        "GET /checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout"}
    ) as root:
        ids["root"] = hex_span(root)
        with front.start_as_current_span("validate cart") as validate:
            ids["validate"] = hex_span(validate)
            time.sleep(0.002)
        with front.start_as_current_span(
            "POST /charge", kind=SpanKind.CLIENT, attributes={"peer.service": args.backend}
        ) as client:
            ids["client"] = hex_span(client)
            carrier = {}
            TraceContextTextMapPropagator().inject(carrier)
            # The backend extracts the context from the request headers.
            ctx = TraceContextTextMapPropagator().extract(carrier)
            with back.start_as_current_span(
                "POST /charge", context=ctx, kind=SpanKind.SERVER,
                attributes={"http.route": "/charge", "http.status_code": 500},
            ) as server:
                ids["server"] = hex_span(server)
                with back.start_as_current_span("db query", attributes={"db.system": "postgresql"}) as db:
                    ids["db"] = hex_span(db)
                    time.sleep(0.02)
                try:
                    raise ValueError("card declined")
                except ValueError as e:
                    server.record_exception(e)
                    server.set_status(Status(StatusCode.ERROR, "card declined"))
        ids["trace_id"] = format(root.get_span_context().trace_id, "032x")

    ok = front_tp.force_flush(10_000) and back_tp.force_flush(10_000)
    front_tp.shutdown()
    back_tp.shutdown()
    ids["ok"] = bool(ok)
    print(json.dumps(ids))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
