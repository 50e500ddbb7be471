//! The axum server that `benches/e2e.sh` drives with wrk: `cargo run --release --example
//! e2e_server -- MODE`, where MODE is `bare` (no layer), `noop` (`OtelLayer` with nothing
//! installed) or `sdk` (`OtelLayer` with SDK tracer and meter providers whose exports are
//! dropped). It prints `listening on ADDR` and serves until stdin closes.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use tokio::io::AsyncReadExt;
use tower_otel_http::{HttpRoute, OtelLayer};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "bare".into());
    // One worker: wrk gets the other core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let router = Router::new()
            .route("/users/{id}", get(user))
            .route_layer(HttpRoute::layer("/users/{id}"));
        let tp = SdkTracerProvider::builder()
            .with_span_processor(DropProcessor)
            .build();
        let mp = SdkMeterProvider::builder()
            .with_reader(ManualReader::builder().build())
            .build();
        let app = match mode.as_str() {
            "bare" => router,
            "noop" => router.layer(OtelLayer::new()),
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
