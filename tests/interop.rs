//! Interop with OpenTelemetry implementations nobody here wrote: the official Python SDK
//! and its `requests` and WSGI instrumentations (tests/interop/*.py), over loopback.
//!
//! - A Python client (opentelemetry-instrumentation-requests) calls our server
//!   (`OtelLayer` in axum): our SERVER span is the child of its CLIENT span.
//! - Our clients (`OtelClientLayer` around hyper-util, and reqwest with `OtelMiddleware`)
//!   call a Python server (opentelemetry-instrumentation-wsgi around a wsgiref server):
//!   its SERVER span is the child of our CLIENT span.
//! - W3C baggage crosses in both directions when a baggage propagator is composed in.
//! - `tracestate` and the sampled and random-trace-id flags survive a
//!   Python → Rust → Python trace, sampled or not.
//!
//! Both sides' exported spans are asserted: ours through the in-memory exporter, the
//! Python ones from the JSON lines the scripts write to stdout (tests/interop/spans.py).
//!
//! The Python interpreter is `OTEL_INTEROP_PYTHON`, a Python with
//! tests/interop/requirements.txt installed. Without it every test is skipped (passes,
//! with a note on stderr):
//!
//! ```text
//! python3 -m venv target/ci-venv
//! target/ci-venv/bin/pip install -r tests/interop/requirements.txt
//! OTEL_INTEROP_PYTHON=$PWD/target/ci-venv/bin/python cargo test --all-features --test interop
//! ```

#[path = "interop/common.rs"]
#[macro_use]
mod common;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::routing::get as route_get;
use axum::Router;
use bytes::Bytes;
use common::*;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use opentelemetry::baggage::{BaggageExt as _, KeyValueMetadata};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{FutureExt as _, SpanContext, SpanId, SpanKind, TraceContextExt as _};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::propagation::BaggagePropagator;
use opentelemetry_sdk::trace::SpanData;
use support::*;
use tower::{Layer as _, ServiceExt as _};
use tower_otel_http::propagation::TraceContextPropagator;

// ------------------------------------------------------------------------------------
// Python processes (the plumbing is in tests/interop/common.rs)

/// The environment of the scripts beside [`python_command`]'s: the stable HTTP
/// conventions.
const HTTP_ENV: [(&str, &str); 1] = [("OTEL_SEMCONV_STABILITY_OPT_IN", "http")];

/// What tests/interop/client.py wrote.
struct ClientOutput {
    spans: Vec<PySpan>,
    /// The `upstream` line (`--upstream-tracestate`): the remote parent's ids.
    upstream: Option<Json>,
    /// The `response` line: `status` and `body`.
    response: Json,
}

/// Runs tests/interop/client.py with `args` to completion (bounded by
/// [`PYTHON_TIMEOUT`]; the process is killed if it takes longer).
async fn run_python_client(python: &PathBuf, args: &[&str]) -> ClientOutput {
    let mut cmd = python_command(python, "client.py", &HTTP_ENV);
    cmd.args(args);
    let (stdout, _) = run_to_completion(cmd, "Python client").await;
    let lines: Vec<Json> = stdout.lines().map(Json::parse).collect();
    let of_type = |t: &str| -> Vec<&Json> {
        lines
            .iter()
            .filter(|line| line.get("type").as_str() == Some(t))
            .collect()
    };
    let spans = of_type("span").into_iter().map(PySpan::from_json).collect();
    let upstream = of_type("upstream").first().map(|j| (*j).clone());
    let responses = of_type("response");
    assert_eq!(responses.len(), 1, "one response line:\n{stdout}");
    ClientOutput {
        spans,
        upstream,
        response: responses[0].clone(),
    }
}

/// tests/interop/server.py, running until dropped.
impl PythonServer {
    async fn start(python: &PathBuf) -> Self {
        let cmd = python_command(python, "server.py", &HTTP_ENV);
        Self::spawn(cmd, "Python server").await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn spans(&self) -> Vec<PySpan> {
        self.lines()
            .iter()
            .map(|line| Json::parse(line))
            .filter(|j| j.get("type").as_str() == Some("span"))
            .map(|j| PySpan::from_json(&j))
            .collect()
    }

    /// Waits (up to 5 s) for `n` exported spans, then a little longer, and asserts that
    /// there are exactly `n`.
    async fn exactly_spans(&self, n: usize) -> Vec<PySpan> {
        self.exactly(n, Self::spans).await
    }
}

/// One span the Python SDK exported (see tests/interop/spans.py).
#[derive(Debug)]
struct PySpan {
    name: String,
    kind: String,
    trace_id: String,
    span_id: String,
    trace_flags: i64,
    trace_state: String,
    parent_span_id: Option<String>,
    parent_is_remote: Option<bool>,
    status: String,
    attributes: BTreeMap<String, Json>,
}

impl PySpan {
    fn from_json(j: &Json) -> Self {
        let string = |key: &str| {
            j.get(key)
                .as_str()
                .unwrap_or_else(|| panic!("{key} in {j:?}"))
                .to_string()
        };
        let Json::Object(attributes) = j.get("attributes") else {
            panic!("attributes in {j:?}");
        };
        Self {
            name: string("name"),
            kind: string("kind"),
            trace_id: string("trace_id"),
            span_id: string("span_id"),
            trace_flags: j.get("trace_flags").as_i64().unwrap(),
            trace_state: string("trace_state"),
            parent_span_id: j.get("parent_span_id").as_str().map(str::to_string),
            parent_is_remote: match j.get("parent_is_remote") {
                Json::Bool(b) => Some(*b),
                _ => None,
            },
            status: string("status"),
            attributes: attributes.iter().cloned().collect(),
        }
    }

    fn attr(&self, key: &str) -> &Json {
        self.attributes.get(key).unwrap_or(&Json::Null)
    }

    fn attr_keys(&self) -> Vec<&str> {
        self.attributes.keys().map(String::as_str).collect()
    }

    /// Asserts that `self` is the child of `parent`, one of our spans, across the wire.
    fn assert_child_of(&self, parent: &SpanData) {
        assert_eq!(self.trace_id, hex_trace_id(parent), "{self:#?}");
        assert_eq!(
            self.parent_span_id.as_deref(),
            Some(hex_span_id(parent).as_str()),
            "{self:#?}"
        );
        assert_eq!(self.parent_is_remote, Some(true), "{self:#?}");
        // Same sampled and random flags.
        assert_eq!(
            self.trace_flags,
            i64::from(parent.span_context.trace_flags().to_u8()),
            "{self:#?}"
        );
    }
}

/// Asserts that our `span` is the child of the Python span `parent`, across the wire.
fn assert_rust_child_of(span: &SpanData, parent: &PySpan) {
    assert_eq!(hex_trace_id(span), parent.trace_id, "{span:#?}");
    assert_eq!(hex_span_id(span).len(), 16);
    assert_eq!(
        span.parent_span_id.to_string(),
        parent.span_id,
        "{span:#?} should be the child of {parent:#?}"
    );
    assert!(span.parent_span_is_remote, "{span:#?}");
    // Same sampled and random flags.
    assert_eq!(
        i64::from(span.span_context.trace_flags().to_u8()),
        parent.trace_flags,
        "{span:#?}"
    );
}

fn port_value(addr: SocketAddr) -> Value {
    Value::I64(addr.port().into())
}

// ------------------------------------------------------------------------------------
// A minimal JSON reader (the dev-dependencies have no serde_json), for what Python's
// `json.dumps` writes.

#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut parser = JsonParser {
            chars: text.chars().collect(),
            at: 0,
        };
        let value = parser.value();
        parser.skip_ws();
        assert_eq!(parser.at, parser.chars.len(), "trailing text in {text:?}");
        value
    }

    /// The member `key` of an object, or `Null`.
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(members) => members
                .iter()
                .find(|(k, _)| k == key)
                .map_or(&Json::Null, |(_, v)| v),
            _ => &Json::Null,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) if n.fract() == 0.0 => Some(*n as i64),
            _ => None,
        }
    }

    /// An object's string members, sorted by key.
    fn string_map(&self) -> Vec<(String, String)> {
        let Json::Object(members) = self else {
            panic!("not an object: {self:?}");
        };
        let mut v: Vec<(String, String)> = members
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    }
}

fn js(s: &str) -> Json {
    Json::String(s.to_string())
}

fn jn(n: u16) -> Json {
    Json::Number(n.into())
}

struct JsonParser {
    chars: Vec<char>,
    at: usize,
}

impl JsonParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> char {
        let c = self.peek().expect("unexpected end of JSON");
        self.at += 1;
        c
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.at += 1;
        }
    }

    fn expect_word(&mut self, word: &str, value: Json) -> Json {
        for expected in word.chars() {
            assert_eq!(self.next(), expected, "bad JSON literal");
        }
        value
    }

    fn value(&mut self) -> Json {
        self.skip_ws();
        match self.peek().expect("unexpected end of JSON") {
            'n' => self.expect_word("null", Json::Null),
            't' => self.expect_word("true", Json::Bool(true)),
            'f' => self.expect_word("false", Json::Bool(false)),
            '"' => Json::String(self.string()),
            '[' => {
                self.next();
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(']') {
                    self.next();
                    return Json::Array(items);
                }
                loop {
                    items.push(self.value());
                    self.skip_ws();
                    match self.next() {
                        ',' => continue,
                        ']' => return Json::Array(items),
                        c => panic!("bad JSON array: {c:?}"),
                    }
                }
            }
            '{' => {
                self.next();
                let mut members = Vec::new();
                self.skip_ws();
                if self.peek() == Some('}') {
                    self.next();
                    return Json::Object(members);
                }
                loop {
                    self.skip_ws();
                    let key = self.string();
                    self.skip_ws();
                    assert_eq!(self.next(), ':', "bad JSON object");
                    members.push((key, self.value()));
                    self.skip_ws();
                    match self.next() {
                        ',' => continue,
                        '}' => return Json::Object(members),
                        c => panic!("bad JSON object: {c:?}"),
                    }
                }
            }
            _ => {
                let start = self.at;
                while matches!(self.peek(), Some('-' | '+' | '.' | 'e' | 'E' | '0'..='9')) {
                    self.at += 1;
                }
                let text: String = self.chars[start..self.at].iter().collect();
                Json::Number(
                    text.parse()
                        .unwrap_or_else(|_| panic!("bad number {text:?}")),
                )
            }
        }
    }

    fn hex4(&mut self) -> u32 {
        let text: String = (0..4).map(|_| self.next()).collect();
        u32::from_str_radix(&text, 16).expect("bad \\u escape")
    }

    fn string(&mut self) -> String {
        assert_eq!(self.next(), '"', "expected a JSON string");
        let mut out = String::new();
        loop {
            match self.next() {
                '"' => return out,
                '\\' => match self.next() {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let mut code = self.hex4();
                        if (0xD800..0xDC00).contains(&code) {
                            assert_eq!((self.next(), self.next()), ('\\', 'u'), "lone surrogate");
                            let low = self.hex4();
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        }
                        out.push(char::from_u32(code).expect("bad \\u escape"));
                    }
                    c => panic!("bad JSON escape {c:?}"),
                },
                c => out.push(c),
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// Our side: propagators, an axum server, clients

/// W3C trace context (this crate's strict propagator) and W3C baggage (the SDK's).
fn with_baggage() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Baggage set on one side, expected on the other. The values hold characters both
/// SDKs percent-encode (`,` `;` `=` and non-ASCII), but no space, `+` nor `%`, which
/// the two SDKs' baggage propagators do not agree on: Python's encodes a space as `+`
/// (`quote_plus`), which the Rust SDK's decodes as a literal `+` (`a b` arrives as
/// `a+b`); the Rust SDK's sends `+` and `%` as they are, which Python decodes as form
/// encoding (`x+y%41` arrives as `x yA`).
const PY_BAGGAGE: [(&str, &str); 2] = [("user.id", "alice"), ("py.note", "a,b;c=d/é")];
const RUST_BAGGAGE: [(&str, &str); 2] = [("tenant", "acme"), ("rust.note", "x,y;z=w/ü")];

fn baggage_args(entries: &[(&str, &str)]) -> Vec<String> {
    entries
        .iter()
        .flat_map(|(k, v)| ["--baggage".to_string(), format!("{k}={v}")])
        .collect()
}

fn sorted(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn baggage_of(cx: &Context) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = cx
        .baggage()
        .iter()
        .map(|(k, (v, _))| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

/// `cx` with `entries` added to its baggage.
fn add_baggage(cx: &Context, entries: &[(&str, &str)]) -> Context {
    let mut all: Vec<KeyValueMetadata> = cx
        .baggage()
        .iter()
        .map(|(k, (v, m))| KeyValueMetadata::new(k.clone(), v.clone(), m.clone()))
        .collect();
    all.extend(
        entries
            .iter()
            .map(|(k, v)| KeyValueMetadata::new(k.to_string(), v.to_string(), "")),
    );
    cx.with_baggage(all)
}

/// What one request's handler saw in `Context::current()`.
#[derive(Debug)]
struct Seen {
    span_context: SpanContext,
    baggage: Vec<(String, String)>,
    headers: HeaderMap,
    /// The Python server's answer, when the handler called one.
    downstream: Option<Json>,
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

type HyperOtelClient = tower_otel_http::client::OtelClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
>;

/// GETs `url` through `client` in context `cx` and parses the Python server's JSON
/// answer.
async fn hyper_get_json(client: &HyperOtelClient, url: &str, cx: Context) -> Json {
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let res = client
        .clone()
        .oneshot(req)
        .with_context(cx)
        .await
        .expect("the request to the Python server");
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Json::parse(std::str::from_utf8(&body).unwrap())
}

/// Our axum server with `layer`: `GET /items/{id}` records what the handler saw and
/// answers `ok`; with `downstream` (a Python server URL and a client), the handler first
/// adds [`RUST_BAGGAGE`] to the current context and calls it.
async fn axum_server(
    layer: tower_otel_http::OtelLayer,
    downstream: Option<(String, HyperOtelClient)>,
) -> (SocketAddr, SeenLog) {
    let seen: SeenLog = Arc::default();
    let log = seen.clone();
    let handler = move |headers: HeaderMap| {
        let log = log.clone();
        let downstream = downstream.clone();
        async move {
            let cx = Context::current();
            let answer = match downstream {
                Some((url, client)) => {
                    let cx = add_baggage(&cx, &RUST_BAGGAGE);
                    Some(hyper_get_json(&client, &url, cx).await)
                }
                None => None,
            };
            log.lock().unwrap().push(Seen {
                span_context: cx.span().span_context().clone(),
                baggage: baggage_of(&cx),
                headers,
                downstream: answer,
            });
            "ok"
        }
    };
    let app = Router::new()
        .route("/items/{id}", route_get(handler))
        .layer(layer);
    (serve(app).await, seen)
}

/// The attributes our server span has for a GET `/items/7?q=1` from Python's `requests`
/// to `addr` (the peer port is checked apart).
fn assert_our_server_attributes(span: &SpanData, addr: SocketAddr, py_client: &PySpan) {
    let peer_port = attr(&span.attributes, "network.peer.port").expect("network.peer.port");
    let mut want = vec![
        ("http.request.method", s("GET")),
        ("url.path", s("/items/7")),
        ("url.query", s("q=1")),
        ("url.scheme", s("http")),
        ("server.address", s("127.0.0.1")),
        ("server.port", port_value(addr)),
        ("client.address", s("127.0.0.1")),
        ("network.peer.address", s("127.0.0.1")),
        ("network.peer.port", peer_port),
        ("network.protocol.version", s("1.1")),
        ("user_agent.original", s("python-requests/2.34.2")),
        ("http.response.status_code", Value::I64(200)),
    ];
    if cfg!(feature = "axum") {
        want.push(("http.route", s("/items/{id}")));
    }
    assert_eq!(typed_set(&span.attributes), expected_set(&want));

    // Both sides describe the same request alike.
    assert_eq!(
        py_client.attr("url.full"),
        &js(&format!("http://{addr}/items/7?q=1"))
    );
    for (key, value) in [
        ("http.request.method", js("GET")),
        ("server.address", js("127.0.0.1")),
        ("server.port", jn(addr.port())),
        ("user_agent.original", js("python-requests/2.34.2")),
        ("http.response.status_code", jn(200)),
        ("network.protocol.version", js("1.1")),
    ] {
        assert_eq!(py_client.attr(key), &value, "Python client span's {key}");
    }
}

/// Asserts what the Python `requests` client span is: a CLIENT span `GET`, sampled,
/// with the W3C Level 2 random-trace-id flag (the Python SDK sets it on the trace ids it
/// makes, and keeps it from a parent that has it).
fn assert_python_client_span(span: &PySpan, addr: SocketAddr) {
    assert_eq!(span.kind, "CLIENT");
    assert_eq!(span.name, "GET");
    assert_eq!(span.status, "UNSET");
    assert_eq!(span.trace_flags, 0x03, "sampled | random");
    assert_eq!(
        span.attr_keys(),
        vec![
            "http.request.method",
            "http.response.status_code",
            "network.peer.address",
            "network.peer.port",
            "network.protocol.version",
            "server.address",
            "server.port",
            "url.full",
            "user_agent.original",
        ],
        "{span:#?}"
    );
    assert_eq!(span.attr("network.peer.port"), &jn(addr.port()));
}

/// Asserts what the Python WSGI server span is for a GET of `path` from one of our
/// clients: a SERVER span named `GET {path}`, with the baggage it saw as
/// `test.baggage.*`.
fn assert_python_server_span(
    span: &PySpan,
    addr: SocketAddr,
    path: &str,
    baggage: &[(&str, &str)],
) {
    assert_eq!(span.kind, "SERVER");
    assert_eq!(span.name, format!("GET {path}"));
    assert_eq!(span.status, "UNSET");
    let mut want: BTreeMap<String, Json> = [
        ("client.address", js("127.0.0.1")),
        ("http.request.method", js("GET")),
        ("http.response.status_code", jn(200)),
        ("network.protocol.version", js("1.1")),
        // opentelemetry-instrumentation-wsgi 0.66b2 puts the Host header, port
        // included, in `server.address`, and records no `url.path`.
        ("server.address", js(&addr.to_string())),
        ("server.port", jn(addr.port())),
        ("url.scheme", js("http")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in baggage {
        want.insert(format!("test.baggage.{k}"), js(v));
    }
    assert_eq!(span.attributes, want, "{span:#?}");
}

/// Our CLIENT span for a GET of `url` on the Python (wsgiref, HTTP/1.0) server.
fn assert_our_client_span(span: &SpanData, server: &PythonServer, url: &str) {
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(span.name, "GET");
    assert_eq!(
        typed_set(&span.attributes),
        expected_set(&[
            ("http.request.method", s("GET")),
            ("url.full", s(url)),
            ("server.address", s("127.0.0.1")),
            ("server.port", port_value(server.addr)),
            ("http.response.status_code", Value::I64(200)),
            // wsgiref answers `HTTP/1.0`.
            ("network.protocol.version", s("1.0")),
            // The connection the response came over (`hyper-util` feature).
            ("network.peer.address", s("127.0.0.1")),
            ("network.peer.port", port_value(server.addr)),
        ])
    );
}

/// The Python server's answer as seen by the application: the headers it received,
/// the baggage in its context and its current span.
fn assert_python_server_saw(answer: &Json, client_span: &SpanData, baggage: &[(&str, &str)]) {
    assert_eq!(
        answer.get("traceparent").as_str(),
        Some(traceparent_with_flags(client_span).as_str()),
        "{answer:?}"
    );
    assert_eq!(answer.get("context_baggage").string_map(), sorted(baggage));
    assert_eq!(
        answer.get("trace_id").as_str(),
        Some(hex_trace_id(client_span).as_str())
    );
}

// ------------------------------------------------------------------------------------
// Python client → our server

/// A Python `requests` client calls our axum server with the default `OtelLayer`
/// (strict W3C trace context only): our SERVER span is the child of the Python CLIENT
/// span; the baggage the Python client sent is not extracted without a baggage
/// propagator.
#[tokio::test]
async fn python_requests_client_is_the_parent_of_our_server_span() {
    let python = python_or_skip!();
    let t = Telemetry::new();
    let (addr, seen) = axum_server(t.server().build(), None).await;

    let mut args = vec![format!("http://{addr}/items/7?q=1")];
    args.extend(baggage_args(&PY_BAGGAGE));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_python_client(&python, &args).await;
    assert_eq!(out.response.get("status").as_i64(), Some(200));
    assert_eq!(out.response.get("body").as_str(), Some("ok"));

    // Python: one root CLIENT span.
    assert_eq!(out.spans.len(), 1, "{:#?}", out.spans);
    let py_client = &out.spans[0];
    assert_python_client_span(py_client, addr);
    assert_eq!(py_client.parent_span_id, None);
    assert_eq!(py_client.trace_state, "");

    // Rust: one SERVER span, its child.
    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    let server = &spans[0];
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(
        server.name,
        if cfg!(feature = "axum") {
            "GET /items/{id}"
        } else {
            "GET"
        }
    );
    assert_rust_child_of(server, py_client);
    assert_our_server_attributes(server, addr, py_client);

    // The handler ran in our span's context; the baggage header arrived but was not read.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].span_context, server.span_context);
    assert!(seen[0].headers.contains_key("baggage"));
    assert_eq!(seen[0].baggage, vec![]);
}

/// With a baggage propagator composed into `OtelLayer`, the baggage a Python client
/// set is in `Context::current().baggage()` in our handler, alongside our span.
#[tokio::test]
async fn baggage_from_a_python_client_reaches_our_handler() {
    let python = python_or_skip!();
    let t = Telemetry::new();
    let (addr, seen) = axum_server(t.server().propagator(with_baggage()).build(), None).await;

    let mut args = vec![format!("http://{addr}/items/7?q=1")];
    args.extend(baggage_args(&PY_BAGGAGE));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_python_client(&python, &args).await;
    assert_eq!(out.response.get("status").as_i64(), Some(200));

    assert_eq!(out.spans.len(), 1, "{:#?}", out.spans);
    let py_client = &out.spans[0];
    assert_python_client_span(py_client, addr);

    t.wait_spans(1).await;
    let spans = t.settle_spans(1).await;
    assert_rust_child_of(&spans[0], py_client);
    assert_our_server_attributes(&spans[0], addr, py_client);

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].span_context, spans[0].span_context);
    assert_eq!(seen[0].baggage, sorted(&PY_BAGGAGE));
}

// ------------------------------------------------------------------------------------
// Our clients → Python server

/// `OtelClientLayer` around hyper-util's client calls a Python WSGI server: the Python
/// SERVER span is the child of our CLIENT span, and the baggage of the caller's context
/// arrives (composed baggage propagator).
#[tokio::test]
async fn hyper_client_layer_is_the_parent_of_a_python_wsgi_server_span() {
    let python = python_or_skip!();
    let server = PythonServer::start(&python).await;
    let t = Telemetry::new();
    let client = t
        .client_layer()
        .propagator(with_baggage())
        .build()
        .layer(support::client());

    let url = server.url("/hyper?x=1");
    let cx = add_baggage(&Context::new(), &RUST_BAGGAGE);
    let answer = hyper_get_json(&client, &url, cx).await;

    let spans = t.wait_spans(1).await;
    let ours = &spans[0];
    assert_eq!(ours.parent_span_id, SpanId::INVALID);
    assert_our_client_span(ours, &server, &url);
    assert_python_server_saw(&answer, ours, &RUST_BAGGAGE);
    assert_eq!(answer.get("tracestate"), &Json::Null);

    let py = server.exactly_spans(1).await;
    py[0].assert_child_of(ours);
    assert_python_server_span(&py[0], server.addr, "/hyper", &RUST_BAGGAGE);
    assert_eq!(answer.get("span_id").as_str(), Some(py[0].span_id.as_str()));
    t.settle_spans(1).await;
}

/// reqwest with `OtelMiddleware` calls a Python WSGI server: the Python SERVER span is
/// the child of our CLIENT span, which is the child of the caller's span; the caller's
/// baggage arrives.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn reqwest_middleware_is_the_parent_of_a_python_wsgi_server_span() {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use tower_otel_http::reqwest::OtelMiddleware;

    let python = python_or_skip!();
    let server = PythonServer::start(&python).await;
    let t = Telemetry::new();
    let layer = t.client_layer().propagator(with_baggage()).build();
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(OtelMiddleware::from_layer(layer))
    .build();

    // The caller's own span, with baggage.
    let tracer = t.tracer_provider.tracer("caller");
    let caller = tracer.start_with_context("caller", &Context::new());
    let cx = add_baggage(&Context::new().with_span(caller), &RUST_BAGGAGE);
    let url = server.url("/reqwest");
    let res = client
        .get(&url)
        .send()
        .with_context(cx.clone())
        .await
        .expect("the request to the Python server");
    assert_eq!(res.status(), 200);
    let answer = Json::parse(&res.text().await.unwrap());
    cx.span().end();

    let spans = t.wait_spans(2).await;
    let ours = client_spans(&spans)[0];
    let caller = spans_named(&spans, "caller")[0];
    assert_eq!(ours.parent_span_id, caller.span_context.span_id());
    assert_eq!(ours.span_context.trace_id(), caller.span_context.trace_id());
    assert_our_client_span(ours, &server, &url);
    assert_python_server_saw(&answer, ours, &RUST_BAGGAGE);

    let py = server.exactly_spans(1).await;
    py[0].assert_child_of(ours);
    assert_python_server_span(&py[0], server.addr, "/reqwest", &RUST_BAGGAGE);
    t.settle_spans(2).await;
}

// ------------------------------------------------------------------------------------
// Python → Rust → Python

/// Python client → our axum server → (our hyper client) → Python server, with baggage
/// composed in on our side: one trace of four spans, each the child of the previous;
/// the Python client's `tracestate` is kept on our spans and forwarded; the Python
/// server sees both the Python client's baggage and the baggage our handler added.
#[tokio::test]
async fn one_trace_python_to_rust_to_python_with_baggage_and_tracestate() {
    let python = python_or_skip!();
    let downstream = PythonServer::start(&python).await;
    let t = Telemetry::new();
    let client = t
        .client_layer()
        .propagator(with_baggage())
        .build()
        .layer(support::client());
    let downstream_url = downstream.url("/downstream");
    let (addr, seen) = axum_server(
        t.server().propagator(with_baggage()).build(),
        Some((downstream_url.clone(), client)),
    )
    .await;

    let tracestate = "vendor=abc,other=x-y";
    let mut args = vec![
        format!("http://{addr}/items/7?q=1"),
        "--upstream-tracestate".to_string(),
        tracestate.to_string(),
    ];
    args.extend(baggage_args(&PY_BAGGAGE));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_python_client(&python, &args).await;
    assert_eq!(out.response.get("status").as_i64(), Some(200));

    // Python client: a CLIENT span under the (simulated) upstream parent.
    let upstream = out.upstream.expect("an upstream line");
    assert_eq!(out.spans.len(), 1, "{:#?}", out.spans);
    let py_client = &out.spans[0];
    assert_python_client_span(py_client, addr);
    assert_eq!(
        Some(py_client.trace_id.as_str()),
        upstream.get("trace_id").as_str()
    );
    assert_eq!(
        py_client.parent_span_id.as_deref(),
        upstream.get("span_id").as_str()
    );
    assert_eq!(py_client.trace_state, tracestate);

    // Ours: SERVER (child of the Python client) → CLIENT.
    t.wait_spans(2).await;
    let spans = t.settle_spans(2).await;
    let ours_server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    let ours_client = client_spans(&spans)[0];
    assert_rust_child_of(ours_server, py_client);
    assert_our_server_attributes(ours_server, addr, py_client);
    assert_eq!(
        ours_client.parent_span_id,
        ours_server.span_context.span_id()
    );
    assert!(!ours_client.parent_span_is_remote);
    assert_our_client_span(ours_client, &downstream, &downstream_url);
    for span in [ours_server, ours_client] {
        assert_eq!(span.span_context.trace_state().header(), tracestate);
    }

    // Our handler saw the Python baggage; the Python server saw it plus ours.
    let mut all_baggage = PY_BAGGAGE.to_vec();
    all_baggage.extend(RUST_BAGGAGE);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].baggage, sorted(&PY_BAGGAGE));
    let answer = seen[0].downstream.as_ref().unwrap();
    assert_python_server_saw(answer, ours_client, &all_baggage);
    assert_eq!(answer.get("tracestate").as_str(), Some(tracestate));

    // Python server: SERVER span, child of our CLIENT span, same trace state.
    let py = downstream.exactly_spans(1).await;
    py[0].assert_child_of(ours_client);
    assert_eq!(py[0].trace_state, tracestate);
    assert_python_server_span(&py[0], downstream.addr, "/downstream", &all_baggage);
    assert_eq!(py[0].trace_id, py_client.trace_id);
}

/// A Python client that does not sample (ALWAYS_OFF): our server follows its decision
/// (no span exported, the handler's context is the unsampled remote one), and our
/// client passes the same trace on, unsampled, to a Python server, which records
/// nothing either.
#[tokio::test]
async fn unsampled_python_client_is_honoured_across_our_server_and_client() {
    let python = python_or_skip!();
    let downstream = PythonServer::start(&python).await;
    let t = Telemetry::new();
    let client = t.client_layer().build().layer(support::client());
    let (addr, seen) = axum_server(
        t.server().build(),
        Some((downstream.url("/unsampled"), client)),
    )
    .await;

    let url = format!("http://{addr}/items/7?q=1");
    let out = run_python_client(&python, &[&url, "--unsampled"]).await;
    assert_eq!(out.response.get("status").as_i64(), Some(200));
    assert_eq!(out.spans.len(), 0, "{:#?}", out.spans);

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 1);
    // Flags 02: not sampled, random trace id (W3C Level 2; the Python SDK sets it).
    let received = seen[0].headers["traceparent"].to_str().unwrap().to_string();
    assert!(received.ends_with("-02"), "{received}");
    let trace_id = &received[3..35];
    let cx = &seen[0].span_context;
    assert!(cx.is_valid());
    assert!(!cx.is_sampled());
    assert_eq!(cx.trace_id().to_string(), trace_id);

    let answer = seen[0].downstream.as_ref().unwrap();
    let forwarded = answer.get("traceparent").as_str().unwrap();
    assert_eq!(&forwarded[3..35], trace_id, "{forwarded}");
    // The random flag is copied to every outgoing traceparent of the same trace
    // (W3C Level 2), even though the SDK drops all flags of the spans it does not sample.
    assert!(forwarded.ends_with("-02"), "{forwarded}");
    assert_eq!(answer.get("trace_id").as_str(), Some(trace_id));
    // Our server had no span to send: the parent id passed on is not the Python
    // client's.
    assert_ne!(&forwarded[36..52], &received[36..52]);

    downstream.exactly_spans(0).await;
    t.settle_spans(0).await;
}
