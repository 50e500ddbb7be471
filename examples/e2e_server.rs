//! The axum server that `benches/e2e.sh` drives with wrk: `cargo run --release --example
//! e2e_server -- MODE`, where MODE is `bare` (no layer), `noop` (`OtelLayer` with nothing
//! installed), `sdk` (`OtelLayer` with SDK tracer and meter providers whose exports are
//! dropped) or `floor` (no layer: the handler itself starts and ends a SERVER span with
//! the same attributes and records the same two histogram points, on the same
//! providers: the SDK's own cost, with no middleware around it). It prints
//! `listening on ADDR` and serves until stdin closes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::routing::get;
use axum::Router;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use tokio::io::AsyncReadExt;
use tower_otel_http::{HttpRouteLayer, OtelLayer};

/// Ends spans, then drops them: what an exporter pipeline costs up to the hand-off.
#[derive(Debug)]
struct DropProcessor;

impl SpanProcessor for DropProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}
    fn on_end(&self, span: SpanData) {
        std::hint::black_box(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn user() -> &'static str {
    "hello world"
}

/// What `floor` records with.
struct Floor {
    tracer: opentelemetry_sdk::trace::SdkTracer,
    duration: Histogram<f64>,
    response_size: Histogram<u64>,
}

/// `user`, with the telemetry of `OtelLayer` written into it by hand: the span's
/// attributes as the layer sets them for this request (wrk sends no `traceparent`),
/// ended with the status code; the duration and response-size points.
async fn user_floor(State(floor): State<Arc<Floor>>, req: Request) -> &'static str {
    let start = Instant::now();
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut attrs = vec![
        KeyValue::new("http.request.method", "GET"),
        KeyValue::new("url.path", req.uri().path().to_owned()),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("network.protocol.version", "1.1"),
        KeyValue::new("http.route", "/users/{id}"),
    ];
    if let Some(host) = header(http::header::HOST) {
        match host.rsplit_once(':') {
            Some((address, port)) => {
                attrs.push(KeyValue::new("server.address", address.to_owned()));
                if let Ok(port) = port.parse::<i64>() {
                    attrs.push(KeyValue::new("server.port", port));
                }
            }
            None => attrs.push(KeyValue::new("server.address", host)),
        }
    }
    if let Some(ua) = header(http::header::USER_AGENT) {
        attrs.push(KeyValue::new("user_agent.original", ua));
    }
    let mut span = floor
        .tracer
        .span_builder("GET /users/{id}")
        .with_kind(SpanKind::Server)
        .with_start_time(SystemTime::now())
        .with_attributes(attrs)
        .start(&floor.tracer);
    span.set_attribute(KeyValue::new("http.response.status_code", 200));
    span.end();
    let metric_attrs = [
        KeyValue::new("http.request.method", "GET"),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("http.response.status_code", 200),
        KeyValue::new("http.route", "/users/{id}"),
        KeyValue::new("network.protocol.version", "1.1"),
    ];
    floor
        .duration
        .record(start.elapsed().as_secs_f64(), &metric_attrs);
    floor.response_size.record(11, &metric_attrs);
    "hello world"
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "bare".into());
    // One worker: wrk gets the other core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let router = Router::new()
            .route("/users/{id}", get(user))
            .route_layer(HttpRouteLayer::new("/users/{id}"));
        let tp = SdkTracerProvider::builder()
            .with_span_processor(DropProcessor)
            .build();
        let mp = SdkMeterProvider::builder()
            .with_reader(ManualReader::builder().build())
            .build();
        let app = match mode.as_str() {
            "bare" => router,
            "noop" => router.layer(OtelLayer::new()),
            "floor" => {
                let meter = mp.meter("floor");
                let floor = Arc::new(Floor {
                    tracer: tp.tracer("floor"),
                    duration: meter.f64_histogram("http.server.request.duration").build(),
                    response_size: meter
                        .u64_histogram("http.server.response.body.size")
                        .build(),
                });
                // The same router as the other modes, the route tag included.
                Router::new()
                    .route("/users/{id}", get(user_floor))
                    .route_layer(HttpRouteLayer::new("/users/{id}"))
                    .with_state(floor)
            }
            "sdk" => router.layer(
                OtelLayer::builder()
                    .tracer_provider(&tp)
                    .meter_provider(&mp)
                    .build(),
            ),
            other => return Err(format!("unknown mode {other}").into()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        let server = axum::serve(listener, app);
        let stdin_closed = async {
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        tokio::select! {
            r = server => r?,
            () = stdin_closed => {}
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
