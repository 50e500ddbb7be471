//! OpenTelemetry traces and metrics for tower/hyper HTTP servers and clients, following
//! the stable OpenTelemetry HTTP semantic conventions.
//!
//! - [`OtelLayer`] (server): extracts the incoming W3C trace context, opens a SERVER
//!   span, makes it current while the inner service and the response body run, ends it
//!   when the response body has been sent, and records `http.server.request.duration`
//!   and the body-size histograms. See [`server`].
//! - [`OtelClientLayer`] (client): opens a CLIENT span as a child of the current context,
//!   injects it into the outgoing headers, and records `http.client.request.duration`.
//!   See [`client`].
//! - [`HttpRoute`]: the route tag that gives `http.route` and the span name
//!   `{method} {route}`, from any router.
//! - [`propagation::TraceContextPropagator`]: a strict W3C Trace Context propagator, the
//!   default when the application installed none.
//!
//! The crate uses the OpenTelemetry API only. Install an SDK (tracer and meter
//! providers, and an exporter such as OTLP) **before building the layers**:
//! `OtelLayer::new()` and `OtelClientLayer::new()` take the global providers as they
//! are at that moment; the builders take explicit ones. With nothing installed, the
//! layers do no per-request work.
//!
//! ```toml
//! tower-otel-http = { version = "0.1", features = ["axum"] } # for an axum app
//! ```
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_otel_http::OtelLayer;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "a user" }))
//!     .layer(OtelLayer::new());
//! ```
//!
//! # Configuration
//!
//! [`OtelLayer::builder`] and [`OtelClientLayer::builder`] (and, for reqwest,
//! `OtelMiddleware::builder`) share one naming scheme: an on/off option is `name(bool)`
//! (`traces`, `metrics`, `active_requests`, `body_size_metrics`, ...); a list is
//! `name(IntoIterator)` and replaces the default list (`request_headers`,
//! `sensitive_headers`, `known_methods`, ...); a callback takes a closure (`filter`,
//! `span_name`), and a per-request variant of an on/off option is `name_fn`
//! (`public_endpoint_fn`). Closures that look at a request get its
//! [`http::request::Parts`], named `parts` in these docs: `parts.uri.path()`.
//!
//! An option that cannot work makes `build()` **panic**, with a message naming the
//! option: an invalid header name, an empty or invalid list of known methods, an
//! excluded path that does not start with `/`, a metrics option on a layer built with
//! `metrics(false)`, a span-name callback with `traces(false)`. The layers are built once,
//! at start-up, where a panic is seen at once; nothing is silently ignored.
//!
//! # Configuration by environment
//!
//! Operators can change what is captured without a rebuild, with the variables the
//! OpenTelemetry instrumentations of other languages use. They are read when a layer is
//! built, and only for an option the builder left unset: **a builder option always wins**.
//! A malformed value never panics: it is reported once on standard error and ignored
//! (in a list, only the malformed entries are dropped).
//!
//! | variable | layer | what it sets | builder option |
//! |---|---|---|---|
//! | `OTEL_INSTRUMENTATION_HTTP_SERVER_CAPTURE_REQUEST_HEADERS` | server | request headers captured as `http.request.header.<name>` (comma-separated names) | `request_headers` |
//! | `OTEL_INSTRUMENTATION_HTTP_SERVER_CAPTURE_RESPONSE_HEADERS` | server | response headers captured as `http.response.header.<name>` | `response_headers` |
//! | `OTEL_INSTRUMENTATION_HTTP_CLIENT_CAPTURE_REQUEST_HEADERS` | client | request headers captured | `request_headers` |
//! | `OTEL_INSTRUMENTATION_HTTP_CLIENT_CAPTURE_RESPONSE_HEADERS` | client | response headers captured | `response_headers` |
//! | `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS` | both | headers whose captured values are `REDACTED`; replaces the default list | `sensitive_headers` |
//! | `OTEL_INSTRUMENTATION_HTTP_SERVER_EXCLUDED_PATHS` | server | paths with no span and no metrics: exact (`/health`) or a prefix with a trailing `*` (`/internal/*`) | `excluded_paths` |
//! | `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` | both | the methods recorded as themselves (others are `_OTHER`) | `known_methods` |
//!
//! The capture variables are Java's names; the sanitize variable is Python's. Python's
//! excluded-URLs variable (`OTEL_PYTHON_EXCLUDED_URLS`) names its language and matches
//! regular expressions against the whole URL; the server here sees a path, so the
//! variable is named in the `OTEL_INSTRUMENTATION_HTTP_SERVER_*` family, after what it
//! matches, and takes exact paths and prefixes (no regular-expression engine in the
//! library).
//!
//! Captured headers never carry credentials, whoever configured them: the values of
//! `authorization`, `proxy-authorization`, `cookie`, `set-cookie`, `x-api-key`,
//! `x-auth-token` and `x-csrf-token` are recorded as `REDACTED` unless the sanitize list
//! is replaced.
//!
//! # Feature flags
//!
//! - `axum`: axum's `MatchedPath` becomes `http.route`, `ConnectInfo<SocketAddr>` gives
//!   `client.address` and `network.peer.*`, and `HttpRouteLayer::matched_path()`.
//! - `reqwest`: an `OtelMiddleware` for `reqwest-middleware` (turns `hyper-util` on).
//! - `hyper-util`: for hyper-util's legacy client, `network.peer.*` on client spans from
//!   the connection a response came over, and transport errors told apart in
//!   `error.type` (`connect`, `timeout`, `connection_closed`, ...).
//! - `tracing-json`: [`logs::TraceJson`], a `tracing-subscriber` JSON event format whose
//!   lines carry the current OpenTelemetry `trace_id` and `span_id` (adds
//!   `tracing-subscriber` and `tracing-core` to the dependencies).
//! - `experimental-bound-instruments`: records the metrics through handles bound once
//!   per attribute set, with opentelemetry's experimental bound-instrument API (and turns
//!   that API on in `opentelemetry_sdk`, which thereby becomes a dependency; with
//!   another SDK, check that it implements `bind`, or the measurements are dropped). One
//!   fast hash and one read lock per request instead of a SipHash and a lock per
//!   histogram; at most 1024 attribute sets are bound, further ones are recorded as
//!   usual.
//!
//! # When telemetry is recorded
//!
//! Each request's span ends, and its metrics are recorded, exactly once:
//!
//! - when its response body ends: the last data frame (the body reports
//!   `is_end_stream`), trailers, the end of the stream, or at once for a body that is
//!   empty from the start (HEAD, 204, an empty body);
//! - when the response body fails;
//! - when the response body is dropped before its end (on the server: the client went
//!   away, `error.type = response_body_aborted`; a body dropped once its declared
//!   `Content-Length` went out, or the body of a HEAD/204/304 response, is complete);
//! - when the inner service returns an error;
//! - when the response future is dropped before a response (server:
//!   `error.type = request_cancelled`; client: a cancellation, not an error);
//! - when the inner service panics (server: `error.type = panic`).
//!
//! The span is ended explicitly, so a context cloned into a spawned task does not keep
//! it open. The duration metric and the span share their start and end instants.
//!
//! # Message events
//!
//! With `message_events(true)` (server, client, reqwest; off by default), each data frame
//! of a body that the layer sees adds a span event, as Go's
//! `otelhttp.WithMessageEvents(ReadEvents, WriteEvents)` does:
//!
//! | event | when | attributes |
//! |---|---|---|
//! | `write` | server: a response body frame sent | `http.wrote_bytes` (the frame), `http.wrote_bytes_total` (so far) |
//! | `read` | client: a response body frame received; server: a request body frame the handler read (axum's `Body`, with the `axum` feature) | `http.read_bytes`, `http.read_bytes_total` |
//! | `write.summary`, `read.summary` | the body ended after more than [`MAX_MESSAGE_EVENTS`] frames | `http.{wrote,read}_bytes_total` (all of them), `http.{wrote,read}_frames` (their count) |
//!
//! At most [`MAX_MESSAGE_EVENTS`] frame events per direction, then one summary when the
//! body ends: a stream of a million frames adds 51 events, not a million. The event names
//! and the frame's byte count are Go's (they are not in the OpenTelemetry conventions,
//! which define no HTTP body events; the RPC ones, `rpc.message`, are deprecated); the
//! totals and the summary are this crate's. A frame is what the body yields (a chunk
//! of a stream, one `Bytes` of a full body), not a message of the application's: a gRPC
//! message may span frames. Only recording spans get them (sampled ones, and those a
//! sampler records without sampling); an unsampled request pays nothing per frame. The totals count what passed through the layer (on
//! the server: what was handed to the connection, not what the client received). A client's request body, and
//! a server request body other than axum's, pass to the inner service with their own
//! type, unseen: they have no events; nor has a response the server ended at its head
//! (`end_at_head`), whose body streams on unrecorded.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attributes;
mod body;
#[cfg(feature = "experimental-bound-instruments")]
mod bound;
pub mod client;
mod config;
pub mod enrich;
mod errors;
pub mod grpc;
mod guard;
#[cfg(feature = "tracing-json")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing-json")))]
pub mod logs;
mod macros;
pub mod propagation;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
pub mod route;
mod semconv;
pub mod server;
mod telemetry;

pub use body::ResponseBody;
pub use client::{OtelClient, OtelClientLayer, OtelClientLayerBuilder, ResendCount, UrlTemplate};
pub use enrich::Labeler;
pub use route::{HttpRoute, HttpRouteLayer, HttpRouteService};
pub use server::{Otel, OtelLayer, OtelLayerBuilder, PeerAddr};
pub use telemetry::MAX_MESSAGE_EVENTS;

/// The response future of [`HttpRouteService`].
#[deprecated(since = "0.2.0", note = "renamed `route::ResponseFuture`")]
pub type RouteFuture<F> = route::ResponseFuture<F>;
