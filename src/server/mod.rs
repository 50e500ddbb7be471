//! The server layer: a SERVER span and request metrics for every request.
//!
//! [`OtelLayer`] wraps any `tower::Service<http::Request<B>>` whose response is an
//! `http::Response<B2>`: an axum `Router`, a hyper service through hyper-util, a tonic
//! server. For each request it
//!
//! 1. extracts the caller's W3C `traceparent`/`tracestate` (or whatever the global
//!    propagator reads);
//! 2. starts a SERVER span, a child of that context, named `{method} {route}` and carrying
//!    the request attributes of the HTTP semantic conventions;
//! 3. makes the span's context current while the inner service is called and while its
//!    future and the response body are polled, so spans made in handlers (with the
//!    OpenTelemetry API, or `tracing` through tracing-opentelemetry) are its children;
//! 4. ends the span, and records `http.server.request.duration` and the body-size
//!    histograms, when the response body has been sent, fails or is dropped.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_otel_http::OtelLayer;
//!
//! // Install the SDK's providers first: `OtelLayer::new()` takes the globals as they are.
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "a user" }))
//!     .layer(OtelLayer::new());
//! ```
//!
//! With the `axum` feature, the route template axum matched (`MatchedPath`) becomes
//! `http.route`. For a hand-written hyper service, tag routes with
//! [`HttpRoute`](crate::HttpRoute) and give the peer address with [`PeerAddr`]:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder};
//! use tower_otel_http::{HttpRoute, OtelLayer};
//!
//! let svc = ServiceBuilder::new()
//!     .layer(OtelLayer::new())
//!     .service(service_fn(|req: Request<hyper::body::Incoming>| async move {
//!         let mut res = Response::new(Full::new(Bytes::from("hello")));
//!         if req.uri().path().starts_with("/users/") {
//!             res.extensions_mut().insert(HttpRoute::from_static("/users/{id}"));
//!         }
//!         Ok::<_, Infallible>(res)
//!     }));
//! // Serve it with `hyper_util::service::TowerToHyperService::new(svc)`, inserting
//! // `PeerAddr(remote_addr)` into each request's extensions for `client.address`.
//! ```
//!
//! # Customised
//!
//! ```
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//! use opentelemetry_sdk::metrics::SdkMeterProvider;
//! use tower_otel_http::OtelLayer;
//!
//! let tracer_provider = SdkTracerProvider::builder().build();
//! let meter_provider = SdkMeterProvider::builder().build();
//! let layer = OtelLayer::builder()
//!     .tracer_provider(&tracer_provider)
//!     .meter_provider(&meter_provider)
//!     .filter(|parts| parts.uri.path() != "/health")
//!     .public_endpoint(true)
//!     .request_headers(["x-request-id"])
//!     .response_headers(["content-type"])
//!     .active_requests(true)
//!     .build();
//! ```
//!
//! # What is recorded
//!
//! The span (kind SERVER):
//!
//! | attribute | when |
//! |---|---|
//! | `http.request.method` | always; `_OTHER` for a method outside the known set |
//! | `http.request.method_original` | when it differs from `http.request.method` |
//! | `url.path`, `url.scheme` | always (`url.path`: as received, axum's `OriginalUri` with the `axum` feature; `url.scheme`: a trusted forwarded proto, the URI's scheme, the configured one, else `http`) |
//! | `url.query` | when there is a query; sensitive values `REDACTED` |
//! | `server.address`, `server.port` | from a trusted `X-Forwarded-Host`/`Forwarded`, the URI authority (HTTP/2 `:authority`), or `Host` |
//! | `client.address` | a trusted forwarded client, else the peer's IP |
//! | `network.peer.address`, `network.peer.port` | from [`PeerAddr`] or axum's `ConnectInfo<SocketAddr>` |
//! | `user_agent.original` | when sent |
//! | `network.protocol.version` | `1.0`, `1.1`, `2`, `3` |
//! | `http.route` | when known (at start from the request, or late from the response) |
//! | `http.request.header.<name>` / `http.response.header.<name>` | configured headers |
//! | `http.response.status_code` | when a response was produced |
//! | `error.type` | when the request failed (see below) |
//!
//! Status is `Error` for 5xx and failures, and left unset otherwise (4xx included).
//!
//! Metrics: `http.server.request.duration` (s; the conventions' buckets),
//! `http.server.request.body.size` and `http.server.response.body.size` (By; on by
//! default, off with [`OtelLayerBuilder::body_size_metrics`]), and, opt-in,
//! `http.server.active_requests`. Their attributes are `http.request.method`,
//! `url.scheme`, `http.response.status_code`, `http.route`, `error.type`,
//! `network.protocol.version`, and opt-in `server.address`/`server.port`; never the
//! path, query, client or user agent.
//!
//! The request body size, `http.server.request.body.size`:
//!
//! | request body | what is recorded |
//! |---|---|
//! | a declared `Content-Length` (the body's exact size hint) | that length: hyper enforces it for a body that is read, but a body the handler rejects unread still counts it |
//! | no declared length (chunked), axum's `Body` (`Router::layer`, or any service that takes `Request<axum::body::Body>`), `axum` feature | the bytes the handler read: the body is re-wrapped, still an `axum::body::Body`, and counted as it is read (Go's `otelhttp` counts the same way) |
//! | no declared length, any other body type | no point: the layer keeps the request type as it is (so that `Router::layer` and hyper services keep working), which leaves it no way to count |
//! | no body (a plain GET) | no point |
//!
//! The response body size counts the bytes that pass, HEAD/204/304 included (as 0).
//!
//! # Sampling
//!
//! Samplers see the request attributes above (and the route, when known at the start)
//! when the span is created. One exception, for cost: when the incoming parent is valid
//! but **not sampled** (head sampling upstream, the common case under a parent-based
//! sampler), the layer asks the sampler first and builds the attributes only if the span
//! is recorded after all; such a sampler then sees no attributes at its decision, and
//! the recorded span still carries them all.
//!
//! # `error.type` values
//!
//! - `"500"` … `"599"`: the response status, for a 5xx response;
//! - the inner service's error type, fully qualified (`std::any::type_name`, with the
//!   public path for the usual ecosystem errors: `std::io::Error`, `hyper::Error`,
//!   `axum::Error`, `Box<dyn Error + Send + Sync>`), when it returned `Err`;
//! - the response body's error type name, when the body failed;
//! - `request_cancelled`: the response future was dropped before the inner service
//!   answered (the client went away, or an outer timeout fired);
//! - `response_body_aborted`: the response body was dropped before its end;
//! - `panic`: the inner service panicked while polled (seen while unwinding, e.g. under an
//!   outer `CatchPanicLayer`; a `CatchPanicLayer` inside gives a 500 instead), or the
//!   response body panicked while producing a frame (a stream that panics: hyper drops
//!   the connection, and this is reported as the panic it is, not as the client going
//!   away).
//!
//! # One span per request, wherever the layers are
//!
//! A request that an `OtelLayer` records is marked (in its extensions), and any
//! `OtelLayer` inside it passes it through untouched: an app-wide layer around a router
//! whose nested module has its own layer gives one SERVER span and one set of metric
//! points, recorded by the outermost layer, which sees the request first. A request the
//! outer layer does not record (a `filter`, `excluded_paths`) is recorded by the inner
//! one.
//!
//! `url.path` and `url.query` are those of the request as received: with the `axum`
//! feature, axum's `OriginalUri` (inside `Router::nest`, a layer of the nested router
//! sees the URI with the prefix stripped).
//!
//! # Trace id in the response
//!
//! With [`server_timing(true)`](OtelLayerBuilder::server_timing), each response carries
//! the server span's context back to the caller, in the form the W3C trace-context group
//! settled on for responses: a `Server-Timing` entry named `traceparent`,
//!
//! ```text
//! Server-Timing: traceparent;desc="00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
//! ```
//!
//! appended to the response's own `Server-Timing` entries. A curl user reads it from the
//! headers; a page reads it with the Resource Timing API
//! (`performance.getEntriesByType("navigation")[0].serverTiming`), which exposes
//! `Server-Timing` to a cross-origin page only when the response also carries
//! `Timing-Allow-Origin` (set it for the origins that may see it; a plain custom header
//! would need `Access-Control-Expose-Headers` instead).
//!
//! Privacy: it tells every caller the trace id and span id of its request. That is the
//! point for your own front end and support staff, but on a public endpoint it also
//! hands strangers ids they can quote back (harmless on their own, useless without access
//! to your backend) and confirms which requests were sampled (the flags). Leave it off
//! where that matters, or combine it with
//! [`public_endpoint`](OtelLayerBuilder::public_endpoint), which makes the span a new root
//! so the caller learns nothing of your upstream traces.
//!
//! # When the span ends and the metrics are recorded
//!
//! (For a response that [`end_at_head`](OtelLayerBuilder::end_at_head) picks: at its
//! head, with no response body size. A `101 Switching Protocols` response ends at once:
//! it has no body.)
//!
//! Exactly once, at the first of: the response body's last frame (or trailers, or an
//! empty body at the start); a body error; the body dropped; the inner service's error;
//! the response future dropped before a response. The duration metric equals the span's
//! duration to the nanosecond.

#[cfg(feature = "axum")]
mod count;
mod future;
mod layer;
pub(crate) mod record;
mod service;

pub use future::ResponseFuture;
pub use layer::{OtelLayer, OtelLayerBuilder};
pub use service::Otel;

/// The socket address of the peer of a connection, for `client.address`,
/// `network.peer.address` and `network.peer.port`.
///
/// Insert it into each request's extensions where the connection is accepted (axum's
/// `ConnectInfo<SocketAddr>` is read too, with the `axum` feature).
///
/// See the [module docs](crate::server).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);
