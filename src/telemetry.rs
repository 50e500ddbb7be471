//! What is installed: the tracer, meter and propagator a layer uses, resolved once when
//! the layer is built, and whether each is a no-op (so that a layer with nothing installed
//! does nothing per request).

use std::fmt;
use std::sync::Arc;

use opentelemetry::global::{self, BoxedTracer, ObjectSafeTracerProvider};
use opentelemetry::metrics::{Histogram, Meter, MeterProvider, UpDownCounter};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};

use crate::propagation::{HeaderExtractor, HeaderInjector, TraceContextPropagator};
use crate::semconv;

/// The instrumentation scope of every tracer and meter this crate creates.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(semconv::SCHEMA_URL)
        .build()
}

/// Which tracer a builder was given.
pub(crate) enum TracerChoice {
    Global,
    Explicit(BoxedTracer),
}

impl TracerChoice {
    pub(crate) fn explicit<P, T, S>(provider: &P) -> Self
    where
        S: opentelemetry::trace::Span + Send + Sync + 'static,
        T: opentelemetry::trace::Tracer<Span = S> + Send + Sync + 'static,
        P: TracerProvider<Tracer = T>,
    {
        Self::Explicit(BoxedTracer::new(provider.boxed_tracer(scope())))
    }

    /// The tracer to use, `None` if it would record nothing.
    pub(crate) fn resolve(self) -> Option<BoxedTracer> {
        let tracer = match self {
            Self::Global => global::tracer_with_scope(scope()),
            Self::Explicit(tracer) => tracer,
        };
        (!is_noop_tracer(&tracer)).then_some(tracer)
    }
}

/// A tracer is a no-op when it makes no spans of its own: under a suppressed context
/// with a remote parent, the API's no-op tracer hands back the parent's span context,
/// while a real tracer (the SDK) returns an empty one — and records and exports nothing,
/// since telemetry is suppressed. So this probe leaves no trace in any exporter.
fn is_noop_tracer(tracer: &BoxedTracer) -> bool {
    let parent = SpanContext::new(
        TraceId::from_bytes([1; 16]),
        SpanId::from_bytes([1; 8]),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let probe_cx = Context::new()
        .with_remote_span_context(parent.clone())
        .with_telemetry_suppressed();
    let probe = tracer.build_with_context(SpanBuilder::from_name("probe"), &probe_cx);
    !probe.is_recording() && probe.span_context() == &parent
}

/// Which meter a builder was given.
pub(crate) enum MeterChoice {
    Global,
    Explicit(Meter),
}

impl MeterChoice {
    pub(crate) fn explicit<P: MeterProvider>(provider: &P) -> Self {
        Self::Explicit(provider.meter_with_scope(scope()))
    }

    /// The meter to use, `None` if it would record nothing.
    pub(crate) fn resolve(self) -> Option<Meter> {
        match self {
            Self::Global => {
                let provider = global::meter_provider();
                // The API's `NoopMeterProvider` is the only zero-sized provider there is;
                // every SDK provider holds its state behind a pointer.
                if std::mem::size_of_val(&*provider) == 0 {
                    return None;
                }
                Some(provider.meter_with_scope(scope()))
            }
            // What the user gave is used, whatever it is.
            Self::Explicit(meter) => Some(meter),
        }
    }
}

/// How a layer reads and writes the trace context of a request's headers.
#[derive(Clone)]
pub(crate) enum Propagation {
    /// Nothing to propagate: no tracer is installed and no propagator either.
    Off,
    /// This crate's strict W3C propagator (the global propagator was the no-op one).
    Own(TraceContextPropagator),
    /// The global propagator, read on each request.
    Global,
    /// A propagator given to the builder.
    Custom(Arc<dyn TextMapPropagator + Send + Sync>),
}

impl Propagation {
    /// The propagator to use when none was given: the global one if the application
    /// installed one, else ours. `tracing` says whether a tracer records: with neither a
    /// tracer nor an installed propagator there is nothing to do.
    pub(crate) fn resolve(
        explicit: Option<Arc<dyn TextMapPropagator + Send + Sync>>,
        tracing: bool,
    ) -> Self {
        if let Some(p) = explicit {
            return Self::Custom(p);
        }
        // The no-op propagator is the only one with no fields.
        let installed = global::get_text_map_propagator(|p| p.fields().next().is_some());
        match (installed, tracing) {
            (true, _) => Self::Global,
            (false, true) => Self::Own(TraceContextPropagator::new()),
            (false, false) => Self::Off,
        }
    }

    pub(crate) fn is_off(&self) -> bool {
        matches!(self, Self::Off)
    }

    /// The context of an incoming request, built on the current one.
    pub(crate) fn extract(&self, headers: &http::HeaderMap) -> Context {
        let extractor = HeaderExtractor(headers);
        Context::map_current(|cx| match self {
            Self::Off => cx.clone(),
            Self::Own(p) => p.extract_from_headers(cx, headers),
            Self::Global => {
                global::get_text_map_propagator(|p| p.extract_with_context(cx, &extractor))
            }
            Self::Custom(p) => p.extract_with_context(cx, &extractor),
        })
    }

    /// Writes `cx` into outgoing headers, replacing what the fields held.
    ///
    /// When `cx` holds a valid span, every field of the propagator is removed first, so
    /// that a `tracestate` (or any field) the caller copied from elsewhere does not travel
    /// beside a `traceparent` of another trace. With no valid span, the headers are left
    /// as they are (a proxy that forwards them by hand keeps working).
    pub(crate) fn inject(&self, cx: &Context, headers: &mut http::HeaderMap) {
        fn run(p: &dyn TextMapPropagator, cx: &Context, headers: &mut http::HeaderMap) {
            if cx.span().span_context().is_valid() {
                for field in p.fields() {
                    headers.remove(field);
                }
            }
            p.inject_context(cx, &mut HeaderInjector(headers));
        }
        match self {
            Self::Off => {}
            Self::Own(p) => run(p, cx, headers),
            Self::Global => global::get_text_map_propagator(|p| run(p, cx, headers)),
            Self::Custom(p) => run(p.as_ref(), cx, headers),
        }
    }
}

impl fmt::Debug for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "Off",
            Self::Own(_) => "TraceContextPropagator",
            Self::Global => "Global",
            Self::Custom(_) => "Custom",
        })
    }
}

/// The tracer, meter and propagator a builder was given, before they are resolved.
pub(crate) struct Sources {
    pub(crate) tracer: TracerChoice,
    pub(crate) meter: MeterChoice,
    pub(crate) propagator: Option<Arc<dyn TextMapPropagator + Send + Sync>>,
    /// `traces(bool)` and `metrics(bool)`: kept apart from the providers, so that the
    /// order of the calls does not matter and turning one back on keeps its provider.
    pub(crate) traces: bool,
    pub(crate) metrics: bool,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            tracer: TracerChoice::Global,
            meter: MeterChoice::Global,
            propagator: None,
            traces: true,
            metrics: true,
        }
    }
}

/// What a layer records with, once resolved.
pub(crate) struct Resolved {
    pub(crate) tracer: Option<BoxedTracer>,
    pub(crate) meter: Option<Meter>,
    pub(crate) propagation: Propagation,
}

impl Sources {
    pub(crate) fn traces_disabled(&self) -> bool {
        !self.traces
    }

    pub(crate) fn metrics_disabled(&self) -> bool {
        !self.metrics
    }

    pub(crate) fn resolve(self) -> Resolved {
        let tracer = if self.traces {
            self.tracer.resolve()
        } else {
            None
        };
        let propagation = Propagation::resolve(self.propagator, tracer.is_some());
        Resolved {
            tracer,
            meter: if self.metrics {
                self.meter.resolve()
            } else {
                None
            },
            propagation,
        }
    }
}

/// Which side's metric names an [`Instruments`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// A layer's instruments, created once when it is built.
pub(crate) struct Instruments {
    pub(crate) duration: Histogram<f64>,
    pub(crate) request_size: Option<Histogram<u64>>,
    pub(crate) response_size: Option<Histogram<u64>>,
    pub(crate) active: Option<UpDownCounter<i64>>,
    /// `rpc.{server,client}.call.duration`, for gRPC calls.
    pub(crate) rpc_duration: Histogram<f64>,
    #[cfg(feature = "experimental-bound-instruments")]
    pub(crate) bound: crate::bound::BoundCache,
}

impl Instruments {
    /// Records the end of a request: its duration, and the body sizes that are known,
    /// all with the same attributes.
    pub(crate) fn record(
        &self,
        attrs: &[KeyValue],
        duration: f64,
        request_size: Option<u64>,
        response_size: Option<u64>,
    ) {
        #[cfg(feature = "experimental-bound-instruments")]
        if self.bound.record(
            attrs,
            (
                &self.duration,
                self.request_size.as_ref(),
                self.response_size.as_ref(),
            ),
            (duration, request_size, response_size),
        ) {
            return;
        }
        self.duration.record(duration, attrs);
        if let (Some(h), Some(size)) = (&self.request_size, request_size) {
            h.record(size, attrs);
        }
        if let (Some(h), Some(size)) = (&self.response_size, response_size) {
            h.record(size, attrs);
        }
    }

    /// Records the end of a gRPC call.
    pub(crate) fn record_rpc(&self, attrs: &[KeyValue], duration: f64) {
        self.rpc_duration.record(duration, attrs);
    }

    pub(crate) fn new(meter: &Meter, side: Side, body_sizes: bool, active: bool) -> Self {
        let (duration, request_size, response_size, active_requests, who) = match side {
            Side::Server => (
                semconv::HTTP_SERVER_REQUEST_DURATION,
                semconv::HTTP_SERVER_REQUEST_BODY_SIZE,
                semconv::HTTP_SERVER_RESPONSE_BODY_SIZE,
                semconv::HTTP_SERVER_ACTIVE_REQUESTS,
                "server",
            ),
            Side::Client => (
                semconv::HTTP_CLIENT_REQUEST_DURATION,
                semconv::HTTP_CLIENT_REQUEST_BODY_SIZE,
                semconv::HTTP_CLIENT_RESPONSE_BODY_SIZE,
                semconv::HTTP_CLIENT_ACTIVE_REQUESTS,
                "client",
            ),
        };
        let size = |name: &'static str, what: &str| {
            meter
                .u64_histogram(name)
                .with_unit("By")
                .with_description(format!("Size of HTTP {who} {what} bodies."))
                .with_boundaries(semconv::BODY_SIZE_BUCKETS.to_vec())
                .build()
        };
        Self {
            duration: meter
                .f64_histogram(duration)
                .with_unit("s")
                .with_description(format!("Duration of HTTP {who} requests."))
                .with_boundaries(semconv::DURATION_BUCKETS.to_vec())
                .build(),
            request_size: body_sizes.then(|| size(request_size, "request")),
            response_size: body_sizes.then(|| size(response_size, "response")),
            rpc_duration: meter
                .f64_histogram(match side {
                    Side::Server => crate::grpc::RPC_SERVER_CALL_DURATION,
                    Side::Client => crate::grpc::RPC_CLIENT_CALL_DURATION,
                })
                .with_unit("s")
                .with_description(format!("Duration of gRPC {who} calls."))
                .with_boundaries(semconv::DURATION_BUCKETS.to_vec())
                .build(),
            active: active.then(|| {
                meter
                    .i64_up_down_counter(active_requests)
                    .with_unit("{request}")
                    .with_description(format!("Number of active HTTP {who} requests."))
                    .build()
            }),
            #[cfg(feature = "experimental-bound-instruments")]
            bound: crate::bound::BoundCache::default(),
        }
    }
}

/// Everything a layer's services share, behind one `Arc`: resolved once when the layer is
/// built. `C` is the side's configuration.
pub(crate) struct Shared<C> {
    pub(crate) tracer: Option<BoxedTracer>,
    pub(crate) metrics: Option<Instruments>,
    pub(crate) propagation: Propagation,
    pub(crate) config: C,
    /// Nothing to do at all: no tracer, no meter, no propagator.
    pub(crate) inert: bool,
}

impl<C> Shared<C> {
    pub(crate) fn new(
        sources: Sources,
        side: Side,
        body_sizes: bool,
        active_requests: bool,
        config: C,
    ) -> Self {
        let Resolved {
            tracer,
            meter,
            propagation,
        } = sources.resolve();
        let metrics =
            meter.map(|meter| Instruments::new(&meter, side, body_sizes, active_requests));
        let inert = tracer.is_none() && metrics.is_none() && propagation.is_off();
        Self {
            tracer,
            metrics,
            propagation,
            config,
            inert,
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("tracing", &self.tracer.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("propagation", &self.propagation)
            .field("config", &self.config)
            .finish()
    }
}

/// The name of the event that marks the response head on a span.
pub(crate) const RESPONSE_HEAD_EVENT: &str = "http.response.head";

/// Marks the response head on the span, at `span_start + elapsed` (the clock the span's
/// end uses).
pub(crate) fn response_head_event(
    cx: Option<&Context>,
    span_start: Option<std::time::SystemTime>,
    elapsed: std::time::Duration,
) {
    if let (Some(cx), Some(span_start)) = (cx, span_start) {
        cx.span()
            .add_event_with_timestamp(RESPONSE_HEAD_EVENT, span_start + elapsed, Vec::new());
    }
}

/// The most per-frame message events of one direction (`read` or `write`) on a span; the
/// frames after them are counted in one summary event when the body ends.
pub const MAX_MESSAGE_EVENTS: u64 = 50;

/// The direction of a body's frames, from the layer's side: `Read` for what it receives
/// (a server's request body, a client's response body), `Write` for what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

/// The names of one direction's events and their attributes.
struct MessageNames {
    event: &'static str,
    summary: &'static str,
    bytes: &'static str,
    total: &'static str,
    frames: &'static str,
}

impl Direction {
    /// Go's `otelhttp` names the event and the frame's bytes; the others are ours.
    fn names(self) -> MessageNames {
        match self {
            Direction::Read => MessageNames {
                event: "read",
                summary: "read.summary",
                bytes: "http.read_bytes",
                total: "http.read_bytes_total",
                frames: "http.read_frames",
            },
            Direction::Write => MessageNames {
                event: "write",
                summary: "write.summary",
                bytes: "http.wrote_bytes",
                total: "http.wrote_bytes_total",
                frames: "http.wrote_frames",
            },
        }
    }
}

/// A call's message events: its span, the span's clock, and the direction of the frames.
pub(crate) struct MessageEvents<'a> {
    pub(crate) cx: &'a Context,
    pub(crate) span_start: std::time::SystemTime,
    pub(crate) start: std::time::Instant,
    pub(crate) direction: Direction,
}

impl<'a> MessageEvents<'a> {
    /// `None` when the option is off or the call has no span.
    pub(crate) fn new(
        enabled: bool,
        cx: Option<&'a Context>,
        span_start: Option<std::time::SystemTime>,
        start: std::time::Instant,
        direction: Direction,
    ) -> Option<Self> {
        if !enabled {
            return None;
        }
        Some(Self {
            cx: cx?,
            span_start: span_start?,
            start,
            direction,
        })
    }

    /// Only a recording span keeps events: an unsampled call pays nothing per frame.
    pub(crate) fn recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    /// The span's clock: its start plus the monotonic time since, as for its end.
    fn now(&self) -> std::time::SystemTime {
        self.span_start + self.start.elapsed()
    }

    /// The `number`th data frame (from 1) went by: `bytes`, `total` so far.
    pub(crate) fn frame(&self, number: u64, bytes: u64, total: u64) {
        message_event(self.cx, self.now(), self.direction, number, bytes, total);
    }

    /// The body ended after `frames` data frames, `total` bytes.
    pub(crate) fn end(&self, frames: u64, total: u64) {
        message_summary(self.cx, self.now(), self.direction, frames, total);
    }
}

/// A data frame of `bytes` went by, the `number`th (from 1), `total` bytes so far: an
/// event while under the cap, at `at`.
fn message_event(
    cx: &Context,
    at: std::time::SystemTime,
    direction: Direction,
    number: u64,
    bytes: u64,
    total: u64,
) {
    if number > MAX_MESSAGE_EVENTS {
        return;
    }
    let names = direction.names();
    cx.span().add_event_with_timestamp(
        names.event,
        at,
        vec![
            KeyValue::new(names.bytes, saturating_i64(bytes)),
            KeyValue::new(names.total, saturating_i64(total)),
        ],
    );
}

/// The body ended after `frames` data frames, `total` bytes: one summary event when some
/// frames had none, with the total bytes and the frame count.
fn message_summary(
    cx: &Context,
    at: std::time::SystemTime,
    direction: Direction,
    frames: u64,
    total: u64,
) {
    if frames <= MAX_MESSAGE_EVENTS {
        return;
    }
    let names = direction.names();
    cx.span().add_event_with_timestamp(
        names.summary,
        at,
        vec![
            KeyValue::new(names.total, saturating_i64(total)),
            KeyValue::new(names.frames, saturating_i64(frames)),
        ],
    );
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Ends a request's span, if it has one: on a failure sets `error.type` and an `Error`
/// status (with `description`; none for an error status code, which explains itself),
/// then ends it at `span_start + elapsed`, the instant the duration metric is taken, so
/// that both measure the same interval. Ended explicitly: a context cloned into a
/// spawned task must not keep it open.
pub(crate) fn end_span(
    cx: Option<&Context>,
    span_start: Option<std::time::SystemTime>,
    elapsed: std::time::Duration,
    error_type: Option<&'static str>,
    description: impl Into<std::borrow::Cow<'static, str>>,
    exception: Option<&'static str>,
) {
    let (Some(cx), Some(span_start)) = (cx, span_start) else {
        return;
    };
    let span = cx.span();
    if let Some(error_type) = error_type {
        let description = description.into();
        span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, error_type));
        if let Some(exception_type) = exception {
            span.add_event_with_timestamp(
                "exception",
                span_start + elapsed,
                vec![
                    KeyValue::new("exception.type", exception_type),
                    KeyValue::new("exception.message", description.clone()),
                ],
            );
        }
        span.set_status(opentelemetry::trace::Status::error(description));
    }
    span.end_with_timestamp(span_start + elapsed);
}
