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

// ---------------------------------------------------------------------------------------
// Helpers added for tests/server.rs and tests/axum.rs.

/// The spans named `name`.
pub fn spans_named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The one span whose `url.path` is `path`.
pub fn span_with_path<'a>(spans: &'a [SpanData], path: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| attr(&s.attributes, "url.path") == Some(Value::from(path.to_string())))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one span with url.path={path}, got {}",
        found.len()
    );
    found[0]
}

impl Telemetry {
    /// Waits a little more than a span takes to be exported, then asserts that exactly
    /// `n` spans were: for "ended exactly once" checks after [`Telemetry::wait_spans`].
    pub async fn settle_spans(&self, n: usize) -> Vec<SpanData> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let spans = self.finished_spans();
        assert_eq!(
            spans.len(),
            n,
            "expected exactly {n} spans: {:#?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        spans
    }

    /// The names of every metric exported so far (after a flush).
    pub fn metric_names(&self) -> Vec<String> {
        self.meter_provider.force_flush().unwrap();
        let exported = self.metrics.get_finished_metrics().unwrap();
        let Some(last) = exported.last() else {
            return Vec::new();
        };
        let mut names: Vec<String> = last
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .map(|m| m.name().to_string())
            .collect();
        names.sort();
        names
    }
}

/// The value of the span's `end_time - start_time`, in seconds.
pub fn span_secs(span: &SpanData) -> f64 {
    span.end_time
        .duration_since(span.start_time)
        .unwrap()
        .as_secs_f64()
}

/// Sends `req` (origin-form URI, e.g. `/a?b`) over a new HTTP/1.1 connection to `addr`,
/// adding `Host: addr` unless set, and reads the whole response. Also returns the
/// client's local address (the server's peer).
pub async fn send_from(
    addr: SocketAddr,
    mut req: Request<http_body_util::Full<Bytes>>,
) -> (http::response::Parts, Bytes, SocketAddr) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    if !req.headers().contains_key(http::header::HOST) {
        req.headers_mut()
            .insert(http::header::HOST, addr.to_string().parse().unwrap());
    }
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts, body, local)
}

/// An origin-form request `method path_and_query` with an empty body.
pub fn request(method: &str, path_and_query: &str) -> Request<http_body_util::Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path_and_query)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap()
}

/// A plain hyper client that speaks HTTP/2 with prior knowledge (h2c).
pub fn h2_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A sampler that samples everything and records the name and attributes each span
/// had when it was created (what a sampler can see).
#[derive(Clone, Debug, Default)]
pub struct RecordingSampler(pub std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<KeyValue>)>>>);

impl RecordingSampler {
    /// What was seen so far: `(span name, attributes at creation)`.
    pub fn seen(&self) -> Vec<(String, Vec<KeyValue>)> {
        self.0.lock().unwrap().clone()
    }
}

impl opentelemetry_sdk::trace::ShouldSample for RecordingSampler {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        _trace_id: opentelemetry::trace::TraceId,
        name: &str,
        _span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        _links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        use opentelemetry::trace::TraceContextExt as _;
        self.0
            .lock()
            .unwrap()
            .push((name.to_string(), attributes.to_vec()));
        opentelemetry_sdk::trace::SamplingResult {
            decision: opentelemetry_sdk::trace::SamplingDecision::RecordAndSample,
            attributes: Vec::new(),
            trace_state: parent_context
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// The attributes as `(key, value)` pairs sorted by key, for whole-set comparisons that
/// keep the value types (`I64(200)` differs from `String("200")`).
pub fn typed_set<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = attrs
        .into_iter()
        .map(|kv| (kv.key.as_str().to_string(), kv.value.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The expected `(key, value)` pairs, sorted by key, to compare with [`typed_set`].
pub fn expected_set(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A string attribute value.
pub fn s(v: &str) -> Value {
    Value::from(v.to_string())
}

/// A string-array attribute value.
pub fn strings(v: &[&str]) -> Value {
    Value::Array(opentelemetry::Array::String(
        v.iter().map(|s| s.to_string().into()).collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// Helpers added for tests/client.rs and tests/reqwest.rs.

impl Telemetry {
    /// A client layer builder using these providers.
    pub fn client_layer(&self) -> tower_otel_http::client::OtelClientLayerBuilder {
        tower_otel_http::OtelClientLayer::builder()
            .tracer_provider(&self.tracer_provider)
            .meter_provider(&self.meter_provider)
    }
}

/// A loopback test server's handler, for clients to call:
///
/// - `/status/{code}` answers with that status;
/// - `/sleep/{ms}` waits that long first;
/// - `/bytes/{n}` answers with `n` bytes of `x` (with a Content-Length);
/// - any other path answers with the request's headers, one `name: value` line each,
///   in order (see [`echoed`]).
///
/// Every response carries `x-request-body-len`: the bytes of the request body it read.
pub async fn echo(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<http_body_util::Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let request_body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut segments = parts.uri.path().trim_start_matches('/').splitn(3, '/');
    let (kind, arg) = (segments.next(), segments.next());
    let number = || arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let mut status = 200;
    let body = match kind {
        Some("status") => {
            status = number() as u16;
            Bytes::new()
        }
        Some("sleep") => {
            tokio::time::sleep(Duration::from_millis(number())).await;
            Bytes::new()
        }
        Some("bytes") => Bytes::from(vec![b'x'; number() as usize]),
        _ => {
            let mut lines = String::new();
            for (name, value) in &parts.headers {
                lines.push_str(name.as_str());
                lines.push_str(": ");
                lines.push_str(&String::from_utf8_lossy(value.as_bytes()));
                lines.push('\n');
            }
            Bytes::from(lines)
        }
    };
    Ok(Response::builder()
        .status(status)
        .header("x-request-body-len", request_body.len())
        .body(http_body_util::Full::new(body))
        .unwrap())
}

/// The values of header `name` that [`echo`] saw, in order.
pub fn echoed(body: &[u8], name: &str) -> Vec<String> {
    let prefix = format!("{}: ", name.to_ascii_lowercase());
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .map(str::to_owned)
        .collect()
}

/// A loopback address that refuses connections: a listener's port, the listener gone.
pub async fn refused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// The spans of kind CLIENT.
pub fn client_spans(spans: &[SpanData]) -> Vec<&SpanData> {
    spans
        .iter()
        .filter(|s| s.span_kind == opentelemetry::trace::SpanKind::Client)
        .collect()
}

/// The `traceparent` that names `span` as the parent (sampled).
pub fn traceparent_of(span: &SpanData) -> String {
    format!(
        "00-{}-{}-01",
        span.span_context.trace_id(),
        span.span_context.span_id()
    )
}
