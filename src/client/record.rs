//! The telemetry of one client request, from `call` to the end of its response body.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue, Value};

use super::layer::ClientShared;
use super::{ParentContext, ResendCount, UrlTemplate};
use crate::attributes::{self, Attrs, MethodLabel};
use crate::body::{BodyEnd, CallRecord};
use crate::enrich::{self, Enriched, Labeler, RequestParts, ResponseParts};
use crate::grpc::{self, Rpc};
use crate::semconv::*;
use crate::telemetry::{self, Direction, MessageEvents, Side};

pub(crate) struct ClientRecord {
    shared: Arc<ClientShared>,
    start: Instant,
    span_start: Option<SystemTime>,
    /// The context holding the client span, when there is one.
    cx: Option<Context>,
    method: MethodLabel,
    server_address: Option<StringValue>,
    server_port: Option<u16>,
    template: Option<UrlTemplate>,
    request_body_size: Option<u64>,
    status: Option<StatusCode>,
    version: Option<&'static str>,
    /// Hook attributes and labels, when any are used.
    enriched: Enriched,
    /// A gRPC call: RPC conventions instead of HTTP ones.
    rpc: Option<Box<Rpc>>,
}

impl ClientRecord {
    /// Starts the span and injects its context into the request's headers.
    pub(crate) fn start<B: Body>(
        shared: &Arc<ClientShared>,
        req: Request<B>,
    ) -> (Self, Request<B>) {
        let request_body_size = attributes::request_body_size(req.body());
        let (mut parts, body) = req.into_parts();
        let record = Self::start_parts(shared, OutgoingParts::of(&mut parts), request_body_size);
        (record, Request::from_parts(parts, body))
    }

    /// Starts from the parts of a request, for clients whose request is not an
    /// `http::Request` (reqwest).
    #[allow(clippy::needless_pass_by_value)] // a bundle of borrows, consumed by design
    pub(crate) fn start_parts(
        shared: &Arc<ClientShared>,
        req: OutgoingParts<'_>,
        request_body_size: Option<u64>,
    ) -> Self {
        let start = Instant::now();
        let config = &shared.config;
        let method = config.common.known_methods.label(req.method);
        let host_header = attributes::header_str(req.headers, &http::header::HOST);
        let authority = req.uri.authority().map(|a| a.as_str()).or(host_header);
        let rpc = grpc::is_grpc_request(req.method, req.headers)
            .then(|| Box::new(Rpc::new(req.uri.path(), req.headers)));
        let (server_address, server_port) = match authority.and_then(attributes::split_host_port) {
            // gRPC: the port only when explicit (the target names it).
            Some((host, port)) if rpc.is_some() => (Some(attributes::owned(host)), port),
            Some((host, port)) => (
                Some(attributes::owned(host)),
                port.or_else(|| default_port(req.uri)),
            ),
            // A path-only URI (tonic's generated clients): the configured target.
            None => match &config.target {
                Some((host, port)) => (Some(host.clone()), *port),
                None => (None, None),
            },
        };
        let template = req.extensions.get::<UrlTemplate>().cloned();
        let enrichment = &config.common.enrichment;
        // Before the context is injected: the caller's headers.
        let mut hooked = enrichment.on_request.as_ref().map(|hook| {
            let parts = RequestParts {
                method: req.method,
                uri: req.uri,
                headers: req.headers,
                extensions: req.extensions,
            };
            enrich::run_hook("on_request", |attributes| hook(&parts, attributes))
        });

        let mut span_start = None;
        let cx = match &shared.tracer {
            Some(tracer) => {
                let now = SystemTime::now();
                span_start = Some(now);
                let mut attributes = || {
                    let mut attrs = Vec::with_capacity(10);
                    if let Some(rpc) = &rpc {
                        rpc.start_attributes(&mut attrs);
                        if let Some(address) = &server_address {
                            attrs.push(KeyValue::new(
                                SERVER_ADDRESS,
                                Value::String(address.clone()),
                            ));
                            if let Some(port) = server_port {
                                attrs.push(KeyValue::new(SERVER_PORT, i64::from(port)));
                            }
                        }
                        if let Some(hooked) = hooked.as_mut() {
                            hooked.move_to_span(&mut attrs);
                        }
                        return attrs;
                    }
                    attrs.push(KeyValue::new(
                        HTTP_REQUEST_METHOD,
                        Value::String(method.value.clone()),
                    ));
                    if let Some(original) = method.original(req.method) {
                        attrs.push(original);
                    }
                    attrs.push(KeyValue::new(
                        URL_FULL,
                        url_full(req.uri, host_header, &config.common.sensitive_query_keys),
                    ));
                    if let Some(address) = &server_address {
                        attrs.push(KeyValue::new(
                            SERVER_ADDRESS,
                            Value::String(address.clone()),
                        ));
                    }
                    if let Some(port) = server_port {
                        attrs.push(KeyValue::new(SERVER_PORT, i64::from(port)));
                    }
                    if let Some(template) = &template {
                        attrs.push(KeyValue::new(
                            URL_TEMPLATE,
                            Value::String(template.0.value()),
                        ));
                    }
                    if let Some(ResendCount(n)) = req.extensions.get::<ResendCount>() {
                        if *n > 0 {
                            attrs.push(KeyValue::new(HTTP_REQUEST_RESEND_COUNT, i64::from(*n)));
                        }
                    }
                    attrs.extend(attributes::captured_headers(
                        req.headers,
                        &config.common.request_headers,
                    ));
                    if let Some(hooked) = hooked.as_mut() {
                        hooked.move_to_span(&mut attrs);
                    }
                    attrs
                };
                let name = match &rpc {
                    Some(rpc) => rpc.span_name(),
                    None => method.span_name(template.as_ref().map(|t| t.0.as_str())),
                };
                let builder = SpanBuilder::from_name(name)
                    .with_kind(SpanKind::Client)
                    .with_start_time(now);
                let cx = with_parent(req.extensions, |parent| {
                    let span = if unsampled(parent) {
                        // Inside an unsampled trace the span usually records nothing: ask
                        // first, build the attributes only if it records all the same.
                        let mut span = tracer.build_with_context(builder, parent);
                        if span.is_recording() {
                            span.set_attributes(attributes());
                        }
                        span
                    } else {
                        let mut builder = builder;
                        builder.attributes = Some(attributes());
                        tracer.build_with_context(builder, parent)
                    };
                    parent.with_span(span)
                });
                shared.propagation.inject(&cx, req.headers);
                Some(cx)
            }
            None => {
                // No spans: still pass the caller's context on, if a propagator is set.
                with_parent(req.extensions, |cx| {
                    shared.propagation.inject(cx, req.headers)
                });
                None
            }
        };

        let record = Self {
            shared: shared.clone(),
            start,
            span_start,
            cx,
            method,
            server_address,
            server_port,
            template,
            request_body_size,
            status: None,
            version: None,
            enriched: Enriched::start(hooked.as_mut(), req.extensions.get::<Labeler>().cloned()),
            rpc,
        };
        let active = shared.metrics.as_ref().and_then(|m| m.active.as_ref());
        // `http.client.active_requests` counts HTTP requests, not gRPC calls.
        if let Some(active) = active.filter(|_| record.rpc.is_none()) {
            active.add(1, record.active_attributes().as_slice());
        }
        record
    }

    pub(crate) fn on_response<B>(&mut self, res: &Response<B>) {
        self.on_response_parts(res.status(), res.version(), res.headers(), res.extensions());
    }

    /// The response arrived: its status, version, captured headers, and the address of
    /// the peer it came from, where the client tells it (hyper-util's `HttpInfo`, with
    /// the `hyper-util` feature).
    pub(crate) fn on_response_parts(
        &mut self,
        status: StatusCode,
        version: http::Version,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) {
        self.status = Some(status);
        self.version = attributes::protocol_version(version);
        if self.shared.config.common.response_head_event {
            telemetry::response_head_event(self.cx.as_ref(), self.span_start, self.start.elapsed());
        }
        let mut hooked = self
            .shared
            .config
            .common
            .enrichment
            .on_response
            .as_ref()
            .map(|hook| {
                let parts = ResponseParts {
                    status,
                    version,
                    headers,
                    extensions,
                };
                enrich::run_hook("on_response", |attributes| hook(&parts, attributes))
            });
        self.enriched
            .on_response(extensions, hooked.as_mut(), self.cx.as_ref());
        if let Some(rpc) = &mut self.rpc {
            // A trailers-only response carries the status in its head.
            rpc.response(status, headers);
            return;
        }
        let Some(cx) = &self.cx else {
            return;
        };
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            HTTP_RESPONSE_STATUS_CODE,
            i64::from(status.as_u16()),
        ));
        if let Some(version) = self.version {
            span.set_attribute(KeyValue::new(NETWORK_PROTOCOL_VERSION, version));
        }
        #[cfg(feature = "hyper-util")]
        if let Some(info) = extensions.get::<hyper_util::client::legacy::connect::HttpInfo>() {
            let peer = info.remote_addr();
            span.set_attribute(KeyValue::new(
                NETWORK_PEER_ADDRESS,
                Value::String(StringValue::from(peer.ip().to_string())),
            ));
            span.set_attribute(KeyValue::new(NETWORK_PEER_PORT, i64::from(peer.port())));
        }
        if !self.shared.config.common.response_headers.is_empty() {
            span.set_attributes(attributes::captured_headers(
                headers,
                &self.shared.config.common.response_headers,
            ));
        }
    }

    fn finish_body(self, end: BodyEnd, bytes: u64) {
        if self.rpc.is_some() {
            let (end, error) = match end {
                BodyEnd::Complete => (grpc::End::Complete, None),
                // A client that stops reading a stream cancels the call.
                BodyEnd::Aborted => (grpc::End::Dropped, None),
                BodyEnd::Error(type_name) => (grpc::End::Failed, Some(type_name)),
                BodyEnd::Panic => (grpc::End::Failed, Some(crate::errors::PANIC)),
            };
            return self.finish_rpc(end, error, None);
        }
        match end {
            // The caller chose to stop reading: not an error.
            BodyEnd::Complete | BodyEnd::Aborted => self.finish(None, Some(bytes)),
            BodyEnd::Error(type_name) => self.finish(Some(type_name), Some(bytes)),
            BodyEnd::Panic => self.finish(Some(crate::errors::PANIC), Some(bytes)),
        }
    }

    /// A gRPC call.
    pub(crate) fn is_rpc(&self) -> bool {
        self.rpc.is_some()
    }

    /// The response future was dropped before a response (`panicked`: unwound through).
    pub(crate) fn end_early(self, panicked: bool) {
        if self.rpc.is_some() {
            return match panicked {
                true => self.finish_rpc(grpc::End::Failed, Some(crate::errors::PANIC), None),
                false => self.finish_rpc(grpc::End::Dropped, None, None),
            };
        }
        // A cancellation the caller chose is not an error; a panic is one.
        self.finish(panicked.then_some(crate::errors::PANIC), None);
    }

    /// No response: the inner service failed with a transport error, of class
    /// `error_type` (`connect`, `timeout`, ... or its type name), described by
    /// `description`, whose type is `exception_type`.
    pub(crate) fn transport_error(
        mut self,
        error_type: &'static str,
        description: Option<String>,
        exception_type: &'static str,
    ) {
        if let Some(rpc) = &mut self.rpc {
            // No status from the server: the client's own. A deadline that passed is
            // `DEADLINE_EXCEEDED` (tonic's channel reports it as its own timeout error).
            let code = match rpc.timeout {
                Some(deadline) if self.start.elapsed() >= deadline => grpc::DEADLINE_EXCEEDED,
                _ => grpc::UNAVAILABLE,
            };
            rpc.code = Some(code);
            return self.finish_rpc(grpc::End::Failed, None, description);
        }
        self.finish_described(Some(error_type), description, Some(exception_type), None);
    }

    /// Ends a gRPC call: its code, the span, `rpc.client.call.duration`.
    fn finish_rpc(
        mut self,
        end: grpc::End,
        failure: Option<&'static str>,
        failure_message: Option<String>,
    ) {
        let Some(rpc) = self.rpc.take() else {
            return;
        };
        let elapsed = self.start.elapsed();
        // Labels go on the span before it ends.
        let extra = std::mem::take(&mut self.enriched).finish(self.cx.as_ref());
        let mut attrs = extra.attrs::<8>();
        rpc.end(
            Side::Client,
            grpc::Ending {
                end,
                failure,
                failure_message,
                elapsed,
                span: self.cx.as_ref().zip(self.span_start),
                record_exception: self.shared.config.common.enrichment.record_exception,
            },
            &mut attrs,
        );
        let Some(metrics) = &self.shared.metrics else {
            return;
        };
        self.push_server(&mut attrs);
        metrics.record_rpc(attrs.as_slice(), elapsed.as_secs_f64());
    }

    /// Ends the span and records the metrics. `error` is the error type of a failure.
    pub(crate) fn finish(self, error: Option<&'static str>, response_bytes: Option<u64>) {
        self.finish_described(error, None, error, response_bytes);
    }

    /// Ends the span and records the metrics, with the failure's own description (its
    /// messages) when there is one.
    pub(crate) fn finish_described(
        mut self,
        error: Option<&'static str>,
        description: Option<String>,
        exception_type: Option<&'static str>,
        response_bytes: Option<u64>,
    ) {
        let elapsed = self.start.elapsed();
        let error_status = self
            .status
            .filter(|s| s.is_client_error() || s.is_server_error());
        let error_type =
            error.or_else(|| error_status.map(|s| attributes::status_code_str(s.as_u16())));

        // An error status code explains itself; a transport or body error says so.
        let description: std::borrow::Cow<'static, str> = match (error, description) {
            (Some(_), Some(message)) => message.into(),
            (Some(_), None) => "request failed".into(),
            (None, _) => "".into(),
        };
        let extra = std::mem::take(&mut self.enriched).finish(self.cx.as_ref());
        telemetry::end_span(
            self.cx.as_ref(),
            self.span_start,
            elapsed,
            error_type,
            description,
            exception_type.filter(|_| {
                error.is_some() && self.shared.config.common.enrichment.record_exception
            }),
        );

        let Some(metrics) = &self.shared.metrics else {
            return;
        };
        let mut attrs = extra.attrs::<8>();
        attrs.push(KeyValue::new(
            HTTP_REQUEST_METHOD,
            Value::String(self.method.value.clone()),
        ));
        self.push_server(&mut attrs);
        if let Some(status) = self.status {
            attrs.push(KeyValue::new(
                HTTP_RESPONSE_STATUS_CODE,
                i64::from(status.as_u16()),
            ));
        }
        if let Some(error_type) = error_type {
            attrs.push(KeyValue::new(ERROR_TYPE, error_type));
        }
        if let Some(version) = self.version {
            attrs.push(KeyValue::new(NETWORK_PROTOCOL_VERSION, version));
        }
        if let Some(template) = &self.template {
            attrs.push(KeyValue::new(
                URL_TEMPLATE,
                Value::String(template.0.value()),
            ));
        }
        metrics.record(
            attrs.as_slice(),
            elapsed.as_secs_f64(),
            self.request_body_size,
            response_bytes,
        );
        if let Some(active) = &metrics.active {
            active.add(-1, self.active_attributes().as_slice());
        }
    }

    fn push_server<const N: usize>(&self, attrs: &mut Attrs<N>) {
        if let Some(address) = &self.server_address {
            attrs.push(KeyValue::new(
                SERVER_ADDRESS,
                Value::String(address.clone()),
            ));
        }
        if let Some(port) = self.server_port {
            attrs.push(KeyValue::new(SERVER_PORT, i64::from(port)));
        }
    }

    /// Identical at +1 and -1.
    fn active_attributes(&self) -> Attrs<4> {
        let mut attrs = Attrs::<4>::new();
        attrs.push(KeyValue::new(
            HTTP_REQUEST_METHOD,
            Value::String(self.method.value.clone()),
        ));
        self.push_server(&mut attrs);
        if let Some(template) = &self.template {
            attrs.push(KeyValue::new(
                URL_TEMPLATE,
                Value::String(template.0.value()),
            ));
        }
        attrs
    }
}

impl CallRecord for ClientRecord {
    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(rpc) = &mut self.rpc {
            rpc.headers(trailers);
        }
    }

    fn message_events(&self) -> Option<MessageEvents<'_>> {
        MessageEvents::new(
            self.shared.config.common.message_events,
            self.cx.as_ref(),
            self.span_start,
            self.start,
            Direction::Read,
        )
    }

    fn finish(self: Box<Self>, end: BodyEnd, bytes: u64) {
        (*self).finish_body(end, bytes);
    }
}

/// The parts of an outgoing request the record reads, and the headers it writes.
pub(crate) struct OutgoingParts<'a> {
    pub(crate) method: &'a http::Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a mut http::HeaderMap,
    pub(crate) extensions: &'a http::Extensions,
}

impl<'a> OutgoingParts<'a> {
    pub(crate) fn of(parts: &'a mut http::request::Parts) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &mut parts.headers,
            extensions: &parts.extensions,
        }
    }
}

/// Runs `f` with the request's parent: the [`ParentContext`] it carries, else the current
/// context.
fn with_parent<T>(extensions: &http::Extensions, f: impl FnOnce(&Context) -> T) -> T {
    match extensions.get::<ParentContext>() {
        Some(ParentContext(cx)) => f(cx),
        None => Context::map_current(f),
    }
}

/// A valid parent span that is not sampled: a parent-based sampler drops the child.
fn unsampled(parent: &Context) -> bool {
    let span = parent.span();
    let sc = span.span_context();
    sc.is_valid() && !sc.is_sampled()
}

fn default_port(uri: &Uri) -> Option<u16> {
    match uri.scheme_str() {
        Some("https") | Some("wss") => Some(443),
        Some("http") | Some("ws") | None => Some(80),
        Some(_) => None,
    }
}

/// `url.full`: the absolute URL with credentials replaced by `REDACTED:REDACTED` and
/// sensitive query values by `REDACTED`.
fn url_full(
    uri: &Uri,
    host_header: Option<&str>,
    sensitive: &[std::borrow::Cow<'static, str>],
) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(uri.scheme_str().unwrap_or("http"));
    out.push_str("://");
    if let Some(authority) = uri.authority().map(|a| a.as_str()).or(host_header) {
        match authority.rsplit_once('@') {
            Some((_, host)) => {
                out.push_str("REDACTED:REDACTED@");
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
    }
    out.push_str(uri.path());
    if let Some(query) = uri.query() {
        out.push('?');
        out.push_str(&attributes::redact_query(query, sensitive));
    }
    if out.len() > attributes::MAX_VALUE_LEN {
        out.truncate(attributes::bounded(&out).len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn url_full_redacts() {
        let keys: Vec<Cow<'static, str>> = SENSITIVE_QUERY_KEYS
            .iter()
            .map(|k| Cow::Borrowed(*k))
            .collect();
        let uri: Uri = "https://user:pass@example.com:8443/a/b?x=1&sig=s3cr3t"
            .parse()
            .unwrap();
        assert_eq!(
            url_full(&uri, None, &keys),
            "https://REDACTED:REDACTED@example.com:8443/a/b?x=1&sig=REDACTED"
        );
        let uri: Uri = "/p?q".parse().unwrap();
        assert_eq!(url_full(&uri, Some("h:1"), &keys), "http://h:1/p?q");
        let uri: Uri = "http://example.com".parse().unwrap();
        assert_eq!(url_full(&uri, None, &keys), "http://example.com/");
    }
}
