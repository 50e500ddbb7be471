//! Your own attributes: an axum app that labels each request's metrics with the tenant
//! from a header, and adds a response-hook attribute to its span.
//!
//! ```text
//! cargo run --example enrich --features axum
//! ```
//!
//! It serves on 127.0.0.1, sends itself requests for two tenants, then prints the spans'
//! own attributes and the `http.server.request.duration` table: one row per attribute
//! set, so one row per tenant and route.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower_otel_http::{Labeler, OtelLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let metrics = InMemoryMetricExporter::default();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();

    let layer = OtelLayer::builder()
        .tracer_provider(&tracer_provider)
        .meter_provider(&meter_provider)
        // A `Labeler` in each request's extensions, for the handlers.
        .labels(true)
        // An attribute for the span only, from the response.
        .on_response(|parts, attributes| {
            let cached = parts.headers.contains_key("x-cache-hit");
            attributes.span(KeyValue::new("app.cache_hit", cached));
        })
        .build();
    let app = Router::new().route("/orders/{id}", get(order)).layer(layer);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for (tenant, order) in [("acme", 1), ("acme", 2), ("globex", 3), ("acme", 4)] {
        let request = http::Request::get(format!("http://{addr}/orders/{order}"))
            .header("x-tenant", tenant)
            .body(Empty::new())?;
        let response = client.request(request).await?;
        response.into_body().collect().await?;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    println!("spans (the attributes this app added):\n");
    for span in spans.get_finished_spans()? {
        let own: Vec<String> = span
            .attributes
            .iter()
            .filter(|kv| kv.key.as_str().starts_with("app."))
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        println!("  {:<20} {}", span.name, own.join(" "));
    }

    meter_provider.force_flush()?;
    println!("\nhttp.server.request.duration, one row per attribute set:\n");
    println!(
        "  {:<8} {:<14} {:<7} {:>5}  {:>10}",
        "tenant", "route", "status", "count", "sum"
    );
    for resource in metrics.get_finished_metrics()? {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics() {
                if metric.name() != "http.server.request.duration" {
                    continue;
                }
                let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
                    continue;
                };
                for point in histogram.data_points() {
                    let get = |key: &str| {
                        point
                            .attributes()
                            .find(|kv| kv.key.as_str() == key)
                            .map(|kv| kv.value.to_string())
                            .unwrap_or_default()
                    };
                    println!(
                        "  {:<8} {:<14} {:<7} {:>5}  {:>8.2} ms",
                        get("app.tenant"),
                        get("http.route"),
                        get("http.response.status_code"),
                        point.count(),
                        point.sum() * 1e3
                    );
                }
            }
        }
    }
    Ok(())
}

/// Labels the request with its tenant; even orders come from the cache.
async fn order(
    Path(id): Path<u32>,
    headers: HeaderMap,
    Extension(labeler): Extension<Labeler>,
) -> (HeaderMap, String) {
    if let Some(tenant) = headers.get("x-tenant").and_then(|v| v.to_str().ok()) {
        // A bounded value: the tenant, from a known set, never an id.
        labeler.add(KeyValue::new("app.tenant", tenant.to_owned()));
    }
    let mut response_headers = HeaderMap::new();
    if id % 2 == 0 {
        response_headers.insert("x-cache-hit", "1".parse().unwrap());
    }
    (response_headers, format!("order {id}"))
}
