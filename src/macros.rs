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

/// The builder methods the server and client layers (and the reqwest middleware) share.
/// The builder has fields `sources: Sources` and `options: config::Options`.
///
/// The naming scheme of every builder: an on/off option is `name(bool)`; a list is
/// `name(IntoIterator)`, replacing the default list; a callback is `name(closure)`, and a
/// per-request variant of an on/off option is `name_fn(closure)`.
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

        /// Makes spans (on by default). Off, the layer makes none, and still propagates
        /// the context if a propagator is installed. Independent of
        /// [`tracer_provider`](Self::tracer_provider): the order of the calls does not
        /// matter.
        pub fn traces(mut self, enable: bool) -> Self {
            self.sources.traces = enable;
            self
        }

        /// Makes no spans: the same as [`traces(false)`](Self::traces).
        #[deprecated(since = "0.2.0", note = "use `traces(false)`")]
        pub fn without_traces(self) -> Self {
            self.traces(false)
        }

        /// Records metrics with this provider's meter instead of the global one.
        pub fn meter_provider<P: opentelemetry::metrics::MeterProvider>(
            mut self,
            provider: &P,
        ) -> Self {
            self.sources.meter = crate::telemetry::MeterChoice::explicit(provider);
            self
        }

        /// Records metrics (on by default). Independent of
        /// [`meter_provider`](Self::meter_provider): the order of the calls does not
        /// matter.
        pub fn metrics(mut self, enable: bool) -> Self {
            self.sources.metrics = enable;
            self
        }

        /// Records no metrics: the same as [`metrics(false)`](Self::metrics).
        #[deprecated(since = "0.2.0", note = "use `metrics(false)`")]
        pub fn without_metrics(self) -> Self {
            self.metrics(false)
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
        /// array, one element per field). Names are case-insensitive. The values of
        /// [sensitive headers](Self::sensitive_headers) are recorded as `REDACTED`.
        ///
        /// Without this option the list comes from the environment (see [Configuration
        /// by environment](crate#configuration-by-environment)); an empty list captures
        /// nothing, whatever the environment says.
        ///
        /// `build()` panics on a name that is not a valid header name.
        pub fn request_headers<I, N>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = N>,
            N: AsRef<str>,
        {
            self.options.request_headers =
                Some(names.into_iter().map(|n| n.as_ref().to_owned()).collect());
            self
        }

        /// Records these response headers as `http.response.header.<name>`, as
        /// [`request_headers`](Self::request_headers) does.
        pub fn response_headers<I, N>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = N>,
            N: AsRef<str>,
        {
            self.options.response_headers =
                Some(names.into_iter().map(|n| n.as_ref().to_owned()).collect());
            self
        }

        /// Replaces the headers whose captured values are recorded as `REDACTED`. The
        /// default is `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS` if set,
        /// else `authorization`, `proxy-authorization`, `cookie`, `set-cookie`,
        /// `x-api-key`, `x-auth-token` and `x-csrf-token`. The list replaces the default:
        /// include those to keep them.
        ///
        /// `build()` panics on a name that is not a valid header name.
        pub fn sensitive_headers<I, N>(mut self, names: I) -> Self
        where
            I: IntoIterator<Item = N>,
            N: AsRef<str>,
        {
            self.options.sensitive_headers =
                Some(names.into_iter().map(|n| n.as_ref().to_owned()).collect());
            self
        }

        /// Replaces the methods recorded as themselves (others are `_OTHER`). The
        /// default is `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` if set, else the RFC 9110
        /// methods plus PATCH and QUERY. Case-sensitive.
        ///
        /// `build()` panics on an empty list or an entry that is not a method.
        pub fn known_methods<I, M>(mut self, methods: I) -> Self
        where
            I: IntoIterator<Item = M>,
            M: AsRef<str>,
        {
            self.options.known_methods =
                Some(methods.into_iter().map(|m| m.as_ref().to_owned()).collect());
            self
        }

        /// Replaces the query keys whose values are recorded as `REDACTED`. The default
        /// is every key the conventions have listed: `AWSAccessKeyId`, `Signature`,
        /// `sig`, `X-Goog-Signature`, `X-Amz-Signature`, `X-Amz-Credential`,
        /// `X-Amz-Security-Token`. An empty list redacts nothing.
        ///
        /// `build()` panics on an empty key.
        pub fn sensitive_query_keys<I, K>(mut self, keys: I) -> Self
        where
            I: IntoIterator<Item = K>,
            K: Into<std::borrow::Cow<'static, str>>,
        {
            self.options.sensitive_query_keys = Some(keys.into_iter().map(Into::into).collect());
            self
        }

        /// Calls `hook` once per request, when its span starts, with the request's
        /// [`RequestParts`](crate::enrich::RequestParts): the attributes it adds are on
        /// the span from its start (a sampler sees them) and, those added with
        /// [`Attributes::metric`](crate::enrich::Attributes::metric), on the request's
        /// metric points. Bounded, and a panic is caught: see [`enrich`](crate::enrich).
        pub fn on_request<F>(mut self, hook: F) -> Self
        where
            F: Fn(&crate::enrich::RequestParts<'_>, &mut crate::enrich::Attributes)
                + Send
                + Sync
                + 'static,
        {
            self.options.enrichment.on_request = Some(std::sync::Arc::new(hook));
            self
        }

        /// Calls `hook` once per request, when the response head arrives, with the
        /// response's [`ResponseParts`](crate::enrich::ResponseParts) (status, headers,
        /// extensions): its attributes go on the span and, those added with
        /// [`Attributes::metric`](crate::enrich::Attributes::metric), on the request's
        /// metric points. Bounded, and a panic is caught: see [`enrich`](crate::enrich).
        pub fn on_response<F>(mut self, hook: F) -> Self
        where
            F: Fn(&crate::enrich::ResponseParts<'_>, &mut crate::enrich::Attributes)
                + Send
                + Sync
                + 'static,
        {
            self.options.enrichment.on_response = Some(std::sync::Arc::new(hook));
            self
        }

        /// Adds an `exception` event (`exception.type`, `exception.message`) to the span
        /// of a request that fails with an error (not a status code): a service or
        /// transport error, a body error, a panic. Off by default (the error is on the
        /// span already, as `error.type` and the status description).
        ///
        /// `build()` panics if it is on and [`traces`](Self::traces) is off.
        pub fn record_exception(mut self, enable: bool) -> Self {
            self.options.enrichment.record_exception = enable;
            self
        }

        /// Adds an `http.response.head` event to the span when the response head is
        /// produced (server) or arrives (client): the time to first byte, for responses
        /// that stream long after their head. Off by default.
        pub fn response_head_event(mut self, enable: bool) -> Self {
            self.options.response_head_event = enable;
            self
        }

        /// Adds a span event for each body frame that passes (off by default), as Go's
        /// `otelhttp.WithMessageEvents`: `write` for the response frames a server sends,
        /// `read` for those a client receives (and for an axum request body a server's
        /// handler reads), each with the frame's bytes and the running total;
        /// bounded at [`MAX_MESSAGE_EVENTS`](crate::MAX_MESSAGE_EVENTS) per direction, then
        /// one summary event with the totals when the body ends. See
        /// [Message events](crate#message-events).
        ///
        /// `build()` panics if it is on and [`traces`](Self::traces) is off.
        pub fn message_events(mut self, enable: bool) -> Self {
            self.options.message_events = enable;
            self
        }

        /// Records the `active_requests` up-down counter (off by default).
        ///
        /// `build()` panics if it is on and [`metrics`](Self::metrics) is off.
        pub fn active_requests(mut self, enable: bool) -> Self {
            self.options.active_requests = enable;
            self
        }
    };
}

pub(crate) use define_common_builder_methods;
