//! Hostile and broken input never harms the request: property tests over arbitrary
//! methods, URIs, header names and values (non-UTF-8, long, many, duplicated trace and
//! host headers) through the server and client layers, and a cardinality test.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use opentelemetry::Value;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_otel_http::OtelClientLayer;

/// What the inner service received: method, URI, headers (as they came).
type Seen = Arc<Mutex<Option<(Method, Uri, HeaderMap)>>>;

fn recording_inner(
    seen: Seen,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let seen = seen.clone();
        async move {
            *seen.lock().unwrap() = Some((
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            ));
            let mut res = Response::new(Full::new(Bytes::from_static(b"response body \xff bytes")));
            res.headers_mut()
                .insert("x-out", HeaderValue::from_bytes(b"v\xfe").unwrap());
            Ok::<_, Infallible>(res)
        }
    })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::from_bytes(b"get").unwrap()),
        "[A-Za-z!#$%&'*+.^_`|~-]{1,40}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

fn uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        "/[a-zA-Z0-9/._~%-]{0,200}(\\?[a-zA-Z0-9=&%._-]{0,200})?",
        "https?://[a-z0-9.-]{1,40}(:[0-9]{1,5})?/[a-z0-9/]{0,50}(\\?[a-z=&]{0,50})?",
        Just("*".to_owned()),
    ]
    .prop_filter_map("valid uri", |s| s.parse::<Uri>().ok())
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        // Any bytes a header value may hold (no CR/LF/NUL), non-UTF-8 included.
        proptest::collection::vec(
            any::<u8>().prop_filter("field byte", |b| *b != b'\r'
                && *b != b'\n'
                && *b != 0
                && *b != 0x7f
                && (*b >= 0x20 || *b == b'\t')),
            0..300
        ),
        // Long values.
        (1usize..65536).prop_map(|n| vec![b'a'; n]),
        // Things that look like trace headers.
        Just(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
        Just(b"00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01".to_vec()),
        Just(b"for=\"[::1]:80\";proto=https;host=evil".to_vec()),
    ]
    .prop_filter_map("valid value", |b| HeaderValue::from_bytes(&b).ok())
}

fn headers() -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
    let name = prop_oneof![
        Just(HeaderName::from_static("traceparent")),
        Just(HeaderName::from_static("tracestate")),
        Just(HeaderName::from_static("host")),
        Just(HeaderName::from_static("forwarded")),
        Just(HeaderName::from_static("x-forwarded-for")),
        Just(HeaderName::from_static("x-forwarded-host")),
        Just(HeaderName::from_static("x-forwarded-proto")),
        Just(HeaderName::from_static("user-agent")),
        Just(HeaderName::from_static("baggage")),
        "[a-z0-9-]{1,30}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap()),
    ];
    proptest::collection::vec((name, header_value()), 0..60)
}

fn build(
    method: &Method,
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(uri.clone())
        .body(Full::new(Bytes::from_static(b"req")))
        .unwrap();
    for (n, v) in headers {
        req.headers_mut().append(n.clone(), v.clone());
    }
    req
}

/// Every string attribute value is bounded (2 KiB, plus the few characters a
/// redaction or a URL prefix adds).
fn assert_bounded(t: &Telemetry) {
    for span in t.finished_spans() {
        for kv in &span.attributes {
            let len = match &kv.value {
                Value::String(s) => s.as_str().len(),
                Value::Array(opentelemetry::Array::String(v)) => {
                    v.iter().map(|s| s.as_str().len()).max().unwrap_or(0)
                }
                _ => 0,
            };
            assert!(len <= 2048 + 64, "{} is {len} bytes", kv.key);
        }
        assert!(span.name.len() <= 2048 + 64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn server_passes_anything_through_unchanged(m in method(), u in uri(), h in headers()) {
        let t = Telemetry::new();
        let seen: Seen = Arc::default();
        let svc = ServiceBuilder::new()
            .layer(t.server().trust_forwarded_headers(true).request_headers(["x-a", "user-agent"]).response_headers(["x-out"]).active_requests(true).build())
            .service(recording_inner(seen.clone()));
        let req = build(&m, &u, &h);
        let expected_headers = req.headers().clone();
        let res = svc.oneshot(req).now_or_never().unwrap().unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().now_or_never().unwrap().unwrap().to_bytes();
        prop_assert_eq!(&body[..], &b"response body \xff bytes"[..]);
        prop_assert_eq!(parts.headers.get("x-out").unwrap().as_bytes(), b"v\xfe");
        let (sm, su, sh) = seen.lock().unwrap().take().unwrap();
        prop_assert_eq!(sm, m);
        prop_assert_eq!(su, u);
        prop_assert_eq!(sh, expected_headers, "the server layer never touches request headers");

        let spans = t.finished_spans();
        prop_assert_eq!(spans.len(), 1);
        let method = attr(&spans[0].attributes, "http.request.method").unwrap();
        let method = method.as_str();
        prop_assert!(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "QUERY", "_OTHER"].contains(&method.as_ref()));
        assert_bounded(&t);
        let active = t.i64_sum("http.server.active_requests");
        prop_assert!(active.iter().all(|p| p.value() == 0));
    }

    #[test]
    fn client_injects_exactly_one_traceparent_and_leaves_the_rest(m in method(), h in headers(), port in 1u16..) {
        let t = Telemetry::new();
        let seen: Seen = Arc::default();
        let svc = ServiceBuilder::new()
            .layer(OtelClientLayer::builder().tracer_provider(&t.tracer_provider).meter_provider(&t.meter_provider).build())
            .service(recording_inner(seen.clone()));
        let uri: Uri = format!("http://user:pw@api.local:{port}/p?sig=s&x=1").parse().unwrap();
        let req = build(&m, &uri, &h);
        let before = req.headers().clone();
        let res = svc.oneshot(req).now_or_never().unwrap().unwrap();
        drop(res);
        let (_, su, sh) = seen.lock().unwrap().take().unwrap();
        prop_assert_eq!(su, uri);
        prop_assert_eq!(sh.get_all("traceparent").iter().count(), 1);
        for (name, _) in &before {
            if name != "traceparent" && name != "tracestate" {
                let a: Vec<_> = before.get_all(name).iter().collect();
                let b: Vec<_> = sh.get_all(name).iter().collect();
                prop_assert_eq!(a, b);
            }
        }
        let spans = t.finished_spans();
        prop_assert_eq!(spans.len(), 1);
        let full = attr(&spans[0].attributes, "url.full").unwrap();
        prop_assert!(!full.as_str().contains("pw"), "{}", full);
        prop_assert!(full.as_str().contains("sig=REDACTED"), "{}", full);
        assert_bounded(&t);
    }
}

/// 10 000 requests with random methods, paths, hosts and query strings produce a small,
/// fixed number of metric series.
#[test]
fn ten_thousand_random_requests_make_few_series() {
    let t = Telemetry::new();
    let svc = ServiceBuilder::new()
        .layer(t.server().active_requests(true).build())
        .service(recording_inner(Arc::default()));
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (
        method(),
        "/[a-z0-9]{1,12}/[0-9]{1,6}",
        "[a-z]{1,10}\\.example",
        "[a-z]=[0-9]{1,8}",
    );
    for _ in 0..10_000 {
        let (m, path, host, query) = strategy.new_tree(&mut runner).unwrap().current();
        let req = Request::builder()
            .method(m)
            .uri(format!("{path}?{query}"))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = svc.clone().oneshot(req).now_or_never().unwrap().unwrap();
        drop(res.into_body().collect().now_or_never().unwrap().unwrap());
    }
    let points = t.f64_histogram("http.server.request.duration");
    let total: u64 = points.iter().map(|p| p.count()).sum();
    assert_eq!(total, 10_000);
    // Method (GET, POST, _OTHER) x scheme x status x version: at most 3 series.
    let series: HashSet<_> = points.iter().map(|p| attr_set(p.attributes())).collect();
    assert!(series.len() <= 3, "{} series: {series:#?}", series.len());
    for p in &points {
        let keys: Vec<_> = p
            .attributes()
            .map(|kv| kv.key.as_str().to_owned())
            .collect();
        for banned in [
            "url.path",
            "url.query",
            "server.address",
            "client.address",
            "user_agent.original",
        ] {
            assert!(!keys.iter().any(|k| k == banned), "{banned} on a metric");
        }
    }
    let active = t.i64_sum("http.server.active_requests");
    assert!(active.len() <= 3 && active.iter().all(|p| p.value() == 0));
}

/// Thousands of headers, duplicated trace and host headers, a 1 MiB tracestate: the
/// request passes, the trace restarts (duplicated `traceparent`), nothing panics.
#[test]
fn thousands_of_headers_and_a_huge_tracestate() {
    let t = Telemetry::new();
    let seen: Seen = Arc::default();
    let svc = ServiceBuilder::new()
        .layer(t.server().trust_forwarded_headers(true).build())
        .service(recording_inner(seen.clone()));
    let mut req = Request::get("/x").body(Full::new(Bytes::new())).unwrap();
    let h = req.headers_mut();
    for i in 0..3000 {
        h.append(
            HeaderName::from_bytes(format!("x-h{}", i % 500).as_bytes()).unwrap(),
            HeaderValue::from_str(&i.to_string()).unwrap(),
        );
    }
    for _ in 0..1000 {
        h.append(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        h.append("host", HeaderValue::from_static("a.example"));
        h.append("forwarded", HeaderValue::from_static("for=1.2.3.4"));
    }
    h.append(
        "tracestate",
        HeaderValue::from_bytes(&vec![b'a'; 1 << 20]).unwrap(),
    );
    let expected = req.headers().clone();
    let res = svc.oneshot(req).now_or_never().unwrap().unwrap();
    drop(res);
    assert_eq!(seen.lock().unwrap().take().unwrap().2, expected);
    let spans = t.finished_spans();
    assert_eq!(spans.len(), 1);
    assert_ne!(
        spans[0].span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c",
        "a duplicated traceparent restarts the trace"
    );
    assert_eq!(
        attr(&spans[0].attributes, "server.address"),
        Some(Value::from("a.example"))
    );
    assert_bounded(&t);
}
