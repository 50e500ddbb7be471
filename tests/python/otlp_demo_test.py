"""End-to-end check of the OTLP export of examples/demo.rs.

    python3 -m venv target/ci-venv
    target/ci-venv/bin/pip install -r tests/python/requirements.txt
    target/ci-venv/bin/python tests/python/otlp_demo_test.py

Starts an OTLP/HTTP receiver (http/protobuf, gzip or not) on 127.0.0.1 and an ephemeral
port, runs `cargo run --quiet --example demo` with OTEL_EXPORTER_OTLP_ENDPOINT pointing
at it, decodes what arrives with the official opentelemetry-proto messages, and checks
the traces and metrics of the demo's six requests:

1. GET /checkout/42   200  demo-client -> frontend -> backend (HTTP), frontend -> warehouse (gRPC)
2. GET /checkout/999  404  (the backend has no such item: no gRPC call)
3. GET /checkout/13   500  (the backend fails: no gRPC call)
4. GET /checkout/8    409  (the warehouse answers the gRPC call NOT_FOUND)
5. GET /report        200  (slow streamed response: 5 lines of "report line N\\n")
6. GET /checkout/7    200  sent with a hand-set traceparent, not through OtelClientLayer

Every checkout the backend answers 200 then reserves the item at the warehouse over gRPC
(`demo.Warehouse/Reserve`, tonic through the same layers): an RPC CLIENT span in the
frontend, an RPC SERVER span in the warehouse, and rpc.{client,server}.call.duration
instead of HTTP spans and metrics.

One line per check, then `N passed, M failed`; the exit code is 0 iff M == 0.

Environment:
    OTLP_DEMO_TIMEOUT  seconds allowed for `cargo run` (default 300: a cold build)
    OTLP_DEMO_DUMP     a file to write every decoded export request to (text format)
    CARGO              the cargo binary (default `cargo`)
"""

import gzip
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import zlib
from collections import defaultdict
from pathlib import Path

from google.protobuf import text_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

REPO = Path(__file__).resolve().parents[2]

SCOPE_NAME = "tower-otel-http"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.42.0"
DURATION_BOUNDS = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
]
RESERVE = "demo.Warehouse/Reserve"  # the gRPC method (rpc.method and span name)
INCOMING_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT_ID = "00f067aa0ba902b7"
# The /report handler streams "report line 1\n" ... "report line 5\n".
REPORT_BODY_SIZE = sum(len(f"report line {n}\n") for n in range(1, 6))

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
INTERNAL = trace_pb2.Span.SPAN_KIND_INTERNAL
STATUS_UNSET = trace_pb2.Status.STATUS_CODE_UNSET
STATUS_ERROR = trace_pb2.Status.STATUS_CODE_ERROR
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


# ---------------------------------------------------------------------------------------
# The OTLP/HTTP receiver.

ENDPOINTS = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
}


class Received:
    """Everything the receiver was sent, and what went wrong receiving it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (path, headers dict, decoded message)
        self.errors = []
        self.in_flight = 0
        self.last_activity = time.monotonic()

    def of(self, path):
        with self.lock:
            return [msg for p, _, msg in self.requests if p == path]

    def headers(self):
        with self.lock:
            return [(p, h) for p, h, _ in self.requests]


def read_body(handler):
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length", "0")))


def decode_body(body, encoding):
    encoding = (encoding or "identity").strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "identity":
        return body
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def make_handler(received):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            with received.lock:
                received.in_flight += 1
                received.last_activity = time.monotonic()
            try:
                self._handle()
            finally:
                with received.lock:
                    received.in_flight -= 1
                    received.last_activity = time.monotonic()

        def _handle(self):
            path = self.path.split("?", 1)[0]
            body = read_body(self)
            if path not in ENDPOINTS:
                self._answer(404, "text/plain", b"unknown OTLP path\n")
                with received.lock:
                    received.errors.append(f"POST to unexpected path {self.path}")
                return
            request_type, response_type = ENDPOINTS[path]
            try:
                raw = decode_body(body, self.headers.get("Content-Encoding"))
                message = request_type.FromString(raw)
            except Exception as e:  # noqa: BLE001 - reported as a failed check
                self._answer(400, "text/plain", f"{e}\n".encode())
                with received.lock:
                    received.errors.append(f"{path}: undecodable body: {e!r}")
                return
            with received.lock:
                received.requests.append((path, {k.lower(): v for k, v in self.headers.items()}, message))
            self._answer(200, "application/x-protobuf", response_type().SerializeToString())

        def _answer(self, status, content_type, payload):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            self._answer(405, "text/plain", b"POST only\n")

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    return Handler


def start_receiver():
    received = Received()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(received))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, received


def wait_quiet(received, quiet=0.5, limit=10.0):
    """Waits until no request is in flight and none has arrived for `quiet` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with received.lock:
            idle = received.in_flight == 0 and time.monotonic() - received.last_activity >= quiet
        if idle:
            return
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------
# Flattening what arrived.


def any_value(v):
    """An AnyValue as a (type, python value) pair: ints stay ints, strings strings."""
    kind = v.WhichOneof("value")
    if kind is None:
        return ("empty", None)
    if kind == "array_value":
        return ("array", tuple(any_value(x) for x in v.array_value.values))
    if kind == "kvlist_value":
        return ("kvlist", tuple((kv.key, any_value(kv.value)) for kv in v.kvlist_value.values))
    return (kind, getattr(v, kind))


def attrs(key_values):
    """Attributes as {key: (type, value)}."""
    return {kv.key: any_value(kv.value) for kv in key_values}


def service_of(resource):
    kind, value = attrs(resource.attributes).get("service.name", ("missing", None))
    return value if kind == "string_value" else f"<service.name {kind}: {value!r}>"


class SpanRow:
    def __init__(self, resource_spans, scope_spans, span):
        self.service = service_of(resource_spans.resource)
        self.resource_attrs = attrs(resource_spans.resource.attributes)
        self.resource_schema_url = resource_spans.schema_url
        self.scope = scope_spans.scope.name
        self.scope_version = scope_spans.scope.version
        self.scope_schema_url = scope_spans.schema_url
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_span_id = span.parent_span_id.hex()
        self.name = span.name
        self.kind = span.kind
        self.status = span.status.code
        self.status_message = span.status.message
        self.attrs = attrs(span.attributes)
        self.flags = span.flags
        self.start = span.start_time_unix_nano
        self.end = span.end_time_unix_nano

    def value(self, key):
        return self.attrs.get(key, (None, None))[1]

    def __repr__(self):
        return (
            f"<{self.service} {trace_pb2.Span.SpanKind.Name(self.kind)} {self.name!r} "
            f"{self.trace_id}/{self.span_id} parent={self.parent_span_id or '-'} "
            f"status={self.value('http.response.status_code')}>"
        )


def flatten_spans(requests):
    rows, seen = [], set()
    for request in requests:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    key = (span.trace_id, span.span_id)
                    if key in seen:  # a retried export
                        continue
                    seen.add(key)
                    rows.append(SpanRow(rs, ss, span))
    return rows


class MetricRow:
    """One metric stream of one service and scope, its points merged across exports."""

    def __init__(self, service, resource_schema_url, scope, scope_version, scope_schema_url, metric):
        self.service = service
        self.resource_schema_url = resource_schema_url
        self.scope = scope
        self.scope_version = scope_version
        self.scope_schema_url = scope_schema_url
        self.name = metric.name
        self.unit = metric.unit
        self.description = metric.description
        self.kind = metric.WhichOneof("data")
        self.temporality = None
        self.points = {}  # attribute key -> point (dict)
        self.exports = 0

    def merge(self, metric):
        self.exports += 1
        data = getattr(metric, self.kind)
        self.temporality = getattr(data, "aggregation_temporality", None)
        for p in data.data_points:
            point_attrs = attrs(p.attributes)
            key = tuple(sorted(point_attrs.items()))
            point = {"attrs": point_attrs, "time": p.time_unix_nano}
            if self.kind == "histogram":
                point.update(
                    count=p.count,
                    sum=p.sum,
                    bounds=list(p.explicit_bounds),
                    buckets=list(p.bucket_counts),
                )
            elif self.kind in ("sum", "gauge"):
                point["value"] = getattr(p, p.WhichOneof("value"))
            old = self.points.get(key)
            if old is None:
                self.points[key] = point
            elif self.temporality == DELTA and self.kind == "histogram":
                old["count"] += point["count"]
                old["sum"] += point["sum"]
                old["buckets"] = [a + b for a, b in zip(old["buckets"], point["buckets"])]
                old["time"] = max(old["time"], point["time"])
            elif self.temporality == DELTA and self.kind == "sum":
                old["value"] += point["value"]
            elif point["time"] >= old["time"]:
                # Cumulative (or a gauge): the latest point holds everything.
                self.points[key] = point

    def __repr__(self):
        return f"<{self.service} {self.name} ({self.kind}, {self.unit}) {len(self.points)} points>"


def flatten_metrics(requests):
    streams = {}
    for request in requests:
        for rm in request.resource_metrics:
            service = service_of(rm.resource)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    key = (service, sm.scope.name, metric.name)
                    if key not in streams:
                        streams[key] = MetricRow(
                            service,
                            rm.schema_url,
                            sm.scope.name,
                            sm.scope.version,
                            sm.schema_url,
                            metric,
                        )
                    streams[key].merge(metric)
    return streams


# ---------------------------------------------------------------------------------------
# A tiny check runner.


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS  {name}")
        else:
            self.failed += 1
            print(f"FAIL  {name}" + (f"\n      {detail}" if detail else ""))
        sys.stdout.flush()
        return ok

    def run(self, name, fn):
        """Runs a check function that raises AssertionError (or anything) on failure."""
        try:
            fn()
        except AssertionError as e:
            return self.check(name, False, str(e) or "assertion failed")
        except Exception:  # noqa: BLE001 - a crashing check is a failed check
            return self.check(name, False, traceback.format_exc().strip().replace("\n", "\n      "))
        return self.check(name, True)

    def summary(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1


def expect(cond, message):
    if not cond:
        raise AssertionError(message)


def expect_eq(actual, expected, what):
    expect(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


# ---------------------------------------------------------------------------------------
# The checks.


def is_rpc(span):
    return "rpc.system.name" in span.attrs


def http_spans(spans, service, kind, name=None):
    return [
        s
        for s in spans
        if s.service == service and s.kind == kind and not is_rpc(s) and (name is None or s.name == name)
    ]


def rpc_spans(spans, service, kind):
    return [s for s in spans if s.service == service and s.kind == kind and is_rpc(s)]


def int_attr(row_attrs, key):
    kind, value = row_attrs.get(key, (None, None))
    expect(kind == "int_value", f"{key} should be an int_value, got {kind} {value!r}")
    return value


def check_traces(c, spans):
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    services = {s.service for s in spans}
    ours = [s for s in spans if s.kind in (SERVER, CLIENT)]
    http_ours = [s for s in ours if not is_rpc(s)]
    rpc_ours = [s for s in ours if is_rpc(s)]

    c.check(
        "spans: resources with service.name frontend, backend, warehouse and demo-client",
        {"frontend", "backend", "warehouse", "demo-client"} <= services,
        f"services seen: {sorted(services)}",
    )
    c.check(
        "spans: no span without a service.name",
        all(not s.service.startswith("<") for s in spans),
        f"{[s for s in spans if s.service.startswith('<')]}",
    )

    d_client = http_spans(spans, "demo-client", CLIENT)
    f_server = http_spans(spans, "frontend", SERVER)
    f_client = http_spans(spans, "frontend", CLIENT)
    b_server = http_spans(spans, "backend", SERVER)
    f_rpc_client = rpc_spans(spans, "frontend", CLIENT)
    w_server = rpc_spans(spans, "warehouse", SERVER)
    internal = [s for s in spans if s.kind == INTERNAL]
    # The order id of each trace, from its frontend SERVER span's url.path.
    order_of = {
        s.trace_id: s.value("url.path").rsplit("/", 1)[-1] for s in f_server if s.name == "GET /checkout/{id}"
    }

    def counts():
        expect_eq(len(d_client), 5, "demo-client CLIENT spans (the hand-set request has none)")
        expect_eq(len(f_server), 6, "frontend SERVER spans")
        expect_eq(len(f_client), 5, "frontend HTTP CLIENT spans (one per checkout)")
        expect_eq(len(b_server), 5, "backend SERVER spans")
        expect_eq(len(f_rpc_client), 3, "frontend gRPC CLIENT spans (one per checkout the backend answered 200)")
        expect_eq(len(w_server), 3, "warehouse gRPC SERVER spans")
        expect_eq(len(internal), 5, "INTERNAL 'load order' spans")
        expect_eq(len(http_ours), 21, "HTTP SERVER + CLIENT spans in all")
        expect_eq(len(rpc_ours), 6, "RPC SERVER + CLIENT spans in all")
        expect_eq({s.service for s in rpc_ours}, {"frontend", "warehouse"}, "services with RPC spans")
        expect_eq(len({s.trace_id for s in spans}), 6, "distinct traces")

    c.run(
        "spans: 5 demo-client CLIENT, 6 frontend SERVER, 5+3 frontend CLIENT (HTTP+gRPC), "
        "5 backend SERVER, 3 warehouse SERVER, 6 traces",
        counts,
    )

    def kinds_and_names():
        expect_eq(
            sorted(s.name for s in d_client),
            ["GET /checkout/{id}"] * 4 + ["GET /report"],
            "demo-client CLIENT span names",
        )
        expect_eq(
            sorted(s.name for s in f_server),
            ["GET /checkout/{id}"] * 5 + ["GET /report"],
            "frontend SERVER span names",
        )
        expect_eq({s.name for s in f_client}, {"GET /inventory/{sku}"}, "frontend HTTP CLIENT span names")
        expect_eq({s.name for s in b_server}, {"GET /inventory/{sku}"}, "backend SERVER span names")
        expect_eq({s.name for s in f_rpc_client}, {RESERVE}, "frontend gRPC CLIENT span names (rpc.method)")
        expect_eq({s.name for s in w_server}, {RESERVE}, "warehouse SERVER span names (rpc.method)")
        expect_eq({s.kind for s in ours}, {SERVER, CLIENT}, "span kinds (enum values)")
        expect_eq({s.kind for s in spans if s.service == "warehouse"}, {SERVER}, "warehouse span kinds")
        expect_eq(SERVER, 2, "SPAN_KIND_SERVER enum value")
        expect_eq(CLIENT, 3, "SPAN_KIND_CLIENT enum value")

    c.run(
        f"spans: kinds SERVER/CLIENT, names 'GET /checkout/{{id}}', 'GET /report', 'GET /inventory/{{sku}}', '{RESERVE}'",
        kinds_and_names,
    )

    def backend_parents():
        for s in b_server:
            parent = by_id.get((s.trace_id, s.parent_span_id))
            expect(parent is not None, f"{s}: parent {s.parent_span_id} not among the spans of trace {s.trace_id}")
            expect(
                parent.service == "frontend" and parent.kind == CLIENT,
                f"{s}: parent is {parent}, expected a frontend CLIENT span",
            )

    c.run("parents: each backend SERVER span's parent is a frontend CLIENT span of its trace", backend_parents)

    def warehouse_parents():
        for s in w_server:
            parent = by_id.get((s.trace_id, s.parent_span_id))
            expect(
                parent is not None and parent.service == "frontend" and parent.kind == CLIENT and is_rpc(parent),
                f"{s}: parent is {parent}, expected a frontend gRPC CLIENT span",
            )
            expect_eq(parent.name, s.name, f"{s}: the frontend gRPC CLIENT span's name")
        expect_eq(len({s.trace_id for s in w_server}), 3, "traces with a warehouse SERVER span")

    c.run(
        "parents: each warehouse SERVER span's parent is a frontend gRPC CLIENT span of its trace "
        "(trace context over gRPC)",
        warehouse_parents,
    )

    def frontend_client_parents():
        for s in f_client + f_rpc_client:
            parent = by_id.get((s.trace_id, s.parent_span_id))
            expect(
                parent is not None and parent.service == "frontend" and parent.kind == SERVER,
                f"{s}: parent is {parent}, expected the frontend SERVER span",
            )

        for s in internal:
            parent = by_id.get((s.trace_id, s.parent_span_id))
            expect(
                parent is not None and parent.service == "frontend" and parent.kind == SERVER,
                f"{s}: parent is {parent}, expected the frontend SERVER span",
            )

    c.run(
        "parents: each frontend CLIENT, HTTP or gRPC, (and 'load order') span's parent is the frontend SERVER span",
        frontend_client_parents,
    )

    def frontend_server_parents():
        others = [s for s in f_server if s.trace_id != INCOMING_TRACE_ID]
        expect_eq(len(others), 5, "frontend SERVER spans outside the hand-set trace")
        for s in others:
            parent = by_id.get((s.trace_id, s.parent_span_id))
            expect(
                parent is not None and parent.service == "demo-client" and parent.kind == CLIENT,
                f"{s}: parent is {parent}, expected a demo-client CLIENT span",
            )
            expect_eq(parent.name, s.name, f"{s}: the demo-client span's name")
        for s in d_client:
            expect_eq(s.parent_span_id, "", f"{s}: parent of a demo-client root span")

    c.run("parents: each other frontend SERVER span's parent is a demo-client CLIENT span", frontend_server_parents)

    def handset_trace():
        trace = [s for s in spans if s.trace_id == INCOMING_TRACE_ID]
        expect(trace, f"no span with trace_id {INCOMING_TRACE_ID}")
        server = [s for s in trace if s.service == "frontend" and s.kind == SERVER]
        expect_eq(len(server), 1, "frontend SERVER spans in the hand-set trace")
        expect_eq(server[0].parent_span_id, INCOMING_PARENT_ID, "its parent_span_id")
        expect_eq(server[0].name, "GET /checkout/{id}", "its name")
        expect_eq(server[0].value("http.response.status_code"), 200, "its status code")
        expect_eq(
            sorted((s.service, s.kind) for s in trace),
            sorted(
                [
                    ("frontend", SERVER),
                    ("frontend", CLIENT),
                    ("frontend", CLIENT),
                    ("frontend", INTERNAL),
                    ("backend", SERVER),
                    ("warehouse", SERVER),
                ]
            ),
            "the hand-set trace's spans (no demo-client span; HTTP to the backend, gRPC to the warehouse)",
        )
        expect(server[0].flags & 0x100 and server[0].flags & 0x200,
               f"flags {server[0].flags:#x}: the parent should be marked remote (0x100|0x200)")

    c.run(f"parents: trace {INCOMING_TRACE_ID}: frontend SERVER span's parent is {INCOMING_PARENT_ID}", handset_trace)

    def trace_shape():
        traces = defaultdict(list)
        for s in spans:
            traces[s.trace_id].append(s)
        shapes = sorted(
            tuple(sorted((s.service, s.kind, s.name) for s in t)) for t in traces.values()
        )
        checkout = [
            ("backend", SERVER, "GET /inventory/{sku}"),
            ("demo-client", CLIENT, "GET /checkout/{id}"),
            ("frontend", INTERNAL, "load order"),
            ("frontend", SERVER, "GET /checkout/{id}"),
            ("frontend", CLIENT, "GET /inventory/{sku}"),
        ]
        reserve = [("frontend", CLIENT, RESERVE), ("warehouse", SERVER, RESERVE)]
        expected = sorted(
            # 42 and 8: HTTP to the backend, then gRPC to the warehouse.
            [tuple(sorted(checkout + reserve))] * 2
            # 999 and 13: the backend's error ends the checkout before any gRPC call.
            + [tuple(sorted(checkout))] * 2
            # 7: the hand-set traceparent, no demo-client span.
            + [tuple(sorted(x for x in checkout + reserve if x[0] != "demo-client"))]
            + [tuple(sorted([("demo-client", CLIENT, "GET /report"), ("frontend", SERVER, "GET /report")]))]
        )
        expect_eq(shapes, expected, "the six traces' spans")
        for s in spans:
            expect(s.start <= s.end, f"{s}: ends before it starts")
            parent = by_id.get((s.trace_id, s.parent_span_id))
            if parent is not None:
                expect(parent.start <= s.start, f"{s}: starts before its parent {parent}")

    c.run(
        "traces: checkouts of 7 spans (with gRPC) and 5 (without), the hand-set one of 6, /report of 2; "
        "children start after parents",
        trace_shape,
    )

    def report_duration():
        # Four 50 ms pauses between the five lines: the spans last until the body's end.
        for s in ours:
            if s.name == "GET /report":
                expect((s.end - s.start) / 1e9 >= 0.2, f"{s}: lasted {(s.end - s.start) / 1e6:.1f} ms, < 200 ms")

    c.run("spans: the streamed /report spans (server and client) last until the body's end (>= 200 ms)", report_duration)

    def server_attributes():
        for s in f_server + b_server:
            route = "/report" if s.name == "GET /report" else s.name.split(" ", 1)[1]
            expect_eq(s.attrs.get("http.route"), ("string_value", route), f"{s}: http.route")
            expect_eq(s.attrs.get("http.request.method"), ("string_value", "GET"), f"{s}: http.request.method")
            expect_eq(s.attrs.get("url.scheme"), ("string_value", "http"), f"{s}: url.scheme")
            expect(s.attrs.get("url.path", ("", ""))[1].startswith(route.split("{")[0]), f"{s}: url.path {s.attrs.get('url.path')}")
            int_attr(s.attrs, "http.response.status_code")
            expect_eq(s.attrs.get("network.protocol.version"), ("string_value", "1.1"), f"{s}: network.protocol.version")
            expect_eq(s.attrs.get("server.address"), ("string_value", "127.0.0.1"), f"{s}: server.address")
            int_attr(s.attrs, "server.port")
            expect("url.full" not in s.attrs, f"{s}: a server span has url.full")

    c.run("attributes: server spans have http.route, http.request.method, url.scheme, url.path, int status code", server_attributes)

    def client_attributes():
        for s in d_client + f_client:
            kind, full = s.attrs.get("url.full", (None, None))
            expect(kind == "string_value" and full.startswith("http://127.0.0.1:"), f"{s}: url.full {kind} {full!r}")
            expect_eq(s.attrs.get("http.request.method"), ("string_value", "GET"), f"{s}: http.request.method")
            template = s.name.split(" ", 1)[1]
            expect_eq(s.attrs.get("url.template"), ("string_value", template), f"{s}: url.template")
            expect_eq(s.attrs.get("server.address"), ("string_value", "127.0.0.1"), f"{s}: server.address")
            int_attr(s.attrs, "server.port")
            int_attr(s.attrs, "http.response.status_code")
            expect("http.route" not in s.attrs, f"{s}: a client span has http.route")
        paths = sorted(s.value("url.full").split("/", 3)[3] for s in d_client)
        expect_eq(paths, ["checkout/13", "checkout/42", "checkout/8", "checkout/999", "report"], "demo-client url.full paths")
        paths = sorted(s.value("url.full").split("/", 3)[3] for s in f_client)
        expect_eq(
            paths,
            ["inventory/sku-13", "inventory/sku-42", "inventory/sku-7", "inventory/sku-8", "inventory/sku-999"],
            "frontend url.full paths",
        )

    c.run("attributes: client spans have url.full, url.template, server.address/port, int status code", client_attributes)

    def statuses():
        # Every HTTP span of a trace shares the trace's status code, from backend to
        # demo-client; but for order 8 the backend has the item (200) and the warehouse
        # does not (gRPC NOT_FOUND), so the frontend answers 409.
        expected = {"42": 200, "999": 404, "13": 500, "8": 409, "7": 200}
        for s in http_ours:
            if s.name == "GET /report":
                code = 200
            else:
                trace_paths = [t.value("url.path") or t.value("url.full") for t in spans if t.trace_id == s.trace_id]
                order = {p.rstrip("/").split("/")[-1].removeprefix("sku-") for p in trace_paths if p}
                expect_eq(len(order), 1, f"{s}: order id of its trace")
                order = order.pop()
                code = expected[order]
                if order == "8" and s.name == "GET /inventory/{sku}":
                    code = 200
            expect_eq(s.attrs.get("http.response.status_code"), ("int_value", code), f"{s}: http.response.status_code")

    c.run("attributes: http.response.status_code is an int and matches each scenario (200, 404, 500, 409)", statuses)

    def error_type_and_status():
        for s in http_ours:
            code = s.value("http.response.status_code")
            if code >= 500:
                expect_eq(s.attrs.get("error.type"), ("string_value", str(code)), f"{s}: error.type")
                expect_eq(s.status, STATUS_ERROR, f"{s}: status code")
            elif code >= 400 and s.kind == SERVER:
                expect("error.type" not in s.attrs, f"{s}: error.type {s.attrs.get('error.type')} on a 4xx server span")
                expect_eq(s.status, STATUS_UNSET, f"{s}: status code (4xx server span)")
            elif code >= 400 and s.kind == CLIENT:
                expect_eq(s.attrs.get("error.type"), ("string_value", str(code)), f"{s}: error.type")
                expect_eq(s.status, STATUS_ERROR, f"{s}: status code (4xx client span)")
            else:
                expect("error.type" not in s.attrs, f"{s}: error.type on a success")
                expect_eq(s.status, STATUS_UNSET, f"{s}: status code")
        n500 = [s for s in http_ours if s.value("http.response.status_code") == 500]
        expect_eq(len(n500), 4, "spans with status 500 (demo-client, frontend x2, backend)")
        n4xx = sorted(
            s.value("http.response.status_code")
            for s in http_ours
            if 400 <= s.value("http.response.status_code") < 500 and s.kind == SERVER
        )
        expect_eq(n4xx, [404, 404, 409], "SERVER spans with a 4xx status")

    c.run(
        "status: error.type='500' and ERROR on 5xx spans; 4xx (404, 409) server spans UNSET, 4xx client spans ERROR",
        error_type_and_status,
    )

    def rpc_attributes():
        # Exactly the RPC attributes (network.peer.* aside: present only where the layer
        # knows the connection); nothing of HTTP's.
        required = {"rpc.system.name", "rpc.method", "rpc.response.status_code", "server.address", "server.port"}
        optional = {"error.type", "network.peer.address", "network.peer.port"}
        ports = set()
        for s in rpc_ours:
            keys = set(s.attrs)
            expect(required <= keys, f"{s}: missing {sorted(required - keys)}")
            expect(keys <= required | optional, f"{s}: unexpected attributes {sorted(keys - required - optional)}")
            expect_eq(s.attrs.get("rpc.system.name"), ("string_value", "grpc"), f"{s}: rpc.system.name")
            expect_eq(s.attrs.get("rpc.method"), ("string_value", RESERVE), f"{s}: rpc.method")
            expect_eq(s.attrs.get("server.address"), ("string_value", "127.0.0.1"), f"{s}: server.address")
            kind, _ = s.attrs.get("rpc.response.status_code")
            expect_eq(kind, "string_value", f"{s}: rpc.response.status_code is the code's name")
            ports.add(int_attr(s.attrs, "server.port"))
        # The client's from OtelClientLayerBuilder::target, the server's from :authority.
        expect_eq(len(ports), 1, "server.port: the warehouse's port on every RPC span, client and server")

    c.run(
        "attributes: RPC spans have exactly rpc.system.name=grpc, rpc.method, rpc.response.status_code, "
        "server.address/port (client: from target)",
        rpc_attributes,
    )

    def rpc_statuses():
        got = sorted((order_of.get(s.trace_id), s.kind) for s in rpc_ours)
        want = sorted((order, kind) for order in ("42", "8", "7") for kind in (SERVER, CLIENT))
        expect_eq(got, want, "(order, kind) of the RPC spans: only checkouts the backend answered 200")
        for s in rpc_ours:
            code = "NOT_FOUND" if order_of.get(s.trace_id) == "8" else "OK"
            expect_eq(s.attrs.get("rpc.response.status_code"), ("string_value", code), f"{s}: rpc.response.status_code")
            if code == "NOT_FOUND" and s.kind == CLIENT:
                # Any code but OK fails a client call.
                expect_eq(s.attrs.get("error.type"), ("string_value", "NOT_FOUND"), f"{s}: error.type")
                expect_eq(s.status, STATUS_ERROR, f"{s}: status code (NOT_FOUND client span)")
                expect_eq(s.status_message, "sku-8 is not stocked here", f"{s}: status message (the grpc-message)")
            else:
                # NOT_FOUND is not a server error (only UNKNOWN, DEADLINE_EXCEEDED, ...).
                expect("error.type" not in s.attrs, f"{s}: error.type {s.attrs.get('error.type')}")
                expect_eq(s.status, STATUS_UNSET, f"{s}: status code")

    c.run(
        "status: gRPC OK spans UNSET; NOT_FOUND: server span UNSET, client span ERROR with error.type=NOT_FOUND "
        "and the grpc-message",
        rpc_statuses,
    )

    def scopes():
        for s in ours:
            expect_eq(s.scope, SCOPE_NAME, f"{s}: scope name")
            expect_eq(s.scope_schema_url, SCHEMA_URL, f"{s}: ScopeSpans.schema_url")
            expect_eq(s.scope_version, "0.1.0", f"{s}: scope version")
        for s in internal:
            expect_eq(s.scope, "frontend-handlers", f"{s}: scope of the handler's own span")

    c.run(f"scope: every SERVER/CLIENT span's scope is {SCOPE_NAME} 0.1.0 with schema_url {SCHEMA_URL}", scopes)


def check_metrics(c, streams):
    def stream(service, name):
        s = streams.get((service, SCOPE_NAME, name))
        expect(s is not None, f"no {name} from {service} in scope {SCOPE_NAME}; got "
               f"{sorted(k for k in streams if k[0] == service)}")
        return s

    def points_by(s, *keys):
        out = defaultdict(list)
        for p in s.points.values():
            out[tuple(p["attrs"].get(k, (None, None))[1] for k in keys)].append(p)
        return out

    def server_duration(service, expected):
        def run():
            s = stream(service, "http.server.request.duration")
            expect_eq(s.kind, "histogram", "kind")
            expect_eq(s.unit, "s", "unit")
            expect_eq(s.temporality, CUMULATIVE, "temporality")
            for p in s.points.values():
                expect_eq(p["bounds"], DURATION_BOUNDS, "explicit bounds")
                expect_eq(len(p["buckets"]), len(DURATION_BOUNDS) + 1, "bucket count")
                expect_eq(sum(p["buckets"]), p["count"], "sum of bucket counts")
                expect(p["attrs"].get("http.route", (None,))[0] == "string_value", f"http.route in {p['attrs']}")
                int_attr(p["attrs"], "http.response.status_code")
                expect_eq(p["attrs"].get("http.request.method"), ("string_value", "GET"), "http.request.method")
                expect_eq(p["attrs"].get("url.scheme"), ("string_value", "http"), "url.scheme")
                for key in ("url.path", "url.full", "client.address", "server.port", "user_agent.original"):
                    expect(key not in p["attrs"], f"high-cardinality {key} on a metric point: {p['attrs']}")
                code = p["attrs"]["http.response.status_code"][1]
                expect_eq(p["attrs"].get("error.type"), ("string_value", "500") if code == 500 else None, "error.type")
            got = {k: sum(p["count"] for p in v) for k, v in points_by(s, "http.route", "http.response.status_code").items()}
            expect_eq(got, expected, "counts by (http.route, status)")
        return run

    c.run(
        "metrics: frontend http.server.request.duration (s, histogram, semconv bounds, route + int status)",
        server_duration(
            "frontend",
            {
                ("/checkout/{id}", 200): 2,
                ("/checkout/{id}", 404): 1,
                ("/checkout/{id}", 409): 1,
                ("/checkout/{id}", 500): 1,
                ("/report", 200): 1,
            },
        ),
    )
    c.run(
        "metrics: backend http.server.request.duration (s, histogram, semconv bounds, route + int status)",
        server_duration("backend", {("/inventory/{sku}", 200): 3, ("/inventory/{sku}", 404): 1, ("/inventory/{sku}", 500): 1}),
    )

    def client_duration(service, expected):
        def run():
            s = stream(service, "http.client.request.duration")
            expect_eq(s.kind, "histogram", "kind")
            expect_eq(s.unit, "s", "unit")
            for p in s.points.values():
                expect_eq(p["bounds"], DURATION_BOUNDS, "explicit bounds")
                expect_eq(sum(p["buckets"]), p["count"], "sum of bucket counts")
                int_attr(p["attrs"], "http.response.status_code")
                int_attr(p["attrs"], "server.port")
                expect_eq(p["attrs"].get("server.address"), ("string_value", "127.0.0.1"), "server.address")
                expect_eq(p["attrs"].get("http.request.method"), ("string_value", "GET"), "http.request.method")
                expect("url.full" not in p["attrs"], f"url.full on a metric point: {p['attrs']}")
                code = p["attrs"]["http.response.status_code"][1]
                expect_eq(p["attrs"].get("error.type"), ("string_value", str(code)) if code >= 400 else None, "error.type")
            got = {k: sum(p["count"] for p in v) for k, v in points_by(s, "url.template", "http.response.status_code").items()}
            expect_eq(got, expected, "counts by (url.template, status)")
        return run

    c.run(
        "metrics: demo-client http.client.request.duration (s, histogram, semconv bounds)",
        client_duration(
            "demo-client",
            {
                ("/checkout/{id}", 200): 1,
                ("/checkout/{id}", 404): 1,
                ("/checkout/{id}", 409): 1,
                ("/checkout/{id}", 500): 1,
                ("/report", 200): 1,
            },
        ),
    )
    c.run(
        "metrics: frontend http.client.request.duration (s, histogram, semconv bounds)",
        client_duration("frontend", {("/inventory/{sku}", 200): 3, ("/inventory/{sku}", 404): 1, ("/inventory/{sku}", 500): 1}),
    )

    def rpc_duration(service, name, client):
        def run():
            s = stream(service, name)
            expect_eq(s.kind, "histogram", "kind")
            expect_eq(s.unit, "s", "unit")
            expect_eq(s.temporality, CUMULATIVE, "temporality")
            for p in s.points.values():
                expect_eq(p["bounds"], DURATION_BOUNDS, "explicit bounds")
                expect_eq(len(p["buckets"]), len(DURATION_BOUNDS) + 1, "bucket count")
                expect_eq(sum(p["buckets"]), p["count"], "sum of bucket counts")
                code = p["attrs"].get("rpc.response.status_code", (None, None))[1]
                want = {
                    "rpc.system.name": ("string_value", "grpc"),
                    "rpc.method": ("string_value", RESERVE),
                    "rpc.response.status_code": ("string_value", code),
                }
                if client:
                    # The client's server.* (from target) are on its metric; the server's are opt-in.
                    want["server.address"] = ("string_value", "127.0.0.1")
                    want["server.port"] = p["attrs"].get("server.port")
                    int_attr(p["attrs"], "server.port")
                    if code != "OK":
                        want["error.type"] = ("string_value", code)
                expect_eq(p["attrs"], want, "a point's attributes (exactly)")
            got = {k: sum(p["count"] for p in v) for k, v in points_by(s, "rpc.method", "rpc.response.status_code").items()}
            expect_eq(got, {(RESERVE, "OK"): 2, (RESERVE, "NOT_FOUND"): 1}, "counts by (rpc.method, rpc.response.status_code)")
        return run

    c.run(
        "metrics: warehouse rpc.server.call.duration (s, histogram, semconv bounds, method + code name, no error.type "
        "for NOT_FOUND)",
        rpc_duration("warehouse", "rpc.server.call.duration", client=False),
    )
    c.run(
        "metrics: frontend rpc.client.call.duration (s, histogram, semconv bounds, method + code name, server.*, "
        "error.type=NOT_FOUND)",
        rpc_duration("frontend", "rpc.client.call.duration", client=True),
    )

    def response_body_size():
        for service in ("frontend", "backend"):
            for name in ("http.server.response.body.size", "http.server.request.body.size"):
                if name == "http.server.request.body.size" and (service, SCOPE_NAME, name) not in streams:
                    continue  # every request is a bodiless GET: nothing to measure
                s = stream(service, name)
                expect_eq(s.kind, "histogram", f"{service} {name}: kind")
                expect_eq(s.unit, "By", f"{service} {name}: unit")
                for p in s.points.values():
                    int_attr(p["attrs"], "http.response.status_code")
                    expect_eq(sum(p["buckets"]), p["count"], f"{service} {name}: sum of bucket counts")
        # The handlers' bodies, byte for byte (see examples/demo.rs).
        sku = lambda n: len(f'{{"sku":"sku-{n}","in_stock":7}}')  # noqa: E731
        order = lambda n: len(f"order {n}: ") + sku(n) + len(f" reservation R-{n}\n")  # noqa: E731
        expected = {
            "frontend": {
                ("/checkout/{id}", 200): (2, order(42) + order(7)),
                ("/checkout/{id}", 404): (1, len("order 999: no such item\n")),
                ("/checkout/{id}", 409): (1, len("order 8: sku-8 is out of stock\n")),
                ("/checkout/{id}", 500): (1, len("order 13: inventory unavailable\n")),
                ("/report", 200): (1, REPORT_BODY_SIZE),
            },
            "backend": {
                ("/inventory/{sku}", 200): (3, sku(42) + sku(8) + sku(7)),
                ("/inventory/{sku}", 404): (1, len("no such item\n")),
                ("/inventory/{sku}", 500): (1, len("inventory database unavailable\n")),
            },
        }
        for service, want in expected.items():
            s = stream(service, "http.server.response.body.size")
            got = {
                k: (sum(p["count"] for p in v), sum(p["sum"] for p in v))
                for k, v in points_by(s, "http.route", "http.response.status_code").items()
            }
            expect_eq(got, want, f"{service}: (count, bytes) by (http.route, status)")
            # Bodiless GETs: no request body size at all, or (older behaviour) zeros.
            s = streams.get((service, SCOPE_NAME, "http.server.request.body.size"))
            if s is not None:
                got = sum(p["sum"] for p in s.points.values())
                expect_eq(got, 0, f"{service}: request body bytes (every request is a bodiless GET)")

    c.run(f"metrics: http.server.response.body.size in By, bytes exact per route and status (/report: {REPORT_BODY_SIZE})", response_body_size)

    def streams_exactly():
        got = {service: sorted(n for s2, scope, n in streams if s2 == service and scope == SCOPE_NAME)
               for service in ("demo-client", "frontend", "backend", "warehouse")}
        # http.server.request.body.size may be absent: every request is a bodiless GET.
        optional = "http.server.request.body.size"
        got = {service: [n for n in names if n != optional] for service, names in got.items()}
        server = ["http.server.request.duration", "http.server.response.body.size"]
        want = {
            "demo-client": ["http.client.request.duration"],
            "frontend": sorted(["http.client.request.duration", "rpc.client.call.duration"] + server),
            "backend": server,
            # gRPC calls get the RPC metric only: no http.* for them.
            "warehouse": ["rpc.server.call.duration"],
        }
        expect_eq(got, want, "metric names per service (active requests and client body sizes are opt-in)")
        services = sorted({k[0] for k in streams})
        expect_eq(services, ["backend", "demo-client", "frontend", "warehouse"], "services with metrics")
        others = sorted(k for k in streams if k[1] != SCOPE_NAME)
        expect_eq(others, [], "metrics from other scopes")

    c.run("metrics: exactly the default instruments per service (rpc.* for gRPC), nothing opt-in", streams_exactly)

    def report_metric_duration():
        for service, name, key in (
            ("frontend", "http.server.request.duration", "http.route"),
            ("demo-client", "http.client.request.duration", "url.template"),
        ):
            [p] = points_by(stream(service, name), key)[("/report",)]
            expect(p["sum"] >= 0.2, f"{service} {name} /report: {p['sum'] * 1e3:.1f} ms < 200 ms")

    c.run("metrics: the /report durations (server and client) cover the streamed body (>= 200 ms)", report_metric_duration)

    def no_backend_client():
        names = {k[2] for k in streams if k[0] in ("backend", "warehouse")}
        expect(not any(".client." in n for n in names), f"backend or warehouse has client metrics: {names}")
        names = {k[2] for k in streams if k[0] == "demo-client"}
        expect(not any(".server." in n for n in names), f"demo-client has server metrics: {names}")
        names = {k[2] for k in streams if k[0] != "frontend"}
        expect(not any(n.startswith("rpc.client.") for n in names), f"an RPC client metric outside frontend: {names}")

    c.run("metrics: no client metrics from backend or warehouse, no server metrics from demo-client", no_backend_client)

    def metric_scopes():
        ours = [s for s in streams.values() if s.name.startswith(("http.", "rpc."))]
        expect(ours, "no http.* metrics at all")
        for s in ours:
            expect_eq(s.scope, SCOPE_NAME, f"{s}: scope name")
            expect_eq(s.scope_schema_url, SCHEMA_URL, f"{s}: ScopeMetrics.schema_url")
            expect_eq(s.scope_version, "0.1.0", f"{s}: scope version")

    c.run(f"scope: every http.* and rpc.* metric's scope is {SCOPE_NAME} 0.1.0 with schema_url {SCHEMA_URL}", metric_scopes)


def run_demo(command, env, timeout):
    """Runs the demo in its own process group; on timeout, kills the group (cargo and the
    demo it started). Returns (exit code or None on timeout, stdout, stderr)."""
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="replace", start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return process.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = process.communicate()
        return None, stdout, f"timed out after {timeout:g} s\n{stderr}"


def self_test(endpoint, received):
    """Posts one plain and one gzip-encoded request, then forgets them."""
    import urllib.request

    message = trace_service_pb2.ExportTraceServiceRequest()
    span = message.resource_spans.add().scope_spans.add().spans.add()
    span.name = "self-test"
    span.trace_id = bytes(range(1, 17))
    span.span_id = bytes(range(1, 9))
    body = message.SerializeToString()
    for encoding, payload in (("identity", body), ("gzip", gzip.compress(body))):
        request = urllib.request.Request(
            f"{endpoint}/v1/traces",
            data=payload,
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": encoding},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            expect_eq(response.status, 200, f"{encoding}: HTTP status")
            expect_eq(response.headers.get("Content-Type"), "application/x-protobuf", f"{encoding}: content type")
            answer = trace_service_pb2.ExportTraceServiceResponse.FromString(response.read())
            expect(not answer.HasField("partial_success"), f"{encoding}: a partial success")
    got = received.of("/v1/traces")
    expect_eq([m.resource_spans[0].scope_spans[0].spans[0].name for m in got], ["self-test"] * 2, "decoded")
    expect_eq(received.errors, [], "receiver errors")
    with received.lock:
        received.requests.clear()


def main():
    checks = Checks()
    server, received = start_receiver()
    port = server.server_address[1]
    endpoint = f"http://127.0.0.1:{port}"
    print(f"OTLP receiver on {endpoint}")

    checks.run("receiver: decodes plain and gzip-encoded OTLP bodies (self-test)", lambda: self_test(endpoint, received))

    env = dict(os.environ)
    for var in list(env):
        if var.startswith("OTEL_"):
            del env[var]  # nothing from the caller's environment changes the export
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env["NO_COLOR"] = "1"
    timeout = float(os.environ.get("OTLP_DEMO_TIMEOUT", "300"))
    cargo = os.environ.get("CARGO", "cargo")
    command = [cargo, "run", "--quiet", "--example", "demo"]
    print(f"running {' '.join(command)} (timeout {timeout:.0f} s)")
    started = time.monotonic()
    returncode, stdout, stderr = run_demo(command, env, timeout)
    print(f"demo finished in {time.monotonic() - started:.1f} s (exit code {returncode})")
    wait_quiet(received)
    server.shutdown()

    ok = checks.check("demo: exits with code 0", returncode == 0,
                      f"exit code {returncode}; stderr:\n{stderr[-4000:]}\nstdout tail:\n{stdout[-2000:]}")
    checks.check(
        "demo: reports that every OTLP export succeeded",
        "every export succeeded" in stdout,
        "\n      ".join(stdout.split("\nOTLP\n", 1)[-1].strip().splitlines()[-6:]),
    )
    checks.check("receiver: every request decoded, none to an unknown path", not received.errors, f"{received.errors}")

    traces = received.of("/v1/traces")
    metrics = received.of("/v1/metrics")
    dump = os.environ.get("OTLP_DEMO_DUMP")
    if dump:
        with open(dump, "w") as f:
            for path, message in [("/v1/traces", m) for m in traces] + [("/v1/metrics", m) for m in metrics]:
                f.write(f"===== {path}\n{text_format.MessageToString(message)}\n")
        print(f"decoded export requests written to {dump}")

    checks.check("receiver: got trace exports", bool(traces), "no POST /v1/traces")
    checks.check("receiver: got metric exports", bool(metrics), "no POST /v1/metrics")
    checks.check(
        "receiver: exports sent as application/x-protobuf",
        all(h.get("content-type") == "application/x-protobuf" for _, h in received.headers()),
        f"{sorted({h.get('content-type') for _, h in received.headers()}, key=str)}",
    )
    if not ok and not traces and not metrics:
        return checks.summary()

    spans = flatten_spans(traces)
    streams = flatten_metrics(metrics)
    print(f"received {len(traces)} trace and {len(metrics)} metric export requests: "
          f"{len(spans)} spans, {len(streams)} metric streams")
    check_traces(checks, spans)
    check_metrics(checks, streams)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
