use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::OtelClient;
use crate::attributes::{CapturedHeader, KnownMethods};
use crate::semconv;
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

/// Builds an [`OtelClientLayer`]; made by [`OtelClientLayer::builder`].
///
/// See the [module docs](crate::client).
pub struct OtelClientLayerBuilder {
    sources: Sources,
    config: ClientConfig,
}

impl Default for OtelClientLayerBuilder {
    fn default() -> Self {
        Self {
            sources: Sources::default(),
            config: ClientConfig {
                request_headers: Arc::new([]),
                response_headers: Arc::new([]),
                known_methods: KnownMethods::from_env(),
                sensitive_query_keys: semconv::SENSITIVE_QUERY_KEYS
                    .iter()
                    .map(|k| Cow::Borrowed(*k))
                    .collect(),
                active_requests: false,
                body_size_metrics: false,
            },
        }
    }
}

impl OtelClientLayerBuilder {
    crate::macros::define_common_builder_methods!();

    /// Records `http.client.request.body.size` and `http.client.response.body.size`
    /// (opt-in).
    pub fn body_size_metrics(mut self, enable: bool) -> Self {
        self.config.body_size_metrics = enable;
        self
    }

    /// Builds the layer.
    pub fn build(self) -> OtelClientLayer {
        let (body_sizes, active) = (self.config.body_size_metrics, self.config.active_requests);
        OtelClientLayer {
            shared: Arc::new(ClientShared::new(
                self.sources,
                Side::Client,
                body_sizes,
                active,
                self.config,
            )),
        }
    }
}

impl fmt::Debug for OtelClientLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelClientLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the client's services share.
pub(crate) type ClientShared = telemetry::Shared<ClientConfig>;

#[derive(Debug)]
pub(crate) struct ClientConfig {
    pub(crate) request_headers: Arc<[CapturedHeader]>,
    pub(crate) response_headers: Arc<[CapturedHeader]>,
    pub(crate) known_methods: KnownMethods,
    pub(crate) sensitive_query_keys: Box<[Cow<'static, str>]>,
    pub(crate) active_requests: bool,
    pub(crate) body_size_metrics: bool,
}
