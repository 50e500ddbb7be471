//! W3C Trace Context conformance and property tests of
//! `tower_otel_http::propagation`.
//!
//! The `w3c_*` modules port the public W3C conformance suite
//! (`w3c/trace-context`, `test/test.py`, Level 2: 41 test methods), one Rust
//! test per Python test method, with the same name. Each case plays the
//! suite's test service: it extracts the harness's headers, starts a server
//! span and a client span with the OpenTelemetry SDK (default sampler), and
//! injects the client span's context into the callback to the harness; the
//! assertions are the suite's, on the headers of that callback, read with a
//! port of the harness's own parsers.

use http::{header::HeaderName, HeaderMap, HeaderValue};
use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
        TracerProvider,
    },
    Context,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower_otel_http::propagation::{HeaderExtractor, HeaderInjector, TraceContextPropagator};

/// The harness's view of a test service's callback.
mod harness {
    use super::*;

    /// What the service sent downstream.
    #[derive(Debug)]
    pub(crate) struct Callback {
        pub(crate) traceparent: Traceparent,
        pub(crate) tracestate: Tracestate,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Traceparent {
        pub(crate) trace_id: String,
        pub(crate) parent_id: String,
        pub(crate) trace_flags: u8,
    }

    /// Ordered `key=value` pairs, as the harness's `Tracestate` holds them;
    /// the suite's `assertRaises(KeyError, …)` is `get(key) == None` here.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub(crate) struct Tracestate(pub(crate) Vec<(String, String)>);

    impl Tracestate {
        pub(crate) fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }

        pub(crate) fn len(&self) -> usize {
            self.0.len()
        }
    }

    impl std::fmt::Display for Tracestate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for (i, (k, v)) in self.0.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                write!(f, "{sep}{k}={v}")?;
            }
            Ok(())
        }
    }

    fn is_lower_hex(s: &str, len: usize) -> bool {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// `Traceparent.from_string` with the checks of the harness's
    /// `Traceparent` class: exactly four fields, version `00`, non-zero ids.
    fn parse_traceparent(value: &str) -> Traceparent {
        let fields: Vec<&str> = value.split('-').collect();
        assert_eq!(fields.len(), 4, "traceparent {value:?}: expected 4 fields");
        assert_eq!(
            fields[0], "00",
            "traceparent {value:?}: unsupported version"
        );
        assert!(
            is_lower_hex(fields[1], 32),
            "traceparent {value:?}: trace_id"
        );
        assert!(
            is_lower_hex(fields[2], 16),
            "traceparent {value:?}: parent_id"
        );
        assert!(
            is_lower_hex(fields[3], 2),
            "traceparent {value:?}: trace_flags"
        );
        assert_ne!(
            fields[1],
            "0".repeat(32),
            "all zero trace_id is not allowed"
        );
        assert_ne!(
            fields[2],
            "0".repeat(16),
            "all zero parent_id is not allowed"
        );
        Traceparent {
            trace_id: fields[1].to_owned(),
            parent_id: fields[2].to_owned(),
            trace_flags: u8::from_str_radix(fields[3], 16).unwrap(),
        }
    }

    fn is_key(key: &str) -> bool {
        // Level 2: (lcalpha / DIGIT) 0*255(lcalpha / DIGIT / _ - * / @)
        let b = key.as_bytes();
        !b.is_empty()
            && b.len() <= 256
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/@".contains(&c))
    }

    fn is_value(value: &str) -> bool {
        let chr = |c: u8| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=';
        let b = value.as_bytes();
        !b.is_empty() && b.len() <= 256 && b.iter().all(|&c| chr(c)) && b[b.len() - 1] != b' '
    }

    /// `Tracestate.from_string`: raises (here: panics) on an illegal member or
    /// a conflicting key.
    fn parse_tracestate_into(state: &mut Tracestate, value: &str) {
        let pieces: Vec<&str> = value.split(',').collect();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            // re.split('[ \t]*,[ \t]*') only eats OWS next to a comma.
            let mut member = *piece;
            if i > 0 {
                member = member.trim_start_matches([' ', '\t']);
            }
            if i < last {
                member = member.trim_end_matches([' ', '\t']);
            }
            if member.is_empty() {
                continue;
            }
            let (key, value) = member
                .split_once('=')
                .unwrap_or_else(|| panic!("illegal key-value format {member:?}"));
            assert!(
                is_key(key) && is_value(value),
                "illegal key-value format {member:?}"
            );
            assert!(state.get(key).is_none(), "conflict key {key:?}");
            state.0.push((key.to_owned(), value.to_owned()));
        }
    }

    pub(crate) fn read(headers: &HeaderMap) -> Callback {
        let traceparents: Vec<&HeaderValue> = headers.get_all("traceparent").iter().collect();
        assert_eq!(
            traceparents.len(),
            1,
            "expect one traceparent header, got {traceparents:?}"
        );
        let traceparent = parse_traceparent(traceparents[0].to_str().unwrap());
        let mut tracestate = Tracestate::default();
        for value in headers.get_all("tracestate") {
            parse_tracestate_into(&mut tracestate, value.to_str().unwrap());
        }
        // The service must send lowercase names: `HeaderMap` only holds those.
        Callback {
            traceparent,
            tracestate,
        }
    }
}

/// The test service: extracts, runs a server span, makes `count` outgoing
/// calls each in its own client span, and returns what each call carried.
fn make_request(headers: &[[&str; 2]], count: usize) -> Vec<harness::Callback> {
    let mut incoming = HeaderMap::new();
    for [name, value] in headers {
        incoming.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }

    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("w3c-test-service");
    let propagator = TraceContextPropagator::new();

    let parent_cx = propagator.extract_with_context(&Context::new(), &HeaderExtractor(&incoming));
    let server_cx = parent_cx.with_span(tracer.start_with_context("server", &parent_cx));
    (0..count)
        .map(|_| {
            let client_cx = server_cx.with_span(tracer.start_with_context("client", &server_cx));
            let mut outgoing = HeaderMap::new();
            propagator.inject_context(&client_cx, &mut HeaderInjector(&mut outgoing));
            harness::read(&outgoing)
        })
        .collect()
}

fn make_single_request_and_get_tracecontext(
    headers: &[[&str; 2]],
) -> (harness::Traceparent, harness::Tracestate) {
    let callback = make_request(headers, 1).pop().unwrap();
    (callback.traceparent, callback.tracestate)
}

const TRACE_ID: &str = "12345678901234567890123456789012";
const PARENT_ID: &str = "1234567890123456";
const TP_00: &str = "00-12345678901234567890123456789012-1234567890123456-00";
const TP_01: &str = "00-12345678901234567890123456789012-1234567890123456-01";

/// Asserts the service continued the trace (`assertEqual(trace_id, …)`).
fn assert_continued(headers: &[[&str; 2]]) -> harness::Tracestate {
    let (traceparent, tracestate) = make_single_request_and_get_tracecontext(headers);
    assert_eq!(traceparent.trace_id, TRACE_ID, "{headers:?}");
    assert_ne!(traceparent.parent_id, PARENT_ID, "{headers:?}");
    tracestate
}

/// Asserts the service restarted the trace (`assertNotEqual(trace_id, …)`).
fn assert_restarted(headers: &[[&str; 2]], not: &[&str]) {
    let (traceparent, tracestate) = make_single_request_and_get_tracecontext(headers);
    for trace_id in not {
        assert_ne!(traceparent.trace_id, *trace_id, "{headers:?}");
    }
    assert_eq!(
        tracestate.len(),
        0,
        "{headers:?}: a restart sends no tracestate"
    );
}

#[allow(non_snake_case)]
mod w3c_TraceContextTest {
    use super::*;

    #[test]
    fn test_both_traceparent_and_tracestate_missing() {
        let (_, tracestate) = make_single_request_and_get_tracecontext(&[]);
        assert_eq!(tracestate.len(), 0);
    }

    #[test]
    fn test_traceparent_included_tracestate_missing() {
        assert_continued(&[["traceparent", TP_01]]);
    }

    #[test]
    fn test_traceparent_duplicated() {
        assert_restarted(
            &[
                [
                    "traceparent",
                    "00-12345678901234567890123456789011-1234567890123456-01",
                ],
                [
                    "traceparent",
                    "00-12345678901234567890123456789012-1234567890123456-01",
                ],
            ],
            &["12345678901234567890123456789011", TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_header_name() {
        assert_restarted(&[["trace-parent", TP_01]], &[TRACE_ID]);
        assert_restarted(&[["trace.parent", TP_01]], &[TRACE_ID]);
    }

    #[test]
    fn test_traceparent_header_name_valid_casing() {
        for name in ["TraceParent", "TrAcEpArEnT", "TRACEPARENT"] {
            assert_continued(&[[name, TP_01]]);
        }
    }

    #[test]
    fn test_traceparent_version_0x00() {
        for value in [
            "00-12345678901234567890123456789012-1234567890123456-01.",
            "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
        ] {
            assert_restarted(&[["traceparent", value]], &[TRACE_ID]);
        }
    }

    #[test]
    fn test_traceparent_version_0xcc() {
        assert_continued(&[[
            "traceparent",
            "cc-12345678901234567890123456789012-1234567890123456-01",
        ]]);
        assert_continued(&[[
            "traceparent",
            "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
        ]]);
        assert_restarted(
            &[[
                "traceparent",
                "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like",
            ]],
            &[TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_version_0xff() {
        assert_restarted(
            &[[
                "traceparent",
                "ff-12345678901234567890123456789012-1234567890123456-01",
            ]],
            &[TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_version_illegal_characters() {
        for value in [
            ".0-12345678901234567890123456789012-1234567890123456-01",
            "0.-12345678901234567890123456789012-1234567890123456-01",
        ] {
            assert_restarted(&[["traceparent", value]], &[TRACE_ID]);
        }
    }

    #[test]
    fn test_traceparent_version_too_long() {
        for value in [
            "000-12345678901234567890123456789012-1234567890123456-01",
            "0000-12345678901234567890123456789012-1234567890123456-01",
        ] {
            assert_restarted(&[["traceparent", value]], &[TRACE_ID]);
        }
    }

    #[test]
    fn test_traceparent_version_too_short() {
        assert_restarted(
            &[[
                "traceparent",
                "0-12345678901234567890123456789012-1234567890123456-01",
            ]],
            &[TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_trace_id_all_zero() {
        assert_restarted(
            &[[
                "traceparent",
                "00-00000000000000000000000000000000-1234567890123456-01",
            ]],
            &["00000000000000000000000000000000"],
        );
    }

    #[test]
    fn test_traceparent_trace_id_illegal_characters() {
        assert_restarted(
            &[[
                "traceparent",
                "00-.2345678901234567890123456789012-1234567890123456-01",
            ]],
            &[".2345678901234567890123456789012", TRACE_ID],
        );
        assert_restarted(
            &[[
                "traceparent",
                "00-1234567890123456789012345678901.-1234567890123456-01",
            ]],
            &["1234567890123456789012345678901.", TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_trace_id_too_long() {
        assert_restarted(
            &[[
                "traceparent",
                "00-123456789012345678901234567890123-1234567890123456-01",
            ]],
            &[
                "123456789012345678901234567890123",
                TRACE_ID,
                "23456789012345678901234567890123",
            ],
        );
    }

    #[test]
    fn test_traceparent_trace_id_too_short() {
        assert_restarted(
            &[[
                "traceparent",
                "00-1234567890123456789012345678901-1234567890123456-01",
            ]],
            &["1234567890123456789012345678901"],
        );
    }

    #[test]
    fn test_traceparent_parent_id_all_zero() {
        assert_restarted(
            &[[
                "traceparent",
                "00-12345678901234567890123456789012-0000000000000000-01",
            ]],
            &[TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_parent_id_illegal_characters() {
        for value in [
            "00-12345678901234567890123456789012-.234567890123456-01",
            "00-12345678901234567890123456789012-123456789012345.-01",
        ] {
            assert_restarted(&[["traceparent", value]], &[TRACE_ID]);
        }
    }

    #[test]
    fn test_traceparent_parent_id_too_long() {
        assert_restarted(
            &[[
                "traceparent",
                "00-12345678901234567890123456789012-12345678901234567-01",
            ]],
            &[TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_parent_id_too_short() {
        assert_restarted(
            &[[
                "traceparent",
                "00-12345678901234567890123456789012-123456789012345-01",
            ]],
            &[TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_trace_flags_illegal_characters() {
        for value in [
            "00-12345678901234567890123456789012-1234567890123456-.0",
            "00-12345678901234567890123456789012-1234567890123456-0.",
        ] {
            assert_restarted(&[["traceparent", value]], &[TRACE_ID]);
        }
    }

    #[test]
    fn test_traceparent_trace_flags_too_long() {
        assert_restarted(
            &[[
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-001",
            ]],
            &[TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_trace_flags_too_short() {
        assert_restarted(
            &[[
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-1",
            ]],
            &[TRACE_ID],
        );
    }

    #[test]
    fn test_traceparent_ows_handling() {
        for value in [
            " 00-12345678901234567890123456789012-1234567890123456-01",
            "\t00-12345678901234567890123456789012-1234567890123456-01",
            "00-12345678901234567890123456789012-1234567890123456-01 ",
            "00-12345678901234567890123456789012-1234567890123456-01\t",
            "\t 00-12345678901234567890123456789012-1234567890123456-01 \t",
        ] {
            assert_continued(&[["traceparent", value]]);
        }
    }

    #[test]
    fn test_tracestate_included_traceparent_missing() {
        let (_, tracestate1) = make_single_request_and_get_tracecontext(&[["tracestate", "foo=1"]]);
        let (_, tracestate2) =
            make_single_request_and_get_tracecontext(&[["tracestate", "foo=1,bar=2"]]);
        assert_eq!(tracestate1.len(), tracestate2.len());
        assert_eq!(tracestate1.len(), 0);
    }

    #[test]
    fn test_tracestate_included_traceparent_included() {
        let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", "foo=1,bar=2"]]);
        assert_eq!(tracestate.get("foo"), Some("1"));
        assert_eq!(tracestate.get("bar"), Some("2"));
    }

    #[test]
    fn test_tracestate_header_name() {
        for name in ["trace-state", "trace.state"] {
            let tracestate = assert_continued(&[["traceparent", TP_00], [name, "foo=1"]]);
            assert_eq!(tracestate.get("foo"), None);
        }
    }

    #[test]
    fn test_tracestate_header_name_valid_casing() {
        for name in ["TraceState", "TrAcEsTaTe", "TRACESTATE"] {
            let tracestate = assert_continued(&[["traceparent", TP_00], [name, "foo=1"]]);
            assert_eq!(tracestate.get("foo"), Some("1"));
        }
    }

    #[test]
    fn test_tracestate_empty_header() {
        let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", ""]]);
        assert_eq!(tracestate.len(), 0);

        let tracestate = assert_continued(&[
            ["traceparent", TP_00],
            ["tracestate", "foo=1"],
            ["tracestate", ""],
        ]);
        assert_eq!(tracestate.get("foo"), Some("1"));

        let tracestate = assert_continued(&[
            ["traceparent", TP_00],
            ["tracestate", ""],
            ["tracestate", "foo=1"],
        ]);
        assert_eq!(tracestate.get("foo"), Some("1"));
    }

    #[test]
    fn test_tracestate_multiple_headers_different_keys() {
        let tracestate = assert_continued(&[
            ["traceparent", TP_00],
            ["tracestate", "foo=1,bar=2"],
            ["tracestate", "rojo=1,congo=2"],
            ["tracestate", "baz=3"],
        ]);
        let s = tracestate.to_string();
        let at = |member: &str| s.find(member).unwrap_or_else(|| panic!("{member} in {s}"));
        assert!(at("foo=1") < at("bar=2"));
        assert!(at("bar=2") < at("rojo=1"));
        assert!(at("rojo=1") < at("congo=2"));
        assert!(at("congo=2") < at("baz=3"));
    }

    /// Level 2: a duplicated key no longer invalidates the tracestate; the
    /// trace continues and the key survives with one of its values (here: the
    /// first).
    #[test]
    fn test_tracestate_duplicated_keys() {
        let cases: [&[[&str; 2]]; 4] = [
            &[["traceparent", TP_00], ["tracestate", "foo=1,foo=1"]],
            &[["traceparent", TP_00], ["tracestate", "foo=1,foo=2"]],
            &[
                ["traceparent", TP_00],
                ["tracestate", "foo=1"],
                ["tracestate", "foo=1"],
            ],
            &[
                ["traceparent", TP_00],
                ["tracestate", "foo=1"],
                ["tracestate", "foo=2"],
            ],
        ];
        for headers in cases {
            let tracestate = assert_continued(headers);
            assert_eq!(tracestate.get("foo"), Some("1"), "{headers:?}");
            assert_eq!(tracestate.len(), 1, "{headers:?}");
        }
    }

    #[test]
    fn test_tracestate_all_allowed_characters() {
        let key_without_vendor = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let key_with_vendor = format!("{key_without_vendor}@a-z0-9_-*/");
        let value: String = (0x20u8..=0x2b)
            .chain(0x2d..=0x3c)
            .chain(0x3e..=0x7e)
            .map(char::from)
            .collect();
        for key in [key_without_vendor, &key_with_vendor] {
            let member = format!("{key}={value}");
            let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", &member]]);
            assert_eq!(tracestate.get(key), Some(&*value));
        }
    }

    #[test]
    fn test_tracestate_ows_handling() {
        for value in [
            "foo=1 \t , \t bar=2, \t baz=3",
            "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
        ] {
            let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", value]]);
            assert_eq!(tracestate.get("foo"), Some("1"));
            assert_eq!(tracestate.get("bar"), Some("2"));
            assert_eq!(tracestate.get("baz"), Some("3"));
        }
        for value in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
            let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", value]]);
            assert_eq!(tracestate.get("foo"), Some("1"), "{value:?}");
        }
    }

    #[test]
    fn test_tracestate_key_illegal_characters() {
        for (value, key) in [
            ("foo =1", "foo "),
            ("FOO=1", "FOO"),
            ("foo.bar=1", "foo.bar"),
        ] {
            let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", value]]);
            assert_eq!(tracestate.get(key), None);
            assert_eq!(tracestate.len(), 0);
        }
    }

    /// Level 2 grammar (w3c/trace-context#584): `@` is an ordinary key
    /// character except in first position.
    #[test]
    fn test_tracestate_key_illegal_vendor_format() {
        let tracestate =
            assert_continued(&[["traceparent", TP_00], ["tracestate", "@foo=1,bar=2"]]);
        assert_eq!(tracestate.get("bar"), None);

        for (value, key) in [
            ("foo@=1,bar=2", "foo@"),
            ("foo@@bar=1,bar=2", "foo@@bar"),
            ("foo@bar@baz=1,bar=2", "foo@bar@baz"),
        ] {
            let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", value]]);
            assert_eq!(tracestate.to_string(), value);
            assert_eq!(tracestate.get(key), Some("1"));
            assert_eq!(tracestate.get("bar"), Some("2"));
        }
    }

    #[test]
    fn test_tracestate_member_count_limit() {
        let first = "bar01=01,bar02=02,bar03=03,bar04=04,bar05=05,bar06=06,bar07=07,bar08=08,bar09=09,bar10=10";
        let second = "bar11=11,bar12=12,bar13=13,bar14=14,bar15=15,bar16=16,bar17=17,bar18=18,bar19=19,bar20=20";
        let third = "bar21=21,bar22=22,bar23=23,bar24=24,bar25=25,bar26=26,bar27=27,bar28=28,bar29=29,bar30=30";

        let tracestate = assert_continued(&[
            ["traceparent", TP_00],
            ["tracestate", first],
            ["tracestate", second],
            ["tracestate", third],
            ["tracestate", "bar31=31,bar32=32"],
        ]);
        assert_eq!(tracestate.get("bar01"), Some("01"));
        assert_eq!(tracestate.len(), 32);

        let tracestate = assert_continued(&[
            ["traceparent", TP_00],
            ["tracestate", first],
            ["tracestate", second],
            ["tracestate", third],
            ["tracestate", "bar31=31,bar32=32,bar33=33"],
        ]);
        assert_eq!(tracestate.get("bar01"), None);
    }

    /// Level 2 grammar (w3c/trace-context#584): only the 256-character limit
    /// of the whole key remains.
    #[test]
    fn test_tracestate_key_length_limit() {
        let key256 = format!("{}=1", "z".repeat(256));
        let key257 = format!("{}=1", "z".repeat(257));
        let tenant241_vendor14 = format!("{}@{}=1", "t".repeat(241), "v".repeat(14));
        let tenant242 = format!("{}@v=1", "t".repeat(242));
        let vendor15 = format!("t@{}=1", "v".repeat(15));

        for (member, kept) in [
            (&key256, true),
            (&key257, false),
            (&tenant241_vendor14, true),
            (&tenant242, true),
            (&vendor15, true),
        ] {
            let tracestate = assert_continued(&[
                ["traceparent", TP_00],
                ["tracestate", "foo=1"],
                ["tracestate", member],
            ]);
            let expected = kept.then_some("1");
            assert_eq!(tracestate.get("foo"), expected, "{member}");
            if kept {
                assert_eq!(tracestate.to_string(), format!("foo=1,{member}"));
            }
        }
    }

    #[test]
    fn test_tracestate_value_illegal_characters() {
        let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", "foo=bar=baz"]]);
        assert_eq!(tracestate.get("foo"), None);

        let tracestate = assert_continued(&[["traceparent", TP_00], ["tracestate", "foo=,bar=3"]]);
        assert_eq!(tracestate.get("foo"), None);
        assert_eq!(tracestate.get("bar"), None);
    }
}

#[allow(non_snake_case)]
mod w3c_AdvancedTest {
    use super::*;
    use std::collections::HashSet;

    fn ids(callbacks: &[harness::Callback]) -> (HashSet<&str>, HashSet<&str>) {
        let trace_ids = callbacks.iter().map(|c| &*c.traceparent.trace_id).collect();
        let parent_ids = callbacks
            .iter()
            .map(|c| &*c.traceparent.parent_id)
            .collect();
        (trace_ids, parent_ids)
    }

    #[test]
    fn test_multiple_requests_with_valid_traceparent() {
        let callbacks = make_request(&[["traceparent", TP_01]], 3);
        let (trace_ids, parent_ids) = ids(&callbacks);
        assert_eq!(trace_ids, HashSet::from([TRACE_ID]));
        assert_eq!(parent_ids.len(), 3);
    }

    #[test]
    fn test_multiple_requests_without_traceparent() {
        let callbacks = make_request(&[], 3);
        let (_, parent_ids) = ids(&callbacks);
        assert_eq!(parent_ids.len(), 3);
    }

    #[test]
    fn test_multiple_requests_with_illegal_traceparent() {
        let callbacks = make_request(
            &[[
                "traceparent",
                "00-00000000000000000000000000000000-1234567890123456-01",
            ]],
            3,
        );
        let (trace_ids, parent_ids) = ids(&callbacks);
        assert!(!trace_ids.contains("00000000000000000000000000000000"));
        assert_eq!(parent_ids.len(), 3);
    }
}

#[allow(non_snake_case)]
mod w3c_TraceContext2Test {
    use super::*;

    /// The random flag survives even though the SDK does not sample the child
    /// spans of an unsampled parent (and resets their flags).
    #[test]
    fn test_propagates_random_flag() {
        let (traceparent, _) = make_single_request_and_get_tracecontext(&[[
            "traceparent",
            "00-12345678901234567890123456789012-1234567890123456-02",
        ]]);
        assert_eq!(traceparent.trace_id, TRACE_ID);
        assert_ne!(traceparent.parent_id, PARENT_ID);
        assert_eq!(traceparent.trace_flags & 0x02, 0x02);
        assert_eq!(traceparent.trace_flags, 0x02);

        // Sampled and random: both kept.
        let (traceparent, _) = make_single_request_and_get_tracecontext(&[[
            "traceparent",
            "00-12345678901234567890123456789012-1234567890123456-03",
        ]]);
        assert_eq!(traceparent.trace_flags, 0x03);

        // Unset stays unset.
        let (traceparent, _) = make_single_request_and_get_tracecontext(&[["traceparent", TP_01]]);
        assert_eq!(traceparent.trace_flags, 0x01);
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::{collection::vec, prelude::*};

    const MAX_LEN: usize = 512;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            ..ProptestConfig::default()
        }
    }

    /// Bytes `HeaderValue` accepts: HTAB, visible ASCII, SP, obs-text.
    fn field_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            8 => 0x20u8..=0x7e,
            1 => Just(b'\t'),
            2 => 0x80u8..=0xff,
        ]
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Header values, from near-valid to garbage.
    fn short_field_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // A valid traceparent with some bytes replaced or appended.
            4 => (vec((0usize..60, field_byte()), 0..4), vec(field_byte(), 0..8)).prop_map(
                |(edits, tail)| {
                    let mut value = VALID.as_bytes().to_vec();
                    for (at, byte) in edits {
                        if at < value.len() {
                            value[at] = byte
                        } else {
                            value.push(byte)
                        }
                    }
                    value.extend(tail);
                    value
                }
            ),
            // Tracestate-like lists.
            4 => vec("[a-z0-9@_*/ \t-]{0,12}(=[ -~]{0,12})?", 0..40)
                .prop_map(|members| members.join(",").into_bytes()),
            4 => vec(field_byte(), 0..80),
        ]
    }

    /// Header values, sometimes very long (up to 1 MiB of one byte).
    fn field_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            12 => short_field_value(),
            1 => (field_byte(), 10_000usize..(1 << 20)).prop_map(|(b, n)| vec![b; n]),
        ]
    }

    fn field_name() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("traceparent"),
            Just("TraceParent"),
            Just("tracestate"),
            Just("TRACESTATE"),
            Just("baggage"),
            Just("x-other"),
        ]
    }

    fn header_map() -> impl Strategy<Value = HeaderMap> {
        prop_oneof![
            4 => vec((field_name(), field_value()), 0..8),
            // Many duplicates.
            1 => (field_name(), short_field_value(), 1usize..2_000)
                .prop_map(|(name, value, n)| vec![(name, value); n]),
        ]
        .prop_map(|fields| {
            let mut map = HeaderMap::new();
            for (name, value) in fields {
                let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
                map.append(name, HeaderValue::from_bytes(&value).unwrap());
            }
            map
        })
    }

    fn extract(map: &HeaderMap) -> Context {
        TraceContextPropagator::new().extract_with_context(&Context::new(), &HeaderExtractor(map))
    }

    fn inject(cx: &Context) -> HeaderMap {
        let mut map = HeaderMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(&mut map));
        map
    }

    /// A key `TraceState` accepts (a subset of the Level 2 grammar).
    fn otel_key() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9_*/-]{0,24}(@[a-z0-9][a-z0-9_*/-]{0,12})?"
    }

    /// Any Level 2 key, `@` anywhere but first.
    fn level2_key() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9_*/@-]{0,24}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{0,24}[\\x21-\\x2b\\x2d-\\x3c\\x3e-\\x7e]"
    }

    /// Distinct keys, at most 32 entries, at most 512 characters.
    fn entries(key: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<(String, String)>> {
        vec((key, value()), 0..=32).prop_map(|entries| {
            let mut out: Vec<(String, String)> = Vec::new();
            let mut len = 0;
            for (k, v) in entries {
                let entry_len = k.len() + 1 + v.len() + usize::from(!out.is_empty());
                if out.iter().any(|(key, _)| *key == k) || len + entry_len > MAX_LEN {
                    continue;
                }
                len += entry_len;
                out.push((k, v));
            }
            out
        })
    }

    fn joined(entries: &[(String, String)]) -> String {
        entries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    proptest! {
        #![proptest_config(config())]

        /// Extraction never panics, and what it yields survives a second
        /// inject/extract unchanged.
        #[test]
        fn extract_never_panics(map in header_map()) {
            let cx = extract(&map);
            let sc = cx.span().span_context().clone();
            if sc.is_valid() {
                prop_assert!(sc.is_remote());
                prop_assert_eq!(sc.trace_flags().to_u8() & !0x03, 0);
                let sent = inject(&cx);
                let tracestate = sent.get("tracestate").map(|v| v.to_str().unwrap().to_owned());
                prop_assert!(tracestate.as_ref().map_or(0, String::len) <= MAX_LEN);
                let again = extract(&sent);
                prop_assert_eq!(again.span().span_context().clone(), sc);
                prop_assert_eq!(inject(&again), sent);
            } else {
                prop_assert!(inject(&cx).is_empty());
            }
        }

        /// inject, then extract, gives back the span context (the flags
        /// reduced to the sampled and random bits).
        #[test]
        fn inject_then_extract_round_trips(
            trace_id in 1u128..,
            span_id in 1u64..,
            flags in any::<u8>(),
            entries in entries(otel_key()),
        ) {
            let trace_state = TraceState::from_key_value(entries.clone()).unwrap();
            let cx = Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(span_id),
                TraceFlags::new(flags),
                false,
                trace_state.clone(),
            ));
            let sent = inject(&cx);
            prop_assert_eq!(
                sent["traceparent"].to_str().unwrap(),
                format!("00-{trace_id:032x}-{span_id:016x}-{:02x}", flags & 0x03)
            );
            let expected = (!entries.is_empty()).then(|| joined(&entries));
            prop_assert_eq!(
                sent.get("tracestate").map(|v| v.to_str().unwrap()),
                expected.as_deref()
            );

            let back = extract(&sent);
            let sc = back.span().span_context().clone();
            prop_assert_eq!(sc.trace_id(), TraceId::from(trace_id));
            prop_assert_eq!(sc.span_id(), SpanId::from(span_id));
            prop_assert_eq!(sc.trace_flags(), TraceFlags::new(flags & 0x03));
            prop_assert_eq!(sc.trace_state(), &trace_state);
            prop_assert!(sc.is_remote());
        }

        /// extract, then inject for a child span, sends the tracestate as
        /// received, whatever its OWS, empty members and split into fields,
        /// including Level 2 keys `TraceState` cannot hold; and keeps the
        /// random flag even if the child span drops every flag.
        #[test]
        fn extract_then_inject_reproduces_tracestate(
            entries in entries(level2_key()),
            ows in vec(("[ \t]{0,2}", "[ \t]{0,2}", 0u8..4), 32),
            random in any::<bool>(),
        ) {
            let mut fields = vec![String::new()];
            for ((k, v), (before, after, split)) in entries.iter().zip(&ows) {
                match split {
                    0 => fields.push(String::new()),
                    1 => fields.last_mut().unwrap().push_str(", ,"),
                    _ => {}
                }
                let field = fields.last_mut().unwrap();
                if !field.is_empty() {
                    field.push(',');
                }
                field.push_str(&format!("{before}{k}={v}{after}"));
            }
            let flags = if random { "02" } else { "00" };
            let traceparent = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
            let mut map = HeaderMap::new();
            map.insert("traceparent", HeaderValue::from_str(&traceparent).unwrap());
            for field in &fields {
                map.append("tracestate", HeaderValue::from_str(field).unwrap());
            }

            let cx = extract(&map);
            let parent = cx.span().span_context().clone();
            // A child span the SDK did not sample: new span id, flags reset.
            let child = cx.with_remote_span_context(SpanContext::new(
                parent.trace_id(),
                SpanId::from(0x0102_0304_0506_0708),
                TraceFlags::default(),
                false,
                parent.trace_state().clone(),
            ));
            let sent = inject(&child);
            prop_assert_eq!(
                sent["traceparent"].to_str().unwrap(),
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-{flags}")
            );
            let expected = (!entries.is_empty()).then(|| joined(&entries));
            prop_assert_eq!(
                sent.get("tracestate").map(|v| v.to_str().unwrap()),
                expected.as_deref()
            );
        }

        /// A tracestate over 512 characters is truncated to whole received
        /// entries, in order, and never to nothing if a short entry fits.
        #[test]
        fn long_tracestate_is_truncated_by_whole_entries(
            entries in vec((otel_key(), "[a-z]{1,200}"), 1..=32),
        ) {
            let mut seen = std::collections::HashSet::new();
            let entries: Vec<(String, String)> =
                entries.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let input = joined(&entries);
            let mut map = HeaderMap::new();
            map.insert("traceparent", HeaderValue::from_static(VALID));
            map.insert("tracestate", HeaderValue::from_str(&input).unwrap());

            let cx = extract(&map);
            let kept: Vec<(String, String)> = cx
                .span()
                .span_context()
                .trace_state()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let output = joined(&kept);
            prop_assert!(output.len() <= MAX_LEN);
            if input.len() <= MAX_LEN {
                prop_assert_eq!(&output, &input);
            }
            // An order-preserving subsequence of the input.
            let mut rest = entries.iter();
            for entry in &kept {
                prop_assert!(rest.any(|e| e == entry));
            }
            // Short entries are only dropped once no long one is left.
            let dropped_short = entries.iter().any(|e| e.0.len() + 1 + e.1.len() <= 128 && !kept.contains(e));
            if dropped_short {
                prop_assert!(kept.iter().all(|e| e.0.len() + 1 + e.1.len() <= 128));
            }
        }
    }
}
