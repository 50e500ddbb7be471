/// `get_ref`, `get_mut` and `into_inner` for a service with an `inner` field
/// (as tower-http's macro of the same name).
macro_rules! define_inner_service_accessors {
    () => {
        /// Gets a reference to the inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// Gets a mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

pub(crate) use define_inner_service_accessors;

/// The builder methods the server and client layers share. The builder has fields
/// `sources: Sources` and `config` with `request_headers`, `response_headers`,
/// `known_methods`, `sensitive_query_keys`, `active_requests` and `body_size_metrics`.
macro_rules! define_common_builder_methods {
    () => {
        /// Makes spans with this provider's tracer instead of the global one.
        pub fn tracer_provider<P, T, S>(mut self, provider: &P) -> Self
        where
            S: opentelemetry::trace::Span + Send + Sync + 'static,
            T: opentelemetry::trace::Tracer<Span = S> + Send + Sync + 'static,
            P: opentelemetry::trace::TracerProvider<Tracer = T>,
        {
            self.sources.tracer = crate::telemetry::TracerChoice::explicit(provider);
            self
        }

        /// Makes no spans (the context is still propagated if a propagator is installed).
        pub fn without_traces(mut self) -> Self {
            self.sources.tracer = crate::telemetry::TracerChoice::Disabled;
            self
        }

        /// Records metrics with this provider's meter instead of the global one.
        pub fn meter_provider<P: opentelemetry::metrics::MeterProvider>(
            mut self,
            provider: &P,
        ) -> Self {
            self.sources.meter = crate::telemetry::MeterChoice::explicit(provider);
            self
        }

        /// Records no metrics.
        pub fn without_metrics(mut self) -> Self {
            self.sources.meter = crate::telemetry::MeterChoice::Disabled;
            self
        }

        /// Reads and writes the trace context with this propagator. By default the
        /// global propagator is used (read on each request, so a later
        /// `set_text_map_propagator` takes effect), or, when none was installed when the
        /// layer was built, this crate's strict
        /// [`TraceContextPropagator`](crate::propagation::TraceContextPropagator).
        pub fn propagator<P>(mut self, propagator: P) -> Self
        where
            P: opentelemetry::propagation::TextMapPropagator + Send + Sync + 'static,
        {
            self.sources.propagator = Some(std::sync::Arc::new(propagator));
            self
        }

        /// Records these request headers as `http.request.header.<name>` (a string
        /// array, one element per field). Capture no secrets.
        pub fn request_headers<I, N>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = N>,
            N: AsRef<str>,
        {
            self.config.request_headers =
                crate::attributes::capture_list(crate::semconv::HTTP_REQUEST_HEADER, names);
            self
        }

        /// Records these response headers as `http.response.header.<name>`.
        pub fn response_headers<I, N>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = N>,
            N: AsRef<str>,
        {
            self.config.response_headers =
                crate::attributes::capture_list(crate::semconv::HTTP_RESPONSE_HEADER, names);
            self
        }

        /// Replaces the methods recorded as themselves (others are `_OTHER`). The
        /// default is `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` if set, else the RFC 9110
        /// methods plus PATCH and QUERY. Case-sensitive.
        pub fn known_methods<I, M>(mut self, methods: I) -> Self
        where
            I: IntoIterator<Item = M>,
            M: AsRef<str>,
        {
            self.config.known_methods = crate::attributes::KnownMethods::custom(methods);
            self
        }

        /// Replaces the query keys whose values are recorded as `REDACTED`. The default
        /// is every key the conventions have listed: `AWSAccessKeyId`, `Signature`,
        /// `sig`, `X-Goog-Signature`, `X-Amz-Signature`, `X-Amz-Credential`,
        /// `X-Amz-Security-Token`.
        pub fn sensitive_query_keys<I, K>(mut self, keys: I) -> Self
        where
            I: IntoIterator<Item = K>,
            K: Into<std::borrow::Cow<'static, str>>,
        {
            self.config.sensitive_query_keys = keys.into_iter().map(Into::into).collect();
            self
        }

        /// Records the `active_requests` up-down counter (opt-in).
        pub fn active_requests(mut self, enable: bool) -> Self {
            self.config.active_requests = enable;
            self
        }
    };
}

pub(crate) use define_common_builder_methods;
