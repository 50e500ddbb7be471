//! End-to-end tests of the server layer: real hyper servers on 127.0.0.1, the SDK's
//! in-memory exporters, and assertions on exactly what they received.

mod support;

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use opentelemetry::trace::{
    Span as _, SpanId, SpanKind, Status, TraceContextExt as _, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_otel_http::server::{Otel, ResponseFuture};
use tower_otel_http::{HttpRoute, HttpRouteLayer, OtelLayer, ResponseBody};

const DURATION: &str = "http.server.request.duration";
const REQUEST_SIZE: &str = "http.server.request.body.size";
const RESPONSE_SIZE: &str = "http.server.response.body.size";
const ACTIVE: &str = "http.server.active_requests";

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

// ---------------------------------------------------------------------------------------
// The application under test.

/// `/status/{code}` answers that code (204 with an empty body); `/users/{id}` tags its
/// response with the route `/users/{id}`; everything answers "hello" with two
/// `x-resp` headers.
async fn app<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let mut res = Response::new(Full::new(Bytes::from_static(b"hello")));
    if let Some(code) = path.strip_prefix("/status/") {
        *res.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        if res.status() == StatusCode::NO_CONTENT {
            *res.body_mut() = Full::new(Bytes::new());
        }
    }
    if path.starts_with("/users/") {
        res.extensions_mut()
            .insert(HttpRoute::from_static("/users/{id}"));
    }
    res.headers_mut().append("x-resp", "r1".parse().unwrap());
    res.headers_mut().append("x-resp", "r2".parse().unwrap());
    Ok(res)
}

/// Serves [`app`] behind `layer` on a loopback socket.
async fn serve_app(layer: OtelLayer) -> SocketAddr {
    serve(ServiceBuilder::new().layer(layer).service_fn(app)).await
}

/// A GET with the legacy client; returns the status.
async fn get_status(addr: SocketAddr, path: &str) -> StatusCode {
    send(get(addr, path)).await.0.status
}

fn a(span: &SpanData, key: &str) -> Option<Value> {
    attr(&span.attributes, key)
}

/// Every string attribute (and every string-array element) of `span` is non-empty.
fn assert_no_empty_strings(span: &SpanData) {
    for kv in &span.attributes {
        match &kv.value {
            Value::String(v) => assert!(!v.as_str().is_empty(), "{} is empty", kv.key),
            Value::Array(opentelemetry::Array::String(vs)) => {
                assert!(!vs.is_empty(), "{} is an empty array", kv.key);
                for v in vs {
                    assert!(!v.as_str().is_empty(), "{} has an empty element", kv.key);
                }
            }
            _ => {}
        }
    }
}

/// The sum of the counts of every data point of the duration histogram.
fn duration_count(t: &Telemetry) -> u64 {
    t.f64_histogram(DURATION).iter().map(|p| p.count()).sum()
}

/// The value of the only `http.server.active_requests` data point.
fn active_value(t: &Telemetry) -> i64 {
    let points = t.i64_sum(ACTIVE);
    assert_eq!(points.len(), 1, "{points:#?}");
    points[0].value()
}

/// A body error type of our own, so its type name is unambiguous.
#[derive(Debug)]
struct BodyFailure;

impl fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("body failure")
    }
}

impl std::error::Error for BodyFailure {}

/// An inner-service error type of our own.
#[derive(Debug, PartialEq)]
struct ServiceFailure(u32);

type Boxed = BoxBody<Bytes, BodyFailure>;

/// A streamed body: each item is produced after its delay.
fn delayed_stream(items: Vec<(Duration, Result<&'static str, BodyFailure>)>) -> Boxed {
    let stream = futures_util::stream::unfold(items.into_iter(), |mut items| async move {
        let (delay, item) = items.next()?;
        tokio::time::sleep(delay).await;
        Some((
            item.map(|s| Frame::data(Bytes::from_static(s.as_bytes()))),
            items,
        ))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// A streamed body that never ends: a chunk every 20 ms.
fn endless_stream() -> Boxed {
    let stream = futures_util::stream::unfold(0u64, |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some((Ok(Frame::data(Bytes::from(format!("chunk{n};")))), n + 1))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

// ---------------------------------------------------------------------------------------
// 1. Span attributes.

#[tokio::test]
async fn every_span_attribute_over_http1() {
    let t = Telemetry::new();
    let layer = t
        .server()
        .request_headers(["x-multi", "X-Single", "x-absent"])
        .response_headers(["x-resp", "x-absent"])
        .build();
    let addr = serve_app(layer).await;
    let mut req = request("GET", "/users/42?q=1");
    let h = req.headers_mut();
    h.insert("user-agent", "it/1.0".parse().unwrap());
    h.append("x-multi", "a".parse().unwrap());
    h.append("x-multi", "b".parse().unwrap());
    h.insert("x-single", "s".parse().unwrap());
    let (parts, body, local) = send_from(addr, req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "hello");

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(
        typed_set(&span.attributes),
        expected_set(&[
            ("http.request.method", s("GET")),
            ("url.path", s("/users/42")),
            ("url.query", s("q=1")),
            ("url.scheme", s("http")),
            ("server.address", s("127.0.0.1")),
            ("server.port", Value::I64(i64::from(addr.port()))),
            ("client.address", s("127.0.0.1")),
            ("network.peer.address", s("127.0.0.1")),
            ("network.peer.port", Value::I64(i64::from(local.port()))),
            ("user_agent.original", s("it/1.0")),
            ("network.protocol.version", s("1.1")),
            ("http.route", s("/users/{id}")),
            ("http.request.header.x-multi", strings(&["a", "b"])),
            ("http.request.header.x-single", strings(&["s"])),
            ("http.response.header.x-resp", strings(&["r1", "r2"])),
            ("http.response.status_code", Value::I64(200)),
        ])
    );
    assert_no_empty_strings(span);
}

#[tokio::test]
async fn minimal_request_has_no_optional_or_empty_attributes() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().request_headers(["x-id"]).build()).await;
    // No query, no user agent, no captured header.
    let (parts, _, _) = send_from(addr, request("GET", "/plain")).await;
    assert_eq!(parts.status, 200);

    let spans = t.wait_spans(1).await;
    let plain = &spans[0];
    assert_eq!(a(plain, "url.query"), None);
    assert_eq!(a(plain, "user_agent.original"), None);
    assert_eq!(a(plain, "http.request.header.x-id"), None);
    assert_eq!(a(plain, "http.route"), None);
    assert_eq!(plain.name, "GET");
    assert_no_empty_strings(plain);
}

#[tokio::test]
async fn empty_query_is_not_an_empty_attribute() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let (parts, _, _) = send_from(addr, request("GET", "/edge?")).await;
    assert_eq!(parts.status, 200);

    let spans = t.wait_spans(1).await;
    assert_eq!(a(&spans[0], "url.path"), Some(s("/edge")));
    // `/edge?` carries no query worth recording: no `url.query=""`.
    assert_no_empty_strings(&spans[0]);
}

#[tokio::test]
async fn empty_user_agent_is_not_an_empty_attribute() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let mut req = request("GET", "/empty-ua");
    req.headers_mut().insert("user-agent", "".parse().unwrap());
    let (parts, _, _) = send_from(addr, req).await;
    assert_eq!(parts.status, 200);

    let spans = t.wait_spans(1).await;
    assert_eq!(a(&spans[0], "url.path"), Some(s("/empty-ua")));
    // `User-Agent:` with no value: no `user_agent.original=""`.
    assert_no_empty_strings(&spans[0]);
}

#[tokio::test]
async fn url_query_redacts_every_sensitive_key() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let keys = [
        "AWSAccessKeyId",
        "Signature",
        "sig",
        "X-Goog-Signature",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
    ];
    let query: Vec<String> = keys.iter().map(|k| format!("{k}=secret-{k}")).collect();
    let path = format!("/q?q=OpenTelemetry&{}&SIG=kept", query.join("&"));
    assert_eq!(get_status(addr, &path).await, 200);

    let spans = t.wait_spans(1).await;
    let redacted: Vec<String> = keys.iter().map(|k| format!("{k}=REDACTED")).collect();
    assert_eq!(
        a(&spans[0], "url.query"),
        Some(s(&format!(
            "q=OpenTelemetry&{}&SIG=kept",
            redacted.join("&")
        )))
    );
    assert_eq!(a(&spans[0], "url.path"), Some(s("/q")));
}

#[tokio::test]
async fn url_scheme_default_configured_and_forwarded() {
    let t = Telemetry::new();
    let default = serve_app(t.server().build()).await;
    let https = serve_app(t.server().scheme("https").build()).await;
    let trusted = serve_app(t.server().trust_forwarded_headers(true).build()).await;

    let with = |path: &str, name: &str, value: &str| {
        let mut req = request("GET", path);
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        req
    };
    send_from(default, request("GET", "/default")).await;
    send_from(
        default,
        with("/untrusted-xfp", "x-forwarded-proto", "https"),
    )
    .await;
    send_from(default, with("/untrusted-fwd", "forwarded", "proto=https")).await;
    send_from(https, request("GET", "/configured")).await;
    send_from(
        https,
        with("/configured-untrusted", "x-forwarded-proto", "ftp"),
    )
    .await;
    send_from(trusted, request("GET", "/trusted-none")).await;
    send_from(trusted, with("/trusted-xfp", "x-forwarded-proto", "https")).await;
    send_from(
        trusted,
        with("/trusted-fwd", "forwarded", "for=1.2.3.4;proto=https"),
    )
    .await;

    let spans = t.wait_spans(8).await;
    for (path, scheme) in [
        ("/default", "http"),
        ("/untrusted-xfp", "http"),
        ("/untrusted-fwd", "http"),
        ("/configured", "https"),
        ("/configured-untrusted", "https"),
        ("/trusted-none", "http"),
        ("/trusted-xfp", "https"),
        ("/trusted-fwd", "https"),
    ] {
        assert_eq!(
            a(span_with_path(&spans, path), "url.scheme"),
            Some(s(scheme)),
            "{path}"
        );
    }
    // The metrics carry the same scheme.
    let schemes: Vec<Option<Value>> = t
        .f64_histogram(DURATION)
        .iter()
        .map(|p| attr(p.attributes(), "url.scheme"))
        .collect();
    assert!(schemes.contains(&Some(s("https"))));
    assert!(schemes.contains(&Some(s("http"))));
}

#[tokio::test]
async fn server_address_from_host_and_trusted_forwarded_host() {
    let t = Telemetry::new();
    let untrusted = serve_app(t.server().build()).await;
    let trusted = serve_app(t.server().trust_forwarded_headers(true).build()).await;

    let with = |path: &str, headers: &[(&str, &str)]| {
        let mut req = request("GET", path);
        for (k, v) in headers {
            req.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        req
    };
    send_from(untrusted, with("/host", &[])).await;
    send_from(
        untrusted,
        with(
            "/custom-host",
            &[
                ("host", "api.example.com:9000"),
                ("x-forwarded-host", "evil.example:1"),
            ],
        ),
    )
    .await;
    send_from(untrusted, with("/no-port", &[("host", "example.org")])).await;
    send_from(
        trusted,
        with("/xfh", &[("x-forwarded-host", "example.com:8443")]),
    )
    .await;
    send_from(
        trusted,
        with("/fwd", &[("forwarded", "host=fwd.example;proto=https")]),
    )
    .await;

    let spans = t.wait_spans(5).await;
    let cases: [(&str, &str, Option<i64>); 5] = [
        ("/host", "127.0.0.1", Some(i64::from(untrusted.port()))),
        ("/custom-host", "api.example.com", Some(9000)),
        ("/no-port", "example.org", None),
        ("/xfh", "example.com", Some(8443)),
        ("/fwd", "fwd.example", None),
    ];
    for (path, host, port) in cases {
        let span = span_with_path(&spans, path);
        assert_eq!(a(span, "server.address"), Some(s(host)), "{path}");
        assert_eq!(a(span, "server.port"), port.map(Value::I64), "{path}");
    }
}

#[tokio::test]
async fn client_address_from_peer_and_trusted_forwarded_for() {
    let t = Telemetry::new();
    let untrusted = serve_app(t.server().build()).await;
    let trusted = serve_app(t.server().trust_forwarded_headers(true).build()).await;

    let with = |path: &str, name: &'static str, value: &str| {
        let mut req = request("GET", path);
        req.headers_mut().insert(name, value.parse().unwrap());
        req
    };
    let (_, _, l1) = send_from(
        untrusted,
        with("/untrusted-xff", "x-forwarded-for", "203.0.113.7"),
    )
    .await;
    let (_, _, l2) = send_from(
        untrusted,
        with("/untrusted-fwd", "forwarded", "for=203.0.113.9"),
    )
    .await;
    let (_, _, l3) = send_from(
        trusted,
        with("/xff", "x-forwarded-for", "203.0.113.7, 10.0.0.1"),
    )
    .await;
    let (_, _, l4) = send_from(
        trusted,
        with(
            "/fwd",
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.1",
        ),
    )
    .await;
    let (_, _, l5) = send_from(trusted, request("GET", "/trusted-none")).await;

    let spans = t.wait_spans(5).await;
    for (path, client, local) in [
        ("/untrusted-xff", "127.0.0.1", l1),
        ("/untrusted-fwd", "127.0.0.1", l2),
        ("/xff", "203.0.113.7", l3),
        ("/fwd", "2001:db8::1", l4),
        ("/trusted-none", "127.0.0.1", l5),
    ] {
        let span = span_with_path(&spans, path);
        assert_eq!(a(span, "client.address"), Some(s(client)), "{path}");
        // The peer is always the socket's.
        assert_eq!(
            a(span, "network.peer.address"),
            Some(s("127.0.0.1")),
            "{path}"
        );
        assert_eq!(
            a(span, "network.peer.port"),
            Some(Value::I64(i64::from(local.port()))),
            "{path}"
        );
    }
}

#[tokio::test]
async fn network_protocol_version_2_over_h2c() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let res = h2_client().request(get(addr, "/users/5")).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hello");

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.name, "GET /users/{id}");
    assert_eq!(a(span, "network.protocol.version"), Some(s("2")));
    assert_eq!(a(span, "url.scheme"), Some(s("http")));
    // From `:authority`.
    assert_eq!(a(span, "server.address"), Some(s("127.0.0.1")));
    assert_eq!(
        a(span, "server.port"),
        Some(Value::I64(i64::from(addr.port())))
    );
    assert_eq!(a(span, "http.response.status_code"), Some(Value::I64(200)));
    assert_no_empty_strings(span);
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(
        attr(points[0].attributes(), "network.protocol.version"),
        Some(s("2"))
    );
}

// ---------------------------------------------------------------------------------------
// 2. Methods.

#[tokio::test]
async fn unknown_methods_are_other() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    for (method, path) in [("FOO", "/foo"), ("get", "/users/7")] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send(req).await.0.status, 200);
    }

    let spans = t.wait_spans(2).await;
    let foo = span_with_path(&spans, "/foo");
    assert_eq!(foo.name, "HTTP");
    assert_eq!(a(foo, "http.request.method"), Some(s("_OTHER")));
    assert_eq!(a(foo, "http.request.method_original"), Some(s("FOO")));
    let get = span_with_path(&spans, "/users/7");
    assert_eq!(get.name, "HTTP /users/{id}");
    assert_eq!(a(get, "http.request.method"), Some(s("_OTHER")));
    assert_eq!(a(get, "http.request.method_original"), Some(s("get")));

    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 2);
    for p in &points {
        assert_eq!(
            attr(p.attributes(), "http.request.method"),
            Some(s("_OTHER"))
        );
        assert_eq!(attr(p.attributes(), "http.request.method_original"), None);
    }
}

#[tokio::test]
async fn known_methods_replaces_the_default_set() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().known_methods(["FOO", "GET"]).build()).await;
    for (method, path) in [("FOO", "/foo"), ("GET", "/get"), ("POST", "/post")] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send(req).await.0.status, 200);
    }

    let spans = t.wait_spans(3).await;
    let foo = span_with_path(&spans, "/foo");
    assert_eq!(foo.name, "FOO");
    assert_eq!(a(foo, "http.request.method"), Some(s("FOO")));
    assert_eq!(a(foo, "http.request.method_original"), None);
    let get = span_with_path(&spans, "/get");
    assert_eq!(get.name, "GET");
    assert_eq!(a(get, "http.request.method"), Some(s("GET")));
    assert_eq!(a(get, "http.request.method_original"), None);
    // POST is no longer known.
    let post = span_with_path(&spans, "/post");
    assert_eq!(post.name, "HTTP");
    assert_eq!(a(post, "http.request.method"), Some(s("_OTHER")));
    assert_eq!(a(post, "http.request.method_original"), Some(s("POST")));
}

// ---------------------------------------------------------------------------------------
// 3-4. Context propagation.

#[tokio::test]
async fn traceparent_makes_a_remote_parent() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let mut req = get(addr, "/child");
    req.headers_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    send(req).await;

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(span.parent_span_id.to_string(), PARENT_ID);
    assert!(span.parent_span_is_remote);
    assert_ne!(span.span_context.span_id().to_string(), PARENT_ID);
    assert!(span.links.links.is_empty());
}

#[tokio::test]
async fn no_or_invalid_traceparent_starts_a_new_root() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    send(get(addr, "/none")).await;
    let invalid = [
        (
            "/zero-trace",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ),
        (
            "/zero-parent",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        ),
        ("/garbage", "not a traceparent"),
        (
            "/bad-version",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    for (path, value) in invalid {
        let mut req = get(addr, path);
        req.headers_mut()
            .insert("traceparent", value.parse().unwrap());
        send(req).await;
    }

    let spans = t.wait_spans(5).await;
    let mut trace_ids = Vec::new();
    for path in [
        "/none",
        "/zero-trace",
        "/zero-parent",
        "/garbage",
        "/bad-version",
    ] {
        let span = span_with_path(&spans, path);
        assert_eq!(span.parent_span_id, SpanId::INVALID, "{path}");
        assert!(!span.parent_span_is_remote, "{path}");
        assert!(span.span_context.is_valid(), "{path}");
        assert_ne!(span.span_context.trace_id().to_string(), TRACE_ID, "{path}");
        trace_ids.push(span.span_context.trace_id());
    }
    trace_ids.sort_by_key(|id| id.to_string());
    trace_ids.dedup();
    assert_eq!(trace_ids.len(), 5, "each request is its own trace");
}

#[tokio::test]
async fn public_endpoint_starts_a_new_root_linked_to_the_caller() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().public_endpoint(true).build()).await;
    let mut req = get(addr, "/public");
    req.headers_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    send(req).await;
    // Without an incoming context there is nothing to link.
    send(get(addr, "/public-no-parent")).await;

    let spans = t.wait_spans(2).await;
    let span = span_with_path(&spans, "/public");
    assert_ne!(span.span_context.trace_id().to_string(), TRACE_ID);
    assert_ne!(span.span_context.trace_id(), TraceId::INVALID);
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    assert!(!span.parent_span_is_remote);
    assert_eq!(span.links.links.len(), 1);
    let link = &span.links.links[0].span_context;
    assert_eq!(link.trace_id().to_string(), TRACE_ID);
    assert_eq!(link.span_id().to_string(), PARENT_ID);
    assert!(link.is_remote());
    assert!(link.is_sampled());

    let lone = span_with_path(&spans, "/public-no-parent");
    assert_eq!(lone.parent_span_id, SpanId::INVALID);
    assert!(lone.links.links.is_empty());
}

// ---------------------------------------------------------------------------------------
// 5. Filter.

#[tokio::test]
async fn filtered_requests_pass_through_without_telemetry() {
    let t = Telemetry::new();
    let layer = t
        .server()
        .filter(|parts| parts.uri.path() != "/health")
        .active_requests(true)
        .build();
    let addr = serve_app(layer).await;
    let (parts, body) = send(get(addr, "/health")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "hello");
    assert_eq!(parts.headers.get_all("x-resp").iter().count(), 2);
    assert_eq!(parts.headers["content-length"], "5");
    let (parts, _) = send(get(addr, "/recorded")).await;
    assert_eq!(parts.status, 200);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    assert_eq!(a(&spans[0], "url.path"), Some(s("/recorded")));
    assert_eq!(duration_count(&t), 1);
    let sizes: u64 = t
        .u64_histogram(RESPONSE_SIZE)
        .iter()
        .map(|p| p.count())
        .sum();
    assert_eq!(sizes, 1);
    // The filtered request never touched the counter either.
    assert_eq!(active_value(&t), 0);
}

// ---------------------------------------------------------------------------------------
// 6-8. Status and errors.

#[tokio::test]
async fn status_200_404_500() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    for code in [200u16, 404, 500] {
        assert_eq!(get_status(addr, &format!("/status/{code}")).await, code);
    }

    let spans = t.wait_spans(3).await;
    for code in [200, 404] {
        let span = span_with_path(&spans, &format!("/status/{code}"));
        assert_eq!(span.status, Status::Unset, "{code}");
        assert_eq!(a(span, "error.type"), None, "{code}");
        assert_eq!(a(span, "http.response.status_code"), Some(Value::I64(code)));
    }
    let span = span_with_path(&spans, "/status/500");
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(a(span, "error.type"), Some(s("500")));
    assert_eq!(a(span, "http.response.status_code"), Some(Value::I64(500)));

    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 3);
    for code in [200i64, 404, 500] {
        let point = points
            .iter()
            .find(|p| attr(p.attributes(), "http.response.status_code") == Some(Value::I64(code)))
            .unwrap_or_else(|| panic!("no point for {code}: {points:#?}"));
        assert_eq!(point.count(), 1);
        let error = attr(point.attributes(), "error.type");
        if code == 500 {
            assert_eq!(error, Some(s("500")));
        } else {
            assert_eq!(error, None);
        }
    }
}

#[tokio::test]
async fn inner_service_error_is_recorded_and_returned_unchanged() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().active_requests(true).build())
        .service_fn(|_req: Request<Full<Bytes>>| async {
            Err::<Response<Full<Bytes>>, _>(ServiceFailure(7))
        });
    let err = svc.oneshot(request("GET", "/fail")).await.unwrap_err();
    assert_eq!(err, ServiceFailure(7));

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    let type_name = std::any::type_name::<ServiceFailure>();
    assert_eq!(type_name, "server::ServiceFailure");
    assert_eq!(a(span, "error.type"), Some(s(type_name)));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(a(span, "http.response.status_code"), None);

    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count(), 1);
    assert_eq!(
        attr(points[0].attributes(), "error.type"),
        Some(s(type_name))
    );
    assert_eq!(
        attr(points[0].attributes(), "http.response.status_code"),
        None
    );
    assert_eq!(points[0].sum(), span_secs(span));
    assert_eq!(active_value(&t), 0);
}

#[tokio::test]
async fn response_body_error_is_recorded() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new().layer(t.server().build()).service_fn(
        |_req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(Response::new(delayed_stream(vec![
                (Duration::ZERO, Ok("first")),
                (Duration::from_millis(20), Err(BodyFailure)),
            ])))
        },
    );
    let addr = serve(svc).await;
    let res = client().request(get(addr, "/broken")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.into_body().collect().await.is_err());

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    let type_name = std::any::type_name::<BodyFailure>();
    assert_eq!(a(span, "error.type"), Some(s(type_name)));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(a(span, "http.response.status_code"), Some(Value::I64(200)));
    t.settle_spans(1).await;
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count(), 1);
    assert_eq!(
        attr(points[0].attributes(), "error.type"),
        Some(s(type_name))
    );
}

// ---------------------------------------------------------------------------------------
// 9. Streamed bodies.

#[tokio::test]
async fn streamed_body_duration_includes_the_stream() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new().layer(t.server().build()).service_fn(
        |_req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(Response::new(delayed_stream(vec![
                (Duration::ZERO, Ok("one,")),
                (Duration::from_millis(100), Ok("two,")),
                (Duration::from_millis(100), Ok("three")),
            ])))
        },
    );
    let addr = serve(svc).await;
    let (parts, body) = send(get(addr, "/stream")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "one,two,three");

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    assert_eq!(a(span, "error.type"), None);
    assert_eq!(span.status, Status::Unset);
    let secs = span_secs(span);
    assert!(secs >= 0.2, "span lasted {secs} s");
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count(), 1);
    assert_eq!(points[0].sum(), secs);
    let sizes = t.u64_histogram(RESPONSE_SIZE);
    assert_eq!(sizes.len(), 1);
    assert_eq!(sizes[0].sum(), 13);
}

// ---------------------------------------------------------------------------------------
// 10. Cancellation and aborts.

#[tokio::test]
async fn future_dropped_by_outer_timeout_is_request_cancelled() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .layer(t.server().active_requests(true).build())
        .service_fn(|_req: Request<Full<Bytes>>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"late"))))
        });
    let err = svc.oneshot(request("GET", "/slow")).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(a(span, "error.type"), Some(s("request_cancelled")));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(a(span, "http.response.status_code"), None);
    assert!(span_secs(span) >= 0.05);
    assert_eq!(duration_count(&t), 1);
    assert_eq!(active_value(&t), 0);
}

#[tokio::test]
async fn client_disconnect_before_the_response_is_request_cancelled() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().active_requests(true).build())
        .service_fn(|_req: Request<hyper::body::Incoming>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"late"))))
        });
    let addr = serve(svc).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Wait until the request is in flight.
    for _ in 0..200 {
        if t.i64_sum(ACTIVE).first().map(|p| p.value()) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(active_value(&t), 1);
    drop(stream);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    assert_eq!(a(&spans[0], "error.type"), Some(s("request_cancelled")));
    assert_eq!(a(&spans[0], "http.response.status_code"), None);
    assert_eq!(duration_count(&t), 1);
    assert_eq!(active_value(&t), 0);
}

#[tokio::test]
async fn body_dropped_mid_stream_is_response_body_aborted() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().active_requests(true).build())
        .service_fn(|_req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(Response::new(endless_stream()))
        });
    let addr = serve(svc).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /endless HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Read until the first chunk has arrived, then go away.
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&received).contains("chunk0;") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        received.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200 OK"));
    drop(stream);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(a(span, "error.type"), Some(s("response_body_aborted")));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(a(span, "http.response.status_code"), Some(Value::I64(200)));
    assert_eq!(duration_count(&t), 1);
    let points = t.f64_histogram(DURATION);
    assert_eq!(
        attr(points[0].attributes(), "error.type"),
        Some(s("response_body_aborted"))
    );
    assert_eq!(active_value(&t), 0);
}

#[tokio::test]
async fn active_requests_returns_to_zero_after_cancel_and_abort() {
    let t = Telemetry::new();
    let layer = t.server().active_requests(true).build();

    // A cancelled future ...
    let slow = ServiceBuilder::new()
        .timeout(Duration::from_millis(20))
        .layer(layer.clone())
        .service_fn(|_req: Request<Full<Bytes>>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
    slow.oneshot(request("GET", "/slow")).await.unwrap_err();

    // ... and an abandoned body, on the same layer.
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(endless_stream()))
        });
    let res = svc.oneshot(request("GET", "/endless")).await.unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "chunk0;");
    assert_eq!(active_value(&t), 1);
    drop(body);

    t.wait_spans(2).await;
    let spans = t.settle_spans(2).await;
    let mut errors: Vec<Option<Value>> = spans.iter().map(|s| a(s, "error.type")).collect();
    errors.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        errors,
        vec![
            Some(s("request_cancelled")),
            Some(s("response_body_aborted"))
        ]
    );
    let points = t.i64_sum(ACTIVE);
    assert_eq!(points.len(), 1, "{points:#?}");
    assert_eq!(points[0].value(), 0);
    assert_eq!(
        typed_set(points[0].attributes()),
        expected_set(&[("http.request.method", s("GET")), ("url.scheme", s("http"))])
    );
    assert_eq!(t.unit(ACTIVE).as_deref(), Some("{request}"));
}

// ---------------------------------------------------------------------------------------
// 11. Panics.

async fn panicking_handler(
    _req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::task::yield_now().await;
    panic!("handler panicked (expected by the test)");
}

#[tokio::test]
async fn panic_caught_inside_the_layer_is_a_500() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .service_fn(panicking_handler);
    let addr = serve(svc).await;
    assert_eq!(get_status(addr, "/panic").await, 500);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(a(span, "error.type"), Some(s("500")));
    assert_eq!(a(span, "http.response.status_code"), Some(Value::I64(500)));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(duration_count(&t), 1);
}

#[tokio::test]
async fn panic_caught_outside_the_layer_is_error_type_panic() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(t.server().active_requests(true).build())
        .service_fn(panicking_handler);
    let addr = serve(svc).await;
    assert_eq!(get_status(addr, "/panic").await, 500);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(a(span, "error.type"), Some(s("panic")));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(a(span, "http.response.status_code"), None);
    assert_eq!(duration_count(&t), 1);
    assert_eq!(active_value(&t), 0);
}

#[tokio::test]
async fn panic_in_call_caught_outside_the_layer_still_ends_the_request() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(t.server().active_requests(true).build())
        .service_fn(
            |_req: Request<hyper::body::Incoming>| -> std::future::Ready<
                Result<Response<Full<Bytes>>, Infallible>,
            > { panic!("service panicked in call (expected by the test)") },
        );
    let addr = serve(svc).await;
    assert_eq!(get_status(addr, "/panic-in-call").await, 500);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    assert_eq!(a(&spans[0], "error.type"), Some(s("panic")));
    assert!(
        matches!(spans[0].status, Status::Error { .. }),
        "{:?}",
        spans[0].status
    );
    assert_eq!(duration_count(&t), 1);
    assert_eq!(active_value(&t), 0);
}

// ---------------------------------------------------------------------------------------
// 12-13. Bodiless responses and body hints.

#[tokio::test]
async fn head_and_204_end_without_abort() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let head = Request::head(format!("http://{addr}/head"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = send(head).await;
    assert_eq!(parts.status, 200);
    assert!(body.is_empty());
    let (parts, body) = send(get(addr, "/status/204")).await;
    assert_eq!(parts.status, 204);
    assert!(body.is_empty());

    t.wait_spans(2).await;
    let spans = t.settle_spans(2).await;
    for (path, code) in [("/head", 200), ("/status/204", 204)] {
        let span = span_with_path(&spans, path);
        assert_eq!(a(span, "error.type"), None, "{path}");
        assert_eq!(span.status, Status::Unset, "{path}");
        assert_eq!(
            a(span, "http.response.status_code"),
            Some(Value::I64(code)),
            "{path}"
        );
    }
    assert_eq!(span_with_path(&spans, "/head").name, "HEAD");
    let sizes = t.u64_histogram(RESPONSE_SIZE);
    assert_eq!(sizes.len(), 2, "{sizes:#?}");
    for p in &sizes {
        assert_eq!(p.count(), 1);
        assert_eq!(p.sum(), 0);
        assert_eq!(attr(p.attributes(), "error.type"), None);
    }
    assert_eq!(duration_count(&t), 2);
}

#[tokio::test]
async fn content_length_is_preserved_over_http1() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let (parts, body) = send(get(addr, "/plain")).await;
    assert_eq!(parts.version, http::Version::HTTP_11);
    assert_eq!(body, "hello");
    assert_eq!(parts.headers.get("content-length").unwrap(), "5");
    assert!(parts.headers.get("transfer-encoding").is_none());
    t.wait_spans(1).await;
}

#[tokio::test]
async fn response_body_forwards_size_hint_and_is_end_stream() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new().layer(t.server().build()).service_fn(
        |req: Request<Full<Bytes>>| async move {
            let body = if req.uri().path() == "/empty" {
                Bytes::new()
            } else {
                Bytes::from_static(b"hello")
            };
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        },
    );

    let res = svc.clone().oneshot(request("GET", "/hello")).await.unwrap();
    let mut body: ResponseBody<Full<Bytes>> = res.into_body();
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream());
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "hello");
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
    // Ended after the last frame, without being polled to `None`.
    t.wait_spans(1).await;

    let res = svc.oneshot(request("GET", "/empty")).await.unwrap();
    let body = res.into_body();
    assert_eq!(body.size_hint().exact(), Some(0));
    assert!(body.is_end_stream());
    // An empty body ends the span at once: its consumer may never poll it.
    t.wait_spans(2).await;
    drop(body);
    let spans = t.settle_spans(2).await;
    for span in &spans {
        assert_eq!(a(span, "error.type"), None);
    }
    let sizes = t.u64_histogram(RESPONSE_SIZE);
    assert_eq!(sizes.len(), 1);
    assert_eq!(sizes[0].count(), 2);
    assert_eq!(sizes[0].sum(), 5);
}

// ---------------------------------------------------------------------------------------
// 14. Spans made in handlers.

#[tokio::test(flavor = "current_thread")]
async fn tracing_span_in_handler_is_a_child() {
    use tracing_subscriber::layer::SubscriberExt as _;

    let t = Telemetry::new();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(t.tracer_provider.tracer("tracing")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let svc = ServiceBuilder::new().layer(t.server().build()).service_fn(
        |_req: Request<hyper::body::Incoming>| async {
            tokio::task::yield_now().await;
            tracing::info_span!("handler_work").in_scope(|| {});
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        },
    );
    let addr = serve(svc).await;
    send(get(addr, "/traced")).await;

    t.wait_spans(2).await;
    let spans = t.finished_spans();
    let server = spans_named(&spans, "GET");
    let child = spans_named(&spans, "handler_work");
    assert_eq!(server.len(), 1, "{spans:#?}");
    assert_eq!(child.len(), 1, "{spans:#?}");
    assert_eq!(
        child[0].span_context.trace_id(),
        server[0].span_context.trace_id()
    );
    assert_eq!(child[0].parent_span_id, server[0].span_context.span_id());
    assert!(!child[0].parent_span_is_remote);
}

#[tokio::test]
async fn otel_api_span_in_handler_is_a_child() {
    let t = Telemetry::new();
    let provider = t.tracer_provider.clone();
    let svc = ServiceBuilder::new().layer(t.server().build()).service_fn(
        move |_req: Request<hyper::body::Incoming>| {
            let tracer = provider.tracer("handler");
            // Made while the inner service is called ...
            tracer.start("in_call").end();
            async move {
                tokio::task::yield_now().await;
                // ... and while its future is polled.
                let mut span = tracer.start("in_future");
                assert!(opentelemetry::Context::current()
                    .span()
                    .span_context()
                    .is_valid());
                span.end();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        },
    );
    let addr = serve(svc).await;
    let mut req = get(addr, "/api");
    req.headers_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    send(req).await;

    t.wait_spans(3).await;
    let spans = t.finished_spans();
    let server = spans_named(&spans, "GET")[0];
    for name in ["in_call", "in_future"] {
        let child = spans_named(&spans, name);
        assert_eq!(child.len(), 1, "{name}");
        assert_eq!(child[0].span_context.trace_id().to_string(), TRACE_ID);
        assert_eq!(
            child[0].parent_span_id,
            server.span_context.span_id(),
            "{name}"
        );
        assert!(!child[0].parent_span_is_remote, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// 15. Metrics.

#[tokio::test]
async fn duration_metric_name_unit_buckets_and_attributes() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let mut req = request("GET", "/users/42?q=1");
    req.headers_mut()
        .insert("user-agent", "it/1.0".parse().unwrap());
    send_from(addr, req).await;

    let spans = t.wait_spans(1).await;
    assert_eq!(t.unit(DURATION).as_deref(), Some("s"));
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    let p = &points[0];
    assert_eq!(
        p.bounds().collect::<Vec<f64>>(),
        vec![0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
    );
    assert_eq!(p.count(), 1);
    assert_eq!(p.sum(), span_secs(&spans[0]));
    assert_eq!(
        typed_set(p.attributes()),
        expected_set(&[
            ("http.request.method", s("GET")),
            ("url.scheme", s("http")),
            ("http.response.status_code", Value::I64(200)),
            ("network.protocol.version", s("1.1")),
            ("http.route", s("/users/{id}")),
        ])
    );
}

#[tokio::test]
async fn metric_set_by_default_and_route_is_omitted_when_unknown() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let mut req = get(addr, "/no-route?q=1");
    *req.body_mut() = http_body_util::Full::new(Bytes::from_static(b"body"));
    send(req).await;
    t.wait_spans(1).await;
    assert_eq!(
        t.metric_names(),
        vec![
            "http.server.request.body.size",
            "http.server.request.duration",
            "http.server.response.body.size",
        ],
        "active_requests is opt-in"
    );
    let points = t.f64_histogram(DURATION);
    assert_eq!(
        typed_set(points[0].attributes()),
        expected_set(&[
            ("http.request.method", s("GET")),
            ("url.scheme", s("http")),
            ("http.response.status_code", Value::I64(200)),
            ("network.protocol.version", s("1.1")),
        ])
    );
}

#[tokio::test]
async fn body_size_metrics_count_real_bytes() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().build()).await;
    let req = Request::post(format!("http://{addr}/users/1"))
        .body(Full::new(Bytes::from_static(b"hello world")))
        .unwrap();
    let (parts, body) = send(req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "hello");
    t.wait_spans(1).await;

    let expected = expected_set(&[
        ("http.request.method", s("POST")),
        ("url.scheme", s("http")),
        ("http.response.status_code", Value::I64(200)),
        ("network.protocol.version", s("1.1")),
        ("http.route", s("/users/{id}")),
    ]);
    for (name, size) in [(REQUEST_SIZE, 11), (RESPONSE_SIZE, 5)] {
        assert_eq!(t.unit(name).as_deref(), Some("By"), "{name}");
        let points = t.u64_histogram(name);
        assert_eq!(points.len(), 1, "{name}");
        assert_eq!(points[0].count(), 1, "{name}");
        assert_eq!(points[0].sum(), size, "{name}");
        assert_eq!(typed_set(points[0].attributes()), expected, "{name}");
    }
}

#[tokio::test]
async fn server_address_on_metrics_adds_address_and_port() {
    let t = Telemetry::new();
    let addr = serve_app(
        t.server()
            .server_address_on_metrics(true)
            .active_requests(true)
            .build(),
    )
    .await;
    send(get(addr, "/users/9")).await;
    t.wait_spans(1).await;

    let address = [
        ("server.address", s("127.0.0.1")),
        ("server.port", Value::I64(i64::from(addr.port()))),
    ];
    let mut full = vec![
        ("http.request.method", s("GET")),
        ("url.scheme", s("http")),
        ("http.response.status_code", Value::I64(200)),
        ("network.protocol.version", s("1.1")),
        ("http.route", s("/users/{id}")),
    ];
    full.extend(address.iter().cloned());
    let points = t.f64_histogram(DURATION);
    assert_eq!(typed_set(points[0].attributes()), expected_set(&full));
    let sizes = t.u64_histogram(RESPONSE_SIZE);
    assert_eq!(typed_set(sizes[0].attributes()), expected_set(&full));
    let active = t.i64_sum(ACTIVE);
    assert_eq!(active.len(), 1);
    let mut active_attrs = vec![("http.request.method", s("GET")), ("url.scheme", s("http"))];
    active_attrs.extend(address.iter().cloned());
    assert_eq!(
        typed_set(active[0].attributes()),
        expected_set(&active_attrs)
    );
    assert_eq!(active[0].value(), 0);
}

#[tokio::test]
async fn body_size_metrics_can_be_disabled() {
    let t = Telemetry::new();
    let addr = serve_app(t.server().body_size_metrics(false).build()).await;
    send(get(addr, "/x")).await;
    t.wait_spans(1).await;
    assert_eq!(t.metric_names(), vec!["http.server.request.duration"]);
    assert_eq!(duration_count(&t), 1);
}

// ---------------------------------------------------------------------------------------
// 16. Auto traits.

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_clone<T: Clone>() {}

type Handler = tower::util::ServiceFn<
    fn(Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

/// `Send` only: an `UnsyncBoxBody` is not `Sync`.
type UnsyncBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

#[test]
fn send_sync_clone() {
    assert_send::<OtelLayer>();
    assert_sync::<OtelLayer>();
    assert_clone::<OtelLayer>();
    assert_send::<Otel<Handler>>();
    assert_sync::<Otel<Handler>>();
    assert_clone::<Otel<Handler>>();
    assert_send::<<Otel<Handler> as Service<Request<Full<Bytes>>>>::Future>();
    assert_sync::<<Otel<Handler> as Service<Request<Full<Bytes>>>>::Future>();
    assert_send::<ResponseFuture<std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>>>();
    assert_send::<ResponseBody<Full<Bytes>>>();
    assert_sync::<ResponseBody<Full<Bytes>>>();
    assert_send::<ResponseBody<UnsyncBody>>();
    assert_send::<tower_otel_http::HttpRouteLayer>();
    assert_sync::<tower_otel_http::HttpRouteLayer>();
    assert_clone::<tower_otel_http::HttpRouteLayer>();

    // And what axum and hyper-util need of a layered service.
    fn axum_ready<S>(_: &S)
    where
        S: Service<Request<Full<Bytes>>> + Clone + Send + Sync + 'static,
        S::Future: Send,
    {
    }
    let svc: Otel<Handler> = ServiceBuilder::new()
        .layer(OtelLayer::builder().traces(false).metrics(false).build())
        .service(tower::service_fn(
            (|_req| std::future::ready(Ok(Response::new(Full::new(Bytes::new()))))) as fn(_) -> _,
        ));
    axum_ready(&svc);
}

// ---------------------------------------------------------------------------------------
// 17-18. Routes and span names.

#[tokio::test]
async fn route_from_the_response_is_bound_late() {
    let sampler = RecordingSampler::default();
    let t = Telemetry::with_tracer(|b| b.with_sampler(sampler.clone()));
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .layer(HttpRouteLayer::new("/items/{id}"))
        .service_fn(|_req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"item"))))
        });
    let addr = serve(svc).await;
    send(get(addr, "/items/3")).await;

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    // Unknown at the start ...
    let seen = sampler.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "GET");
    assert_eq!(attr(&seen[0].1, "http.route"), None);
    // ... learned from the response.
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(a(span, "http.route"), Some(s("/items/{id}")));
    let points = t.f64_histogram(DURATION);
    assert_eq!(
        attr(points[0].attributes(), "http.route"),
        Some(s("/items/{id}"))
    );
    let sizes = t.u64_histogram(RESPONSE_SIZE);
    assert_eq!(
        attr(sizes[0].attributes(), "http.route"),
        Some(s("/items/{id}"))
    );
}

#[tokio::test]
async fn route_in_the_request_is_known_at_span_start() {
    let sampler = RecordingSampler::default();
    let t = Telemetry::with_tracer(|b| b.with_sampler(sampler.clone()));
    let svc = ServiceBuilder::new()
        .map_request(|mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(HttpRoute::from_static("/orders/{id}"));
            req
        })
        .layer(t.server().build())
        .service_fn(app);
    let addr = serve(svc).await;
    send(get(addr, "/orders/5")).await;

    let spans = t.wait_spans(1).await;
    let seen = sampler.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "GET /orders/{id}");
    assert_eq!(attr(&seen[0].1, "http.route"), Some(s("/orders/{id}")));
    // The other attributes a sampler needs are there at the start too.
    for key in [
        "http.request.method",
        "url.path",
        "url.scheme",
        "server.address",
        "server.port",
        "client.address",
    ] {
        assert!(attr(&seen[0].1, key).is_some(), "{key} missing at start");
    }
    assert_eq!(spans[0].name, "GET /orders/{id}");
    assert_eq!(a(&spans[0], "http.route"), Some(s("/orders/{id}")));
    let points = t.f64_histogram(DURATION);
    assert_eq!(
        attr(points[0].attributes(), "http.route"),
        Some(s("/orders/{id}"))
    );
}

#[tokio::test]
async fn custom_span_name() {
    let t = Telemetry::new();
    let layer = t
        .server()
        .span_name(|method, route| match route {
            Some(route) => format!("{method} {route} (custom)"),
            None => format!("{method} (custom)"),
        })
        .build();
    let addr = serve_app(layer).await;
    send(get(addr, "/plain")).await;
    send(get(addr, "/users/1")).await;
    let foo = Request::builder()
        .method("FOO")
        .uri(format!("http://{addr}/foo"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(foo).await;

    let spans = t.wait_spans(3).await;
    assert_eq!(span_with_path(&spans, "/plain").name, "GET (custom)");
    assert_eq!(
        span_with_path(&spans, "/users/1").name,
        "GET /users/{id} (custom)"
    );
    assert_eq!(span_with_path(&spans, "/foo").name, "HTTP (custom)");
}

// ------------------------------------------------------------------------------------
// Trace id in the response (`server_timing`)

/// A handler that already reports a `Server-Timing` entry of its own.
async fn timed(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
    res.headers_mut()
        .insert("server-timing", "db;dur=53".parse().unwrap());
    Ok(res)
}

#[tokio::test]
async fn server_timing_hands_the_server_spans_traceparent_back() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().server_timing(true).build())
        .service(tower::service_fn(timed));
    let addr = serve(svc).await;
    let mut req = request("GET", "/");
    req.headers_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    let (parts, _, _) = send_from(addr, req).await;
    let entries: Vec<&str> = parts
        .headers
        .get_all("server-timing")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    // The handler's own entry is kept; ours is added.
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0], "db;dur=53");
    let desc = entries[1]
        .strip_prefix("traceparent;desc=\"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{}", entries[1]));

    let spans = t.wait_spans(1).await;
    let sc = &spans[0].span_context;
    // It parses as a W3C traceparent and names the exported server span.
    let fields: Vec<&str> = desc.split('-').collect();
    assert_eq!(fields.len(), 4, "{desc}");
    assert_eq!(fields[0], "00");
    assert_eq!(fields[1], sc.trace_id().to_string());
    assert_eq!(fields[2], sc.span_id().to_string());
    assert_eq!(fields[3], "01");
    // The caller's trace, continued.
    assert_eq!(fields[1], "0af7651916cd43dd8448eb211c80319c");
    assert_ne!(fields[2], "b7ad6b7169203331");
}

#[tokio::test]
async fn server_timing_is_off_by_default() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service(tower::service_fn(timed));
    let addr = serve(svc).await;
    let (parts, _, _) = send_from(addr, request("GET", "/")).await;
    let entries: Vec<&str> = parts
        .headers
        .get_all("server-timing")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(entries, ["db;dur=53"]);
    t.wait_spans(1).await;
}

#[test]
#[should_panic(expected = "the `server_timing` option is on, but the layer makes no spans")]
fn server_timing_needs_spans() {
    let _ = OtelLayer::builder()
        .traces(false)
        .server_timing(true)
        .build();
}

// ------------------------------------------------------------------------------------
// Upgrades: `101 Switching Protocols`

/// Answers an `upgrade: echo` request with 101, then echoes what the client sends on the
/// upgraded connection.
async fn upgrade_echo(
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut buf = [0u8; 64];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut()
        .insert("connection", "upgrade".parse().unwrap());
    res.headers_mut().insert("upgrade", "echo".parse().unwrap());
    Ok(res)
}

#[tokio::test]
async fn an_upgrade_ends_its_span_at_the_101_not_when_the_connection_closes() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service(tower::service_fn(upgrade_echo));
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // The upgraded connection is still open, and the span has already ended.
    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    assert_eq!(
        attr(&span.attributes, "http.response.status_code"),
        Some(Value::I64(101))
    );
    assert_eq!(span.status, Status::Unset);
    assert_eq!(attr(&span.attributes, "error.type"), None);
    let points = t.f64_histogram("http.server.request.duration");
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count(), 1);

    // The layer did not get in the upgrade's way: the echo works.
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    assert_eq!(t.finished_spans().len(), 1);
}

// ------------------------------------------------------------------------------------
// Long streams: the response head event and the end-at-head policy

/// A stream whose head comes at once and whose body takes 200 ms; `text/event-stream`
/// for `/events`.
async fn slow_stream(req: Request<hyper::body::Incoming>) -> Result<Response<Boxed>, Infallible> {
    let mut res = Response::new(delayed_stream(vec![
        (Duration::ZERO, Ok("data: one\n\n")),
        (Duration::from_millis(100), Ok("data: two\n\n")),
        (Duration::from_millis(100), Ok("data: three\n\n")),
    ]));
    if req.uri().path() == "/events" {
        res.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
    }
    Ok(res)
}

fn secs_between(from: std::time::SystemTime, to: std::time::SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64()
}

#[tokio::test]
async fn the_response_head_event_marks_the_time_to_first_byte() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().response_head_event(true).build())
        .service_fn(slow_stream);
    let addr = serve(svc).await;
    let (parts, body) = send(get(addr, "/stream")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "data: one\n\ndata: two\n\ndata: three\n\n");

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    let events: Vec<_> = span
        .events
        .iter()
        .filter(|e| e.name == "http.response.head")
        .collect();
    assert_eq!(events.len(), 1, "{:?}", span.events);
    let head = secs_between(span.start_time, events[0].timestamp);
    let whole = span_secs(span);
    // The head came at once; the body took 200 ms more.
    assert!(head < 0.1, "head after {head} s");
    assert!(whole >= 0.2, "span lasted {whole} s");

    // Off by default.
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service_fn(slow_stream);
    let addr = serve(svc).await;
    send(get(addr, "/stream")).await;
    let spans = t.wait_spans(1).await;
    assert!(spans[0].events.is_empty(), "{:?}", spans[0].events);
}

#[tokio::test]
async fn end_at_head_ends_event_streams_at_their_head_and_no_other_response() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(
            t.server()
                .end_at_head(|parts| {
                    parts
                        .headers
                        .get("content-type")
                        .is_some_and(|v| v == "text/event-stream")
                })
                .build(),
        )
        .service_fn(slow_stream);
    let addr = serve(svc).await;

    let (parts, body) = send(get(addr, "/events")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "data: one\n\ndata: two\n\ndata: three\n\n");
    let spans = t.wait_spans(1).await;
    let events = span_with_path(&spans, "/events");
    let secs = span_secs(events);
    assert!(secs < 0.1, "the event stream's span lasted {secs} s");
    assert_eq!(events.status, Status::Unset);
    assert_eq!(
        a(events, "http.response.status_code"),
        Some(Value::I64(200))
    );
    // Its duration point is the span's; no response body size for a stream it left.
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].sum(), secs);
    assert!(t.u64_histogram(RESPONSE_SIZE).is_empty());

    // Any other response still ends at its body's end.
    let (_, body) = send(get(addr, "/stream")).await;
    assert_eq!(body.len(), 35);
    let spans = t.wait_spans(2).await;
    assert_eq!(spans.len(), 2);
    let stream = span_with_path(&spans, "/stream");
    assert!(span_secs(stream) >= 0.2);
    let sizes = t.u64_histogram(RESPONSE_SIZE);
    assert_eq!(sizes.len(), 1);
    assert_eq!(sizes[0].sum(), 35);
}

#[tokio::test]
async fn an_event_stream_dropped_after_its_head_ends_its_span_once() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(
            t.server()
                .active_requests(true)
                .end_at_head(|parts| {
                    parts
                        .headers
                        .get("content-type")
                        .is_some_and(|v| v == "text/event-stream")
                })
                .build(),
        )
        .service_fn(|_req: Request<hyper::body::Incoming>| async {
            let mut res = Response::new(endless_stream());
            res.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            Ok::<_, Infallible>(res)
        });
    let addr = serve(svc).await;
    // Read the head and a little of the body, then hang up.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let spans = t.wait_spans(1).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Ended once, at the head, without the drop turning it into an abort.
    let spans_after = t.settle_spans(1).await;
    assert_eq!(spans_after.len(), 1);
    assert_eq!(spans[0].span_context, spans_after[0].span_context);
    assert_eq!(a(&spans_after[0], "error.type"), None);
    let points = t.f64_histogram(DURATION);
    assert_eq!(points[0].count(), 1);
    let active = t.i64_sum("http.server.active_requests");
    assert_eq!(active.iter().map(|p| p.value()).sum::<i64>(), 0);
}
