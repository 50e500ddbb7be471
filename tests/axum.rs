#![cfg(feature = "axum")]
//! The server layer in axum: `Router::layer`, wrapping the router from outside with
//! `HttpRouteLayer::matched_path` and `OtelLayer::wrap_router`, fallbacks and nested routers, over real sockets.

mod support;

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::Value;
use support::*;
use tower::ServiceBuilder;
use tower_otel_http::{HttpRouteLayer, OtelLayer};

const DURATION: &str = "http.server.request.duration";

fn users() -> Router {
    Router::new().route("/users/{id}", get(|| async { "a user" }))
}

/// Serves `app` with `axum::serve`, with `ConnectInfo<SocketAddr>`.
async fn serve_axum(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

#[tokio::test]
async fn router_layer_records_matched_path_and_connect_info() {
    let t = Telemetry::new();
    let layer: OtelLayer = t.server().build();
    let addr = serve_axum(users().layer(layer)).await;
    let (parts, body, local) = send_from(addr, request("GET", "/users/42?x=1")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "a user");
    assert_eq!(parts.headers["content-length"], "6");

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
            ("url.query", s("x=1")),
            ("url.scheme", s("http")),
            ("server.address", s("127.0.0.1")),
            ("server.port", Value::I64(i64::from(addr.port()))),
            ("client.address", s("127.0.0.1")),
            ("network.peer.address", s("127.0.0.1")),
            ("network.peer.port", Value::I64(i64::from(local.port()))),
            ("network.protocol.version", s("1.1")),
            ("http.route", s("/users/{id}")),
            ("http.response.status_code", Value::I64(200)),
        ])
    );
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(
        typed_set(points[0].attributes()),
        expected_set(&[
            ("http.request.method", s("GET")),
            ("url.scheme", s("http")),
            ("http.response.status_code", Value::I64(200)),
            ("network.protocol.version", s("1.1")),
            ("http.route", s("/users/{id}")),
        ])
    );
    assert_eq!(points[0].sum(), span_secs(span));
}

#[tokio::test]
async fn router_layer_fallback_404_has_no_route() {
    let t = Telemetry::new();
    let addr = serve_axum(users().layer(t.server().build())).await;
    let (parts, _, _) = send_from(addr, request("GET", "/nope/1")).await;
    assert_eq!(parts.status, 404);

    let spans = t.wait_spans(1).await;
    let span = &spans[0];
    assert_eq!(span.name, "GET");
    assert_eq!(attr(&span.attributes, "http.route"), None);
    assert_eq!(attr(&span.attributes, "url.path"), Some(s("/nope/1")));
    assert_eq!(
        attr(&span.attributes, "http.response.status_code"),
        Some(Value::I64(404))
    );
    assert_eq!(span.status, Status::Unset);
    assert_eq!(attr(&span.attributes, "error.type"), None);
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1);
    assert_eq!(attr(points[0].attributes(), "http.route"), None);
}

#[tokio::test]
async fn outer_layer_learns_the_route_from_route_layer() {
    let sampler = RecordingSampler::default();
    let t = Telemetry::with_tracer(|b| b.with_sampler(sampler.clone()));
    let router = users().route_layer(HttpRouteLayer::matched_path());
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service(router);
    let addr = serve(svc).await;
    let (parts, body, local) = send_from(addr, request("GET", "/users/7")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "a user");
    let (parts, _, _) = send_from(addr, request("GET", "/missing")).await;
    assert_eq!(parts.status, 404);

    let spans = t.wait_spans(2).await;
    // Outside the router the route is unknown when the span starts ...
    let seen = sampler.seen();
    assert_eq!(seen.len(), 2);
    for (name, attrs) in &seen {
        assert_eq!(name, "GET");
        assert_eq!(attr(attrs, "http.route"), None);
    }
    // ... and learned from the response.
    let user = span_with_path(&spans, "/users/7");
    assert_eq!(user.name, "GET /users/{id}");
    assert_eq!(attr(&user.attributes, "http.route"), Some(s("/users/{id}")));
    assert_eq!(
        attr(&user.attributes, "network.peer.port"),
        Some(Value::I64(i64::from(local.port())))
    );
    let missing = span_with_path(&spans, "/missing");
    assert_eq!(missing.name, "GET");
    assert_eq!(attr(&missing.attributes, "http.route"), None);
    assert_eq!(
        attr(&missing.attributes, "http.response.status_code"),
        Some(Value::I64(404))
    );

    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 2);
    let routes: Vec<Option<Value>> = points
        .iter()
        .map(|p| attr(p.attributes(), "http.route"))
        .collect();
    assert!(routes.contains(&Some(s("/users/{id}"))), "{routes:?}");
    assert!(routes.contains(&None), "{routes:?}");
}

#[tokio::test]
async fn wrap_router_serves_with_axum_serve_and_records_the_route() {
    let t = Telemetry::new();
    // The obvious thing: wrap the router from outside, hand the result to axum::serve.
    let app = t.server().build().wrap_router(users());
    let addr = serve_axum(app).await;
    let (parts, body, local) = send_from(addr, request("GET", "/users/7")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "a user");
    let (parts, _, _) = send_from(addr, request("GET", "/missing")).await;
    assert_eq!(parts.status, 404);

    let spans = t.wait_spans(2).await;
    assert_eq!(spans.len(), 2);
    let user = span_with_path(&spans, "/users/7");
    assert_eq!(user.name, "GET /users/{id}");
    assert_eq!(attr(&user.attributes, "http.route"), Some(s("/users/{id}")));
    // `into_make_service_with_connect_info` reaches the layer through the outer router.
    assert_eq!(
        attr(&user.attributes, "network.peer.port"),
        Some(Value::I64(i64::from(local.port())))
    );
    let missing = span_with_path(&spans, "/missing");
    assert_eq!(missing.name, "GET");
    assert_eq!(attr(&missing.attributes, "http.route"), None);
    assert_eq!(
        attr(&missing.attributes, "http.response.status_code"),
        Some(Value::I64(404))
    );

    let points = t.f64_histogram(DURATION);
    let mut routes: Vec<Option<Value>> = points
        .iter()
        .map(|p| attr(p.attributes(), "http.route"))
        .collect();
    routes.sort_by_key(|r| r.is_some());
    assert_eq!(routes, [None, Some(s("/users/{id}"))]);
}

#[tokio::test]
async fn wrap_router_accepts_a_router_without_routes() {
    let t = Telemetry::new();
    let app = t
        .server()
        .build()
        .wrap_router(Router::new().fallback(|| async { "fallback" }));
    let addr = serve_axum(app).await;
    let (parts, body, _) = send_from(addr, request("GET", "/anything")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "fallback");
    let spans = t.wait_spans(1).await;
    assert_eq!(spans[0].name, "GET");
    assert_eq!(attr(&spans[0].attributes, "http.route"), None);
}

#[tokio::test]
async fn nested_router_records_the_full_template() {
    let t = Telemetry::new();
    let app = Router::new()
        .nest("/api", users())
        .layer(t.server().build());
    let addr = serve_axum(app).await;
    let (parts, _, _) = send_from(addr, request("GET", "/api/users/3")).await;
    assert_eq!(parts.status, 200);

    let spans = t.wait_spans(1).await;
    assert_eq!(spans[0].name, "GET /api/users/{id}");
    assert_eq!(
        attr(&spans[0].attributes, "http.route"),
        Some(s("/api/users/{id}"))
    );
    let points = t.f64_histogram(DURATION);
    assert_eq!(
        attr(points[0].attributes(), "http.route"),
        Some(s("/api/users/{id}"))
    );
}

#[tokio::test]
async fn nested_router_with_outer_layer_records_the_full_template() {
    let t = Telemetry::new();
    let router = Router::new()
        .nest("/api", users())
        .route_layer(HttpRouteLayer::matched_path());
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service(router);
    let addr = serve(svc).await;
    let (parts, _, _) = send_from(addr, request("GET", "/api/users/3")).await;
    assert_eq!(parts.status, 200);

    let spans = t.wait_spans(1).await;
    assert_eq!(spans[0].name, "GET /api/users/{id}");
    assert_eq!(
        attr(&spans[0].attributes, "http.route"),
        Some(s("/api/users/{id}"))
    );
}

/// Sends `chunks` as a chunked request body (no `Content-Length`) over a raw connection.
async fn post_chunked(addr: SocketAddr, path: &str, chunks: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for chunk in chunks {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn chunked_uploads_count_the_bytes_read() {
    let t = Telemetry::new();
    let upload = || axum::routing::post(|body: bytes::Bytes| async move { body.len().to_string() });
    let app = Router::new()
        .route("/chunked", upload())
        .route("/declared", upload())
        .layer(t.server().build());
    let addr = serve_axum(app).await;
    // 5 + 11 + 1000 bytes, with no declared length.
    let big = "z".repeat(1000);
    let response = post_chunked(addr, "/chunked", &["hello", " world, and", &big]).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("1016"), "{response}");
    // A declared length is taken as it is.
    let (parts, body, _) = send_from(
        addr,
        http::Request::post("/declared")
            .header("host", "x")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"0123456789",
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "10");

    t.wait_spans(2).await;
    let mut sizes: Vec<(Option<Value>, u64, u64)> = t
        .u64_histogram("http.server.request.body.size")
        .iter()
        .map(|p| (attr(p.attributes(), "http.route"), p.count(), p.sum()))
        .collect();
    sizes.sort_by_key(|(_, _, sum)| *sum);
    assert_eq!(
        sizes,
        [
            (Some(s("/declared")), 1, 10),
            (Some(s("/chunked")), 1, 1016)
        ]
    );
}
