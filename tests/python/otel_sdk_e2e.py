"""Sends traces, logs and metrics to a tern server with the OpenTelemetry
Python SDK and prints what it sent as JSON, for the Rust end-to-end tests.

Usage: otel_sdk_e2e.py --protocol grpc|http|http-gzip --grpc HOST:PORT --http URL --service NAME
"""

import argparse
import json
import logging
import sys

from opentelemetry import metrics, trace
from opentelemetry.metrics import Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics import Counter, Histogram, UpDownCounter, ObservableGauge
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def exporters(protocol, grpc_addr, http_url):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

        kw = dict(endpoint=grpc_addr, insecure=True, compression=Compression.Gzip)
        return OTLPSpanExporter(**kw), OTLPLogExporter(**kw), OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    comp = Compression.Gzip if protocol == "http-gzip" else Compression.NoCompression
    return (
        OTLPSpanExporter(endpoint=f"{http_url}/v1/traces", compression=comp),
        OTLPLogExporter(endpoint=f"{http_url}/v1/logs", compression=comp),
        lambda **kw: OTLPMetricExporter(endpoint=f"{http_url}/v1/metrics", compression=comp, **kw),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--temporality", default="cumulative")
    args = ap.parse_args()

    resource = Resource.create({"service.name": args.service, "service.version": "1.2.3"})
    span_exp, log_exp, metric_exp_factory = exporters(args.protocol, args.grpc, args.http)
    if args.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

        make_metric_exp = lambda **kw: OTLPMetricExporter(
            endpoint=args.grpc, insecure=True, compression=Compression.Gzip, **kw
        )
    else:
        make_metric_exp = metric_exp_factory

    temporality = (
        AggregationTemporality.DELTA if args.temporality == "delta" else AggregationTemporality.CUMULATIVE
    )
    pref = {Counter: temporality, UpDownCounter: AggregationTemporality.CUMULATIVE,
            Histogram: temporality, ObservableGauge: AggregationTemporality.CUMULATIVE}
    reader = PeriodicExportingMetricReader(
        make_metric_exp(preferred_temporality=pref), export_interval_millis=3_600_000
    )

    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(span_exp))
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    mp = MeterProvider(resource=resource, metric_readers=[reader])

    tracer = tp.get_tracer("e2e.tracer", "0.1")
    logger = logging.getLogger("e2e")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=lp))

    meter = mp.get_meter("e2e.meter")
    counter = meter.create_counter("e2e_requests", unit="1", description="requests served")
    updown = meter.create_up_down_counter("e2e_inflight")
    hist = meter.create_histogram("e2e_latency", unit="ms")
    meter.create_observable_gauge("e2e_temperature", callbacks=[lambda _opts: [Observation(7.5, {"room": "a"})]])

    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout"}) as root:
        logger.info("checkout started", extra={"order_id": "o-17", "items": 3})
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as child:
            logger.warning("card retry")
            try:
                raise ValueError("card declined")
            except ValueError as e:
                child.record_exception(e)
                child.set_status(Status(StatusCode.ERROR, "declined"))
                logger.error("payment failed")
        trace_id = format(root.get_span_context().trace_id, "032x")
        root_id = format(root.get_span_context().span_id, "016x")
        child_id = format(child.get_span_context().span_id, "016x")

    counter.add(3, {"route": "/checkout"})
    counter.add(2, {"route": "/checkout"})
    updown.add(3)
    updown.add(-1)
    for v in (1.0, 5.0, 50.0):
        hist.record(v, {"route": "/checkout"})

    ok = tp.force_flush(10_000) and lp.force_flush(10_000) and mp.force_flush(10_000)
    tp.shutdown()
    lp.shutdown()
    mp.shutdown()
    print(json.dumps({"ok": bool(ok), "trace_id": trace_id, "root_span_id": root_id, "child_span_id": child_id}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
