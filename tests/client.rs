//! `OtelClientLayer` around hyper-util's legacy client, against real loopback servers
//! (and a mock inner service where a real client can't send the request): span name,
//! kind, attributes, status and `error.type`; propagation; metrics; and when the span
//! ends.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use opentelemetry::trace::{
    FutureExt as _, SpanId, SpanKind, Status, TraceContextExt as _, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, Value};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::{Layer as _, ServiceExt as _};
use tower_otel_http::client::{OtelClient, ResendCount, UrlTemplate};

type HyperClient = OtelClient<Client<HttpConnector, Full<Bytes>>>;

const DURATION: &str = "http.client.request.duration";
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const SENSITIVE_KEYS: [&str; 7] = [
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
];

/// The hyper-util client wrapped in a layer with `t`'s providers.
fn otel_client(t: &Telemetry) -> HyperClient {
    t.client_layer().build().layer(client())
}

async fn echo_server() -> SocketAddr {
    serve(tower::service_fn(echo)).await
}

fn port(addr: SocketAddr) -> Value {
    Value::I64(addr.port().into())
}

/// The attributes every span of a request to `addr` carries at start.
fn start_attrs(method: &str, addr: SocketAddr, path: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("http.request.method", s(method)),
        ("url.full", s(&format!("http://{addr}{path}"))),
        ("server.address", s("127.0.0.1")),
        ("server.port", port(addr)),
    ]
}

fn with(
    mut base: Vec<(&'static str, Value)>,
    more: &[(&'static str, Value)],
) -> Vec<(&'static str, Value)> {
    base.extend(more.iter().cloned());
    base
}

/// Sends a GET for `path` and reads the whole body.
async fn get_and_read(client: &HyperClient, addr: SocketAddr, path: &str) -> (u16, Bytes) {
    let res = client.clone().oneshot(get(addr, path)).await.unwrap();
    let status = res.status().as_u16();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

// ------------------------------------------------------------------------------------
// Span name, kind, attributes and status

#[tokio::test]
async fn get_200_span_has_exactly_the_client_attributes() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let (status, _) = get_and_read(&otel_client(&t), addr, "/status/200").await;
    assert_eq!(status, 200);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.name, "GET");
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(span.status, Status::Unset);
    // No current context: a root span.
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    assert_eq!(
        typed_set(&span.attributes),
        expected_set(&with(
            start_attrs("GET", addr, "/status/200"),
            &with(
                vec![
                    ("http.response.status_code", Value::I64(200)),
                    ("network.protocol.version", s("1.1")),
                ],
                &peer_attrs(addr)
            )
        ))
    );
}

async fn assert_error_status(code: u16) {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let path = format!("/status/{code}");
    let (status, _) = get_and_read(&otel_client(&t), addr, &path).await;
    assert_eq!(status, code);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.name, "GET");
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{code}: {:?}",
        span.status
    );
    assert_eq!(
        typed_set(&span.attributes),
        expected_set(&with(
            start_attrs("GET", addr, &path),
            &with(
                vec![
                    ("http.response.status_code", Value::I64(code.into())),
                    ("network.protocol.version", s("1.1")),
                    ("error.type", s(&code.to_string())),
                ],
                &peer_attrs(addr)
            )
        ))
    );
}

#[tokio::test]
async fn status_404_is_an_error_on_a_client_span() {
    assert_error_status(404).await;
}

#[tokio::test]
async fn status_500_is_an_error() {
    assert_error_status(500).await;
}

#[tokio::test]
async fn unknown_methods_are_other_and_name_the_span_http() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = otel_client(&t);
    for method in ["FOO", "get"] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }

    let spans = t.wait_spans(2).await;
    for (span, original) in spans.iter().zip(["FOO", "get"]) {
        assert_eq!(span.name, "HTTP");
        assert_eq!(
            attr(&span.attributes, "http.request.method"),
            Some(s("_OTHER"))
        );
        assert_eq!(
            attr(&span.attributes, "http.request.method_original"),
            Some(s(original))
        );
    }
    // Metrics use `_OTHER` too (bounded cardinality), without the original.
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count(), 2);
    assert_eq!(
        attr(points[0].attributes(), "http.request.method"),
        Some(s("_OTHER"))
    );
    assert_eq!(
        attr(points[0].attributes(), "http.request.method_original"),
        None
    );
}

#[tokio::test]
async fn url_template_names_the_span_and_is_recorded() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let mut req = get(addr, "/status/200");
    req.extensions_mut()
        .insert(UrlTemplate::from_static("/status/{code}"));
    let res = otel_client(&t).oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();

    let spans = t.wait_spans(1).await;
    assert_eq!(spans[0].name, "GET /status/{code}");
    assert_eq!(
        attr(&spans[0].attributes, "url.template"),
        Some(s("/status/{code}"))
    );
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(
        attr(points[0].attributes(), "url.template"),
        Some(s("/status/{code}"))
    );
}

#[tokio::test]
async fn refused_connection_is_an_error_without_status_code() {
    let t = Telemetry::new();
    let addr = refused_addr().await;
    let err = otel_client(&t)
        .oneshot(get(addr, "/"))
        .await
        .expect_err("nothing listens there");
    assert!(err.is_connect(), "{err:?}");

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.name, "GET");
    assert!(matches!(span.status, Status::Error { .. }));
    assert_eq!(
        typed_set(&span.attributes),
        expected_set(&with(
            start_attrs("GET", addr, "/"),
            &[("error.type", s(refused_error_type()))]
        ))
    );
    // The failure's own messages, down to the operating system's.
    let Status::Error { description } = &span.status else {
        unreachable!()
    };
    if cfg!(feature = "hyper-util") {
        assert!(
            description.starts_with("client error (Connect): "),
            "{description}"
        );
        assert!(description.contains("refused"), "{description}");
    } else {
        assert_eq!(description, "request failed");
    }
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(
        typed_set(points[0].attributes()),
        expected_set(&[
            ("http.request.method", s("GET")),
            ("server.address", s("127.0.0.1")),
            ("server.port", port(addr)),
            ("error.type", s(refused_error_type())),
        ])
    );
}

// ------------------------------------------------------------------------------------
// url.full and server.port

/// A client in front of a mock inner service that answers 200 at once, for URLs a real
/// client wouldn't send as they are.
fn mock_client(
    t: &Telemetry,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<tower_otel_http::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
> + Clone {
    let inner = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    t.client_layer().build().layer(inner)
}

#[tokio::test]
async fn url_full_redacts_user_info() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let url = format!("http://user:pass@{addr}/private?x=1");
    // hyper-util sends a URI with user info as it is; the server answers.
    let req = Request::get(url.as_str())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = otel_client(&t).oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    // And through a mock, with a port-less URL.
    let req = Request::get("https://alice:s3cret@example.com/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = mock_client(&t).oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();

    let spans = t.wait_spans(2).await;
    let fulls: Vec<Value> = spans
        .iter()
        .map(|s| attr(&s.attributes, "url.full").unwrap())
        .collect();
    assert_eq!(
        fulls,
        vec![
            s(&format!("http://REDACTED:REDACTED@{addr}/private?x=1")),
            s("https://REDACTED:REDACTED@example.com/"),
        ]
    );
    // Nothing else carries the credentials either.
    for span in &spans {
        for kv in &span.attributes {
            let v = kv.value.to_string();
            assert!(!v.contains("pass") && !v.contains("s3cret"), "{kv:?}");
        }
    }
    assert_eq!(
        attr(&spans[0].attributes, "server.address"),
        Some(s("127.0.0.1"))
    );
    assert_eq!(
        attr(&spans[1].attributes, "server.address"),
        Some(s("example.com"))
    );
}

#[tokio::test]
async fn url_full_redacts_each_sensitive_query_key() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = otel_client(&t);
    for key in SENSITIVE_KEYS {
        get_and_read(&client, addr, &format!("/q?keep=1&{key}=secret")).await;
    }
    // Matching is case-sensitive: these are not the sensitive keys.
    get_and_read(&client, addr, "/q?SIG=visible&signature=visible").await;

    let spans = t.wait_spans(SENSITIVE_KEYS.len() + 1).await;
    let fulls: Vec<Value> = spans
        .iter()
        .map(|s| attr(&s.attributes, "url.full").unwrap())
        .collect();
    let mut want: Vec<Value> = SENSITIVE_KEYS
        .iter()
        .map(|key| s(&format!("http://{addr}/q?keep=1&{key}=REDACTED")))
        .collect();
    want.push(s(&format!("http://{addr}/q?SIG=visible&signature=visible")));
    assert_eq!(fulls, want);
}

#[tokio::test]
async fn server_port_defaults_to_the_scheme_port() {
    let t = Telemetry::new();
    for url in ["http://example.com/x", "https://example.com/y"] {
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        let res = mock_client(&t).oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }

    let spans = t.wait_spans(2).await;
    for (span, (full, port)) in spans
        .iter()
        .zip([("http://example.com/x", 80), ("https://example.com/y", 443)])
    {
        assert_eq!(attr(&span.attributes, "url.full"), Some(s(full)));
        assert_eq!(
            attr(&span.attributes, "server.address"),
            Some(s("example.com"))
        );
        // An int, not the string "80".
        assert_eq!(
            attr(&span.attributes, "server.port"),
            Some(Value::I64(port))
        );
    }
    let points = t.f64_histogram(DURATION);
    let mut ports: Vec<Value> = points
        .iter()
        .map(|p| attr(p.attributes(), "server.port").unwrap())
        .collect();
    ports.sort_by_key(|v| v.to_string());
    assert_eq!(ports, vec![Value::I64(443), Value::I64(80)]);
}

// ------------------------------------------------------------------------------------
// Propagation

#[tokio::test]
async fn injected_traceparent_names_the_client_span_and_replaces_the_callers() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let caller_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let req = Request::get(format!("http://{addr}/echo"))
        .header("traceparent", caller_tp)
        .header("x-custom", "keep")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = otel_client(&t).oneshot(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    let seen = echoed(&body, "traceparent");
    assert_eq!(
        seen,
        vec![traceparent_of(span)],
        "exactly one, the client span's"
    );
    // The caller's header is replaced, not used as the parent.
    assert_ne!(
        span.span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    assert_eq!(echoed(&body, "x-custom"), vec!["keep"]);
    assert_eq!(echoed(&body, "x-multi"), vec!["a", "b"]);
}

#[tokio::test]
async fn client_span_is_a_child_of_the_current_context() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let tracer = t.tracer_provider.tracer("test");
    let cx = Context::current_with_span(tracer.start("parent"));
    let res = otel_client(&t)
        .oneshot(get(addr, "/echo"))
        .with_context(cx.clone())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    cx.span().end();

    let spans = t.wait_spans(2).await;
    let parent = spans.iter().find(|s| s.name == "parent").unwrap();
    let client_span = client_spans(&spans)[0];
    assert_eq!(
        client_span.span_context.trace_id(),
        parent.span_context.trace_id()
    );
    assert_eq!(client_span.parent_span_id, parent.span_context.span_id());
    assert_eq!(
        echoed(&body, "traceparent"),
        vec![traceparent_of(client_span)]
    );
}

#[tokio::test]
async fn downstream_server_span_is_a_child_of_the_client_span() {
    let t = Telemetry::new();
    let addr = serve(
        tower::ServiceBuilder::new()
            .layer(t.server().build())
            .service(tower::service_fn(echo)),
    )
    .await;
    let (_, body) = get_and_read(&otel_client(&t), addr, "/echo").await;

    let spans = t.wait_spans(2).await;
    let client_span = client_spans(&spans)[0];
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    assert_eq!(
        server.span_context.trace_id(),
        client_span.span_context.trace_id()
    );
    assert_eq!(server.parent_span_id, client_span.span_context.span_id());
    assert!(server.parent_span_is_remote);
    assert_eq!(
        echoed(&body, "traceparent"),
        vec![traceparent_of(client_span)]
    );
}

#[tokio::test]
async fn resend_count_is_recorded_only_when_positive() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = otel_client(&t);
    for (n, path) in [(Some(2), "/two"), (Some(0), "/zero"), (None, "/none")] {
        let mut req = get(addr, path);
        if let Some(n) = n {
            req.extensions_mut().insert(ResendCount(n));
        }
        let res = client.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }

    let spans = t.wait_spans(3).await;
    let counts: Vec<Option<Value>> = spans
        .iter()
        .map(|s| attr(&s.attributes, "http.request.resend_count"))
        .collect();
    assert_eq!(counts, vec![Some(Value::I64(2)), None, None]);
}

// ------------------------------------------------------------------------------------
// Metrics

#[tokio::test]
async fn duration_metric_unit_buckets_and_attributes() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let refused = refused_addr().await;
    let client = otel_client(&t);
    get_and_read(&client, addr, "/status/200").await;
    get_and_read(&client, addr, "/status/500").await;
    let mut req = get(addr, "/status/201");
    req.extensions_mut()
        .insert(UrlTemplate::from_static("/status/{code}"));
    let res = client.clone().oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    client.clone().oneshot(get(refused, "/")).await.unwrap_err();
    t.wait_spans(4).await;

    assert_eq!(t.unit(DURATION).as_deref(), Some("s"));
    // Opt-in metrics stay off by default.
    assert_eq!(t.metric_names(), vec![DURATION.to_string()]);
    let points = t.f64_histogram(DURATION);
    for p in &points {
        assert_eq!(p.bounds().collect::<Vec<_>>(), DURATION_BUCKETS);
        assert_eq!(p.count(), 1);
    }
    let mut sets: Vec<Vec<(String, Value)>> =
        points.iter().map(|p| typed_set(p.attributes())).collect();
    sets.sort_by_key(|s| format!("{s:?}"));
    let base = |addr: SocketAddr| {
        vec![
            ("http.request.method", s("GET")),
            ("server.address", s("127.0.0.1")),
            ("server.port", port(addr)),
        ]
    };
    let ok = |code: i64| {
        with(
            base(addr),
            &[
                ("http.response.status_code", Value::I64(code)),
                ("network.protocol.version", s("1.1")),
            ],
        )
    };
    let mut want = vec![
        expected_set(&ok(200)),
        expected_set(&with(ok(500), &[("error.type", s("500"))])),
        expected_set(&with(ok(201), &[("url.template", s("/status/{code}"))])),
        expected_set(&with(
            base(refused),
            &[("error.type", s(refused_error_type()))],
        )),
    ];
    want.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(sets, want);
}

#[tokio::test]
async fn body_size_metrics_are_opt_in_and_count_real_bytes() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = t
        .client_layer()
        .body_size_metrics(true)
        .build()
        .layer(support::client());
    let req = Request::post(format!("http://{addr}/bytes/1234"))
        .body(Full::new(Bytes::from_static(b"hello world")))
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.headers()["x-request-body-len"], "11");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 1234);
    t.wait_spans(1).await;

    for (name, sum) in [
        ("http.client.request.body.size", 11),
        ("http.client.response.body.size", 1234),
    ] {
        assert_eq!(t.unit(name).as_deref(), Some("By"), "{name}");
        let points = t.u64_histogram(name);
        assert_eq!(points.len(), 1, "{name}");
        assert_eq!(points[0].count(), 1, "{name}");
        assert_eq!(points[0].sum(), sum, "{name}");
        assert_eq!(
            typed_set(points[0].attributes()),
            expected_set(&with(
                vec![
                    ("http.request.method", s("POST")),
                    ("server.address", s("127.0.0.1")),
                    ("server.port", port(addr)),
                ],
                &[
                    ("http.response.status_code", Value::I64(200)),
                    ("network.protocol.version", s("1.1")),
                ]
            )),
            "{name}"
        );
    }
}

#[tokio::test]
async fn active_requests_is_opt_in_and_returns_to_zero() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = t
        .client_layer()
        .active_requests(true)
        .build()
        .layer(support::client());
    let in_flight = tokio::spawn(async move {
        let res = client.oneshot(get(addr, "/sleep/400")).await.unwrap();
        res.into_body().collect().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(150)).await;

    let attrs = expected_set(&[
        ("http.request.method", s("GET")),
        ("server.address", s("127.0.0.1")),
        ("server.port", port(addr)),
    ]);
    let during = t.i64_sum("http.client.active_requests");
    assert_eq!(during.len(), 1);
    assert_eq!(during[0].value(), 1);
    assert_eq!(typed_set(during[0].attributes()), attrs);
    assert_eq!(
        t.unit("http.client.active_requests").as_deref(),
        Some("{request}")
    );

    in_flight.await.unwrap();
    t.wait_spans(1).await;
    let after = t.i64_sum("http.client.active_requests");
    assert_eq!(after.len(), 1, "the same attribute set at +1 and -1");
    assert_eq!(after[0].value(), 0);
    assert_eq!(typed_set(after[0].attributes()), attrs);
}

// ------------------------------------------------------------------------------------
// When the span ends

#[tokio::test]
async fn span_ends_once_when_the_body_is_read_to_the_end() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let res = otel_client(&t)
        .oneshot(get(addr, "/bytes/100000"))
        .await
        .unwrap();
    // The span follows the body: not ended while the body is unread.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(t.finished_spans().is_empty());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 100_000);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    assert_eq!(spans[0].status, Status::Unset);
    assert_eq!(attr(&spans[0].attributes, "error.type"), None);
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.iter().map(|p| p.count()).sum::<u64>(), 1);
}

#[tokio::test]
async fn empty_body_ends_the_span_when_the_response_arrives() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = otel_client(&t);
    let res = client
        .clone()
        .oneshot(get(addr, "/status/204"))
        .await
        .unwrap();
    // Not polled, not dropped: the span already ended.
    let spans = t.wait_spans(1).await;
    assert_eq!(
        attr(&spans[0].attributes, "http.response.status_code"),
        Some(Value::I64(204))
    );
    drop(res);
    let spans = t.settle_spans(1).await;
    assert_eq!(spans[0].status, Status::Unset);
}

#[tokio::test]
async fn span_ends_once_without_error_when_the_body_is_dropped_unread() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let res = otel_client(&t)
        .oneshot(get(addr, "/bytes/100000"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(t.finished_spans().is_empty());
    drop(res);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.status, Status::Unset);
    assert_eq!(attr(&span.attributes, "error.type"), None);
    assert_eq!(
        attr(&span.attributes, "http.response.status_code"),
        Some(Value::I64(200))
    );
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count(), 1);
    assert_eq!(attr(points[0].attributes(), "error.type"), None);
}

/// A server that promises 100 bytes, sends 5 and closes the connection.
async fn serve_truncated() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn body_error_sets_error_type_and_status() {
    let t = Telemetry::new();
    let addr = serve_truncated().await;
    let res = otel_client(&t).oneshot(get(addr, "/")).await.unwrap();
    assert_eq!(res.status(), 200);
    let err = res.into_body().collect().await.expect_err("truncated body");
    assert!(format!("{err:?}").contains("IncompleteBody"), "{err:?}");

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(
        attr(&span.attributes, "http.response.status_code"),
        Some(Value::I64(200))
    );
    assert_eq!(
        attr(&span.attributes, "error.type"),
        Some(s("hyper::Error"))
    );
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(
        attr(points[0].attributes(), "error.type"),
        Some(s("hyper::Error"))
    );
}

#[tokio::test]
async fn cancelled_request_ends_the_span_once_without_error() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = t
        .client_layer()
        .active_requests(true)
        .build()
        .layer(support::client());
    let sent = tokio::time::timeout(
        Duration::from_millis(100),
        client.oneshot(get(addr, "/sleep/2000")),
    )
    .await;
    assert!(sent.is_err(), "the server sleeps for 2 s");

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.status, Status::Unset);
    assert_eq!(
        typed_set(&span.attributes),
        expected_set(&start_attrs("GET", addr, "/sleep/2000"))
    );
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count(), 1);
    assert_eq!(attr(points[0].attributes(), "error.type"), None);
    let active = t.i64_sum("http.client.active_requests");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].value(), 0);
}

/// A server that reads the request head and closes the connection without answering.
async fn closing_server() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_closed_before_the_response_says_so() {
    let t = Telemetry::new();
    let addr = closing_server().await;
    let err = otel_client(&t)
        .oneshot(get(addr, "/"))
        .await
        .expect_err("the server closes without answering");
    assert!(!err.is_connect(), "{err:?}");

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    let Status::Error { description } = &span.status else {
        panic!("{:?}", span.status)
    };
    if cfg!(feature = "hyper-util") {
        assert_eq!(
            attr(&span.attributes, "error.type"),
            Some(s("connection_closed"))
        );
        assert!(
            description.contains("connection closed before message completed"),
            "{description}"
        );
    } else {
        assert_eq!(
            attr(&span.attributes, "error.type"),
            Some(s("hyper_util::client::legacy::Error"))
        );
    }
    let points = t.f64_histogram(DURATION);
    assert_eq!(
        attr(points[0].attributes(), "error.type"),
        attr(&span.attributes, "error.type")
    );
}

/// `error.type` of a refused connection: classified with the `hyper-util` feature, the
/// error's type name without it.
fn refused_error_type() -> &'static str {
    if cfg!(feature = "hyper-util") {
        "connect"
    } else {
        "hyper_util::client::legacy::Error"
    }
}

/// The peer of a response from `addr`, with the `hyper-util` feature (hyper-util's
/// `HttpInfo`).
fn peer_attrs(addr: std::net::SocketAddr) -> Vec<(&'static str, Value)> {
    if cfg!(feature = "hyper-util") {
        vec![
            ("network.peer.address", s(&addr.ip().to_string())),
            ("network.peer.port", port(addr)),
        ]
    } else {
        Vec::new()
    }
}

#[tokio::test]
async fn the_response_head_event_marks_when_the_head_arrived() {
    let t = Telemetry::new();
    let client = t
        .client_layer()
        .response_head_event(true)
        .build()
        .layer(support::client());
    let addr = echo_server().await;
    let res = client.oneshot(get(addr, "/bytes/100000")).await.unwrap();
    // The caller takes its time before reading the body: the span covers it, the head
    // event does not.
    tokio::time::sleep(Duration::from_millis(150)).await;
    res.into_body().collect().await.unwrap();

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    let heads: Vec<_> = span
        .events
        .iter()
        .filter(|e| e.name == "http.response.head")
        .collect();
    assert_eq!(heads.len(), 1, "{:?}", span.events);
    let head = heads[0]
        .timestamp
        .duration_since(span.start_time)
        .unwrap()
        .as_secs_f64();
    assert!(head < 0.1, "head after {head} s");
    assert!(span_secs(span) >= 0.15);
}
