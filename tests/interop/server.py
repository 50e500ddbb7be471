"""WSGI server instrumented with opentelemetry-instrumentation-wsgi, for tests/interop.rs.

    server.py

A stdlib wsgiref server (one thread per request) on 127.0.0.1, an ephemeral port, whose
application is wrapped in OpenTelemetryMiddleware with its own SDK tracer provider and
the global propagator (the Python default: W3C tracecontext and baggage).

stdout, one line each: first the port, then every span as it ends (JSON, see spans.py).
The process exits when its stdin closes (so it never outlives the test that started it,
even one that was killed) or on SIGTERM/SIGKILL.

Every request is answered 200 with a JSON object describing what the server saw:
{"traceparent", "tracestate", "baggage" (the raw headers, or null), "context_baggage"
(the baggage in the current OpenTelemetry context, i.e. what the middleware extracted),
"trace_id", "span_id" (the current span, the middleware's SERVER span)}. The context
baggage is also set on the server span as attributes `test.baggage.<key>`.
"""

import json
import os
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry import baggage, trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

from spans import tracer_provider


def app(environ, start_response):
    span = trace.get_current_span()
    seen = baggage.get_all()
    for key, value in seen.items():
        span.set_attribute(f"test.baggage.{key}", str(value))
    ctx = span.get_span_context()
    body = json.dumps(
        {
            "traceparent": environ.get("HTTP_TRACEPARENT"),
            "tracestate": environ.get("HTTP_TRACESTATE"),
            "baggage": environ.get("HTTP_BAGGAGE"),
            "context_baggage": {k: str(v) for k, v in seen.items()},
            "trace_id": trace.format_trace_id(ctx.trace_id),
            "span_id": trace.format_span_id(ctx.span_id),
        },
        sort_keys=True,
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    provider = tracer_provider()
    server = make_server(
        "127.0.0.1",
        0,
        OpenTelemetryMiddleware(app, tracer_provider=provider),
        server_class=ThreadingWSGIServer,
        handler_class=QuietHandler,
    )
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
