"""Span export shared by client.py and server.py: one JSON object per line on stdout.

Each span is exported as soon as it ends (SimpleSpanProcessor) through the SDK's own
ConsoleSpanExporter, with a formatter that writes one compact JSON line holding what the
Rust test asserts on (SpanData.to_json() has no trace flags nor parent remoteness):

    {"type": "span", "name", "kind": "CLIENT"|"SERVER"|..., "trace_id", "span_id",
     "trace_flags", "trace_state", "parent_span_id" (null for a root),
     "parent_is_remote", "status", "attributes": {...}}

Ids are lowercase hex without a 0x prefix, as in a traceparent header.
"""

import json
import sys
import threading

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id


class _LockedStdout:
    """sys.stdout with one writer at a time, so lines from concurrent threads never mix."""

    def __init__(self):
        self._lock = threading.Lock()

    def write(self, text):
        with self._lock:
            sys.stdout.write(text)

    def flush(self):
        with self._lock:
            sys.stdout.flush()


STDOUT = _LockedStdout()


def emit(obj):
    """Writes one JSON line to stdout and flushes it."""
    STDOUT.write(json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n")
    STDOUT.flush()


def span_line(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    parent = span.parent
    return (
        json.dumps(
            {
                "type": "span",
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": format_trace_id(ctx.trace_id),
                "span_id": format_span_id(ctx.span_id),
                "trace_flags": int(ctx.trace_flags),
                "trace_state": ctx.trace_state.to_header(),
                "parent_span_id": format_span_id(parent.span_id) if parent else None,
                "parent_is_remote": parent.is_remote if parent else None,
                "status": span.status.status_code.name,
                "attributes": dict(span.attributes or {}),
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        + "\n"
    )


def tracer_provider(**kwargs) -> TracerProvider:
    """An SDK tracer provider that exports every ended span to stdout at once."""
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(
        SimpleSpanProcessor(ConsoleSpanExporter(out=STDOUT, formatter=span_line))
    )
    return provider
