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
//! ```
//! use axum::{routing::get, Router};
//! use tower_otel_http::OtelLayer;
//!
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "a user" }))
//!     .layer(OtelLayer::new());
//! ```
//!
//! # Feature flags
//!
//! - `axum`: axum's `MatchedPath` becomes `http.route`, `ConnectInfo<SocketAddr>` gives
//!   `client.address` and `network.peer.*`, and `HttpRouteLayer::matched_path()`.
//! - `reqwest`: an `OtelMiddleware` for `reqwest-middleware`.
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
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attributes;
mod body;
#[cfg(feature = "experimental-bound-instruments")]
mod bound;
pub mod client;
mod config;
mod guard;
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
pub use route::{HttpRoute, HttpRouteLayer, HttpRouteService};
pub use server::{Otel, OtelLayer, OtelLayerBuilder, PeerAddr};

/// The response future of [`HttpRouteService`].
#[deprecated(since = "0.2.0", note = "renamed `route::ResponseFuture`")]
pub type RouteFuture<F> = route::ResponseFuture<F>;
