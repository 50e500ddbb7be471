#![cfg(all(feature = "axum", feature = "tracing-json"))]
//! Log lines that carry the trace, over real sockets: what an axum app logs with
//! `tracing` while the server layer handles a request names that request's SERVER span,
//! in the JSON lines of `logs::TraceJson` and in the OpenTelemetry log records of
//! `opentelemetry-appender-tracing`.
//!
//! Each test installs its subscriber for its own thread only (`set_default`), so each
//! runs on a current-thread runtime: the server, the handlers, the spawned tasks and the
//! client all run where the subscriber is seen.

mod support;

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::routing;
use axum::Router;
use bytes::Bytes;
use opentelemetry::context::FutureExt as _;
use opentelemetry::logs::AnyValue;
use opentelemetry::trace::SpanKind;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
use opentelemetry_sdk::trace::SpanData;
use serde_json::Value;
use support::*;
use tower_otel_http::logs::TraceJson;
use tracing_subscriber::layer::SubscriberExt as _;

/// A `MakeWriter` that keeps what is written.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a test logs, both ways, while it holds this.
struct Logs {
    lines: Capture,
    records: InMemoryLogExporter,
    _provider: SdkLoggerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

/// The trace and span id a log line or record names, as lowercase hex.
type Ids = Option<(String, String)>;

impl Logs {
    /// Installs, for this thread, JSON lines through [`TraceJson`] and OpenTelemetry log
    /// records through the bridge.
    fn capture() -> Self {
        let lines = Capture::default();
        let records = InMemoryLogExporter::default();
        let provider = SdkLoggerProvider::builder()
            .with_simple_exporter(records.clone())
            .build();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(TraceJson::new())
                    .with_writer(move || writer.clone()),
            )
            .with(OpenTelemetryTracingBridge::new(&provider));
        Self {
            lines,
            records,
            _provider: provider,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The ids of each JSON line whose message is `message`; every line must be valid
    /// JSON.
    fn lines(&self, message: &str) -> Vec<Ids> {
        let bytes = self.lines.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| match serde_json::from_str(line) {
                Ok(Value::Object(map)) => map,
                other => panic!("not a JSON object: {line:?}: {other:?}"),
            })
            .filter(|line| line["fields"]["message"] == message)
            .map(|line| {
                let id = |key: &str| line.get(key).map(|v| v.as_str().unwrap().to_owned());
                match (id("trace_id"), id("span_id")) {
                    (Some(trace), Some(span)) => Some((trace, span)),
                    (None, None) => None,
                    other => panic!("half the ids: {other:?}"),
                }
            })
            .collect()
    }

    /// The trace context of each log record whose body is `message`.
    fn records(&self, message: &str) -> Vec<Ids> {
        self.records
            .get_emitted_logs()
            .unwrap()
            .into_iter()
            .filter(|log| {
                matches!(log.record.body(), Some(AnyValue::String(body)) if body.as_str() == message)
            })
            .map(|log| {
                log.record
                    .trace_context()
                    .map(|tc| (tc.trace_id.to_string(), tc.span_id.to_string()))
            })
            .collect()
    }

    /// Exactly `n` lines and `n` records say `message`, each naming `span`.
    fn assert_named(&self, message: &str, n: usize, span: &SpanData) {
        let ids = Some(ids_of(span));
        assert_eq!(
            self.lines(message),
            vec![ids.clone(); n],
            "lines: {message}"
        );
        assert_eq!(self.records(message), vec![ids; n], "records: {message}");
    }

    /// Exactly `n` lines and `n` records say `message`, none naming a span.
    fn assert_unnamed(&self, message: &str, n: usize) {
        assert_eq!(self.lines(message), vec![None; n], "lines: {message}");
        assert_eq!(self.records(message), vec![None; n], "records: {message}");
    }
}

/// The trace and span id of `span`.
fn ids_of(span: &SpanData) -> (String, String) {
    let sc = &span.span_context;
    (sc.trace_id().to_string(), sc.span_id().to_string())
}

/// The one span, a SERVER span.
fn server_span(spans: &[SpanData]) -> &SpanData {
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].span_kind, SpanKind::Server);
    assert!(spans[0].span_context.is_valid());
    &spans[0]
}

/// Serves the app on loopback with the server layer of `t`.
async fn serve_app(t: &Telemetry) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/handler", routing::get(handler))
        .route("/spawned", routing::get(spawned))
        .route("/stream", routing::get(stream))
        .layer(t.server().build());
    serve(app).await
}

async fn handler() -> &'static str {
    tracing::info!("in the handler");
    "ok"
}

/// Logs in two tasks it spawns and awaits: one given the context, one not.
async fn spawned() -> &'static str {
    tokio::spawn(async { tracing::info!("in a task given the context") }.with_current_context())
        .await
        .unwrap();
    tokio::spawn(async { tracing::info!("in a task without the context") })
        .await
        .unwrap();
    "ok"
}

/// A body whose chunks are produced (and logged) as the server sends it.
async fn stream() -> Body {
    Body::from_stream(futures_util::stream::unfold(0, |n| async move {
        if n == 3 {
            return None;
        }
        tracing::info!(chunk = n, "producing a chunk");
        Some((
            Ok::<_, Infallible>(Bytes::from(format!("chunk {n};"))),
            n + 1,
        ))
    }))
}

#[tokio::test(flavor = "current_thread")]
async fn a_handlers_log_line_names_the_server_span() {
    let logs = Logs::capture();
    let t = Telemetry::new();
    let addr = serve_app(&t).await;

    let (parts, body) = send(get(addr, "/handler")).await;
    assert_eq!((parts.status.as_u16(), &body[..]), (200, &b"ok"[..]));
    let spans = t.wait_spans(1).await;
    logs.assert_named("in the handler", 1, server_span(&spans));

    // A second request, a second trace: each line names its own request.
    send(get(addr, "/handler")).await;
    let spans = t.wait_spans(2).await;
    assert_ne!(
        spans[0].span_context.trace_id(),
        spans[1].span_context.trace_id()
    );
    let mut expected: Vec<Ids> = spans.iter().map(|s| Some(ids_of(s))).collect();
    expected.sort();
    let mut lines = logs.lines("in the handler");
    lines.sort();
    assert_eq!(lines, expected);
    let mut records = logs.records("in the handler");
    records.sort();
    assert_eq!(records, expected);
}

#[tokio::test(flavor = "current_thread")]
async fn a_spawned_task_names_the_span_only_when_given_the_context() {
    let logs = Logs::capture();
    let t = Telemetry::new();
    let addr = serve_app(&t).await;

    let (parts, _) = send(get(addr, "/spawned")).await;
    assert_eq!(parts.status, 200);
    let spans = t.wait_spans(1).await;
    logs.assert_named("in a task given the context", 1, server_span(&spans));
    // Tasks do not inherit the context: the caveat in the docs.
    logs.assert_unnamed("in a task without the context", 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_streamed_body_logs_under_the_server_span() {
    let logs = Logs::capture();
    let t = Telemetry::new();
    let addr = serve_app(&t).await;

    let (parts, body) = send(get(addr, "/stream")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(&body[..], b"chunk 0;chunk 1;chunk 2;");
    let spans = t.wait_spans(1).await;
    logs.assert_named("producing a chunk", 3, server_span(&spans));
}

#[tokio::test(flavor = "current_thread")]
async fn outside_a_request_nothing_is_added() {
    let logs = Logs::capture();
    let t = Telemetry::new();
    let addr = serve_app(&t).await;

    tracing::info!("before any request");
    send(get(addr, "/handler")).await;
    let spans = t.wait_spans(1).await;
    tracing::info!("after the request");

    logs.assert_unnamed("before any request", 1);
    logs.assert_unnamed("after the request", 1);
    // The request between them was seen, and named.
    logs.assert_named("in the handler", 1, server_span(&spans));
}
