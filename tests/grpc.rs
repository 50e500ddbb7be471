//! gRPC through the same layers, with tonic over real loopback h2c sockets: a request
//! whose `content-type` is `application/grpc*` gets an RPC span (SERVER or CLIENT) and
//! `rpc.{server,client}.call.duration`, never an HTTP span or HTTP metrics
//! (/work/shared/spec/semconv-rpc.md is the contract).
//!
//! The server side and the client side of a call export to separate [`Telemetry`]
//! instances (`ts` and `tc`), so each side is asserted on its own. Where tonic cannot
//! produce the input (a malformed path, a broken `grpc-status`, a non-gRPC answer), a
//! plain hyper h2 client or a fake hyper server does.
//!
//! tonic's generated clients send path-only URIs (the `Channel` adds the authority further
//! in, where no layer sees it), so a client built with `GreeterClient::new` has
//! `server.address`/`server.port` only through the builder's `target`: the tests of
//! that are in the section marked `TARGET` at the end. Elsewhere the client's
//! `server.*` attributes are only asserted where the URI carries the authority
//! (`GreeterClient::with_origin`, hyper's client).

#[path = "grpc/greeter.rs"]
mod greeter;
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt as _};
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::HistogramDataPoint;
use opentelemetry_sdk::trace::SpanData;
use support::*;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tower::{Layer as _, ServiceBuilder, ServiceExt as _};
use tower_otel_http::OtelClient;

use greeter::greeter_client::GreeterClient;
use greeter::greeter_server::{Greeter, GreeterServer};
use greeter::{HelloReply, HelloRequest};

const SERVER_DURATION: &str = "rpc.server.call.duration";
const CLIENT_DURATION: &str = "rpc.client.call.duration";
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const SAY_HELLO: &str = "helloworld.Greeter/SayHello";
const SAY_MANY: &str = "helloworld.Greeter/SayMany";
const COLLECT: &str = "helloworld.Greeter/Collect";
const CHAT: &str = "helloworld.Greeter/Chat";

/// Keys that never belong on an RPC span or RPC metric (semconv-rpc.md §C.3, §C.6).
const NOT_ON_RPC: [&str; 8] = [
    "http.",
    "url.",
    "network.protocol.",
    "network.transport",
    "user_agent.",
    "client.",
    "rpc.system",
    "rpc.grpc.",
];

// ---------------------------------------------------------------------------------------
// The service.

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// `helloworld.Greeter`:
///
/// - `SayHello`: `hello {name}`; `missing` → NOT_FOUND, `crash` → INTERNAL, `slow` waits
///   2 s first;
/// - `SayMany`: 3 replies; `fail` → one reply then UNAVAILABLE, `hang` → one reply then
///   nothing, ever; `paced` → 3 replies 100 ms apart;
/// - `Collect`: the names joined with `,`;
/// - `Chat`: echoes each name.
#[derive(Clone, Copy, Debug, Default)]
struct Svc;

fn reply(message: impl Into<String>) -> HelloReply {
    HelloReply {
        message: message.into(),
    }
}

#[tonic::async_trait]
impl Greeter for Svc {
    async fn say_hello(
        &self,
        req: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let name = req.into_inner().name;
        match name.as_str() {
            "missing" => return Err(tonic::Status::not_found("no such person")),
            "crash" => return Err(tonic::Status::internal("boom")),
            "slow" => tokio::time::sleep(Duration::from_secs(2)).await,
            _ => {}
        }
        Ok(tonic::Response::new(reply(format!("hello {name}"))))
    }

    type SayManyStream = BoxStream<HelloReply>;

    async fn say_many(
        &self,
        req: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<Self::SayManyStream>, tonic::Status> {
        let name = req.into_inner().name;
        let s: Self::SayManyStream = match name.as_str() {
            "fail" => Box::pin(stream::iter(vec![
                Ok(reply("fail 0")),
                Err(tonic::Status::unavailable("gone")),
            ])),
            "hang" => {
                Box::pin(stream::once(async { Ok(reply("hang 0")) }).chain(stream::pending()))
            }
            "paced" => Box::pin(stream::unfold(0, |i| async move {
                if i == 3 {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some((Ok(reply(format!("paced {i}"))), i + 1))
            })),
            _ => Box::pin(stream::iter(
                (0..3).map(move |i| Ok(reply(format!("{name} {i}")))),
            )),
        };
        Ok(tonic::Response::new(s))
    }

    async fn collect(
        &self,
        req: tonic::Request<tonic::Streaming<HelloRequest>>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        let mut s = req.into_inner();
        let mut names = Vec::new();
        while let Some(r) = s.message().await? {
            names.push(r.name);
        }
        Ok(tonic::Response::new(reply(names.join(","))))
    }

    type ChatStream = BoxStream<HelloReply>;

    async fn chat(
        &self,
        req: tonic::Request<tonic::Streaming<HelloRequest>>,
    ) -> Result<tonic::Response<Self::ChatStream>, tonic::Status> {
        let s = req.into_inner().map(|r| r.map(|r| reply(r.name)));
        Ok(tonic::Response::new(Box::pin(s)))
    }
}

// ---------------------------------------------------------------------------------------
// Servers and clients.

/// Serves `Svc` with tonic on 127.0.0.1, `ts`'s server layer around the routes.
async fn serve_grpc(ts: &Telemetry) -> SocketAddr {
    serve_grpc_with(ts, None).await
}

/// The same, with `Server::builder().timeout(timeout)` when given.
async fn serve_grpc_with(ts: &Telemetry, timeout: Option<Duration>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    let router = builder
        .layer(ts.server().build())
        .add_service(GreeterServer::new(Svc));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

type Client = GreeterClient<OtelClient<Channel>>;

/// `inner` in `tc`'s client layer.
fn traced<S>(tc: &Telemetry, inner: S) -> OtelClient<S> {
    tc.client_layer().build().layer(inner)
}

/// A generated client over a channel to `addr`, `tc`'s client layer around the channel.
async fn connect(tc: &Telemetry, addr: SocketAddr) -> Client {
    let svc = traced(tc, channel(addr).await);
    GreeterClient::new(svc)
}

/// Two [`Telemetry`] instances (`ts` for the server, `tc` for the client), `Svc` served
/// with `ts`'s layer, and a generated client with `tc`'s.
async fn serve_and_connect() -> (Telemetry, Telemetry, SocketAddr, Client) {
    let (ts, tc) = (Telemetry::new(), Telemetry::new());
    let addr = serve_grpc(&ts).await;
    let client = connect(&tc, addr).await;
    (ts, tc, addr, client)
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

fn port(addr: SocketAddr) -> Value {
    Value::I64(i64::from(addr.port()))
}

// ---------------------------------------------------------------------------------------
// Assertions.

/// The end of a call a [`Telemetry`] records: its span kind, its metric, and what its
/// metric point has beside the RPC attributes.
#[derive(Clone, Copy, Debug)]
enum Side {
    /// `rpc.server.call.duration`, without `server.*` (opt-in on the server's metric).
    Server,
    /// `rpc.client.call.duration` of a client whose URIs are path-only (a generated
    /// client with no `target`): its `server.*` are not asserted.
    Client,
    /// `rpc.client.call.duration` of a client that knows the authority (`with_origin`,
    /// hyper's absolute URIs, a `target`): `server.*` are 127.0.0.1 and this port.
    ClientOf(SocketAddr),
}

impl Side {
    fn kind(self) -> SpanKind {
        match self {
            Side::Server => SpanKind::Server,
            Side::Client | Side::ClientOf(_) => SpanKind::Client,
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Side::Server => SERVER_DURATION,
            Side::Client | Side::ClientOf(_) => CLIENT_DURATION,
        }
    }
}

/// The only span of kind `kind`.
#[track_caller]
fn one_span<'a>(spans: &'a [SpanData], kind: &SpanKind) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| &s.span_kind == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind:?} span: {:#?}",
        spans
            .iter()
            .map(|s| (&s.name, &s.span_kind))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// No HTTP or deprecated attribute among `attrs`.
#[track_caller]
fn assert_rpc_only<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) {
    for kv in attrs {
        let key = kv.key.as_str();
        let allowed = key == "rpc.system.name";
        assert!(
            allowed || !NOT_ON_RPC.iter().any(|p| key.starts_with(p)),
            "{key}={} does not belong on an RPC span or metric",
            kv.value
        );
    }
}

/// Checks a span's name, kind, RPC attributes, status and `error.type`: `error` says
/// whether the call failed by the side's rule.
#[track_caller]
fn check_span(span: &SpanData, kind: &SpanKind, name: &str, method: &str, code: &str, error: bool) {
    assert_eq!(&span.span_kind, kind, "{span:#?}");
    assert_eq!(span.name, name, "{span:#?}");
    assert_eq!(attr(&span.attributes, "rpc.system.name"), Some(s("grpc")));
    assert_eq!(
        attr(&span.attributes, "rpc.method"),
        Some(s(method)),
        "{span:#?}"
    );
    assert_eq!(
        attr(&span.attributes, "rpc.response.status_code"),
        Some(s(code)),
        "{span:#?}"
    );
    if error {
        assert!(
            matches!(span.status, Status::Error { .. }),
            "expected an error status: {span:#?}"
        );
        assert_eq!(attr(&span.attributes, "error.type"), Some(s(code)));
    } else {
        assert_eq!(span.status, Status::Unset, "{span:#?}");
        assert_eq!(attr(&span.attributes, "error.type"), None, "{span:#?}");
    }
    assert_rpc_only(&span.attributes);
}

/// The only span of `side`'s kind, checked by [`check_span`] as a call of `method` (also
/// its name) that ended with `code`.
#[track_caller]
fn one_call_span<'a>(
    spans: &'a [SpanData],
    side: Side,
    method: &str,
    code: &str,
    error: bool,
) -> &'a SpanData {
    let span = one_span(spans, &side.kind());
    check_span(span, &side.kind(), method, method, code, error);
    span
}

/// [`one_call_span`], and its metric point by [`check_point`].
#[track_caller]
fn one_call<'a>(
    t: &Telemetry,
    spans: &'a [SpanData],
    side: Side,
    method: &str,
    code: &str,
    error: bool,
) -> &'a SpanData {
    let span = one_call_span(spans, side, method, code, error);
    check_point(t, side, span, method, code, error);
    span
}

/// The attributes, sorted, without the keys in `ignore` (attributes this test cannot
/// know, e.g. `network.peer.*`).
fn set_without<'a>(
    attrs: impl IntoIterator<Item = &'a KeyValue>,
    ignore: &[&str],
) -> Vec<(String, Value)> {
    typed_set(attrs)
        .into_iter()
        .filter(|(k, _)| !ignore.contains(&k.as_str()))
        .collect()
}

const PEER: [&str; 2] = ["network.peer.address", "network.peer.port"];
const SERVER: [&str; 2] = ["server.address", "server.port"];

/// The RPC attributes of a call of `method` that ended with `code`, with `error.type`
/// when `error`.
fn rpc_attrs(method: &str, code: &str, error: bool) -> Vec<(&'static str, Value)> {
    let mut want = vec![
        ("rpc.system.name", s("grpc")),
        ("rpc.method", s(method)),
        ("rpc.response.status_code", s(code)),
    ];
    if error {
        want.push(("error.type", s(code)));
    }
    want
}

/// `server.*` of a server on 127.0.0.1 at `addr`.
fn server_attrs(addr: SocketAddr) -> [(&'static str, Value); 2] {
    [
        ("server.address", s("127.0.0.1")),
        ("server.port", port(addr)),
    ]
}

/// `span` has exactly the RPC attributes of a call of `method` that ended with `code`
/// and, with `server`, the `server.*` of that address (without, `server.*` are not
/// asserted), `network.peer.*` aside.
#[track_caller]
fn assert_span_attrs(
    span: &SpanData,
    server: Option<SocketAddr>,
    method: &str,
    code: &str,
    error: bool,
) {
    let mut want = rpc_attrs(method, code, error);
    let ignore = match server {
        Some(addr) => {
            want.extend(server_attrs(addr));
            PEER.to_vec()
        }
        None => [PEER, SERVER].concat(),
    };
    assert_eq!(
        set_without(&span.attributes, &ignore),
        expected_set(&want),
        "{span:#?}"
    );
}

/// The one point whose `rpc.response.status_code` is `code` (and `rpc.method` is
/// `method`).
#[track_caller]
fn point<'a>(
    points: &'a [HistogramDataPoint<f64>],
    method: &str,
    code: &str,
) -> &'a HistogramDataPoint<f64> {
    let found: Vec<_> = points
        .iter()
        .filter(|p| {
            attr(p.attributes(), "rpc.response.status_code") == Some(s(code))
                && attr(p.attributes(), "rpc.method") == Some(s(method))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one point {method} {code}: {:#?}",
        points
            .iter()
            .map(|p| typed_set(p.attributes()))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// One point of `side`'s metric, for one call of `method` that ended with `code`, its
/// value the span's duration, with exactly the RPC metric attributes (and what `side`
/// says of `server.*`).
#[track_caller]
fn check_point(t: &Telemetry, side: Side, span: &SpanData, method: &str, code: &str, error: bool) {
    let points = t.f64_histogram(side.metric());
    let p = point(&points, method, code);
    assert_eq!(p.count(), 1);
    assert_eq!(p.bounds().collect::<Vec<_>>(), BUCKETS);
    let mut want = rpc_attrs(method, code, error);
    let ignore: &[&str] = match side {
        Side::Server => &[],
        Side::Client => &SERVER,
        Side::ClientOf(addr) => {
            want.extend(server_attrs(addr));
            &[]
        }
    };
    assert_eq!(set_without(p.attributes(), ignore), expected_set(&want));
    assert_rpc_only(p.attributes());
    assert_eq!(p.sum(), span_secs(span), "the point is the span's duration");
}

/// Waits for the server's span, then the client's, checks each and its point
/// ([`one_call`]) as a call of `method` that ended with `code` (a failure on the server
/// when `server_error`, on the client when `client_error`), then that each side ended one
/// span only. The server's span and the client's.
async fn check_both_sides(
    ts: &Telemetry,
    tc: &Telemetry,
    method: &str,
    code: &str,
    server_error: bool,
    client_error: bool,
) -> (SpanData, SpanData) {
    let spans = ts.wait_spans(1).await;
    let server = one_call(ts, &spans, Side::Server, method, code, server_error).clone();
    let spans = tc.wait_spans(1).await;
    let client = one_call(tc, &spans, Side::Client, method, code, client_error).clone();
    settle_one_each(ts, tc).await;
    (server, client)
}

/// For a streaming call of `method` that took 200 ms or more and ended OK: once each side
/// ended its span, that it ended only that one, lasting the whole call, with its point
/// ([`one_call`]).
async fn check_long_ok_call(ts: &Telemetry, tc: &Telemetry, method: &str) {
    ts.wait_spans(1).await;
    tc.wait_spans(1).await;
    for (t, side) in [(ts, Side::Server), (tc, Side::Client)] {
        let spans = t.settle_spans(1).await;
        let span = one_call(t, &spans, side, method, "OK", false);
        assert!(
            span_secs(span) >= 0.19,
            "{side:?} span {} s",
            span_secs(span)
        );
    }
}

/// A failed call as a client sees it: `code` as the status code and `error.type`, an
/// error status, no HTTP attribute.
#[track_caller]
fn assert_client_failure(span: &SpanData, code: &str) {
    assert_eq!(
        attr(&span.attributes, "rpc.response.status_code"),
        Some(s(code)),
        "{span:#?}"
    );
    assert_eq!(attr(&span.attributes, "error.type"), Some(s(code)));
    assert!(matches!(span.status, Status::Error { .. }));
    assert_rpc_only(&span.attributes);
}

/// No HTTP metric was recorded, and the RPC one was.
#[track_caller]
fn assert_only_rpc_metrics(t: &Telemetry, metric: &str) {
    let names = t.metric_names();
    assert!(
        names.iter().all(|n| !n.starts_with("http.")),
        "HTTP metrics for gRPC calls: {names:?}"
    );
    assert!(names.iter().any(|n| n == metric), "no {metric}: {names:?}");
    assert!(t.f64_histogram("http.server.request.duration").is_empty());
    assert!(t.f64_histogram("http.client.request.duration").is_empty());
}

/// One OK `SayHello` as `side` saw it: the span, with exactly the attributes of
/// [`assert_span_attrs`] (`server`); once it is `t`'s only span, the metric's unit, no
/// HTTP metric, and the point.
async fn check_ok_say_hello(t: &Telemetry, side: Side, server: Option<SocketAddr>) {
    let spans = t.wait_spans(1).await;
    let span = one_call_span(&spans, side, SAY_HELLO, "OK", false);
    assert_span_attrs(span, server, SAY_HELLO, "OK", false);
    t.settle_spans(1).await;

    assert_eq!(t.unit(side.metric()).as_deref(), Some("s"));
    assert_only_rpc_metrics(t, side.metric());
    check_point(t, side, span, SAY_HELLO, "OK", false);
}

/// Each side ended one span, and only one.
async fn settle_one_each(ts: &Telemetry, tc: &Telemetry) {
    ts.settle_spans(1).await;
    tc.settle_spans(1).await;
}

/// Neither side ended its span yet (`when`).
#[track_caller]
fn assert_no_span_yet(ts: &Telemetry, tc: &Telemetry, when: &str) {
    assert!(ts.finished_spans().is_empty(), "server span ended {when}");
    assert!(tc.finished_spans().is_empty(), "client span ended {when}");
}

/// The messages of a response stream, to its end.
async fn messages(stream: &mut tonic::Streaming<HelloReply>) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        got.push(r.message);
    }
    got
}

/// The server's and the client's spans (one each) of a call.
async fn both_spans(ts: &Telemetry, tc: &Telemetry) -> (SpanData, SpanData) {
    let spans = ts.wait_spans(1).await;
    let server = one_span(&spans, &SpanKind::Server).clone();
    let spans = tc.wait_spans(1).await;
    let client = one_span(&spans, &SpanKind::Client).clone();
    (server, client)
}

/// `server` is the child of `client`, in its trace.
#[track_caller]
fn assert_child_of(server: &SpanData, client: &SpanData) {
    assert_eq!(
        server.span_context.trace_id(),
        client.span_context.trace_id()
    );
    assert_eq!(server.parent_span_id, client.span_context.span_id());
}

// ---------------------------------------------------------------------------------------
// Unary.

#[tokio::test]
async fn unary_ok_server_span_and_metric() {
    let (ts, _tc, addr, mut client) = serve_and_connect().await;
    let res = client.say_hello(hello("ada")).await.unwrap();
    assert_eq!(res.into_inner().message, "hello ada");

    // The span's `network.peer.*` are present only if the layer reads tonic's connect
    // info; its `server.*` come from the request. `server.*` are opt-in on the server's
    // metric.
    check_ok_say_hello(&ts, Side::Server, Some(addr)).await;
}

#[tokio::test]
async fn unary_ok_client_span_and_metric() {
    let (_ts, tc, _, mut client) = serve_and_connect().await;
    client.say_hello(hello("ada")).await.unwrap();

    check_ok_say_hello(&tc, Side::Client, None).await;
}

#[tokio::test]
async fn client_with_origin_records_server_address_and_port_from_the_uri() {
    // `with_origin` puts the authority in the request URI the layer sees.
    let (ts, tc) = (Telemetry::new(), Telemetry::new());
    let addr = serve_grpc(&ts).await;
    let svc = traced(&tc, channel(addr).await);
    let mut client = GreeterClient::with_origin(svc, format!("http://{addr}").parse().unwrap());
    client.say_hello(hello("ada")).await.unwrap();

    let spans = tc.wait_spans(1).await;
    let span = one_call_span(&spans, Side::ClientOf(addr), SAY_HELLO, "OK", false);
    assert_span_attrs(span, Some(addr), SAY_HELLO, "OK", false);
    check_point(&tc, Side::ClientOf(addr), span, SAY_HELLO, "OK", false);
}

#[tokio::test]
async fn unary_not_found_is_an_error_only_on_the_client() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let err = client.say_hello(hello("missing")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no such person");

    // Server: NOT_FOUND is the caller's problem, not a server failure. Client: every
    // non-OK code is a failed call.
    check_both_sides(&ts, &tc, SAY_HELLO, "NOT_FOUND", false, true).await;
}

#[tokio::test]
async fn unary_internal_is_an_error_on_both_sides() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let err = client.say_hello(hello("crash")).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);

    check_both_sides(&ts, &tc, SAY_HELLO, "INTERNAL", true, true).await;
}

#[tokio::test]
async fn calls_on_one_channel_each_get_one_span_and_one_measurement() {
    let (ts, tc, _, client) = serve_and_connect().await;
    let calls = ["a", "b", "missing", "c", "crash"].map(|name| {
        let mut client = client.clone();
        tokio::spawn(async move { client.say_hello(hello(name)).await.map(|_| ()) })
    });
    let mut codes = Vec::new();
    for call in calls {
        codes.push(call.await.unwrap().map_err(|e| e.code()).err());
    }
    assert_eq!(
        codes,
        [None, None, Some(Code::NotFound), None, Some(Code::Internal)]
    );

    for (t, side) in [(&ts, Side::Server), (&tc, Side::Client)] {
        t.wait_spans(5).await;
        let spans = t.settle_spans(5).await;
        let mut got: Vec<String> = spans
            .iter()
            .inspect(|span| {
                assert_eq!(span.span_kind, side.kind());
                assert_eq!(span.name, SAY_HELLO);
                assert_rpc_only(&span.attributes);
            })
            .map(|span| {
                attr(&span.attributes, "rpc.response.status_code")
                    .unwrap()
                    .to_string()
            })
            .collect();
        got.sort();
        assert_eq!(got, ["INTERNAL", "NOT_FOUND", "OK", "OK", "OK"]);
        let points = t.f64_histogram(side.metric());
        assert_eq!(point(&points, SAY_HELLO, "OK").count(), 3);
        assert_eq!(point(&points, SAY_HELLO, "NOT_FOUND").count(), 1);
        assert_eq!(point(&points, SAY_HELLO, "INTERNAL").count(), 1);
        assert_eq!(points.len(), 3);
    }
}

// ---------------------------------------------------------------------------------------
// Streaming: the span covers the whole call and ends once.

#[tokio::test]
async fn server_streaming_span_ends_at_the_trailers_after_every_message() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let mut stream = client.say_many(hello("paced")).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        // The span is still open while messages flow.
        if got.is_empty() {
            assert_no_span_yet(&ts, &tc, "at the first message");
        }
        got.push(r.message);
    }
    assert_eq!(got, ["paced 0", "paced 1", "paced 2"]);

    check_long_ok_call(&ts, &tc, SAY_MANY).await;
}

#[tokio::test]
async fn server_streaming_three_messages_ok() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let mut stream = client.say_many(hello("b")).await.unwrap().into_inner();
    assert_eq!(messages(&mut stream).await, ["b 0", "b 1", "b 2"]);

    ts.wait_spans(1).await;
    tc.wait_spans(1).await;
    for (t, kind) in [(&ts, SpanKind::Server), (&tc, SpanKind::Client)] {
        let spans = t.settle_spans(1).await;
        check_span(&spans[0], &kind, SAY_MANY, SAY_MANY, "OK", false);
    }
}

#[tokio::test]
async fn server_stream_failing_after_a_message_takes_the_trailers_status() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let mut stream = client.say_many(hello("fail")).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().message, "fail 0");
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "gone");

    check_both_sides(&ts, &tc, SAY_MANY, "UNAVAILABLE", true, true).await;
}

/// The names as requests, 100 ms apart.
fn paced_names(
    names: &'static [&'static str],
) -> impl Stream<Item = HelloRequest> + Send + 'static {
    stream::iter(names.iter().enumerate()).then(|(i, name)| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        hello(name)
    })
}

#[tokio::test]
async fn client_streaming_span_covers_every_request_message() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let res = client.collect(paced_names(&["x", "y", "z"])).await.unwrap();
    assert_eq!(res.into_inner().message, "x,y,z");

    check_long_ok_call(&ts, &tc, COLLECT).await;
}

#[tokio::test]
async fn bidi_span_covers_the_whole_exchange() {
    // The server answers the head at once and echoes as the names come: a span ended at
    // the response head would be a few milliseconds long.
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let mut stream = client
        .chat(paced_names(&["p", "q", "r"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(messages(&mut stream).await, ["p", "q", "r"]);

    check_long_ok_call(&ts, &tc, CHAT).await;
}

#[tokio::test]
async fn client_dropping_a_stream_midway_is_cancelled_on_both_sides() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let mut stream = client.say_many(hello("hang")).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().message, "hang 0");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_no_span_yet(&ts, &tc, "before the drop");
    drop(stream);

    // Server: the RST_STREAM(CANCEL) drops its body before the trailers: not its failure.
    // Client: its own cancellation is an error in RPC conventions (no HTTP-like
    // exemption).
    check_both_sides(&ts, &tc, SAY_MANY, "CANCELLED", false, true).await;
}

// ---------------------------------------------------------------------------------------
// Deadlines.

/// `SayHello` for `slow` (2 s) with a deadline of 200 ms: the error.
async fn call_slow_with_deadline(client: &mut Client) -> tonic::Status {
    let mut req = tonic::Request::new(hello("slow"));
    req.set_timeout(Duration::from_millis(200));
    client.say_hello(req).await.unwrap_err()
}

#[tokio::test]
async fn client_deadline_is_deadline_exceeded_on_both_sides() {
    // The server's own timeout (1 s) is longer than the client's deadline (200 ms): the
    // deadline the client sent in `grpc-timeout` is what ends the call on both sides.
    let (ts, tc) = (Telemetry::new(), Telemetry::new());
    let addr = serve_grpc_with(&ts, Some(Duration::from_secs(1))).await;
    let mut client = connect(&tc, addr).await;
    let started = std::time::Instant::now();
    let err = call_slow_with_deadline(&mut client).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{err:?}");
    // tonic itself says CANCELLED ("Timeout expired"); the layer knows better.

    let (server, client_span) =
        check_both_sides(&ts, &tc, SAY_HELLO, "DEADLINE_EXCEEDED", true, true).await;
    assert!(
        span_secs(&client_span) >= 0.19,
        "{} s",
        span_secs(&client_span)
    );
    assert!(span_secs(&server) < 1.0, "{} s", span_secs(&server));
}

#[tokio::test]
async fn client_deadline_without_a_server_timeout() {
    // tonic's server honours `grpc-timeout` with no `Server::timeout` too.
    let (ts, tc, _, mut client) = serve_and_connect().await;
    call_slow_with_deadline(&mut client).await;

    let spans = tc.wait_spans(1).await;
    one_call_span(&spans, Side::Client, SAY_HELLO, "DEADLINE_EXCEEDED", true);
    let spans = ts.wait_spans(1).await;
    let server = one_call_span(&spans, Side::Server, SAY_HELLO, "DEADLINE_EXCEEDED", true);
    assert!(span_secs(server) < 1.5, "{} s", span_secs(server));
}

#[tokio::test]
async fn server_timeout_without_grpc_timeout_is_cancelled() {
    // No deadline from the client: the server's own timeout cuts the call, which tonic
    // answers with CANCELLED ("Timeout expired").
    let (ts, tc) = (Telemetry::new(), Telemetry::new());
    let addr = serve_grpc_with(&ts, Some(Duration::from_millis(200))).await;
    let mut client = connect(&tc, addr).await;
    let err = client.say_hello(hello("slow")).await.unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");

    let spans = ts.wait_spans(1).await;
    let server = one_call(&ts, &spans, Side::Server, SAY_HELLO, "CANCELLED", false);
    assert!(span_secs(server) >= 0.19, "{} s", span_secs(server));
    assert!(span_secs(server) < 1.5, "{} s", span_secs(server));

    let spans = tc.wait_spans(1).await;
    one_call_span(&spans, Side::Client, SAY_HELLO, "CANCELLED", true);
    settle_one_each(&ts, &tc).await;
}

// ---------------------------------------------------------------------------------------
// Unknown methods and trace context.

#[tokio::test]
async fn unknown_method_is_other_on_the_server_metrics_and_unimplemented_on_both_sides() {
    let (ts, tc) = (Telemetry::new(), Telemetry::new());
    let addr = serve_grpc(&ts).await;
    let mut grpc = tonic::client::Grpc::new(traced(&tc, channel(addr).await));
    grpc.ready().await.unwrap();
    let res: Result<tonic::Response<HelloReply>, tonic::Status> = grpc
        .unary(
            tonic::Request::new(hello("ada")),
            http::uri::PathAndQuery::from_static("/helloworld.Greeter/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(res.unwrap_err().code(), Code::Unimplemented);

    let spans = ts.wait_spans(1).await;
    // The server cannot tell an unknown method when the span starts (a sampler sees the
    // name asked for), and the SDK keeps both values of a key set twice: the span keeps
    // the method asked for, once. Its metric point takes `_OTHER` (below).
    let nope = "helloworld.Greeter/Nope";
    let server = one_call_span(&spans, Side::Server, nope, "UNIMPLEMENTED", true);
    let methods: Vec<_> = server
        .attributes
        .iter()
        .filter(|kv| kv.key.as_str() == "rpc.method")
        .collect();
    assert_eq!(methods.len(), 1, "one rpc.method: {methods:?}");
    assert_eq!(attr(&server.attributes, "rpc.method_original"), None);
    assert_eq!(
        attr(&server.attributes, "server.address"),
        Some(s("127.0.0.1"))
    );
    // The metric has `_OTHER` and no `rpc.method_original` (cardinality).
    check_point(&ts, Side::Server, server, "_OTHER", "UNIMPLEMENTED", true);

    let spans = tc.wait_spans(1).await;
    let client_span = one_span(&spans, &SpanKind::Client);
    assert_client_failure(client_span, "UNIMPLEMENTED");
    assert_eq!(
        attr(&client_span.attributes, "rpc.system.name"),
        Some(s("grpc"))
    );
    let points = tc.f64_histogram(CLIENT_DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(
        attr(points[0].attributes(), "rpc.response.status_code"),
        Some(s("UNIMPLEMENTED"))
    );
    assert_eq!(attr(points[0].attributes(), "rpc.method_original"), None);
    settle_one_each(&ts, &tc).await;
}

#[tokio::test]
async fn server_span_is_the_child_of_the_client_span() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    client.say_hello(hello("ada")).await.unwrap();

    let (server, client_span) = both_spans(&ts, &tc).await;
    assert_child_of(&server, &client_span);
    assert!(server.parent_span_is_remote);
    // The server's work happens within the client's call.
    assert!(client_span.start_time <= server.start_time);
    assert!(server.end_time <= client_span.end_time);
}

#[tokio::test]
async fn streaming_calls_propagate_trace_context_too() {
    let (ts, tc, _, mut client) = serve_and_connect().await;
    let mut stream = client
        .chat(paced_names(&["p", "q"]))
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}

    let (server, client_span) = both_spans(&ts, &tc).await;
    assert_eq!(server.name, CHAT);
    assert_child_of(&server, &client_span);
}

// ---------------------------------------------------------------------------------------
// Bad input: hand-built requests and a fake server, over hyper's h2.

/// A gRPC request to `addr` + `path`, with one empty `HelloRequest` message.
fn grpc_request(addr: SocketAddr, path: &str, content_type: &str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(Full::new(frame(&hello("h2"))))
        .unwrap()
}

/// A message, gRPC-framed: uncompressed flag, big-endian length, the bytes.
fn frame(msg: &impl prost::Message) -> Bytes {
    let bytes = msg.encode_to_vec();
    let mut out = Vec::with_capacity(5 + bytes.len());
    out.push(0);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    Bytes::from(out)
}

#[tokio::test]
async fn malformed_paths_are_other_and_passed_through() {
    let ts = Telemetry::new();
    let addr = serve_grpc(&ts).await;
    let paths = ["/nope", "/", "//SayHello", "/helloworld.Greeter/", "/a/b/c"];
    for path in paths {
        let res = h2_client()
            .request(grpc_request(addr, path, "application/grpc"))
            .await
            .unwrap();
        // tonic's own answer reaches the caller.
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["grpc-status"], "12", "{path}");
        res.into_body().collect().await.unwrap();
    }

    ts.wait_spans(paths.len()).await;
    let spans = ts.settle_spans(paths.len()).await;
    for span in &spans {
        check_span(
            span,
            &SpanKind::Server,
            "grpc",
            "_OTHER",
            "UNIMPLEMENTED",
            true,
        );
        let original = attr(&span.attributes, "rpc.method_original");
        assert!(original.is_some(), "no rpc.method_original: {span:#?}");
    }
    let nope = spans
        .iter()
        .filter(|s| {
            attr(&s.attributes, "rpc.method_original")
                .is_some_and(|v| v.as_str().trim_start_matches('/') == "nope")
        })
        .count();
    assert_eq!(nope, 1, "{spans:#?}");
    let points = ts.f64_histogram(SERVER_DURATION);
    assert_eq!(
        point(&points, "_OTHER", "UNIMPLEMENTED").count(),
        paths.len() as u64
    );
    assert_only_rpc_metrics(&ts, SERVER_DURATION);
}

/// What the fake server answers, chosen by the request's `x-fake` header.
type FakeBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn fake_response(scenario: &str) -> Response<FakeBody> {
    let grpc = |frames: Vec<Frame<Bytes>>, head_status: Option<&'static str>| {
        let mut b = Response::builder()
            .status(200)
            .header("content-type", "application/grpc");
        if let Some(status) = head_status {
            b = b.header("grpc-status", status);
        }
        b.body(StreamBody::new(stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        )))
        .unwrap()
    };
    let data = || Frame::data(frame(&reply("fake")));
    let trailers = |status: &'static str| {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", status.parse().unwrap());
        Frame::trailers(t)
    };
    let plain = |status: u16, body: &'static str| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(StreamBody::new(stream::iter(vec![Ok(Frame::data(
                Bytes::from_static(body.as_bytes()),
            ))])))
            .unwrap()
    };
    match scenario {
        "ok" => grpc(vec![data(), trailers("0")], None),
        "status-abc" => grpc(vec![data(), trailers("abc")], None),
        "status-abc-head" => grpc(vec![], Some("abc")),
        "status-99" => grpc(vec![data(), trailers("99")], None),
        "no-status" => grpc(vec![data()], None),
        "text-plain" => plain(200, "plain text"),
        "http-400" => plain(400, ""),
        "http-401" => plain(401, ""),
        "http-404" => plain(404, ""),
        "http-503" => plain(503, ""),
        other => panic!("no scenario {other}"),
    }
}

/// A fake "gRPC" server, `ts`'s server layer around it: it reads the whole request and
/// answers as the `x-fake` header asks (`ok` when absent).
async fn fake_server(ts: &Telemetry) -> SocketAddr {
    serve(ServiceBuilder::new().layer(ts.server().build()).service_fn(
        |req: Request<Incoming>| async move {
            let scenario = req
                .headers()
                .get("x-fake")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| "ok".into());
            req.into_body().collect().await.unwrap();
            Ok::<_, Infallible>(fake_response(&scenario))
        },
    ))
    .await
}

/// A tonic unary call through `tc`'s client layer to the fake server, answering as
/// `scenario`.
async fn tonic_call(tc: &Telemetry, addr: SocketAddr, scenario: &'static str) -> Result<(), Code> {
    let mut client = connect(tc, addr).await;
    let mut req = tonic::Request::new(hello("ada"));
    req.metadata_mut()
        .insert("x-fake", scenario.parse().unwrap());
    client
        .say_hello(req)
        .await
        .map(|_| ())
        .map_err(|e| e.code())
}

#[tokio::test]
async fn fake_server_ok_is_ok_on_both_sides() {
    // The fake server itself is sound: a well-formed answer is OK everywhere.
    let (ts, tc) = (Telemetry::new(), Telemetry::new());
    let addr = fake_server(&ts).await;
    assert_eq!(tonic_call(&tc, addr, "ok").await, Ok(()));
    for (t, kind) in [(&ts, SpanKind::Server), (&tc, SpanKind::Client)] {
        let spans = t.wait_spans(1).await;
        check_span(&spans[0], &kind, SAY_HELLO, SAY_HELLO, "OK", false);
    }
}

/// The fake server's answers whose code the layer must work out itself as `UNKNOWN`, on
/// both sides (a failure on both).
const UNKNOWN_ANSWERS: [&str; 5] = [
    "status-abc",      // grpc-status that does not parse, in the trailers
    "status-abc-head", // ... in a trailers-only response
    "status-99",       // out of range
    "no-status",       // 200 and a message, but no status at all
    "text-plain",      // a plain 200 text/plain answer to a gRPC request
];

#[tokio::test]
async fn unparseable_or_missing_status_is_unknown_on_both_sides() {
    for scenario in UNKNOWN_ANSWERS {
        let (ts, tc) = (Telemetry::new(), Telemetry::new());
        let addr = fake_server(&ts).await;
        let result = tonic_call(&tc, addr, scenario).await;
        assert!(result.is_err(), "{scenario}: tonic accepted it");

        let (server, _) = check_both_sides(&ts, &tc, SAY_HELLO, "UNKNOWN", true, true).await;
        assert_eq!(server.name, SAY_HELLO, "{scenario}");
        assert_only_rpc_metrics(&ts, SERVER_DURATION);
    }
}

#[tokio::test]
async fn http_status_without_grpc_status_is_mapped_on_the_client() {
    // semconv-rpc.md §C.7: a client synthesizes the code from the HTTP status.
    for (scenario, code) in [
        ("http-400", "INTERNAL"),
        ("http-401", "UNAUTHENTICATED"),
        ("http-404", "UNIMPLEMENTED"),
        ("http-503", "UNAVAILABLE"),
    ] {
        let (ts, tc) = (Telemetry::new(), Telemetry::new());
        let addr = fake_server(&ts).await;
        assert!(tonic_call(&tc, addr, scenario).await.is_err(), "{scenario}");

        let spans = tc.wait_spans(1).await;
        assert_client_failure(one_span(&spans, &SpanKind::Client), code);

        // The server's span is a valid RPC span with a code, whatever its handler did.
        let spans = ts.wait_spans(1).await;
        let server = one_span(&spans, &SpanKind::Server);
        assert_eq!(server.name, SAY_HELLO);
        assert!(
            attr(&server.attributes, "rpc.response.status_code").is_some(),
            "{scenario}: {server:#?}"
        );
        assert_rpc_only(&server.attributes);
    }
}

#[tokio::test]
async fn raw_h2_answers_pass_through_both_layers_unchanged() {
    // hyper's client, absolute URIs: the client span also has `server.*`.
    for (scenario, code, server_error) in [
        ("ok", "OK", false),
        ("status-abc", "UNKNOWN", true),
        ("text-plain", "UNKNOWN", true),
    ] {
        let (ts, tc) = (Telemetry::new(), Telemetry::new());
        let addr = fake_server(&ts).await;
        let client = traced(&tc, h2_client());
        let mut req = grpc_request(addr, "/helloworld.Greeter/SayHello", "application/grpc");
        req.headers_mut()
            .insert("x-fake", scenario.parse().unwrap());
        let res = client.oneshot(req).await.unwrap();
        let want = fake_response(scenario);
        assert_eq!(res.status(), want.status(), "{scenario}");
        assert_eq!(
            res.headers().get("content-type"),
            want.headers().get("content-type")
        );
        let got = res.into_body().collect().await.unwrap();
        let want = http_body_util::BodyExt::collect(want.into_body())
            .await
            .unwrap();
        assert_eq!(got.trailers(), want.trailers(), "{scenario}");
        assert_eq!(got.to_bytes(), want.to_bytes(), "{scenario}");

        let spans = tc.wait_spans(1).await;
        let client_span = one_call(
            &tc,
            &spans,
            Side::ClientOf(addr),
            SAY_HELLO,
            code,
            code != "OK",
        );
        assert_span_attrs(client_span, Some(addr), SAY_HELLO, code, code != "OK");
        assert_only_rpc_metrics(&tc, CLIENT_DURATION);

        let spans = ts.wait_spans(1).await;
        let server = one_call_span(&spans, Side::Server, SAY_HELLO, code, server_error);
        assert_eq!(
            attr(&server.attributes, "server.address"),
            Some(s("127.0.0.1"))
        );
        assert_eq!(attr(&server.attributes, "server.port"), Some(port(addr)));
        settle_one_each(&ts, &tc).await;
    }
}

#[tokio::test]
async fn malformed_path_with_an_ok_answer_is_still_other() {
    // Not only a method the server rejects: a path that is not `/{service}/{method}` is
    // `_OTHER` whatever the answer.
    let (ts, tc) = (Telemetry::new(), Telemetry::new());
    let addr = fake_server(&ts).await;
    let client = traced(&tc, h2_client());
    let res = client
        .oneshot(grpc_request(addr, "/nope", "application/grpc"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "0");

    for (t, side) in [(&ts, Side::Server), (&tc, Side::Client)] {
        let spans = t.wait_spans(1).await;
        let span = one_span(&spans, &side.kind());
        check_span(span, &side.kind(), "grpc", "_OTHER", "OK", false);
        let original = attr(&span.attributes, "rpc.method_original")
            .unwrap_or_else(|| panic!("no rpc.method_original: {span:#?}"));
        assert_eq!(original.as_str().trim_start_matches('/'), "nope");
        let points = t.f64_histogram(side.metric());
        assert_eq!(points.len(), 1);
        assert_eq!(
            attr(points[0].attributes(), "rpc.method"),
            Some(s("_OTHER"))
        );
        assert_eq!(attr(points[0].attributes(), "rpc.method_original"), None);
    }
}

#[tokio::test]
async fn grpc_content_type_variants_are_rpc_and_others_stay_http() {
    let ts = Telemetry::new();
    let addr = fake_server(&ts).await;
    // Two gRPC content types, then the same path with a non-gRPC one: an HTTP request.
    for content_type in [
        "application/grpc+proto",
        "application/grpc+json",
        "application/json",
    ] {
        let res = h2_client()
            .request(grpc_request(
                addr,
                "/helloworld.Greeter/SayHello",
                content_type,
            ))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }

    ts.wait_spans(3).await;
    let spans = ts.settle_spans(3).await;
    let rpc: Vec<&SpanData> = spans.iter().filter(|s| s.name == SAY_HELLO).collect();
    assert_eq!(rpc.len(), 2, "{spans:#?}");
    for span in rpc {
        check_span(span, &SpanKind::Server, SAY_HELLO, SAY_HELLO, "OK", false);
    }
    let http: Vec<&SpanData> = spans.iter().filter(|s| s.name != SAY_HELLO).collect();
    assert_eq!(http.len(), 1);
    assert_eq!(http[0].name, "POST");
    assert_eq!(
        attr(&http[0].attributes, "http.request.method"),
        Some(s("POST"))
    );
    assert_eq!(attr(&http[0].attributes, "rpc.system.name"), None);
    assert_eq!(
        attr(&http[0].attributes, "url.path"),
        Some(s("/helloworld.Greeter/SayHello"))
    );

    assert_eq!(
        point(&ts.f64_histogram(SERVER_DURATION), SAY_HELLO, "OK").count(),
        2
    );
    let http_points = ts.f64_histogram("http.server.request.duration");
    assert_eq!(http_points.len(), 1);
    assert_eq!(http_points[0].count(), 1);
}

// ---------------------------------------------------------------------------------------
// TARGET: tests of `OtelClientLayerBuilder::target`, which gives `server.address` and
// `server.port` to clients whose URIs are path-only (tonic's generated clients).
mod target {
    use super::*;

    /// A generated client whose layer was told the channel's target.
    async fn connect_target(tc: &Telemetry, addr: SocketAddr, target: &str) -> Client {
        let svc = ServiceBuilder::new()
            .layer(tc.client_layer().target(target).build())
            .service(channel(addr).await);
        GreeterClient::new(svc)
    }

    /// `Svc` served with `ts`'s layer, and a generated client whose layer (`tc`'s) was
    /// told the target `http://{addr}`.
    async fn serve_and_connect_target() -> (Telemetry, Telemetry, SocketAddr, Client) {
        let (ts, tc) = (Telemetry::new(), Telemetry::new());
        let addr = serve_grpc(&ts).await;
        let client = connect_target(&tc, addr, &format!("http://{addr}")).await;
        (ts, tc, addr, client)
    }

    #[tokio::test]
    async fn target_gives_the_client_span_and_metric_server_address_and_port() {
        let (_ts, tc, addr, mut client) = serve_and_connect_target().await;
        client.say_hello(hello("ada")).await.unwrap();

        let spans = tc.wait_spans(1).await;
        let span = one_call(&tc, &spans, Side::ClientOf(addr), SAY_HELLO, "OK", false);
        assert_span_attrs(span, Some(addr), SAY_HELLO, "OK", false);
    }

    #[tokio::test]
    async fn target_is_on_failed_calls_too() {
        let (_ts, tc, addr, mut client) = serve_and_connect_target().await;
        client.say_hello(hello("missing")).await.unwrap_err();

        let spans = tc.wait_spans(1).await;
        one_call(
            &tc,
            &spans,
            Side::ClientOf(addr),
            SAY_HELLO,
            "NOT_FOUND",
            true,
        );
    }

    #[tokio::test]
    async fn target_forms_follow_the_grpc_naming_spec() {
        // The name the layer is given, not the socket it reaches: any of these labels a
        // channel that connects to 127.0.0.1.
        let ts = Telemetry::new();
        let addr = serve_grpc(&ts).await;
        for (target, address, want_port) in [
            (
                format!("localhost:{}", addr.port()),
                "localhost",
                Some(port(addr)),
            ),
            (
                "dns:///inventory.internal:50051".to_owned(),
                "inventory.internal",
                Some(Value::I64(50051)),
            ),
            (
                "dns://1.2.3.4/grpc.io:443".to_owned(),
                "grpc.io",
                Some(Value::I64(443)),
            ),
            (
                "unix:///run/greeter.sock".to_owned(),
                "/run/greeter.sock",
                None,
            ),
        ] {
            let tc = Telemetry::new();
            let mut client = connect_target(&tc, addr, &target).await;
            client.say_hello(hello("ada")).await.unwrap();
            let spans = tc.wait_spans(1).await;
            let span = one_span(&spans, &SpanKind::Client);
            assert_eq!(
                attr(&span.attributes, "server.address"),
                Some(s(address)),
                "{target}"
            );
            assert_eq!(attr(&span.attributes, "server.port"), want_port, "{target}");
            let points = tc.f64_histogram(CLIENT_DURATION);
            assert_eq!(
                attr(points[0].attributes(), "server.address"),
                Some(s(address))
            );
        }
    }

    #[tokio::test]
    async fn the_uri_authority_wins_over_the_target() {
        let (ts, tc) = (Telemetry::new(), Telemetry::new());
        let addr = serve_grpc(&ts).await;
        let svc = ServiceBuilder::new()
            .layer(tc.client_layer().target("http://elsewhere:1").build())
            .service(channel(addr).await);
        let mut client = GreeterClient::with_origin(svc, format!("http://{addr}").parse().unwrap());
        client.say_hello(hello("ada")).await.unwrap();
        let spans = tc.wait_spans(1).await;
        let span = one_span(&spans, &SpanKind::Client);
        assert_eq!(
            attr(&span.attributes, "server.address"),
            Some(s("127.0.0.1"))
        );
        assert_eq!(attr(&span.attributes, "server.port"), Some(port(addr)));
    }

    #[tokio::test]
    async fn deadline_exceeded_with_a_target() {
        let (_ts, tc, addr, mut client) = serve_and_connect_target().await;
        call_slow_with_deadline(&mut client).await;
        let spans = tc.wait_spans(1).await;
        one_call(
            &tc,
            &spans,
            Side::ClientOf(addr),
            SAY_HELLO,
            "DEADLINE_EXCEEDED",
            true,
        );
    }
}

// ---------------------------------------------------------------------------------------
// What the module docs promise and no test above reaches: a server's own error and
// panic, and `end_at_head`, which never cuts a gRPC call short.

/// A `SayHello` request, for a service called in process.
fn say_hello_request() -> Request<Full<Bytes>> {
    let addr: SocketAddr = "127.0.0.1:50051".parse().unwrap();
    grpc_request(addr, &format!("/{SAY_HELLO}"), "application/grpc")
}

#[tokio::test]
async fn a_server_error_or_panic_is_unknown_with_its_own_error_type() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new().layer(t.server().build()).service_fn(
        |_req: Request<Full<Bytes>>| async {
            Err::<Response<Full<Bytes>>, _>(std::io::Error::other("disk on fire"))
        },
    );
    let err = svc.oneshot(say_hello_request()).await.unwrap_err();
    assert_eq!(err.to_string(), "disk on fire");
    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.name, SAY_HELLO);
    assert_eq!(
        attr(&span.attributes, "rpc.response.status_code"),
        Some(s("UNKNOWN"))
    );
    assert_eq!(
        attr(&span.attributes, "error.type"),
        Some(s("std::io::Error"))
    );
    assert_eq!(
        span.status,
        Status::Error {
            description: "disk on fire".into()
        }
    );
    let points = t.f64_histogram(SERVER_DURATION);
    assert_eq!(
        attr(points[0].attributes(), "error.type"),
        Some(s("std::io::Error"))
    );

    let t = Telemetry::new();
    let svc = ServiceBuilder::new().layer(t.server().build()).service_fn(
        |_req: Request<Full<Bytes>>| async {
            if true {
                panic!("handler bug (expected by the test)");
            }
            Ok::<Response<Full<Bytes>>, Infallible>(Response::new(Full::default()))
        },
    );
    let call = tokio::spawn(svc.oneshot(say_hello_request()));
    assert!(call.await.unwrap_err().is_panic());
    let spans = t.wait_spans(1).await;
    assert_eq!(
        attr(&spans[0].attributes, "rpc.response.status_code"),
        Some(s("UNKNOWN"))
    );
    assert_eq!(attr(&spans[0].attributes, "error.type"), Some(s("panic")));
}

#[tokio::test]
async fn end_at_head_never_cuts_a_grpc_call_short() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().end_at_head(|_| true).build())
        .service_fn(|_req: Request<Full<Bytes>>| async {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "5".parse().unwrap());
            let frames = stream::iter([
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x00"))),
                Ok(Frame::trailers(trailers)),
            ]);
            let mut res = Response::new(StreamBody::new(frames));
            res.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            Ok::<_, Infallible>(res)
        });
    let res = svc.oneshot(say_hello_request()).await.unwrap();
    // Not ended at the head: no span until the trailers have gone by.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(t.finished_spans().is_empty());
    res.into_body().collect().await.unwrap();
    let spans = t.wait_spans(1).await;
    // The status came from the trailers.
    assert_eq!(
        attr(&spans[0].attributes, "rpc.response.status_code"),
        Some(s("NOT_FOUND"))
    );
}
