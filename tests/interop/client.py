"""HTTP client instrumented with opentelemetry-instrumentation-requests, for tests/interop.rs.

    client.py URL [--baggage KEY=VALUE]... [--upstream-tracestate LIST] [--unsampled]

Sends one GET to URL with `requests`, instrumented by RequestsInstrumentor with its own
SDK tracer provider, and the global propagator (the Python default: W3C tracecontext and
baggage). Writes to stdout, one JSON object per line: the spans as they end (see
spans.py), then {"type": "response", "status", "body"}. Exits non-zero on any failure.

--baggage            entries put in the current context's baggage before the request.
--upstream-tracestate  send from inside a remote parent (random ids, flags 03: sampled
                     and random) carrying this tracestate, as if this client were
                     serving a traced request.
--unsampled          an ALWAYS_OFF sampler: no span is recorded, the traceparent sent has
                     the sampled flag off.
"""

import argparse
import random

import requests
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from spans import emit, tracer_provider


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--baggage", action="append", default=[])
    parser.add_argument("--upstream-tracestate")
    parser.add_argument("--unsampled", action="store_true")
    args = parser.parse_args()

    provider = tracer_provider(sampler=ALWAYS_OFF) if args.unsampled else tracer_provider()
    RequestsInstrumentor().instrument(tracer_provider=provider)

    ctx = context.get_current()
    for entry in args.baggage:
        key, value = entry.split("=", 1)
        ctx = baggage.set_baggage(key, value, context=ctx)
    if args.upstream_tracestate is not None:
        upstream = SpanContext(
            trace_id=random.getrandbits(128) or 1,
            span_id=random.getrandbits(64) or 1,
            is_remote=True,
            # Sampled, and the W3C Level 2 random-trace-id flag (0x02).
            trace_flags=TraceFlags(0x03),
            trace_state=TraceState.from_header([args.upstream_tracestate]),
        )
        ctx = trace.set_span_in_context(NonRecordingSpan(upstream), ctx)
        emit(
            {
                "type": "upstream",
                "trace_id": trace.format_trace_id(upstream.trace_id),
                "span_id": trace.format_span_id(upstream.span_id),
            }
        )

    token = context.attach(ctx)
    try:
        response = requests.get(args.url, timeout=10)
    finally:
        context.detach(token)
    provider.shutdown()
    emit({"type": "response", "status": response.status_code, "body": response.text})


if __name__ == "__main__":
    main()
