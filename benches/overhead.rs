//! Interleaved overhead comparison, with allocation counts.
//!
//! `cargo bench --bench overhead [-- ROUNDS [REQUESTS_PER_ROUND [CASE_FILTER]]]`
//!
//! Criterion measures cases one after another, and this machine's speed drifts by
//! 15–40 % over minutes, which misranks cases. Here every case is built first, then each
//! round runs every case for the same number of requests, in an order rotated each
//! round, and each case's time is divided by `bare`'s time in the same round. The table
//! gives the median of those per-round ratios, the overhead over `bare` (median ratio
//! minus one, times `bare`'s median time), and heap allocations per request (counted by
//! a global allocator, in a separate pass), with the spans ended per request and, of those,
//! the children of the incoming `traceparent` (`spans`, `child`), to check that every case
//! does the same work.
//!
//! Every request is the same whole lifecycle: `GET /users/42?x=1` with `host`,
//! `user-agent` and a valid `traceparent`, through `oneshot`, body collected.
//!
//! - `bare`: the inner service alone.
//! - `floor`: no middleware, but the same OpenTelemetry work written by hand the obvious
//!   way with the SDK: extract the context, start a SERVER span with the same
//!   attributes, end it, record the three histograms.
//! - `layer/*`: `OtelLayer` with an SDK tracer provider (spans ended and dropped by the
//!   processor) and an SDK meter provider (aggregating, never exported), or with only
//!   one of them, or with a parent-based sampler and an unsampled parent, or with nothing
//!   installed; `layer/enriched` is `layer/sdk` with a request hook adding one attribute
//!   (span and metrics) and a handler adding one label; `layer/enriched_span` the same
//!   with the hook's attribute on the span only; `layer/head_event` is `layer/sdk`
//!   with `response_head_event(true)`.
//! - `stream/*`: the same with a 16-chunk streamed response body;
//!   `stream/layer/message_events` is `stream/layer/sdk` with `message_events(true)` (16
//!   `write` events); `stream/layer/end_at_head` ends every response at its head;
//!   `layer/server_timing` is `layer/sdk` with `server_timing(true)`.
//! - `grpc/*`: a unary gRPC call on the same request, made a gRPC one (`POST`,
//!   `application/grpc`, a method path) in front of every `grpc/*` case, answered with
//!   one message and `grpc-status: 0` trailers; compared with `grpc/bare`.
//! - `client/*`: `OtelClientLayer` over an in-process client service.
//! - `peer/oitower/*`: opentelemetry-instrumentation-tower 0.19 (opentelemetry-rust-contrib),
//!   the closest peer, with the same SDK providers installed as the globals (it reads
//!   only those), or with nothing installed. It records no `http.route` here (no axum).
//! - `peer/tower-otel/*`: tower-otel 0.12, its HTTP server trace layer (a `tracing` span
//!   at INFO) over its HTTP server metrics layer (given a meter of the same SDK meter
//!   provider). No `http.route` here (its `axum` feature reads axum's `MatchedPath`).
//! - `peer/axum-otel/*`: axum-tracing-opentelemetry 0.42, `OtelAxumLayer::default()` (a
//!   `tracing` span at TRACE, no metrics). Outside an axum `Router` it finds no
//!   `MatchedPath`, so it records `http.route = ""` and names the span `GET`.
//!
//! The two `tracing`-based peers need a subscriber: a `tracing_subscriber::registry()` with
//! a `tracing_opentelemetry::layer()` on the same SDK tracer provider as the other cases,
//! set as the global default once every case is built (none of our cases uses
//! `tracing`). The peers read the global propagator (the SDK's W3C one, installed once
//! for `peer/*/sdk`) on every request; for the `peer/*/noop` cases it is switched off and
//! `tracing` is scoped to no subscriber (`Dispatch::none()`), once per timed segment, so
//! "nothing installed" means the same for every crate: no SDK, no propagator, no
//! subscriber.

// The one unsafe block of the project: a counting global allocator, in this bench only.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use opentelemetry::context::FutureExt as _;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Span, SpanData, SpanProcessor};
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_otel_http::propagation::HeaderExtractor;
use tower_otel_http::{HttpRoute, OtelClientLayer, OtelLayer};
use tracing_subscriber::layer::SubscriberExt as _;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const UNSAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
const PARENT_SPAN_ID: opentelemetry::trace::SpanId =
    opentelemetry::trace::SpanId::from_bytes(0xb7ad6b7169203331_u64.to_be_bytes());

/// Spans ended, and those whose parent is the incoming `traceparent`'s span.
static SPANS: AtomicU64 = AtomicU64::new(0);
static CHILDREN: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct DropProcessor;

impl SpanProcessor for DropProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}
    fn on_end(&self, span: SpanData) {
        SPANS.fetch_add(1, Ordering::Relaxed);
        if span.parent_span_id == PARENT_SPAN_ID {
            CHILDREN.fetch_add(1, Ordering::Relaxed);
        }
        std::hint::black_box(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Whether the global propagator propagates: off while a `peer/*/noop` case runs.
static PROPAGATE: AtomicBool = AtomicBool::new(true);

/// The global propagator of the peers: the SDK's W3C propagator, unless switched off.
#[derive(Debug)]
struct Switched(TraceContextPropagator);

impl TextMapPropagator for Switched {
    fn inject_context(
        &self,
        cx: &Context,
        injector: &mut dyn opentelemetry::propagation::Injector,
    ) {
        if PROPAGATE.load(Ordering::Relaxed) {
            self.0.inject_context(cx, injector);
        }
    }
    fn extract_with_context(
        &self,
        cx: &Context,
        extractor: &dyn opentelemetry::propagation::Extractor,
    ) -> Context {
        if PROPAGATE.load(Ordering::Relaxed) {
            self.0.extract_with_context(cx, extractor)
        } else {
            cx.clone()
        }
    }
    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        self.0.fields()
    }
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;
type Svc = BoxCloneService<Request<Full<Bytes>>, Response<Body>, Infallible>;

fn request(traceparent: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::get("http://api.example.com/users/42?x=1")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header("traceparent", traceparent)
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut()
        .insert(HttpRoute::from_static("/users/{id}"));
    req
}

fn full_body() -> Body {
    Full::new(Bytes::from_static(b"hello world")).boxed_unsync()
}

fn streamed_body() -> Body {
    let chunks = (0..16).map(|_| {
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(
            b"0123456789abcdef",
        )))
    });
    StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync()
}

fn handler(streamed: bool) -> Svc {
    BoxCloneService::new(tower::service_fn(
        move |_req: Request<Full<Bytes>>| async move {
            Ok::<_, Infallible>(Response::new(if streamed {
                streamed_body()
            } else {
                full_body()
            }))
        },
    ))
}

/// The plain handler, adding one label to the request's `Labeler`.
fn labelling_handler() -> Svc {
    BoxCloneService::new(tower::service_fn(|req: Request<Full<Bytes>>| async move {
        if let Some(labeler) = req.extensions().get::<tower_otel_http::Labeler>() {
            labeler.add(KeyValue::new("app.tenant", "acme"));
        }
        Ok::<_, Infallible>(Response::new(full_body()))
    }))
}

fn boxed<S, B>(svc: S) -> Svc
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    BoxCloneService::new(svc.map_response(|res: Response<B>| res.map(|b| b.boxed_unsync())))
}

/// The same work as the layer, by hand, the obvious way.
#[derive(Clone)]
struct Floor {
    inner: Svc,
    tracer: opentelemetry_sdk::trace::SdkTracer,
    propagator: std::sync::Arc<TraceContextPropagator>,
    duration: Histogram<f64>,
    request_size: Histogram<u64>,
    response_size: Histogram<u64>,
}

impl Floor {
    fn new(inner: Svc, tp: &SdkTracerProvider, mp: &SdkMeterProvider) -> Self {
        let meter = mp.meter("floor");
        Self {
            inner,
            tracer: tp.tracer("floor"),
            propagator: std::sync::Arc::new(TraceContextPropagator::new()),
            duration: meter.f64_histogram("http.server.request.duration").build(),
            request_size: meter.u64_histogram("http.server.request.body.size").build(),
            response_size: meter
                .u64_histogram("http.server.response.body.size")
                .build(),
        }
    }

    async fn call(self, req: Request<Full<Bytes>>) -> Result<Response<Body>, Infallible> {
        let start = Instant::now();
        let parent = self.propagator.extract(&HeaderExtractor(req.headers()));
        let attrs = vec![
            KeyValue::new("http.request.method", req.method().as_str().to_owned()),
            KeyValue::new("url.path", req.uri().path().to_owned()),
            KeyValue::new("url.query", req.uri().query().unwrap_or("").to_owned()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("server.address", "api.example.com".to_owned()),
            KeyValue::new(
                "user_agent.original",
                req.headers()["user-agent"].to_str().unwrap().to_owned(),
            ),
            KeyValue::new("network.protocol.version", "1.1"),
            KeyValue::new("http.route", "/users/{id}"),
        ];
        let span = self
            .tracer
            .span_builder("GET /users/{id}")
            .with_kind(SpanKind::Server)
            .with_start_time(SystemTime::now())
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        let cx = parent.with_span(span);
        let res = self.inner.oneshot(req).with_context(cx.clone()).await?;
        // Collect the body here, as the layer counts it on its way out.
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(parts.status.as_u16()),
        ));
        span.end();
        let metric_attrs = [
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new(
                "http.response.status_code",
                i64::from(parts.status.as_u16()),
            ),
            KeyValue::new("http.route", "/users/{id}"),
            KeyValue::new("network.protocol.version", "1.1"),
        ];
        self.duration
            .record(start.elapsed().as_secs_f64(), &metric_attrs);
        self.request_size.record(0, &metric_attrs);
        self.response_size.record(bytes.len() as u64, &metric_attrs);
        Ok(Response::from_parts(parts, Full::new(bytes).boxed_unsync()))
    }
}

/// One whole request: call, await the response, collect its body.
fn run(svc: &Svc, traceparent: &'static str) {
    let res = svc
        .clone()
        .oneshot(request(traceparent))
        .now_or_never()
        .unwrap()
        .unwrap();
    let body = res.into_body().collect().now_or_never().unwrap().unwrap();
    std::hint::black_box(body);
}

struct Case {
    name: &'static str,
    svc: Svc,
    traceparent: &'static str,
    /// Nothing installed for a peer that reads globals: no propagator, no subscriber.
    bare_globals: bool,
}

impl Case {
    fn new(name: &'static str, svc: Svc, traceparent: &'static str) -> Self {
        Self {
            name,
            svc,
            traceparent,
            bare_globals: false,
        }
    }

    /// Runs `n` requests, with this case's globals.
    fn run(&self, n: u32) {
        let requests = || {
            for _ in 0..n {
                run(&self.svc, self.traceparent);
            }
        };
        if self.bare_globals {
            PROPAGATE.store(false, Ordering::Relaxed);
            tracing::dispatcher::with_default(&tracing::Dispatch::none(), requests);
            PROPAGATE.store(true, Ordering::Relaxed);
        } else {
            requests();
        }
    }
}

fn cases() -> Vec<Case> {
    let tp = SdkTracerProvider::builder()
        .with_span_processor(DropProcessor)
        .build();
    let tp_parent = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_span_processor(DropProcessor)
        .build();
    let mp = SdkMeterProvider::builder()
        .with_reader(ManualReader::builder().build())
        .build();
    let layer = |streamed: bool, b: tower_otel_http::server::OtelLayerBuilder| {
        boxed(
            ServiceBuilder::new()
                .layer(b.build())
                .service(handler(streamed)),
        )
    };
    let sdk = || {
        OtelLayer::builder()
            .tracer_provider(&tp)
            .meter_provider(&mp)
    };
    let client = |b: tower_otel_http::client::OtelClientLayerBuilder| {
        boxed(
            ServiceBuilder::new()
                .layer(b.build())
                .service(handler(false)),
        )
    };
    // Every case goes through the same two levels of boxing as `bare`.
    let floor = |streamed: bool| {
        let f = Floor::new(handler(streamed), &tp, &mp);
        boxed(tower::service_fn(move |req| f.clone().call(req)))
    };
    // oitower reads only the global providers: build its no-op layer first, then every
    // layer of ours (they snapshot the globals when built), then install the SDK.
    let peer_noop = boxed(
        ServiceBuilder::new()
            .layer(opentelemetry_instrumentation_tower::http::server::Layer::new())
            .service(handler(false)),
    );
    let tower_otel = |meter: opentelemetry::metrics::Meter| {
        boxed(
            ServiceBuilder::new()
                .layer(tower_otel::trace::HttpLayer::server(tracing::Level::INFO))
                .layer(tower_otel::metrics::HttpLayer::server(&meter))
                .service(handler(false)),
        )
    };
    let axum_otel = || {
        boxed(
            ServiceBuilder::new()
                .layer(axum_tracing_opentelemetry::middleware::OtelAxumLayer::default())
                .service(handler(false)),
        )
    };
    let mut cases = vec![
        Case {
            name: "bare",
            svc: boxed(handler(false)),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "floor",
            svc: floor(false),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "layer/sdk",
            svc: layer(false, sdk()),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "layer/traces_only",
            svc: layer(
                false,
                OtelLayer::builder().tracer_provider(&tp).metrics(false),
            ),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "layer/metrics_only",
            svc: layer(
                false,
                OtelLayer::builder().meter_provider(&mp).traces(false),
            ),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "layer/sampled_out",
            svc: layer(
                false,
                OtelLayer::builder()
                    .tracer_provider(&tp_parent)
                    .meter_provider(&mp),
            ),
            traceparent: UNSAMPLED,
            bare_globals: false,
        },
        Case {
            // One request-hook attribute on the span and metrics, and one label added by
            // the handler through the request's `Labeler`.
            name: "layer/enriched",
            svc: boxed(
                ServiceBuilder::new()
                    .layer(
                        sdk()
                            .labels(true)
                            .on_request(|_parts, attributes| {
                                attributes.metric(KeyValue::new("app.plan", "gold"));
                            })
                            .build(),
                    )
                    .service(labelling_handler()),
            ),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "layer/enriched_span",
            svc: boxed(
                ServiceBuilder::new()
                    .layer(
                        sdk()
                            .labels(true)
                            .on_request(|_parts, attributes| {
                                attributes.span(KeyValue::new("app.plan", "gold"));
                            })
                            .build(),
                    )
                    .service(labelling_handler()),
            ),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "layer/head_event",
            svc: layer(false, sdk().response_head_event(true)),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "layer/server_timing",
            svc: layer(false, sdk().server_timing(true)),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "layer/noop",
            svc: layer(false, OtelLayer::builder()),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "stream/bare",
            svc: boxed(handler(true)),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "stream/floor",
            svc: floor(true),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "stream/layer/sdk",
            svc: layer(true, sdk()),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "stream/layer/message_events",
            svc: layer(true, sdk().message_events(true)),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "stream/layer/end_at_head",
            svc: layer(true, sdk().end_at_head(|_| true)),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "grpc/bare",
            // The same two levels of boxing as the layered cases, as for `bare`.
            svc: grpc(boxed(grpc_handler())),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "grpc/sdk",
            svc: grpc(boxed(
                ServiceBuilder::new()
                    .layer(sdk().build())
                    .service(grpc_handler()),
            )),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "grpc/noop",
            svc: grpc(boxed(
                ServiceBuilder::new()
                    .layer(OtelLayer::builder().build())
                    .service(grpc_handler()),
            )),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "client/layer/sdk",
            svc: client(
                OtelClientLayer::builder()
                    .tracer_provider(&tp)
                    .meter_provider(&mp),
            ),
            traceparent: SAMPLED,
            bare_globals: false,
        },
        Case {
            name: "client/layer/noop",
            svc: client(OtelClientLayer::builder()),
            traceparent: SAMPLED,
            bare_globals: false,
        },
    ];
    opentelemetry::global::set_tracer_provider(tp.clone());
    opentelemetry::global::set_meter_provider(mp.clone());
    opentelemetry::global::set_text_map_propagator(Switched(TraceContextPropagator::new()));
    let peer_sdk = boxed(
        ServiceBuilder::new()
            .layer(opentelemetry_instrumentation_tower::http::server::Layer::new())
            .service(handler(false)),
    );
    // Once every case is built: `tracing` spans become OpenTelemetry spans of `tp`.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tp.tracer("tracing-opentelemetry")));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let noop_meter = opentelemetry::metrics::MeterProvider::meter(
        &opentelemetry::metrics::NoopMeterProvider::new(),
        "noop",
    );
    let nothing_installed = |name, svc| Case {
        bare_globals: true,
        ..Case::new(name, svc, SAMPLED)
    };
    cases.extend([
        Case::new("peer/oitower/sdk", peer_sdk, SAMPLED),
        nothing_installed("peer/oitower/noop", peer_noop),
        Case::new(
            "peer/tower-otel/sdk",
            tower_otel(mp.meter("tower-otel")),
            SAMPLED,
        ),
        nothing_installed("peer/tower-otel/noop", tower_otel(noop_meter)),
        Case::new("peer/axum-otel/sdk", axum_otel(), SAMPLED),
        nothing_installed("peer/axum-otel/noop", axum_otel()),
    ]);
    cases
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The case a case is compared with: its family's `bare` (`stream/bare`, `grpc/bare`),
/// else `bare`.
fn base(name: &str) -> &'static str {
    if name.starts_with("stream/") {
        "stream/bare"
    } else if name.starts_with("grpc/") {
        "grpc/bare"
    } else {
        "bare"
    }
}

/// A unary gRPC exchange on the same request: the request made a gRPC one (`POST`,
/// `content-type: application/grpc`, a method path) before `inner`, whose response is a
/// gRPC one: a message, then the `grpc-status: 0` trailers.
fn grpc(inner: Svc) -> Svc {
    BoxCloneService::new(tower::service_fn(move |mut req: Request<Full<Bytes>>| {
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() =
            http::Uri::from_static("http://api.example.com/helloworld.Greeter/SayHello");
        let headers = req.headers_mut();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert("te", http::HeaderValue::from_static("trailers"));
        inner.clone().oneshot(req)
    }))
}

/// The gRPC server's answer: one message and the trailers.
fn grpc_handler() -> Svc {
    BoxCloneService::new(tower::service_fn(|_req: Request<Full<Bytes>>| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = [
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(
                b"\x00\x00\x00\x00\x07\x0a\x05hello",
            ))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
        let mut res = Response::new(body);
        res.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        Ok::<_, Infallible>(res)
    }))
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let per_round: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    // An optional filter: the cases named, comma-separated, and `bare` (and `stream/bare`
    // for stream cases), so that one case can be profiled against `bare` alone
    // (`valgrind --tool=callgrind`, instructions per request by difference).
    let filter = args.next();
    let mut cases = cases();
    if let Some(filter) = &filter {
        let wanted: Vec<&str> = filter.split(',').collect();
        // A family's cases (`stream/*`, `grpc/*`) run beside the family's own `bare`.
        let bases: Vec<&str> = wanted.iter().map(|f| base(f)).collect();
        cases.retain(|c| c.name == "bare" || bases.contains(&c.name) || wanted.contains(&c.name));
    }

    // Allocations, spans and children of the incoming context per request (warm first:
    // the first requests fill lazy state).
    let mut allocs = Vec::new();
    let mut spans = Vec::new();
    for case in &cases {
        case.run(1000);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let (spans_before, children_before) = (
            SPANS.load(Ordering::Relaxed),
            CHILDREN.load(Ordering::Relaxed),
        );
        case.run(1000);
        allocs.push((ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 1000.0);
        spans.push((
            (SPANS.load(Ordering::Relaxed) - spans_before) as f64 / 1000.0,
            (CHILDREN.load(Ordering::Relaxed) - children_before) as f64 / 1000.0,
        ));
    }

    // Interleaved timing.
    let n = cases.len();
    let mut per_req = vec![Vec::new(); n];
    let mut ratios = vec![Vec::new(); n];
    for round in 0..rounds {
        let mut times = vec![0.0; n];
        for k in 0..n {
            let i = (k + round) % n;
            let case = &cases[i];
            let start = Instant::now();
            case.run(per_round);
            times[i] = start.elapsed().as_nanos() as f64 / f64::from(per_round);
        }
        for i in 0..n {
            let b = cases
                .iter()
                .position(|c| c.name == base(cases[i].name))
                .unwrap();
            per_req[i].push(times[i]);
            ratios[i].push(times[i] / times[b]);
        }
    }
    let med_time: Vec<f64> = per_req.iter_mut().map(|v| median(v)).collect();
    let med_ratio: Vec<f64> = ratios.iter_mut().map(|v| median(v)).collect();
    let idx = |name: &str| cases.iter().position(|c| c.name == name).unwrap();
    let overhead = |i: usize| (med_ratio[i] - 1.0) * med_time[idx(base(cases[i].name))];

    println!("{rounds} rounds x {per_round} requests per case, interleaved; medians");
    println!(
        "{:<22} {:>10} {:>9} {:>11} {:>10} {:>8} {:>6} {:>6}",
        "case", "ns/req", "x bare", "+ns", "x floor+", "allocs", "spans", "child"
    );
    for i in 0..n {
        let name = cases[i].name;
        let floor_name = if name.starts_with("stream/") {
            "stream/floor"
        } else {
            "floor"
        };
        let has_floor = cases.iter().any(|c| c.name == floor_name);
        let vs_floor = if (name.contains("layer") || name.starts_with("peer"))
            && !name.starts_with("client")
            && has_floor
        {
            format!("{:.2}", overhead(i) / overhead(idx(floor_name)))
        } else {
            String::from("-")
        };
        println!(
            "{:<22} {:>10.0} {:>9.3} {:>11.0} {:>10} {:>8.1} {:>6.2} {:>6.2}",
            name,
            med_time[i],
            med_ratio[i],
            overhead(i),
            vs_floor,
            allocs[i],
            spans[i].0,
            spans[i].1
        );
    }
    if filter.is_some() {
        return;
    }
    let sdk = overhead(idx("layer/sdk"));
    for peer in ["oitower", "tower-otel", "axum-otel"] {
        let name = format!("peer/{peer}/sdk");
        println!(
            "{}layer/sdk overhead / {name} overhead: {:.2}",
            if peer == "oitower" { "\n" } else { "" },
            sdk / overhead(idx(&name))
        );
    }
    println!(
        "sampled_out / sdk overhead: {:.2}; noop overhead: {:.0} ns, {:+.1} allocs",
        overhead(idx("layer/sampled_out")) / sdk,
        overhead(idx("layer/noop")),
        allocs[idx("layer/noop")] - allocs[idx("bare")]
    );
}
