//! Per-request overhead of the client layer: the whole request lifecycle through
//! `tower::ServiceExt::oneshot` over an in-process "client" service (no network), with
//! the response body collected to its end. `GET http://api.example.com/users/42?x=1`.
//!
//! Cases:
//! - `bare`: the client service alone;
//! - `layer/sdk`: `OtelClientLayer` with an SDK tracer provider (ended spans dropped by
//!   the processor) and an SDK meter provider (aggregating, never exported);
//! - `layer/noop`: nothing installed (the global no-op providers).
//!
//! Absolute times on a shared machine drift; compare cases within one run, or use
//! `cargo bench --bench overhead` for interleaved ratios.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use tower::{Service, ServiceExt};
use tower_otel_http::OtelClientLayer;

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

fn request() -> Request<Full<Bytes>> {
    Request::get("http://api.example.com/users/42?x=1")
        .header("user-agent", "bench/1.0")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn transport(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello world"))))
}

fn run<S, B>(svc: &S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc
        .clone()
        .oneshot(request())
        .now_or_never()
        .unwrap()
        .unwrap();
    let body = res.into_body().collect().now_or_never().unwrap().unwrap();
    std::hint::black_box(body);
}

fn bench(c: &mut Criterion) {
    let bare = tower::service_fn(transport);
    let tp = SdkTracerProvider::builder()
        .with_span_processor(DropProcessor)
        .build();
    let mp = SdkMeterProvider::builder()
        .with_reader(ManualReader::builder().build())
        .build();
    let sdk = OtelClientLayer::builder()
        .tracer_provider(&tp)
        .meter_provider(&mp)
        .build();

    let mut group = c.benchmark_group("client");
    group.bench_function("bare", |b| b.iter(|| run(&bare)));
    let svc = tower::ServiceBuilder::new().layer(sdk).service(bare);
    group.bench_function("layer/sdk", |b| b.iter(|| run(&svc)));
    let svc = tower::ServiceBuilder::new()
        .layer(OtelClientLayer::new())
        .service(bare);
    group.bench_function("layer/noop", |b| b.iter(|| run(&svc)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
