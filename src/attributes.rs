//! Turning the parts of a request or response into attribute values, cheaply and without
//! trusting the input: every function here accepts any bytes and never panics.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};
use http::{Method, Version};
use opentelemetry::{Array, Key, KeyValue, StringValue, Value};

use crate::semconv;

/// The longest string value taken from a request or response (path, query, headers);
/// longer values are cut at a character boundary. Bounds what an attacker can make the
/// exporter carry.
pub(crate) const MAX_VALUE_LEN: usize = 2048;

/// Cuts `s` to at most [`MAX_VALUE_LEN`] bytes at a character boundary.
pub(crate) fn bounded(s: &str) -> &str {
    if s.len() <= MAX_VALUE_LEN {
        return s;
    }
    let mut end = MAX_VALUE_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An owned, bounded attribute value.
pub(crate) fn owned(s: &str) -> StringValue {
    StringValue::from(String::from(bounded(s)))
}

/// The methods recorded as themselves; any other is `_OTHER`.
#[derive(Clone, Debug)]
pub(crate) enum KnownMethods {
    /// RFC 9110 plus PATCH and QUERY.
    Default,
    /// A list that replaces the default one (case-sensitive).
    Custom(Arc<[Arc<str>]>),
}

impl KnownMethods {
    pub(crate) fn custom<I, M>(methods: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: AsRef<str>,
    {
        let list: Vec<Arc<str>> = methods
            .into_iter()
            .map(|m| m.as_ref().trim().into())
            .filter(|m: &Arc<str>| !m.is_empty())
            .collect();
        Self::Custom(list.into())
    }

    /// The `http.request.method` value of `method`.
    pub(crate) fn label(&self, method: &Method) -> MethodLabel {
        let raw = method.as_str();
        let known = match self {
            Self::Default => standard_method(raw).map(StringValue::from),
            Self::Custom(list) => list.iter().find(|m| ***m == *raw).map(|m| {
                standard_method(m).map_or_else(|| StringValue::from(m.clone()), StringValue::from)
            }),
        };
        match known {
            Some(value) => MethodLabel {
                value,
                other: false,
            },
            None => MethodLabel {
                value: StringValue::from(semconv::OTHER),
                other: true,
            },
        }
    }
}

fn standard_method(m: &str) -> Option<&'static str> {
    Some(match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        "QUERY" => "QUERY",
        _ => return None,
    })
}

/// The `http.request.method` value of a request, and whether it is `_OTHER`.
#[derive(Clone, Debug)]
pub(crate) struct MethodLabel {
    pub(crate) value: StringValue,
    pub(crate) other: bool,
}

impl MethodLabel {
    /// The `{method}` part of a span name: the method, or `HTTP` for `_OTHER`.
    pub(crate) fn span_name_part(&self) -> &str {
        if self.other {
            "HTTP"
        } else {
            self.value.as_str()
        }
    }

    /// The span name `{method} {target}`, or `{method}` without a target.
    pub(crate) fn span_name(&self, target: Option<&str>) -> Cow<'static, str> {
        match target {
            Some(target) => {
                // Not `format!`: its machinery costs more than the name itself.
                let method = self.span_name_part();
                let mut name = String::with_capacity(method.len() + 1 + target.len());
                name.push_str(method);
                name.push(' ');
                name.push_str(target);
                Cow::Owned(name)
            }
            None if self.other => Cow::Borrowed("HTTP"),
            None => match standard_method(self.value.as_str()) {
                Some(m) => Cow::Borrowed(m),
                None => Cow::Owned(self.value.as_str().to_owned()),
            },
        }
    }

    /// `http.request.method_original`, needed iff the recorded value differs.
    pub(crate) fn original(&self, method: &Method) -> Option<KeyValue> {
        (self.value.as_str() != method.as_str()).then(|| {
            KeyValue::new(
                semconv::HTTP_REQUEST_METHOD_ORIGINAL,
                Value::String(owned(method.as_str())),
            )
        })
    }
}

/// `network.protocol.version` of an HTTP version.
pub(crate) fn protocol_version(version: Version) -> Option<&'static str> {
    Some(match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

/// Every status code from 100 to 599 as three ASCII digits, for `error.type`.
static STATUS_DIGITS: [u8; 1500] = status_digits();

const fn status_digits() -> [u8; 1500] {
    let mut out = [0u8; 1500];
    let mut code = 100;
    while code < 600 {
        let i = (code - 100) * 3;
        out[i] = b'0' + (code / 100) as u8;
        out[i + 1] = b'0' + (code / 10 % 10) as u8;
        out[i + 2] = b'0' + (code % 10) as u8;
        code += 1;
    }
    out
}

/// The status code as a string (`"500"`), the `error.type` of an error status.
pub(crate) fn status_code_str(code: u16) -> &'static str {
    if !(100..600).contains(&code) {
        return semconv::OTHER;
    }
    let i = usize::from(code - 100) * 3;
    std::str::from_utf8(&STATUS_DIGITS[i..i + 3]).unwrap_or(semconv::OTHER)
}

/// Splits `host[:port]` or `[v6]:port` (as in `Host` and `:authority`) into the host, without
/// brackets, and the port. `None` if there is no usable host.
pub(crate) fn split_host_port(value: &str) -> Option<(&str, Option<u16>)> {
    // Header values, authorities and `Forwarded` parameters are ASCII: OWS is SP and HTAB.
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    // `userinfo@` is not allowed in Host, but may be in an absolute URI's authority.
    let value = match value.bytes().rposition(|b| b == b'@') {
        Some(at) => &value[at + 1..],
        None => value,
    };
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host, port)
    } else {
        let mut colons = value.bytes().enumerate().filter(|&(_, b)| b == b':');
        match (colons.next(), colons.next()) {
            (Some((colon, _)), None) => (&value[..colon], Some(&value[colon + 1..])),
            // More than one colon without brackets: a bare IPv6 address, no port.
            (Some(_), Some(_)) | (None, _) => (value, None),
        }
    };
    if host.is_empty() || host.len() > MAX_VALUE_LEN {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        // Digits only: `u16::from_str` would also take a leading `+`.
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// Replaces the values of sensitive query keys by `REDACTED`, keeping the keys.
/// Borrows when nothing needs redacting.
pub(crate) fn redact_query<'a>(query: &'a str, keys: &[Cow<'static, str>]) -> Cow<'a, str> {
    let needs = |pair: &str| match pair.split_once('=') {
        Some((k, v)) => v != semconv::REDACTED && keys.iter().any(|s| s == k),
        None => false,
    };
    if keys.is_empty() || !query.split('&').any(needs) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) if needs(pair) => {
                out.push_str(k);
                out.push('=');
                out.push_str(semconv::REDACTED);
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

/// A header's first value as text, `None` if absent or not visible ASCII.
pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

/// A header to capture as `http.{request,response}.header.<name>`; the values of a
/// sensitive one are recorded as `REDACTED`.
#[derive(Clone, Debug)]
pub(crate) struct CapturedHeader {
    name: HeaderName,
    key: Key,
    redacted: bool,
}

/// Builds the capture list for an allow-list of header names (duplicates dropped),
/// marking those in `sensitive`.
pub(crate) fn capture_list(
    prefix: &str,
    names: Vec<HeaderName>,
    sensitive: &[HeaderName],
) -> Arc<[CapturedHeader]> {
    let mut list: Vec<CapturedHeader> = Vec::new();
    for name in names {
        if list.iter().any(|c| c.name == name) {
            continue;
        }
        let key = Key::from(format!("{prefix}.{}", name.as_str()));
        let redacted = sensitive.contains(&name);
        list.push(CapturedHeader {
            name,
            key,
            redacted,
        });
    }
    list.into()
}

/// The captured headers present in `headers`, each as a string array with one element per
/// field value (non-UTF-8 bytes replaced, each value bounded; `REDACTED` for a sensitive
/// header).
pub(crate) fn captured_headers<'a>(
    headers: &'a HeaderMap,
    list: &'a [CapturedHeader],
) -> impl Iterator<Item = KeyValue> + 'a {
    list.iter().filter_map(move |c| {
        let values: Vec<StringValue> = headers
            .get_all(&c.name)
            .iter()
            .map(|v| {
                if c.redacted {
                    return StringValue::from(semconv::REDACTED);
                }
                match String::from_utf8_lossy(v.as_bytes()) {
                    Cow::Borrowed(s) => owned(s),
                    Cow::Owned(s) => owned(&s),
                }
            })
            .collect();
        (!values.is_empty())
            .then(|| KeyValue::new(c.key.clone(), Value::Array(Array::String(values))))
    })
}

/// What the first hop of `Forwarded` / `X-Forwarded-*` says about the original request.
#[derive(Debug, Default)]
pub(crate) struct Forwarded<'h> {
    pub(crate) client: Option<&'h str>,
    pub(crate) proto: Option<&'h str>,
    pub(crate) host: Option<&'h str>,
}

/// Reads the first (original) hop of `Forwarded`, falling back to `X-Forwarded-For`,
/// `X-Forwarded-Proto` and `X-Forwarded-Host`. Only called when the user trusts them.
pub(crate) fn forwarded(headers: &HeaderMap) -> Forwarded<'_> {
    let mut out = Forwarded::default();
    if let Some(value) = header_str(headers, &http::header::FORWARDED) {
        let first = value.split(',').next().unwrap_or("");
        for pair in first.split(';') {
            let Some((name, v)) = pair.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            if v.is_empty() {
                continue;
            }
            match name.trim().to_ascii_lowercase().as_str() {
                "for" => out.client = Some(strip_node_port(v)),
                "proto" => out.proto = Some(v),
                "host" => out.host = Some(v),
                _ => {}
            }
        }
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    out.client = out
        .client
        .or_else(|| first("x-forwarded-for").map(strip_node_port));
    out.proto = out.proto.or_else(|| first("x-forwarded-proto"));
    out.host = out.host.or_else(|| first("x-forwarded-host"));
    out
}

/// `192.0.2.1:4711` → `192.0.2.1`, `[2001:db8::1]:4711` → `2001:db8::1`; IPv6 without
/// brackets and obfuscated identifiers (`_hidden`, `unknown`) are kept as they are.
fn strip_node_port(node: &str) -> &str {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match node.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h,
        _ => node,
    }
}

/// `http` or `https`, whatever their case; `None` for anything else.
pub(crate) fn http_scheme(scheme: &str) -> Option<&'static str> {
    if scheme.eq_ignore_ascii_case("http") {
        Some("http")
    } else if scheme.eq_ignore_ascii_case("https") {
        Some("https")
    } else {
        None
    }
}

/// A configured scheme: static for the usual ones, `None` when empty.
pub(crate) fn scheme_value(scheme: &str) -> Option<StringValue> {
    let scheme = scheme.trim();
    match http_scheme(scheme) {
        Some(known) => Some(StringValue::from(known)),
        None if scheme.is_empty() => None,
        None => Some(owned(scheme)),
    }
}

/// The `error.type` of an error type: its fully qualified name, as the conventions ask,
/// with the public path of the usual ecosystem errors in place of the private module
/// `std::any::type_name` gives (`hyper::error::Error` is `hyper::Error`).
pub(crate) fn error_type_name<E>() -> &'static str {
    match std::any::type_name::<E>() {
        "hyper::error::Error" => "hyper::Error",
        "hyper_util::client::legacy::client::Error" => "hyper_util::client::legacy::Error",
        "std::io::error::Error" => "std::io::Error",
        "axum_core::error::Error" => "axum::Error",
        "reqwest::error::Error" => "reqwest::Error",
        "alloc::boxed::Box<dyn core::error::Error + core::marker::Send + core::marker::Sync>" => {
            "Box<dyn Error + Send + Sync>"
        }
        other => other,
    }
}

/// The size of a request body for the body-size metric: its exact size hint (hyper
/// enforces a declared `Content-Length`), or `None` when it is unknown (chunked) or when
/// there is no body at all (a bodiless GET has no payload to measure).
pub(crate) fn request_body_size<B: http_body::Body>(body: &B) -> Option<u64> {
    if body.is_end_stream() {
        return None;
    }
    body.size_hint().exact()
}

/// The attributes of a metric point: a fixed-capacity list on the stack, for recording
/// metrics without a heap allocation per request; or, when the user added attributes to
/// the request, their list (made with room for these).
pub(crate) struct Attrs<const N: usize>(Inner<N>);

enum Inner<const N: usize> {
    Stack([KeyValue; N], usize),
    Heap(Vec<KeyValue>),
}

impl<const N: usize> Attrs<N> {
    pub(crate) fn new() -> Self {
        Self(Inner::Stack(
            std::array::from_fn(|_| KeyValue::new(Key::from_static_str(""), false)),
            0,
        ))
    }

    /// The attributes pushed after `list`'s (which has the room, or grows).
    pub(crate) fn after(list: Vec<KeyValue>) -> Self {
        Self(Inner::Heap(list))
    }

    /// Adds `kv`; beyond the stack's capacity it is dropped (the capacity is sized for
    /// the largest set a metric takes, so this does not happen).
    pub(crate) fn push(&mut self, kv: KeyValue) {
        match &mut self.0 {
            Inner::Stack(items, len) => {
                debug_assert!(*len < N, "Attrs<{N}> is too small");
                if let Some(slot) = items.get_mut(*len) {
                    *slot = kv;
                    *len += 1;
                }
            }
            Inner::Heap(list) => list.push(kv),
        }
    }

    pub(crate) fn as_slice(&self) -> &[KeyValue] {
        match &self.0 {
            Inner::Stack(items, len) => &items[..*len],
            Inner::Heap(list) => list,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods() {
        let known = KnownMethods::Default;
        for m in [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "QUERY",
        ] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            let label = known.label(&method);
            assert_eq!(label.value.as_str(), m);
            assert!(!label.other);
            assert!(label.original(&method).is_none());
            assert_eq!(label.span_name(None), m);
        }
        for m in ["get", "PROPFIND", "FOO"] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            let label = known.label(&method);
            assert_eq!(label.value.as_str(), "_OTHER");
            assert_eq!(label.span_name(None), "HTTP");
            assert_eq!(label.span_name(Some("/a/{id}")), "HTTP /a/{id}");
            let original = label.original(&method).unwrap();
            assert_eq!(original.value.as_str(), m);
        }
    }

    #[test]
    fn custom_known_methods_replace_the_default() {
        let known = KnownMethods::custom(" GET, PROPFIND ,,".split(','));
        let propfind = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(known.label(&propfind).value.as_str(), "PROPFIND");
        assert_eq!(known.label(&propfind).span_name(None), "PROPFIND");
        assert_eq!(known.label(&Method::GET).value.as_str(), "GET");
        assert_eq!(known.label(&Method::POST).value.as_str(), "_OTHER");
    }

    #[test]
    fn error_type_names_are_public_paths() {
        assert_eq!(error_type_name::<std::io::Error>(), "std::io::Error");
        assert_eq!(
            error_type_name::<Box<dyn std::error::Error + Send + Sync>>(),
            "Box<dyn Error + Send + Sync>"
        );
        assert_eq!(error_type_name::<std::fmt::Error>(), "core::fmt::Error");
    }

    #[test]
    fn status_strings() {
        assert_eq!(status_code_str(100), "100");
        assert_eq!(status_code_str(404), "404");
        assert_eq!(status_code_str(500), "500");
        assert_eq!(status_code_str(599), "599");
        assert_eq!(status_code_str(600), "_OTHER");
        assert_eq!(status_code_str(99), "_OTHER");
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("example.com"), Some(("example.com", None)));
        assert_eq!(
            split_host_port("example.com:8080"),
            Some(("example.com", Some(8080)))
        );
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", Some(443))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_host_port("::1"), Some(("::1", None)));
        assert_eq!(split_host_port("u:p@h:1"), Some(("h", Some(1))));
        assert_eq!(split_host_port("h:99999"), None);
        assert_eq!(split_host_port("h:x"), None);
        assert_eq!(split_host_port(""), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("[::1"), None);
        assert_eq!(split_host_port("[::1]x"), None);
        assert_eq!(split_host_port("h:"), Some(("h", None)));
        assert_eq!(split_host_port(" \th:1 "), Some(("h", Some(1))));
        assert_eq!(split_host_port("h:+80"), None);
        assert_eq!(split_host_port("[::1]:+80"), None);
    }

    #[test]
    fn query_redaction() {
        let keys: Vec<Cow<'static, str>> = semconv::SENSITIVE_QUERY_KEYS
            .iter()
            .map(|k| Cow::Borrowed(*k))
            .collect();
        assert!(matches!(
            redact_query("q=1&x=2", &keys),
            Cow::Borrowed("q=1&x=2")
        ));
        assert_eq!(
            redact_query("q=OpenTelemetry&sig=abc", &keys),
            "q=OpenTelemetry&sig=REDACTED"
        );
        for key in semconv::SENSITIVE_QUERY_KEYS {
            assert_eq!(
                redact_query(&format!("a=1&{key}=secret&b"), &keys),
                format!("a=1&{key}=REDACTED&b")
            );
        }
        // Case-sensitive, and a key without a value has nothing to hide.
        assert_eq!(redact_query("SIG=abc&sig", &keys), "SIG=abc&sig");
        assert_eq!(
            redact_query("sig=a&sig=b", &keys),
            "sig=REDACTED&sig=REDACTED"
        );
        assert_eq!(redact_query("sig=x", &[]), "sig=x");
    }

    #[test]
    fn bounded_cuts_at_char_boundary() {
        let s = "é".repeat(MAX_VALUE_LEN);
        let b = bounded(&s);
        assert!(b.len() <= MAX_VALUE_LEN);
        assert!(b.len() >= MAX_VALUE_LEN - 1);
        assert_eq!(bounded("abc"), "abc");
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            r#"for="[2001:db8:cafe::17]:4711";proto=https;host=example.com, for=10.0.0.1"#
                .parse()
                .unwrap(),
        );
        h.insert("x-forwarded-for", "9.9.9.9".parse().unwrap());
        let f = forwarded(&h);
        assert_eq!(f.client, Some("2001:db8:cafe::17"));
        assert_eq!(f.proto, Some("https"));
        assert_eq!(f.host, Some("example.com"));

        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.7:1234, 10.0.0.1".parse().unwrap(),
        );
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "api.example.com:8443".parse().unwrap());
        let f = forwarded(&h);
        assert_eq!(f.client, Some("203.0.113.7"));
        assert_eq!(f.proto, Some("https"));
        assert_eq!(f.host, Some("api.example.com:8443"));

        assert!(forwarded(&HeaderMap::new()).client.is_none());
    }

    #[test]
    fn header_capture() {
        let names = ["X-Id", "x-id", "accept", "cookie"]
            .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap());
        let list = capture_list(
            semconv::HTTP_REQUEST_HEADER,
            names.to_vec(),
            &[http::header::COOKIE],
        );
        assert_eq!(list.len(), 3);
        let mut h = HeaderMap::new();
        h.append("x-id", "a".parse().unwrap());
        h.append("x-id", http::HeaderValue::from_bytes(b"b\xff").unwrap());
        let kvs: Vec<KeyValue> = captured_headers(&h, &list).collect();
        assert_eq!(kvs.len(), 1);
        assert_eq!(kvs[0].key.as_str(), "http.request.header.x-id");
        assert_eq!(
            kvs[0].value,
            Value::Array(Array::String(vec![
                "a".into(),
                "b\u{fffd}".to_string().into()
            ]))
        );
        h.append("cookie", "session=s3cr3t".parse().unwrap());
        h.append("cookie", "other=1".parse().unwrap());
        let kvs: Vec<KeyValue> = captured_headers(&h, &list).collect();
        assert_eq!(kvs[1].key.as_str(), "http.request.header.cookie");
        assert_eq!(
            kvs[1].value,
            Value::Array(Array::String(vec!["REDACTED".into(), "REDACTED".into()]))
        );
    }
}
