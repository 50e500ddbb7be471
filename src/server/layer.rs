use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use opentelemetry::StringValue;
use tower_layer::Layer;

use super::Otel;
use crate::attributes;
use crate::config::{self, Common, ExcludedPath, Misconfigured, Options};
use crate::enrich::ResponseParts;
use crate::telemetry::{self, Side, Sources};

/// A [`Layer`] that gives an HTTP server SERVER spans and request metrics, following the
/// OpenTelemetry HTTP semantic conventions.
///
/// `OtelLayer::new()` uses the global tracer provider, meter provider and propagator,
/// **as they are when it is built**: install the SDK first. [`OtelLayer::builder`] takes
/// explicit providers and options. The tracer, the meter and its instruments are made once
/// here, and shared by every service the layer makes (axum calls `layer` once per route).
///
/// See the [module docs](crate::server) for examples.
#[derive(Clone)]
pub struct OtelLayer {
    pub(crate) shared: Arc<Shared>,
}

impl OtelLayer {
    /// A layer with the global providers and the default options.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a layer with explicit providers or options.
    pub fn builder() -> OtelLayerBuilder {
        OtelLayerBuilder::default()
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl OtelLayer {
    /// Wraps a whole axum `Router` from outside, and returns a `Router` to serve as usual
    /// (`axum::serve`, `into_make_service_with_connect_info`).
    ///
    /// Use it instead of `Router::layer` when the layer must see every request before
    /// routing, including those no route matches and those an outer middleware of the
    /// router rewrites. It tags each matched route's response with its template
    /// ([`HttpRouteLayer::matched_path`](crate::HttpRouteLayer::matched_path)), so the
    /// span and metrics get `http.route` as under `Router::layer`; a request that no route
    /// matched gets none.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use axum::{routing::get, Router};
    /// use tower_otel_http::OtelLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let router = Router::new().route("/users/{id}", get(|| async { "a user" }));
    /// let app = OtelLayer::new().wrap_router(router);
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let server = tokio::spawn(async move {
    /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
    /// # });
    /// # let mut stream = tokio::net::TcpStream::connect(addr).await?;
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// # stream.write_all(b"GET /users/7 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
    /// # let mut response = String::new();
    /// # stream.read_to_string(&mut response).await?;
    /// # assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    /// # assert!(response.ends_with("a user"), "{response}");
    /// # server.abort();
    /// # Ok(())
    /// # }
    /// ```
    pub fn wrap_router(&self, router: axum::Router) -> axum::Router {
        // `route_layer` refuses a router without routes.
        let router = if router.has_routes() {
            router.route_layer(crate::HttpRouteLayer::matched_path())
        } else {
            router
        };
        axum::Router::new().fallback_service(self.layer(router))
    }
}

impl Default for OtelLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for OtelLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S> Layer<S> for OtelLayer {
    type Service = Otel<S>;

    fn layer(&self, inner: S) -> Self::Service {
        #[cfg(not(feature = "axum"))]
        crate::config::axum_without_feature::<S>();
        Otel {
            inner,
            shared: self.shared.clone(),
        }
    }
}

type RequestPredicate = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;
type SpanNamer = Arc<dyn Fn(&str, Option<&str>) -> String + Send + Sync>;
type ResponsePredicate = Arc<dyn Fn(&ResponseParts<'_>) -> bool + Send + Sync>;

/// Builds an [`OtelLayer`]; made by [`OtelLayer::builder`].
///
/// Every option has a default that follows the conventions; see the [module
/// docs](crate::server) for examples. An option that cannot work makes
/// [`build`](Self::build) panic, naming it.
#[derive(Default)]
pub struct OtelLayerBuilder {
    sources: Sources,
    options: Options,
    filter: Option<RequestPredicate>,
    span_name: Option<SpanNamer>,
    public_endpoint: Option<RequestPredicate>,
    excluded_paths: Option<Vec<String>>,
    trust_forwarded: bool,
    scheme: Option<String>,
    server_address_on_metrics: bool,
    server_timing: bool,
    end_at_head: Option<ResponsePredicate>,
}

impl OtelLayerBuilder {
    crate::macros::define_common_builder_methods!();

    /// Records only the requests for which `filter` returns `true`; the others pass
    /// through with no span and no metrics (e.g. health checks). It is given the
    /// request's [`Parts`] (`parts.uri`, `parts.method`, `parts.headers`,
    /// `parts.extensions`), before the inner service sees the request, as the inner
    /// service will see it: inside axum's `Router::nest`, a nested router's layer sees
    /// `parts.uri` without the prefix (where [`excluded_paths`](Self::excluded_paths) and
    /// `url.path` use the path as received).
    ///
    /// ```
    /// # use tower_otel_http::OtelLayer;
    /// let layer = OtelLayer::builder()
    ///     .filter(|parts: &http::request::Parts| parts.uri.path() != "/health")
    ///     .build();
    /// ```
    pub fn filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Records no request whose path is one of these: an exact path (`/health`), or every
    /// path under a prefix written with a trailing `*` (`/internal/*`, which matches
    /// `/internal/` and below, not `/internal` itself). Cheaper than a
    /// [`filter`](Self::filter) for the usual case, and applied before it.
    ///
    /// Without this option the list comes from
    /// `OTEL_INSTRUMENTATION_HTTP_SERVER_EXCLUDED_PATHS` (see [Configuration by
    /// environment](crate#configuration-by-environment)); an empty list excludes nothing,
    /// whatever the environment says.
    ///
    /// `build()` panics on a pattern that does not start with `/`.
    pub fn excluded_paths<I, P>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        self.excluded_paths = Some(
            patterns
                .into_iter()
                .map(|p| p.as_ref().to_owned())
                .collect(),
        );
        self
    }

    /// Names spans with `namer(method, route)` instead of `{method} {route}`. `method` is
    /// `http.request.method`, or `HTTP` for an unknown method; `route` is the
    /// [`HttpRoute`](crate::HttpRoute) if known. It is called again if the route is only
    /// learned from the response. Do not put the raw path in the name.
    ///
    /// `build()` panics if [`traces`](Self::traces) is off.
    pub fn span_name<F>(mut self, namer: F) -> Self
    where
        F: Fn(&str, Option<&str>) -> String + Send + Sync + 'static,
    {
        self.span_name = Some(Arc::new(namer));
        self
    }

    /// For internet-facing edges: start every server span as a new trace root, linked to
    /// the incoming context instead of being its child, so callers cannot join or sample
    /// your traces.
    pub fn public_endpoint(mut self, public: bool) -> Self {
        self.public_endpoint = public.then(|| Arc::new(|_: &Parts| true) as RequestPredicate);
        self
    }

    /// As [`public_endpoint`](Self::public_endpoint), for the requests where `predicate`
    /// returns `true` (given the request's [`Parts`], as [`filter`](Self::filter) is).
    pub fn public_endpoint_fn<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.public_endpoint = Some(Arc::new(predicate));
        self
    }

    /// Trusts `Forwarded` and `X-Forwarded-For`/`-Proto`/`-Host` for `client.address`,
    /// `url.scheme` and `server.address`. Off by default: anyone can send these headers;
    /// turn it on only behind a proxy that sets them.
    pub fn trust_forwarded_headers(mut self, trust: bool) -> Self {
        self.trust_forwarded = trust;
        self
    }

    /// The `url.scheme` of this server's requests, e.g. `"https"` for a TLS listener.
    /// It takes precedence over the scheme a client puts in the request (an absolute-form
    /// target, HTTP/2 `:scheme`), and gives way only to a trusted forwarded proto. Without
    /// it: `http` or `https` from the request, else `http`.
    ///
    /// `build()` panics on an empty scheme.
    pub fn scheme(mut self, scheme: impl AsRef<str>) -> Self {
        self.scheme = Some(scheme.as_ref().to_owned());
        self
    }

    /// Adds `server.address` and `server.port` to the metric attributes (off by default:
    /// they come from the `Host` header, which a client chooses, so one series per
    /// value).
    ///
    /// `build()` panics if it is on and [`metrics`](Self::metrics) is off.
    pub fn server_address_on_metrics(mut self, enable: bool) -> Self {
        self.server_address_on_metrics = enable;
        self
    }

    /// Ends the span and `http.server.request.duration` at the response head for the
    /// responses where `predicate` returns `true`, given the response's
    /// [`ResponseParts`](crate::enrich::ResponseParts), instead of at the body's end: for
    /// server-sent events, long polls and other streams that stay open for minutes. The
    /// body then streams on unrecorded: no `http.server.response.body.size` point, and a
    /// body error or an early drop no longer changes the span. gRPC calls always end at
    /// their trailers.
    ///
    /// ```
    /// # use tower_otel_http::OtelLayer;
    /// let layer = OtelLayer::builder()
    ///     .end_at_head(|parts| {
    ///         parts.headers.get("content-type").is_some_and(|v| v == "text/event-stream")
    ///     })
    ///     .build();
    /// ```
    pub fn end_at_head<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&ResponseParts<'_>) -> bool + Send + Sync + 'static,
    {
        self.end_at_head = Some(Arc::new(predicate));
        self
    }

    /// Hands the server span's context back to the caller (off by default): each
    /// response gets a `Server-Timing` entry named `traceparent`, whose description is
    /// the server span's W3C `traceparent` (`traceparent;desc="00-{trace-id}-{span-id}-{flags}"`),
    /// the direction the W3C trace-context group took for responses. The response's own
    /// `Server-Timing` entries are kept. See [Trace id in the
    /// response](crate::server#trace-id-in-the-response) for the privacy trade-off and
    /// what a browser needs to read it.
    ///
    /// `build()` panics if it is on and [`traces`](Self::traces) is off.
    pub fn server_timing(mut self, enable: bool) -> Self {
        self.server_timing = enable;
        self
    }

    /// Puts a [`Labeler`](crate::Labeler) into each request's extensions (off by
    /// default: it costs two allocations per request), for handlers to label the request's
    /// metric points and span (axum: `Extension<Labeler>`). A `Labeler` in the
    /// **response** extensions is read whatever this says.
    pub fn labels(mut self, enable: bool) -> Self {
        self.options.enrichment.labels = enable;
        self
    }

    /// Records `http.server.request.body.size` and `http.server.response.body.size`
    /// (on by default).
    ///
    /// `build()` panics if it is on and [`metrics`](Self::metrics) is off.
    pub fn body_size_metrics(mut self, enable: bool) -> Self {
        self.options.body_size_metrics = Some(enable);
        self
    }

    /// Builds the layer: checks the options and completes them from the environment,
    /// resolves the tracer, meter and propagator, and creates the instruments.
    ///
    /// # Panics
    ///
    /// On an option that cannot work, with a message naming it: an invalid header name,
    /// an empty list of known methods or an invalid method, an excluded path that does
    /// not start with `/`, an empty scheme or query key, a metrics option
    /// (`active_requests`, `body_size_metrics`, `server_address_on_metrics`) with
    /// `metrics(false)`, or `span_name` with `traces(false)`. Values read from the
    /// environment never panic: a malformed one is reported once on standard error and
    /// ignored.
    #[track_caller]
    pub fn build(mut self) -> OtelLayer {
        let metrics = !self.sources.metrics_disabled();
        let config = match self.config(metrics) {
            Ok(config) => config,
            Err(misconfigured) => misconfigured.panic(),
        };
        let (body_sizes, active) = (
            config.common.body_size_metrics,
            config.common.active_requests,
        );
        OtelLayer {
            shared: Arc::new(Shared::new(
                self.sources,
                Side::Server,
                body_sizes,
                active,
                config,
            )),
        }
    }
}

impl OtelLayerBuilder {
    fn config(&mut self, metrics: bool) -> Result<Config, Misconfigured> {
        if !metrics && self.server_address_on_metrics {
            return Err(Misconfigured::new(
                "server_address_on_metrics",
                "is on, but the layer records no metrics",
            ));
        }
        if self.sources.traces_disabled() && self.server_timing {
            return Err(Misconfigured::new(
                "server_timing",
                "is on, but the layer makes no spans",
            ));
        }
        if self.sources.traces_disabled() && self.span_name.is_some() {
            return Err(Misconfigured::new(
                "span_name",
                "is set, but the layer makes no spans",
            ));
        }
        let scheme = match self.scheme.take() {
            Some(scheme) => Some(
                attributes::scheme_value(&scheme)
                    .ok_or_else(|| Misconfigured::new("scheme", "is empty"))?,
            ),
            None => None,
        };
        Ok(Config {
            common: std::mem::take(&mut self.options).resolve(
                Side::Server,
                !self.sources.traces_disabled(),
                metrics,
                true,
            )?,
            filter: self.filter.take(),
            span_name: self.span_name.take(),
            public_endpoint: self.public_endpoint.take(),
            excluded_paths: config::excluded_paths(self.excluded_paths.take())?,
            trust_forwarded: self.trust_forwarded,
            scheme,
            server_address_on_metrics: self.server_address_on_metrics,
            server_timing: self.server_timing,
            end_at_head: self.end_at_head.take(),
        })
    }
}

impl fmt::Debug for OtelLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelLayerBuilder")
            .field("options", &self.options)
            .field("filter", &self.filter.is_some())
            .field("span_name", &self.span_name.is_some())
            .field("public_endpoint", &self.public_endpoint.is_some())
            .field("excluded_paths", &self.excluded_paths)
            .field("trust_forwarded", &self.trust_forwarded)
            .field("scheme", &self.scheme)
            .field("server_address_on_metrics", &self.server_address_on_metrics)
            .finish_non_exhaustive()
    }
}

/// What the server's services share.
pub(crate) type Shared = telemetry::Shared<Config>;

pub(crate) struct Config {
    pub(crate) common: Common,
    pub(crate) filter: Option<RequestPredicate>,
    pub(crate) span_name: Option<SpanNamer>,
    pub(crate) public_endpoint: Option<RequestPredicate>,
    pub(crate) excluded_paths: Option<Arc<[ExcludedPath]>>,
    pub(crate) trust_forwarded: bool,
    pub(crate) scheme: Option<StringValue>,
    pub(crate) server_address_on_metrics: bool,
    pub(crate) server_timing: bool,
    pub(crate) end_at_head: Option<ResponsePredicate>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("common", &self.common)
            .field("filter", &self.filter.is_some())
            .field("span_name", &self.span_name.is_some())
            .field("public_endpoint", &self.public_endpoint.is_some())
            .field("excluded_paths", &self.excluded_paths)
            .field("trust_forwarded", &self.trust_forwarded)
            .field("scheme", &self.scheme)
            .field("server_address_on_metrics", &self.server_address_on_metrics)
            .field("server_timing", &self.server_timing)
            .field("end_at_head", &self.end_at_head.is_some())
            .finish()
    }
}
