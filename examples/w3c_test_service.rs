//! The test service of the W3C Trace Context conformance suite (w3c/trace-context,
//! `test/`), built from this crate's layers:
//!
//! ```text
//! cargo run --example w3c_test_service -- 5000      # then: python test.py http://127.0.0.1:5000/test
//! ```
//!
//! The harness POSTs a JSON array of `{"url", "arguments"}` to `/test`; for each element
//! the service POSTs `arguments` (as JSON) to `url`. The incoming request goes through
//! `OtelLayer` and the callbacks through `OtelClientLayer`, both with their default
//! propagator, this crate's `TraceContextPropagator`, and an SDK tracer provider (so
//! every hop gets its own span id).

use std::net::SocketAddr;

use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tower::{ServiceBuilder, ServiceExt};
use tower_otel_http::{OtelClientLayer, OtelLayer};

#[derive(Deserialize)]
struct Step {
    url: String,
    arguments: serde_json::Value,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args().nth(1).map_or(Ok(5000), |p| p.parse())?;
    let tracer_provider = SdkTracerProvider::builder().build();
    let client = ServiceBuilder::new()
        .layer(
            OtelClientLayer::builder()
                .tracer_provider(&tracer_provider)
                .metrics(false)
                .build(),
        )
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let app = Router::new()
        .route(
            "/test",
            post(move |Json(steps): Json<Vec<Step>>| async move {
                for step in steps {
                    let body = serde_json::to_vec(&step.arguments).unwrap_or_default();
                    let Ok(req) = http::Request::post(&step.url)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                    else {
                        continue;
                    };
                    if let Ok(res) = client.clone().oneshot(req).await {
                        let _ = res.into_body().collect().await;
                    }
                }
                "ok"
            }),
        )
        .layer(
            OtelLayer::builder()
                .tracer_provider(&tracer_provider)
                .metrics(false)
                .build(),
        );

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening on http://{}/test", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
