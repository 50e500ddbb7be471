//! hyper-util's client wrapped in `OtelClientLayer`, calling a local server.
//!
//! ```text
//! cargo run --example hyper_client
//! ```
//!
//! The example starts a plain hyper server on 127.0.0.1 (a random port), sends it two
//! requests through the instrumented client, and prints the CLIENT spans and the
//! `http.client.request.duration` data points the SDK received. It needs no external
//! service and exits by itself. A real application would install an OTLP exporter
//! instead of the in-memory one used here to print.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::{ServiceBuilder, ServiceExt};
use tower_otel_http::client::{OtelClientLayer, UrlTemplate};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server: answers `/users/...` with the `traceparent` it received, anything else
/// with 404.
async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if !req.uri().path().starts_with("/users/") {
        let mut res = Response::new(Full::new(Bytes::from_static(b"not found")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        return Ok(res);
    }
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_owned();
    Ok(Response::new(Full::new(Bytes::from(format!(
        "server saw traceparent: {traceparent}"
    )))))
}

async fn start_server() -> Result<std::net::SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handle);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn print_span(span: &SpanData) {
    println!(
        "span {:?} kind={:?} trace_id={} span_id={} status={:?}",
        span.name,
        span.span_kind,
        span.span_context.trace_id(),
        span.span_context.span_id(),
        span.status,
    );
    for kv in &span.attributes {
        println!("    {} = {}", kv.key, kv.value);
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The SDK, exporting to memory so that the example can print what was recorded.
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(metrics.clone())
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();

    let addr = start_server().await?;

    // The instrumented client.
    let client = ServiceBuilder::new()
        .layer(
            OtelClientLayer::builder()
                .tracer_provider(&tracer_provider)
                .meter_provider(&meter_provider)
                .build(),
        )
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    // A request tagged with its URL template: the span is named `GET /users/{id}`.
    let mut req = Request::get(format!("http://{addr}/users/42")).body(Full::default())?;
    req.extensions_mut()
        .insert(UrlTemplate::from_static("/users/{id}"));
    let res = client.clone().oneshot(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!(
        "GET /users/42 -> {status}: {}",
        String::from_utf8_lossy(&body)
    );

    // A 404: the CLIENT span's status is Error, with `error.type` "404".
    let req = Request::get(format!("http://{addr}/missing")).body(Full::default())?;
    let res = client.oneshot(req).await?;
    let status = res.status();
    // The span ends with the response body: read it (or drop it).
    res.into_body().collect().await?;
    println!("GET /missing -> {status}");

    println!();
    for span in spans.get_finished_spans()? {
        print_span(&span);
    }

    meter_provider.force_flush()?;
    for resource_metrics in metrics.get_finished_metrics()? {
        for metric in resource_metrics.scope_metrics().flat_map(|s| s.metrics()) {
            println!("metric {} ({})", metric.name(), metric.unit());
            if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                for point in h.data_points() {
                    let attrs: Vec<String> = point
                        .attributes()
                        .map(|kv| format!("{}={}", kv.key, kv.value))
                        .collect();
                    println!(
                        "    count={} sum={:.4}s {{{}}}",
                        point.count(),
                        point.sum(),
                        attrs.join(", ")
                    );
                }
            }
        }
    }

    tracer_provider.shutdown()?;
    meter_provider.shutdown()?;
    Ok(())
}
