//! The telemetry of one server request, from `call` to the end of its response body.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Request, Response, StatusCode};
use http_body::Body;
use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanKind, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context, KeyValue, StringValue, Value};

use super::layer::Shared;
use super::PeerAddr;
use crate::attributes::{self, Attrs, MethodLabel};
use crate::body::{BodyEnd, CallRecord};
use crate::enrich::{self, Enriched, Labeler, RequestParts, ResponseParts};
use crate::grpc::{self, Rpc};
use crate::semconv::*;
use crate::telemetry::{self, Direction, MessageEvents, Side};
use crate::HttpRoute;

/// Why a request ended before its response body existed.
#[derive(Clone, Debug)]
pub(crate) enum Early {
    /// The inner service returned an error of this type, with its messages when the
    /// layer can read them.
    ServiceError(&'static str, Option<String>),
    /// The response future was dropped before the inner service answered.
    Cancelled,
    /// The inner service panicked while it was polled.
    Panic,
}

/// `error.type` of a response future dropped before the inner service answered.
pub(crate) const ERROR_CANCELLED: &str = "request_cancelled";
/// `error.type` of a response body dropped before its end.
pub(crate) const ERROR_BODY_ABORTED: &str = "response_body_aborted";

pub(crate) struct ServerRecord {
    shared: Arc<Shared>,
    start: Instant,
    /// The span's start time, when there is a span: the span and the duration metric
    /// are measured from the same instant and end at the same instant.
    span_start: Option<SystemTime>,
    /// The request's context: the span, or only the propagated parent.
    cx: Option<Context>,
    method: MethodLabel,
    scheme: StringValue,
    version: Option<&'static str>,
    route: Option<HttpRoute>,
    /// `server.address`/`server.port` for the metrics, when opted in.
    server_address: Option<(StringValue, Option<u16>)>,
    request_body_size: Option<u64>,
    /// The bytes of a request body of unknown length, counted as they are read.
    #[cfg(feature = "axum")]
    request_body_counter: Option<super::count::Counter>,
    status: Option<StatusCode>,
    head: bool,
    /// Hook attributes and labels, when any are used.
    enriched: Enriched,
    /// A gRPC call: RPC conventions instead of HTTP ones.
    rpc: Option<Box<Rpc>>,
}

impl ServerRecord {
    pub(crate) fn start<B: Body>(shared: &Arc<Shared>, req: &Request<B>, public: bool) -> Self {
        let start = Instant::now();
        let config = &shared.config;
        let headers = req.headers();
        let uri = request_uri(req);
        let method = config.common.known_methods.label(req.method());
        let forwarded = if config.trust_forwarded {
            attributes::forwarded(headers)
        } else {
            attributes::Forwarded::default()
        };
        // What a client sends (a forwarded proto, an absolute-form target, HTTP/2's
        // `:scheme`) counts only as `http` or `https`: `url.scheme` is a metric attribute.
        let scheme = match (
            forwarded.proto.and_then(attributes::http_scheme),
            &config.scheme,
            uri.scheme_str().and_then(attributes::http_scheme),
        ) {
            (Some(proto), _, _) => StringValue::from(proto),
            (None, Some(configured), _) => configured.clone(),
            (None, None, Some(scheme)) => StringValue::from(scheme),
            (None, None, None) => StringValue::from("http"),
        };
        let route = HttpRoute::from_extensions(req.extensions());
        let rpc = grpc::is_grpc_request(req.method(), headers)
            .then(|| Box::new(Rpc::new(uri.path(), headers)));
        let enrichment = &config.common.enrichment;
        let mut hooked = enrichment.on_request.as_ref().map(|hook| {
            let parts = RequestParts {
                method: req.method(),
                uri,
                headers,
                extensions: req.extensions(),
            };
            enrich::run_hook("on_request", |attributes| hook(&parts, attributes))
        });
        let version = attributes::protocol_version(req.version());
        let request_body_size = attributes::request_body_size(req.body());
        let server_address = || {
            forwarded
                .host
                .or_else(|| uri.authority().map(|a| a.as_str()))
                .or_else(|| attributes::header_str(headers, &http::header::HOST))
                .and_then(attributes::split_host_port)
        };

        let mut span_start = None;
        let cx = match &shared.tracer {
            Some(tracer) => {
                let now = SystemTime::now();
                span_start = Some(now);
                let parent = shared.propagation.extract(headers);
                let mut attributes = || {
                    let mut attrs = Vec::with_capacity(16);
                    if let Some(rpc) = &rpc {
                        rpc.start_attributes(&mut attrs);
                        if let Some((host, port)) = server_address() {
                            attrs.push(KeyValue::new(
                                SERVER_ADDRESS,
                                Value::String(attributes::owned(host)),
                            ));
                            if let Some(port) = port {
                                attrs.push(KeyValue::new(SERVER_PORT, i64::from(port)));
                            }
                        }
                        if let Some(peer) = peer_addr(req.extensions()) {
                            attrs.push(KeyValue::new(
                                NETWORK_PEER_ADDRESS,
                                Value::String(StringValue::from(peer.ip().to_string())),
                            ));
                            attrs.push(KeyValue::new(NETWORK_PEER_PORT, i64::from(peer.port())));
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
                    if let Some(original) = method.original(req.method()) {
                        attrs.push(original);
                    }
                    if !uri.path().is_empty() {
                        attrs.push(KeyValue::new(
                            URL_PATH,
                            Value::String(attributes::owned(uri.path())),
                        ));
                    }
                    if let Some(query) = uri.query().filter(|q| !q.is_empty()) {
                        let query =
                            attributes::redact_query(query, &config.common.sensitive_query_keys);
                        attrs.push(KeyValue::new(
                            URL_QUERY,
                            Value::String(attributes::owned(&query)),
                        ));
                    }
                    attrs.push(KeyValue::new(URL_SCHEME, Value::String(scheme.clone())));
                    if let Some((host, port)) = server_address() {
                        attrs.push(KeyValue::new(
                            SERVER_ADDRESS,
                            Value::String(attributes::owned(host)),
                        ));
                        if let Some(port) = port {
                            attrs.push(KeyValue::new(SERVER_PORT, i64::from(port)));
                        }
                    }
                    let peer = peer_addr(req.extensions());
                    // One allocation for the peer's address, shared by both attributes.
                    let peer_ip =
                        peer.map(|p| StringValue::from(Arc::<str>::from(p.ip().to_string())));
                    let client = match (forwarded.client, &peer_ip) {
                        (Some(client), _) => Some(attributes::owned(client)),
                        (None, ip) => ip.clone(),
                    };
                    if let Some(client) = client {
                        attrs.push(KeyValue::new(CLIENT_ADDRESS, Value::String(client)));
                    }
                    if let (Some(peer), Some(ip)) = (peer, peer_ip) {
                        attrs.push(KeyValue::new(NETWORK_PEER_ADDRESS, Value::String(ip)));
                        attrs.push(KeyValue::new(NETWORK_PEER_PORT, i64::from(peer.port())));
                    }
                    if let Some(ua) = attributes::header_str(headers, &http::header::USER_AGENT)
                        .filter(|ua| !ua.trim().is_empty())
                    {
                        attrs.push(KeyValue::new(
                            USER_AGENT_ORIGINAL,
                            Value::String(attributes::owned(ua)),
                        ));
                    }
                    if let Some(version) = version {
                        attrs.push(KeyValue::new(NETWORK_PROTOCOL_VERSION, version));
                    }
                    if let Some(route) = &route {
                        attrs.push(KeyValue::new(HTTP_ROUTE, Value::String(route.value())));
                    }
                    attrs.extend(attributes::captured_headers(
                        headers,
                        &config.common.request_headers,
                    ));
                    if let Some(hooked) = hooked.as_mut() {
                        hooked.move_to_span(&mut attrs);
                    }
                    attrs
                };

                let name = match &rpc {
                    Some(rpc) => rpc.span_name(),
                    None => span_name(shared, &method, route.as_ref()),
                };
                let builder = SpanBuilder::from_name(name)
                    .with_kind(SpanKind::Server)
                    .with_start_time(now);
                let span = if public {
                    let remote = parent.span().span_context().clone();
                    let mut builder = builder;
                    builder.attributes = Some(attributes());
                    if remote.is_valid() {
                        builder.links = Some(vec![Link::with_context(remote)]);
                    }
                    tracer.build_with_context(builder, &Context::new())
                } else if unsampled_remote(&parent) {
                    // The usual outcome is a span that records nothing (head sampling
                    // upstream): ask first, and build the attributes only if a sampler
                    // records it all the same (it then sees them after the decision).
                    let mut span = tracer.build_with_context(builder, &parent);
                    if span.is_recording() {
                        span.set_attributes(attributes());
                    }
                    span
                } else {
                    let mut builder = builder;
                    builder.attributes = Some(attributes());
                    tracer.build_with_context(builder, &parent)
                };
                // A public endpoint keeps nothing of the untrusted caller's context (its
                // baggage included); the link above is all that remains of it.
                Some(if public {
                    Context::map_current(|cx| cx.with_span(span))
                } else {
                    parent.with_span(span)
                })
            }
            // No tracer, but an installed propagator: pass the caller's context through.
            None if !shared.propagation.is_off() => Some(shared.propagation.extract(headers)),
            None => None,
        };

        let server_address = match &shared.metrics {
            Some(_) if config.server_address_on_metrics => {
                server_address().map(|(host, port)| (attributes::owned(host), port))
            }
            _ => None,
        };
        let record = Self {
            shared: shared.clone(),
            start,
            span_start,
            cx,
            method,
            scheme,
            version,
            route,
            server_address,
            request_body_size,
            #[cfg(feature = "axum")]
            request_body_counter: None,
            status: None,
            head: req.method() == http::Method::HEAD,
            enriched: Enriched::start(hooked.as_mut(), enrichment.labels.then(Labeler::new)),
            rpc,
        };
        let active = shared.metrics.as_ref().and_then(|m| m.active.as_ref());
        // `http.server.active_requests` counts HTTP requests, not gRPC calls.
        if let Some(active) = active.filter(|_| record.rpc.is_none()) {
            active.add(1, record.active_attributes().as_slice());
        }
        record
    }

    /// With the `axum` feature: an axum request body of unknown length (a chunked
    /// upload) is re-wrapped, still an `axum::body::Body`, so that the bytes the handler
    /// reads are counted, when the request body size is recorded; and any axum request
    /// body with something to read, for its `read` events, with `message_events(true)`.
    #[cfg(feature = "axum")]
    pub(crate) fn count_request_body<B: 'static>(&mut self, mut req: Request<B>) -> Request<B> {
        let recorded = self
            .shared
            .metrics
            .as_ref()
            .is_some_and(|m| m.request_size.is_some());
        let size_needed = recorded && self.request_body_size.is_none();
        let events = CallRecord::message_events(self).filter(MessageEvents::recording);
        if size_needed || events.is_some() {
            let counter = super::count::count_axum_body(req.body_mut(), events);
            if size_needed {
                self.request_body_counter = counter;
            }
        }
        req
    }

    /// The request body's size: its declared length, else the bytes counted.
    fn request_body_size(&self) -> Option<u64> {
        #[cfg(feature = "axum")]
        if let Some(counter) = &self.request_body_counter {
            return Some(counter.get());
        }
        self.request_body_size
    }

    pub(crate) fn context(&self) -> Option<&Context> {
        self.cx.as_ref()
    }

    fn span_cx(&self) -> Option<&Context> {
        self.span_start.and(self.cx.as_ref())
    }

    /// The response arrived: its status, a route learned late, captured headers.
    /// With `server_timing(true)`, the `Server-Timing` entry that hands the server span's
    /// context back to the caller: `traceparent;desc="00-{trace-id}-{span-id}-{flags}"`.
    pub(crate) fn server_timing(&self) -> Option<http::HeaderValue> {
        if !self.shared.config.server_timing {
            return None;
        }
        let cx = self.span_cx()?;
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        // One allocation, no formatting machinery: `traceparent;desc="00-…-…-01"`.
        let mut value = String::with_capacity(74);
        value.push_str("traceparent;desc=\"");
        crate::propagation::push_traceparent(
            &mut value,
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8(),
        );
        value.push('"');
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
    }

    /// Whether the call ends at its response head (`end_at_head`): never for gRPC, whose
    /// status is in the trailers.
    pub(crate) fn ends_at_head<B>(&self, res: &Response<B>) -> bool {
        let Some(predicate) = &self.shared.config.end_at_head else {
            return false;
        };
        self.rpc.is_none()
            && predicate(&ResponseParts {
                status: res.status(),
                version: res.version(),
                headers: res.headers(),
                extensions: res.extensions(),
            })
    }

    /// Ends the call at its response head: the span and the duration metric stop here;
    /// the body streams on unrecorded (no response body size).
    pub(crate) fn finish_at_head(self) {
        self.finish(None, Cow::Borrowed(""), None);
    }

    /// The labeler to put into the request's extensions, with `labels(true)`.
    pub(crate) fn labeler(&self) -> Option<&Labeler> {
        self.enriched.labeler()
    }

    pub(crate) fn on_response<B>(&mut self, res: &Response<B>) {
        self.status = Some(res.status());
        if self.shared.config.common.response_head_event {
            telemetry::response_head_event(self.span_cx(), self.span_start, self.start.elapsed());
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
                    status: res.status(),
                    version: res.version(),
                    headers: res.headers(),
                    extensions: res.extensions(),
                };
                enrich::run_hook("on_response", |attributes| hook(&parts, attributes))
            });
        let span = self.span_start.and(self.cx.as_ref());
        self.enriched
            .on_response(res.extensions(), hooked.as_mut(), span);
        if let Some(rpc) = &mut self.rpc {
            // A trailers-only response carries the status in its head.
            rpc.response(res.status(), res.headers());
            return;
        }
        let late_route = match &self.route {
            None => HttpRoute::from_extensions(res.extensions()),
            Some(_) => None,
        };
        if let Some(route) = &late_route {
            self.route = Some(route.clone());
        }
        let Some(cx) = self.span_cx() else {
            return;
        };
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            HTTP_RESPONSE_STATUS_CODE,
            i64::from(res.status().as_u16()),
        ));
        if let Some(route) = &late_route {
            span.set_attribute(KeyValue::new(HTTP_ROUTE, Value::String(route.value())));
            span.update_name(span_name(&self.shared, &self.method, Some(route)));
        }
        if !self.shared.config.common.response_headers.is_empty() {
            span.set_attributes(attributes::captured_headers(
                res.headers(),
                &self.shared.config.common.response_headers,
            ));
        }
    }

    /// The declared length of the response body, to tell a finished stream from an
    /// aborted one when it is dropped.
    pub(crate) fn expected_body_len<B: Body>(&self, res: &Response<B>) -> Option<u64> {
        res.body().size_hint().exact().or_else(|| {
            attributes::header_str(res.headers(), &http::header::CONTENT_LENGTH)?
                .parse()
                .ok()
        })
    }

    /// HEAD, 1xx, 204 and 304 responses carry no body on the wire.
    pub(crate) fn bodiless(&self) -> bool {
        self.head
            || self.status.is_some_and(|s| {
                s.is_informational() || s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED
            })
    }

    fn finish_body(self, end: BodyEnd, bytes: u64) {
        if self.rpc.is_some() {
            let (end, error) = match end {
                BodyEnd::Complete => (grpc::End::Complete, None),
                BodyEnd::Aborted => (grpc::End::Dropped, None),
                BodyEnd::Error(type_name) => (grpc::End::Failed, Some(type_name)),
                BodyEnd::Panic => (grpc::End::Failed, Some(crate::errors::PANIC)),
            };
            return self.finish_rpc(end, error, None);
        }
        let (error, description) = match end {
            BodyEnd::Complete => (None, ""),
            BodyEnd::Error(type_name) => (Some(type_name), "response body failed"),
            BodyEnd::Aborted => (
                Some(ERROR_BODY_ABORTED),
                "response body dropped before its end",
            ),
            BodyEnd::Panic => (Some(crate::errors::PANIC), "response body panicked"),
        };
        self.finish(error, description.into(), Some(bytes));
    }

    pub(crate) fn finish_early(self, why: Early) {
        if self.rpc.is_some() {
            let (end, error, message) = match why {
                Early::ServiceError(type_name, message) => {
                    (grpc::End::Failed, Some(type_name), message)
                }
                Early::Cancelled => (grpc::End::Dropped, None, None),
                Early::Panic => (grpc::End::Failed, Some(crate::errors::PANIC), None),
            };
            return self.finish_rpc(end, error, message);
        }
        let (error, description): (_, Cow<'static, str>) = match why {
            Early::ServiceError(type_name, message) => (
                type_name,
                message.map_or("service returned an error".into(), Cow::Owned),
            ),
            Early::Cancelled => (
                ERROR_CANCELLED,
                "request cancelled before a response".into(),
            ),
            Early::Panic => (crate::errors::PANIC, "service panicked".into()),
        };
        self.finish(Some(error), description, None);
    }

    fn finish(
        mut self,
        error: Option<&'static str>,
        description: Cow<'static, str>,
        response_bytes: Option<u64>,
    ) {
        let elapsed = self.start.elapsed();
        let server_error = self.status.filter(|s| s.is_server_error());
        let error_type =
            error.or_else(|| server_error.map(|s| attributes::status_code_str(s.as_u16())));

        // A 5xx explains itself; other failures say what happened.
        let description = if error.is_some() {
            description
        } else {
            Cow::Borrowed("")
        };
        let extra = std::mem::take(&mut self.enriched).finish(self.span_cx());
        let enrichment = &self.shared.config.common.enrichment;
        telemetry::end_span(
            self.cx.as_ref(),
            self.span_start,
            elapsed,
            error_type,
            description,
            error.filter(|_| enrichment.record_exception),
        );

        let Some(metrics) = &self.shared.metrics else {
            return;
        };
        let mut attrs = extra.attrs::<8>();
        attrs.push(KeyValue::new(
            HTTP_REQUEST_METHOD,
            Value::String(self.method.value.clone()),
        ));
        attrs.push(KeyValue::new(
            URL_SCHEME,
            Value::String(self.scheme.clone()),
        ));
        if let Some(status) = self.status {
            attrs.push(KeyValue::new(
                HTTP_RESPONSE_STATUS_CODE,
                i64::from(status.as_u16()),
            ));
        }
        if let Some(route) = &self.route {
            attrs.push(KeyValue::new(HTTP_ROUTE, Value::String(route.value())));
        }
        if let Some(error_type) = error_type {
            attrs.push(KeyValue::new(ERROR_TYPE, error_type));
        }
        if let Some(version) = self.version {
            attrs.push(KeyValue::new(NETWORK_PROTOCOL_VERSION, version));
        }
        self.push_server_address(&mut attrs);
        metrics.record(
            attrs.as_slice(),
            elapsed.as_secs_f64(),
            self.request_body_size(),
            response_bytes,
        );
        if let Some(active) = &metrics.active {
            active.add(-1, self.active_attributes().as_slice());
        }
    }

    /// The attributes of `http.server.active_requests`: the same at +1 and -1, so the
    /// series returns to zero.
    fn active_attributes(&self) -> Attrs<4> {
        let mut attrs = Attrs::<4>::new();
        attrs.push(KeyValue::new(
            HTTP_REQUEST_METHOD,
            Value::String(self.method.value.clone()),
        ));
        attrs.push(KeyValue::new(
            URL_SCHEME,
            Value::String(self.scheme.clone()),
        ));
        self.push_server_address(&mut attrs);
        attrs
    }

    fn push_server_address<const N: usize>(&self, attrs: &mut Attrs<N>) {
        if let Some((host, port)) = &self.server_address {
            attrs.push(KeyValue::new(SERVER_ADDRESS, Value::String(host.clone())));
            if let Some(port) = port {
                attrs.push(KeyValue::new(SERVER_PORT, i64::from(*port)));
            }
        }
    }
}

fn span_name(
    shared: &Shared,
    method: &MethodLabel,
    route: Option<&HttpRoute>,
) -> Cow<'static, str> {
    let route = route.map(HttpRoute::as_str);
    match &shared.config.span_name {
        Some(namer) => Cow::Owned(namer(method.span_name_part(), route)),
        None => method.span_name(route),
    }
}

/// A valid remote parent that was not sampled: a parent-based sampler drops the span.
fn unsampled_remote(parent: &Context) -> bool {
    let span = parent.span();
    let sc = span.span_context();
    sc.is_valid() && sc.is_remote() && !sc.is_sampled()
}

/// The request's URI as the client sent it: with the `axum` feature, axum's `OriginalUri`
/// when there is one (inside `Router::nest`, the router has already stripped the prefix
/// from `req.uri()` when a layer of the nested router sees the request).
pub(crate) fn request_uri<B>(req: &Request<B>) -> &http::Uri {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) = req.extensions().get() {
        return uri;
    }
    req.uri()
}

impl CallRecord for ServerRecord {
    fn context(&self) -> Option<&Context> {
        self.cx.as_ref()
    }

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
            Direction::Write,
        )
    }

    fn finish(self: Box<Self>, end: BodyEnd, bytes: u64) {
        (*self).finish_body(end, bytes);
    }
}

impl ServerRecord {
    /// Ends a gRPC call: its code, the span, `rpc.server.call.duration`.
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
        let extra = std::mem::take(&mut self.enriched).finish(self.span_cx());
        let mut attrs = extra.attrs::<8>();
        rpc.end(
            Side::Server,
            grpc::Ending {
                end,
                failure,
                failure_message,
                elapsed,
                span: self.span_cx().zip(self.span_start),
                record_exception: self.shared.config.common.enrichment.record_exception,
            },
            &mut attrs,
        );
        let Some(metrics) = &self.shared.metrics else {
            return;
        };
        self.push_server_address(&mut attrs);
        metrics.record_rpc(attrs.as_slice(), elapsed.as_secs_f64());
    }
}

/// The peer's socket address: our [`PeerAddr`], or axum's `ConnectInfo<SocketAddr>`.
fn peer_addr(ext: &http::Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = ext.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    None
}
