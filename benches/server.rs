//! Per-request overhead of the server layer: the whole request lifecycle through
//! `tower::ServiceExt::oneshot`, with the response body collected to its end, no network.
//! `GET /users/42?x=1` with `host`, `user-agent` and a valid `traceparent`.
//!
//! Cases:
//! - `bare`: the inner service alone;
//! - `layer/sdk`: `OtelLayer` with an SDK tracer provider (always-on sampler, ended spans
//!   handed to a processor that drops them) and an SDK meter provider (aggregating,
//!   never exported);
//! - `layer/traces_only`, `layer/metrics_only`: one of the two;
//! - `layer/sampled_out`: parent-based sampler and an unsampled parent;
//! - `layer/noop`: nothing installed (the global no-op providers).
//!
//! Absolute times on a shared machine drift; compare cases within one run.

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
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Span, SpanData, SpanProcessor};
use tower::{Service, ServiceExt};
use tower_otel_http::{HttpRoute, OtelLayer};

const SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const UNSAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// Ends spans the way a real pipeline would start to, then drops them.
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

fn request(traceparent: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::get("/users/42?x=1")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header("traceparent", traceparent)
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut()
        .insert(HttpRoute::from_static("/users/{id}"));
    req
}

async fn handler(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello world"))))
}

/// One whole request: call, await the response, collect its body.
fn run<S, B>(svc: &S, traceparent: &'static str)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc
        .clone()
        .oneshot(request(traceparent))
        .now_or_never()
        .unwrap()
        .unwrap();
    let body = res.into_body().collect().now_or_never().unwrap().unwrap();
    std::hint::black_box(body);
}

fn tracer_provider(sampler: Sampler) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(DropProcessor)
        .build()
}

fn meter_provider() -> SdkMeterProvider {
    SdkMeterProvider::builder()
        .with_reader(ManualReader::builder().build())
        .build()
}

fn bench(c: &mut Criterion) {
    let bare = tower::service_fn(handler);
    let tp = tracer_provider(Sampler::AlwaysOn);
    let mp = meter_provider();
    let sdk = OtelLayer::builder()
        .tracer_provider(&tp)
        .meter_provider(&mp)
        .build();
    let traces_only = OtelLayer::builder()
        .tracer_provider(&tp)
        .metrics(false)
        .build();
    let metrics_only = OtelLayer::builder()
        .meter_provider(&mp)
        .traces(false)
        .build();
    let tp_parent = tracer_provider(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let sampled_out = OtelLayer::builder()
        .tracer_provider(&tp_parent)
        .meter_provider(&mp)
        .build();
    let noop = OtelLayer::new();

    let mut group = c.benchmark_group("server");
    group.bench_function("bare", |b| b.iter(|| run(&bare, SAMPLED)));
    let svc = tower::ServiceBuilder::new().layer(sdk).service(bare);
    group.bench_function("layer/sdk", |b| b.iter(|| run(&svc, SAMPLED)));
    let svc = tower::ServiceBuilder::new()
        .layer(traces_only)
        .service(bare);
    group.bench_function("layer/traces_only", |b| b.iter(|| run(&svc, SAMPLED)));
    let svc = tower::ServiceBuilder::new()
        .layer(metrics_only)
        .service(bare);
    group.bench_function("layer/metrics_only", |b| b.iter(|| run(&svc, SAMPLED)));
    let svc = tower::ServiceBuilder::new()
        .layer(sampled_out)
        .service(bare);
    group.bench_function("layer/sampled_out", |b| b.iter(|| run(&svc, UNSAMPLED)));
    let svc = tower::ServiceBuilder::new().layer(noop).service(bare);
    group.bench_function("layer/noop", |b| b.iter(|| run(&svc, SAMPLED)));
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
