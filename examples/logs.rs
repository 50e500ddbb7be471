//! Log lines that carry the trace: an axum app whose handler logs with `tracing`, each
//! event written as a JSON line on standard output (`logs::TraceJson`) and exported as
//! an OpenTelemetry log record (`opentelemetry-appender-tracing`).
//!
//! ```text
//! cargo run --example logs --features axum,tracing-json
//! ```
//!
//! It serves on 127.0.0.1 and sends itself two requests; the JSON lines appear as they
//! are logged. Then it prints each server span's ids beside those of the lines and the
//! log records, and fails if any differs.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::context::FutureExt as _;
use opentelemetry::logs::AnyValue;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower_otel_http::logs::TraceJson;
use tower_otel_http::OtelLayer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<ExitCode, BoxError> {
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let records = InMemoryLogExporter::default();
    let logger_provider = SdkLoggerProvider::builder()
        .with_simple_exporter(records.clone())
        .build();

    // Each event: a JSON line with the trace's ids, and a log record with its context.
    let lines = Stdout::default();
    let writer = lines.clone();
    tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .event_format(TraceJson::new())
                .with_writer(move || writer.clone()),
        )
        .with(OpenTelemetryTracingBridge::new(&logger_provider))
        .init();

    let layer = OtelLayer::builder()
        .tracer_provider(&tracer_provider)
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

    println!("JSON lines:\n");
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for order in [1, 2] {
        let response = client
            .get(format!("http://{addr}/orders/{order}").parse()?)
            .await?;
        response.into_body().collect().await?;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The order, trace id and span id of each line and each record.
    let from_lines: Vec<Named> = lines
        .text()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|line| {
            let id = |key: &str| line[key].as_str().map(str::to_owned);
            Some((
                line["fields"]["order"].as_i64()?,
                id("trace_id")?,
                id("span_id")?,
            ))
        })
        .collect();
    let from_records: Vec<Named> = records
        .get_emitted_logs()?
        .iter()
        .filter_map(|log| {
            let order = log.record.attributes_iter().find_map(|(key, value)| {
                match (key.as_str(), value) {
                    ("order", AnyValue::Int(order)) => Some(*order),
                    _ => None,
                }
            })?;
            let tc = log.record.trace_context()?;
            Some((order, tc.trace_id.to_string(), tc.span_id.to_string()))
        })
        .collect();

    println!("\nserver spans:\n");
    let mut all_match = true;
    for span in spans.get_finished_spans()? {
        let ids = (
            span.span_context.trace_id().to_string(),
            span.span_context.span_id().to_string(),
        );
        let order = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "url.path")
            .and_then(|kv| kv.value.as_str().rsplit('/').next()?.parse().ok())
            .unwrap_or_default();
        let (in_lines, in_records) = (of(&from_lines, order), of(&from_records, order));
        // Two events per request: in the handler, and in the task it spawned.
        let matches = in_lines == [ids.clone(), ids.clone()] && in_records == in_lines;
        all_match &= matches;
        println!("  {}  trace_id={} span_id={}", span.name, ids.0, ids.1);
        if matches {
            println!("    its 2 JSON lines and 2 log records carry these ids");
        } else {
            println!("    MISMATCH: lines {in_lines:?}, records {in_records:?}");
        }
    }

    println!(
        "\n{}",
        if all_match {
            "every line and record names its request's server span"
        } else {
            "some line or record does not name its request's server span"
        }
    );
    Ok(if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// An event's `order` field, and the trace id and span id it carries.
type Named = (i64, String, String);

/// The ids of the events about `order`.
fn of(named: &[Named], order: i64) -> Vec<(String, String)> {
    named
        .iter()
        .filter(|(o, ..)| *o == order)
        .map(|(_, trace_id, span_id)| (trace_id.clone(), span_id.clone()))
        .collect()
}

/// Logs while it handles the request, and in a task it spawns with the context.
async fn order(Path(id): Path<u32>) -> String {
    tracing::info!(order = id, "looking the order up");
    // A spawned task does not inherit the context: hand it over.
    let task = async move { tracing::info!(order = id, "order checked in a task") };
    tokio::spawn(task.with_current_context()).await.ok();
    format!("order {id}")
}

/// Standard output, keeping a copy of what was written for the comparison.
#[derive(Clone, Default)]
struct Stdout(Arc<Mutex<Vec<u8>>>);

impl Stdout {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        io::stdout().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}
