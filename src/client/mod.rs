//! The client layer: a CLIENT span, context propagation and request metrics for every
//! request sent through an HTTP client service.
//!
//! [`OtelClientLayer`] wraps any `tower::Service<http::Request<B>>` that returns an
//! `http::Response<B2>`: hyper-util's legacy `Client`, or any tower-built client. For each
//! request it starts a CLIENT span as a child of the **current** context (so inside a
//! handler served by [`OtelLayer`](crate::OtelLayer) it is a child of the server span with
//! no extra code), injects that span's context into the outgoing headers (replacing a
//! `traceparent` the caller set, never duplicating it), and records
//! `http.client.request.duration`.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceBuilder;
//! use tower_otel_http::client::OtelClientLayer;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let client = ServiceBuilder::new()
//!     .layer(OtelClientLayer::new())
//!     .service(client);
//! ```
//!
//! For reqwest, see the `reqwest` feature and `OtelMiddleware`.
//!
//! # What is recorded
//!
//! The span (kind CLIENT) is named `{method}` (`HTTP` for an unknown method), or
//! `{method} {template}` when the request carries a [`UrlTemplate`]. At start:
//! `http.request.method` (+ `http.request.method_original`), `url.full` (credentials
//! replaced by `REDACTED:REDACTED`, sensitive query values by `REDACTED`),
//! `server.address`, `server.port` (the scheme's default when the URL has none),
//! `url.template`, `http.request.resend_count` (from [`ResendCount`]), configured request
//! headers. When the response arrives: `http.response.status_code`,
//! `network.protocol.version`, configured response headers. Status is `Error` for 4xx,
//! 5xx and transport errors.
//!
//! `error.type` is the status code as a string for 4xx and 5xx, the response body's
//! error type name when the body fails, `panic` when it panics, or, when no response
//! arrived, what the transport error says:
//!
//! | `error.type` | when the error (or one of its sources) is |
//! |---|---|
//! | `timeout` | a timeout: `io::ErrorKind::TimedOut`, hyper's `is_timeout` (a connect timeout too) |
//! | `connect` | a failed connection: hyper-util's `is_connect`, or a refused, unreachable or unavailable address |
//! | `connection_reset` | `io::ErrorKind::ConnectionReset` / `ConnectionAborted` |
//! | `connection_closed` | the server closed the connection before a complete response (hyper's `is_incomplete_message` / `is_closed`, `UnexpectedEof`, `BrokenPipe`) |
//! | the error's type, fully qualified | anything else, or an error the layer cannot look into |
//!
//! The layer looks into errors whose type it can see through: a boxed error (`BoxError`,
//! what `Buffer` and `Timeout` return), `std::io::Error`, and, with the `hyper-util`
//! feature (on with `reqwest`), hyper-util's legacy client `Error`. The span status
//! description is then the error's messages and its sources', joined by `": "`
//! (`client error (Connect): tcp connect error: Connection refused (os error 111)`);
//! `request failed` otherwise.
//!
//! With the `hyper-util` feature, the span also gets `network.peer.address` and
//! `network.peer.port` from the connection the response came over (hyper-util's
//! `HttpInfo`; reqwest's `remote_addr`).
//!
//! Metrics: `http.client.request.duration` (s) with `http.request.method`,
//! `server.address`, `server.port`, `http.response.status_code`, `error.type`,
//! `network.protocol.version` and `url.template` when tagged; opt-in
//! `http.client.request.body.size`, `http.client.response.body.size` and
//! `http.client.active_requests`.
//!
//! Inside a trace that is not sampled, the sampler is asked before the attributes are
//! built, and they are built only if the span records after all (such a sampler sees no
//! attributes at its decision; the recorded span still carries them all).
//!
//! # Context across tasks and buffers
//!
//! The CLIENT span's parent is the OpenTelemetry context that is **current on the task
//! that calls the client service** (OpenTelemetry's current-context model: a context is
//! current on a thread while a future that carries it is polled). Inside a handler served
//! by [`OtelLayer`](crate::OtelLayer) that is the SERVER span, with no code. Two patterns
//! lose it, silently, and start a new trace:
//!
//! - **A spawned task.** `tokio::spawn(async move { client.call(req).await })` runs the
//!   future on another task, where nothing is current. Carry the context into it:
//!   `tokio::spawn(fut.with_current_context())` (or `.with_context(cx)`), with
//!   `opentelemetry::context::FutureExt`.
//! - **A client behind a buffer.** `tower::buffer::Buffer` calls the service below it from
//!   its own worker task. Carry the context with the request instead: put
//!   [`CaptureContextLayer`] **outside** the buffer (it inserts the caller's context as a
//!   [`ParentContext`]), or insert a `ParentContext` into the request yourself; the
//!   client layer prefers a `ParentContext` the request carries to the current context.
//!   Or put the `OtelClientLayer` outside the buffer, where the caller calls it.
//!
//! Layers that poll the inner future on the caller's task (timeouts, retries,
//! concurrency limits) keep the context: they need nothing. A spawned task that was given
//! no context has no way back to its parent: that is the one case only the caller can
//! fix.
//!
//! # When the span ends and the metrics are recorded
//!
//! Exactly once, at the first of: the response body's end (last frame, trailers, or an
//! empty body), a body error, the body dropped (the caller stopped reading: not an
//! error), the inner service's error (at once), or the response future dropped before a
//! response (the caller cancelled: the span ends, without an error).

mod context;
pub(crate) mod future;
mod layer;
pub(crate) mod record;
mod service;

pub use context::{CaptureContext, CaptureContextLayer, ParentContext};
pub use future::ResponseFuture;
pub use layer::{OtelClientLayer, OtelClientLayerBuilder};
pub use service::OtelClient;

use crate::HttpRoute;

/// The URL template of a client request, such as `/users/{id}`: insert it into the
/// request's extensions to name the span `{method} {template}` and record `url.template`.
///
/// ```
/// use tower_otel_http::client::UrlTemplate;
///
/// let mut req = http::Request::get("http://api.local/users/42").body(()).unwrap();
/// req.extensions_mut().insert(UrlTemplate::from_static("/users/{id}"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UrlTemplate(pub(crate) HttpRoute);

impl UrlTemplate {
    /// A template from a string literal.
    pub const fn from_static(template: &'static str) -> Self {
        Self(HttpRoute::from_static(template))
    }

    /// A template from a runtime string.
    pub fn new(template: impl Into<std::sync::Arc<str>>) -> Self {
        Self(HttpRoute::new(template))
    }

    /// The template.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// How many times this request has been sent before (1 for the first resend): recorded
/// as `http.request.resend_count`. A retry or redirect policy sets it on each copy it
/// sends again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResendCount(pub u32);
