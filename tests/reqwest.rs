//! `OtelMiddleware` for reqwest against real loopback servers, and an end-to-end trace
//! across servers and both client integrations.
#![cfg(feature = "reqwest")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Extensions, Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::Value;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Next};
use support::*;
use tower::{Layer as _, ServiceExt as _};
use tower_otel_http::client::{OtelClientLayer, ResendCount, UrlTemplate};
use tower_otel_http::reqwest::OtelMiddleware;

const DURATION: &str = "http.client.request.duration";

fn reqwest_client(layer: OtelClientLayer) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(OtelMiddleware::from_layer(layer))
        .build()
}

fn otel_reqwest(t: &Telemetry) -> ClientWithMiddleware {
    reqwest_client(t.client_layer().build())
}

async fn echo_server() -> SocketAddr {
    serve(tower::service_fn(echo)).await
}

fn port(addr: SocketAddr) -> Value {
    Value::I64(addr.port().into())
}

fn server_attrs(addr: SocketAddr) -> Vec<(&'static str, Value)> {
    vec![
        ("server.address", s("127.0.0.1")),
        ("server.port", port(addr)),
    ]
}

#[tokio::test]
async fn span_for_200_ends_when_the_body_has_been_read() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let res = otel_reqwest(&t)
        .get(format!("http://{addr}/bytes/100000"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The body is unread: the span is still open, as with the tower client layer.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(t.finished_spans().is_empty());
    // The response is the one reqwest made: its final URL and peer address are kept.
    assert_eq!(res.url().as_str(), format!("http://{addr}/bytes/100000"));
    assert_eq!(res.remote_addr(), Some(addr));

    assert_eq!(res.bytes().await.unwrap().len(), 100_000);
    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.name, "GET");
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    let mut want = vec![
        ("http.request.method", s("GET")),
        ("url.full", s(&format!("http://{addr}/bytes/100000"))),
        ("http.response.status_code", Value::I64(200)),
        ("network.protocol.version", s("1.1")),
        // The connection the response came over (reqwest's `remote_addr`).
        ("network.peer.address", s("127.0.0.1")),
        ("network.peer.port", Value::I64(i64::from(addr.port()))),
    ];
    want.extend(server_attrs(addr));
    assert_eq!(typed_set(&span.attributes), expected_set(&want));
    t.settle_spans(1).await;
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].count(), 1);
    // The span covers reading the body: the duration metric is the span's duration.
    assert!((points[0].sum() - span_secs(span)).abs() < 1e-6);
}

#[tokio::test]
async fn unread_body_dropped_ends_the_span_without_error() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let res = otel_reqwest(&t)
        .get(format!("http://{addr}/bytes/100000"))
        .send()
        .await
        .unwrap();
    drop(res);
    let spans = t.settle_spans(1).await;
    assert_eq!(spans[0].status, Status::Unset);
    assert!(attr(&spans[0].attributes, "error.type").is_none());
}

#[tokio::test]
async fn status_404_is_an_error() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let res = otel_reqwest(&t)
        .get(format!("http://{addr}/status/404"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    drop(res);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(attr(&span.attributes, "error.type"), Some(s("404")));
    assert_eq!(
        attr(&span.attributes, "http.response.status_code"),
        Some(Value::I64(404))
    );
    let points = t.f64_histogram(DURATION);
    assert_eq!(attr(points[0].attributes(), "error.type"), Some(s("404")));
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let t = Telemetry::new();
    let addr = refused_addr().await;
    let err = otel_reqwest(&t)
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect_err("nothing listens there");
    assert!(err.is_connect(), "{err:?}");

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    // The description is the failure's messages, down to the operating system's.
    let Status::Error { description } = &span.status else {
        panic!("{:?}", span.status)
    };
    assert!(
        description.starts_with("error sending request for url"),
        "{description}"
    );
    assert!(description.contains("Connection refused"), "{description}");
    let mut want = vec![
        ("http.request.method", s("GET")),
        ("url.full", s(&format!("http://{addr}/"))),
        ("error.type", s("connect")),
    ];
    want.extend(server_attrs(addr));
    assert_eq!(typed_set(&span.attributes), expected_set(&want));
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    let mut want = vec![
        ("http.request.method", s("GET")),
        ("error.type", s("connect")),
    ];
    want.extend(server_attrs(addr));
    assert_eq!(typed_set(points[0].attributes()), expected_set(&want));
}

#[tokio::test]
async fn timeout_is_recorded_as_timeout() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let err = otel_reqwest(&t)
        .get(format!("http://{addr}/sleep/2000"))
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .expect_err("the server sleeps for 2 s");
    assert!(err.is_timeout(), "{err:?}");

    let spans = t.wait_spans(1).await;
    assert!(matches!(spans[0].status, Status::Error { .. }));
    assert_eq!(attr(&spans[0].attributes, "error.type"), Some(s("timeout")));
    assert_eq!(
        attr(&spans[0].attributes, "http.response.status_code"),
        None
    );
}

/// A middleware that fails every request.
fn failing<'a>(
    _req: reqwest::Request,
    _extensions: &'a mut Extensions,
    _next: Next<'a>,
) -> std::pin::Pin<
    Box<
        dyn std::future::Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'a,
    >,
> {
    Box::pin(async {
        Err(reqwest_middleware::Error::middleware(
            std::io::Error::other("refused by policy"),
        ))
    })
}

#[tokio::test]
async fn error_from_a_later_middleware_is_recorded() {
    let t = Telemetry::new();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(OtelMiddleware::from_layer(t.client_layer().build()))
        .with(failing)
        .build();
    let err = client
        .get("http://127.0.0.1:9/")
        .send()
        .await
        .expect_err("the middleware fails");
    assert!(err.is_middleware());

    let spans = t.wait_spans(1).await;
    assert!(matches!(spans[0].status, Status::Error { .. }));
    assert_eq!(
        attr(&spans[0].attributes, "error.type"),
        Some(s("reqwest_middleware::Error"))
    );
}

#[tokio::test]
async fn injection_replaces_the_callers_traceparent() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let body = otel_reqwest(&t)
        .get(format!("http://{addr}/echo"))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-custom", "keep")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    let spans = t.wait_spans(1).await;
    assert_eq!(
        echoed(&body, "traceparent"),
        vec![traceparent_of(&spans[0])]
    );
    assert_eq!(echoed(&body, "x-custom"), vec!["keep"]);
    assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
}

#[tokio::test]
async fn url_template_and_resend_count_come_from_the_extensions() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    otel_reqwest(&t)
        .get(format!("http://{addr}/status/200"))
        .with_extension(UrlTemplate::from_static("/status/{code}"))
        .with_extension(ResendCount(1))
        .send()
        .await
        .unwrap();

    let spans = t.wait_spans(1).await;
    assert_eq!(spans[0].name, "GET /status/{code}");
    assert_eq!(
        attr(&spans[0].attributes, "url.template"),
        Some(s("/status/{code}"))
    );
    assert_eq!(
        attr(&spans[0].attributes, "http.request.resend_count"),
        Some(Value::I64(1))
    );
}

#[tokio::test]
async fn url_full_redacts_user_info_and_sensitive_query_values() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    // `Request::new` keeps the user info (the request builder would move it into an
    // Authorization header).
    let url = format!("http://user:pass@{addr}/echo?X-Amz-Signature=abc&keep=1");
    let req = reqwest::Request::new(http::Method::GET, url.parse().unwrap());
    otel_reqwest(&t).execute(req).await.unwrap();

    let spans = t.wait_spans(1).await;
    assert_eq!(
        attr(&spans[0].attributes, "url.full"),
        Some(s(&format!(
            "http://REDACTED:REDACTED@{addr}/echo?X-Amz-Signature=REDACTED&keep=1"
        )))
    );
    assert_eq!(
        attr(&spans[0].attributes, "server.address"),
        Some(s("127.0.0.1"))
    );
}

#[tokio::test]
async fn cancelled_request_ends_the_span_once_without_error() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = reqwest_client(t.client_layer().active_requests(true).build());
    let sent = tokio::time::timeout(
        Duration::from_millis(100),
        client.get(format!("http://{addr}/sleep/2000")).send(),
    )
    .await;
    assert!(sent.is_err(), "the server sleeps for 2 s");

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.status, Status::Unset);
    assert_eq!(attr(&span.attributes, "error.type"), None);
    assert_eq!(attr(&span.attributes, "http.response.status_code"), None);
    let active = t.i64_sum("http.client.active_requests");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].value(), 0);
}

#[tokio::test]
async fn metrics_attributes_and_request_body_size() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = reqwest_client(t.client_layer().body_size_metrics(true).build());
    let res = client
        .post(format!("http://{addr}/bytes/10"))
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-body-len"], "11");
    res.bytes().await.unwrap();
    t.wait_spans(1).await;

    let mut want = vec![
        ("http.request.method", s("POST")),
        ("http.response.status_code", Value::I64(200)),
        ("network.protocol.version", s("1.1")),
    ];
    want.extend(server_attrs(addr));
    let want = expected_set(&want);
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(typed_set(points[0].attributes()), want);
    let sizes = t.u64_histogram("http.client.request.body.size");
    assert_eq!(sizes.len(), 1);
    assert_eq!(sizes[0].sum(), 11);
    assert_eq!(typed_set(sizes[0].attributes()), want);
    // The span ends at the body's end: the bytes read are measured.
    let sizes = t.u64_histogram("http.client.response.body.size");
    assert_eq!(sizes.len(), 1);
    assert_eq!(sizes[0].sum(), 10);
    assert_eq!(typed_set(sizes[0].attributes()), want);
}

// ------------------------------------------------------------------------------------
// End to end: client → server A → (hyper client, reqwest client) → server B.

#[tokio::test]
async fn one_trace_across_servers_and_both_clients() {
    let t = Telemetry::new();
    let b = serve(
        tower::ServiceBuilder::new()
            .layer(t.server().build())
            .service(tower::service_fn(echo)),
    )
    .await;
    let hyper_client = t.client_layer().build().layer(client());
    let reqwest = otel_reqwest(&t);
    let handler = tower::service_fn(move |_req: Request<hyper::body::Incoming>| {
        let hyper_client = hyper_client.clone();
        let reqwest = reqwest.clone();
        async move {
            let res = hyper_client.oneshot(get(b, "/b/hyper")).await.unwrap();
            res.into_body().collect().await.unwrap();
            let res = reqwest
                .get(format!("http://{b}/b/reqwest"))
                .send()
                .await
                .unwrap();
            res.bytes().await.unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
        }
    });
    let a = serve(
        tower::ServiceBuilder::new()
            .layer(t.server().build())
            .service(handler),
    )
    .await;

    let res = t
        .client_layer()
        .build()
        .layer(client())
        .oneshot(get(a, "/a"))
        .await
        .unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "done");

    t.wait_spans(6).await;
    let spans = t.settle_spans(6).await;
    let client_with_url = |url: String| {
        let found: Vec<_> = client_spans(&spans)
            .into_iter()
            .filter(|span| attr(&span.attributes, "url.full") == Some(s(&url)))
            .collect();
        assert_eq!(found.len(), 1, "one client span for {url}");
        found[0]
    };
    let root = client_with_url(format!("http://{a}/a"));
    let to_b_hyper = client_with_url(format!("http://{b}/b/hyper"));
    let to_b_reqwest = client_with_url(format!("http://{b}/b/reqwest"));
    let server_a = span_with_path(&spans, "/a");
    let server_b_hyper = span_with_path(&spans, "/b/hyper");
    let server_b_reqwest = span_with_path(&spans, "/b/reqwest");
    for server in [server_a, server_b_hyper, server_b_reqwest] {
        assert_eq!(server.span_kind, SpanKind::Server);
        assert!(server.parent_span_is_remote);
    }

    let trace = root.span_context.trace_id();
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    assert_eq!(server_a.parent_span_id, root.span_context.span_id());
    assert_eq!(to_b_hyper.parent_span_id, server_a.span_context.span_id());
    assert_eq!(to_b_reqwest.parent_span_id, server_a.span_context.span_id());
    assert_eq!(
        server_b_hyper.parent_span_id,
        to_b_hyper.span_context.span_id()
    );
    assert_eq!(
        server_b_reqwest.parent_span_id,
        to_b_reqwest.span_context.span_id()
    );
}

#[tokio::test]
async fn a_parent_context_attached_to_the_request_is_the_spans_parent() {
    use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
    let t = Telemetry::new();
    let addr = echo_server().await;
    let tracer = t.tracer_provider.tracer("caller");
    let parent = opentelemetry::Context::new().with_span(tracer.start("caller work"));
    let parent_id = parent.span().span_context().clone();
    // No context is current here: only the extension can give the parent.
    let res = otel_reqwest(&t)
        .get(format!("http://{addr}/status/200"))
        .with_extension(tower_otel_http::client::ParentContext(parent.clone()))
        .send()
        .await
        .unwrap();
    res.bytes().await.unwrap();
    let spans = t.wait_spans(1).await;
    let client = client_spans(&spans)[0];
    assert_eq!(client.span_context.trace_id(), parent_id.trace_id());
    assert_eq!(client.parent_span_id, parent_id.span_id());
    parent.span().end();
}
