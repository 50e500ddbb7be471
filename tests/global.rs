//! `OtelLayer::new()` / `OtelClientLayer::new()` with the global providers. One test in
//! its own binary: it installs globals, in order.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_otel_http::{OtelClientLayer, OtelLayer};

fn echo_headers(req: &Request<Full<Bytes>>) -> Response<Full<Bytes>> {
    let tp = req
        .headers()
        .get("traceparent")
        .map(|v| v.to_str().unwrap().to_owned());
    let bg = req
        .headers()
        .get("baggage")
        .map(|v| v.to_str().unwrap().to_owned());
    Response::new(Full::new(Bytes::from(format!("{tp:?}|{bg:?}"))))
}

async fn call<S>(svc: S, req: Request<Full<Bytes>>) -> String
where
    S: tower::Service<Request<Full<Bytes>>, Error = Infallible>,
    S::Response: Into<Response<tower_otel_http::ResponseBody<Full<Bytes>>>>,
{
    let res: Response<_> = svc.oneshot(req).await.unwrap().into();
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn req(traceparent: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get("http://svc.local/x");
    if let Some(tp) = traceparent {
        b = b.header("traceparent", tp);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn global_providers_in_order() {
    let inner = tower::service_fn(|r: Request<Full<Bytes>>| async move {
        Ok::<_, Infallible>(echo_headers(&r))
    });

    // 1. Nothing installed: the layers do nothing, inject nothing.
    let client = ServiceBuilder::new()
        .layer(OtelClientLayer::new())
        .service(inner);
    assert_eq!(call(client, req(None)).await, "None|None");
    let server = ServiceBuilder::new().layer(OtelLayer::new()).service(inner);
    assert_eq!(call(server, req(None)).await, "None|None");

    // 2. SDK installed as the globals; no propagator: ours is used.
    let t = Telemetry::new();
    global::set_tracer_provider(t.tracer_provider.clone());
    global::set_meter_provider(t.meter_provider.clone());
    let server = ServiceBuilder::new().layer(OtelLayer::new()).service(inner);
    let client = ServiceBuilder::new()
        .layer(OtelClientLayer::new())
        .service(inner);
    // Building the layers (and their no-op probes) exported nothing.
    assert!(t.finished_spans().is_empty(), "{:?}", t.finished_spans());
    call(
        server,
        req(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )),
    )
    .await;
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0].span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(t.f64_histogram("http.server.request.duration").len(), 1);
    let seen = call(client, req(None)).await;
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(
        seen,
        format!(
            "Some(\"00-{}-{}-01\")|None",
            spans[1].span_context.trace_id(),
            spans[1].span_context.span_id()
        )
    );

    // 3. A composite propagator with Baggage installed: the layers use it.
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    let client = ServiceBuilder::new()
        .layer(OtelClientLayer::new())
        .service(inner);
    let cx = Context::current_with_baggage([KeyValue::new("tenant", "acme")]);
    let _g = cx.attach();
    let seen = call(client, req(None)).await;
    assert!(seen.ends_with("|Some(\"tenant=acme\")"), "{seen}");

    // 4. OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS replaces the known methods (read when
    //    a layer is built; this binary has no other test to race with).
    std::env::set_var("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET, PROPFIND");
    t.spans.reset();
    let server = ServiceBuilder::new().layer(OtelLayer::new()).service(inner);
    let client = ServiceBuilder::new()
        .layer(OtelClientLayer::new())
        .service(inner);
    std::env::remove_var("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS");
    let method = |m: &str| {
        Request::builder()
            .method(m)
            .uri("http://svc.local/x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    call(server.clone(), method("PROPFIND")).await;
    call(server, method("POST")).await;
    call(client, method("PROPFIND")).await;
    let methods: Vec<String> = t
        .finished_spans()
        .iter()
        .map(|s| {
            attr(&s.attributes, "http.request.method")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(methods, ["PROPFIND", "_OTHER", "PROPFIND"]);
}
