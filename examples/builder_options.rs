//! The options of `OtelLayer::builder()`, each shown by a request.
//!
//! ```text
//! cargo run --example builder_options
//! ```
//!
//! - explicit tracer and meter providers (no globals);
//! - `filter`: `/health` gets no span and no metrics;
//! - `public_endpoint(true)`: an incoming `traceparent` starts a new trace, linked to the
//!   caller's span instead of joining its trace;
//! - `request_headers` / `response_headers`: headers captured as span attributes;
//! - `active_requests(true)`: the `http.server.active_requests` up-down counter, read here
//!   while a slow request is in flight.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tower_otel_http::{HttpRouteLayer, OtelLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The caller's span in the `traceparent` sent to the public endpoint.
const CALLER_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let resource = Resource::builder()
        .with_service_name("builder-options")
        .build();
    let spans = InMemorySpanExporter::default();
    let metrics = InMemoryMetricExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_simple_exporter(spans.clone())
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();

    let layer = OtelLayer::builder()
        .tracer_provider(&tracer_provider)
        .meter_provider(&meter_provider)
        .filter(|parts| parts.uri.path() != "/health")
        .public_endpoint(true)
        .request_headers(["x-request-id"])
        .response_headers(["content-type"])
        .active_requests(true)
        .build();

    let app = Router::new();
    let app = route(app, "/health", get(|| async { "ok" }));
    let app = route(
        app,
        "/orders/{id}",
        get(|| async { ([(CONTENT_TYPE, "application/json")], r#"{"id":1}"#) }),
    );
    let app = route(
        app,
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            "done"
        }),
    );
    let app = app.layer(layer);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    get_path(addr, "/health", &[]).await?;
    get_path(
        addr,
        "/orders/1",
        &[
            ("x-request-id", "req-0001"),
            ("traceparent", CALLER_TRACEPARENT),
        ],
    )
    .await?;

    // A slow request, and a look at the active-requests counter while it runs.
    let slow = tokio::spawn(get_path(addr, "/slow", &[]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!(
        "  while /slow runs: http.server.active_requests = {}",
        active_requests(&meter_provider, &metrics).await?
    );
    slow.await??;
    println!(
        "  after it:         http.server.active_requests = {}",
        active_requests(&meter_provider, &metrics).await?
    );

    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("\nspans (none for /health: it was filtered out):");
    for span in spans.get_finished_spans()? {
        let parent = if span.parent_span_id == opentelemetry::trace::SpanId::INVALID {
            "none: a new trace".to_string()
        } else {
            span.parent_span_id.to_string()
        };
        println!(
            "\n  {}  trace {}  parent {parent}",
            span.name,
            span.span_context.trace_id(),
        );
        for kv in &span.attributes {
            let key = kv.key.as_str();
            if key.starts_with("http.") || key == "url.path" {
                println!("    {key} = {}", kv.value);
            }
        }
        for link in span.links.iter() {
            println!(
                "    link -> trace {} span {} (the caller's, from traceparent)",
                link.span_context.trace_id(),
                link.span_context.span_id()
            );
        }
    }

    meter_provider.force_flush()?;
    println!("\nhttp.server.request.duration, count per route (no /health):");
    if let Some(last) = metrics.get_finished_metrics()?.last() {
        for metric in last.scope_metrics().flat_map(|s| s.metrics()) {
            if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                if metric.name() != "http.server.request.duration" {
                    continue;
                }
                for point in h.data_points() {
                    let route = point
                        .attributes()
                        .find(|kv| kv.key.as_str() == "http.route")
                        .map_or_else(|| "-".to_string(), |kv| kv.value.to_string());
                    println!("  {route:<14} {}", point.count());
                }
            }
        }
    }

    tracer_provider.shutdown()?;
    meter_provider.shutdown()?;
    Ok(())
}

/// `router.route(path, handler)`, with `path` tagged as the span's `http.route`.
fn route(router: Router, path: &'static str, handler: MethodRouter) -> Router {
    router.route(path, handler.route_layer(HttpRouteLayer::new(path)))
}

async fn get_path(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<(), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = http::Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Empty::new())?).await?;
    let status = response.status();
    response.into_body().collect().await?;
    println!("GET {path} -> {status}");
    Ok(())
}

/// Collects the metrics now and returns the sum of `http.server.active_requests`.
async fn active_requests(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
) -> Result<i64, BoxError> {
    // `force_flush` blocks until the reader's thread has exported.
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush()).await??;
    let exported = exporter.get_finished_metrics()?;
    let Some(last) = exported.last() else {
        return Ok(0);
    };
    let sum = last
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .filter(|m| m.name() == "http.server.active_requests")
        .map(|m| match m.data() {
            AggregatedMetrics::I64(MetricData::Sum(sum)) => {
                sum.data_points().map(|p| p.value()).sum::<i64>()
            }
            _ => 0,
        })
        .sum();
    Ok(sum)
}
