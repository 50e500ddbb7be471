//! gRPC interop with OpenTelemetry implementations nobody here wrote: grpcio and the
//! official Python gRPC instrumentation (opentelemetry-instrumentation-grpc), over
//! loopback h2c, with tests/interop/grpc_*.py.
//!
//! - A Python client (GrpcInstrumentorClient) calls our tonic server wrapped in
//!   `OtelLayer`: our SERVER span is the child of its CLIENT span.
//! - Our tonic client (`OtelClientLayer` with a `target`, around a `Channel`) calls a
//!   Python grpcio server (GrpcInstrumentorServer): its SERVER span is the child of our
//!   CLIENT span.
//! - A failing call each way (NOT_FOUND): an error on both clients, not on either server.
//!
//! Both sides' exported spans are asserted: ours through the in-memory exporter, the
//! Python ones from the JSON lines the scripts write to stdout (tests/interop/spans.py).
//! opentelemetry-instrumentation-grpc 0.66b2 still emits the old RPC conventions (span
//! name `/{service}/{method}`, `rpc.system`, `rpc.service` and the short `rpc.method`,
//! an integer `rpc.grpc.status_code`, `net.peer.*`): the tests assert what it emits, and
//! that both sides name the same call.
//!
//! The Python interpreter is `OTEL_INTEROP_PYTHON`, a Python with
//! tests/interop/requirements.txt installed. Without it every test is skipped (passes,
//! with a note on stderr):
//!
//! ```text
//! python3 -m venv target/ci-venv
//! target/ci-venv/bin/pip install -r tests/interop/requirements.txt
//! OTEL_INTEROP_PYTHON=$PWD/target/ci-venv/bin/python cargo test --all-features --test interop_grpc
//! ```

#[path = "interop/common.rs"]
#[macro_use]
mod common;
#[path = "grpc/greeter.rs"]
mod greeter;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::*;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::trace::SpanData;
use serde_json::{json, Value as Json};
use support::*;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Endpoint;
use tower::ServiceBuilder;

use greeter::greeter_client::GreeterClient;
use greeter::greeter_server::{Greeter, GreeterServer};
use greeter::{HelloReply, HelloRequest};

/// Our `rpc.method` and span name for the call.
const SAY_HELLO: &str = "helloworld.Greeter/SayHello";

/// `network.peer.*`, which this test does not pin down (tonic's server gives the layer
/// no peer address; a channel's local port is unknown here).
const PEER: [&str; 2] = ["network.peer.address", "network.peer.port"];

// ------------------------------------------------------------------------------------
// Python processes (the plumbing is in tests/interop/common.rs)

/// The environment of the scripts beside [`python_command`]'s: grpcio reads
/// `no_grpc_proxy` too.
const GRPC_ENV: [(&str, &str); 1] = [("no_grpc_proxy", "127.0.0.1,localhost")];

/// What tests/interop/grpc_client.py wrote.
struct ClientOutput {
    spans: Vec<PySpan>,
    /// The `response` line: `code`, `message`, `details`.
    response: Json,
}

/// Runs tests/interop/grpc_client.py against `addr` with HelloRequest{name}, to
/// completion (bounded by [`PYTHON_TIMEOUT`]; the process is killed if it takes longer).
async fn run_python_client(python: &PathBuf, addr: SocketAddr, name: &str) -> ClientOutput {
    let mut cmd = python_command(python, "grpc_client.py", &GRPC_ENV);
    cmd.arg(addr.to_string()).arg(name);
    let (stdout, stderr) = run_to_completion(cmd, "Python gRPC client").await;
    let lines: Vec<Json> = stdout.lines().map(parse_line).collect();
    let of_type = |t: &str| -> Vec<&Json> { lines.iter().filter(|l| l["type"] == t).collect() };
    let spans = of_type("span").into_iter().map(PySpan::from_json).collect();
    let responses = of_type("response");
    assert_eq!(responses.len(), 1, "one response line:\n{stdout}\n{stderr}");
    ClientOutput {
        spans,
        response: responses[0].clone(),
    }
}

fn parse_line(line: &str) -> Json {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// tests/interop/grpc_server.py, running until dropped.
impl PythonServer {
    async fn start(python: &PathBuf) -> Self {
        let cmd = python_command(python, "grpc_server.py", &GRPC_ENV);
        Self::spawn(cmd, "Python gRPC server").await
    }

    fn of_type(&self, t: &str) -> Vec<Json> {
        self.lines()
            .iter()
            .map(|line| parse_line(line))
            .filter(|l| l["type"] == t)
            .collect()
    }

    /// The `call` lines: what the handler saw.
    fn calls(&self) -> Vec<Json> {
        self.of_type("call")
    }

    /// Waits (up to 5 s) for `n` exported spans, then a little longer, and asserts that
    /// there are exactly `n`.
    async fn exactly_spans(&self, n: usize) -> Vec<PySpan> {
        self.exactly(n, |server| {
            server
                .of_type("span")
                .iter()
                .map(PySpan::from_json)
                .collect()
        })
        .await
    }
}

/// One span the Python SDK exported (see tests/interop/spans.py).
#[derive(Debug)]
struct PySpan {
    name: String,
    kind: String,
    trace_id: String,
    span_id: String,
    trace_flags: u64,
    parent_span_id: Option<String>,
    parent_is_remote: Option<bool>,
    status: String,
    attributes: BTreeMap<String, Json>,
}

impl PySpan {
    fn from_json(j: &Json) -> Self {
        let string = |key: &str| {
            j[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} in {j}"))
                .to_string()
        };
        let attributes = j["attributes"]
            .as_object()
            .unwrap_or_else(|| panic!("attributes in {j}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self {
            name: string("name"),
            kind: string("kind"),
            trace_id: string("trace_id"),
            span_id: string("span_id"),
            trace_flags: j["trace_flags"].as_u64().unwrap(),
            parent_span_id: j["parent_span_id"].as_str().map(str::to_string),
            parent_is_remote: j["parent_is_remote"].as_bool(),
            status: string("status"),
            attributes,
        }
    }

    fn attr(&self, key: &str) -> &Json {
        self.attributes.get(key).unwrap_or(&Json::Null)
    }

    /// Asserts that `self` is the child of `parent`, one of our spans, across the wire.
    fn assert_child_of(&self, parent: &SpanData) {
        assert_eq!(self.trace_id, hex_trace_id(parent), "{self:#?}");
        assert_eq!(
            self.parent_span_id.as_deref(),
            Some(hex_span_id(parent).as_str()),
            "{self:#?}"
        );
        assert_eq!(self.parent_is_remote, Some(true), "{self:#?}");
        assert_eq!(
            self.trace_flags,
            u64::from(parent.span_context.trace_flags().to_u8()),
            "{self:#?}"
        );
    }
}

/// Asserts that our `span` is the child of the Python span `parent`, across the wire.
fn assert_rust_child_of(span: &SpanData, parent: &PySpan) {
    assert_eq!(hex_trace_id(span), parent.trace_id, "{span:#?}");
    assert_eq!(
        span.parent_span_id.to_string(),
        parent.span_id,
        "{span:#?} should be the child of {parent:#?}"
    );
    assert!(span.parent_span_is_remote, "{span:#?}");
    assert_eq!(
        u64::from(span.span_context.trace_flags().to_u8()),
        parent.trace_flags,
        "{span:#?}"
    );
}

// ------------------------------------------------------------------------------------
// What each side records

/// The Python client span (GrpcInstrumentorClient 0.66b2, old conventions) of a call
/// that ended with gRPC code `code` (a number): a root CLIENT span named
/// `/helloworld.Greeter/SayHello`, sampled with the W3C random-trace-id flag, status
/// ERROR for any code but OK.
fn assert_python_client_span(span: &PySpan, code: u8) {
    assert_eq!(span.kind, "CLIENT", "{span:#?}");
    assert_eq!(span.name, "/helloworld.Greeter/SayHello", "{span:#?}");
    assert_eq!(span.parent_span_id, None, "{span:#?}");
    assert_eq!(span.trace_flags, 0x03, "sampled | random: {span:#?}");
    assert_eq!(
        span.status,
        if code == 0 { "UNSET" } else { "ERROR" },
        "{span:#?}"
    );
    let want: BTreeMap<String, Json> = [
        ("rpc.grpc.status_code", json!(code)),
        ("rpc.method", json!("SayHello")),
        ("rpc.service", json!("helloworld.Greeter")),
        ("rpc.system", json!("grpc")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(span.attributes, want, "{span:#?}");
}

/// The Python server span (GrpcInstrumentorServer 0.66b2, old conventions) of a call
/// from our tonic client that ended with gRPC code `code`: a SERVER span named
/// `/helloworld.Greeter/SayHello`, status UNSET for the codes that are not the server's
/// fault (NOT_FOUND included).
fn assert_python_server_span(span: &PySpan, code: u8) {
    assert_eq!(span.kind, "SERVER", "{span:#?}");
    assert_eq!(span.name, "/helloworld.Greeter/SayHello", "{span:#?}");
    assert_eq!(span.status, "UNSET", "{span:#?}");
    // The peer is our channel's socket; its port (a string, as the instrumentation
    // splits it out of grpcio's `ipv4:127.0.0.1:PORT`) is not known here.
    let peer_port = span.attr("net.peer.port").as_str().unwrap_or_default();
    assert!(peer_port.parse::<u16>().is_ok(), "{span:#?}");
    // tonic's user agent.
    let user_agent = span.attr("rpc.user_agent").as_str().unwrap_or_default();
    assert!(user_agent.starts_with("tonic/"), "{span:#?}");
    let want: BTreeMap<String, Json> = [
        ("net.peer.ip", json!("127.0.0.1")),
        ("net.peer.name", json!("localhost")),
        ("net.peer.port", json!(peer_port)),
        ("rpc.grpc.status_code", json!(code)),
        ("rpc.method", json!("SayHello")),
        ("rpc.service", json!("helloworld.Greeter")),
        ("rpc.system", json!("grpc")),
        ("rpc.user_agent", json!(user_agent)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(span.attributes, want, "{span:#?}");
}

/// Both sides name the same call: the Python span's name is `/` + ours, and its
/// `rpc.service` + `/` + short `rpc.method` is our fully qualified `rpc.method`.
fn assert_same_call(ours: &SpanData, py: &PySpan) {
    assert_eq!(py.name, format!("/{}", ours.name));
    let py_method = format!(
        "{}/{}",
        py.attr("rpc.service").as_str().unwrap(),
        py.attr("rpc.method").as_str().unwrap()
    );
    assert_eq!(
        attr(&ours.attributes, "rpc.method"),
        Some(s(&py_method)),
        "{ours:#?}"
    );
}

/// Our RPC span of kind `kind` for a call of `addr`'s SayHello that ended with `code`:
/// exactly the current conventions' attributes (`network.peer.*` aside), status and
/// `error.type` by `error`.
fn assert_our_span(span: &SpanData, kind: &SpanKind, addr: SocketAddr, code: &str, error: bool) {
    assert_eq!(&span.span_kind, kind, "{span:#?}");
    assert_eq!(span.name, SAY_HELLO, "{span:#?}");
    let mut want = vec![
        ("rpc.system.name", s("grpc")),
        ("rpc.method", s(SAY_HELLO)),
        ("rpc.response.status_code", s(code)),
        ("server.address", s("127.0.0.1")),
        ("server.port", Value::I64(addr.port().into())),
    ];
    if error {
        want.push(("error.type", s(code)));
    }
    let got: Vec<(String, Value)> = typed_set(&span.attributes)
        .into_iter()
        .filter(|(k, _)| !PEER.contains(&k.as_str()))
        .collect();
    assert_eq!(got, expected_set(&want), "{span:#?}");
    if error {
        assert!(
            matches!(span.status, Status::Error { .. }),
            "expected an error status: {span:#?}"
        );
    } else {
        assert_eq!(span.status, Status::Unset, "{span:#?}");
    }
}

// ------------------------------------------------------------------------------------
// Our side: a tonic server and client

/// `helloworld.Greeter` with `SayHello` as in tests/grpc.rs (`hello {name}`; `missing`
/// → NOT_FOUND "no such person"), recording the span context each call ran in. The
/// streaming methods are not used here.
#[derive(Clone, Debug, Default)]
struct Svc {
    seen: Arc<Mutex<Vec<SpanContext>>>,
}

#[tonic::async_trait]
impl Greeter for Svc {
    async fn say_hello(
        &self,
        req: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        self.seen
            .lock()
            .unwrap()
            .push(Context::current().span().span_context().clone());
        let name = req.into_inner().name;
        if name == "missing" {
            return Err(tonic::Status::not_found("no such person"));
        }
        Ok(tonic::Response::new(HelloReply {
            message: format!("hello {name}"),
        }))
    }

    type SayManyStream = futures_util::stream::Empty<Result<HelloReply, tonic::Status>>;

    async fn say_many(
        &self,
        _req: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<Self::SayManyStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }

    async fn collect(
        &self,
        _req: tonic::Request<tonic::Streaming<HelloRequest>>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }

    type ChatStream = futures_util::stream::Empty<Result<HelloReply, tonic::Status>>;

    async fn chat(
        &self,
        _req: tonic::Request<tonic::Streaming<HelloRequest>>,
    ) -> Result<tonic::Response<Self::ChatStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }
}

/// Serves [`Svc`] with tonic on 127.0.0.1, `ts`'s `OtelLayer` around the routes.
async fn serve_greeter(ts: &Telemetry) -> (SocketAddr, Arc<Mutex<Vec<SpanContext>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = Svc::default();
    let seen = svc.seen.clone();
    let router = tonic::transport::Server::builder()
        .layer(ts.server().build())
        .add_service(GreeterServer::new(svc));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, seen)
}

/// A generated client over a channel to `addr`, `tc`'s `OtelClientLayer` (told the
/// channel's target) around the channel.
async fn connect(
    tc: &Telemetry,
    addr: SocketAddr,
) -> GreeterClient<tower_otel_http::OtelClient<tonic::transport::Channel>> {
    let target = format!("http://{addr}");
    let channel = Endpoint::from_shared(target.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect to the Python gRPC server");
    let svc = ServiceBuilder::new()
        .layer(tc.client_layer().target(target).build())
        .service(channel);
    GreeterClient::new(svc)
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

/// After a call from the Python client to our server that ended with gRPC code `code`
/// (`name`, ours): the Python client's only span, a root; our only span, a SERVER span,
/// its child, without failing (not the server's fault for `NOT_FOUND`); both name the
/// same call. Our span and the Python one.
async fn check_python_client_call(
    ts: &Telemetry,
    addr: SocketAddr,
    out: ClientOutput,
    code: u8,
    name: &str,
) -> (SpanData, PySpan) {
    assert_eq!(out.spans.len(), 1, "{:#?}", out.spans);
    let py_client = out.spans.into_iter().next().unwrap();
    assert_python_client_span(&py_client, code);

    ts.wait_spans(1).await;
    let server = ts.settle_spans(1).await.remove(0);
    assert_rust_child_of(&server, &py_client);
    assert_our_span(&server, &SpanKind::Server, addr, name, false);
    assert_same_call(&server, &py_client);
    (server, py_client)
}

/// After a call from our client to the Python server that ended with gRPC code `code`
/// (`name`, ours; a failure when `error`): our only span, a root CLIENT span; the Python
/// server's only span, its child, not failed; both name the same call. Our span and the
/// Python one.
async fn check_our_client_call(
    tc: &Telemetry,
    server: &PythonServer,
    code: u8,
    name: &str,
    error: bool,
) -> (SpanData, PySpan) {
    tc.wait_spans(1).await;
    let ours = tc.settle_spans(1).await.remove(0);
    assert_eq!(ours.parent_span_id, SpanId::INVALID);
    assert_our_span(&ours, &SpanKind::Client, server.addr, name, error);

    let py = server.exactly_spans(1).await.remove(0);
    py.assert_child_of(&ours);
    assert_python_server_span(&py, code);
    assert_same_call(&ours, &py);
    (ours, py)
}

// ------------------------------------------------------------------------------------
// Python client → our server

/// A grpcio client (GrpcInstrumentorClient) calls our tonic server with `OtelLayer`:
/// our SERVER span is the child of its CLIENT span, with the current RPC conventions,
/// and the handler runs in our span's context.
#[tokio::test]
async fn python_grpc_client_is_the_parent_of_our_tonic_server_span() {
    let python = python_or_skip!();
    let ts = Telemetry::new();
    let (addr, seen) = serve_greeter(&ts).await;

    let out = run_python_client(&python, addr, "ada").await;
    assert_eq!(
        out.response,
        json!({"type": "response", "code": "OK", "message": "hello ada", "details": null})
    );

    // Python: one root CLIENT span. Ours: one SERVER span, its child.
    let (server, _) = check_python_client_call(&ts, addr, out, 0, "OK").await;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen, vec![server.span_context]);
}

/// The Python client asks our server for `missing`: NOT_FOUND. Our SERVER span records
/// it without failing (not the server's fault); the Python CLIENT span is an error with
/// `rpc.grpc.status_code = 5`; the trace still crosses.
#[tokio::test]
async fn python_grpc_client_gets_not_found_from_our_tonic_server() {
    let python = python_or_skip!();
    let ts = Telemetry::new();
    let (addr, _seen) = serve_greeter(&ts).await;

    let out = run_python_client(&python, addr, "missing").await;
    assert_eq!(
        out.response,
        json!({"type": "response", "code": "NOT_FOUND", "message": null,
               "details": "no such person"})
    );

    check_python_client_call(&ts, addr, out, 5, "NOT_FOUND").await;
}

// ------------------------------------------------------------------------------------
// Our client → Python server

/// Our tonic client (`OtelClientLayer` with a `target`) calls a grpcio server
/// (GrpcInstrumentorServer): the Python SERVER span is the child of our CLIENT span,
/// and the Python handler ran in it.
#[tokio::test]
async fn our_tonic_client_is_the_parent_of_a_python_grpc_server_span() {
    let python = python_or_skip!();
    let server = PythonServer::start(&python).await;
    let tc = Telemetry::new();
    let mut client = connect(&tc, server.addr).await;

    let reply = client.say_hello(hello("ada")).await.expect("SayHello");
    assert_eq!(reply.into_inner().message, "hello ada");

    // Ours: one root CLIENT span. Python: one SERVER span, its child; the handler saw our
    // traceparent and ran in that span.
    let (ours, py) = check_our_client_call(&tc, &server, 0, "OK", false).await;
    assert_eq!(
        server.calls(),
        vec![json!({
            "type": "call",
            "name": "ada",
            "traceparent": traceparent_with_flags(&ours),
            "trace_id": hex_trace_id(&ours),
            "span_id": py.span_id,
        })]
    );
}

/// The grpcio server aborts with NOT_FOUND: our CLIENT span records it as an error
/// (`error.type = NOT_FOUND`, the `grpc-message` as the description); the Python SERVER
/// span, still our span's child, has `rpc.grpc.status_code = 5` and no error status.
#[tokio::test]
async fn python_grpc_server_not_found_fails_our_tonic_client_span() {
    let python = python_or_skip!();
    let server = PythonServer::start(&python).await;
    let tc = Telemetry::new();
    let mut client = connect(&tc, server.addr).await;

    let err = client
        .say_hello(hello("missing"))
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "no such person");

    let (ours, _) = check_our_client_call(&tc, &server, 5, "NOT_FOUND", true).await;
    assert_eq!(
        ours.status,
        Status::error("no such person"),
        "the grpc-message is the description"
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0]["traceparent"],
        json!(traceparent_with_flags(&ours))
    );
}
