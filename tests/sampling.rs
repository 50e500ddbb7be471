//! What the sampler decides, and what it sees. With an unsampled remote parent the layer
//! asks the sampler before building the attributes.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::Context;
use opentelemetry_sdk::trace::Sampler;
use support::*;
use tower::{ServiceBuilder, ServiceExt};

const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

fn req() -> Request<Full<Bytes>> {
    Request::get("http://svc.local/users/42?q=1")
        .header("traceparent", UNSAMPLED)
        .header("user-agent", "t/1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The handler answers with the trace context it runs in: `trace_id span_id sampled`.
async fn handler(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    let body = format!("{} {} {}", sc.trace_id(), sc.span_id(), sc.is_sampled());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

async fn run(t: &Telemetry) -> String {
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service_fn(handler);
    let res = svc.oneshot(req()).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn unsampled_parent_records_no_span_but_propagates_a_new_span_id_and_still_measures() {
    let t = Telemetry::with_tracer(|b| {
        b.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
    });
    let seen = run(&t).await;
    let mut parts = seen.split(' ');
    assert_eq!(
        parts.next(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "same trace"
    );
    let span_id = parts.next().unwrap();
    assert_ne!(
        span_id, "00f067aa0ba902b7",
        "the server's own (non-recording) span id"
    );
    assert_ne!(span_id, "0000000000000000");
    assert_eq!(parts.next(), Some("false"));
    assert!(t.finished_spans().is_empty(), "nothing recorded");
    let points = t.f64_histogram("http.server.request.duration");
    assert_eq!(points.len(), 1, "metrics do not depend on sampling");
    assert_eq!(points[0].count(), 1);
}

#[tokio::test]
async fn sampler_overriding_an_unsampled_parent_still_gets_every_attribute() {
    let recorder = RecordingSampler::default();
    let t = Telemetry::with_tracer(|b| b.with_sampler(recorder.clone()));
    run(&t).await;
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    for key in [
        "http.request.method",
        "url.path",
        "url.query",
        "url.scheme",
        "server.address",
        "user_agent.original",
    ] {
        assert!(
            attr(&span.attributes, key).is_some(),
            "{key} missing: {:?}",
            span.attributes
        );
    }
    // The sampler was asked before the attributes were built.
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].1.is_empty(), "{:?}", seen[0].1);
}

#[tokio::test]
async fn sampled_and_absent_parents_give_the_sampler_every_attribute_at_start() {
    let recorder = RecordingSampler::default();
    let t = Telemetry::with_tracer(|b| b.with_sampler(recorder.clone()));
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service_fn(handler);
    let mut r = req();
    r.headers_mut().remove("traceparent");
    svc.oneshot(r).await.unwrap();
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1);
    let keys: Vec<_> = seen[0]
        .1
        .iter()
        .map(|kv| kv.key.as_str().to_owned())
        .collect();
    for key in [
        "http.request.method",
        "url.path",
        "url.query",
        "url.scheme",
        "server.address",
        "user_agent.original",
    ] {
        assert!(
            keys.iter().any(|k| k == key),
            "{key} not seen at start: {keys:?}"
        );
    }
}

/// The client inside an unsampled trace: no span recorded, the trace still propagated
/// with a new parent id; a sampler that records anyway still gets every attribute.
#[tokio::test]
async fn client_in_an_unsampled_trace() {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    let parent = Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    ));
    let echo_traceparent = |r: Request<Full<Bytes>>| async move {
        let tp = r.headers()["traceparent"].to_str().unwrap().to_owned();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(tp))))
    };
    let call = |t: &Telemetry| {
        let svc = ServiceBuilder::new()
            .layer(t.client_layer().build())
            .service_fn(echo_traceparent);
        let _g = parent.clone().attach();
        let fut = svc.oneshot(
            Request::get("http://api.local/x?sig=s")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        );
        futures_util::FutureExt::now_or_never(fut).unwrap().unwrap()
    };

    let t = Telemetry::with_tracer(|b| {
        b.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
    });
    let res = call(&t);
    let tp =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(tp.ends_with("-00"), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "a new parent id: {tp}");
    assert!(t.finished_spans().is_empty());
    assert_eq!(
        t.f64_histogram("http.client.request.duration")[0].count(),
        1
    );

    let recorder = RecordingSampler::default();
    let t = Telemetry::with_tracer(|b| b.with_sampler(recorder.clone()));
    drop(call(&t));
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        attr(&spans[0].attributes, "url.full"),
        Some(opentelemetry::Value::from(
            "http://api.local/x?sig=REDACTED"
        ))
    );
    assert!(
        recorder.seen()[0].1.is_empty(),
        "asked before the attributes were built"
    );
}
