//! `message_events(true)`: a `write` event per response body frame on the SERVER span, a
//! `read` event per response body frame on the CLIENT span (tower layer and reqwest), a
//! `read` event per request body frame that an axum handler reads; at most
//! `MAX_MESSAGE_EVENTS` per direction, then one summary. Over real loopback sockets, with
//! assertions on exactly what the in-memory span exporter received.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Incoming;
use opentelemetry::trace::{
    FutureExt as _, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::trace::{Sampler, SpanData};
use support::*;
use tower::{Layer as _, ServiceBuilder, ServiceExt as _};
use tower_otel_http::{OtelClientLayer, OtelLayer, MAX_MESSAGE_EVENTS};

/// A response (or request) body: `Bytes` frames, the stream's own chunks.
type Body = UnsyncBoxBody<Bytes, Infallible>;

const WRITE: &str = "write";
const READ: &str = "read";
const WRITE_SUMMARY: &str = "write.summary";
const READ_SUMMARY: &str = "read.summary";

// ---------------------------------------------------------------------------------------
// Bodies and servers.

/// One chunk per size, chunk `i` filled with the letter `'a' + i % 26`, so that the
/// bytes the peer receives tell the chunks apart.
fn chunks(sizes: &[usize]) -> Vec<Bytes> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from(vec![b'a' + (i % 26) as u8; n]))
        .collect()
}

/// All the chunks, one after the other: the body the peer must receive.
fn concat(sizes: &[usize]) -> Vec<u8> {
    chunks(sizes).iter().flat_map(|c| c.to_vec()).collect()
}

/// A body that yields `sizes.len()` data frames, waiting `pace` before each (zero: none),
/// with no declared length (chunked over HTTP/1.1).
fn stream_body(sizes: &[usize], pace: Duration) -> Body {
    let stream = futures_util::stream::iter(chunks(sizes)).then(move |chunk| async move {
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        Ok::<_, Infallible>(Frame::data(chunk))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// A handler that answers every request with [`stream_body`] (and ignores its body).
fn streamer(
    sizes: Vec<usize>,
    pace: Duration,
) -> tower::util::ServiceFn<
    impl Fn(Request<Incoming>) -> std::future::Ready<Result<Response<Body>, Infallible>>
        + Clone
        + Send
        + 'static,
> {
    tower::service_fn(move |_req: Request<Incoming>| {
        std::future::ready(Ok(Response::new(stream_body(&sizes, pace))))
    })
}

/// Serves [`streamer`] behind `layer` on loopback.
async fn layered_streamer(layer: OtelLayer, sizes: &[usize], pace: Duration) -> SocketAddr {
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(streamer(sizes.to_vec(), pace));
    serve(svc).await
}

/// Serves [`streamer`] with no telemetry on loopback (for the client-side tests).
async fn plain_streamer(sizes: &[usize], pace: Duration) -> SocketAddr {
    serve(streamer(sizes.to_vec(), pace)).await
}

/// A hyper-util legacy client whose request bodies are [`Body`] (streamed).
#[cfg(feature = "axum")]
fn streaming_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

// ---------------------------------------------------------------------------------------
// Reading the events.

/// The names of the span's events, in order.
fn event_names(span: &SpanData) -> Vec<String> {
    span.events.iter().map(|e| e.name.to_string()).collect()
}

/// The i64 attribute `key` of an event (panics if it is missing or has another type).
fn int(attrs: &[opentelemetry::KeyValue], key: &str) -> i64 {
    match attr(attrs, key) {
        Some(Value::I64(v)) => v,
        other => panic!("{key}: expected an i64, got {other:?} in {attrs:?}"),
    }
}

/// The `(bytes, total)` of the span's frame events named `name` (`write` or `read`), in
/// order; each must carry exactly these two attributes.
fn frame_events(span: &SpanData, name: &str) -> Vec<(i64, i64)> {
    let keys = match name {
        WRITE => ("http.wrote_bytes", "http.wrote_bytes_total"),
        READ => ("http.read_bytes", "http.read_bytes_total"),
        other => panic!("not a frame event: {other}"),
    };
    int_pairs(span, name, keys)
}

/// The `(total bytes, frames)` of the span's summary events named `name`.
fn summary_events(span: &SpanData, name: &str) -> Vec<(i64, i64)> {
    let keys = match name {
        WRITE_SUMMARY => ("http.wrote_bytes_total", "http.wrote_frames"),
        READ_SUMMARY => ("http.read_bytes_total", "http.read_frames"),
        other => panic!("not a summary event: {other}"),
    };
    int_pairs(span, name, keys)
}

/// The two i64 attributes `keys` of each event named `name`, in order; each event must
/// carry exactly these two attributes.
fn int_pairs(span: &SpanData, name: &str, (a, b): (&str, &str)) -> Vec<(i64, i64)> {
    span.events
        .iter()
        .filter(|e| e.name == name)
        .map(|e| {
            assert_eq!(
                attr_set(&e.attributes).len(),
                2,
                "{name} event: {:?}",
                e.attributes
            );
            (int(&e.attributes, a), int(&e.attributes, b))
        })
        .collect()
}

/// The `(bytes, running total)` that frames of `sizes` must give.
fn expected_frames(sizes: &[usize]) -> Vec<(i64, i64)> {
    let mut total = 0;
    sizes
        .iter()
        .map(|&n| {
            total += n as i64;
            (n as i64, total)
        })
        .collect()
}

/// Frame events whose sizes we cannot know in advance (frames read from a socket): each
/// total is the previous one plus the frame's bytes, and no frame is empty. Returns the
/// sum of the bytes.
fn assert_consistent(events: &[(i64, i64)]) -> i64 {
    let mut total = 0;
    for (i, &(bytes, running)) in events.iter().enumerate() {
        assert!(bytes > 0, "frame {i} is empty: {events:?}");
        total += bytes;
        assert_eq!(running, total, "frame {i}'s running total: {events:?}");
    }
    total
}

/// The one span of kind `kind`.
fn one_span<'a>(spans: &'a [SpanData], kind: &SpanKind) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| &s.span_kind == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind:?} span: {spans:#?}");
    found[0]
}

/// The panic message of `f`, or `None` if it returned.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let payload = std::panic::catch_unwind(AssertUnwindSafe(f)).err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "<not a string>".to_string()),
    )
}

// ---------------------------------------------------------------------------------------
// 1-3. Server: `write` events for the response body.

/// Five chunks of different sizes.
const FIVE: [usize; 5] = [3, 40, 1, 700, 25];

#[tokio::test]
async fn server_message_events_are_off_by_default() {
    let t = Telemetry::new();
    let addr = layered_streamer(t.server().build(), &FIVE, Duration::ZERO).await;
    let (parts, body) = send(get(addr, "/stream")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, concat(&FIVE));

    let spans = t.wait_spans(1).await;
    let span = one_span(&spans, &SpanKind::Server);
    assert!(span.events.is_empty(), "{:?}", event_names(span));
}

#[tokio::test]
async fn server_writes_one_event_per_response_frame_with_running_totals() {
    let t = Telemetry::new();
    let layer = t.server().message_events(true).build();
    let addr = layered_streamer(layer, &FIVE, Duration::ZERO).await;
    let (parts, body) = send(get(addr, "/stream")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, concat(&FIVE));

    let spans = t.wait_spans(1).await;
    let span = one_span(&spans, &SpanKind::Server);
    // Only the frame events: no summary, nothing else.
    assert_eq!(event_names(span), vec![WRITE; FIVE.len()]);
    let events = frame_events(span, WRITE);
    assert_eq!(
        events,
        [(3, 3), (40, 43), (1, 44), (700, 744), (25, 769)],
        "the frames in order, each with the total so far"
    );
    assert_eq!(events, expected_frames(&FIVE));
    assert_eq!(events.last().unwrap().1, body.len() as i64);
    assert!(summary_events(span, WRITE_SUMMARY).is_empty());
    // The events fall within the span.
    for event in span.events.iter() {
        assert!(span.start_time <= event.timestamp && event.timestamp <= span.end_time);
    }
}

/// A response the server ends at its head (`end_at_head`) streams on unrecorded: the span
/// has no `write` events, and the client still gets the whole body.
#[tokio::test]
async fn a_response_ended_at_its_head_has_no_write_events() {
    let t = Telemetry::new();
    let layer = t
        .server()
        .message_events(true)
        .end_at_head(|_| true)
        .build();
    let addr = layered_streamer(layer, &FIVE, Duration::ZERO).await;
    let (parts, body) = send(get(addr, "/stream")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, concat(&FIVE));

    let spans = t.wait_spans(1).await;
    let span = one_span(&spans, &SpanKind::Server);
    assert_eq!(event_names(span), Vec::<String>::new());
}

#[tokio::test]
async fn server_write_events_stop_at_the_cap_then_one_summary() {
    assert_eq!(MAX_MESSAGE_EVENTS, 50);
    // 120 frames of 1 to 7 bytes.
    let sizes: Vec<usize> = (0..120).map(|i| i % 7 + 1).collect();
    let all: i64 = sizes.iter().sum::<usize>() as i64;
    let t = Telemetry::new();
    let layer = t.server().message_events(true).build();
    let addr = layered_streamer(layer, &sizes, Duration::ZERO).await;
    let (parts, body) = send(get(addr, "/many")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, concat(&sizes));
    assert_eq!(body.len() as i64, all);

    let spans = t.wait_spans(1).await;
    let span = one_span(&spans, &SpanKind::Server);
    // 50 frame events, then the summary, last.
    let mut names = vec![WRITE; 50];
    names.push(WRITE_SUMMARY);
    assert_eq!(event_names(span), names);
    assert_eq!(span.events.len(), 51, "bounded: at most 51 message events");
    assert_eq!(span.events.dropped_count, 0, "none dropped by the SDK");
    assert_eq!(frame_events(span, WRITE), expected_frames(&sizes[..50]));
    assert_eq!(
        summary_events(span, WRITE_SUMMARY),
        [(all, 120)],
        "(all the bytes, all the frames)"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Client (tower layer over hyper-util's legacy client): `read` events.

#[tokio::test]
async fn client_reads_one_event_per_response_frame() {
    let sizes = [5, 17, 33];
    // Paced, so that each chunk arrives (and is read) on its own.
    let addr = plain_streamer(&sizes, Duration::from_millis(30)).await;
    let t = Telemetry::new();
    let otel = t
        .client_layer()
        .message_events(true)
        .build()
        .layer(client());
    let res = otel.oneshot(get(addr, "/three")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, concat(&sizes));

    let spans = t.wait_spans(1).await;
    let span = one_span(&spans, &SpanKind::Client);
    assert_eq!(event_names(span), [READ, READ, READ]);
    assert_eq!(frame_events(span, READ), [(5, 5), (17, 22), (33, 55)]);
    assert_eq!(
        frame_events(span, READ).last().unwrap().1,
        body.len() as i64
    );
    assert!(summary_events(span, READ_SUMMARY).is_empty());

    // Off by default on the client too.
    let t = Telemetry::new();
    let otel = t.client_layer().build().layer(client());
    let res = otel.oneshot(get(addr, "/three")).await.unwrap();
    res.into_body().collect().await.unwrap();
    let spans = t.wait_spans(1).await;
    assert!(spans[0].events.is_empty(), "{:?}", event_names(&spans[0]));
}

// ---------------------------------------------------------------------------------------
// 5. Server, axum request body: `read` events for what the handler reads.

#[cfg(feature = "axum")]
#[tokio::test]
async fn server_reads_one_event_per_axum_request_body_frame() {
    use axum::routing::post;
    use axum::Router;

    let t = Telemetry::new();
    let app = Router::new()
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(t.server().message_events(true).build());
    let addr = serve(app).await;

    // Four chunks, streamed with no Content-Length (chunked), paced.
    let sizes = [11, 2000, 7, 300];
    let upload = concat(&sizes).len();
    let req = Request::post(format!("http://{addr}/upload"))
        .body(stream_body(&sizes, Duration::from_millis(20)))
        .unwrap();
    let res = streaming_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, upload.to_string(), "the handler read all of it");

    let spans = t.wait_spans(1).await;
    let span = one_span(&spans, &SpanKind::Server);
    let reads = frame_events(span, READ);
    assert!(!reads.is_empty(), "{:?}", event_names(span));
    assert!(reads.len() <= 50, "{reads:?}");
    // Frame boundaries on the server need not be the client's chunks: the bytes add up.
    assert_eq!(assert_consistent(&reads), upload as i64, "{reads:?}");
    assert_eq!(reads.last().unwrap().1, upload as i64);
    assert!(summary_events(span, READ_SUMMARY).is_empty());
    // The response: one frame (axum's `String` body), written after the reads.
    let writes = frame_events(span, WRITE);
    assert_eq!(
        writes,
        [(body.len() as i64, body.len() as i64)],
        "{:?}",
        event_names(span)
    );
    let names = event_names(span);
    let last_read = names.iter().rposition(|n| n == READ).unwrap();
    let first_write = names.iter().position(|n| n == WRITE).unwrap();
    assert!(last_read < first_write, "{names:?}");
    assert_eq!(names.len(), reads.len() + writes.len(), "{names:?}");
}

/// A handler that stops reading (axum's body limit, here after more than 50 frames)
/// drops the request body before its end: the `read.summary` still goes out, once, with
/// what was read.
#[cfg(feature = "axum")]
#[tokio::test]
async fn a_request_body_dropped_before_its_end_still_gets_its_summary() {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use axum::Router;

    let t = Telemetry::new();
    let app = Router::new()
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .layer(DefaultBodyLimit::max(700))
        .layer(t.server().message_events(true).build());
    let addr = serve(app).await;
    let req = Request::post(format!("http://{addr}/upload"))
        .body(stream_body(&[10; 100], Duration::from_millis(2)))
        .unwrap();
    let res = streaming_client().request(req).await.unwrap();
    assert_eq!(res.status(), 413);

    let spans = t.wait_spans(1).await;
    let span = one_span(&spans, &SpanKind::Server);
    let reads = frame_events(span, READ);
    assert_eq!(reads.len(), 50, "{:?}", event_names(span));
    let summaries = summary_events(span, READ_SUMMARY);
    assert_eq!(summaries.len(), 1, "{:?}", event_names(span));
    let (total, frames) = summaries[0];
    assert!(frames > 50 && frames <= 100, "{summaries:?}");
    assert!(total > 500 && total <= 1000, "{summaries:?}");
    // The summary comes before the response's `write`, and after the 50 reads.
    let names = event_names(span);
    let summary = names.iter().position(|n| n == READ_SUMMARY).unwrap();
    assert!(names[..summary].iter().filter(|n| *n == READ).count() == 50);
}

// ---------------------------------------------------------------------------------------
// 6. reqwest: `read` events on the CLIENT span.

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn reqwest_middleware_reads_events_for_the_response_body() {
    use reqwest_middleware::ClientBuilder;
    use tower_otel_http::reqwest::OtelMiddleware;

    let sizes = [100, 4000, 9];
    let addr = plain_streamer(&sizes, Duration::from_millis(20)).await;
    let t = Telemetry::new();
    let middleware = OtelMiddleware::builder()
        .tracer_provider(&t.tracer_provider)
        .meter_provider(&t.meter_provider)
        .message_events(true)
        .build();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    let res = client
        .get(format!("http://{addr}/reqwest"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    assert_eq!(body, concat(&sizes));

    let spans = t.wait_spans(1).await;
    let span = one_span(&spans, &SpanKind::Client);
    let reads = frame_events(span, READ);
    assert!(!reads.is_empty(), "{:?}", event_names(span));
    assert!(reads.len() <= 50, "{reads:?}");
    assert_eq!(assert_consistent(&reads), body.len() as i64, "{reads:?}");
    assert_eq!(reads.last().unwrap().1, body.len() as i64);
    assert_eq!(event_names(span), vec![READ; reads.len()]);
}

// ---------------------------------------------------------------------------------------
// 7. `message_events(true)` needs spans.

#[test]
fn message_events_without_traces_panics_naming_the_option() {
    let server = panic_message(|| {
        let _ = OtelLayer::builder()
            .traces(false)
            .message_events(true)
            .build();
    });
    let server = server.expect("the server builder must panic");
    assert!(server.contains("message_events"), "{server}");

    let client = panic_message(|| {
        let _ = OtelClientLayer::builder()
            .traces(false)
            .message_events(true)
            .build();
    });
    let client = client.expect("the client builder must panic");
    assert!(client.contains("message_events"), "{client}");

    // Close configurations that work: either option alone, or both on.
    for (traces, events) in [(false, false), (true, true), (true, false)] {
        assert_eq!(
            panic_message(|| {
                let _ = OtelLayer::builder()
                    .traces(traces)
                    .message_events(events)
                    .build();
                let _ = OtelClientLayer::builder()
                    .traces(traces)
                    .message_events(events)
                    .build();
            }),
            None,
            "traces({traces}), message_events({events})"
        );
    }
}

#[cfg(feature = "reqwest")]
#[test]
#[should_panic(expected = "message_events")]
fn reqwest_message_events_without_traces_panics() {
    let _ = tower_otel_http::reqwest::OtelMiddleware::builder()
        .traces(false)
        .message_events(true)
        .build();
}

// ---------------------------------------------------------------------------------------
// 8. Unsampled spans get no events; recording ones do.

/// Keeps every span that ends, sampled or not (the simple exporter keeps sampled ones).
#[derive(Debug, Clone, Default)]
struct Recorded(std::sync::Arc<std::sync::Mutex<Vec<SpanData>>>);

impl opentelemetry_sdk::trace::SpanProcessor for Recorded {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}
    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap().push(span);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// A sampler that records every span without sampling it.
#[derive(Debug, Clone)]
struct RecordOnly;

impl opentelemetry_sdk::trace::ShouldSample for RecordOnly {
    fn should_sample(
        &self,
        _parent: Option<&Context>,
        _trace_id: opentelemetry::trace::TraceId,
        _name: &str,
        _kind: &SpanKind,
        _attributes: &[opentelemetry::KeyValue],
        _links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        opentelemetry_sdk::trace::SamplingResult {
            decision: opentelemetry_sdk::trace::SamplingDecision::RecordOnly,
            attributes: Vec::new(),
            trace_state: Default::default(),
        }
    }
}

/// The events follow the span's recording, not its sampled flag: a span recorded but
/// not sampled (a `RecordOnly` sampler, seen by a span processor) has them.
#[tokio::test]
async fn recording_but_unsampled_spans_get_events() {
    let recorded = Recorded::default();
    let processor = recorded.clone();
    let t = Telemetry::with_tracer(|b| b.with_sampler(RecordOnly).with_span_processor(processor));
    let sizes = [4, 5, 6];
    let addr = layered_streamer(
        t.server().message_events(true).build(),
        &sizes,
        Duration::ZERO,
    )
    .await;
    let (_, body) = send(
        Request::get(format!("http://{addr}/"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(body.len(), 15);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let span = loop {
        if let Some(span) = recorded.0.lock().unwrap().first().cloned() {
            break span;
        }
        assert!(std::time::Instant::now() < deadline, "no span ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(!span.span_context.is_sampled());
    assert_eq!(frame_events(&span, WRITE), expected_frames(&sizes));
}

#[tokio::test]
async fn unsampled_requests_get_no_events_and_their_bodies_pass_intact() {
    // What an unsampled span would hold cannot be seen (it is not recorded): this checks
    // that such requests pass intact, export nothing and panic nowhere, and that a
    // sampled one through the same layers has its events. Which spans get events is
    // `recording_but_unsampled_spans_get_events`.
    // Parent-based, explicitly (the SDK's default too): an unsampled parent, no span.
    let t = Telemetry::with_tracer(|b| {
        b.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
    });
    // More frames than the cap, so that the summary path runs too.
    let sizes: Vec<usize> = (0..60).map(|i| i % 5 + 1).collect();
    let addr = layered_streamer(
        t.server().message_events(true).build(),
        &sizes,
        Duration::ZERO,
    )
    .await;
    let otel = t
        .client_layer()
        .message_events(true)
        .build()
        .layer(client());

    // (a) A plain client sending an unsampled `traceparent` (flags 00) to the server.
    let mut req = get(addr, "/unsampled");
    req.headers_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
            .parse()
            .unwrap(),
    );
    let (parts, body) = send(req).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, concat(&sizes));

    // (b) The client layer under an unsampled remote parent: its span is not sampled,
    // and neither is the server's (the propagated flags are 00).
    let parent = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    let cx = Context::new().with_remote_span_context(parent);
    let res = otel
        .clone()
        .oneshot(get(addr, "/unsampled-client"))
        .with_context(cx)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, concat(&sizes));

    // Nothing was exported for them...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(t.finished_spans().is_empty(), "{:#?}", t.finished_spans());

    // ... while a sampled request through the same layers gets its events.
    let res = otel
        .oneshot(get(addr, "/sampled"))
        .with_context(Context::new())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, concat(&sizes));
    t.wait_spans(2).await;
    let spans = t.settle_spans(2).await;
    let server = one_span(&spans, &SpanKind::Server);
    assert_eq!(frame_events(server, WRITE), expected_frames(&sizes[..50]));
    assert_eq!(
        summary_events(server, WRITE_SUMMARY),
        [(sizes.iter().sum::<usize>() as i64, 60)]
    );
    let client_span = one_span(&spans, &SpanKind::Client);
    let reads = frame_events(client_span, READ);
    assert!(!reads.is_empty());
    for span in &spans {
        assert!(span.span_context.is_sampled());
        assert_ne!(
            span.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 9. A response body dropped mid-stream.

#[tokio::test]
async fn a_body_dropped_mid_stream_ends_each_span_once_with_bounded_events() {
    // 1 KiB frames, 100 MiB in all: far more than the socket buffers hold, so the server
    // is still writing when the client goes away.
    let sizes = vec![1024; 100 * 1024];
    let t = Telemetry::new();
    let addr = layered_streamer(
        t.server().message_events(true).build(),
        &sizes,
        Duration::ZERO,
    )
    .await;
    let otel = t
        .client_layer()
        .message_events(true)
        .build()
        .layer(client());
    let res = otel.oneshot(get(addr, "/endless")).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut read = 0;
    for _ in 0..2 {
        let frame = body.frame().await.unwrap().unwrap();
        read += frame.into_data().unwrap().len();
    }
    assert!(read > 0);
    // The client stops reading: hyper-util closes the connection.
    drop(body);

    t.wait_spans(2).await;
    let spans = t.settle_spans(2).await;

    // The client span ended at the drop, with exactly the two frames it read.
    let client_span = one_span(&spans, &SpanKind::Client);
    let reads = frame_events(client_span, READ);
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert_eq!(assert_consistent(&reads), read as i64);
    assert_eq!(event_names(client_span), [READ, READ]);

    // The server span ended once, as an abort, its write events within the cap.
    let server = one_span(&spans, &SpanKind::Server);
    assert_eq!(
        attr(&server.attributes, "error.type"),
        Some(s("response_body_aborted")),
        "not a panic"
    );
    let writes = frame_events(server, WRITE);
    assert!(!writes.is_empty() && writes.len() <= 50, "{}", writes.len());
    assert_eq!(writes, expected_frames(&sizes[..writes.len()]));
    let summaries = summary_events(server, WRITE_SUMMARY);
    assert!(summaries.len() <= 1, "{summaries:?}");
    if let [(total, frames)] = summaries[..] {
        // More frames went out than the cap: the summary counts them all.
        assert_eq!(writes.len(), 50);
        assert!(frames > 50, "{frames}");
        assert_eq!(total, frames * 1024);
        assert_eq!(event_names(server).last().unwrap(), WRITE_SUMMARY);
    } else {
        assert_eq!(event_names(server), vec![WRITE; writes.len()]);
    }
    assert!(server.events.len() <= 51);
}
