//! A plain hyper 1 server (through hyper-util) traced by `OtelLayer`, with hand-written
//! routing.
//!
//! ```text
//! cargo run --example hyper_server
//! ```
//!
//! Without a router to ask, the handler names each route itself by putting an
//! [`HttpRoute`] in the response's extensions, and the accept loop gives the layer each
//! connection's peer as a [`PeerAddr`]. It serves on 127.0.0.1, sends itself a few
//! requests, prints the spans and the metrics, and exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tower::ServiceBuilder;
use tower_otel_http::{HttpRoute, OtelLayer, PeerAddr};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The app: routes by hand, and tags each response with its route template.
async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, response) = match (request.method(), segments.as_slice()) {
        (&Method::GET, [""]) => (Some("/"), text(StatusCode::OK, "home\n".into())),
        (&Method::GET, ["users", id]) => (
            Some("/users/{id}"),
            text(StatusCode::OK, format!("user {id}\n")),
        ),
        (&Method::POST, ["echo"]) => {
            // Reading the body: its size is recorded as http.server.request.body.size.
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => Bytes::new(),
            };
            (Some("/echo"), Response::new(Full::new(body)))
        }
        // No route: no `http.route`, and the span is named after the method alone.
        _ => (None, text(StatusCode::NOT_FOUND, "not found\n".into())),
    };
    let mut response = response;
    if let Some(route) = route {
        response
            .extensions_mut()
            .insert(HttpRoute::from_static(route));
    }
    Ok(response)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Explicit SDK providers, exporting into memory.
    let resource = Resource::builder()
        .with_service_name("hyper-server")
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

    // Built once: the tracer and the instruments are shared by every connection.
    let otel = OtelLayer::builder()
        .tracer_provider(&tracer_provider)
        .meter_provider(&meter_provider)
        .build();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let service = ServiceBuilder::new()
                // Outside the layer, so that it sees the peer.
                .map_request(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(PeerAddr(peer));
                    request
                })
                .layer(otel.clone())
                .service_fn(handle);
            tokio::spawn(async move {
                let connection = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
                if let Err(e) = connection {
                    eprintln!("connection from {peer}: {e}");
                }
            });
        }
    });
    println!("listening on http://{addr}\n");

    send_requests(addr).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;

    println!("\nspans:");
    for span in spans.get_finished_spans()? {
        let attribute = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map_or_else(|| "-".to_string(), |kv| kv.value.to_string())
        };
        println!(
            "  {:<18} {:?}  status {:<4} route {:<12} peer {}:{}",
            span.name,
            span.span_kind,
            attribute("http.response.status_code"),
            attribute("http.route"),
            attribute("network.peer.address"),
            attribute("network.peer.port"),
        );
    }

    meter_provider.force_flush()?;
    println!("\nmetrics (count and sum per route and status):");
    let exported = metrics.get_finished_metrics()?;
    if let Some(last) = exported.last() {
        for metric in last.scope_metrics().flat_map(|s| s.metrics()) {
            println!("  {} ({})", metric.name(), metric.unit());
            let mut points: Vec<(String, u64, f64)> = match metric.data() {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                    .data_points()
                    .map(|p| (route_and_status(p.attributes()), p.count(), p.sum()))
                    .collect(),
                AggregatedMetrics::U64(MetricData::Histogram(h)) => h
                    .data_points()
                    .map(|p| (route_and_status(p.attributes()), p.count(), p.sum() as f64))
                    .collect(),
                _ => Vec::new(),
            };
            points.sort_by(|a, b| a.0.cmp(&b.0));
            for (attributes, count, sum) in points {
                let sum = match metric.unit() {
                    "s" => format!("{:.3} ms", sum * 1e3),
                    "By" => format!("{sum} bytes"),
                    unit => format!("{sum} {unit}"),
                };
                println!("    {attributes:<18} count {count}  sum {sum}");
            }
        }
    }

    tracer_provider.shutdown()?;
    meter_provider.shutdown()?;
    Ok(())
}

async fn send_requests(addr: SocketAddr) -> Result<(), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let requests = [
        (Method::GET, "/", ""),
        (Method::GET, "/users/42", ""),
        (Method::POST, "/echo", "hello, hyper"),
        (Method::GET, "/nowhere", ""),
    ];
    for (method, path, body) in requests {
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from(body)))?;
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "{method} {path} -> {status} {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// `http.route` and `http.response.status_code`, the attributes that vary here.
fn route_and_status<'a>(attributes: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> String {
    let mut route = "-".to_string();
    let mut status = "-".to_string();
    for kv in attributes {
        match kv.key.as_str() {
            "http.route" => route = kv.value.to_string(),
            "http.response.status_code" => status = kv.value.to_string(),
            _ => {}
        }
    }
    format!("{route} {status}")
}
