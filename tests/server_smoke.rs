mod support;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::Value;
use support::*;
use tower::ServiceBuilder;
use tower_otel_http::HttpRouteLayer;

#[tokio::test]
async fn smoke() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().build())
        .layer(HttpRouteLayer::new("/users/{id}"))
        .service(tower::service_fn(
            |req: Request<hyper::body::Incoming>| async move {
                let status = if req.uri().path().ends_with("500") {
                    500
                } else {
                    200
                };
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from("hi")))
                        .unwrap(),
                )
            },
        ));
    let addr = serve(svc).await;
    let mut req = get(addr, "/users/42?q=1&sig=secret");
    req.headers_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    req.headers_mut()
        .insert("user-agent", "smoke/1".parse().unwrap());
    let (parts, body) = send(req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "hi");
    let spans = t.wait_spans(1).await;
    let s = &spans[0];
    println!("{s:#?}");
    assert_eq!(s.name, "GET /users/{id}");
    assert_eq!(s.span_kind, SpanKind::Server);
    assert_eq!(s.status, Status::Unset);
    assert_eq!(
        s.span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(s.parent_span_id.to_string(), "b7ad6b7169203331");
    assert_eq!(
        attr(&s.attributes, "url.query"),
        Some(Value::from("q=1&sig=REDACTED"))
    );
    let points = t.f64_histogram("http.server.request.duration");
    println!("{points:#?}");
    assert_eq!(points.len(), 1);
    let d = s
        .end_time
        .duration_since(s.start_time)
        .unwrap()
        .as_secs_f64();
    assert_eq!(points[0].sum(), d);
}
