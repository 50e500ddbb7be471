//! Shared test support: SDK providers with in-memory exporters, loopback servers and
//! clients, and readers for what the exporters received.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, HistogramDataPoint, Metric, MetricData, SumDataPoint,
};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower_otel_http::server::OtelLayerBuilder;
use tower_otel_http::{OtelLayer, PeerAddr};

/// An SDK tracer and meter provider whose exports stay in memory.
pub struct Telemetry {
    pub tracer_provider: SdkTracerProvider,
    pub meter_provider: SdkMeterProvider,
    pub spans: InMemorySpanExporter,
    pub metrics: InMemoryMetricExporter,
}

impl Telemetry {
    pub fn new() -> Self {
        Self::with_tracer(|b| b)
    }

    /// With a customised tracer provider (e.g. a sampler).
    pub fn with_tracer(
        f: impl FnOnce(
            opentelemetry_sdk::trace::TracerProviderBuilder,
        ) -> opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        let tracer_provider =
            f(SdkTracerProvider::builder().with_simple_exporter(spans.clone())).build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(
                PeriodicReader::builder(metrics.clone())
                    .with_interval(Duration::from_secs(3600))
                    .build(),
            )
            .build();
        Self {
            tracer_provider,
            meter_provider,
            spans,
            metrics,
        }
    }

    /// A server layer builder using these providers.
    pub fn server(&self) -> OtelLayerBuilder {
        OtelLayer::builder()
            .tracer_provider(&self.tracer_provider)
            .meter_provider(&self.meter_provider)
    }

    pub fn finished_spans(&self) -> Vec<SpanData> {
        self.spans.get_finished_spans().unwrap()
    }

    /// Waits (up to 5 s) until at least `n` spans were exported, and returns them. Spans
    /// end when the server is done with the response body, which may be after the client
    /// has read it.
    pub async fn wait_spans(&self, n: usize) -> Vec<SpanData> {
        for _ in 0..500 {
            let spans = self.finished_spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let spans = self.finished_spans();
        panic!(
            "expected {n} spans, got {}: {:#?}",
            spans.len(),
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    }

    /// Exports the metrics now and calls `f` with the latest snapshot of metric `name`.
    pub fn with_metric<R>(&self, name: &str, f: impl FnOnce(&Metric) -> R) -> Option<R> {
        self.meter_provider.force_flush().unwrap();
        let exported = self.metrics.get_finished_metrics().unwrap();
        let last = exported.last()?;
        let metric = last
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == name)?;
        Some(f(metric))
    }

    /// The unit of metric `name`.
    pub fn unit(&self, name: &str) -> Option<String> {
        self.with_metric(name, |m| m.unit().to_string())
    }

    /// The data points of an f64 histogram.
    pub fn f64_histogram(&self, name: &str) -> Vec<HistogramDataPoint<f64>> {
        self.with_metric(name, |m| match m.data() {
            AggregatedMetrics::F64(MetricData::Histogram(h)) => h.data_points().cloned().collect(),
            other => panic!("{name} is not an f64 histogram: {other:?}"),
        })
        .unwrap_or_default()
    }

    /// The data points of a u64 histogram.
    pub fn u64_histogram(&self, name: &str) -> Vec<HistogramDataPoint<u64>> {
        self.with_metric(name, |m| match m.data() {
            AggregatedMetrics::U64(MetricData::Histogram(h)) => h.data_points().cloned().collect(),
            other => panic!("{name} is not a u64 histogram: {other:?}"),
        })
        .unwrap_or_default()
    }

    /// The data points of an i64 sum (up-down counter).
    pub fn i64_sum(&self, name: &str) -> Vec<SumDataPoint<i64>> {
        self.with_metric(name, |m| match m.data() {
            AggregatedMetrics::I64(MetricData::Sum(s)) => s.data_points().cloned().collect(),
            other => panic!("{name} is not an i64 sum: {other:?}"),
        })
        .unwrap_or_default()
    }
}

/// The value of attribute `key`, if present.
pub fn attr<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>, key: &str) -> Option<Value> {
    attrs
        .into_iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// The attributes as sorted `key=value` strings, for whole-set comparisons.
pub fn attr_set<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> Vec<String> {
    let mut v: Vec<String> = attrs
        .into_iter()
        .map(|kv| format!("{}={}", kv.key.as_str(), kv.value))
        .collect();
    v.sort();
    v
}

/// Serves `svc` over HTTP/1 and HTTP/2 (auto) on 127.0.0.1, inserting [`PeerAddr`] into
/// every request. The server runs until the test's runtime ends.
pub async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                let svc = tower::ServiceBuilder::new()
                    .map_request(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(PeerAddr(peer));
                        req
                    })
                    .service(svc);
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A plain hyper client (no telemetry).
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` and reads the whole response.
pub async fn send(req: Request<http_body_util::Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let res = client().request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts, body)
}

/// A GET request to `addr` + `path_and_query`.
pub fn get(addr: SocketAddr, path_and_query: &str) -> Request<http_body_util::Full<Bytes>> {
    Request::get(format!("http://{addr}{path_and_query}"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap()
}
