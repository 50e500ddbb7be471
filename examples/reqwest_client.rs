//! reqwest with `OtelMiddleware`, calling a local server.
//!
//! ```text
//! cargo run --example reqwest_client --features reqwest
//! ```
//!
//! The example installs the SDK as the global tracer and meter provider (so that
//! `OtelMiddleware::new()` uses it), starts a plain hyper server on 127.0.0.1 (a random
//! port), sends it requests through a `reqwest_middleware` client, and prints the CLIENT
//! spans the SDK received. It needs no external service and exits by itself. A real
//! application would install an OTLP exporter instead of the in-memory one used here to
//! print.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry::global;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use reqwest_middleware::ClientBuilder;
use tower_otel_http::client::UrlTemplate;
use tower_otel_http::reqwest::OtelMiddleware;

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
    // Install the SDK globally *before* building the middleware: `OtelMiddleware::new()`
    // takes the global providers as they are when it is built.
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    global::set_tracer_provider(tracer_provider.clone());

    let addr = start_server().await?;

    let client = ClientBuilder::new(reqwest::Client::new())
        .with(OtelMiddleware::new())
        .build();

    // A request tagged with its URL template: the span is named `GET /users/{id}`.
    let res = client
        .get(format!("http://{addr}/users/42"))
        .with_extension(UrlTemplate::from_static("/users/{id}"))
        .send()
        .await?;
    let status = res.status();
    println!("GET /users/42 -> {status}: {}", res.text().await?);

    // A 404: the CLIENT span's status is Error, with `error.type` "404".
    let res = client.get(format!("http://{addr}/missing")).send().await?;
    println!("GET /missing -> {}", res.status());

    // Nothing listens on a port we just released: `error.type` is "connect".
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    match client.get(format!("http://{closed}/")).send().await {
        Ok(res) => println!("GET http://{closed}/ -> {}", res.status()),
        Err(err) => println!("GET http://{closed}/ -> error: {err}"),
    }

    // The middleware ends each span when the response headers arrive.
    println!();
    for span in spans.get_finished_spans()? {
        print_span(&span);
    }

    tracer_provider.shutdown()?;
    Ok(())
}
