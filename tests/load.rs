//! Load and fault tests of the server layer: a real hyper server on 127.0.0.1 under many
//! concurrent clients with a fixed mix of outcomes (successes, 500s, streams, bodies
//! abandoned mid-stream, timeouts inside and outside the layer, panics caught inside and
//! outside it), the process's memory over that load, and exporters that fail or block.
//!
//! The tests take one lock each and so run one at a time: the memory test reads the whole
//! process's RSS and the latency test compares timings, neither of which should share the
//! machine with another load. Every loop is bounded in count and every wait in time.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;

const DURATION: &str = "http.server.request.duration";
const ACTIVE: &str = "http.server.active_requests";
/// The captured request header that carries each request's unique id.
const REQ_ID: &str = "x-req-id";
const REQ_ID_ATTR: &str = "http.request.header.x-req-id";

/// Concurrent client tasks; the last [`H2_TASKS`] share one HTTP/2 (h2c) connection, the
/// others a pool of HTTP/1.1 connections (one per task in flight).
const TASKS: usize = 64;
const H2_TASKS: usize = 16;
/// Requests of the load test, checked (and the span exporter reset) per phase.
const LOAD_REQUESTS: usize = 4_000;
const PHASE: usize = 1_000;
/// The memory test: one warm-up phase, then this many more.
const MEMORY_REQUESTS: usize = 8_000;
/// The bound on RSS growth between the end of the warm-up and the end of the memory test.
/// Without a leak the growth measured 1.3-2 MiB (allocator noise, most of it in the two
/// phases after the warm-up); a leak of 1 KiB per request (less than one span's data)
/// adds ~7 MiB over the 7 000 measured requests, and fails it.
const RSS_GROWTH_BOUND: u64 = 5 << 20;

/// What a hanging handler waits for at most (the timeouts below end it long before).
const HANG: Duration = Duration::from_secs(30);
/// `tower::timeout::Timeout` inside the layer, around the `inner-timeout` handler.
const INNER_TIMEOUT: Duration = Duration::from_millis(50);
/// `TimeoutLayer` outside the layer, around everything: it drops the layer's future.
const OUTER_TIMEOUT: Duration = Duration::from_millis(300);
/// A client gives up on one request (and fails the test) after this long.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);
/// The endless body sends its first chunk at once, then one every this long, at most
/// [`ENDLESS_CHUNKS`] times: ~10 s, far longer than a client takes to go away.
const ENDLESS_EVERY: Duration = Duration::from_millis(25);
const ENDLESS_CHUNKS: u32 = 400;
const FIRST_CHUNK: &str = "first-chunk;";
/// In the message of every panic the tests provoke; the panic hook keeps them quiet.
const EXPECTED_PANIC: &str = "expected by the load test";

// ---------------------------------------------------------------------------------------
// The mix of requests.

/// What a request does, from its path `/{kind}/{id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// 200 with a small full body.
    Ok,
    /// POST with a body; 200 echoing its length.
    Post,
    /// 500 with a body.
    Fail,
    /// 200, streamed in three chunks with small delays.
    Stream,
    /// 200 with an endless stream; the client (a raw socket) reads the first chunk and
    /// disconnects.
    Abort,
    /// Hangs; the `TimeoutLayer` outside the layer drops the layer's future (504).
    Cancel,
    /// Hangs; a `Timeout` inside the layer makes the inner service return `Elapsed` as a
    /// `BoxError`, which the stack outside turns into a 504.
    InnerTimeout,
    /// Panics; the `CatchPanicLayer` outside the layer answers 500.
    PanicOutside,
    /// Panics; a `CatchPanic` inside the layer answers 500.
    PanicInside,
}

/// How many of every 100 requests are of each kind.
const MIX: [(Kind, usize); 9] = [
    (Kind::Ok, 52),
    (Kind::Post, 8),
    (Kind::Fail, 8),
    (Kind::Stream, 10),
    (Kind::Abort, 6),
    (Kind::Cancel, 4),
    (Kind::InnerTimeout, 4),
    (Kind::PanicOutside, 4),
    (Kind::PanicInside, 4),
];

impl Kind {
    /// The kind of request `id`: the mix, spread out (37 is coprime with 100, so every
    /// 100 consecutive ids hold exactly the mix, interleaved).
    fn of(id: usize) -> Kind {
        let mut slot = id * 37 % 100;
        for (kind, n) in MIX {
            if slot < n {
                return kind;
            }
            slot -= n;
        }
        unreachable!("MIX sums to 100")
    }

    const ALL: [Kind; 9] = [
        Kind::Ok,
        Kind::Post,
        Kind::Fail,
        Kind::Stream,
        Kind::Abort,
        Kind::Cancel,
        Kind::InnerTimeout,
        Kind::PanicOutside,
        Kind::PanicInside,
    ];

    fn segment(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Post => "post",
            Kind::Fail => "fail",
            Kind::Stream => "stream",
            Kind::Abort => "abort",
            Kind::Cancel => "cancel",
            Kind::InnerTimeout => "inner-timeout",
            Kind::PanicOutside => "panic-outside",
            Kind::PanicInside => "panic-inside",
        }
    }

    fn from_segment(segment: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.segment() == segment)
    }

    fn method(self) -> &'static str {
        match self {
            Kind::Post => "POST",
            _ => "GET",
        }
    }

    /// The `error.type` of its span and of its duration data point.
    fn error_type(self) -> Option<&'static str> {
        match self {
            Kind::Ok | Kind::Post | Kind::Stream => None,
            Kind::Fail | Kind::PanicInside => Some("500"),
            Kind::Abort => Some("response_body_aborted"),
            Kind::Cancel => Some("request_cancelled"),
            Kind::InnerTimeout => Some("Box<dyn Error + Send + Sync>"),
            Kind::PanicOutside => Some("panic"),
        }
    }

    /// The `http.response.status_code` of its span: none when the layer saw no response.
    fn span_status(self) -> Option<i64> {
        match self {
            Kind::Ok | Kind::Post | Kind::Stream | Kind::Abort => Some(200),
            Kind::Fail | Kind::PanicInside => Some(500),
            Kind::Cancel | Kind::InnerTimeout | Kind::PanicOutside => None,
        }
    }

    /// The status the client receives.
    fn client_status(self) -> u16 {
        match self {
            Kind::Ok | Kind::Post | Kind::Stream | Kind::Abort => 200,
            Kind::Fail | Kind::PanicInside | Kind::PanicOutside => 500,
            Kind::Cancel | Kind::InnerTimeout => 504,
        }
    }
}

/// The expected `error.type` tally of the requests `ids` ("none" for no error).
fn expected_errors(ids: Range<usize>) -> BTreeMap<String, usize> {
    let mut tally = BTreeMap::new();
    for id in ids {
        let key = Kind::of(id).error_type().unwrap_or("none").to_string();
        *tally.entry(key).or_insert(0) += 1;
    }
    tally
}

// ---------------------------------------------------------------------------------------
// The server.

type Body = UnsyncBoxBody<Bytes, BoxError>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn stream_of(
    first: Option<Duration>,
    every: Duration,
    chunks: u32,
    name: fn(u32) -> String,
) -> Body {
    let stream = futures_util::stream::unfold(0u32, move |n| async move {
        if n >= chunks {
            return None;
        }
        let delay = if n == 0 { first } else { Some(every) };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        Some((Ok::<_, BoxError>(Frame::data(Bytes::from(name(n)))), n + 1))
    });
    StreamBody::new(stream).boxed_unsync()
}

async fn hang(_req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    tokio::time::sleep(HANG).await;
    Ok(Response::new(full("too late")))
}

async fn panicking(_req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    tokio::task::yield_now().await;
    panic!("handler panicked ({EXPECTED_PANIC})");
}

/// The application: see [`Kind`].
async fn handler(req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let mut segments = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let kind = segments.next().and_then(Kind::from_segment);
    let id = segments.next().unwrap_or_default().to_string();
    let Some(kind) = kind else {
        return Ok(Response::builder().status(404).body(full("")).unwrap());
    };
    match kind {
        Kind::Ok => Ok(Response::new(full(format!("ok {id}")))),
        Kind::Post => {
            let body = req.into_body().collect().await?.to_bytes();
            Ok(Response::new(full(format!("post {id} {}", body.len()))))
        }
        Kind::Fail => Ok(Response::builder()
            .status(500)
            .body(full(format!("fail {id}")))
            .unwrap()),
        Kind::Stream => Ok(Response::new(stream_of(
            Some(Duration::from_millis(2)),
            Duration::from_millis(2),
            3,
            |n| format!("s{n};"),
        ))),
        Kind::Abort => Ok(Response::new(stream_of(
            None,
            ENDLESS_EVERY,
            ENDLESS_CHUNKS,
            |n| match n {
                0 => FIRST_CHUNK.to_string(),
                n => format!("more{n};"),
            },
        ))),
        Kind::Cancel => hang(req).await.map_err(Into::into),
        Kind::InnerTimeout => {
            tower::timeout::Timeout::new(tower::service_fn(hang), INNER_TIMEOUT)
                .oneshot(req)
                .await
        }
        Kind::PanicOutside => panicking(req).await.map_err(Into::into),
        Kind::PanicInside => {
            let res = CatchPanicLayer::new()
                .layer(tower::service_fn(panicking))
                .oneshot(req)
                .await?;
            Ok(res.map(BodyExt::boxed_unsync))
        }
    }
}

/// Turns the stack's errors into responses: 504 for a timeout.
async fn error_response(err: BoxError) -> (StatusCode, String) {
    let status = if err.is::<tower::timeout::error::Elapsed>() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, err.to_string())
}

/// Serves `inner` (the handler, with or without the layer) on 127.0.0.1 behind the
/// outer stack: errors to responses (axum's `HandleErrorLayer`), `CatchPanicLayer`, then
/// `TimeoutLayer`.
async fn serve_stack<S, B>(inner: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let svc = ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(error_response))
        .layer(CatchPanicLayer::new())
        .timeout(OUTER_TIMEOUT)
        .service(inner);
    serve(svc).await
}

/// The layer under test, capturing the request id header, with `active_requests` on.
fn layer(
    tracer_provider: &SdkTracerProvider,
    meter_provider: &SdkMeterProvider,
) -> tower_otel_http::OtelLayer {
    tower_otel_http::OtelLayer::builder()
        .tracer_provider(tracer_provider)
        .meter_provider(meter_provider)
        .active_requests(true)
        .request_headers([REQ_ID])
        .build()
}

/// Serves [`handler`] behind the layer.
async fn serve_with_layer(layer: tower_otel_http::OtelLayer) -> SocketAddr {
    serve_stack(layer.layer(tower::service_fn(handler))).await
}

/// Serves [`handler`] with no layer: the responses to compare with.
async fn serve_plain() -> SocketAddr {
    serve_stack(tower::service_fn(handler)).await
}

// ---------------------------------------------------------------------------------------
// The clients.

type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A response as the client saw it, `date` removed.
#[derive(Debug, PartialEq)]
struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Sends request `id` (not [`Kind::Abort`]) and reads the whole response.
async fn fetch(client: &Client, addr: SocketAddr, id: usize) -> Seen {
    let kind = Kind::of(id);
    let body = match kind {
        Kind::Post => Bytes::from(format!("payload {id}")),
        _ => Bytes::new(),
    };
    let req = Request::builder()
        .method(kind.method())
        .uri(format!("http://{addr}/{}/{id}", kind.segment()))
        .header(REQ_ID, id)
        .body(Full::new(body))
        .unwrap();
    let res = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("request {id} ({kind:?}) failed: {e:?}"));
    let (mut parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("body of request {id} ({kind:?}) failed: {e:?}"))
        .to_bytes();
    parts.headers.remove(http::header::DATE);
    Seen {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// What the client must see for request `id`.
fn check_seen(id: usize, seen: &Seen) {
    let kind = Kind::of(id);
    assert_eq!(
        seen.status.as_u16(),
        kind.client_status(),
        "request {id} ({kind:?}): {seen:?}"
    );
    let body = String::from_utf8_lossy(&seen.body);
    let expected = match kind {
        Kind::Ok => Some(format!("ok {id}")),
        Kind::Post => Some(format!("post {id} {}", format!("payload {id}").len())),
        Kind::Fail => Some(format!("fail {id}")),
        Kind::Stream => Some("s0;s1;s2;".to_string()),
        _ => None,
    };
    if let Some(expected) = expected {
        assert_eq!(body, expected, "request {id} ({kind:?})");
    }
}

/// Sends request `id` ([`Kind::Abort`]) over a raw socket, reads up to the first chunk of
/// the body and disconnects.
async fn abort_mid_body(addr: SocketAddr, id: usize) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /{}/{id} HTTP/1.1\r\nhost: {addr}\r\n{REQ_ID}: {id}\r\n\r\n",
        Kind::Abort.segment()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&received).contains(FIRST_CHUNK) {
        assert!(received.len() < 64 * 1024, "request {id}: no first chunk");
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "request {id}: connection closed before the first chunk"
        );
        received.extend_from_slice(&buf[..n]);
    }
    assert!(
        received.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "request {id}: {}",
        String::from_utf8_lossy(&received)
    );
    drop(stream);
}

/// Sends the requests `ids` from [`TASKS`] concurrent tasks, each taking the next id until
/// none is left, and checks what each client saw.
async fn drive(addr: SocketAddr, ids: Range<usize>) {
    let next = Arc::new(AtomicUsize::new(ids.start));
    let h1 = client();
    let h2 = h2_client();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let client = if task < TASKS - H2_TASKS {
            h1.clone()
        } else {
            h2.clone()
        };
        let next = next.clone();
        let end = ids.end;
        tasks.spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= end {
                    return;
                }
                let one = async {
                    if Kind::of(id) == Kind::Abort {
                        abort_mid_body(addr, id).await;
                    } else {
                        check_seen(id, &fetch(&client, addr, id).await);
                    }
                };
                if tokio::time::timeout(REQUEST_LIMIT, one).await.is_err() {
                    panic!(
                        "request {id} ({:?}) took over {REQUEST_LIMIT:?}",
                        Kind::of(id)
                    );
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading the telemetry.

/// The request id a span captured.
fn req_id(span: &SpanData) -> usize {
    match attr(&span.attributes, REQ_ID_ATTR) {
        Some(Value::Array(Array::String(v))) if v.len() == 1 => v[0].as_str().parse().unwrap(),
        other => panic!("span without one {REQ_ID_ATTR}: {other:?}: {span:#?}"),
    }
}

/// Waits (up to 20 s) until at least `n` spans were exported, then a little more, and
/// returns them.
async fn collect_spans(t: &Telemetry, n: usize) -> Vec<SpanData> {
    for _ in 0..400 {
        if t.finished_spans().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything that would end twice, or late, has had the time to.
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.finished_spans()
}

/// Checks that `spans` are exactly one span for each request of `ids`, each with the
/// attributes of its kind; returns the `error.type` tally.
fn check_spans(spans: &[SpanData], ids: Range<usize>) -> BTreeMap<String, usize> {
    let mut seen = BTreeSet::new();
    let mut tally = BTreeMap::new();
    let mut twice = Vec::new();
    for span in spans {
        let id = req_id(span);
        assert!(ids.contains(&id), "span of request {id}, outside {ids:?}");
        if !seen.insert(id) {
            twice.push(id);
        }
    }
    let missing: Vec<usize> = ids.clone().filter(|id| !seen.contains(id)).collect();
    assert!(
        twice.is_empty() && missing.is_empty(),
        "{} spans for {} requests; requests with more than one span: {twice:?}; with none: \
         {missing:?} (kinds {:?})",
        spans.len(),
        ids.len(),
        missing.iter().map(|id| Kind::of(*id)).collect::<Vec<_>>(),
    );
    for span in spans {
        let id = req_id(span);
        let kind = Kind::of(id);
        let what = format!("request {id} ({kind:?})");
        assert_eq!(span.span_kind, SpanKind::Server, "{what}");
        assert_eq!(
            attr(&span.attributes, "url.path"),
            Some(s(&format!("/{}/{id}", kind.segment()))),
            "{what}"
        );
        assert_eq!(
            attr(&span.attributes, "http.request.method"),
            Some(s(kind.method())),
            "{what}"
        );
        let error_type = attr(&span.attributes, "error.type");
        assert_eq!(error_type, kind.error_type().map(s), "{what}: {span:#?}");
        assert_eq!(
            attr(&span.attributes, "http.response.status_code"),
            kind.span_status().map(Value::I64),
            "{what}"
        );
        assert_eq!(
            matches!(span.status, Status::Error { .. }),
            kind.error_type().is_some(),
            "{what}: {:?}",
            span.status
        );
        let key = kind.error_type().unwrap_or("none").to_string();
        *tally.entry(key).or_insert(0) += 1;
    }
    tally
}

/// The `error.type` tally of the duration histogram's counts, and its number of series.
fn duration_errors(t: &Telemetry) -> (BTreeMap<String, usize>, usize) {
    let points = t.f64_histogram(DURATION);
    let mut tally = BTreeMap::new();
    for p in &points {
        let key = match attr(p.attributes(), "error.type") {
            Some(v) => v.as_str().into_owned(),
            None => "none".to_string(),
        };
        *tally.entry(key).or_insert(0) += p.count() as usize;
    }
    (tally, points.len())
}

/// The `http.server.active_requests` points: `(attributes, value)`.
fn active_points(t: &Telemetry) -> Vec<(Vec<String>, i64)> {
    t.i64_sum(ACTIVE)
        .iter()
        .map(|p| (attr_set(p.attributes()), p.value()))
        .collect()
}

/// The resident set size of this process, in bytes: `/proc/self/statm`'s resident pages
/// times the page size.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * page_size()
}

/// The kernel's base page size, from `/proc/self/smaps` (4 KiB if it cannot be read).
fn page_size() -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|smaps| {
            smaps.lines().find_map(|line| {
                let kb = line.strip_prefix("KernelPageSize:")?.trim();
                kb.strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
        })
        .map_or(4096, |kb| kb * 1024)
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------------------------------
// Test harness.

/// One test at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps the panics the tests provoke off stderr; any other panic is reported as usual.
fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !message.is_some_and(|m| m.contains(EXPECTED_PANIC)) {
                default(info);
            }
        }));
    });
}

/// Runs `test` on a multi-thread runtime with 2 workers, within `limit`.
fn run<F: std::future::Future<Output = ()>>(limit: Duration, test: F) {
    let _serial = serial();
    quiet_expected_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(limit, test)
            .await
            .unwrap_or_else(|_| panic!("the test took over {limit:?}"));
    });
    // Hanging handlers of cancelled requests are gone already; don't wait for stragglers.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// Runs `total` mixed requests against a server with the layer, in phases of [`PHASE`]:
/// after each, checks its spans (one per request, attributes of its kind), resets the
/// span exporter and reads the RSS. Returns the RSS after each phase.
async fn mixed_load(t: &Telemetry, addr: SocketAddr, total: usize) -> Vec<u64> {
    let mut rss = Vec::new();
    for phase in 0..total.div_ceil(PHASE) {
        let ids = phase * PHASE..((phase + 1) * PHASE).min(total);
        let started = Instant::now();
        drive(addr, ids.clone()).await;
        let spans = collect_spans(t, ids.len()).await;
        let tally = check_spans(&spans, ids.clone());
        assert_eq!(tally, expected_errors(ids.clone()), "phase {phase}");
        let span_count = spans.len();
        drop(spans);
        t.spans.reset();
        rss.push(rss_bytes());
        eprintln!(
            "phase {phase}: requests {ids:?} in {:?}, {} spans, error.type {tally:?}, RSS {:.1} MiB",
            started.elapsed(),
            span_count,
            mib(*rss.last().unwrap() as i64),
        );
    }
    rss
}

// ---------------------------------------------------------------------------------------
// 1. Load: every request ends exactly once and is counted.

#[test]
fn mixed_load_ends_every_request_exactly_once() {
    run(Duration::from_secs(120), async {
        let t = Telemetry::new();
        let addr = serve_with_layer(layer(&t.tracer_provider, &t.meter_provider)).await;
        let started = Instant::now();
        mixed_load(&t, addr, LOAD_REQUESTS).await;
        let elapsed = started.elapsed();

        let (errors, series) = duration_errors(&t);
        let count: usize = errors.values().sum();
        assert_eq!(count, LOAD_REQUESTS, "duration count: {errors:?}");
        assert_eq!(errors, expected_errors(0..LOAD_REQUESTS));
        let active = active_points(&t);
        // GET and POST, one series each.
        assert_eq!(active.len(), 2, "{active:#?}");
        for (attrs, value) in &active {
            assert_eq!(*value, 0, "active requests {attrs:?}");
        }
        eprintln!(
            "{LOAD_REQUESTS} requests in {elapsed:?}; duration: {series} series, \
             error.type {errors:?}; active_requests: {active:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// 2. Memory: flat after a warm-up.

#[test]
fn memory_is_flat_under_sustained_mixed_load() {
    run(Duration::from_secs(120), async {
        let t = Telemetry::new();
        let addr = serve_with_layer(layer(&t.tracer_provider, &t.meter_provider)).await;
        let rss = mixed_load(&t, addr, MEMORY_REQUESTS).await;
        let warm = rss[0];
        let end = *rss.last().unwrap();
        let growth = end as i64 - warm as i64;
        eprintln!(
            "RSS after each {PHASE} requests (MiB): {:?}; growth after the warm-up: {:.2} MiB",
            rss.iter()
                .map(|b| (mib(*b as i64) * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            mib(growth),
        );
        assert!(
            growth < RSS_GROWTH_BOUND as i64,
            "RSS grew by {:.2} MiB over {} requests after the warm-up (bound {} MiB): {rss:?}",
            mib(growth),
            MEMORY_REQUESTS - PHASE,
            RSS_GROWTH_BOUND >> 20,
        );
        // The metrics stayed exact all along.
        let (errors, _) = duration_errors(&t);
        assert_eq!(errors, expected_errors(0..MEMORY_REQUESTS));
    });
}

// ---------------------------------------------------------------------------------------
// 3. Exporters that fail or block.

/// Sends the requests `ids` to both servers from 16 concurrent tasks (aborts to the layer
/// only) and asserts that each response is the same from both.
async fn compare_with_plain(with_layer: SocketAddr, plain: SocketAddr, ids: Range<usize>) {
    let next = Arc::new(AtomicUsize::new(ids.start));
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, next, end) = (client.clone(), next.clone(), ids.end);
        tasks.spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= end {
                    return;
                }
                let one = async {
                    if Kind::of(id) == Kind::Abort {
                        abort_mid_body(with_layer, id).await;
                        return;
                    }
                    let (a, b) =
                        tokio::join!(fetch(&client, with_layer, id), fetch(&client, plain, id));
                    check_seen(id, &a);
                    assert_eq!(
                        a,
                        b,
                        "request {id} ({:?}): with the layer vs without",
                        Kind::of(id)
                    );
                };
                if tokio::time::timeout(REQUEST_LIMIT, one).await.is_err() {
                    panic!("request {id} took over {REQUEST_LIMIT:?}");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// A span exporter that refuses every batch.
#[derive(Clone, Debug, Default)]
struct FailingSpanExporter {
    spans: Arc<AtomicUsize>,
}

impl SpanExporter for FailingSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans.fetch_add(batch.len(), Ordering::SeqCst);
        Err(OTelSdkError::InternalFailure(
            "export refused (by the test)".into(),
        ))
    }
}

#[test]
fn failing_span_exporter_changes_no_response() {
    run(Duration::from_secs(60), async {
        const N: usize = 300;
        let exporter = FailingSpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let t = Telemetry::new(); // for its meter provider
        let with_layer = serve_with_layer(layer(&tracer_provider, &t.meter_provider)).await;
        let plain = serve_plain().await;

        compare_with_plain(with_layer, plain, 0..N).await;

        // Every span reached the exporter (and was refused); the metrics are exact.
        for _ in 0..200 {
            if exporter.spans.load(Ordering::SeqCst) >= N {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(exporter.spans.load(Ordering::SeqCst), N);
        let (errors, _) = duration_errors(&t);
        assert_eq!(errors, expected_errors(0..N));
        assert!(active_points(&t).iter().all(|(_, v)| *v == 0));
        eprintln!(
            "{N} requests, {} spans refused by the exporter, responses unchanged",
            exporter.spans.load(Ordering::SeqCst)
        );
    });
}

/// A span exporter that takes `delay` per batch (on the batch processor's thread), until
/// told to hurry.
#[derive(Clone, Debug)]
struct SlowSpanExporter {
    delay: Duration,
    hurry: Arc<AtomicBool>,
    exported: Arc<AtomicUsize>,
    batches: Arc<AtomicUsize>,
}

impl SpanExporter for SlowSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if !self.hurry.load(Ordering::SeqCst) {
            std::thread::sleep(self.delay);
        }
        self.exported.fetch_add(batch.len(), Ordering::SeqCst);
        self.batches.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The `q` quantile (0..=1) of `samples`.
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Times one GET `/ok/{id}` to `addr`.
async fn timed_ok(client: &Client, addr: SocketAddr, id: usize) -> Duration {
    // Ids of kind Ok only.
    assert_eq!(Kind::of(id), Kind::Ok);
    let started = Instant::now();
    let seen = fetch(client, addr, id).await;
    let elapsed = started.elapsed();
    check_seen(id, &seen);
    elapsed
}

#[test]
fn slow_batch_exporter_does_not_slow_requests() {
    run(Duration::from_secs(60), async {
        const N: usize = 200;
        const WARM_UP: usize = 5;
        const BATCH: usize = 10;
        const DELAY: Duration = Duration::from_millis(250);
        let exporter = SlowSpanExporter {
            delay: DELAY,
            hurry: Arc::new(AtomicBool::new(false)),
            exported: Arc::new(AtomicUsize::new(0)),
            batches: Arc::new(AtomicUsize::new(0)),
        };
        let batch = BatchSpanProcessor::builder(exporter.clone())
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_export_batch_size(BATCH)
                    .build(),
            )
            .build();
        let slow_provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .build();
        // The baseline: the same layer, its spans going to no exporter at all.
        let bare_provider = SdkTracerProvider::builder().build();
        let t_slow = Telemetry::new();
        let t_bare = Telemetry::new();
        let slow = serve_with_layer(layer(&slow_provider, &t_slow.meter_provider)).await;
        let bare = serve_with_layer(layer(&bare_provider, &t_bare.meter_provider)).await;

        // Only ids of kind Ok.
        let ids: Vec<usize> = (0..10 * (N + WARM_UP))
            .filter(|id| Kind::of(*id) == Kind::Ok)
            .take(N + WARM_UP)
            .collect();
        let (c_slow, c_bare) = (client(), client());
        for &id in &ids[..WARM_UP] {
            timed_ok(&c_slow, slow, id).await;
            timed_ok(&c_bare, bare, id).await;
        }
        let mut slow_times = Vec::with_capacity(N);
        let mut bare_times = Vec::with_capacity(N);
        let started = Instant::now();
        for (i, &id) in ids[WARM_UP..].iter().enumerate() {
            // Interleaved, each first in turn.
            if i % 2 == 0 {
                slow_times.push(timed_ok(&c_slow, slow, id).await);
                bare_times.push(timed_ok(&c_bare, bare, id).await);
            } else {
                bare_times.push(timed_ok(&c_bare, bare, id).await);
                slow_times.push(timed_ok(&c_slow, slow, id).await);
            }
        }
        let wall = started.elapsed();
        let exported_by_then = exporter.exported.load(Ordering::SeqCst);

        let total = N + WARM_UP;
        let exporter_needs = DELAY * total.div_ceil(BATCH) as u32;
        let (slow_p50, bare_p50) = (quantile(&slow_times, 0.5), quantile(&bare_times, 0.5));
        let (slow_p99, bare_p99) = (quantile(&slow_times, 0.99), quantile(&bare_times, 0.99));
        let slow_max = *slow_times.iter().max().unwrap();
        eprintln!(
            "{N} requests each, interleaved, in {wall:?} (the exporter needs {exporter_needs:?} \
             for {total} spans; it had exported {exported_by_then} by then): \
             slow exporter p50 {slow_p50:?} p99 {slow_p99:?} max {slow_max:?}; \
             no exporter p50 {bare_p50:?} p99 {bare_p99:?}"
        );
        // The exporter was still far behind when the requests were done: they did not
        // wait for it.
        assert!(
            exported_by_then < total,
            "the exporter kept up ({exported_by_then} of {total}): it was not the bottleneck"
        );
        assert!(wall < exporter_needs, "{wall:?} >= {exporter_needs:?}");
        // No request waited for an export, and the typical request is as fast as without
        // an exporter (generous margins for a shared machine).
        assert!(slow_max < DELAY, "a request took {slow_max:?}");
        assert!(
            slow_p50 <= bare_p50 * 2 + Duration::from_millis(1),
            "p50 {slow_p50:?} with the slow exporter vs {bare_p50:?} without"
        );

        // Nothing was dropped: once the exporter hurries, every span arrives.
        exporter.hurry.store(true, Ordering::SeqCst);
        let shutdown = tokio::task::spawn_blocking(move || slow_provider.shutdown());
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .expect("shutdown took over 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(exporter.exported.load(Ordering::SeqCst), total);
        let (errors, _) = duration_errors(&t_slow);
        assert_eq!(errors.get("none"), Some(&total), "{errors:?}");
        eprintln!(
            "after shutdown: {} spans in {} batches",
            exporter.exported.load(Ordering::SeqCst),
            exporter.batches.load(Ordering::SeqCst)
        );
    });
}

/// A metric exporter that refuses every export.
#[derive(Clone, Debug, Default)]
struct FailingMetricExporter {
    exports: Arc<AtomicUsize>,
}

impl PushMetricExporter for FailingMetricExporter {
    async fn export(&self, _metrics: &ResourceMetrics) -> OTelSdkResult {
        self.exports.fetch_add(1, Ordering::SeqCst);
        Err(OTelSdkError::InternalFailure(
            "export refused (by the test)".into(),
        ))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

#[test]
fn failing_metric_exporter_changes_no_response() {
    run(Duration::from_secs(60), async {
        const N: usize = 300;
        let exporter = FailingMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(
                PeriodicReader::builder(exporter.clone())
                    .with_interval(Duration::from_millis(20))
                    .build(),
            )
            .build();
        let t = Telemetry::new(); // for its tracer provider
        let with_layer = serve_with_layer(layer(&t.tracer_provider, &meter_provider)).await;
        let plain = serve_plain().await;

        let started = Instant::now();
        compare_with_plain(with_layer, plain, 0..N).await;
        let elapsed = started.elapsed();
        let exports = exporter.exports.load(Ordering::SeqCst);
        // The exporter failed while the requests ran (they last > 300 ms: the cancelled
        // ones wait for the outer timeout).
        assert!(exports >= 2, "{exports} exports in {elapsed:?}");

        // The spans are all there and right.
        let spans = collect_spans(&t, N).await;
        let tally = check_spans(&spans, 0..N);
        assert_eq!(tally, expected_errors(0..N));
        let shutdown = tokio::task::spawn_blocking(move || meter_provider.shutdown());
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .expect("shutdown took over 10 s")
            .unwrap()
            .ok();
        eprintln!(
            "{N} requests in {elapsed:?} while {exports} metric exports failed; responses \
             unchanged, {} spans",
            spans.len()
        );
    });
}
