//! W3C trace context across real sockets: caller → server A (`OtelLayer`) → its handler
//! calls server B through `OtelClientLayer` → B sees the same trace, the client span as
//! parent, the random flag and the caller's `tracestate`, unchanged.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::SpanKind;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_otel_http::client::OtelClientLayer;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Server B: echoes the trace headers it received, one per line, `-` when absent.
async fn echo(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let h = |name: &str| {
        let values: Vec<_> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        if values.is_empty() {
            "-".to_owned()
        } else {
            values.join("|")
        }
    };
    let body = format!("{}\n{}", h("traceparent"), h("tracestate"));
    Ok(Response::new(Full::new(Bytes::from(body))))
}

async fn run(traceparent: &'static str, tracestate: Option<&'static str>) -> (Telemetry, String) {
    let t = Telemetry::new();
    let b = serve(
        ServiceBuilder::new()
            .layer(t.server().build())
            .service_fn(echo),
    )
    .await;
    let client_layer = OtelClientLayer::builder()
        .tracer_provider(&t.tracer_provider)
        .meter_provider(&t.meter_provider)
        .build();
    let a = serve(ServiceBuilder::new().layer(t.server().build()).service_fn(
        move |_req: Request<hyper::body::Incoming>| {
            let client = ServiceBuilder::new()
                .layer(client_layer.clone())
                .service(client());
            async move {
                let res = client.oneshot(get(b, "/downstream")).await.unwrap();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            }
        },
    ))
    .await;

    let mut req = get(a, "/upstream");
    req.headers_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    if let Some(ts) = tracestate {
        req.headers_mut().insert("tracestate", ts.parse().unwrap());
    }
    let (_, body) = send(req).await;
    let seen = String::from_utf8(body.to_vec()).unwrap();
    (t, seen)
}

#[tokio::test]
async fn downstream_sees_same_trace_client_parent_random_flag_and_tracestate() {
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,a1@b-c=x y";
    let (t, seen) = run(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        Some(tracestate),
    )
    .await;
    let spans = t.wait_spans(3).await;
    let client = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .unwrap();
    let (tp, ts) = seen.split_once('\n').unwrap();
    assert_eq!(
        tp,
        format!("00-{TRACE_ID}-{}-03", client.span_context.span_id()),
        "same trace id, client span as parent, sampled + random flags kept"
    );
    assert_eq!(ts, tracestate, "tracestate forwarded unchanged");

    // And the spans form one trace: caller → A → client → B.
    let a = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server && s.parent_span_id.to_string() == CALLER_SPAN)
        .expect("server A is the caller's child");
    assert_eq!(client.parent_span_id, a.span_context.span_id());
    let b = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Server && s.parent_span_id == client.span_context.span_id()
        })
        .expect("server B is the client span's child");
    for s in [a, client, b] {
        assert_eq!(s.span_context.trace_id().to_string(), TRACE_ID);
    }
}

#[tokio::test]
async fn unsampled_random_parent_keeps_its_flags_downstream() {
    let (_t, seen) = run(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02",
        None,
    )
    .await;
    let (tp, ts) = seen.split_once('\n').unwrap();
    assert!(tp.starts_with(&format!("00-{TRACE_ID}-")), "{tp}");
    assert!(tp.ends_with("-02"), "random flag kept, not sampled: {tp}");
    assert!(!tp.contains(CALLER_SPAN), "a new parent id: {tp}");
    assert_eq!(ts, "-", "no tracestate header when it is empty");
}

#[tokio::test]
async fn invalid_traceparent_restarts_and_drops_tracestate() {
    let (t, seen) = run(
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        Some("congo=t61rcWkgMzE"),
    )
    .await;
    let spans = t.wait_spans(3).await;
    let (tp, ts) = seen.split_once('\n').unwrap();
    assert!(
        !tp.to_ascii_lowercase().contains(TRACE_ID),
        "restarted: {tp}"
    );
    assert_eq!(ts, "-", "tracestate ignored with an invalid traceparent");
    let trace = spans[0].span_context.trace_id();
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
}
