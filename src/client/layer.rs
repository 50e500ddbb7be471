use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use super::OtelClient;
use crate::config::{Common, Misconfigured, Options};
use crate::enrich::RequestParts;
use crate::telemetry::{self, Side, Sources};

/// A [`Layer`] that gives an HTTP client CLIENT spans, context propagation and request
/// metrics, following the OpenTelemetry HTTP semantic conventions.
///
/// `OtelClientLayer::new()` uses the global tracer provider, meter provider and
/// propagator as they are when it is built; [`OtelClientLayer::builder`] takes explicit
/// ones and options.
///
/// See the [module docs](crate::client) for examples.
#[derive(Clone)]
pub struct OtelClientLayer {
    pub(crate) shared: Arc<ClientShared>,
}

impl OtelClientLayer {
    /// A layer with the global providers and the default options.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a layer with explicit providers or options.
    pub fn builder() -> OtelClientLayerBuilder {
        OtelClientLayerBuilder::default()
    }
}

impl Default for OtelClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for OtelClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelClientLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S> Layer<S> for OtelClientLayer {
    type Service = OtelClient<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OtelClient {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Builds an [`OtelClientLayer`] (made by [`OtelClientLayer::builder`]), or, with the
/// same options, the reqwest middleware (`OtelMiddleware::builder()`, with the `reqwest`
/// feature): `Output` is what [`build`](Self::build) returns.
///
/// An option that cannot work makes [`build`](Self::build) panic, naming it. See the
/// [module docs](crate::client).
pub struct OtelClientLayerBuilder<Output = OtelClientLayer> {
    sources: Sources,
    options: Options,
    filter: Option<ClientFilter>,
    target: Option<String>,
    output: PhantomData<fn() -> Output>,
}

impl<Output> Default for OtelClientLayerBuilder<Output> {
    fn default() -> Self {
        Self {
            sources: Sources::default(),
            options: Options::default(),
            filter: None,
            target: None,
            output: PhantomData,
        }
    }
}

type ClientFilter = Arc<dyn Fn(&RequestParts<'_>) -> bool + Send + Sync>;

impl<Output> OtelClientLayerBuilder<Output> {
    crate::macros::define_common_builder_methods!();

    /// Records `http.client.request.body.size` and `http.client.response.body.size`
    /// (off by default).
    ///
    /// `build()` panics if it is on and [`metrics`](Self::metrics) is off.
    pub fn body_size_metrics(mut self, enable: bool) -> Self {
        self.options.body_size_metrics = Some(enable);
        self
    }

    /// The server this client talks to, for the requests whose URI has no authority:
    /// tonic's generated clients send path-only URIs (`/pkg.Service/Method`) and the
    /// `Channel` adds the scheme and authority further in, where no layer sees them. It
    /// gives `server.address` and `server.port` (required on client spans), parsed as
    /// gRPC targets are: `host:port`, `http://host:port`, `dns:///host:port`,
    /// `unix:///path` (a path, no port). A URI's own authority wins.
    ///
    /// ```
    /// # use tower_otel_http::OtelClientLayer;
    /// let layer = OtelClientLayer::builder()
    ///     .target("http://inventory.internal:50051") // the channel's endpoint
    ///     .build();
    /// ```
    ///
    /// `build()` panics on an empty target.
    pub fn target(mut self, target: impl AsRef<str>) -> Self {
        self.target = Some(target.as_ref().to_owned());
        self
    }

    /// Records only the requests for which `filter` returns `true`, given the request's
    /// [`RequestParts`] (`parts.uri`, `parts.method`, `parts.headers`,
    /// `parts.extensions`); the others are sent with no span, no metrics, and their
    /// headers untouched.
    ///
    /// ```
    /// # use tower_otel_http::OtelClientLayer;
    /// let layer = OtelClientLayer::builder()
    ///     .filter(|parts| parts.uri.path() != "/health")
    ///     .build();
    /// ```
    pub fn filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&RequestParts<'_>) -> bool + Send + Sync + 'static,
    {
        self.filter = Some(Arc::new(filter));
        self
    }
}

impl<Output: From<OtelClientLayer>> OtelClientLayerBuilder<Output> {
    /// Builds the layer (or the middleware): checks the options and completes them from
    /// the environment, resolves the tracer, meter and propagator, and creates the
    /// instruments.
    ///
    /// # Panics
    ///
    /// On an option that cannot work, with a message naming it: an invalid header name,
    /// an empty list of known methods or an invalid method, an empty query key, or a
    /// metrics option (`active_requests`, `body_size_metrics`) with `metrics(false)`.
    /// Values read from the environment never panic: a malformed one is reported once on
    /// standard error and ignored.
    #[track_caller]
    pub fn build(self) -> Output {
        let metrics = !self.sources.metrics_disabled();
        let traces = !self.sources.traces_disabled();
        let common = match self.options.resolve(Side::Client, traces, metrics, false) {
            Ok(common) => common,
            Err(misconfigured) => misconfigured.panic(),
        };
        let (body_sizes, active) = (common.body_size_metrics, common.active_requests);
        let target = match self.target.as_deref().map(crate::grpc::target) {
            Some(Some(target)) => Some(target),
            Some(None) => Misconfigured::new("target", "is empty").panic(),
            None => None,
        };
        let config = ClientConfig {
            common,
            filter: self.filter,
            target,
        };
        Output::from(OtelClientLayer {
            shared: Arc::new(ClientShared::new(
                self.sources,
                Side::Client,
                body_sizes,
                active,
                config,
            )),
        })
    }
}

impl<Output> fmt::Debug for OtelClientLayerBuilder<Output> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelClientLayerBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What the client's services share.
pub(crate) type ClientShared = telemetry::Shared<ClientConfig>;

pub(crate) struct ClientConfig {
    pub(crate) common: Common,
    pub(crate) filter: Option<ClientFilter>,
    /// `server.address` and `server.port` for path-only URIs.
    pub(crate) target: Option<(opentelemetry::StringValue, Option<u16>)>,
}

impl ClientConfig {
    /// Whether the filter, if any, lets `req` be recorded.
    pub(crate) fn records<B>(&self, req: &http::Request<B>) -> bool {
        self.filter.as_ref().map_or(true, |filter| {
            filter(&RequestParts {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                extensions: req.extensions(),
            })
        })
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("common", &self.common)
            .field("filter", &self.filter.is_some())
            .field("target", &self.target)
            .finish()
    }
}
