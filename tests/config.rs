//! Configuration: the builder options `build()` checks (a panic naming the option), the
//! `OTEL_INSTRUMENTATION_HTTP_*` variables `build()` reads when the builder leaves an
//! option unset, the redaction of captured credential headers, `traces`/`metrics` and
//! their deprecated predecessors, and `filter` over the request's `Parts`.
//!
//! The environment is process-wide, and every test here builds layers, so every layer in
//! this file is built through [`with_env`]: it holds [`ENV_LOCK`], sets exactly the given
//! variables (the crate's others unset, whatever the shell had), and unsets them before
//! releasing the lock. The layers read the environment only in `build()`, so requests run
//! without the lock. Keep every test that sets these variables in this binary.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::SpanKind;
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use support::*;
use tower::{Layer as _, ServiceBuilder, ServiceExt as _};
use tower_otel_http::{OtelClientLayer, OtelClientLayerBuilder, OtelLayer, OtelLayerBuilder};

const SERVER_REQUEST: &str = "OTEL_INSTRUMENTATION_HTTP_SERVER_CAPTURE_REQUEST_HEADERS";
const SERVER_RESPONSE: &str = "OTEL_INSTRUMENTATION_HTTP_SERVER_CAPTURE_RESPONSE_HEADERS";
const CLIENT_REQUEST: &str = "OTEL_INSTRUMENTATION_HTTP_CLIENT_CAPTURE_REQUEST_HEADERS";
const CLIENT_RESPONSE: &str = "OTEL_INSTRUMENTATION_HTTP_CLIENT_CAPTURE_RESPONSE_HEADERS";
const SANITIZE: &str = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS";
const EXCLUDED: &str = "OTEL_INSTRUMENTATION_HTTP_SERVER_EXCLUDED_PATHS";
const KNOWN_METHODS: &str = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS";

/// Every variable the layers read.
const ALL_VARS: [&str; 7] = [
    SERVER_REQUEST,
    SERVER_RESPONSE,
    CLIENT_REQUEST,
    CLIENT_RESPONSE,
    SANITIZE,
    EXCLUDED,
    KNOWN_METHODS,
];

const SERVER_DURATION: &str = "http.server.request.duration";
const CLIENT_DURATION: &str = "http.client.request.duration";
const SERVER_RESPONSE_SIZE: &str = "http.server.response.body.size";
const SERVER_ACTIVE: &str = "http.server.active_requests";

// ---------------------------------------------------------------------------------------
// The environment, one test at a time.

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Holds [`ENV_LOCK`] with exactly the given variables of [`ALL_VARS`] set; unsets them
/// all when dropped (also when a test panics), before the lock is released.
struct EnvGuard {
    _lock: MutexGuard<'static, ()>,
}

impl EnvGuard {
    fn set(vars: &[(&str, &str)]) -> Self {
        // A test that failed while holding the lock left the environment clean (`Drop`).
        let lock = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        unset_all();
        for (name, value) in vars {
            assert!(ALL_VARS.contains(name), "{name} is not in ALL_VARS");
            std::env::set_var(name, value);
        }
        Self { _lock: lock }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        unset_all();
    }
}

fn unset_all() {
    for name in ALL_VARS {
        std::env::remove_var(name);
    }
}

/// Runs `build` with exactly `vars` set (see [`EnvGuard`]).
fn with_env<R>(vars: &[(&str, &str)], build: impl FnOnce() -> R) -> R {
    let _env = EnvGuard::set(vars);
    build()
}

// ---------------------------------------------------------------------------------------
// A server and a client that both capture headers.

/// The headers every request of [`exchange`] carries (`cookie` and `x-trace-tag` twice).
const REQUEST_HEADERS: [(&str, &str); 7] = [
    ("authorization", "Bearer secret-token"),
    ("cookie", "session=s3cr3t"),
    ("cookie", "theme=dark"),
    ("x-request-id", "req-1"),
    ("x-tenant", "acme"),
    ("x-trace-tag", "a"),
    ("x-trace-tag", "b"),
];

/// The handler of every server here: answers with the request headers it saw (one
/// `name: value` line each, read with [`echoed`]) and with two `set-cookie`, two `x-resp`,
/// an `x-served-by` and an `x-request-id`.
async fn app<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut lines = String::new();
    for (name, value) in req.headers() {
        lines.push_str(name.as_str());
        lines.push_str(": ");
        lines.push_str(value.to_str().unwrap_or("?"));
        lines.push('\n');
    }
    let mut res = Response::new(Full::new(Bytes::from(lines)));
    let h = res.headers_mut();
    h.append(
        "set-cookie",
        HeaderValue::from_static("session=new; HttpOnly"),
    );
    h.append("set-cookie", HeaderValue::from_static("theme=light"));
    h.append("x-resp", HeaderValue::from_static("r1"));
    h.append("x-resp", HeaderValue::from_static("r2"));
    h.append("x-served-by", HeaderValue::from_static("s1"));
    h.append("x-request-id", HeaderValue::from_static("resp-1"));
    Ok(res)
}

async fn serve_app(layer: OtelLayer) -> SocketAddr {
    serve(ServiceBuilder::new().layer(layer).service_fn(app)).await
}

/// Serves [`app`] behind a server layer of `t` configured by `configure` (no variable set).
async fn serve_configured(
    t: &Telemetry,
    configure: impl FnOnce(OtelLayerBuilder) -> OtelLayerBuilder,
) -> SocketAddr {
    serve_app(with_env(&[], || configure(t.server()).build())).await
}

/// What one request through a client layer to a server layer left behind.
struct Exchange {
    client: SpanData,
    server: SpanData,
    /// The response body: the request headers the handler saw.
    echoed: Bytes,
    /// The response headers the caller got.
    response: HeaderMap,
}

/// A server and a client layer on `t`'s providers, configured by `server` and `client`,
/// built with `env` set.
fn layers(
    t: &Telemetry,
    env: &[(&str, &str)],
    server: impl FnOnce(OtelLayerBuilder) -> OtelLayerBuilder,
    client: impl FnOnce(OtelClientLayerBuilder) -> OtelClientLayerBuilder,
) -> (OtelLayer, OtelClientLayer) {
    with_env(env, || {
        (server(t.server()).build(), client(t.client_layer()).build())
    })
}

/// Sends `req` through `client` (over a plain hyper client), asserts a 200, and reads
/// the whole response.
async fn send_through(
    client: &OtelClientLayer,
    req: Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    let res = client.layer(support::client()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let (parts, body) = res.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

/// Builds a server and a client layer on one [`Telemetry`] with `env` set, sends a GET
/// with [`REQUEST_HEADERS`] through the client to the server, and returns both spans.
async fn exchange(
    env: &[(&str, &str)],
    server: impl FnOnce(OtelLayerBuilder) -> OtelLayerBuilder,
    client: impl FnOnce(OtelClientLayerBuilder) -> OtelClientLayerBuilder,
) -> Exchange {
    let t = Telemetry::new();
    let (server_layer, client_layer) = layers(&t, env, server, client);
    let addr = serve_app(server_layer).await;
    let mut req = get(addr, "/resource");
    for (name, value) in REQUEST_HEADERS {
        req.headers_mut()
            .append(name, HeaderValue::from_static(value));
    }
    let (parts, echoed) = send_through(&client_layer, req).await;

    let spans = t.wait_spans(2).await;
    let one = |kind: SpanKind| {
        let of_kind: Vec<&SpanData> = spans.iter().filter(|s| s.span_kind == kind).collect();
        assert_eq!(of_kind.len(), 1, "{kind:?} spans: {of_kind:#?}");
        of_kind[0].clone()
    };
    Exchange {
        client: one(SpanKind::Client),
        server: one(SpanKind::Server),
        echoed,
        response: parts.headers,
    }
}

/// The `http.request.header.*` and `http.response.header.*` attributes of `span`, sorted.
fn captured(span: &SpanData) -> Vec<(String, Value)> {
    typed_set(span.attributes.iter().filter(|kv| {
        let key = kv.key.as_str();
        key.starts_with("http.request.header.") || key.starts_with("http.response.header.")
    }))
}

const REDACTED_ONCE: &[&str] = &["REDACTED"];
const REDACTED_TWICE: &[&str] = &["REDACTED", "REDACTED"];
/// The credentials of [`REQUEST_HEADERS`] and of [`app`]'s response, as sent.
const BEARER: &[&str] = &["Bearer secret-token"];
const COOKIES: &[&str] = &["session=s3cr3t", "theme=dark"];
const SET_COOKIES: &[&str] = &["session=new; HttpOnly", "theme=light"];

/// Header attributes `(key, values)`, as [`captured`] returns them.
fn headers(pairs: &[(&str, &[&str])]) -> Vec<(String, Value)> {
    let pairs: Vec<(&str, Value)> = pairs.iter().map(|(k, v)| (*k, strings(v))).collect();
    expected_set(&pairs)
}

/// Asserts the header attributes each span of `x` captured: exactly `server` and `client`.
#[track_caller]
fn assert_captured(x: &Exchange, server: &[(&str, &[&str])], client: &[(&str, &[&str])]) {
    assert_eq!(captured(&x.server), headers(server), "server span");
    assert_eq!(captured(&x.client), headers(client), "client span");
}

/// The traffic itself is untouched by what the spans record.
fn assert_headers_went_through(x: &Exchange) {
    assert_eq!(echoed(&x.echoed, "authorization"), BEARER);
    assert_eq!(echoed(&x.echoed, "cookie"), COOKIES);
    let set_cookie: Vec<&str> = x
        .response
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set_cookie, SET_COOKIES);
}

// ---------------------------------------------------------------------------------------
// 1. Options that cannot work panic in `build()`, naming the option.

/// The panic message of `f`, or `None` if it returned.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let payload = std::panic::catch_unwind(AssertUnwindSafe(f)).err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "<not a string>".to_string()),
    )
}

/// One misconfiguration: the option the message must name, a fragment of the message,
/// the builder that must panic, and a close builder that must not.
struct Case<B>(&'static str, &'static str, B, B);

const BAD_NAME: &str = "has \"x tenant\", which is not a valid header name";
const NO_METRICS: &str = "is on, but the layer records no metrics";
const NO_SPANS: &str = "is set, but the layer makes no spans";

fn check_cases<B>(cases: Vec<Case<B>>, build: impl Fn(B)) {
    let mut failures = Vec::new();
    for Case(option, problem, bad, good) in cases {
        let prefix = format!("tower-otel-http: the `{option}` option");
        match panic_message(|| with_env(&[], || build(bad))) {
            Some(message) if message.starts_with(&prefix) && message.contains(problem) => {}
            Some(message) => failures.push(format!(
                "{option}: expected \"{prefix} ..{problem}..\", got {message:?}"
            )),
            None => failures.push(format!("{option} ({problem}): build() did not panic")),
        }
        if let Some(message) = panic_message(|| with_env(&[], || build(good))) {
            failures.push(format!(
                "{option}: the valid counterpart panicked: {message}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn server_options_that_cannot_work_panic_in_build_naming_the_option() {
    let b = OtelLayer::builder;
    let span_name = |builder: OtelLayerBuilder| builder.span_name(|m, _| m.to_owned());
    let cases = vec![
        Case(
            "request_headers",
            BAD_NAME,
            b().request_headers(["x-ok", "x tenant"]),
            b().request_headers(["x-ok", "X-Tenant"]),
        ),
        Case(
            "response_headers",
            BAD_NAME,
            b().response_headers(["x tenant"]),
            b().response_headers(["x-tenant"]),
        ),
        Case(
            "sensitive_headers",
            BAD_NAME,
            b().sensitive_headers(["x tenant"]),
            b().sensitive_headers(["x-tenant"]),
        ),
        Case(
            "known_methods",
            "is empty",
            b().known_methods(Vec::<String>::new()),
            b().known_methods(["GET"]),
        ),
        Case(
            "known_methods",
            "\"GE T\"",
            b().known_methods(["GET", "GE T"]),
            b().known_methods(["GET", "PURGE"]),
        ),
        Case(
            "excluded_paths",
            "\"health\"",
            b().excluded_paths(["/ready", "health"]),
            b().excluded_paths(["/health", "/internal/*"]),
        ),
        Case("scheme", "is empty", b().scheme(""), b().scheme("https")),
        Case("scheme", "is empty", b().scheme("  "), b().scheme("http")),
        Case(
            "sensitive_query_keys",
            "empty key",
            b().sensitive_query_keys(["token", ""]),
            b().sensitive_query_keys(["token"]),
        ),
        Case(
            "active_requests",
            NO_METRICS,
            b().metrics(false).active_requests(true),
            b().metrics(false).active_requests(false),
        ),
        // The order of the calls does not matter.
        Case(
            "active_requests",
            NO_METRICS,
            b().active_requests(true).metrics(false),
            b().active_requests(true).metrics(true),
        ),
        Case(
            "body_size_metrics",
            NO_METRICS,
            b().metrics(false).body_size_metrics(true),
            b().metrics(false).body_size_metrics(false),
        ),
        Case(
            "server_address_on_metrics",
            NO_METRICS,
            b().metrics(false).server_address_on_metrics(true),
            b().metrics(true).server_address_on_metrics(true),
        ),
        Case(
            "span_name",
            NO_SPANS,
            span_name(b().traces(false)),
            span_name(b().traces(true)),
        ),
        Case(
            "span_name",
            NO_SPANS,
            span_name(b()).traces(false),
            span_name(b()),
        ),
    ];
    check_cases(cases, |builder| {
        builder.build();
    });
}

#[test]
fn client_options_that_cannot_work_panic_in_build_naming_the_option() {
    let b = OtelClientLayer::builder;
    let cases = vec![
        Case(
            "request_headers",
            BAD_NAME,
            b().request_headers(["x tenant"]),
            b().request_headers(["x-tenant"]),
        ),
        Case(
            "response_headers",
            BAD_NAME,
            b().response_headers(["x-ok", "x tenant"]),
            b().response_headers(["x-ok", "x-tenant"]),
        ),
        Case(
            "sensitive_headers",
            BAD_NAME,
            b().sensitive_headers(["x tenant"]),
            b().sensitive_headers(Vec::<String>::new()),
        ),
        Case(
            "known_methods",
            "is empty",
            b().known_methods(Vec::<String>::new()),
            b().known_methods(["GET"]),
        ),
        Case(
            "known_methods",
            "\"GE T\"",
            b().known_methods(["GE T"]),
            b().known_methods(["GET"]),
        ),
        Case(
            "sensitive_query_keys",
            "empty key",
            b().sensitive_query_keys([""]),
            b().sensitive_query_keys(Vec::<String>::new()),
        ),
        Case(
            "active_requests",
            NO_METRICS,
            b().metrics(false).active_requests(true),
            b().metrics(true).active_requests(true),
        ),
        Case(
            "body_size_metrics",
            NO_METRICS,
            b().body_size_metrics(true).metrics(false),
            b().body_size_metrics(false).metrics(false),
        ),
    ];
    check_cases(cases, |builder| {
        builder.build();
    });
}

// ---------------------------------------------------------------------------------------
// 2. The environment, when the builder leaves an option unset.

#[tokio::test]
async fn capture_variables_set_the_headers_of_their_side_and_direction() {
    let x = exchange(
        &[
            // Names are case-insensitive; blanks around entries do not matter.
            (SERVER_REQUEST, " X-Tenant , cookie"),
            (SERVER_RESPONSE, "x-served-by"),
            (CLIENT_REQUEST, "x-trace-tag,authorization"),
            (CLIENT_RESPONSE, "x-resp,set-cookie"),
        ],
        |s| s,
        |c| c,
    )
    .await;
    assert_captured(
        &x,
        &[
            ("http.request.header.x-tenant", &["acme"]),
            ("http.request.header.cookie", REDACTED_TWICE),
            ("http.response.header.x-served-by", &["s1"]),
        ],
        &[
            ("http.request.header.x-trace-tag", &["a", "b"]),
            ("http.request.header.authorization", REDACTED_ONCE),
            ("http.response.header.x-resp", &["r1", "r2"]),
            ("http.response.header.set-cookie", REDACTED_TWICE),
        ],
    );
    assert_headers_went_through(&x);
}

#[tokio::test]
async fn capture_variables_skip_malformed_entries_and_ignore_a_value_without_valid_ones() {
    let x = exchange(
        &[
            (SERVER_REQUEST, "bad name,x-tenant,,"),
            // One entry, not a header name (`;` is no separator): ignored.
            (SERVER_RESPONSE, "x-served-by;x-resp"),
            (CLIENT_REQUEST, "(x), x-trace-tag"),
            (CLIENT_RESPONSE, "bad name"),
        ],
        |s| s,
        |c| c,
    )
    .await;
    assert_captured(
        &x,
        &[("http.request.header.x-tenant", &["acme"])],
        &[("http.request.header.x-trace-tag", &["a", "b"])],
    );
}

#[tokio::test]
async fn capture_options_win_over_the_variables_and_an_empty_list_captures_nothing() {
    let env = [
        (SERVER_REQUEST, "x-tenant,x-trace-tag"),
        (SERVER_RESPONSE, "x-served-by,x-resp"),
        (CLIENT_REQUEST, "x-tenant,x-trace-tag"),
        (CLIENT_RESPONSE, "x-served-by,x-resp"),
    ];
    let x = exchange(
        &env,
        |s| {
            s.request_headers(["x-request-id"])
                .response_headers(Vec::<String>::new())
        },
        |c| {
            c.request_headers(Vec::<&str>::new())
                .response_headers(["x-served-by"])
        },
    )
    .await;
    assert_captured(
        &x,
        &[("http.request.header.x-request-id", &["req-1"])],
        &[("http.response.header.x-served-by", &["s1"])],
    );
}

/// What the client of [`exchange`] captures of `authorization`, `set-cookie` and
/// `x-request-id` (both ways) when only `x-request-id` is redacted.
const CLIENT_ONLY_REQUEST_ID_REDACTED: &[(&str, &[&str])] = &[
    ("http.request.header.authorization", BEARER),
    ("http.request.header.x-request-id", REDACTED_ONCE),
    ("http.response.header.set-cookie", SET_COOKIES),
    ("http.response.header.x-request-id", REDACTED_ONCE),
];

#[tokio::test]
async fn sanitize_variable_replaces_the_default_redacted_list() {
    let x = exchange(
        &[(SANITIZE, "x-request-id, X-Tenant")],
        |s| s.request_headers(["authorization", "x-request-id", "x-tenant"]),
        |c| {
            c.request_headers(["authorization", "x-request-id"])
                .response_headers(["set-cookie", "x-request-id"])
        },
    )
    .await;
    assert_captured(
        &x,
        &[
            ("http.request.header.authorization", BEARER),
            ("http.request.header.x-request-id", REDACTED_ONCE),
            ("http.request.header.x-tenant", REDACTED_ONCE),
        ],
        CLIENT_ONLY_REQUEST_ID_REDACTED,
    );
}

#[tokio::test]
async fn sanitize_variable_skips_malformed_entries_and_ignores_a_value_without_valid_ones() {
    let capture = |s: OtelLayerBuilder| s.request_headers(["authorization", "x-request-id"]);
    let capture_client =
        |c: OtelClientLayerBuilder| c.request_headers(["authorization", "x-request-id"]);

    // A valid entry among malformed ones: the list is that entry.
    let x = exchange(
        &[(SANITIZE, "bad name, x-request-id ,(x)")],
        capture,
        capture_client,
    )
    .await;
    let expected: &[(&str, &[&str])] = &[
        ("http.request.header.authorization", BEARER),
        ("http.request.header.x-request-id", REDACTED_ONCE),
    ];
    assert_captured(&x, expected, expected);

    // No valid entry: the default list.
    let x = exchange(&[(SANITIZE, "bad name")], capture, capture_client).await;
    let expected: &[(&str, &[&str])] = &[
        ("http.request.header.authorization", REDACTED_ONCE),
        ("http.request.header.x-request-id", &["req-1"]),
    ];
    assert_captured(&x, expected, expected);
}

#[tokio::test]
async fn sensitive_headers_option_wins_over_the_sanitize_variable() {
    let x = exchange(
        &[(SANITIZE, "x-request-id")],
        |s| {
            s.request_headers(["authorization", "x-request-id", "x-tenant"])
                .sensitive_headers(["x-tenant"])
        },
        // An empty list redacts nothing, whatever the environment says.
        |c| {
            c.request_headers(["authorization", "x-request-id"])
                .sensitive_headers(Vec::<String>::new())
        },
    )
    .await;
    assert_captured(
        &x,
        &[
            ("http.request.header.authorization", BEARER),
            ("http.request.header.x-request-id", &["req-1"]),
            ("http.request.header.x-tenant", REDACTED_ONCE),
        ],
        &[
            ("http.request.header.authorization", BEARER),
            ("http.request.header.x-request-id", &["req-1"]),
        ],
    );
}

/// Serves [`app`] behind a server layer (with `active_requests`) built with `env` set and
/// configured by `configure`, GETs each of [`PATHS`] in turn, and asserts that exactly the
/// `recorded` ones made a span and a metric point, and that every request was answered.
async fn assert_recorded(
    env: &[(&str, &str)],
    configure: impl FnOnce(OtelLayerBuilder) -> OtelLayerBuilder,
    recorded: &[&str],
) {
    let t = Telemetry::new();
    let layer = with_env(env, || configure(t.server().active_requests(true)).build());
    let addr = serve_app(layer).await;
    for path in PATHS {
        let (parts, body) = send(get(addr, path)).await;
        assert_eq!(parts.status, 200, "{path}");
        assert_eq!(echoed(&body, "host"), [addr.to_string()], "{path}");
    }

    t.wait_spans(recorded.len()).await;
    let spans = t.settle_spans(recorded.len()).await;
    let mut got: Vec<String> = spans
        .iter()
        .map(|span| {
            let path = attr(&span.attributes, "url.path").unwrap().to_string();
            match attr(&span.attributes, "url.query") {
                Some(query) => format!("{path}?{query}"),
                None => path,
            }
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = recorded.iter().map(|p| p.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "the requests that made a span");

    let n = recorded.len() as u64;
    assert_eq!(duration_count(&t, SERVER_DURATION), n, "durations");
    let sizes: u64 = t
        .u64_histogram(SERVER_RESPONSE_SIZE)
        .iter()
        .map(|p| p.count())
        .sum();
    assert_eq!(sizes, n, "response sizes");
    let active: i64 = t.i64_sum(SERVER_ACTIVE).iter().map(|p| p.value()).sum();
    assert_eq!(active, 0, "active requests");
}

/// The paths the exclusion tests send.
const PATHS: [&str; 9] = [
    "/health",
    "/health?probe=1",
    "/healthz",
    "/internal/",
    "/internal/metrics",
    "/internal",
    "/api/health",
    "/ready",
    "/",
];

/// [`PATHS`] but `excluded` (each of which must be one of them).
fn all_but(excluded: &[&str]) -> Vec<&'static str> {
    for path in excluded {
        assert!(PATHS.contains(path), "{path} is not in PATHS");
    }
    PATHS
        .into_iter()
        .filter(|p| !excluded.contains(p))
        .collect()
}

#[tokio::test]
async fn excluded_paths_variable_excludes_exact_paths_and_prefixes() {
    assert_recorded(
        &[(EXCLUDED, "/health, /internal/*")],
        |s| s,
        &["/healthz", "/internal", "/api/health", "/ready", "/"],
    )
    .await;
}

#[tokio::test]
async fn excluded_paths_variable_skips_malformed_entries_and_ignores_a_value_without_valid_ones() {
    assert_recorded(
        &[(EXCLUDED, "health,/internal/*, ready")],
        |s| s,
        &all_but(&["/internal/", "/internal/metrics"]),
    )
    .await;
    assert_recorded(&[(EXCLUDED, "health, internal/*")], |s| s, &PATHS).await;
}

#[tokio::test]
async fn excluded_paths_option_wins_over_the_variable_and_an_empty_list_excludes_nothing() {
    let env = [(EXCLUDED, "/health,/internal/*")];
    assert_recorded(
        &env,
        |s| s.excluded_paths(["/ready"]),
        &all_but(&["/ready"]),
    )
    .await;
    assert_recorded(&env, |s| s.excluded_paths(Vec::<String>::new()), &PATHS).await;
}

/// The methods [`method_labels`] sends.
const METHODS: [&str; 3] = ["GET", "POST", "PURGE"];

/// Sends GET, POST and PURGE through a client layer to a server layer, both built with
/// `env` set, and returns what each span recorded for each method sent:
/// `"{server|client} {sent}" => "{http.request.method} ({span name})"`.
async fn method_labels(
    env: &[(&str, &str)],
    server: impl FnOnce(OtelLayerBuilder) -> OtelLayerBuilder,
    client: impl FnOnce(OtelClientLayerBuilder) -> OtelClientLayerBuilder,
) -> BTreeMap<String, String> {
    let t = Telemetry::new();
    let (server_layer, client_layer) = layers(&t, env, server, client);
    let addr = serve_app(server_layer).await;
    for method in METHODS {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/m"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        send_through(&client_layer, req).await;
    }
    let spans = t.wait_spans(6).await;
    spans
        .iter()
        .map(|span| {
            let side = match span.span_kind {
                SpanKind::Server => "server",
                _ => "client",
            };
            let method = attr(&span.attributes, "http.request.method").unwrap();
            let sent = attr(&span.attributes, "http.request.method_original")
                .unwrap_or_else(|| method.clone());
            (
                format!("{side} {sent}"),
                format!("{method} ({})", span.name),
            )
        })
        .collect()
}

/// What [`method_labels`] returns when the server recorded `server` and the client
/// `client` for GET, POST and PURGE, in that order.
fn labels(server: [&str; 3], client: [&str; 3]) -> BTreeMap<String, String> {
    [("server", server), ("client", client)]
        .into_iter()
        .flat_map(|(side, recorded)| {
            METHODS
                .into_iter()
                .zip(recorded)
                .map(move |(sent, label)| (format!("{side} {sent}"), label.to_string()))
        })
        .collect()
}

const AS_GET: &str = "GET (GET)";
const AS_POST: &str = "POST (POST)";
const AS_PURGE: &str = "PURGE (PURGE)";
const AS_OTHER: &str = "_OTHER (HTTP)";
/// GET, POST and PURGE with the default known methods.
const DEFAULT: [&str; 3] = [AS_GET, AS_POST, AS_OTHER];

#[tokio::test]
async fn known_methods_variable_replaces_the_default_methods_on_both_sides() {
    let default = labels(DEFAULT, DEFAULT);
    assert_eq!(method_labels(&[], |s| s, |c| c).await, default);
    let only_get_and_purge = [AS_GET, AS_OTHER, AS_PURGE];
    assert_eq!(
        method_labels(&[(KNOWN_METHODS, "GET, PURGE")], |s| s, |c| c).await,
        labels(only_get_and_purge, only_get_and_purge)
    );
}

#[tokio::test]
async fn known_methods_variable_skips_malformed_entries_and_ignores_a_value_without_valid_ones() {
    let only_purge = [AS_OTHER, AS_OTHER, AS_PURGE];
    assert_eq!(
        method_labels(&[(KNOWN_METHODS, "GE T,PURGE,,(x)")], |s| s, |c| c).await,
        labels(only_purge, only_purge)
    );
    assert_eq!(
        method_labels(&[(KNOWN_METHODS, "GE T, ,")], |s| s, |c| c).await,
        labels(DEFAULT, DEFAULT)
    );
}

#[tokio::test]
async fn known_methods_option_wins_over_the_variable() {
    assert_eq!(
        method_labels(
            &[(KNOWN_METHODS, "GET,PURGE")],
            |s| s.known_methods(["GET", "POST"]),
            |c| c.known_methods(["PURGE"]),
        )
        .await,
        labels([AS_GET, AS_POST, AS_OTHER], [AS_OTHER, AS_OTHER, AS_PURGE])
    );
}

/// GETs `path` from `addr` with `x-tenant: acme`.
async fn send_tenant(addr: SocketAddr, path: &str) {
    let mut req = get(addr, path);
    req.headers_mut()
        .insert("x-tenant", HeaderValue::from_static("acme"));
    send(req).await;
}

/// Waits for the one span of `t`, asserts that no other follows and that its `url.path`
/// is `path`, and returns it.
async fn only_span(t: &Telemetry, path: &str) -> SpanData {
    t.wait_spans(1).await;
    let mut spans = t.settle_spans(1).await;
    assert_eq!(attr(&spans[0].attributes, "url.path"), Some(s(path)));
    spans.remove(0)
}

#[tokio::test]
#[allow(clippy::await_holding_lock)] // the lock is this file's own, held on purpose
async fn variables_are_read_when_the_layer_is_built_not_per_request() {
    let (before_t, after_t) = (Telemetry::new(), Telemetry::new());
    let env = [(SERVER_REQUEST, "x-tenant"), (EXCLUDED, "/excluded")];
    let before = with_env(&[], || before_t.server().build());
    let (before_addr, after_addr);
    {
        let _env = EnvGuard::set(&env);
        let after = after_t.server().build();
        before_addr = serve_app(before).await;
        after_addr = serve_app(after).await;
        // The variables are set while these requests run.
        for addr in [before_addr, after_addr] {
            send_tenant(addr, "/excluded").await;
        }
    }
    // And unset while this one runs.
    send_tenant(after_addr, "/recorded").await;

    let before_span = only_span(&before_t, "/excluded").await;
    assert_eq!(captured(&before_span), vec![]);
    let after_span = only_span(&after_t, "/recorded").await;
    assert_eq!(
        captured(&after_span),
        headers(&[("http.request.header.x-tenant", &["acme"])])
    );
}

/// Run by [`malformed_variables_are_reported_once_on_stderr`] in a child process with
/// malformed variables: builds each layer twice.
#[test]
#[ignore = "run in a child process by malformed_variables_are_reported_once_on_stderr"]
fn child_builds_each_layer_twice() {
    for _ in 0..2 {
        let _ = OtelLayer::builder().build();
        let _ = OtelClientLayer::builder().build();
    }
}

#[test]
fn malformed_variables_are_reported_once_on_stderr() {
    // (variable, value, the malformed entry the report names)
    let malformed = [
        (SERVER_REQUEST, "bad name,x-ok", "\"bad name\""),
        (SERVER_RESPONSE, "bad name", "\"bad name\""),
        (CLIENT_REQUEST, "x-ok, (x)", "\"(x)\""),
        (CLIENT_RESPONSE, "x y", "\"x y\""),
        (EXCLUDED, "health,/ok", "\"health\""),
        (KNOWN_METHODS, "GE T,GET", "\"GE T\""),
    ];
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args([
        "child_builds_each_layer_twice",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for name in ALL_VARS {
        child.env_remove(name);
    }
    for (name, value, _) in malformed {
        child.env(name, value);
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt as _;
        child.env(SANITIZE, std::ffi::OsStr::from_bytes(b"x-\xff"));
    }
    let out = child.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");

    let lines_naming = |name: &str| -> Vec<&str> {
        stderr
            .lines()
            .filter(|line| line.contains(&format!("{name}:")) || line.contains(&format!("{name} ")))
            .collect()
    };
    for (name, _, bad) in malformed {
        let lines = lines_naming(name);
        assert_eq!(lines.len(), 1, "{name} reported once: {stderr}");
        assert!(
            lines[0].starts_with("tower-otel-http: ") && lines[0].contains(bad),
            "{name}: {bad} not in {}",
            lines[0]
        );
    }
    #[cfg(unix)]
    assert_eq!(
        lines_naming(SANITIZE),
        [format!(
            "tower-otel-http: {SANITIZE} is not valid Unicode; it is ignored"
        )],
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Credential headers are redacted, whoever asked for them.

fn assert_credentials_redacted(x: &Exchange) {
    assert_captured(
        x,
        &[
            ("http.request.header.authorization", REDACTED_ONCE),
            ("http.request.header.cookie", REDACTED_TWICE),
            ("http.request.header.x-request-id", &["req-1"]),
            ("http.response.header.set-cookie", REDACTED_TWICE),
            ("http.response.header.x-served-by", &["s1"]),
        ],
        &[
            ("http.request.header.authorization", REDACTED_ONCE),
            ("http.request.header.x-request-id", &["req-1"]),
            ("http.response.header.set-cookie", REDACTED_TWICE),
            ("http.response.header.x-request-id", &["resp-1"]),
        ],
    );
    assert_headers_went_through(x);
}

#[tokio::test]
async fn credential_headers_captured_by_the_builder_are_redacted_on_both_sides() {
    let x = exchange(
        &[],
        |s| {
            s.request_headers(["Authorization", "cookie", "x-request-id"])
                .response_headers(["Set-Cookie", "x-served-by"])
        },
        |c| {
            c.request_headers(["authorization", "x-request-id"])
                .response_headers(["set-cookie", "x-request-id"])
        },
    )
    .await;
    assert_credentials_redacted(&x);
}

#[tokio::test]
async fn credential_headers_captured_by_the_environment_are_redacted_on_both_sides() {
    let x = exchange(
        &[
            (SERVER_REQUEST, "authorization,Cookie,x-request-id"),
            (SERVER_RESPONSE, "set-cookie,x-served-by"),
            (CLIENT_REQUEST, "authorization,x-request-id"),
            (CLIENT_RESPONSE, "set-cookie,x-request-id"),
        ],
        |s| s,
        |c| c,
    )
    .await;
    assert_credentials_redacted(&x);
}

#[tokio::test]
async fn sensitive_headers_replaces_the_default_list_on_both_sides() {
    let x = exchange(
        &[],
        |s| {
            s.request_headers(["authorization", "cookie", "x-request-id"])
                .response_headers(["set-cookie"])
                .sensitive_headers(["x-request-id"])
        },
        |c| {
            c.request_headers(["authorization", "x-request-id"])
                .response_headers(["set-cookie", "x-request-id"])
                .sensitive_headers(["X-Request-Id"])
        },
    )
    .await;
    assert_captured(
        &x,
        &[
            ("http.request.header.authorization", BEARER),
            ("http.request.header.cookie", COOKIES),
            ("http.request.header.x-request-id", REDACTED_ONCE),
            ("http.response.header.set-cookie", SET_COOKIES),
        ],
        CLIENT_ONLY_REQUEST_ID_REDACTED,
    );
}

#[tokio::test]
async fn every_default_sensitive_header_is_redacted() {
    let credentials = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "x-auth-token",
        "x-csrf-token",
    ];
    let t = Telemetry::new();
    let addr = serve_configured(&t, |s| {
        s.request_headers(credentials.iter().chain(&["x-tenant"]))
            .response_headers(["set-cookie"])
    })
    .await;
    let mut req = get(addr, "/");
    for name in credentials.iter().chain(&["x-tenant"]) {
        req.headers_mut()
            .insert(*name, HeaderValue::from_static("value"));
    }
    send(req).await;

    let spans = t.wait_spans(1).await;
    let mut expected: Vec<(String, Value)> = credentials
        .iter()
        .map(|name| {
            (
                format!("http.request.header.{name}"),
                strings(REDACTED_ONCE),
            )
        })
        .collect();
    expected.push(("http.request.header.x-tenant".into(), strings(&["value"])));
    expected.push((
        "http.response.header.set-cookie".into(),
        strings(REDACTED_TWICE),
    ));
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(captured(&spans[0]), expected);
}

// ---------------------------------------------------------------------------------------
// 4. `traces(bool)` and `metrics(bool)`, and the deprecated `without_*`.

/// Sends one GET through `client` to a server behind `server`, reading the whole body.
async fn round_trip(server: OtelLayer, client: OtelClientLayer) {
    let addr = serve_app(server).await;
    send_through(&client, get(addr, "/one")).await;
}

/// A new [`Telemetry`], after a [`round_trip`] through its layers configured by `server`
/// and `client` (no variable set).
async fn round_trip_with(
    server: impl FnOnce(OtelLayerBuilder) -> OtelLayerBuilder,
    client: impl FnOnce(OtelClientLayerBuilder) -> OtelClientLayerBuilder,
) -> Telemetry {
    let t = Telemetry::new();
    let (server, client) = layers(&t, &[], server, client);
    round_trip(server, client).await;
    t
}

fn duration_count(t: &Telemetry, name: &str) -> u64 {
    t.f64_histogram(name).iter().map(|p| p.count()).sum()
}

/// No span from either side, one duration measurement from each.
async fn assert_metrics_only(t: &Telemetry) {
    t.settle_spans(0).await;
    assert_eq!(duration_count(t, SERVER_DURATION), 1);
    assert_eq!(duration_count(t, CLIENT_DURATION), 1);
}

/// One span from each side, no metric at all.
async fn assert_spans_only(t: &Telemetry) {
    let spans = t.wait_spans(2).await;
    assert_eq!(spans_named(&spans, "GET").len(), 2);
    assert_eq!(client_spans(&spans).len(), 1);
    assert_eq!(t.metric_names(), Vec::<String>::new());
}

#[tokio::test]
async fn traces_false_makes_no_spans_and_still_records_metrics() {
    let t = round_trip_with(|s| s.traces(false), |c| c.traces(false)).await;
    assert_metrics_only(&t).await;
}

#[tokio::test]
async fn metrics_false_records_no_metrics_and_still_makes_spans() {
    let t = round_trip_with(|s| s.metrics(false), |c| c.metrics(false)).await;
    assert_spans_only(&t).await;
}

#[tokio::test]
#[allow(deprecated)]
async fn deprecated_without_traces_and_without_metrics_behave_as_before() {
    let t = round_trip_with(|s| s.without_traces(), |c| c.without_traces()).await;
    assert_metrics_only(&t).await;
    let t = round_trip_with(|s| s.without_metrics(), |c| c.without_metrics()).await;
    assert_spans_only(&t).await;
}

// ---------------------------------------------------------------------------------------
// 5. `filter` is given the request's `Parts`.

#[tokio::test]
async fn filter_on_the_request_parts_excludes_health_checks() {
    let t = Telemetry::new();
    let addr = serve_configured(&t, |s| s.filter(|parts| parts.uri.path() != "/health")).await;
    for path in ["/health", "/api", "/health?deep=1"] {
        let (parts, _) = send(get(addr, path)).await;
        assert_eq!(parts.status, 200);
    }

    only_span(&t, "/api").await;
    assert_eq!(duration_count(&t, SERVER_DURATION), 1);
}

#[tokio::test]
async fn excluded_paths_are_applied_before_the_filter() {
    let t = Telemetry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let addr = serve_configured(&t, |s| {
        s.excluded_paths(["/excluded"]).filter(move |parts| {
            seen.fetch_add(1, Ordering::SeqCst);
            parts.method != http::Method::POST && !parts.headers.contains_key("x-no-trace")
        })
    })
    .await;
    send(get(addr, "/excluded")).await;
    let mut quiet = get(addr, "/quiet");
    quiet
        .headers_mut()
        .insert("x-no-trace", HeaderValue::from_static("1"));
    send(quiet).await;
    let mut post = get(addr, "/post");
    *post.method_mut() = http::Method::POST;
    send(post).await;
    send(get(addr, "/kept")).await;

    only_span(&t, "/kept").await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "not called for /excluded");
    assert_eq!(duration_count(&t, SERVER_DURATION), 1);
}

#[tokio::test]
async fn traces_and_metrics_switches_are_independent_of_the_providers_and_of_the_order() {
    // Turned off, then on again: the explicit providers are kept.
    let t = round_trip_with(
        |s| s.traces(false).traces(true),
        |c| c.metrics(false).metrics(true),
    )
    .await;
    let spans = t.wait_spans(2).await;
    assert_eq!(spans.len(), 2);
    assert_eq!(duration_count(&t, SERVER_DURATION), 1);
    assert_eq!(duration_count(&t, CLIENT_DURATION), 1);

    // Off before the provider is given: still off.
    let t = Telemetry::new();
    let (server, client) = with_env(&[], || {
        (
            OtelLayer::builder()
                .metrics(false)
                .meter_provider(&t.meter_provider)
                .tracer_provider(&t.tracer_provider)
                .build(),
            OtelClientLayer::builder()
                .traces(false)
                .tracer_provider(&t.tracer_provider)
                .meter_provider(&t.meter_provider)
                .build(),
        )
    });
    round_trip(server, client).await;
    let spans = t.wait_spans(1).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].span_kind, SpanKind::Server);
    assert_eq!(duration_count(&t, SERVER_DURATION), 0);
    assert_eq!(duration_count(&t, CLIENT_DURATION), 1);
}

#[test]
fn a_misconfiguration_panics_at_the_callers_build_call() {
    type Seen = Arc<Mutex<Option<(String, u32)>>>;
    let seen: Seen = Arc::default();
    let hook_seen = seen.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Other tests of this binary panic on purpose too: keep only this one's.
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        if message.contains("x location probe") {
            *hook_seen.lock().unwrap() = info.location().map(|l| (l.file().to_owned(), l.line()));
        }
    }));
    // The panic points at the `build()` call, between these two lines (not into the
    // crate's sources).
    let start = line!();
    let server = std::panic::catch_unwind(|| {
        OtelLayer::builder()
            .request_headers(["x location probe"])
            .build()
    });
    let server_seen = seen.lock().unwrap().take();
    let client = std::panic::catch_unwind(|| {
        OtelClientLayer::builder()
            .response_headers(["x location probe"])
            .build()
    });
    let end = line!();
    let client_seen = seen.lock().unwrap().take();
    std::panic::set_hook(previous);
    assert!(server.is_err() && client.is_err());
    assert_ne!(server_seen, client_seen);
    for seen in [server_seen, client_seen] {
        let (file, line) = seen.expect("the panic was seen");
        assert_eq!(file, file!());
        assert!(
            (start..=end).contains(&line),
            "{line} not in {start}..={end}"
        );
    }
}

#[test]
#[should_panic(expected = "the `record_exception` option is on, but the layer makes no spans")]
fn record_exception_needs_spans() {
    let _ = OtelClientLayer::builder()
        .traces(false)
        .record_exception(true)
        .build();
}

#[test]
#[should_panic(expected = "the `target` option is empty")]
fn an_empty_target_panics() {
    let _ = OtelClientLayer::builder().target("  ").build();
}
