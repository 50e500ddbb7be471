"""gRPC server instrumented with opentelemetry-instrumentation-grpc, for tests/interop_grpc.rs.

    grpc_server.py

A grpcio server (a thread pool) on 127.0.0.1, an ephemeral port, plaintext, instrumented
by GrpcInstrumentorServer with its own SDK tracer provider and the global propagator (the
Python default: W3C tracecontext and baggage). It serves helloworld.Greeter/SayHello with
no generated code (a generic handler on raw bytes, see grpc_proto.py):

- name "missing": aborts with NOT_FOUND, details "no such person";
- any other name: replies "hello {name}".

stdout, one line each: first the port, then for every call, before it is answered,
{"type": "call", "name", "traceparent" (the metadata received, or null), "trace_id",
"span_id" (the current span: the instrumentation's SERVER span)}, and every span as it
ends (JSON, see spans.py). The process exits when its stdin closes (so it never outlives
the test that started it) or on SIGTERM/SIGKILL.
"""

import os
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcInstrumentorServer

from grpc_proto import decode, encode
from spans import emit, tracer_provider


def say_hello(request: bytes, context) -> bytes:
    name = decode(request)
    metadata = dict(context.invocation_metadata())
    ctx = trace.get_current_span().get_span_context()
    emit(
        {
            "type": "call",
            "name": name,
            "traceparent": metadata.get("traceparent"),
            "trace_id": trace.format_trace_id(ctx.trace_id),
            "span_id": trace.format_span_id(ctx.span_id),
        }
    )
    if name == "missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such person")
    return encode(f"hello {name}")


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    provider = tracer_provider()
    GrpcInstrumentorServer().instrument(tracer_provider=provider)
    # `grpc.server` looked up now: the instrumentor replaced it.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "helloworld.Greeter",
                {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)},
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
