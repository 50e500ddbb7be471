//! gRPC on the same layers: a request whose `content-type` is `application/grpc*` gets an
//! RPC span and `rpc.{server,client}.call.duration` following the RPC semantic
//! conventions (v1.42), instead of an HTTP span and HTTP metrics. The status is the
//! call's real one: from the trailers at the end of the response body, from the headers
//! of a trailers-only response, or from the HTTP status when there is none.
//!
//! # What is recorded
//!
//! The span (kind SERVER or CLIENT) is named after `rpc.method`, the request's path
//! without its leading `/` (`helloworld.Greeter/SayHello`), or `grpc` when the path is not
//! a gRPC method. Attributes: `rpc.system.name = grpc`, `rpc.method` (`_OTHER`, with
//! `rpc.method_original`, for a path that is not `/{service}/{method}`),
//! `rpc.response.status_code` (the code's name: `OK`, `NOT_FOUND`, ...), `server.address`
//! and `server.port` (server: the `:authority`; client: the request URI, or the builder's
//! `target` for tonic's path-only URIs), `network.peer.*` where known, and `error.type`
//! (the code's name) when the call failed:
//!
//! | side | failed when the code is |
//! |---|---|
//! | server | `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` |
//! | client | any code but `OK` |
//!
//! A failed call's span has status `Error`, with the `grpc-message` as the description.
//!
//! A method the server does not know: the layer cannot tell when the span starts (it
//! wraps the whole server, before routing), so the span, which a sampler already saw,
//! keeps the method the client asked for; the metric point of a call the server answered
//! `UNIMPLEMENTED` takes `rpc.method = _OTHER`, so that made-up method names cannot
//! create metric series. (Setting `rpc.method` again on the span would not replace it:
//! the SDK keeps both values, and a key twice is invalid in OTLP.)
//!
//! # How a call ends
//!
//! | end | `rpc.response.status_code` |
//! |---|---|
//! | trailers (or the headers of a trailers-only response) with `grpc-status` | that code (`UNKNOWN` if it does not parse or is out of range) |
//! | the body ends with no `grpc-status` | from the HTTP status (`400`→`INTERNAL`, `401`→`UNAUTHENTICATED`, `403`→`PERMISSION_DENIED`, `404`→`UNIMPLEMENTED`, `429`/`502`/`503`/`504`→`UNAVAILABLE`, else `UNKNOWN`, 200 included) |
//! | the body is dropped before its trailers, or the response future before a response | `DEADLINE_EXCEEDED` if the request's `grpc-timeout` has passed, else `CANCELLED` |
//! | the body fails | `UNKNOWN`, `error.type` the body error's type |
//! | the inner service returns an error | server: `UNKNOWN`, `error.type` the error's type; client: `UNAVAILABLE` (no status from the server) |
//! | a panic | `UNKNOWN`, `error.type = panic` |
//!
//! tonic ends a call whose deadline passed as `CANCELLED` ("Timeout expired") on both
//! sides, and drops the server's future; the request's `grpc-timeout` tells the layer that
//! the deadline passed, so it records `DEADLINE_EXCEEDED`, as the conventions and gRPC's
//! status-code guide ask: for a dropped call, and for a `CANCELLED` status that arrives
//! once the deadline has passed.

use std::time::Duration;

use http::HeaderMap;

use crate::telemetry::Side;
use opentelemetry::{KeyValue, StringValue, Value};

/// `rpc.system.name` of every call here.
pub(crate) const SYSTEM: &str = "grpc";

pub(crate) const RPC_SYSTEM_NAME: &str = "rpc.system.name";
pub(crate) const RPC_METHOD: &str = "rpc.method";
pub(crate) const RPC_METHOD_ORIGINAL: &str = "rpc.method_original";
pub(crate) const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
pub(crate) const RPC_SERVER_CALL_DURATION: &str = "rpc.server.call.duration";
pub(crate) const RPC_CLIENT_CALL_DURATION: &str = "rpc.client.call.duration";

/// The code names, by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub(crate) const OK: u8 = 0;
pub(crate) const CANCELLED: u8 = 1;
pub(crate) const UNKNOWN: u8 = 2;
pub(crate) const DEADLINE_EXCEEDED: u8 = 4;
pub(crate) const UNIMPLEMENTED: u8 = 12;
pub(crate) const INTERNAL: u8 = 13;
pub(crate) const UNAVAILABLE: u8 = 14;

/// A gRPC request: always a `POST` (checked first: the usual `GET` costs no header
/// lookup) with a gRPC content type.
pub(crate) fn is_grpc_request(method: &http::Method, headers: &HeaderMap) -> bool {
    method == http::Method::POST && is_grpc(headers)
}

/// A request or response in gRPC (`application/grpc`, `+proto`, `+json`, gRPC-Web).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The name of a code.
pub(crate) fn code_name(code: u8) -> &'static str {
    CODES.get(usize::from(code)).copied().unwrap_or("UNKNOWN")
}

/// Whether `code` is a failure on the server's side.
pub(crate) fn server_error(code: u8) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The `grpc-status` of a header block: `None` when absent; `UNKNOWN` when it does not
/// parse or is out of range.
pub(crate) fn status(headers: &HeaderMap) -> Option<u8> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.parse::<u8>().ok())
            .filter(|&c| usize::from(c) < CODES.len())
            .unwrap_or(UNKNOWN),
    )
}

/// The `grpc-message` of a header block, percent-decoded, bounded.
pub(crate) fn message(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("grpc-message")?.as_bytes();
    let mut out = Vec::with_capacity(raw.len().min(crate::attributes::MAX_VALUE_LEN));
    let mut i = 0;
    while i < raw.len() && out.len() < crate::attributes::MAX_VALUE_LEN {
        let decoded = match raw[i] {
            b'%' if i + 2 < raw.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(raw[i + 1]), hex(raw[i + 2])) {
                    (Some(h), Some(l)) => {
                        i += 2;
                        (h * 16 + l) as u8
                    }
                    _ => b'%',
                }
            }
            b => b,
        };
        out.push(decoded);
        i += 1;
    }
    let message = String::from_utf8_lossy(&out);
    Some(crate::attributes::bounded(&message).to_owned()).filter(|m| !m.is_empty())
}

/// The code a client synthesizes from the HTTP status when there is no `grpc-status`.
pub(crate) fn from_http_status(status: http::StatusCode) -> u8 {
    match status.as_u16() {
        400 | 431 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// The request's `grpc-timeout`: at most 8 digits and a unit.
pub(crate) fn timeout(headers: &HeaderMap) -> Option<Duration> {
    // Bytes, not characters: a multi-byte last character is no unit, never a panic.
    let (&unit, digits) = headers.get("grpc-timeout")?.as_bytes().split_last()?;
    let digits = std::str::from_utf8(digits).ok()?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `rpc.method` of a request path: `{service}/{method}` for `/{service}/{method}`.
pub(crate) fn method(path: &str) -> Option<&str> {
    let method = path.strip_prefix('/')?;
    let (service, name) = method.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'$'))
    };
    (valid(service) && valid(name)).then_some(method)
}

/// `server.address` and `server.port` of a gRPC target (or any URL): `host:port`,
/// `scheme://host:port`, `dns://authority/host:port`, `unix:///path` (the path, no port);
/// `None` when empty.
pub(crate) fn target(target: &str) -> Option<(StringValue, Option<u16>)> {
    let target = target.trim();
    if let Some(path) = target.strip_prefix("unix://") {
        return (!path.is_empty()).then(|| (crate::attributes::owned(path), None));
    }
    let rest = match target.split_once("://") {
        // `dns://1.2.3.4/host:port` names its resolver before the host.
        Some(("dns", rest)) => rest.split_once('/').map_or(rest, |(_, host)| host),
        Some((_, rest)) => rest,
        None => target,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = crate::attributes::split_host_port(authority)?;
    (!host.is_empty()).then(|| (crate::attributes::owned(host), port))
}

/// The state of one gRPC call, kept by the side's record.
#[derive(Debug)]
pub(crate) struct Rpc {
    /// `rpc.method`, or `None` for `_OTHER`.
    pub(crate) method: Option<StringValue>,
    /// The raw method, when `rpc.method` is `_OTHER`.
    pub(crate) original: Option<StringValue>,
    /// The request's deadline, from `grpc-timeout`.
    pub(crate) timeout: Option<Duration>,
    /// The status code, once known.
    pub(crate) code: Option<u8>,
    /// The `grpc-message` of a failed call.
    pub(crate) message: Option<String>,
    /// The response's HTTP status, for the mapping when no `grpc-status` comes.
    pub(crate) http_status: Option<http::StatusCode>,
    /// Whether the response head was a gRPC one (`application/grpc*`).
    pub(crate) grpc_response: bool,
}

impl Rpc {
    pub(crate) fn new(path: &str, headers: &HeaderMap) -> Self {
        let (method, original) = match method(path) {
            Some(m) => (Some(crate::attributes::owned(m)), None),
            None => (None, Some(crate::attributes::owned(path))),
        };
        Self {
            method,
            original,
            timeout: timeout(headers),
            code: None,
            message: None,
            http_status: None,
            grpc_response: false,
        }
    }

    /// The span name: `rpc.method`, or `grpc`.
    pub(crate) fn span_name(&self) -> std::borrow::Cow<'static, str> {
        match &self.method {
            Some(m) => std::borrow::Cow::Owned(m.as_str().to_owned()),
            None => std::borrow::Cow::Borrowed(SYSTEM),
        }
    }

    /// The attributes known at the start.
    pub(crate) fn start_attributes(&self, attrs: &mut Vec<KeyValue>) {
        attrs.push(KeyValue::new(RPC_SYSTEM_NAME, SYSTEM));
        attrs.push(self.method_attribute());
        if let Some(original) = &self.original {
            attrs.push(KeyValue::new(
                RPC_METHOD_ORIGINAL,
                Value::String(original.clone()),
            ));
        }
    }

    pub(crate) fn method_attribute(&self) -> KeyValue {
        match &self.method {
            Some(m) => KeyValue::new(RPC_METHOD, Value::String(m.clone())),
            None => KeyValue::new(RPC_METHOD, crate::semconv::OTHER),
        }
    }

    /// A header block went by (the response head, or the trailers): its status, if it
    /// has one, is final.
    /// The response head arrived: its HTTP status, whether it is gRPC at all, and the
    /// status of a trailers-only response.
    pub(crate) fn response(&mut self, status: http::StatusCode, headers: &HeaderMap) {
        self.http_status = Some(status);
        self.grpc_response = is_grpc(headers);
        self.headers(headers);
    }

    pub(crate) fn headers(&mut self, headers: &HeaderMap) {
        if self.code.is_some() {
            return;
        }
        if let Some(code) = status(headers) {
            self.code = Some(code);
            if code != OK {
                self.message = message(headers);
            }
        }
    }

    /// The call's code when it ended as `end` after `elapsed`, if none came.
    pub(crate) fn settle(&mut self, end: End, elapsed: Duration) -> u8 {
        let past_deadline = self.timeout.is_some_and(|deadline| elapsed >= deadline);
        if let Some(code) = self.code {
            // tonic ends a call whose deadline passed as `CANCELLED` ("Timeout expired"):
            // once the deadline has passed, that is `DEADLINE_EXCEEDED`.
            let code = match code {
                CANCELLED if past_deadline => DEADLINE_EXCEEDED,
                code => code,
            };
            self.code = Some(code);
            return code;
        }
        let code = match end {
            End::Complete => self.http_status.map_or(UNKNOWN, from_http_status),
            End::Dropped => match (self.timeout, self.http_status) {
                (Some(deadline), _) if elapsed >= deadline => DEADLINE_EXCEEDED,
                // Not a gRPC answer at all (a proxy's error page): its HTTP status says.
                (_, Some(status)) if !self.grpc_response => from_http_status(status),
                _ => CANCELLED,
            },
            End::Failed => UNKNOWN,
        };
        self.code = Some(code);
        code
    }
}

/// How a call ended, everything the span's end needs but the span itself.
pub(crate) struct Ending<'a> {
    pub(crate) end: End,
    /// The type or class of a failure that gave no status (an error, a panic).
    pub(crate) failure: Option<&'static str>,
    /// Its messages, when known.
    pub(crate) failure_message: Option<String>,
    pub(crate) elapsed: Duration,
    /// The call's span, and its start.
    pub(crate) span: Option<(&'a opentelemetry::Context, std::time::SystemTime)>,
    pub(crate) record_exception: bool,
}

impl Rpc {
    /// Ends the call: settles its code, sets `rpc.response.status_code` and ends the span
    /// (an error by `side`'s rule, with the `grpc-message` or the failure's messages),
    /// and adds the conventions' metric attributes to `attrs`, before the side adds
    /// `server.address`/`server.port`.
    pub(crate) fn end(
        mut self,
        side: Side,
        ending: Ending<'_>,
        attrs: &mut crate::attributes::Attrs<8>,
    ) {
        use opentelemetry::trace::TraceContextExt as _;
        let code = self.settle(ending.end, ending.elapsed);
        let failed = match side {
            Side::Server => server_error(code),
            Side::Client => code != OK,
        };
        let error_type = ending.failure.or_else(|| failed.then(|| code_name(code)));
        if let Some((cx, start)) = ending.span {
            cx.span()
                .set_attribute(KeyValue::new(RPC_RESPONSE_STATUS_CODE, code_name(code)));
            let description = self.message.take().or(ending.failure_message);
            crate::telemetry::end_span(
                Some(cx),
                Some(start),
                ending.elapsed,
                error_type,
                description.unwrap_or_default(),
                ending.failure.filter(|_| ending.record_exception),
            );
        }
        // `UNIMPLEMENTED` from a server: a method it does not know, whose name is the
        // caller's to choose. The metrics take `_OTHER` (the span keeps what was asked).
        let method = if side == Side::Server && code == UNIMPLEMENTED {
            KeyValue::new(RPC_METHOD, crate::semconv::OTHER)
        } else {
            self.method_attribute()
        };
        metric_attributes(attrs, method, code, error_type);
    }
}

/// Adds the conventions' attributes of `rpc.{server,client}.call.duration`, before the
/// side adds `server.address`/`server.port`: `method` is `rpc.method`'s attribute.
pub(crate) fn metric_attributes(
    attrs: &mut crate::attributes::Attrs<8>,
    method: KeyValue,
    code: u8,
    error_type: Option<&'static str>,
) {
    attrs.push(KeyValue::new(RPC_SYSTEM_NAME, SYSTEM));
    attrs.push(method);
    attrs.push(KeyValue::new(RPC_RESPONSE_STATUS_CODE, code_name(code)));
    if let Some(error_type) = error_type {
        attrs.push(KeyValue::new(crate::semconv::ERROR_TYPE, error_type));
    }
}

/// How a call ended, for [`Rpc::settle`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum End {
    /// The body ended (trailers or not).
    Complete,
    /// The body or the future was dropped before the end.
    Dropped,
    /// An error or a panic.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn statuses_parse_and_bad_ones_are_unknown() {
        assert_eq!(status(&headers(&[("grpc-status", "0")])), Some(OK));
        assert_eq!(status(&headers(&[("grpc-status", "16")])), Some(16));
        assert_eq!(status(&headers(&[("grpc-status", "17")])), Some(UNKNOWN));
        assert_eq!(status(&headers(&[("grpc-status", "x")])), Some(UNKNOWN));
        assert_eq!(status(&headers(&[("grpc-status", "-1")])), Some(UNKNOWN));
        assert_eq!(status(&HeaderMap::new()), None);
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(200), "UNKNOWN");
    }

    #[test]
    fn messages_are_percent_decoded() {
        let h = headers(&[("grpc-message", "no%20such%20person%")]);
        assert_eq!(message(&h).as_deref(), Some("no such person%"));
        let h = headers(&[("grpc-message", "caf%C3%A9 %zz")]);
        assert_eq!(message(&h).as_deref(), Some("café %zz"));
    }

    #[test]
    fn methods_and_timeouts() {
        assert_eq!(
            method("/helloworld.Greeter/SayHello"),
            Some("helloworld.Greeter/SayHello")
        );
        assert_eq!(method("/nope"), None);
        assert_eq!(method("//x"), None);
        assert_eq!(method("/a/b/c"), None);
        assert_eq!(method("/a b/c"), None);
        assert_eq!(
            timeout(&headers(&[("grpc-timeout", "200000u")])),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            timeout(&headers(&[("grpc-timeout", "5S")])),
            Some(Duration::from_secs(5))
        );
        assert_eq!(timeout(&headers(&[("grpc-timeout", "123456789S")])), None);
        assert_eq!(timeout(&headers(&[("grpc-timeout", "5x")])), None);
        assert_eq!(timeout(&headers(&[("grpc-timeout", "S")])), None);
        // Found by the property test: a multi-byte last character panicked.
        let mut h = HeaderMap::new();
        h.insert(
            "grpc-timeout",
            http::HeaderValue::from_bytes("1ͬ".as_bytes()).unwrap(),
        );
        assert_eq!(timeout(&h), None);
    }

    #[test]
    fn targets() {
        let t = |s| target(s).map(|(h, p)| (h.as_str().to_owned(), p));
        assert_eq!(t("grpc.io:50051"), Some(("grpc.io".into(), Some(50051))));
        assert_eq!(
            t("http://127.0.0.1:8080/"),
            Some(("127.0.0.1".into(), Some(8080)))
        );
        assert_eq!(
            t("dns://1.2.3.4/grpc.io:50051"),
            Some(("grpc.io".into(), Some(50051)))
        );
        assert_eq!(t("dns:///grpc.io:443"), Some(("grpc.io".into(), Some(443))));
        assert_eq!(t("unix:///run/x.sock"), Some(("/run/x.sock".into(), None)));
        assert_eq!(t("https://[::1]:9000"), Some(("::1".into(), Some(9000))));
        assert_eq!(t(""), None);
    }

    #[test]
    fn http_status_mapping() {
        assert_eq!(from_http_status(http::StatusCode::OK), UNKNOWN);
        assert_eq!(from_http_status(http::StatusCode::NOT_FOUND), UNIMPLEMENTED);
        assert_eq!(from_http_status(http::StatusCode::BAD_GATEWAY), UNAVAILABLE);
        assert_eq!(from_http_status(http::StatusCode::UNAUTHORIZED), 16);
    }

    proptest::proptest! {
        /// Whatever bytes a peer puts in `grpc-status`, `grpc-message`, `grpc-timeout` or
        /// the path: no panic, a code in range, a bounded message.
        #[test]
        fn any_header_bytes_give_a_valid_outcome(
            status_bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            message_bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..5000),
            timeout_bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            path in ".{0,64}",
        ) {
            let mut h = HeaderMap::new();
            for (name, bytes) in [
                ("grpc-status", &status_bytes),
                ("grpc-message", &message_bytes),
                ("grpc-timeout", &timeout_bytes),
            ] {
                if let Ok(value) = http::HeaderValue::from_bytes(bytes) {
                    h.insert(name, value);
                }
            }
            if let Some(code) = status(&h) {
                proptest::prop_assert!(usize::from(code) < CODES.len());
            }
            if let Some(m) = message(&h) {
                proptest::prop_assert!(m.len() <= crate::attributes::MAX_VALUE_LEN);
            }
            let _ = timeout(&h);
            let mut rpc = Rpc::new(&path, &h);
            rpc.response(http::StatusCode::OK, &h);
            let code = rpc.settle(End::Complete, Duration::from_millis(1));
            proptest::prop_assert!(usize::from(code) < CODES.len());
            if let Some(m) = method(&path) {
                proptest::prop_assert_eq!(format!("/{m}"), path);
            }
        }
    }

    #[test]
    fn a_dropped_call_past_its_deadline_exceeded_it() {
        let mut rpc = Rpc::new("/a.B/C", &headers(&[("grpc-timeout", "100m")]));
        assert_eq!(
            rpc.settle(End::Dropped, Duration::from_millis(150)),
            DEADLINE_EXCEEDED
        );
        let mut rpc = Rpc::new("/a.B/C", &headers(&[("grpc-timeout", "100m")]));
        assert_eq!(
            rpc.settle(End::Dropped, Duration::from_millis(50)),
            CANCELLED
        );
        // A `CANCELLED` the peer sent once the deadline passed (tonic's timeouts).
        let mut rpc = Rpc::new("/a.B/C", &headers(&[("grpc-timeout", "100m")]));
        rpc.headers(&headers(&[("grpc-status", "1")]));
        assert_eq!(
            rpc.settle(End::Complete, Duration::from_millis(150)),
            DEADLINE_EXCEEDED
        );
        let mut rpc = Rpc::new("/a.B/C", &headers(&[("grpc-timeout", "100m")]));
        rpc.headers(&headers(&[("grpc-status", "1")]));
        assert_eq!(
            rpc.settle(End::Complete, Duration::from_millis(50)),
            CANCELLED
        );
    }
}
