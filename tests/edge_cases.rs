//! Edge cases found in review: client-controlled schemes, stale trace headers, untrusted
//! baggage on public endpoints, empty routes, `into_inner`, zero-sized providers, and
//! panics in the client's `call` or in a span-name callback.

mod support;

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::{Context, InstrumentationScope, Value};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::BaggagePropagator;
use support::*;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_otel_http::propagation::TraceContextPropagator;
use tower_otel_http::{HttpRoute, HttpRouteLayer, OtelClientLayer, OtelLayer};

fn ok() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

fn run<S>(svc: S, req: Request<Full<Bytes>>) -> Response<Bytes>
where
    S: tower::Service<Request<Full<Bytes>>, Error = Infallible>,
    S::Response: Into<Response<tower_otel_http::ResponseBody<Full<Bytes>>>>,
{
    let res: Response<_> = svc.oneshot(req).now_or_never().unwrap().unwrap().into();
    let (parts, body) = res.into_parts();
    Response::from_parts(
        parts,
        body.collect().now_or_never().unwrap().unwrap().to_bytes(),
    )
}

fn req(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

/// The `url.scheme` of every duration series, sorted (the SDK's order is not fixed).
fn scheme_of_metrics(t: &Telemetry) -> Vec<Value> {
    let mut schemes: Vec<Value> = t
        .f64_histogram("http.server.request.duration")
        .iter()
        .map(|p| attr(p.attributes(), "url.scheme").unwrap())
        .collect();
    schemes.sort_by_key(|v| v.to_string());
    schemes
}

#[test]
fn a_client_chosen_scheme_never_reaches_url_scheme() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    for i in 0..20 {
        run(svc.clone(), req(&format!("attacker{i}://x/")));
    }
    run(svc, req("HTTPS://x/"));
    assert_eq!(
        scheme_of_metrics(&t),
        vec![Value::from("http"), Value::from("https")],
        "one series for every made-up scheme"
    );
    for span in t.finished_spans() {
        let scheme = attr(&span.attributes, "url.scheme").unwrap();
        assert!(scheme == Value::from("http") || scheme == Value::from("https"));
    }
}

#[test]
fn the_configured_scheme_wins_over_the_request() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().scheme("https").build())
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    run(svc.clone(), req("http://x/"));
    run(svc, req("/origin-form"));
    assert_eq!(scheme_of_metrics(&t), vec![Value::from("https")]);
}

#[test]
fn a_new_traceparent_never_travels_with_a_stale_tracestate() {
    let t = Telemetry::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(t.client_layer().build())
        .service_fn(move |r: Request<Full<Bytes>>| {
            *seen2.lock().unwrap() = Some(r.headers().clone());
            async { Ok::<_, Infallible>(ok()) }
        });
    let mut r = req("http://api.local/x");
    r.headers_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    r.headers_mut()
        .insert("tracestate", "othervendor=secret".parse().unwrap());
    run(svc, r);
    let headers = seen.lock().unwrap().take().unwrap();
    let span = &t.finished_spans()[0];
    assert_eq!(
        headers.get("traceparent").unwrap(),
        &format!(
            "00-{}-{}-01",
            span.span_context.trace_id(),
            span.span_context.span_id()
        )
    );
    assert!(headers.get("tracestate").is_none(), "{headers:?}");
}

#[test]
fn with_no_span_to_inject_the_callers_headers_are_left_alone() {
    // A global propagator but no tracer: a proxy that copies trace headers by hand.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(
            OtelClientLayer::builder()
                .traces(false)
                .metrics(false)
                .propagator(TraceContextPropagator::new())
                .build(),
        )
        .service_fn(move |r: Request<Full<Bytes>>| {
            *seen2.lock().unwrap() = Some(r.headers().clone());
            async { Ok::<_, Infallible>(ok()) }
        });
    let mut r = req("http://api.local/x");
    r.headers_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    r.headers_mut().insert("tracestate", "v=1".parse().unwrap());
    run(svc, r);
    let headers = seen.lock().unwrap().take().unwrap();
    assert_eq!(
        headers.get("traceparent").unwrap(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(headers.get("tracestate").unwrap(), "v=1");
}

#[test]
fn a_public_endpoint_drops_the_callers_baggage() {
    let t = Telemetry::new();
    let layer = |public: bool| {
        t.server()
            .public_endpoint(public)
            .propagator(TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ]))
            .build()
    };
    let handler = |_req: Request<Full<Bytes>>| async {
        let role = Context::current()
            .baggage()
            .get("role")
            .map(|v| v.to_string())
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(role))))
    };
    for (public, expected) in [(false, "admin"), (true, "")] {
        let svc = ServiceBuilder::new()
            .layer(layer(public))
            .service_fn(handler);
        let mut r = req("/x");
        r.headers_mut().insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        r.headers_mut()
            .insert("baggage", "role=admin".parse().unwrap());
        assert_eq!(run(svc, r).body(), expected, "public = {public}");
    }
}

#[test]
fn an_empty_route_is_no_route() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .layer(HttpRouteLayer::new(""))
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    let mut r = req("/x");
    r.extensions_mut().insert(HttpRoute::from_static(""));
    run(svc, r);
    let span = &t.finished_spans()[0];
    assert_eq!(span.name, "GET");
    assert!(attr(&span.attributes, "http.route").is_none());
}

#[test]
fn into_inner_ends_the_span_without_an_error() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    let res = svc.oneshot(req("/x")).now_or_never().unwrap().unwrap();
    let inner: Full<Bytes> = res.into_body().into_inner();
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 1);
    assert!(attr(&spans[0].attributes, "error.type").is_none());
    assert_eq!(spans[0].status, opentelemetry::trace::Status::Unset);
    drop(inner);
    assert_eq!(t.finished_spans().len(), 1);
}

static SDK: OnceLock<SdkMeterProvider> = OnceLock::new();

/// A zero-sized provider that forwards to a static SDK provider.
struct Forwarding;

impl MeterProvider for Forwarding {
    fn meter_with_scope(&self, scope: InstrumentationScope) -> Meter {
        SDK.get().unwrap().meter_with_scope(scope)
    }
}

#[test]
fn an_explicit_zero_sized_meter_provider_is_used() {
    let t = Telemetry::new();
    SDK.set(t.meter_provider.clone()).ok().unwrap();
    let svc = ServiceBuilder::new()
        .layer(OtelLayer::builder().meter_provider(&Forwarding).build())
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    run(svc, req("/x"));
    assert_eq!(t.f64_histogram("http.server.request.duration").len(), 1);
}

#[derive(Clone)]
struct PanicsInCall;

impl Service<Request<Full<Bytes>>> for PanicsInCall {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Full<Bytes>>) -> Self::Future {
        panic!("call panicked (expected by the test)")
    }
}

#[test]
fn a_panic_in_the_client_call_ends_the_request_and_active_requests_returns_to_zero() {
    let t = Telemetry::new();
    let mut svc = ServiceBuilder::new()
        .layer(t.client_layer().active_requests(true).build())
        .service(PanicsInCall);
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| svc.call(req("http://api.local/x"))));
    assert!(caught.is_err());
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        attr(&spans[0].attributes, "error.type"),
        Some(Value::from("panic"))
    );
    let active = t.i64_sum("http.client.active_requests");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].value(), 0);
    assert_eq!(
        t.f64_histogram("http.client.request.duration")[0].count(),
        1
    );
}

#[test]
fn a_panicking_span_name_callback_still_ends_the_request() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(
            t.server()
                .active_requests(true)
                .span_name(|method, route| match route {
                    Some(_) => panic!("span name callback panicked (expected by the test)"),
                    None => method.to_owned(),
                })
                .build(),
        )
        .layer(HttpRouteLayer::new("/users/{id}"))
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    let fut = svc.oneshot(req("/users/1"));
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| fut.now_or_never()));
    assert!(caught.is_err());
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        attr(&spans[0].attributes, "error.type"),
        Some(Value::from("panic"))
    );
    let active = t.i64_sum("http.server.active_requests");
    assert_eq!(active[0].value(), 0);
    assert_eq!(
        t.f64_histogram("http.server.request.duration")[0].count(),
        1
    );
}

#[test]
fn sensitive_query_keys_replace_the_default_list_on_both_sides() {
    let t = Telemetry::new();
    let server = ServiceBuilder::new()
        .layer(t.server().sensitive_query_keys(["token"]).build())
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    run(server, req("/x?token=t0p&sig=kept"));
    let client = ServiceBuilder::new()
        .layer(t.client_layer().sensitive_query_keys(["token"]).build())
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    run(client, req("http://api.local/x?token=t0p&sig=kept"));
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 2);
    let server = spans
        .iter()
        .find(|s| s.span_kind == opentelemetry::trace::SpanKind::Server)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.span_kind == opentelemetry::trace::SpanKind::Client)
        .unwrap();
    assert_eq!(
        attr(&server.attributes, "url.query"),
        Some(Value::from("token=REDACTED&sig=kept"))
    );
    assert_eq!(
        attr(&client.attributes, "url.full"),
        Some(Value::from("http://api.local/x?token=REDACTED&sig=kept"))
    );
}

#[test]
fn public_endpoint_fn_decides_per_request() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(
            t.server()
                .public_endpoint_fn(|parts| parts.uri.path().starts_with("/public"))
                .build(),
        )
        .service_fn(|_| async { Ok::<_, Infallible>(ok()) });
    for path in ["/public/x", "/internal/x"] {
        let mut r = req(path);
        r.headers_mut().insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        run(svc.clone(), r);
    }
    let spans = t.finished_spans();
    let public = span_with_path(&spans, "/public/x");
    let internal = span_with_path(&spans, "/internal/x");
    assert_ne!(
        public.span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(
        public.links.len(),
        1,
        "a link to the caller instead of a parent"
    );
    assert_eq!(
        internal.span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(internal.parent_span_id.to_string(), "b7ad6b7169203331");
    assert_eq!(internal.links.len(), 0);
}

#[test]
fn the_client_captures_configured_headers_only() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(
            t.client_layer()
                .request_headers(["x-request-id"])
                .response_headers(["x-served-by"])
                .build(),
        )
        .service_fn(|_| async {
            let mut res = ok();
            res.headers_mut()
                .append("x-served-by", "a".parse().unwrap());
            res.headers_mut()
                .append("x-served-by", "b".parse().unwrap());
            res.headers_mut().insert("x-secret", "s".parse().unwrap());
            Ok::<_, Infallible>(res)
        });
    let mut r = req("http://api.local/x");
    r.headers_mut()
        .insert("x-request-id", "42".parse().unwrap());
    r.headers_mut()
        .insert("authorization", "Bearer s3cr3t".parse().unwrap());
    run(svc, r);
    let span = &t.finished_spans()[0];
    assert_eq!(
        attr(&span.attributes, "http.request.header.x-request-id"),
        Some(Value::Array(opentelemetry::Array::String(
            vec!["42".into()]
        )))
    );
    assert_eq!(
        attr(&span.attributes, "http.response.header.x-served-by"),
        Some(Value::Array(opentelemetry::Array::String(vec![
            "a".into(),
            "b".into()
        ])))
    );
    for kv in &span.attributes {
        let key = kv.key.as_str();
        assert!(
            !key.contains("authorization") && !key.contains("x-secret"),
            "{key}"
        );
    }
}
