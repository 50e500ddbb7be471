"""gRPC client instrumented with opentelemetry-instrumentation-grpc, for tests/interop_grpc.rs.

    grpc_client.py TARGET NAME

Calls /helloworld.Greeter/SayHello on TARGET (host:port, plaintext) once with
HelloRequest{name: NAME}, through a grpcio channel instrumented by GrpcInstrumentorClient,
with no generated code (raw bytes, see grpc_proto.py). The SDK tracer provider is the
global one: GrpcInstrumentorClient 0.66b2 ignores `instrument(tracer_provider=...)` (it
looks for `tracer_provider` among the arguments of each `insecure_channel` call, which
grpcio itself would reject). The propagator is the global one too (the Python default:
W3C tracecontext and baggage).

Writes to stdout, one JSON object per line: the spans as they end (see spans.py), then
{"type": "response", "code" (the status code's name, "OK" on success), "message" (the
reply's text, or null), "details" (the error's details, or null)}. A call that fails
with a gRPC status is reported, not raised; any other failure exits non-zero.
"""

import sys

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient

from grpc_proto import decode, encode
from spans import emit, tracer_provider


def main():
    target, name = sys.argv[1], sys.argv[2]
    provider = tracer_provider()
    trace.set_tracer_provider(provider)
    GrpcInstrumentorClient().instrument()

    with grpc.insecure_channel(target) as channel:
        say_hello = channel.unary_unary("/helloworld.Greeter/SayHello")
        try:
            reply = say_hello(encode(name), timeout=10)
            result = {"code": "OK", "message": decode(reply), "details": None}
        except grpc.RpcError as err:
            result = {"code": err.code().name, "message": None, "details": err.details()}
    provider.shutdown()
    emit({"type": "response", **result})


if __name__ == "__main__":
    main()
