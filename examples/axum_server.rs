//! An axum server traced by `OtelLayer`, with spans from handlers made both with the
//! OpenTelemetry API and with `tracing` (through tracing-opentelemetry).
//!
//! ```text
//! cargo run --example axum_server --features axum
//! ```
//!
//! It installs the SDK's tracer provider as the global one (exporting into memory), serves
//! on 127.0.0.1, sends itself two requests, prints the spans, and exits.
//!
//! It needs this crate's `axum` feature (`tower-otel-http = { version = "0.1", features =
//! ["axum"] }`): the layer then reads axum's `MatchedPath` (`http.route`, and the span
//! name `GET /users/{id}`) and `ConnectInfo<SocketAddr>` (`client.address`,
//! `network.peer.*`) itself. Without it, the first `Router::layer` reports the missing
//! feature once on standard error.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{Span, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{global, KeyValue};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use tower_otel_http::OtelLayer;
use tracing_subscriber::layer::SubscriberExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // 1. The SDK, installed globally *before* the layer is built: `OtelLayer::new()` takes
    //    the global providers as they are at that moment.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("axum-server").build())
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(provider.clone());

    // 2. `tracing` spans become OpenTelemetry spans, children of the current context.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("axum-server")));
    tracing::subscriber::set_global_default(subscriber)?;

    // 3. The app. `Router::layer` wraps every route (and the fallback) in the layer; with
    //    the `axum` feature it reads the matched route and the peer's address itself.
    let app = Router::new()
        .route("/users/{id}", get(get_user))
        .route("/health", get(|| async { "ok" }))
        .layer(OtelLayer::new());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    println!("listening on http://{addr}\n");

    // 4. Two requests: a route, and a path no route matches.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for path in ["/users/7", "/no/such/page"] {
        let request = http::Request::get(format!("http://{addr}{path}"))
            .header("user-agent", "axum-server-example/1.0")
            .body(Empty::new())?;
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "GET {path} -> {status} {:?}",
            String::from_utf8_lossy(&body)
        );
    }

    // A server span ends once its response body has been sent.
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("\nspans, parents before children:\n");
    print_spans(&exporter.get_finished_spans()?);

    // (The in-memory exporter forgets its spans on shutdown: print them first.)
    provider.shutdown()?;
    Ok(())
}

/// A handler with two kinds of child spans.
async fn get_user(Path(id): Path<u64>) -> String {
    // With the OpenTelemetry API: the server span is the current context here.
    let tracer = global::tracer("axum-server");
    let name = tracer.in_span("load user", |cx| {
        cx.span()
            .set_attribute(KeyValue::new("app.user_id", id as i64));
        format!("user {id}")
    });
    // With `tracing`: tracing-opentelemetry parents it on the current context too.
    render(&name).await
}

#[tracing::instrument]
async fn render(name: &str) -> String {
    tokio::time::sleep(Duration::from_millis(2)).await;
    // An OpenTelemetry span inside a `tracing` span is its child (tracing-opentelemetry
    // makes the entered span's context current).
    let mut span = global::tracer("axum-server").start("escape html");
    span.set_attribute(KeyValue::new("app.bytes", name.len() as i64));
    span.end();
    tracing::info!(bytes = name.len(), "rendered");
    format!("<h1>{name}</h1>")
}

/// Prints the spans as a tree: name, kind, duration, then every attribute.
fn print_spans(spans: &[SpanData]) {
    fn print(spans: &[SpanData], span: &SpanData, depth: usize) {
        let indent = "    ".repeat(depth);
        let ms = span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3;
        println!(
            "{indent}{} ({:?}, {ms:.1} ms, status {:?}, scope {})",
            span.name,
            span.span_kind,
            span.status,
            span.instrumentation_scope.name()
        );
        for kv in &span.attributes {
            println!("{indent}    {} = {}", kv.key, kv.value);
        }
        for event in span.events.iter() {
            println!("{indent}    event: {}", event.name);
        }
        let mut children: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == span.span_context.span_id())
            .collect();
        children.sort_by_key(|s| s.start_time);
        for child in children {
            print(spans, child, depth + 1);
        }
    }
    let mut roots: Vec<&SpanData> = spans
        .iter()
        .filter(|s| {
            !spans
                .iter()
                .any(|p| p.span_context.span_id() == s.parent_span_id)
        })
        .collect();
    roots.sort_by_key(|s| s.start_time);
    for root in roots {
        println!("trace {}", root.span_context.trace_id());
        print(spans, root, 1);
        println!();
    }
}
