#![cfg(all(feature = "axum", feature = "reqwest"))]
//! Enrichment over real loopback sockets: labels (`Labeler`) from handlers, from inner
//! layers and from client callers; request and response hooks (what a sampler sees, span
//! versus metric attributes); the opt-in `exception` event; the client filter; the bounds
//! (cap, value length, collisions with the conventions); and hooks that panic.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Extension;
use axum::http::HeaderMap;
use axum::response::Response as AxumResponse;
use axum::routing;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::Status;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{HistogramDataPoint, SumDataPoint};
use opentelemetry_sdk::trace::SpanData;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use support::*;
use tower::{Layer as _, ServiceExt as _};
use tower_otel_http::reqwest::{OtelMiddleware, OtelMiddlewareBuilder};
use tower_otel_http::{Labeler, OtelClientLayerBuilder, OtelLayer, OtelLayerBuilder};

const SERVER_DURATION: &str = "http.server.request.duration";
const SERVER_RESPONSE_SIZE: &str = "http.server.response.body.size";
const SERVER_ACTIVE: &str = "http.server.active_requests";
const CLIENT_DURATION: &str = "http.client.request.duration";
const CLIENT_ACTIVE: &str = "http.client.active_requests";

/// The namespaces the conventions own (a user key in them is dropped).
const RESERVED: [&str; 8] = [
    "http.",
    "url.",
    "server.",
    "client.",
    "network.",
    "error.",
    "user_agent.",
    "rpc.",
];

// ------------------------------------------------------------------------------------
// Helpers

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

/// Serves a service whose error type is not `Infallible` (hyper closes the connection
/// when it fails).
async fn serve_fallible<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    addr
}

async fn echo_server() -> SocketAddr {
    serve(tower::service_fn(echo)).await
}

/// A GET `path` with `headers`, origin-form, for [`send_from`].
fn get_with(path: &str, headers: &[(&'static str, &str)]) -> Request<Full<Bytes>> {
    let mut req = request("GET", path);
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, http::HeaderValue::from_str(value).unwrap());
    }
    req
}

/// Waits (up to 5 s) until the points of f64 histogram `name` count `n` measurements in
/// all, and returns them: the metrics are recorded just after the span ends.
async fn wait_points(t: &Telemetry, name: &str, n: u64) -> Vec<HistogramDataPoint<f64>> {
    for _ in 0..500 {
        let points = t.f64_histogram(name);
        if points.iter().map(|p| p.count()).sum::<u64>() >= n {
            return points;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} measurements of {name}: {:#?}",
        t.f64_histogram(name)
    );
}

/// The one point whose attribute `key` is `value`.
fn point_with<'a, T>(
    points: &'a [HistogramDataPoint<T>],
    key: &str,
    value: &Value,
) -> &'a HistogramDataPoint<T> {
    let found: Vec<_> = points
        .iter()
        .filter(|p| attr(p.attributes(), key).as_ref() == Some(value))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one point with {key}={value}: {:#?}",
        points
            .iter()
            .map(|p| attr_set(p.attributes()))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// How many attributes have key `key` (the SDK keeps duplicates on spans).
fn count_key<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>, key: &str) -> usize {
    attrs
        .into_iter()
        .filter(|kv| kv.key.as_str() == key)
        .count()
}

/// The keys outside the conventions' namespaces, sorted.
fn user_keys<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> Vec<String> {
    let mut keys: Vec<String> = attrs
        .into_iter()
        .map(|kv| kv.key.as_str().to_owned())
        .filter(|k| !RESERVED.iter().any(|ns| k.starts_with(ns)))
        .collect();
    keys.sort();
    keys
}

/// The server metric attributes of a GET of `route` answered with `status`, over HTTP/1.1.
fn server_metric_conventions(route: &str, status: i64) -> Vec<(&'static str, Value)> {
    vec![
        ("http.request.method", s("GET")),
        ("url.scheme", s("http")),
        ("http.response.status_code", Value::I64(status)),
        ("http.route", s(route)),
        ("network.protocol.version", s("1.1")),
    ]
}

/// The client metric attributes of a GET to `addr` answered with `status`.
fn client_metric_conventions(addr: SocketAddr, status: i64) -> Vec<(&'static str, Value)> {
    vec![
        ("http.request.method", s("GET")),
        ("server.address", s("127.0.0.1")),
        ("server.port", Value::I64(addr.port().into())),
        ("http.response.status_code", Value::I64(status)),
        ("network.protocol.version", s("1.1")),
    ]
}

/// `point` has exactly the server metric attributes of a GET of `route` answered with
/// `status` (HTTP/1.1), and `extra`.
#[track_caller]
fn assert_server_point<T>(
    point: &HistogramDataPoint<T>,
    route: &str,
    status: i64,
    extra: &[(&'static str, Value)],
) {
    let mut want = server_metric_conventions(route, status);
    want.extend(extra.iter().cloned());
    assert_eq!(typed_set(point.attributes()), expected_set(&want));
}

/// `point` has exactly the client metric attributes of a GET to `addr` answered with
/// `status`, and `extra`.
#[track_caller]
fn assert_client_point<T>(
    point: &HistogramDataPoint<T>,
    addr: SocketAddr,
    status: i64,
    extra: &[(&'static str, Value)],
) {
    let mut want = client_metric_conventions(addr, status);
    want.extend(extra.iter().cloned());
    assert_eq!(typed_set(point.attributes()), expected_set(&want));
}

/// Waits for `t`'s span, and returns it once it is the only one.
async fn only_span(t: &Telemetry) -> SpanData {
    t.wait_spans(1).await;
    t.settle_spans(1).await.remove(0)
}

/// `span`'s `exception` event when `recorded` (exactly one); else `None`, and `span`
/// has no event at all.
#[track_caller]
fn the_exception(span: &SpanData, recorded: bool) -> Option<&opentelemetry::trace::Event> {
    let events: Vec<_> = span
        .events
        .iter()
        .filter(|e| e.name == "exception")
        .collect();
    if recorded {
        assert_eq!(events.len(), 1, "{:?}", span.events);
        Some(events[0])
    } else {
        assert!(span.events.is_empty(), "{:?}", span.events);
        None
    }
}

/// The points of i64 sum `name` (`*.active_requests`), each at zero: no request is
/// left active.
#[track_caller]
fn none_active(t: &Telemetry, name: &str) -> Vec<SumDataPoint<i64>> {
    let active = t.i64_sum(name);
    for point in &active {
        assert_eq!(point.value(), 0, "{:?}", attr_set(point.attributes()));
    }
    active
}

/// `OtelMiddleware`'s builder, recording to `t`.
fn middleware(t: &Telemetry) -> OtelMiddlewareBuilder {
    OtelMiddleware::builder()
        .tracer_provider(&t.tracer_provider)
        .meter_provider(&t.meter_provider)
}

/// A reqwest client with `middleware`.
fn reqwest_client(middleware: OtelMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

/// After a GET of the echo server at `addr`, answered 200 with `body`, by a client
/// recording to `t` (the only request it measured): its only span, whose `traceparent`
/// the server saw, and one measurement, with exactly the client conventions and `extra`.
/// The span and the points.
async fn check_echo_call(
    t: &Telemetry,
    addr: SocketAddr,
    body: &[u8],
    extra: &[(&'static str, Value)],
) -> (SpanData, Vec<HistogramDataPoint<f64>>) {
    let span = only_span(t).await;
    assert_eq!(echoed(body, "traceparent"), vec![traceparent_of(&span)]);
    let points = wait_points(t, CLIENT_DURATION, 1).await;
    assert_eq!(
        points[0].count(),
        1,
        "one measurement (a filtered one is not)"
    );
    assert_client_point(&points[0], addr, 200, extra);
    (span, points)
}

// ------------------------------------------------------------------------------------
// 1. Labels from an axum handler

#[tokio::test]
async fn handler_labels_reach_the_span_and_every_metric_point() {
    let t = Telemetry::new();
    let app = Router::new()
        .route(
            "/t/{id}",
            routing::get(
                |Extension(l): Extension<Labeler>, headers: HeaderMap| async move {
                    let tenant = headers["x-tenant"].to_str().unwrap().to_owned();
                    l.add(KeyValue::new("app.tenant", tenant));
                    "ok"
                },
            ),
        )
        .layer(t.server().labels(true).build());
    let addr = serve_axum(app).await;
    for (path, tenant) in [("/t/1", "acme"), ("/t/2", "globex")] {
        let (parts, body, _) = send_from(addr, get_with(path, &[("x-tenant", tenant)])).await;
        assert_eq!(parts.status, 200);
        assert_eq!(body, "ok");
    }

    let spans = t.wait_spans(2).await;
    assert_eq!(
        attr(&span_with_path(&spans, "/t/1").attributes, "app.tenant"),
        Some(s("acme"))
    );
    assert_eq!(
        attr(&span_with_path(&spans, "/t/2").attributes, "app.tenant"),
        Some(s("globex"))
    );
    assert_eq!(
        count_key(&span_with_path(&spans, "/t/1").attributes, "app.tenant"),
        1
    );

    // One point per tenant, each the conventions plus the label.
    let points = wait_points(&t, SERVER_DURATION, 2).await;
    assert_eq!(points.len(), 2, "a point per tenant");
    for tenant in ["acme", "globex"] {
        let point = point_with(&points, "app.tenant", &s(tenant));
        assert_eq!(point.count(), 1);
        assert_server_point(point, "/t/{id}", 200, &[("app.tenant", s(tenant))]);
    }
    let sizes = t.u64_histogram(SERVER_RESPONSE_SIZE);
    assert_eq!(sizes.len(), 2);
    let acme = point_with(&sizes, "app.tenant", &s("acme"));
    assert_eq!((acme.count(), acme.sum()), (1, 2));
    assert_server_point(acme, "/t/{id}", 200, &[("app.tenant", s("acme"))]);
}

#[tokio::test]
async fn without_labels_option_no_labeler_is_in_the_request() {
    let t = Telemetry::new();
    let app = |layer: OtelLayer| {
        Router::new()
            .route(
                "/strict",
                routing::get(|Extension(l): Extension<Labeler>| async move {
                    l.add(KeyValue::new("app.tenant", "acme"));
                    "ok"
                }),
            )
            .route(
                "/optional",
                routing::get(|l: Option<Extension<Labeler>>| async move {
                    match l {
                        Some(Extension(l)) => {
                            l.add(KeyValue::new("app.tenant", "acme"));
                            "some"
                        }
                        None => "none",
                    }
                }),
            )
            .layer(layer)
    };
    let off = serve_axum(app(t.server().build())).await;
    let (parts, _, _) = send_from(off, request("GET", "/strict")).await;
    assert_eq!(parts.status, 500, "the Extension<Labeler> extractor fails");
    let (parts, body, _) = send_from(off, request("GET", "/optional")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "none");

    let spans = t.wait_spans(2).await;
    for span in &spans {
        assert_eq!(attr(&span.attributes, "app.tenant"), None);
    }
    assert_eq!(
        attr(
            &span_with_path(&spans, "/strict").attributes,
            "http.response.status_code"
        ),
        Some(Value::I64(500))
    );
    let points = wait_points(&t, SERVER_DURATION, 2).await;
    for point in &points {
        assert_eq!(attr(point.attributes(), "app.tenant"), None);
    }

    // Positive control: the same handlers with `labels(true)`.
    let t = Telemetry::new();
    let on = serve_axum(app(t.server().labels(true).build())).await;
    let (parts, body, _) = send_from(on, request("GET", "/optional")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "some");
    let spans = t.wait_spans(1).await;
    assert_eq!(attr(&spans[0].attributes, "app.tenant"), Some(s("acme")));
}

// ------------------------------------------------------------------------------------
// 2. Labels in the response extensions, from an inner layer

#[tokio::test]
async fn response_labeler_from_an_inner_layer_is_read_without_labels_option() {
    let t = Telemetry::new();
    let labelled = Router::new()
        .route("/inner", routing::get(|| async { "inner" }))
        .layer(axum::middleware::map_response(
            |mut res: AxumResponse| async move {
                res.extensions_mut()
                    .insert(Labeler::from(vec![KeyValue::new("app.inner", "yes")]));
                res
            },
        ));
    let app = labelled
        .merge(Router::new().route("/plain", routing::get(|| async { "plain" })))
        .layer(t.server().build());
    let addr = serve_axum(app).await;
    let (parts, body, _) = send_from(addr, request("GET", "/inner")).await;
    assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"inner"[..]));
    let (parts, _, _) = send_from(addr, request("GET", "/plain")).await;
    assert_eq!(parts.status, 200);

    let spans = t.wait_spans(2).await;
    assert_eq!(
        attr(&span_with_path(&spans, "/inner").attributes, "app.inner"),
        Some(s("yes"))
    );
    // Control: a route without the inner layer has no label.
    assert_eq!(
        attr(&span_with_path(&spans, "/plain").attributes, "app.inner"),
        None
    );
    let points = wait_points(&t, SERVER_DURATION, 2).await;
    assert_eq!(points.len(), 2);
    let inner = point_with(&points, "http.route", &s("/inner"));
    assert_server_point(inner, "/inner", 200, &[("app.inner", s("yes"))]);
    let plain = point_with(&points, "http.route", &s("/plain"));
    assert_server_point(plain, "/plain", 200, &[]);
    let sizes = t.u64_histogram(SERVER_RESPONSE_SIZE);
    assert_eq!(
        attr(
            point_with(&sizes, "http.route", &s("/inner")).attributes(),
            "app.inner"
        ),
        Some(s("yes"))
    );
}

// ------------------------------------------------------------------------------------
// 3. Request hook: what a sampler sees, span versus metrics

#[tokio::test]
async fn request_hook_attributes_are_seen_by_the_sampler_and_split_span_metric() {
    let sampler = RecordingSampler::default();
    let t = Telemetry::with_tracer(|b| b.with_sampler(sampler.clone()));
    let layer = t
        .server()
        .on_request(|parts, a| {
            a.metric(KeyValue::new(
                "app.plan",
                parts.headers["x-plan"].to_str().unwrap().to_owned(),
            ));
            a.span(KeyValue::new("app.span_only", 1));
        })
        .build();
    let app = Router::new()
        .route("/plan", routing::get(|| async { "planned" }))
        .layer(layer);
    let addr = serve_axum(app).await;
    for plan in ["pro", "free"] {
        let (parts, _, _) = send_from(addr, get_with("/plan", &[("x-plan", plan)])).await;
        assert_eq!(parts.status, 200);
    }

    let spans = t.wait_spans(2).await;
    let seen = sampler.seen();
    assert_eq!(seen.len(), 2);
    for ((name, attrs), plan) in seen.iter().zip(["pro", "free"]) {
        assert_eq!(name, "GET /plan");
        assert_eq!(attr(attrs, "app.plan"), Some(s(plan)), "{attrs:?}");
        assert_eq!(attr(attrs, "app.span_only"), Some(Value::I64(1)));
        // The conventions are there too.
        assert_eq!(attr(attrs, "http.route"), Some(s("/plan")));
    }
    for span in &spans {
        assert_eq!(attr(&span.attributes, "app.span_only"), Some(Value::I64(1)));
        assert_eq!(count_key(&span.attributes, "app.plan"), 1);
    }
    let plans: Vec<_> = spans
        .iter()
        .map(|sp| attr(&sp.attributes, "app.plan"))
        .collect();
    assert!(plans.contains(&Some(s("pro"))) && plans.contains(&Some(s("free"))));

    let points = wait_points(&t, SERVER_DURATION, 2).await;
    assert_eq!(points.len(), 2, "one point per plan");
    for plan in ["pro", "free"] {
        let point = point_with(&points, "app.plan", &s(plan));
        assert_eq!(attr(point.attributes(), "app.span_only"), None);
        assert_server_point(point, "/plan", 200, &[("app.plan", s(plan))]);
    }
}

// ------------------------------------------------------------------------------------
// 4. Response hook

#[tokio::test]
async fn response_hook_attributes_go_on_span_and_metrics_as_asked() {
    let t = Telemetry::new();
    let layer = t
        .server()
        .on_response(|parts, a| {
            a.span(KeyValue::new(
                "app.status_class",
                i64::from(parts.status.as_u16() / 100),
            ));
            a.metric(KeyValue::new(
                "app.cache",
                parts.headers.get("x-cache").is_some(),
            ));
        })
        .build();
    let app = Router::new()
        .route(
            "/cached",
            routing::get(|| async { ([("x-cache", "hit")], "cached") }),
        )
        .route("/fresh", routing::get(|| async { "fresh" }))
        .layer(layer);
    let addr = serve_axum(app).await;
    let (parts, _, _) = send_from(addr, request("GET", "/cached")).await;
    assert_eq!(parts.headers["x-cache"], "hit");
    send_from(addr, request("GET", "/fresh")).await;
    let (parts, _, _) = send_from(addr, request("GET", "/nowhere")).await;
    assert_eq!(parts.status, 404);

    let spans = t.wait_spans(3).await;
    let cached = span_with_path(&spans, "/cached");
    assert_eq!(
        attr(&cached.attributes, "app.status_class"),
        Some(Value::I64(2))
    );
    assert_eq!(
        attr(&cached.attributes, "app.cache"),
        Some(Value::Bool(true))
    );
    let fresh = span_with_path(&spans, "/fresh");
    assert_eq!(
        attr(&fresh.attributes, "app.cache"),
        Some(Value::Bool(false))
    );
    let nowhere = span_with_path(&spans, "/nowhere");
    assert_eq!(
        attr(&nowhere.attributes, "app.status_class"),
        Some(Value::I64(4))
    );

    let points = wait_points(&t, SERVER_DURATION, 3).await;
    assert_eq!(points.len(), 3);
    let cached = point_with(&points, "http.route", &s("/cached"));
    assert_server_point(cached, "/cached", 200, &[("app.cache", Value::Bool(true))]);
    let fresh = point_with(&points, "http.route", &s("/fresh"));
    assert_eq!(
        attr(fresh.attributes(), "app.cache"),
        Some(Value::Bool(false))
    );
    for point in &points {
        assert_eq!(attr(point.attributes(), "app.status_class"), None);
    }
}

// ------------------------------------------------------------------------------------
// 5. Error description and the exception event

/// A server whose service fails with an `io::Error`, with or without `record_exception`.
async fn failing_server(t: &Telemetry, record_exception: bool) -> SocketAddr {
    let svc = tower::service_fn(|_req: Request<hyper::body::Incoming>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("disk on fire"))
    });
    let layer = t.server().record_exception(record_exception).build();
    serve_fallible(layer.layer(svc)).await
}

#[tokio::test]
async fn server_error_describes_itself_and_records_exception_when_asked() {
    for record_exception in [true, false] {
        let t = Telemetry::new();
        let addr = failing_server(&t, record_exception).await;
        let err = client()
            .request(get(addr, "/fail"))
            .await
            .expect_err("the server fails without answering");
        drop(err);

        let span = &only_span(&t).await;
        assert_eq!(span.status, Status::error("disk on fire"));
        assert_eq!(
            attr(&span.attributes, "error.type"),
            Some(s("std::io::Error"))
        );
        assert_eq!(attr(&span.attributes, "http.response.status_code"), None);
        if let Some(event) = the_exception(span, record_exception) {
            assert_eq!(
                typed_set(&event.attributes),
                expected_set(&[
                    ("exception.type", s("std::io::Error")),
                    ("exception.message", s("disk on fire")),
                ])
            );
            assert!(event.timestamp <= span.end_time);
            assert!(event.timestamp >= span.start_time);
        }
        let points = wait_points(&t, SERVER_DURATION, 1).await;
        assert_eq!(
            attr(points[0].attributes(), "error.type"),
            Some(s("std::io::Error"))
        );
    }
}

#[tokio::test]
async fn server_success_has_no_exception_event_even_when_opted_in() {
    let t = Telemetry::new();
    let app = Router::new()
        .route("/ok", routing::get(|| async { "ok" }))
        .route(
            "/500",
            routing::get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .layer(t.server().record_exception(true).build());
    let addr = serve_axum(app).await;
    send_from(addr, request("GET", "/ok")).await;
    send_from(addr, request("GET", "/500")).await;
    let spans = t.wait_spans(2).await;
    // A status code is not an exception: the option is for errors.
    for span in &spans {
        assert!(span.events.is_empty(), "{:?}", span.events);
    }
    assert_eq!(
        attr(&span_with_path(&spans, "/500").attributes, "error.type"),
        Some(s("500"))
    );
}

#[tokio::test]
async fn client_connect_error_records_exception_when_asked() {
    for record_exception in [true, false] {
        let t = Telemetry::new();
        let addr = refused_addr().await;
        let client = t
            .client_layer()
            .record_exception(record_exception)
            .build()
            .layer(client());
        client
            .oneshot(get(addr, "/"))
            .await
            .expect_err("nothing listens there");

        let span = &only_span(&t).await;
        assert_eq!(attr(&span.attributes, "error.type"), Some(s("connect")));
        let Status::Error { description } = &span.status else {
            panic!("{:?}", span.status)
        };
        assert!(description.contains("refused"), "{description}");
        if let Some(event) = the_exception(span, record_exception) {
            // The error's type; its class is `error.type`.
            assert_eq!(
                attr(&event.attributes, "exception.type"),
                Some(s("hyper_util::client::legacy::Error"))
            );
            let message = attr(&event.attributes, "exception.message")
                .expect("a message")
                .as_str()
                .into_owned();
            assert!(message.contains("refused"), "{message}");
            assert_eq!(message, description.as_ref());
        }
    }
}

// ------------------------------------------------------------------------------------
// 6. Client labels and client filter (hyper-util)

#[tokio::test]
async fn client_labels_and_filter_over_hyper_util() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = t
        .client_layer()
        .filter(|parts| parts.uri.path() != "/health")
        .build()
        .layer(client());

    // Labelled, recorded.
    let labeler = Labeler::from(vec![KeyValue::new("app.caller", "billing")]);
    let mut req = get(addr, "/echo");
    req.extensions_mut().insert(labeler.clone());
    let res = client.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // Labels added until the call ends (the body read) count.
    labeler.add(KeyValue::new("app.late", "yes"));
    let echoed_body = res.into_body().collect().await.unwrap().to_bytes();

    // Filtered out: no span, no point, no injected context.
    let res = client.clone().oneshot(get(addr, "/health")).await.unwrap();
    assert_eq!(res.status(), 200);
    let health_body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed(&health_body, "traceparent"), Vec::<String>::new());
    assert!(!echoed(&health_body, "host").is_empty(), "echo works");

    // `/health` is not measured.
    let extra = [("app.caller", s("billing")), ("app.late", s("yes"))];
    let (span, points) = check_echo_call(&t, addr, &echoed_body, &extra).await;
    assert_eq!(points.len(), 1);
    assert_eq!(
        attr(&span.attributes, "url.full"),
        Some(s(&format!("http://{addr}/echo")))
    );
    assert_eq!(attr(&span.attributes, "app.caller"), Some(s("billing")));
    assert_eq!(attr(&span.attributes, "app.late"), Some(s("yes")));
}

#[tokio::test]
async fn client_labels_separate_the_points_and_unlabelled_requests_have_none() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = t.client_layer().build().layer(client());
    for caller in [Some("billing"), Some("search"), None] {
        let mut req = get(addr, "/status/200");
        if let Some(caller) = caller {
            req.extensions_mut()
                .insert(Labeler::from(vec![KeyValue::new("app.caller", caller)]));
        }
        let res = client.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    t.wait_spans(3).await;
    let points = wait_points(&t, CLIENT_DURATION, 3).await;
    let mut callers: Vec<Option<Value>> = points
        .iter()
        .map(|p| attr(p.attributes(), "app.caller"))
        .collect();
    callers.sort_by_key(|c| c.as_ref().map(|v| v.to_string()));
    assert_eq!(callers, [None, Some(s("billing")), Some(s("search"))]);
}

// ------------------------------------------------------------------------------------
// 7. The same through reqwest

#[tokio::test]
async fn reqwest_labels_hooks_and_filter() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let middleware = middleware(&t)
        .on_request(|parts, a| {
            a.metric(KeyValue::new("app.via", "reqwest"));
            if let Some(v) = parts.headers.get("x-request-kind") {
                a.span(KeyValue::new("app.kind", v.to_str().unwrap().to_owned()));
            }
        })
        .on_response(|parts, a| {
            a.span(KeyValue::new(
                "app.status_class",
                i64::from(parts.status.as_u16() / 100),
            ));
            a.metric(KeyValue::new(
                "app.has_body_len",
                parts.headers.contains_key("x-request-body-len"),
            ));
        })
        .filter(|parts| parts.uri.path() != "/health")
        .build();
    let client = reqwest_client(middleware);

    let body = client
        .get(format!("http://{addr}/echo"))
        .header("x-request-kind", "report")
        .with_extension(Labeler::from(vec![KeyValue::new("app.caller", "billing")]))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let health = client
        .get(format!("http://{addr}/health"))
        .with_extension(Labeler::from(vec![KeyValue::new("app.caller", "probe")]))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(echoed(&health, "traceparent"), Vec::<String>::new());
    assert_eq!(echoed(&health, "x-request-kind"), Vec::<String>::new());

    // `/health` is not measured.
    let extra = [
        ("app.caller", s("billing")),
        ("app.via", s("reqwest")),
        ("app.has_body_len", Value::Bool(true)),
    ];
    let (span, points) = check_echo_call(&t, addr, &body, &extra).await;
    assert_eq!(points.len(), 1);
    assert_eq!(
        attr(&span.attributes, "url.full"),
        Some(s(&format!("http://{addr}/echo")))
    );
    assert_eq!(attr(&span.attributes, "app.caller"), Some(s("billing")));
    assert_eq!(attr(&span.attributes, "app.via"), Some(s("reqwest")));
    assert_eq!(attr(&span.attributes, "app.kind"), Some(s("report")));
    assert_eq!(
        attr(&span.attributes, "app.status_class"),
        Some(Value::I64(2))
    );
    assert_eq!(
        attr(&span.attributes, "app.has_body_len"),
        Some(Value::Bool(true))
    );
}

// ------------------------------------------------------------------------------------
// 8. Bounds

#[tokio::test]
async fn user_attributes_are_capped_cut_and_cannot_replace_conventions() {
    let t = Telemetry::new();
    let layer = t
        .server()
        .labels(true)
        .on_request(|parts, a| match parts.uri.path() {
            "/many" => {
                a.metric(KeyValue::new("app.hook", "first"));
            }
            p if p.starts_with("/real/") => {
                a.metric(KeyValue::new("http.route", "/evil-hook"));
                a.span(KeyValue::new("error.type", "hook"));
                a.metric(KeyValue::new("url.scheme", "ftp"));
                a.metric(KeyValue::new("app.hook_ok", 1));
            }
            _ => {}
        })
        .on_response(|_, a| {
            a.metric(KeyValue::new("http.response.status_code", 999));
            a.span(KeyValue::new("http.route", "/evil-response"));
            a.metric(KeyValue::new("network.protocol.version", "9"));
        })
        .build();
    let app = Router::new()
        .route(
            "/many",
            routing::get(|Extension(l): Extension<Labeler>| async move {
                for i in 0..40i64 {
                    l.add(KeyValue::new(format!("app.k{i}"), i));
                }
                "many"
            }),
        )
        .route(
            "/long",
            routing::get(|Extension(l): Extension<Labeler>| async move {
                l.add(KeyValue::new("app.long", "x".repeat(5000)));
                // 5001 bytes, a two-byte character across byte 2048.
                l.add(KeyValue::new("app.multi", format!("a{}", "é".repeat(2500))));
                "long"
            }),
        )
        .route(
            "/real/{id}",
            routing::get(|Extension(l): Extension<Labeler>| async move {
                l.add(KeyValue::new("http.route", "/evil"));
                l.add(KeyValue::new("error.type", "x"));
                l.add(KeyValue::new("http.response.status_code", 999));
                l.add(KeyValue::new("server.address", "evil.example"));
                l.add(KeyValue::new("app.ok", true));
                "real"
            }),
        )
        .layer(layer);
    let addr = serve_axum(app).await;
    for path in ["/many", "/long", "/real/7"] {
        let (parts, _, _) = send_from(addr, request("GET", path)).await;
        assert_eq!(parts.status, 200, "{path}");
    }
    let spans = t.wait_spans(3).await;
    let points = wait_points(&t, SERVER_DURATION, 3).await;
    assert_eq!(points.len(), 3);

    // The cap: 16 user attributes on the metrics, hook attributes first, then labels
    // in the order added.
    let many = point_with(&points, "http.route", &s("/many"));
    let mut want: Vec<String> = (0..15).map(|i| format!("app.k{i}")).collect();
    want.push("app.hook".into());
    want.sort();
    assert_eq!(user_keys(many.attributes()), want);
    assert_eq!(many.attributes().count(), 5 + 16);
    assert_eq!(attr(many.attributes(), "app.k14"), Some(Value::I64(14)));
    assert_eq!(
        typed_set(
            many.attributes()
                .filter(|kv| RESERVED.iter().any(|ns| kv.key.as_str().starts_with(ns)))
        ),
        expected_set(&server_metric_conventions("/many", 200))
    );
    // The span has (at least) the same ones.
    let many_span = span_with_path(&spans, "/many");
    for key in &want {
        assert_eq!(count_key(&many_span.attributes, key), 1, "{key}");
    }

    // Values cut at 2048 bytes, at a character boundary, on the span and the metrics.
    let long_point = point_with(&points, "http.route", &s("/long"));
    let long_span = span_with_path(&spans, "/long");
    for attrs in [
        long_point.attributes().cloned().collect::<Vec<_>>(),
        long_span.attributes.clone(),
    ] {
        let long = attr(&attrs, "app.long").unwrap().as_str().into_owned();
        assert_eq!(long, "x".repeat(2048));
        let multi = attr(&attrs, "app.multi").unwrap().as_str().into_owned();
        assert_eq!(multi.len(), 2047);
        assert!(format!("a{}", "é".repeat(2500)).starts_with(&multi));
    }

    // Collisions: the conventions stay, once, with their own values.
    let real = point_with(&points, "http.route", &s("/real/{id}"));
    let extra = [
        ("app.hook_ok", Value::I64(1)),
        ("app.ok", Value::Bool(true)),
    ];
    assert_server_point(real, "/real/{id}", 200, &extra);
    let real_span = span_with_path(&spans, "/real/7");
    assert_eq!(real_span.name, "GET /real/{id}");
    assert_eq!(real_span.status, Status::Unset);
    for (key, value) in [
        ("http.route", s("/real/{id}")),
        ("http.response.status_code", Value::I64(200)),
        ("url.scheme", s("http")),
        ("network.protocol.version", s("1.1")),
        ("server.address", s("127.0.0.1")),
    ] {
        assert_eq!(count_key(&real_span.attributes, key), 1, "{key}");
        assert_eq!(attr(&real_span.attributes, key), Some(value), "{key}");
    }
    assert_eq!(count_key(&real_span.attributes, "error.type"), 0);
    assert_eq!(
        attr(&real_span.attributes, "app.ok"),
        Some(Value::Bool(true))
    );
    assert_eq!(
        attr(&real_span.attributes, "app.hook_ok"),
        Some(Value::I64(1))
    );
}

#[tokio::test]
async fn client_label_cannot_replace_client_conventions() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let client = t
        .client_layer()
        .on_response(|_, a| {
            a.metric(KeyValue::new("error.type", "hooked"));
        })
        .build()
        .layer(client());
    let mut req = get(addr, "/status/404");
    req.extensions_mut().insert(Labeler::from(vec![
        KeyValue::new("error.type", "mine"),
        KeyValue::new("server.port", 1),
        KeyValue::new("http.response.status_code", 200),
        KeyValue::new("app.ok", "yes"),
    ]));
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 404);
    res.into_body().collect().await.unwrap();

    let span = only_span(&t).await;
    for (key, value) in [
        ("error.type", s("404")),
        ("server.port", Value::I64(addr.port().into())),
        ("http.response.status_code", Value::I64(404)),
        ("app.ok", s("yes")),
    ] {
        assert_eq!(count_key(&span.attributes, key), 1, "{key}");
        assert_eq!(attr(&span.attributes, key), Some(value), "{key}");
    }
    let points = wait_points(&t, CLIENT_DURATION, 1).await;
    let extra = [("error.type", s("404")), ("app.ok", s("yes"))];
    assert_client_point(&points[0], addr, 404, &extra);
}

// ------------------------------------------------------------------------------------
// 9. Hooks that panic

/// Serves `/p` behind a server layer with `active_requests` and what `hook` adds (a
/// panicking hook), sends two requests, and checks that each was answered and recorded
/// whole, with none of the panicking hook's attributes.
async fn assert_server_survives(hook: impl FnOnce(OtelLayerBuilder) -> OtelLayerBuilder) {
    let t = &Telemetry::new();
    let app = Router::new()
        .route("/p", routing::get(|| async { "fine" }))
        .layer(hook(t.server().active_requests(true)).build());
    let addr = serve_axum(app).await;
    for n in 1..=2u64 {
        let (parts, body, local) = send_from(addr, request("GET", "/p")).await;
        assert_eq!(parts.status, 200);
        assert_eq!(body, "fine");

        t.wait_spans(n as usize).await;
        let spans = t.settle_spans(n as usize).await;
        let span = spans
            .iter()
            .find(|sp| {
                attr(&sp.attributes, "network.peer.port") == Some(Value::I64(local.port().into()))
            })
            .expect("this request's span");
        assert_eq!(span.name, "GET /p");
        assert_eq!(span.status, Status::Unset);
        assert_eq!(
            typed_set(&span.attributes),
            expected_set(&[
                ("http.request.method", s("GET")),
                ("url.path", s("/p")),
                ("url.scheme", s("http")),
                ("server.address", s("127.0.0.1")),
                ("server.port", Value::I64(addr.port().into())),
                ("client.address", s("127.0.0.1")),
                ("network.peer.address", s("127.0.0.1")),
                ("network.peer.port", Value::I64(local.port().into())),
                ("network.protocol.version", s("1.1")),
                ("http.route", s("/p")),
                ("http.response.status_code", Value::I64(200)),
            ])
        );
        let points = wait_points(t, SERVER_DURATION, n).await;
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].count(), n);
        assert_server_point(&points[0], "/p", 200, &[]);
        assert!(!none_active(t, SERVER_ACTIVE).is_empty());
    }
}

#[tokio::test]
async fn panicking_server_request_hook_loses_nothing() {
    assert_server_survives(|b| {
        b.on_request(|_, a| {
            a.metric(KeyValue::new("app.before_panic", 1));
            a.span(KeyValue::new("app.span_before_panic", 1));
            panic!("hook bug");
        })
    })
    .await;
}

#[tokio::test]
async fn panicking_server_response_hook_loses_nothing() {
    assert_server_survives(|b| {
        b.labels(false).on_response(|_, a| {
            a.metric(KeyValue::new("app.before_panic", 1));
            panic!("response hook bug");
        })
    })
    .await;
}

/// A GET `/echo` through a client layer with `active_requests` and what `hook` adds (a
/// panicking hook): answered, and recorded whole with none of the hook's attributes.
async fn assert_client_survives(
    hook: impl FnOnce(OtelClientLayerBuilder) -> OtelClientLayerBuilder,
) {
    let t = &Telemetry::new();
    let addr = echo_server().await;
    let client = hook(t.client_layer().active_requests(true))
        .build()
        .layer(client());
    let res = client.oneshot(get(addr, "/echo")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();

    let (span, points) = check_echo_call(t, addr, &body, &[]).await;
    assert_eq!(span.status, Status::Unset);
    assert_eq!(user_keys(&span.attributes), Vec::<String>::new());
    assert_eq!(
        attr(&span.attributes, "http.response.status_code"),
        Some(Value::I64(200))
    );
    assert_eq!(points.len(), 1);
    assert!(!none_active(t, CLIENT_ACTIVE).is_empty());
}

#[tokio::test]
async fn panicking_client_request_hook_loses_nothing() {
    assert_client_survives(|b| {
        b.on_request(|_, a| {
            a.metric(KeyValue::new("app.before_panic", 1));
            panic!("client hook bug");
        })
    })
    .await;
}

#[tokio::test]
async fn panicking_client_response_hook_loses_nothing() {
    assert_client_survives(|b| {
        b.on_response(|_, a| {
            a.span(KeyValue::new("app.before_panic", 1));
            panic!("client response hook bug");
        })
    })
    .await;
}

#[tokio::test]
async fn panicking_reqwest_request_hook_loses_nothing() {
    let t = Telemetry::new();
    let addr = echo_server().await;
    let middleware = middleware(&t)
        .active_requests(true)
        .on_request(|_, _| panic!("reqwest hook bug"))
        .build();
    let res = reqwest_client(middleware)
        .get(format!("http://{addr}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    check_echo_call(&t, addr, &body, &[]).await;
    none_active(&t, CLIENT_ACTIVE);
}
