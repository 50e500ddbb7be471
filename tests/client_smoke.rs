mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::Value;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_otel_http::client::OtelClientLayer;

#[tokio::test]
async fn client_span_is_parent_of_server_span() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .service(tower::service_fn(
            |req: Request<hyper::body::Incoming>| async move {
                let tp = req
                    .headers()
                    .get("traceparent")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                let status = if req.uri().path() == "/missing" {
                    404
                } else {
                    200
                };
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(tp)))
                        .unwrap(),
                )
            },
        ));
    let addr = serve(svc).await;
    let client_layer = OtelClientLayer::builder()
        .tracer_provider(&t.tracer_provider)
        .meter_provider(&t.meter_provider)
        .build();
    let client = ServiceBuilder::new().layer(client_layer).service(client());

    let res = client
        .clone()
        .oneshot(get(addr, "/ok?sig=x"))
        .await
        .unwrap();
    let seen_tp = res.into_body().collect().await.unwrap().to_bytes();
    let res = client.oneshot(get(addr, "/missing")).await.unwrap();
    assert_eq!(res.status(), 404);
    drop(res);

    let spans = t.wait_spans(4).await;
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(clients.len(), 2);
    assert_eq!(servers.len(), 2);
    let c = clients
        .iter()
        .find(|s| attr(&s.attributes, "http.response.status_code") == Some(Value::I64(200)))
        .unwrap();
    let srv = servers
        .iter()
        .find(|s| s.span_context.trace_id() == c.span_context.trace_id())
        .unwrap();
    assert_eq!(srv.parent_span_id, c.span_context.span_id());
    assert_eq!(
        std::str::from_utf8(&seen_tp).unwrap(),
        format!(
            "00-{}-{}-01",
            c.span_context.trace_id(),
            c.span_context.span_id()
        )
    );
    assert_eq!(c.name, "GET");
    assert_eq!(
        attr(&c.attributes, "url.full"),
        Some(Value::from(format!("http://{addr}/ok?sig=REDACTED")))
    );
    assert_eq!(
        attr(&c.attributes, "server.port"),
        Some(Value::I64(addr.port().into()))
    );
    let c404 = clients
        .iter()
        .find(|s| attr(&s.attributes, "http.response.status_code") == Some(Value::I64(404)))
        .unwrap();
    assert!(matches!(c404.status, Status::Error { .. }));
    assert_eq!(
        attr(&c404.attributes, "error.type"),
        Some(Value::from("404"))
    );
    let points = t.f64_histogram("http.client.request.duration");
    assert_eq!(points.iter().map(|p| p.count()).sum::<u64>(), 2);
}
