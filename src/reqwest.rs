//! A [`reqwest_middleware::Middleware`] for reqwest: a CLIENT span, context propagation
//! and request metrics for every request sent through a
//! [`reqwest_middleware::ClientWithMiddleware`].
//!
//! # Why a middleware and not the tower layer
//!
//! [`OtelClientLayer`] is a tower [`Layer`](tower_layer::Layer) for clients that are a
//! `tower::Service<http::Request<B>>` returning an `http::Response<B2>`: hyper-util's legacy
//! `Client`, or any client built with tower. `reqwest::Client` is not one of them: it
//! implements `Service<reqwest::Request>` and returns a `reqwest::Response`, which are
//! reqwest's own types, not `http`'s. Wrapping it with the tower layer would need an
//! adapter that converts every request into an `http::Request` and every response back,
//! and that round trip loses what reqwest keeps beside the `http` parts (the final URL of
//! [`reqwest::Response::url`] after redirects) and boxes the body again.
//!
//! [`OtelMiddleware`] plugs into reqwest's own middleware chain instead, sees reqwest's
//! types directly, and records exactly what [`OtelClientLayer`] records, ending at the
//! same moment. **It is the recommended way to instrument reqwest.** It takes the same
//! options, with the same names and defaults: [`OtelMiddleware::builder`].
//!
//! # Example
//!
//! In `Cargo.toml` (`reqwest-middleware` is re-exported as
//! [`tower_otel_http::reqwest::reqwest_middleware`](reqwest_middleware), at the major
//! version this crate is built against):
//!
//! ```toml
//! tower-otel-http = { version = "0.1", features = ["reqwest"] }
//! ```
//!
//! With the global tracer provider, meter provider and propagator (install them before
//! building the middleware):
//!
//! ```
//! use tower_otel_http::reqwest::{reqwest_middleware::ClientBuilder, OtelMiddleware};
//!
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(OtelMiddleware::new())
//!     .build();
//! # drop(client);
//! ```
//!
//! With explicit providers and options, and a URL template on one request (the span is
//! then named `GET /users/{id}` and carries `url.template`):
//!
//! ```
//! use opentelemetry_sdk::metrics::SdkMeterProvider;
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//! use tower_otel_http::reqwest::{reqwest_middleware, OtelMiddleware};
//! use tower_otel_http::UrlTemplate;
//!
//! # async fn run() -> Result<(), reqwest_middleware::Error> {
//! let tracer_provider = SdkTracerProvider::builder().build();
//! let meter_provider = SdkMeterProvider::builder().build();
//! let middleware = OtelMiddleware::builder()
//!     .tracer_provider(&tracer_provider)
//!     .meter_provider(&meter_provider)
//!     .active_requests(true)
//!     .build();
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(middleware)
//!     .build();
//!
//! let response = client
//!     .get("http://127.0.0.1:8080/users/42")
//!     .with_extension(UrlTemplate::from_static("/users/{id}"))
//!     .send()
//!     .await?;
//! let body = response.text().await?; // the span ends here, at the body's end
//! # drop(body);
//! # Ok(())
//! # }
//! ```
//!
//! # What is recorded
//!
//! The same span and metrics as [`OtelClientLayer`] (see the [client module
//! docs](crate::client#what-is-recorded)): the span (kind CLIENT) is a child of the
//! **current** context, and its context replaces any `traceparent` the caller set in the
//! request's headers. The [`UrlTemplate`](crate::client::UrlTemplate) and
//! [`ResendCount`](crate::client::ResendCount) extensions are read from reqwest-middleware's
//! extensions (`RequestBuilder::with_extension`). `url.full` is the request's URL with
//! credentials replaced by `REDACTED:REDACTED` and sensitive query values by `REDACTED`.
//! With `body_size_metrics(true)`, `http.client.request.body.size` (a body of known
//! length) and `http.client.response.body.size` (the bytes read) are recorded.
//!
//! `error.type` is the status code as a string for 4xx and 5xx responses, or one of these
//! when no response arrived:
//!
//! | `error.type` | When |
//! |---|---|
//! | `timeout` | a [`reqwest::Error`] for which [`is_timeout`](reqwest::Error::is_timeout) is true |
//! | `connect` | a [`reqwest::Error`] for which [`is_connect`](reqwest::Error::is_connect) is true (and not a timeout) |
//! | `reqwest::Error` | any other [`reqwest::Error`], and a failure while the response body is read |
//! | `reqwest_middleware::Error` | an error from a middleware placed after this one ([`reqwest_middleware::Error::Middleware`]) |
//!
//! # When the span ends and the metrics are recorded
//!
//! As for [`OtelClientLayer`], exactly once, at the first of:
//!
//! - the response body's end (read to its end, or empty), or the body dropped (the
//!   caller stopped reading, or never read it: not an error);
//! - a failure while the body is read (`error.type = reqwest::Error`);
//! - the request failed (at once, with `error.type` and status `Error`);
//! - the future was dropped before a response: the caller cancelled, so the span ends
//!   **without** an error.
//!
//! To follow the body, the response goes through `http::Response` and back (reqwest's
//! only way to replace a body), which boxes the body once more; the final URL
//! ([`reqwest::Response::url`]) and the extensions are kept.
//!
//! # Where to put it in the chain
//!
//! Middleware runs in the order it is added. Put `OtelMiddleware` **after** a retry
//! middleware to get one span per attempt (what the semantic conventions recommend; set
//! [`ResendCount`](crate::client::ResendCount) in the extensions for each resend), or
//! before it to get one span for the whole logical request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use http::{Extensions, Uri};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::client::future::FutureGuard;
use crate::client::record::{ClientRecord, OutgoingParts};
use crate::client::{OtelClientLayer, OtelClientLayerBuilder};
use crate::ResponseBody;

/// The `reqwest-middleware` this module is built against, so that its `ClientBuilder` is
/// at hand without a second dependency to keep at the same major version.
pub use reqwest_middleware;

/// Builds an [`OtelMiddleware`] with the options of [`OtelClientLayerBuilder`]; made by
/// [`OtelMiddleware::builder`].
pub type OtelMiddlewareBuilder = OtelClientLayerBuilder<OtelMiddleware>;

/// A [`reqwest_middleware::Middleware`] that gives every request a CLIENT span, context
/// propagation and request metrics, following the OpenTelemetry HTTP semantic
/// conventions.
///
/// [`OtelMiddleware::new`] uses the global providers and propagator as they are when it
/// is built; [`OtelMiddleware::from_layer`] takes the providers and options of an
/// [`OtelClientLayer`] built with [`OtelClientLayer::builder`]. Cloning costs one atomic
/// increment. It implements [`Middleware`] on every target but `wasm32`.
///
/// See the [module docs](crate::reqwest).
#[derive(Clone, Default)]
pub struct OtelMiddleware {
    layer: OtelClientLayer,
}

impl OtelMiddleware {
    /// A middleware with the global providers and propagator and the default options.
    pub fn new() -> Self {
        Self::from_layer(OtelClientLayer::new())
    }

    /// A builder for a middleware with explicit providers or options: the same options,
    /// with the same names and defaults, as [`OtelClientLayer::builder`].
    ///
    /// ```
    /// use tower_otel_http::reqwest::OtelMiddleware;
    ///
    /// let middleware = OtelMiddleware::builder()
    ///     .metrics(false)
    ///     .request_headers(["x-request-id"])
    ///     .build();
    /// # drop(middleware);
    /// ```
    pub fn builder() -> OtelMiddlewareBuilder {
        OtelMiddlewareBuilder::default()
    }

    /// A middleware with the providers, propagator and options of `layer`.
    ///
    /// ```
    /// use tower_otel_http::client::OtelClientLayer;
    /// use tower_otel_http::reqwest::OtelMiddleware;
    ///
    /// let layer = OtelClientLayer::builder().metrics(false).build();
    /// let middleware = OtelMiddleware::from_layer(layer);
    /// # drop(middleware);
    /// ```
    pub fn from_layer(layer: OtelClientLayer) -> Self {
        Self { layer }
    }
}

impl From<OtelClientLayer> for OtelMiddleware {
    fn from(layer: OtelClientLayer) -> Self {
        Self::from_layer(layer)
    }
}

impl fmt::Debug for OtelMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelMiddleware")
            .field("shared", &self.layer.shared)
            .finish()
    }
}

// Written out by hand: what `#[async_trait]` generates for `Middleware::handle`, so this
// crate needs no `async-trait` dependency.
#[cfg(not(target_arch = "wasm32"))]
impl Middleware for OtelMiddleware {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        mut req: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let shared = &self.layer.shared;
        if shared.inert {
            return next.run(req, extensions);
        }
        // No body, no point (as for `http::Request`s).
        let request_body_size = req.body().and_then(crate::attributes::request_body_size);
        let uri = to_uri(req.url());
        let method = req.method().clone();
        if let Some(filter) = &shared.config.filter {
            let parts = crate::enrich::RequestParts {
                method: &method,
                uri: &uri,
                headers: req.headers(),
                extensions,
            };
            if !filter(&parts) {
                return next.run(req, extensions);
            }
        }
        let record = ClientRecord::start_parts(
            shared,
            OutgoingParts {
                method: &method,
                uri: &uri,
                headers: req.headers_mut(),
                extensions,
            },
            request_body_size,
        );
        // Ends the span if this future is dropped before a response.
        // Ends the span once, without an error, if the caller drops this future.
        let mut guard = FutureGuard::entering(Some(Box::new(record))).left();
        Box::pin(async move {
            let result = next.run(req, extensions).await;
            let Some(mut record) = guard.take() else {
                return result;
            };
            match result {
                Ok(res) => {
                    record.on_response_parts(
                        res.status(),
                        res.version(),
                        res.headers(),
                        res.extensions(),
                    );
                    Ok(follow_body(res, record))
                }
                Err(err) => {
                    let description = crate::errors::describe(&err);
                    let exception_type = match &err {
                        reqwest_middleware::Error::Reqwest(_) => "reqwest::Error",
                        reqwest_middleware::Error::Middleware(_) => "reqwest_middleware::Error",
                    };
                    (*record).transport_error(error_type(&err), Some(description), exception_type);
                    Err(err)
                }
            }
        })
    }
}

/// Hands the record to the response's body, as [`OtelClientLayer`] does: the span ends
/// and the metrics are recorded when the body has been read, fails or is dropped.
///
/// A `reqwest::Response`'s body can only be replaced through `http::Response`, whose
/// conversion back would lose the final URL ([`Response::url`]); reqwest reads it back
/// from an extension that its `ResponseBuilderExt` sets, so it is carried across.
/// Extensions (the connection's `HttpInfo`, behind `remote_addr`) pass through as they are.
fn follow_body(res: Response, record: Box<ClientRecord>) -> Response {
    use http_body::Body as _;
    use reqwest::ResponseBuilderExt as _;

    let url = res.url().clone();
    let mut res: http::Response<reqwest::Body> = res.into();
    if let Ok(carrier) = http::Response::builder().url(url).body(()) {
        res.extensions_mut()
            .extend(carrier.into_parts().0.extensions);
    }
    let ended = res.body().is_end_stream();
    Response::from(res.map(|body| {
        // The caller may stop reading at any point: a dropped body is the end, not an
        // abort.
        reqwest::Body::wrap(ResponseBody::new(body, record, None, true, ended))
    }))
}

/// The low-cardinality `error.type` of a failed request (listed in the module docs).
fn error_type(err: &reqwest_middleware::Error) -> &'static str {
    use crate::errors;
    match err {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => errors::TIMEOUT,
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => errors::CONNECT,
        reqwest_middleware::Error::Reqwest(e) => errors::classify(e).unwrap_or("reqwest::Error"),
        reqwest_middleware::Error::Middleware(_) => "reqwest_middleware::Error",
    }
}

/// The request's URL as an [`Uri`]. Telemetry never fails a request: a URL that is not a
/// valid `Uri` (too long, say) is recorded with its scheme and authority only.
fn to_uri(url: &reqwest::Url) -> Uri {
    if let Ok(uri) = url.as_str().parse() {
        return uri;
    }
    let mut authority = String::new();
    if !url.username().is_empty() || url.password().is_some() {
        // Recorded as `REDACTED:REDACTED@` anyway.
        authority.push_str("REDACTED:REDACTED@");
    }
    authority.push_str(url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        authority.push(':');
        authority.push_str(&port.to_string());
    }
    Uri::builder()
        .scheme(url.scheme())
        .authority(authority)
        .path_and_query("/")
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_to_uri() {
        let url = reqwest::Url::parse("https://u:p@example.com:8443/a/b?x=1#frag").unwrap();
        let uri = to_uri(&url);
        assert_eq!(uri.scheme_str(), Some("https"));
        assert_eq!(uri.authority().unwrap().as_str(), "u:p@example.com:8443");
        assert_eq!(uri.path(), "/a/b");
        assert_eq!(uri.query(), Some("x=1"));

        // Longer than an `http::Uri` may be: scheme and authority are kept.
        let long = format!("http://u:p@[::1]:81/{}", "a".repeat(70_000));
        let uri = to_uri(&reqwest::Url::parse(&long).unwrap());
        assert_eq!(uri.scheme_str(), Some("http"));
        assert_eq!(
            uri.authority().unwrap().as_str(),
            "REDACTED:REDACTED@[::1]:81"
        );
        assert_eq!(uri.path(), "/");
    }

    #[test]
    fn middleware_error_type() {
        let err = reqwest_middleware::Error::middleware(std::io::Error::other("boom"));
        assert_eq!(error_type(&err), "reqwest_middleware::Error");
    }
}
