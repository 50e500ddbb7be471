use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{Histogram, Meter, MeterProvider, UpDownCounter};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider;
use tower_layer::Layer;

use super::OtelClient;
use crate::attributes::{self, CapturedHeader, KnownMethods};
use crate::semconv;
use crate::telemetry::{MeterChoice, Propagation, TracerChoice};

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
    tracer: TracerChoice,
    meter: MeterChoice,
    propagator: Option<Arc<dyn TextMapPropagator + Send + Sync>>,
    config: ClientConfig,
}

impl Default for OtelClientLayerBuilder {
    fn default() -> Self {
        Self {
            tracer: TracerChoice::Global,
            meter: MeterChoice::Global,
            propagator: None,
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
    /// Makes spans with this provider's tracer instead of the global one.
    pub fn tracer_provider<P, T, S>(mut self, provider: &P) -> Self
    where
        S: opentelemetry::trace::Span + Send + Sync + 'static,
        T: opentelemetry::trace::Tracer<Span = S> + Send + Sync + 'static,
        P: TracerProvider<Tracer = T>,
    {
        self.tracer = TracerChoice::explicit(provider);
        self
    }

    /// Makes no spans (the current context is still injected if a propagator is
    /// installed).
    pub fn without_traces(mut self) -> Self {
        self.tracer = TracerChoice::Disabled;
        self
    }

    /// Records metrics with this provider's meter instead of the global one.
    pub fn meter_provider<P: MeterProvider>(mut self, provider: &P) -> Self {
        self.meter = MeterChoice::explicit(provider);
        self
    }

    /// Records no metrics.
    pub fn without_metrics(mut self) -> Self {
        self.meter = MeterChoice::Disabled;
        self
    }

    /// Writes the context into outgoing headers with this propagator. By default the
    /// global propagator is used, or, when none is installed, this crate's strict
    /// [`TraceContextPropagator`](crate::propagation::TraceContextPropagator).
    pub fn propagator<P>(mut self, propagator: P) -> Self
    where
        P: TextMapPropagator + Send + Sync + 'static,
    {
        self.propagator = Some(Arc::new(propagator));
        self
    }

    /// Records these request headers as `http.request.header.<name>`.
    pub fn request_headers<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        self.config.request_headers = attributes::capture_list(semconv::HTTP_REQUEST_HEADER, names);
        self
    }

    /// Records these response headers as `http.response.header.<name>`.
    pub fn response_headers<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        self.config.response_headers =
            attributes::capture_list(semconv::HTTP_RESPONSE_HEADER, names);
        self
    }

    /// Replaces the methods recorded as themselves (others are `_OTHER`); see
    /// [`OtelLayerBuilder::known_methods`](crate::server::OtelLayerBuilder::known_methods).
    pub fn known_methods<I, M>(mut self, methods: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: AsRef<str>,
    {
        self.config.known_methods = KnownMethods::custom(methods);
        self
    }

    /// Replaces the query keys whose values are recorded as `REDACTED` in `url.full`.
    pub fn sensitive_query_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<Cow<'static, str>>,
    {
        self.config.sensitive_query_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Records `http.client.active_requests` (opt-in).
    pub fn active_requests(mut self, enable: bool) -> Self {
        self.config.active_requests = enable;
        self
    }

    /// Records `http.client.request.body.size` and `http.client.response.body.size`
    /// (opt-in).
    pub fn body_size_metrics(mut self, enable: bool) -> Self {
        self.config.body_size_metrics = enable;
        self
    }

    /// Builds the layer.
    pub fn build(self) -> OtelClientLayer {
        let tracer = self.tracer.resolve();
        let metrics = self
            .meter
            .resolve()
            .map(|meter| ClientMetrics::new(&meter, &self.config));
        let propagation = Propagation::resolve(self.propagator, tracer.is_some());
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
    pub(crate) metrics: Option<ClientMetrics>,
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

pub(crate) struct ClientMetrics {
    pub(crate) duration: Histogram<f64>,
    pub(crate) request_size: Option<Histogram<u64>>,
    pub(crate) response_size: Option<Histogram<u64>>,
    pub(crate) active: Option<UpDownCounter<i64>>,
}

impl ClientMetrics {
    fn new(meter: &Meter, config: &ClientConfig) -> Self {
        let size = |name: &'static str, description: &'static str| {
            meter
                .u64_histogram(name)
                .with_unit("By")
                .with_description(description)
                .with_boundaries(semconv::BODY_SIZE_BUCKETS.to_vec())
                .build()
        };
        Self {
            duration: meter
                .f64_histogram(semconv::HTTP_CLIENT_REQUEST_DURATION)
                .with_unit("s")
                .with_description("Duration of HTTP client requests.")
                .with_boundaries(semconv::DURATION_BUCKETS.to_vec())
                .build(),
            request_size: config.body_size_metrics.then(|| {
                size(
                    semconv::HTTP_CLIENT_REQUEST_BODY_SIZE,
                    "Size of HTTP client request bodies.",
                )
            }),
            response_size: config.body_size_metrics.then(|| {
                size(
                    semconv::HTTP_CLIENT_RESPONSE_BODY_SIZE,
                    "Size of HTTP client response bodies.",
                )
            }),
            active: config.active_requests.then(|| {
                meter
                    .i64_up_down_counter(semconv::HTTP_CLIENT_ACTIVE_REQUESTS)
                    .with_unit("{request}")
                    .with_description("Number of active HTTP client requests.")
                    .build()
            }),
        }
    }
}
