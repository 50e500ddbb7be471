//! A tour of tower-otel-http that needs nothing but this repository.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! Four services run in this one process, each with its own SDK providers and its own
//! `service.name`:
//!
//! - `backend`: an axum app answering `GET /inventory/{sku}`;
//! - `warehouse`: a tonic gRPC server answering `demo.Warehouse/Reserve` (unary);
//! - `frontend`: an axum app answering `GET /checkout/{id}` (which asks the backend for the
//!   item over HTTP, through a hyper-util client wrapped in `OtelClientLayer`, then
//!   reserves it at the warehouse over gRPC, through a tonic channel wrapped in the same
//!   layer) and `GET /report` (a slow streamed response);
//! - `demo-client`: the demo itself, sending requests to the frontend.
//!
//! Both apps are wrapped in `OtelLayer` with `Router::layer`, the gRPC server with
//! tonic's `Server::builder().layer`. The same layers record gRPC calls (a
//! `content-type: application/grpc*` request) by the RPC conventions: RPC spans and
//! `rpc.{server,client}.call.duration`, instead of HTTP spans and metrics. Everything is
//! exported into memory and printed at the end: every trace as a waterfall, then every
//! metric.
//!
//! To send the same telemetry to an OpenTelemetry collector as well (OTLP over
//! http/protobuf), set the standard variables:
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 cargo run --example demo
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, Key, KeyValue};
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, HistogramDataPoint, Metric, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracer, SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;
use tower::{ServiceBuilder, ServiceExt};
use tower_otel_http::client::{OtelClient, UrlTemplate};
use tower_otel_http::{HttpRouteLayer, OtelClientLayer, OtelLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The W3C Trace Context example, sent by hand with the last request.
const INCOMING_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_PARENT_ID: &str = "00f067aa0ba902b7";

fn main() -> Result<(), BoxError> {
    let otlp = otlp_configured();
    let demo = Telemetry::new("demo-client", otlp)?;
    let frontend = Telemetry::new("frontend", otlp)?;
    let backend = Telemetry::new("backend", otlp)?;
    let warehouse = Telemetry::new("warehouse", otlp)?;
    let services = [&demo, &frontend, &backend, &warehouse];
    let out = Printer::new();

    out.title("tower-otel-http demo");
    println!("Four services in one process, each with its own tracer and meter provider:\n");
    println!("    demo-client ──HTTP──▶ frontend ──HTTP──▶ backend    GET /inventory/{{sku}}");
    println!("                             └───────gRPC──▶ warehouse  demo.Warehouse/Reserve\n");
    println!(
        "All on 127.0.0.1. The apps are axum routers and the warehouse a tonic server, each\n\
         wrapped in OtelLayer; the clients are a hyper-util client and a tonic channel, each\n\
         wrapped in OtelClientLayer. The same layers record gRPC calls as RPC spans and\n\
         rpc.* metrics. Telemetry is exported into memory and drawn below{}.",
        if otlp {
            ", and sent over OTLP (http/protobuf) too"
        } else {
            ""
        }
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let scenarios = runtime.block_on(run(services, &out))?;
    // Stops the servers; every span has ended by now.
    drop(runtime);

    // Flush and shut down the services' providers side by side (an unreachable collector
    // then costs its retries once, not four times).
    let mut spans = Vec::new();
    let mut export_errors = Vec::new();
    std::thread::scope(|scope| {
        let shutdowns: Vec<_> = services
            .map(|t| scope.spawn(move || t.shut_down()))
            .into_iter()
            .collect();
        for shutdown in shutdowns {
            let (service_spans, errors) = shutdown.join().expect("shutdown does not panic");
            spans.extend(service_spans);
            export_errors.extend(errors);
        }
    });

    print_traces(&out, &scenarios, &spans);
    out.section("Metrics");
    println!(
        "Each service's metrics, one row per attribute set. A column ≤X counts the\n\
         measurements between the previous bucket bound and X; block heights compare counts."
    );
    for t in services {
        print_metrics(&out, t)?;
    }

    out.section("OTLP");
    if otlp {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|_| "the OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT".into());
        if export_errors.is_empty() {
            println!("Exported over OTLP (http/protobuf) to {endpoint}: every export succeeded.");
        } else {
            println!("Exporting over OTLP (http/protobuf) to {endpoint} failed:");
        }
        for e in &export_errors {
            println!("  {e}");
        }
    } else {
        println!(
            "Not exporting. To send the same telemetry to a collector as well, run\n  \
             OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 cargo run --example demo"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Telemetry: one set of SDK providers per service.

/// A service's SDK providers, exporting into memory (and over OTLP when configured).
struct Telemetry {
    service: &'static str,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
}

impl Telemetry {
    fn new(service: &'static str, otlp: bool) -> Result<Self, BoxError> {
        let resource = Resource::builder().with_service_name(service).build();
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();

        let mut tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_simple_exporter(spans.clone());
        let mut meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            // Collected by hand at the end (a long interval: no export before that).
            .with_reader(
                PeriodicReader::builder(metrics.clone())
                    .with_interval(Duration::from_secs(3600))
                    .build(),
            );
        if otlp {
            // The endpoint, headers, timeout, ... come from the OTEL_EXPORTER_OTLP_*
            // variables. The SDK exports from its own threads, so the blocking reqwest
            // client (no TLS, no tokio runtime needed) fits.
            //
            // The demo runs for a second: one retry, not the recommended three.
            let retry = RetryPolicy::recommended().with_max_retries(1);
            let span_exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_retry_policy(retry.clone())
                .build()?;
            let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_retry_policy(retry)
                .build()?;
            tracer_provider = tracer_provider.with_batch_exporter(span_exporter);
            meter_provider =
                meter_provider.with_reader(PeriodicReader::builder(metric_exporter).build());
        }

        Ok(Self {
            service,
            tracer_provider: tracer_provider.build(),
            meter_provider: meter_provider.build(),
            spans,
            metrics,
        })
    }

    /// A server layer recording with this service's providers.
    fn server_layer(&self) -> OtelLayer {
        OtelLayer::builder()
            .tracer_provider(&self.tracer_provider)
            .meter_provider(&self.meter_provider)
            .build()
    }

    /// A hyper-util client whose requests this service's providers record.
    fn http_client(&self) -> HttpClient {
        let layer = OtelClientLayer::builder()
            .tracer_provider(&self.tracer_provider)
            .meter_provider(&self.meter_provider)
            .build();
        ServiceBuilder::new()
            .layer(layer)
            .service(Client::builder(TokioExecutor::new()).build_http())
    }

    /// A tonic channel to the gRPC server at `addr`, whose calls this service's providers
    /// record: the same `OtelClientLayer`, around the channel.
    async fn grpc_client(&self, addr: SocketAddr) -> Result<GrpcClient, BoxError> {
        let target = format!("http://{addr}");
        let channel = Endpoint::from_shared(target.clone())?.connect().await?;
        // tonic sends path-only URIs (`/demo.Warehouse/Reserve`): the channel adds the
        // authority further in, where no layer sees it. `target` tells the layer where the
        // calls go, for `server.address` and `server.port`.
        let layer = OtelClientLayer::builder()
            .tracer_provider(&self.tracer_provider)
            .meter_provider(&self.meter_provider)
            .target(&target)
            .build();
        Ok(ServiceBuilder::new().layer(layer).service(channel))
    }

    /// Flushes and shuts down the providers; returns the spans that were recorded, and
    /// the errors of the exports that failed.
    ///
    /// Spans are read between the flush and the shutdown: the in-memory span exporter
    /// forgets them on shutdown. Metrics are read later: shutting the meter provider down
    /// collects them a last time, into every reader.
    fn shut_down(&self) -> (Vec<(&'static str, SpanData)>, Vec<String>) {
        let mut errors = Vec::new();
        let mut failed = |what: &str, e: &dyn std::fmt::Display| {
            errors.push(format!("{} {what}: {e}", self.service));
        };
        if let Err(e) = self.tracer_provider.force_flush() {
            failed("traces", &e);
        }
        let spans = self.spans.get_finished_spans().unwrap_or_default();
        if let Err(e) = self.tracer_provider.shutdown() {
            failed("traces", &e);
        }
        if let Err(e) = self.meter_provider.shutdown() {
            failed("metrics", &e);
        }
        let spans = spans.into_iter().map(|s| (self.service, s)).collect();
        (spans, errors)
    }

    fn finished_span_count(&self) -> usize {
        self.spans.get_finished_spans().map_or(0, |s| s.len())
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

type HttpClient = OtelClient<Client<HttpConnector, Empty<Bytes>>>;
type GrpcClient = OtelClient<Channel>;

// ---------------------------------------------------------------------------------------
// The two apps and the gRPC service.

/// `router.route(path, handler)`, with `path` tagged as the span's `http.route`.
///
/// (With this crate's `axum` feature, axum's `MatchedPath` is read directly and the tag is
/// not needed; tagging works with or without it.)
fn route<S>(router: Router<S>, path: &'static str, handler: MethodRouter<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route(path, handler.route_layer(HttpRouteLayer::new(path)))
}

#[derive(Clone)]
struct Frontend {
    backend: SocketAddr,
    http: HttpClient,
    warehouse: GrpcClient,
    tracer: SdkTracer,
}

async fn frontend_app(
    t: &Telemetry,
    backend: SocketAddr,
    warehouse: SocketAddr,
) -> Result<Router, BoxError> {
    let state = Frontend {
        backend,
        http: t.http_client(),
        warehouse: t.grpc_client(warehouse).await?,
        tracer: t.tracer_provider.tracer("frontend-handlers"),
    };
    let router = Router::new();
    let router = route(router, "/checkout/{id}", get(checkout));
    let router = route(router, "/report", get(report));
    Ok(router.with_state(state).layer(t.server_layer()))
}

/// Looks the order up (a span of our own), asks the backend for the item over HTTP, then
/// reserves it at the warehouse over gRPC.
async fn checkout(State(app): State<Frontend>, Path(order): Path<u32>) -> Response {
    // The server span is the current context while the handler runs, so a span started
    // here with the OpenTelemetry API is its child with no extra code.
    let cx = Context::current_with_span(app.tracer.start("load order"));
    let sku = async {
        tokio::time::sleep(Duration::from_millis(3)).await;
        format!("sku-{order}")
    }
    .with_context(cx.clone())
    .await;
    cx.span()
        .set_attribute(KeyValue::new("app.sku", sku.clone()));
    cx.span().end();

    // The client span is a child of the server span too, and its context travels to the
    // backend in `traceparent`. The template names the span and becomes `url.template`.
    let mut request = http::Request::get(format!("http://{}/inventory/{sku}", app.backend))
        .body(Empty::new())
        .expect("a valid request");
    request
        .extensions_mut()
        .insert(UrlTemplate::from_static("/inventory/{sku}"));
    let response = match app.http.oneshot(request).await {
        Ok(response) => response,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("backend: {e}\n")).into_response(),
    };
    let status = response.status();
    let stock = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("backend: {e}\n")).into_response(),
    };
    match status {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => {
            return (
                StatusCode::NOT_FOUND,
                format!("order {order}: no such item\n"),
            )
                .into_response()
        }
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("order {order}: inventory unavailable\n"),
            )
                .into_response()
        }
    }

    // The gRPC call goes through the same kind of layer, around a tonic channel: it sees
    // `content-type: application/grpc` and records an RPC CLIENT span (named after the
    // method), another child of the server span, whose context travels to the warehouse
    // in the call's `traceparent` header.
    let reservation = match reserve(app.warehouse, &sku).await {
        Ok(reply) => reply.reservation,
        Err(status) if status.code() == tonic::Code::NotFound => {
            return (
                StatusCode::CONFLICT,
                format!("order {order}: {sku} is out of stock\n"),
            )
                .into_response()
        }
        Err(status) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("warehouse: {}\n", status.message()),
            )
                .into_response()
        }
    };
    format!(
        "order {order}: {} reservation {reservation}\n",
        String::from_utf8_lossy(&stock)
    )
    .into_response()
}

/// Calls `demo.Warehouse/Reserve`, as a tonic-generated client would.
async fn reserve(channel: GrpcClient, sku: &str) -> Result<ReserveReply, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("warehouse unreachable: {e}")))?;
    let request = tonic::Request::new(ReserveRequest { sku: sku.into() });
    let path = PathAndQuery::from_static("/demo.Warehouse/Reserve");
    let reply = grpc.unary(request, path, ProstCodec::default()).await?;
    Ok(reply.into_inner())
}

/// Five lines, 50 ms apart: the server span lasts until the last one is sent.
async fn report() -> Response {
    let lines = futures_util::stream::unfold(1u32, |n| async move {
        if n > 5 {
            return None;
        }
        if n > 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some((Ok::<_, Infallible>(format!("report line {n}\n")), n + 1))
    });
    Body::from_stream(lines).into_response()
}

fn backend_app(t: &Telemetry) -> Router {
    route(Router::new(), "/inventory/{sku}", get(inventory)).layer(t.server_layer())
}

async fn inventory(Path(sku): Path<String>) -> Response {
    tokio::time::sleep(Duration::from_millis(8)).await;
    match sku.as_str() {
        "sku-999" => (StatusCode::NOT_FOUND, "no such item\n").into_response(),
        "sku-13" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "inventory database unavailable\n",
        )
            .into_response(),
        _ => format!("{{\"sku\":\"{sku}\",\"in_stock\":7}}").into_response(),
    }
}

async fn serve(app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The warehouse: `demo.Warehouse` served by tonic (h2c), in `OtelLayer` too.
async fn serve_warehouse(t: &Telemetry) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .layer(t.server_layer())
        .add_service(Warehouse)
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    Ok(addr)
}

// `demo.Warehouse`, by hand: what tonic-build would generate from
//
//     package demo;
//     service Warehouse { rpc Reserve(ReserveRequest) returns (ReserveReply); }
//     message ReserveRequest { string sku = 1; }
//     message ReserveReply { string reservation = 1; }
//
// cut down to the one unary method, so that the demo needs no build script and no protoc.

#[derive(Clone, PartialEq, prost::Message)]
struct ReserveRequest {
    #[prost(string, tag = "1")]
    sku: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReserveReply {
    #[prost(string, tag = "1")]
    reservation: String,
}

/// Reserves one of `sku`; the warehouse does not stock `sku-8` (NOT_FOUND).
async fn reserve_one(
    request: tonic::Request<ReserveRequest>,
) -> Result<tonic::Response<ReserveReply>, tonic::Status> {
    let sku = request.into_inner().sku;
    tokio::time::sleep(Duration::from_millis(5)).await;
    if sku == "sku-8" {
        return Err(tonic::Status::not_found(format!(
            "{sku} is not stocked here"
        )));
    }
    let reservation = format!("R-{}", sku.trim_start_matches("sku-"));
    Ok(tonic::Response::new(ReserveReply { reservation }))
}

/// The server side of `demo.Warehouse`: routes `Reserve` to [`reserve_one`].
#[derive(Clone, Copy)]
struct Warehouse;

impl tonic::server::NamedService for Warehouse {
    const NAME: &'static str = "demo.Warehouse";
}

impl tower::Service<http::Request<tonic::body::Body>> for Warehouse {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            Ok(match request.uri().path() {
                "/demo.Warehouse/Reserve" => {
                    let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                    grpc.unary(tower::service_fn(reserve_one), request).await
                }
                _ => tonic::Status::unimplemented("").into_http(),
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// The demo client.

struct Scenario {
    label: &'static str,
    path: &'static str,
    template: &'static str,
    /// Sent by hand, through a client with no telemetry (`OtelClientLayer` would replace it).
    traceparent: Option<String>,
}

async fn run(services: [&Telemetry; 4], out: &Printer) -> Result<Vec<Scenario>, BoxError> {
    let [demo, frontend, backend, warehouse] = services;
    let backend_addr = serve(backend_app(backend)).await?;
    let warehouse_addr = serve_warehouse(warehouse).await?;
    let frontend_addr = serve(frontend_app(frontend, backend_addr, warehouse_addr).await?).await?;

    let scenarios = vec![
        Scenario {
            label: "success",
            path: "/checkout/42",
            template: "/checkout/{id}",
            traceparent: None,
        },
        Scenario {
            label: "not found (the backend has no such item)",
            path: "/checkout/999",
            template: "/checkout/{id}",
            traceparent: None,
        },
        Scenario {
            label: "server error (the backend fails)",
            path: "/checkout/13",
            template: "/checkout/{id}",
            traceparent: None,
        },
        Scenario {
            label: "gRPC error (the warehouse does not stock sku-8: NOT_FOUND)",
            path: "/checkout/8",
            template: "/checkout/{id}",
            traceparent: None,
        },
        Scenario {
            label: "slow streamed response (5 lines, 50 ms apart)",
            path: "/report",
            template: "/report",
            traceparent: None,
        },
        Scenario {
            label: "incoming traceparent, set by hand",
            path: "/checkout/7",
            template: "/checkout/{id}",
            traceparent: Some(format!("00-{INCOMING_TRACE_ID}-{INCOMING_PARENT_ID}-01")),
        },
    ];

    out.section("Requests sent by demo-client");
    let instrumented = demo.http_client();
    let plain: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    for (i, scenario) in scenarios.iter().enumerate() {
        let mut request = http::Request::get(format!("http://{frontend_addr}{}", scenario.path))
            .body(Empty::new())?;
        let start = Instant::now();
        let (status, mut body) = if let Some(traceparent) = &scenario.traceparent {
            request
                .headers_mut()
                .insert("traceparent", traceparent.parse()?);
            let (parts, body) = plain.request(request).await?.into_parts();
            (parts.status, body.boxed())
        } else {
            request
                .extensions_mut()
                .insert(UrlTemplate::from_static(scenario.template));
            let (parts, body) = instrumented.clone().oneshot(request).await?.into_parts();
            (parts.status, body.boxed())
        };
        let (mut bytes, mut chunks) = (0, 0);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                bytes += data.len();
                chunks += 1;
            }
        }
        let extra = match &scenario.traceparent {
            Some(tp) => format!("  traceparent: {tp}"),
            None if chunks > 1 => format!("  {chunks} chunks"),
            None => String::new(),
        };
        println!(
            "  {}. GET {:<14} {:<26} {:>4} bytes {:>6.1} ms{extra}",
            i + 1,
            scenario.path,
            status.to_string(),
            bytes,
            start.elapsed().as_secs_f64() * 1e3,
        );
    }

    // A server span ends when its body has been handed to the connection, which can be a
    // moment after the client has read it: wait until no more spans arrive.
    let count = || -> usize { services.iter().map(|t| t.finished_span_count()).sum() };
    let (mut last, mut stable) = (count(), 0);
    let deadline = Instant::now() + Duration::from_secs(2);
    while stable < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = count();
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    Ok(scenarios)
}

// ---------------------------------------------------------------------------------------
// Drawing traces.

const NAME_WIDTH: usize = 32;
const BAR_WIDTH: usize = 22;

/// The attributes shown under each HTTP span, in this order.
const KEY_ATTRIBUTES: &[&str] = &[
    "http.route",
    "http.response.status_code",
    "error.type",
    "url.template",
    "url.full",
];

/// The attributes shown under each RPC span (named after its `rpc.method`), in this order;
/// `server.*` only under client spans (where `OtelClientLayerBuilder::target` gave them).
const RPC_KEY_ATTRIBUTES: &[&str] = &[
    "rpc.system.name",
    "rpc.response.status_code",
    "error.type",
    "server.address",
    "server.port",
];

fn print_traces(out: &Printer, scenarios: &[Scenario], spans: &[(&'static str, SpanData)]) {
    // Group by trace, in the order the traces started (the order the demo sent them).
    let mut traces: Vec<Vec<&(&'static str, SpanData)>> = Vec::new();
    for span in spans {
        let id = span.1.span_context.trace_id();
        match traces
            .iter_mut()
            .find(|t| t[0].1.span_context.trace_id() == id)
        {
            Some(trace) => trace.push(span),
            None => traces.push(vec![span]),
        }
    }
    let started = |t: &Vec<&(&str, SpanData)>| t.iter().map(|s| s.1.start_time).min();
    traces.sort_by_key(started);

    out.section(&format!("Traces ({})", traces.len()));
    println!(
        "One waterfall per trace. Bars are scaled to the whole trace; a span's parent is the\n\
         line above it at the next indentation level. Status: ERROR, OK, or - (unset)."
    );
    for (i, trace) in traces.iter().enumerate() {
        let label = scenarios.get(i).map_or("", |s| s.label);
        print_trace(out, i + 1, label, trace);
    }
}

fn print_trace(out: &Printer, number: usize, label: &str, trace: &[&(&'static str, SpanData)]) {
    let start = trace.iter().map(|s| s.1.start_time).min().expect("a span");
    let end = trace.iter().map(|s| s.1.end_time).max().expect("a span");
    let total = secs_between(start, end).max(1e-9);

    out.heading(&format!("[{number}] {label}"));
    println!(
        "    trace {} · {} spans · {:.1} ms",
        trace[0].1.span_context.trace_id(),
        trace.len(),
        total * 1e3
    );
    println!(
        "    {:<12}{:<w$} {:<9}{:<b$}  {:>9}  status",
        "service",
        "span",
        "kind",
        format!(
            "0{:>w2$}",
            format!("{:.0} ms", total * 1e3),
            w2 = BAR_WIDTH - 1
        ),
        "duration",
        w = NAME_WIDTH,
        b = BAR_WIDTH + 2,
    );

    // Roots: spans whose parent is not in this process's part of the trace.
    let in_trace = |id| trace.iter().any(|s| s.1.span_context.span_id() == id);
    let mut roots: Vec<_> = trace
        .iter()
        .filter(|s| !in_trace(s.1.parent_span_id))
        .collect();
    roots.sort_by_key(|s| s.1.start_time);
    for root in roots {
        if root.1.parent_span_is_remote {
            println!(
                "    {}",
                out.dim(&format!(
                    "(parent {} is remote: it came in the traceparent header)",
                    root.1.parent_span_id
                ))
            );
        }
        print_span(out, trace, root, start, total, "", "");
    }
}

fn print_span(
    out: &Printer,
    trace: &[&(&'static str, SpanData)],
    span: &(&'static str, SpanData),
    trace_start: SystemTime,
    total: f64,
    branch: &str,
    indent: &str,
) {
    let (service, data) = span;
    let offset = secs_between(trace_start, data.start_time);
    let duration = secs_between(data.start_time, data.end_time);
    let name = truncate(&format!("{branch}{}", data.name), NAME_WIDTH);
    let kind = match data.span_kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Internal => "internal",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    };
    let (status, description) = match &data.status {
        Status::Unset => ("-".to_string(), None),
        Status::Ok => ("OK".to_string(), None),
        Status::Error { description } => (
            out.alert("ERROR"),
            Some(description.to_string()).filter(|d| !d.is_empty()),
        ),
    };
    println!(
        "    {:<12}{:<NAME_WIDTH$} {:<9}│{}│  {:>6.1} ms  {status}",
        service,
        name,
        kind,
        bar(offset / total, (offset + duration) / total, BAR_WIDTH),
        duration * 1e3,
    );

    // The key attributes (all of them for spans the app made itself), wrapped.
    let mut attrs: Vec<String> = if data.span_kind == SpanKind::Internal {
        data.attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect()
    } else {
        let rpc = data
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "rpc.system.name");
        let keys = if rpc {
            RPC_KEY_ATTRIBUTES
        } else {
            KEY_ATTRIBUTES
        };
        keys.iter()
            .filter(|key| !(data.span_kind == SpanKind::Server && key.starts_with("server.")))
            .filter_map(|key| {
                let kv = data.attributes.iter().find(|kv| kv.key.as_str() == *key)?;
                Some(format!("{}={}", kv.key, kv.value))
            })
            .collect()
    };
    if let Some(description) = description {
        attrs.push(format!("status: {description}"));
    }
    let pad = format!("    {:12}{indent}  ", "");
    for line in wrap(&attrs, 100usize.saturating_sub(pad.chars().count()).max(40)) {
        println!("{pad}{}", out.dim(&line));
    }

    let mut children: Vec<_> = trace
        .iter()
        .filter(|s| s.1.parent_span_id == data.span_context.span_id())
        .collect();
    children.sort_by_key(|s| s.1.start_time);
    let last = children.len().saturating_sub(1);
    for (i, child) in children.into_iter().enumerate() {
        let (branch, more) = if i == last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        print_span(
            out,
            trace,
            child,
            trace_start,
            total,
            &format!("{indent}{branch}"),
            &format!("{indent}{more}"),
        );
    }
}

/// A bar from `from` to `to` (fractions of the width): whole cells, and an eighth-block
/// for the partial last cell, so short spans still show.
fn bar(from: f64, to: f64, width: usize) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let w = width as f64;
    let first = ((from * w).floor() as usize).min(width - 1);
    let end = (to * w).clamp(first as f64 + 0.125, w);
    let full = end.floor() as usize;
    let eighths = ((end - end.floor()) * 8.0).round() as usize;
    let mut cells = String::with_capacity(width * 3);
    for i in 0..width {
        cells.push(if i < first {
            ' '
        } else if i < full {
            '█'
        } else if i == full && eighths > 0 {
            if eighths >= 8 {
                '█'
            } else {
                EIGHTHS[eighths]
            }
        } else {
            ' '
        });
    }
    cells
}

// ---------------------------------------------------------------------------------------
// Drawing metrics.

/// One data point, whatever its number type.
struct Point {
    attributes: Vec<(String, String)>,
    count: u64,
    sum: f64,
    /// For sums and gauges: the value.
    value: Option<f64>,
    bounds: Vec<f64>,
    buckets: Vec<u64>,
}

fn histogram_points<'a, T: Copy + 'a>(
    points: impl Iterator<Item = &'a HistogramDataPoint<T>>,
    conv: impl Fn(T) -> f64,
) -> Vec<Point> {
    points
        .map(|p| Point {
            attributes: attribute_pairs(p.attributes()),
            count: p.count(),
            sum: conv(p.sum()),
            value: None,
            bounds: p.bounds().collect(),
            buckets: p.bucket_counts().collect(),
        })
        .collect()
}

/// The attributes as `(key, value)` strings: the route (or method) and status first, then
/// by name.
fn attribute_pairs<'a>(attrs: impl Iterator<Item = &'a KeyValue>) -> Vec<(String, String)> {
    const FIRST: [&str; 6] = [
        "http.route",
        "url.template",
        "rpc.method",
        "http.response.status_code",
        "rpc.response.status_code",
        "error.type",
    ];
    let rank = |key: &str| FIRST.iter().position(|k| *k == key).unwrap_or(FIRST.len());
    let mut pairs: Vec<_> = attrs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    pairs.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    pairs
}

fn value_point<'a>(attrs: impl Iterator<Item = &'a KeyValue>, value: f64) -> Point {
    Point {
        attributes: attribute_pairs(attrs),
        count: 0,
        sum: 0.0,
        value: Some(value),
        bounds: Vec::new(),
        buckets: Vec::new(),
    }
}

/// The points of a metric, and what kind it is.
fn points(metric: &Metric) -> (&'static str, Vec<Point>) {
    macro_rules! by_kind {
        ($data:expr, $conv:expr) => {
            match $data {
                MetricData::Histogram(h) => ("histogram", histogram_points(h.data_points(), $conv)),
                MetricData::Sum(s) => (
                    if s.is_monotonic() {
                        "counter"
                    } else {
                        "up-down counter"
                    },
                    s.data_points()
                        .map(|p| value_point(p.attributes(), $conv(p.value())))
                        .collect(),
                ),
                MetricData::Gauge(g) => (
                    "gauge",
                    g.data_points()
                        .map(|p| value_point(p.attributes(), $conv(p.value())))
                        .collect(),
                ),
                MetricData::ExponentialHistogram(_) => ("exponential histogram", Vec::new()),
            }
        };
    }
    match metric.data() {
        AggregatedMetrics::F64(data) => by_kind!(data, |v: f64| v),
        AggregatedMetrics::U64(data) => by_kind!(data, |v: u64| v as f64),
        AggregatedMetrics::I64(data) => by_kind!(data, |v: i64| v as f64),
    }
}

fn print_metrics(out: &Printer, t: &Telemetry) -> Result<(), BoxError> {
    let exported = t.metrics.get_finished_metrics()?;
    // Cumulative temporality: the last export holds everything.
    let Some(last) = exported.last() else {
        return Ok(());
    };
    let service = last
        .resource()
        .get(&Key::from_static_str("service.name"))
        .map_or_else(|| t.service.to_string(), |v| v.to_string());
    for scope in last.scope_metrics() {
        for metric in scope.metrics() {
            let (kind, points) = points(metric);
            print_metric(out, &service, metric, kind, &points);
        }
    }
    Ok(())
}

fn print_metric(out: &Printer, service: &str, metric: &Metric, kind: &str, points: &[Point]) {
    let unit = metric.unit();
    out.heading(&format!("{service} · {}  ({kind}, {unit})", metric.name()));
    if !metric.description().is_empty() {
        println!("    {}", out.dim(metric.description()));
    }
    if points.is_empty() {
        println!("    (no data points)");
        return;
    }

    // Attributes that every point shares go in one line; the others become columns.
    let common: Vec<&(String, String)> = points[0]
        .attributes
        .iter()
        .filter(|kv| points.iter().all(|p| p.attributes.contains(kv)))
        .collect();
    if !common.is_empty() {
        let common: Vec<String> = common.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (i, line) in wrap(&common, 88).into_iter().enumerate() {
            let lead = if i == 0 { "every point:" } else { "" };
            println!("    {}", out.dim(&format!("{lead:<13}{line}")));
        }
    }
    let mut keys: Vec<&str> = Vec::new();
    for (key, _) in points.iter().flat_map(|p| &p.attributes) {
        if !keys.contains(&key.as_str()) && !common.iter().any(|(k, _)| k == key) {
            keys.push(key);
        }
    }
    let cells = |p: &Point| -> Vec<String> {
        keys.iter()
            .map(|key| {
                p.attributes
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or_else(String::new, |(_, v)| v.clone())
            })
            .collect()
    };
    let mut rows: Vec<(Vec<String>, &Point)> = points.iter().map(|p| (cells(p), p)).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let key_widths: Vec<usize> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            rows.iter()
                .map(|(cells, _)| cells[i].chars().count())
                .chain([key.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let attribute_cells = |cells: &[String]| -> String {
        let mut line = String::from("    ");
        for (cell, width) in cells.iter().zip(&key_widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line
    };
    let key_header = attribute_cells(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());

    if points[0].value.is_some() {
        println!("{}", out.dim(&format!("{key_header}{:>9}", "value")));
        for (cells, point) in &rows {
            let value = format_amount(point.value.unwrap_or_default(), unit);
            println!("{}{value:>9}", attribute_cells(cells));
        }
        return;
    }

    // Histograms: one column per bucket, from the first to the last bucket any point uses.
    let bounds = &points[0].bounds;
    let used = |i: usize| {
        points
            .iter()
            .any(|p| p.buckets.get(i).is_some_and(|&c| c > 0))
    };
    let buckets = bounds.len() + 1;
    let lo = (0..buckets).find(|&i| used(i)).unwrap_or(0);
    let hi = (0..buckets).rev().find(|&i| used(i)).unwrap_or(0);
    let columns: Vec<String> = (lo..=hi)
        .map(|i| match bounds.get(i) {
            Some(b) => format!("≤{}", format_bound(*b, unit)),
            None => format!(">{}", format_bound(bounds[bounds.len() - 1], unit)),
        })
        .collect();
    let max_count = points
        .iter()
        .flat_map(|p| p.buckets.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1);
    let width = |c: &String| c.chars().count().max(5) + 2;

    let mut header = format!(
        "{key_header}{:>5}  {:>9}",
        "count",
        if unit == "s" { "mean" } else { "sum" }
    );
    for c in &columns {
        header.push_str(&format!("{c:>w$}", w = width(c)));
    }
    println!("{}", out.dim(&header));
    for (cells, point) in &rows {
        let summary = if unit == "s" {
            format_amount(point.sum / point.count.max(1) as f64, unit)
        } else {
            format_amount(point.sum, unit)
        };
        let mut row = format!("{}{:>5}  {summary:>9}", attribute_cells(cells), point.count);
        for (i, c) in (lo..=hi).zip(&columns) {
            let count = point.buckets.get(i).copied().unwrap_or(0);
            let cell = if count == 0 {
                "·".to_string()
            } else {
                format!("{} {count}", level(count, max_count))
            };
            row.push_str(&format!("{cell:>w$}", w = width(c)));
        }
        println!("{row}");
    }
}

/// A block whose height shows `count` against `max`.
fn level(count: u64, max: u64) -> char {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let i = ((count as f64 / max as f64) * 8.0).ceil() as usize;
    LEVELS[i.clamp(1, 8) - 1]
}

fn format_bound(bound: f64, unit: &str) -> String {
    match unit {
        "s" if bound < 1.0 => format!("{}ms", trim(bound * 1e3)),
        "s" => format!("{}s", trim(bound)),
        "By" if bound >= 1024.0 * 1024.0 => format!("{}MiB", trim(bound / 1024.0 / 1024.0)),
        "By" if bound >= 1024.0 => format!("{}KiB", trim(bound / 1024.0)),
        "By" => format!("{}B", trim(bound)),
        _ => trim(bound),
    }
}

fn format_amount(amount: f64, unit: &str) -> String {
    match unit {
        "s" => format!("{:.1} ms", amount * 1e3),
        "By" => format!("{} B", trim(amount)),
        "{request}" | "1" | "" => trim(amount),
        _ => format!("{} {unit}", trim(amount)),
    }
}

/// A number without trailing zeros.
fn trim(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

// ---------------------------------------------------------------------------------------
// Text helpers.

fn secs_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap_or_default().as_secs_f64()
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width - 1).collect();
        t.push('…');
        t
    }
}

/// Joins `items` with two spaces into lines of at most `width` characters.
fn wrap(items: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for item in items {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 2 + item.chars().count() <= width => {
                line.push_str("  ");
                line.push_str(item);
            }
            _ => lines.push(item.clone()),
        }
    }
    lines
}

/// Plain text, with a little emphasis when stdout is a terminal.
struct Printer {
    ansi: bool,
}

impl Printer {
    fn new() -> Self {
        Self {
            ansi: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.ansi {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }

    fn alert(&self, s: &str) -> String {
        self.paint("1;31", s)
    }

    fn title(&self, s: &str) {
        println!("{}\n{}", self.paint("1", s), "═".repeat(s.chars().count()));
    }

    fn section(&self, s: &str) {
        println!(
            "\n{}\n{}",
            self.paint("1", s),
            "─".repeat(s.chars().count())
        );
    }

    fn heading(&self, s: &str) {
        println!("\n  {}", self.paint("1", s));
    }
}
