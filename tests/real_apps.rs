#![cfg(feature = "axum")]
//! The layers in real applications, over real loopback sockets: a nested router with its
//! own layer, the same request instrumented twice (nested layer plus an app-wide one),
//! the trace context across tasks and buffers from inside a handler, and a response
//! body that panics while it streams.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::routing;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{
    SpanId, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::trace::SpanData;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::buffer::Buffer;
use tower::{Layer as _, ServiceExt as _};
use tower_otel_http::client::{CaptureContextLayer, OtelClient, ParentContext};
use tower_otel_http::OtelLayer;

const DURATION: &str = "http.server.request.duration";
const CLIENT_DURATION: &str = "http.client.request.duration";
const ACTIVE: &str = "http.server.active_requests";

type HyperClient = Client<HttpConnector, Full<Bytes>>;
type OtelFuture = <OtelClient<HyperClient> as tower::Service<Request<Full<Bytes>>>>::Future;

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

/// The API module: `/users/{id}`, with its own layer.
fn api(layer: OtelLayer) -> Router {
    Router::new()
        .route("/users/{id}", routing::get(|| async { "a user" }))
        .layer(layer)
}

/// The total count of a histogram's points.
fn total_count(points: &[opentelemetry_sdk::metrics::data::HistogramDataPoint<f64>]) -> u64 {
    points.iter().map(|p| p.count()).sum()
}

/// Asserts that `t` exported no span and no server duration point (after a pause long
/// enough for a span to have been exported).
async fn assert_recorded_nothing(t: &Telemetry, who: &str) {
    let spans = t.settle_spans(0).await;
    assert!(spans.is_empty(), "{who}: {spans:#?}");
    let points = t.f64_histogram(DURATION);
    assert_eq!(total_count(&points), 0, "{who}: {points:#?}");
}

/// GETs `path` from `addr` over a new connection, asserts a 200, and returns the body.
async fn get_ok(addr: SocketAddr, path: &str) -> Bytes {
    let (parts, body, _) = send_from(addr, request("GET", path)).await;
    assert_eq!(parts.status, 200, "GET {path}: {body:?}");
    body
}

/// Waits for the one span of `t`, asserts that no other follows and that its `url.path`
/// is `path`, and returns it.
async fn only_span(t: &Telemetry, path: &str) -> SpanData {
    t.wait_spans(1).await;
    let mut spans = t.settle_spans(1).await;
    assert_eq!(attr(&spans[0].attributes, "url.path"), Some(s(path)));
    spans.remove(0)
}

/// Asserts that `t` exported one server duration point, of one measurement, for `route`.
#[track_caller]
fn assert_one_point(t: &Telemetry, route: &str) {
    let points = t.f64_histogram(DURATION);
    assert_eq!(points.len(), 1, "{points:#?}");
    assert_eq!(points[0].count(), 1);
    assert_eq!(attr(points[0].attributes(), "http.route"), Some(s(route)));
}

// ---------------------------------------------------------------------------------------
// 1. A nested router with its own layer.

#[tokio::test]
async fn nested_router_layer_records_full_route_and_original_path() {
    let t = Telemetry::new();
    let app = Router::new().nest("/api", api(t.server().build()));
    let addr = serve_axum(app).await;
    let (parts, body, local) = send_from(addr, request("GET", "/api/users/42?x=1")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "a user");

    let span = only_span(&t, "/api/users/42").await;
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.name, "GET /api/users/{id}");
    assert_eq!(span.status, Status::Unset);
    assert_eq!(
        typed_set(&span.attributes),
        expected_set(&[
            ("http.request.method", s("GET")),
            // As received, not the `/users/42` the nested router sees.
            ("url.path", s("/api/users/42")),
            ("url.query", s("x=1")),
            ("url.scheme", s("http")),
            ("server.address", s("127.0.0.1")),
            ("server.port", Value::I64(i64::from(addr.port()))),
            ("client.address", s("127.0.0.1")),
            ("network.peer.address", s("127.0.0.1")),
            ("network.peer.port", Value::I64(i64::from(local.port()))),
            ("network.protocol.version", s("1.1")),
            ("http.route", s("/api/users/{id}")),
            ("http.response.status_code", Value::I64(200)),
        ])
    );
    assert_one_point(&t, "/api/users/{id}");
}

#[tokio::test]
async fn nested_router_layer_control_unnested_and_outside_requests() {
    // Control for the test above: the same module served without nesting records the
    // path it receives, so the `/api` prefix there comes from the original URI.
    let t = Telemetry::new();
    let addr = serve_axum(api(t.server().build())).await;
    get_ok(addr, "/users/42?x=1").await;
    let spans = t.wait_spans(1).await;
    assert_eq!(spans[0].name, "GET /users/{id}");
    assert_eq!(attr(&spans[0].attributes, "url.path"), Some(s("/users/42")));
    assert_eq!(
        attr(&spans[0].attributes, "http.route"),
        Some(s("/users/{id}"))
    );

    // A request outside the nested module never reaches the module's layer.
    let t = Telemetry::new();
    let addr = serve_axum(app_with_nested(t.server().build())).await;
    assert_eq!(get_ok(addr, "/health").await, "ok");
    assert_recorded_nothing(&t, "nested layer, request outside it").await;
    // ... and one inside it is recorded, once.
    get_ok(addr, "/api/users/1").await;
    only_span(&t, "/api/users/1").await;
}

#[tokio::test]
async fn nested_router_layer_excluded_paths_match_the_original_path() {
    // `excluded_paths` on the nested module's layer is matched against the path as
    // received (`/api/...`), the same path the span would record.
    let t = Telemetry::new();
    let addr = serve_nested_excluding(&t, "/api/users/7").await;
    get_ok(addr, "/api/users/7").await;
    assert_recorded_nothing(&t, "excluded by its original path").await;
    // Control: another id is recorded.
    get_ok(addr, "/api/users/8").await;
    only_span(&t, "/api/users/8").await;

    // The stripped path does not exclude it.
    let t = Telemetry::new();
    let addr = serve_nested_excluding(&t, "/users/7").await;
    get_ok(addr, "/api/users/7").await;
    only_span(&t, "/api/users/7").await;
}

/// Serves [`api`] under `/api`, its layer on `t` excluding `path`.
async fn serve_nested_excluding(t: &Telemetry, path: &str) -> SocketAddr {
    let layer = t.server().excluded_paths([path]).build();
    serve_axum(Router::new().nest("/api", api(layer))).await
}

// ---------------------------------------------------------------------------------------
// 2. The same request instrumented twice: the nested module's layer and an app-wide one.

/// Asserts that `t_outer` recorded the nested request `GET /api/users/42` exactly once,
/// and `t_inner` nothing.
async fn assert_recorded_once_by_outer(t_outer: &Telemetry, t_inner: &Telemetry) {
    let span = only_span(t_outer, "/api/users/42").await;
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.name, "GET /api/users/{id}");
    assert_eq!(
        attr(&span.attributes, "http.route"),
        Some(s("/api/users/{id}"))
    );
    assert_one_point(t_outer, "/api/users/{id}");
    assert_recorded_nothing(t_inner, "inner layer").await;
}

/// Then a request outside the nested module: recorded once, by the outer layer.
async fn assert_outside_request_recorded_by_outer(
    addr: SocketAddr,
    t_outer: &Telemetry,
    t_inner: &Telemetry,
) {
    assert_eq!(get_ok(addr, "/health").await, "ok");
    t_outer.wait_spans(2).await;
    let spans = t_outer.settle_spans(2).await;
    let health = span_with_path(&spans, "/health");
    assert_eq!(health.name, "GET /health");
    assert_eq!(attr(&health.attributes, "http.route"), Some(s("/health")));
    assert_eq!(total_count(&t_outer.f64_histogram(DURATION)), 2);
    assert_recorded_nothing(t_inner, "inner layer").await;
}

/// [`api`] under `/api` with `inner`, beside a `/health` route.
fn app_with_nested(inner: OtelLayer) -> Router {
    Router::new()
        .nest("/api", api(inner))
        .route("/health", routing::get(|| async { "ok" }))
}

/// [`app_with_nested`] with `inner`, under `outer`: a layer of the router, or wrapping it
/// (`wrap_router`).
fn outer_and_inner(outer: OtelLayer, inner: OtelLayer, wrap: bool) -> Router {
    let nested = app_with_nested(inner);
    if wrap {
        outer.wrap_router(nested)
    } else {
        nested.layer(outer)
    }
}

/// A nested request, then one outside the nested module, through an outer and an inner
/// layer on two [`Telemetry`]s: each recorded once, by the outer layer.
async fn assert_twice_instrumented_records_once_by_outer(wrap: bool) {
    let (t_outer, t_inner) = (Telemetry::new(), Telemetry::new());
    let app = outer_and_inner(t_outer.server().build(), t_inner.server().build(), wrap);
    let addr = serve_axum(app).await;
    assert_eq!(get_ok(addr, "/api/users/42").await, "a user");
    assert_recorded_once_by_outer(&t_outer, &t_inner).await;
    assert_outside_request_recorded_by_outer(addr, &t_outer, &t_inner).await;
}

#[tokio::test]
async fn twice_instrumented_router_layer_records_once_by_outer() {
    assert_twice_instrumented_records_once_by_outer(false).await;
}

#[tokio::test]
async fn twice_instrumented_wrap_router_records_once_by_outer() {
    assert_twice_instrumented_records_once_by_outer(true).await;
}

#[tokio::test]
async fn twice_instrumented_with_same_telemetry_exports_one_span() {
    // Both layers on one pair of providers (the usual app): one span, one point.
    let t = Telemetry::new();
    let app = outer_and_inner(t.server().build(), t.server().build(), false);
    let addr = serve_axum(app).await;
    get_ok(addr, "/api/users/42").await;
    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    assert_eq!(spans[0].name, "GET /api/users/{id}");
    assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
    assert_eq!(total_count(&t.f64_histogram(DURATION)), 1);
}

/// The outer layer leaves `/api/users/42` out (`outer`), the inner one records it; a
/// request the outer layer keeps is still recorded by the outer one only.
async fn assert_inner_records_what_outer_leaves_out(
    outer: OtelLayer,
    t_outer: &Telemetry,
    t_inner: &Telemetry,
    wrap: bool,
) {
    let app = outer_and_inner(outer, t_inner.server().build(), wrap);
    let addr = serve_axum(app).await;
    assert_eq!(get_ok(addr, "/api/users/42?q=1").await, "a user");

    let span = only_span(t_inner, "/api/users/42").await;
    assert_eq!(span.name, "GET /api/users/{id}");
    assert_eq!(attr(&span.attributes, "url.query"), Some(s("q=1")));
    let points = t_inner.f64_histogram(DURATION);
    assert_eq!(total_count(&points), 1);
    assert_eq!(
        attr(points[0].attributes(), "http.route"),
        Some(s("/api/users/{id}"))
    );
    assert_recorded_nothing(t_outer, "outer layer, filtered out").await;

    // Control: another user is kept by the outer layer, which records it; the inner
    // layer stays at its one span.
    get_ok(addr, "/api/users/43").await;
    only_span(t_outer, "/api/users/43").await;
    assert_eq!(total_count(&t_outer.f64_histogram(DURATION)), 1);
    only_span(t_inner, "/api/users/42").await;
    assert_eq!(total_count(&t_inner.f64_histogram(DURATION)), 1);
}

#[tokio::test]
async fn outer_filter_leaves_the_request_to_the_inner_layer() {
    for wrap in [false, true] {
        let (t_outer, t_inner) = (Telemetry::new(), Telemetry::new());
        let outer = t_outer
            .server()
            .filter(|parts: &http::request::Parts| parts.uri.path() != "/api/users/42")
            .build();
        assert_inner_records_what_outer_leaves_out(outer, &t_outer, &t_inner, wrap).await;
    }
}

#[tokio::test]
async fn outer_excluded_paths_leave_the_request_to_the_inner_layer() {
    for wrap in [false, true] {
        let (t_outer, t_inner) = (Telemetry::new(), Telemetry::new());
        let outer = t_outer.server().excluded_paths(["/api/users/42"]).build();
        assert_inner_records_what_outer_leaves_out(outer, &t_outer, &t_inner, wrap).await;
    }
}

// ---------------------------------------------------------------------------------------
// 3. The context across tasks and buffers, from inside a handler.

/// The hyper-util client wrapped in a client layer with `t`'s providers.
fn otel_client(t: &Telemetry) -> OtelClient<HyperClient> {
    t.client_layer().build().layer(client())
}

/// What the handlers here answer: a body, or a 500 with the error of a call they made.
type Handled = Result<Bytes, (StatusCode, String)>;

/// Sends `req` through `svc` and reads the whole response body (the CLIENT span ends
/// there).
async fn fetch<S, B>(svc: S, req: Request<Full<Bytes>>) -> Handled
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    fn err500(e: impl std::fmt::Debug) -> (StatusCode, String) {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}"))
    }
    let res = svc.oneshot(req).await.map_err(err500)?;
    let body = res.into_body().collect().await.map_err(err500)?;
    Ok(body.to_bytes())
}

/// The client layer of `t` on a plain client, behind a [`Buffer`]: called on the
/// buffer's worker task.
fn buffered_client(t: &Telemetry) -> Buffer<Request<Full<Bytes>>, OtelFuture> {
    Buffer::new(otel_client(t), 8)
}

/// Runs `call` on a new task (which starts with no current context) and waits for it.
async fn on_new_task(call: impl std::future::Future<Output = Handled> + Send + 'static) -> Handled {
    tokio::spawn(call).await.unwrap()
}

/// A GET of `down` + `path` that carries `parent`.
fn get_with_parent(down: SocketAddr, path: &str, parent: ParentContext) -> Request<Full<Bytes>> {
    let mut req = get(down, path);
    req.extensions_mut().insert(parent);
    req
}

/// A plain echo server (see `support::echo`) for the handlers to call.
async fn downstream() -> SocketAddr {
    serve(tower::service_fn(echo)).await
}

/// Serves `handler` at `/h` under a server layer of `t`, calls it, and returns its
/// answer and the exported spans (`n` in all) once the server's and clients' spans ended.
async fn run_handler<H, T>(t: &Telemetry, handler: H, n: usize) -> (Bytes, Vec<SpanData>)
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let app = Router::new()
        .route("/h", routing::get(handler))
        .layer(t.server().build());
    let body = get_ok(serve_axum(app).await, "/h").await;
    t.wait_spans(n).await;
    (body, t.settle_spans(n).await)
}

/// Runs `handler` (see [`run_handler`]), which makes two calls, and asserts that the
/// CLIENT span to `child` is a child of the server span and the one to `root` a new root.
async fn assert_child_and_new_root<H, T>(t: &Telemetry, handler: H, child: &str, root: &str)
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let (_, spans) = run_handler(t, handler, 3).await;
    let server = server_span(&spans);
    assert_child_of(client_to(&spans, child), server);
    assert_new_root(client_to(&spans, root), server);
}

fn server_span(spans: &[SpanData]) -> &SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(found.len(), 1, "{found:#?}");
    found[0]
}

/// The one CLIENT span to a URL ending with `path`.
fn client_to<'a>(spans: &'a [SpanData], path: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = client_spans(spans)
        .into_iter()
        .filter(|s| match attr(&s.attributes, "url.full") {
            Some(Value::String(url)) => url.as_str().ends_with(path),
            _ => false,
        })
        .collect();
    assert_eq!(found.len(), 1, "client spans to {path}: {found:#?}");
    found[0]
}

#[track_caller]
fn assert_child_of(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.span_context.trace_id(),
        parent.span_context.trace_id(),
        "{}: not in the parent's trace",
        child.name
    );
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "{}: not a child of {}",
        child.name,
        parent.name
    );
}

#[track_caller]
fn assert_new_root(span: &SpanData, not_in: &SpanData) {
    assert_eq!(
        span.parent_span_id,
        SpanId::INVALID,
        "{}: has a parent",
        span.name
    );
    assert_ne!(
        span.span_context.trace_id(),
        not_in.span_context.trace_id(),
        "{}: in the server's trace",
        span.name
    );
}

#[tokio::test]
async fn context_direct_call_in_handler_is_child_of_server_span() {
    let t = Telemetry::new();
    let down = downstream().await;
    let client = otel_client(&t);
    let handler = {
        let client = client.clone();
        move || async move { fetch(client, get(down, "/direct")).await }
    };
    let (echoed_headers, spans) = run_handler(&t, handler, 2).await;
    let server = server_span(&spans);
    let direct = client_to(&spans, "/direct");
    assert_child_of(direct, server);
    // The downstream server was told the CLIENT span's context.
    assert_eq!(
        echoed(&echoed_headers, "traceparent"),
        [traceparent_of(direct)]
    );
    assert_eq!(total_count(&t.f64_histogram(DURATION)), 1);
    let client_points = t.f64_histogram(CLIENT_DURATION);
    assert_eq!(client_points.iter().map(|p| p.count()).sum::<u64>(), 1);

    // Control: the same client called outside any handler starts a new trace.
    fetch(client, get(down, "/outside")).await.unwrap();
    let spans = t.wait_spans(3).await;
    let outside = client_to(&spans, "/outside");
    assert_new_root(outside, server);
}

#[tokio::test]
async fn context_plain_spawn_starts_a_new_root() {
    let t = Telemetry::new();
    let down = downstream().await;
    let client = otel_client(&t);
    let handler = move || async move {
        fetch(client.clone(), get(down, "/direct")).await?;
        // Documented limitation: nothing is current on the spawned task.
        on_new_task(fetch(client, get(down, "/spawned"))).await?;
        Handled::Ok("done".into())
    };
    assert_child_and_new_root(&t, handler, "/direct", "/spawned").await;
}

#[tokio::test]
async fn context_spawn_with_current_context_keeps_the_parent() {
    let t = Telemetry::new();
    let down = downstream().await;
    let client = otel_client(&t);
    let handler = move || async move {
        on_new_task(fetch(client.clone(), get(down, "/carried")).with_current_context()).await?;
        // Control, in the same handler: without the context.
        on_new_task(fetch(client, get(down, "/plain"))).await?;
        Handled::Ok("done".into())
    };
    assert_child_and_new_root(&t, handler, "/carried", "/plain").await;
}

#[tokio::test]
async fn context_client_behind_a_buffer_starts_a_new_root() {
    let t = Telemetry::new();
    let down = downstream().await;
    let buffered = buffered_client(&t);
    let direct = otel_client(&t);
    let handler = move || async move {
        // Documented limitation: the buffer's worker task calls the client layer.
        fetch(buffered, get(down, "/buffered")).await?;
        // Control: the same layer called on the handler's task.
        fetch(direct, get(down, "/direct")).await?;
        Handled::Ok("done".into())
    };
    assert_child_and_new_root(&t, handler, "/direct", "/buffered").await;
}

#[tokio::test]
async fn context_capture_context_layer_outside_a_buffer_keeps_the_parent() {
    let t = Telemetry::new();
    let down = downstream().await;
    let captured = CaptureContextLayer::new().layer(buffered_client(&t));
    let uncaptured = buffered_client(&t);
    let handler = move || async move {
        let echoed_headers = fetch(captured.clone(), get(down, "/captured")).await?;
        // From a plain spawned task it captures that task's context, which is empty:
        // the layer must be called on the task that has the context. A new root.
        on_new_task(fetch(captured, get(down, "/captured-in-spawn"))).await?;
        fetch(uncaptured, get(down, "/uncaptured")).await?;
        Handled::Ok(echoed_headers)
    };
    let (echoed_headers, spans) = run_handler(&t, handler, 4).await;
    let server = server_span(&spans);
    let captured = client_to(&spans, "/captured");
    assert_child_of(captured, server);
    // The propagated header names the CLIENT span, in the server's trace.
    assert_eq!(
        echoed(&echoed_headers, "traceparent"),
        [traceparent_of(captured)]
    );
    assert_new_root(client_to(&spans, "/captured-in-spawn"), server);
    assert_new_root(client_to(&spans, "/uncaptured"), server);
}

#[tokio::test]
async fn context_explicit_parent_context_wins() {
    let t = Telemetry::new();
    let down = downstream().await;
    let direct = otel_client(&t);
    let captured = CaptureContextLayer::new().layer(buffered_client(&t));
    let provider = t.tracer_provider.clone();
    let handler = move || async move {
        // (1) The current context, carried by hand into a plain spawn.
        let req = get_with_parent(down, "/explicit-in-spawn", ParentContext::current());
        on_new_task(fetch(direct.clone(), req)).await?;
        // Control: the same spawn without it.
        on_new_task(fetch(direct.clone(), get(down, "/plain-spawn"))).await?;
        // (2) Another parent than the current context: it wins over the server span,
        // directly and through `CaptureContextLayer` (which keeps it).
        let tracer = provider.tracer("real_apps");
        let explicit = Context::current_with_span(tracer.start("explicit-parent"));
        let req = get_with_parent(down, "/explicit-direct", ParentContext(explicit.clone()));
        fetch(direct, req).await?;
        let req = get_with_parent(down, "/explicit-captured", ParentContext(explicit.clone()));
        fetch(captured, req).await?;
        explicit.span().end();
        Handled::Ok("done".into())
    };
    // server + 4 clients + the explicit parent
    let (_, spans) = run_handler(&t, handler, 6).await;
    let server = server_span(&spans);
    assert_child_of(client_to(&spans, "/explicit-in-spawn"), server);
    assert_new_root(client_to(&spans, "/plain-spawn"), server);
    let explicit = spans_named(&spans, "explicit-parent");
    assert_eq!(explicit.len(), 1);
    let explicit = explicit[0];
    assert_child_of(explicit, server);
    assert_child_of(client_to(&spans, "/explicit-direct"), explicit);
    assert_child_of(client_to(&spans, "/explicit-captured"), explicit);
}

// ---------------------------------------------------------------------------------------
// 4. A response body that panics while it streams.

fn active_value(t: &Telemetry) -> i64 {
    let points = t.i64_sum(ACTIVE);
    assert_eq!(points.len(), 1, "{points:#?}");
    points[0].value()
}

/// One chunk, then a panic (on the second poll of the stream), with no Content-Length.
fn panicking_body() -> Body {
    Body::from_stream(futures_util::stream::iter(0..3).map(|i| {
        if i == 1 {
            panic!("boom (expected by the test)");
        }
        Ok::<_, std::io::Error>(Bytes::from("x"))
    }))
}

/// Three chunks, no Content-Length, no panic.
fn streamed_body() -> Body {
    Body::from_stream(
        futures_util::stream::iter(0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from("x"))),
    )
}

/// One chunk, then nothing for a long time.
fn stalled_body() -> Body {
    Body::from_stream(
        futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("chunk0;")) })
            .chain(futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, std::io::Error>(Bytes::from("late"))
            })),
    )
}

/// Asserts that `span` ended with an error status and `error.type` `error_type`.
#[track_caller]
fn assert_failed(span: &SpanData, error_type: &str) {
    assert_eq!(attr(&span.attributes, "error.type"), Some(s(error_type)));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
}

fn streaming_app(t: &Telemetry) -> Router {
    Router::new()
        .route("/panic", routing::get(|| async { panicking_body() }))
        .route("/stream", routing::get(|| async { streamed_body() }))
        .route("/stall", routing::get(|| async { stalled_body() }))
        .layer(t.server().active_requests(true).build())
}

#[tokio::test]
async fn streamed_body_panic_is_error_type_panic() {
    let t = Telemetry::new();
    let addr = serve_axum(streaming_app(&t)).await;

    // Control first: the same kind of stream, without a panic, ends without an error.
    assert_eq!(get_ok(addr, "/stream").await, "xxx");
    let spans = t.wait_spans(1).await;
    let ok = span_with_path(&spans, "/stream");
    assert_eq!(attr(&ok.attributes, "error.type"), None);
    assert_eq!(ok.status, Status::Unset);

    // The client sees the response fail: no complete response ever arrives.
    let outcome = async {
        let res = client()
            .request(get(addr, "/panic"))
            .await
            .map_err(|e| format!("request: {e:?}"))?;
        res.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("body: {e:?}"))
    }
    .await;
    assert!(outcome.is_err(), "the client got a whole body: {outcome:?}");

    t.wait_spans(2).await;
    let spans = t.settle_spans(2).await;
    let span = span_with_path(&spans, "/panic");
    assert_eq!(span.name, "GET /panic");
    assert_failed(span, "panic");
    assert_eq!(
        attr(&span.attributes, "http.response.status_code"),
        Some(Value::I64(200))
    );

    let points = t.f64_histogram(DURATION);
    assert_eq!(total_count(&points), 2);
    let panic_point: Vec<_> = points
        .iter()
        .filter(|p| attr(p.attributes(), "http.route") == Some(s("/panic")))
        .collect();
    assert_eq!(panic_point.len(), 1, "{points:#?}");
    assert_eq!(panic_point[0].count(), 1);
    assert_eq!(
        attr(panic_point[0].attributes(), "error.type"),
        Some(s("panic"))
    );
    assert_eq!(active_value(&t), 0);

    // The server goes on serving (the panic ended one connection's task).
    assert_eq!(get_ok(addr, "/stream").await, "xxx");
    t.wait_spans(3).await;
    assert_eq!(active_value(&t), 0);
}

#[tokio::test]
async fn streamed_body_dropped_midway_is_response_body_aborted() {
    let t = Telemetry::new();
    let addr = serve_axum(streaming_app(&t)).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /stall HTTP/1.1\r\nhost: localhost\r\n\r\n")
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
    // In flight while the body stalls.
    assert_eq!(active_value(&t), 1);
    assert!(t.finished_spans().is_empty());
    drop(stream);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    assert_failed(&spans[0], "response_body_aborted");
    let points = t.f64_histogram(DURATION);
    assert_eq!(total_count(&points), 1);
    assert_eq!(
        attr(points[0].attributes(), "error.type"),
        Some(s("response_body_aborted"))
    );
    assert_eq!(active_value(&t), 0);
}
