use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use opentelemetry::global::BoxedTracer;
use tower_layer::Layer;

use super::OtelClient;
use crate::attributes::{CapturedHeader, KnownMethods};
use crate::semconv;
use crate::telemetry::{Instruments, Propagation, Resolved, Side, Sources};

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
        let Resolved {
            tracer,
            meter,
            propagation,
        } = self.sources.resolve();
        let config = &self.config;
        let metrics = meter.map(|meter| {
            Instruments::new(
                &meter,
                Side::Client,
                config.body_size_metrics,
                config.active_requests,
            )
        });
        let inert = tracer.is_none() && metrics.is_none() && propagation.is_off();
        OtelClientLayer {
            shared: Arc::new(ClientShared {
                tracer,
                metrics,
                propagation,
                config: self.config,
                inert,
            }),
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

pub(crate) struct ClientShared {
    pub(crate) tracer: Option<BoxedTracer>,
    pub(crate) metrics: Option<Instruments>,
    pub(crate) propagation: Propagation,
    pub(crate) config: ClientConfig,
    pub(crate) inert: bool,
}

impl fmt::Debug for ClientShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientShared")
            .field("tracing", &self.tracer.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("propagation", &self.propagation)
            .field("config", &self.config)
            .finish()
    }
}

#[derive(Debug)]
pub(crate) struct ClientConfig {
    pub(crate) request_headers: Arc<[CapturedHeader]>,
    pub(crate) response_headers: Arc<[CapturedHeader]>,
    pub(crate) known_methods: KnownMethods,
    pub(crate) sensitive_query_keys: Box<[Cow<'static, str>]>,
    pub(crate) active_requests: bool,
    pub(crate) body_size_metrics: bool,
}
