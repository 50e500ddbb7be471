use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use opentelemetry::StringValue;
use tower_layer::Layer;

use super::Otel;
use crate::attributes::{self, CapturedHeader, KnownMethods};
use crate::semconv;
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
        Otel {
            inner,
            shared: self.shared.clone(),
        }
    }
}

type RequestPredicate = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;
type SpanNamer = Arc<dyn Fn(&str, Option<&str>) -> String + Send + Sync>;

/// Builds an [`OtelLayer`]; made by [`OtelLayer::builder`].
///
/// Every option has a default that follows the conventions; see the [module
/// docs](crate::server) for examples.
pub struct OtelLayerBuilder {
    sources: Sources,
    config: Config,
}

impl Default for OtelLayerBuilder {
    fn default() -> Self {
        Self {
            sources: Sources::default(),
            config: Config {
                filter: None,
                span_name: None,
                public_endpoint: None,
                request_headers: Arc::new([]),
                response_headers: Arc::new([]),
                known_methods: KnownMethods::from_env(),
                sensitive_query_keys: semconv::SENSITIVE_QUERY_KEYS
                    .iter()
                    .map(|k| Cow::Borrowed(*k))
                    .collect(),
                trust_forwarded: false,
                scheme: None,
                server_address_on_metrics: false,
                active_requests: false,
                body_size_metrics: true,
            },
        }
    }
}

impl OtelLayerBuilder {
    crate::macros::define_common_builder_methods!();

    /// Records only the requests for which `filter` returns `true`; the others pass
    /// through with no span and no metrics (e.g. health checks).
    ///
    /// ```
    /// # use tower_otel_http::OtelLayer;
    /// let layer = OtelLayer::builder()
    ///     .filter(|req| req.uri.path() != "/health")
    ///     .build();
    /// ```
    pub fn filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.config.filter = Some(Arc::new(filter));
        self
    }

    /// Names spans with `namer(method, route)` instead of `{method} {route}`. `method` is
    /// `http.request.method`, or `HTTP` for an unknown method; `route` is the
    /// [`HttpRoute`](crate::HttpRoute) if known. It is called again if the route is only
    /// learned from the response. Do not put the raw path in the name.
    pub fn span_name<F>(mut self, namer: F) -> Self
    where
        F: Fn(&str, Option<&str>) -> String + Send + Sync + 'static,
    {
        self.config.span_name = Some(Arc::new(namer));
        self
    }

    /// For internet-facing edges: start every server span as a new trace root, linked to
    /// the incoming context instead of being its child, so callers cannot join or sample
    /// your traces.
    pub fn public_endpoint(mut self, public: bool) -> Self {
        self.config.public_endpoint =
            public.then(|| Arc::new(|_: &Parts| true) as RequestPredicate);
        self
    }

    /// As [`public_endpoint`](Self::public_endpoint), for the requests where `predicate`
    /// returns `true`.
    pub fn public_endpoint_fn<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.config.public_endpoint = Some(Arc::new(predicate));
        self
    }

    /// Trusts `Forwarded` and `X-Forwarded-For`/`-Proto`/`-Host` for `client.address`,
    /// `url.scheme` and `server.address`. Off by default: anyone can send these headers;
    /// turn it on only behind a proxy that sets them.
    pub fn trust_forwarded_headers(mut self, trust: bool) -> Self {
        self.config.trust_forwarded = trust;
        self
    }

    /// The `url.scheme` of this server's requests, e.g. `"https"` for a TLS listener.
    /// It takes precedence over the scheme a client puts in the request (an absolute-form
    /// target, HTTP/2 `:scheme`), and gives way only to a trusted forwarded proto. Without
    /// it: `http` or `https` from the request, else `http`.
    pub fn scheme(mut self, scheme: impl AsRef<str>) -> Self {
        self.config.scheme = attributes::scheme_value(scheme.as_ref());
        self
    }

    /// Adds `server.address` and `server.port` to the metric attributes (opt-in: they come
    /// from the `Host` header, which a client chooses, so one series per value).
    pub fn server_address_on_metrics(mut self, enable: bool) -> Self {
        self.config.server_address_on_metrics = enable;
        self
    }

    /// Records `http.server.request.body.size` and `http.server.response.body.size`
    /// (on by default).
    pub fn body_size_metrics(mut self, enable: bool) -> Self {
        self.config.body_size_metrics = enable;
        self
    }

    /// Builds the layer: resolves the tracer, meter and propagator, and creates the
    /// instruments.
    pub fn build(self) -> OtelLayer {
        let (body_sizes, active) = (self.config.body_size_metrics, self.config.active_requests);
        OtelLayer {
            shared: Arc::new(Shared::new(
                self.sources,
                Side::Server,
                body_sizes,
                active,
                self.config,
            )),
        }
    }
}

impl fmt::Debug for OtelLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the server's services share.
pub(crate) type Shared = telemetry::Shared<Config>;

pub(crate) struct Config {
    pub(crate) filter: Option<RequestPredicate>,
    pub(crate) span_name: Option<SpanNamer>,
    pub(crate) public_endpoint: Option<RequestPredicate>,
    pub(crate) request_headers: Arc<[CapturedHeader]>,
    pub(crate) response_headers: Arc<[CapturedHeader]>,
    pub(crate) known_methods: KnownMethods,
    pub(crate) sensitive_query_keys: Box<[Cow<'static, str>]>,
    pub(crate) trust_forwarded: bool,
    pub(crate) scheme: Option<StringValue>,
    pub(crate) server_address_on_metrics: bool,
    pub(crate) active_requests: bool,
    pub(crate) body_size_metrics: bool,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("filter", &self.filter.is_some())
            .field("span_name", &self.span_name.is_some())
            .field("public_endpoint", &self.public_endpoint.is_some())
            .field("request_headers", &self.request_headers)
            .field("response_headers", &self.response_headers)
            .field("known_methods", &self.known_methods)
            .field("sensitive_query_keys", &self.sensitive_query_keys)
            .field("trust_forwarded", &self.trust_forwarded)
            .field("scheme", &self.scheme)
            .field("server_address_on_metrics", &self.server_address_on_metrics)
            .field("active_requests", &self.active_requests)
            .field("body_size_metrics", &self.body_size_metrics)
            .finish()
    }
}
