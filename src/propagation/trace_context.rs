use std::sync::OnceLock;

use opentelemetry::{
    propagation::{text_map_propagator::FieldIter, Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context,
};

use super::tracestate::{trim_ows, Entries};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// The same names as header names, so that a `HeaderMap` lookup does not parse them.
pub(crate) static TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
pub(crate) static TRACESTATE_HEADER: http::HeaderName = http::HeaderName::from_static(TRACESTATE);

/// Length of a version-00 `traceparent`, and the minimum length of any version.
const TRACEPARENT_LEN: usize = 55;
/// A `traceparent` field longer than this (before trimming OWS) is rejected
/// without being scanned.
const MAX_TRACEPARENT_LEN: usize = 512;
const INVALID_VERSION: u8 = 0xff;

const FLAG_SAMPLED: u8 = 0x01;
/// Level 2 random-trace-id flag.
const FLAG_RANDOM: u8 = 0x02;
/// Flags this implementation knows; every other bit is zeroed.
const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A strict [W3C Trace Context] (Level 2) propagator for the `traceparent`
/// and `tracestate` headers.
///
/// See the [module documentation](super) for the rules it applies, its limits
/// and how to combine it with a baggage propagator.
///
/// # Example
///
/// ```
/// use http::HeaderMap;
/// use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt, Context};
/// use tower_otel_http::propagation::{HeaderExtractor, HeaderInjector, TraceContextPropagator};
///
/// let propagator = TraceContextPropagator::new();
///
/// let mut incoming = HeaderMap::new();
/// incoming.insert(
///     "traceparent",
///     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap(),
/// );
/// incoming.insert("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7".parse().unwrap());
///
/// let cx = propagator.extract_with_context(&Context::new(), &HeaderExtractor(&incoming));
/// assert!(cx.span().span_context().is_remote());
///
/// let mut outgoing = HeaderMap::new();
/// propagator.inject_context(&cx, &mut HeaderInjector(&mut outgoing));
/// assert_eq!(
///     outgoing["traceparent"],
///     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
/// );
/// assert_eq!(outgoing["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
/// ```
///
/// [W3C Trace Context]: https://www.w3.org/TR/trace-context-2/
#[derive(Clone, Debug, Default)]
pub struct TraceContextPropagator {
    _private: (),
}

impl TraceContextPropagator {
    /// Creates a `TraceContextPropagator`.
    #[must_use]
    pub fn new() -> Self {
        TraceContextPropagator { _private: () }
    }
}

/// What the `SpanContext` of a continued trace cannot carry through the
/// OpenTelemetry SDK, stored in the extracted [`Context`] only when needed.
///
/// It is keyed by trace id: it applies only to spans of the trace it came with.
#[derive(Debug)]
struct IncomingTrace {
    trace_id: TraceId,
    /// The incoming random-trace-id flag, which the SDK clears on spans it
    /// does not sample (`SamplingDecision::Drop` resets all trace flags).
    random: bool,
    /// The received tracestate, when `TraceState` rejects some of its entries.
    exact: Option<ExactTraceState>,
}

#[derive(Debug)]
struct ExactTraceState {
    /// The `TraceState` put in the remote `SpanContext`: the entries below
    /// that `TraceState` accepts.
    lossy: TraceState,
    /// Every entry, validated, deduplicated and truncated: `k=v` joined by `,`.
    header: Box<str>,
}

impl TextMapPropagator for TraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return;
        }
        let incoming = cx
            .get::<IncomingTrace>()
            .filter(|incoming| incoming.trace_id == span_context.trace_id());

        let mut flags = span_context.trace_flags().to_u8() & KNOWN_FLAGS;
        if let Some(incoming) = incoming {
            // Same trace id as the incoming traceparent: copy its random flag.
            flags &= !FLAG_RANDOM;
            if incoming.random {
                flags |= FLAG_RANDOM;
            }
        }
        injector.set(
            TRACEPARENT,
            format_traceparent(span_context.trace_id(), span_context.span_id(), flags),
        );

        let exact = incoming.and_then(|incoming| incoming.exact.as_ref());
        if let Some(header) = tracestate_header(span_context.trace_state(), exact) {
            injector.set(TRACESTATE, header);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let traceparent =
            extractor
                .get_all(TRACEPARENT)
                .and_then(|values| match values.as_slice() {
                    [value] => Some(*value),
                    _ => None,
                });
        extract(cx, traceparent, || extractor.get_all(TRACESTATE))
    }
    fn fields(&self) -> FieldIter<'_> {
        static FIELDS: OnceLock<[String; 2]> = OnceLock::new();
        FieldIter::new(FIELDS.get_or_init(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]))
    }
}

impl TraceContextPropagator {
    /// [`extract_with_context`](TextMapPropagator::extract_with_context) straight from a
    /// header map: the layers' path, which needs no `Vec` for `traceparent` (the
    /// `Extractor` API returns one per header).
    pub(crate) fn extract_from_headers(&self, cx: &Context, headers: &http::HeaderMap) -> Context {
        let mut fields = headers.get_all(&TRACEPARENT_HEADER).iter();
        let traceparent = match (fields.next(), fields.next()) {
            (Some(value), None) => Some(super::header::field_str(value)),
            _ => None,
        };
        extract(cx, traceparent, || {
            let mut values = headers.get_all(&TRACESTATE_HEADER).iter().peekable();
            values.peek()?;
            Some(values.map(super::header::field_str).collect())
        })
    }
}

/// The extraction itself: `traceparent` is the one field (`None` if missing or
/// duplicated); `tracestate` gives every field, read only if `traceparent` is valid.
fn extract<'a>(
    cx: &Context,
    traceparent: Option<&str>,
    tracestate: impl FnOnce() -> Option<Vec<&'a str>>,
) -> Context {
    let Some(parent) = traceparent.and_then(Traceparent::parse) else {
        // Missing, duplicated or invalid: restart, and ignore tracestate.
        return cx.clone();
    };

    let fields = tracestate();
    let entries = fields
        .as_deref()
        .and_then(Entries::parse)
        .unwrap_or_else(Entries::new);
    let (trace_state, complete) = to_trace_state(&entries);
    let exact = (!complete).then(|| ExactTraceState {
        lossy: trace_state.clone(),
        header: entries.to_header().into_boxed_str(),
    });

    let random = parent.flags & FLAG_RANDOM != 0;
    let sampled = parent.flags & FLAG_SAMPLED != 0;
    let span_context = SpanContext::new(
        parent.trace_id,
        parent.span_id,
        TraceFlags::new(parent.flags),
        true,
        trace_state,
    );
    let cx = cx.with_remote_span_context(span_context);

    // A sampled child keeps the random flag (`TraceFlags::with_sampled`),
    // so only an unsampled parent needs the side entry; a stale entry of an
    // earlier extraction is always replaced.
    if (random && !sampled) || exact.is_some() || cx.get::<IncomingTrace>().is_some() {
        cx.with_value(IncomingTrace {
            trace_id: parent.trace_id,
            random,
            exact,
        })
    } else {
        cx
    }
}

/// A valid `traceparent`, with flags reduced to the known bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Traceparent {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) flags: u8,
}

impl Traceparent {
    /// Parses one `traceparent` field value (surrounding OWS allowed).
    ///
    /// Version `00` must be exactly 55 characters. A higher version (but not
    /// `ff`) must be at least 55 characters, its flags followed by the end of
    /// the value or by `-`; what follows is ignored. Only lowercase hex is
    /// accepted, and all-zero trace or parent ids are invalid.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        if value.len() > MAX_TRACEPARENT_LEN {
            return None;
        }
        let bytes = trim_ows(value).as_bytes();
        if bytes.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = decode_hex::<2>(&bytes[0..2])? as u8;
        if version == INVALID_VERSION {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trailing_ok = if version == 0 {
            bytes.len() == TRACEPARENT_LEN
        } else {
            bytes.len() == TRACEPARENT_LEN || bytes[TRACEPARENT_LEN] == b'-'
        };
        if !trailing_ok {
            return None;
        }
        let trace_id_high = decode_hex::<16>(&bytes[3..19])?;
        let trace_id_low = decode_hex::<16>(&bytes[19..35])?;
        let span_id = decode_hex::<16>(&bytes[36..52])?;
        let flags = decode_hex::<2>(&bytes[53..55])? as u8;
        if (trace_id_high | trace_id_low) == 0 || span_id == 0 {
            return None;
        }
        Some(Traceparent {
            trace_id: TraceId::from(u128::from(trace_id_high) << 64 | u128::from(trace_id_low)),
            span_id: SpanId::from(span_id),
            flags: flags & KNOWN_FLAGS,
        })
    }
}

/// The value of each lowercase hex digit; `INVALID_DIGIT` for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID_DIGIT; 256];
    let mut i = 0;
    while i < 16 {
        table[HEX[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const INVALID_DIGIT: u8 = 0xff;

/// Decodes `N` (at most 16) lowercase hex digits; `digits` is exactly `N` long. A fixed
/// count lets the loop unroll.
#[inline]
fn decode_hex<const N: usize>(digits: &[u8]) -> Option<u64> {
    debug_assert!(N <= 16, "a u64 holds 16 hex digits");
    let digits: &[u8; N] = digits.try_into().ok()?;
    let mut value = 0u64;
    // Or-ing every digit's table value finds an invalid one with one test at the end.
    let mut invalid = 0u8;
    for &digit in digits {
        let nibble = HEX_VALUE[usize::from(digit)];
        invalid |= nibble;
        value = value << 4 | u64::from(nibble & 0x0f);
    }
    (invalid & 0xf0 == 0).then_some(value)
}

/// Writes `bytes` as lowercase hex digits into `out` (twice as long).
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, &byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// `00-{trace-id}-{parent-id}-{flags}`.
fn format_traceparent(trace_id: TraceId, span_id: SpanId, flags: u8) -> String {
    let mut out = String::with_capacity(TRACEPARENT_LEN);
    push_traceparent(&mut out, trace_id, span_id, flags);
    out
}

/// Appends a version-00 `traceparent` value to `out`: formatted on the stack, appended
/// at once.
#[inline]
pub(crate) fn push_traceparent(out: &mut String, trace_id: TraceId, span_id: SpanId, flags: u8) {
    let mut value = [b'-'; TRACEPARENT_LEN];
    value[..2].copy_from_slice(b"00");
    hex_into(&mut value[3..35], &trace_id.to_bytes());
    hex_into(&mut value[36..52], &span_id.to_bytes());
    hex_into(&mut value[53..], &[flags]);
    // Only ASCII was written.
    out.push_str(std::str::from_utf8(&value).unwrap_or_default());
}

/// Builds the `TraceState` for parsed entries. The second value is `false`
/// when `TraceState` rejected some entries (its key grammar predates Level 2:
/// one `@` at most, followed by 1 to 14 characters starting with a letter or
/// digit); the returned state then holds the accepted entries only.
fn to_trace_state(entries: &Entries<'_>) -> (TraceState, bool) {
    if entries.is_empty() {
        return (TraceState::NONE, true);
    }
    if let Ok(trace_state) = TraceState::from_key_value(entries.as_slice().iter().copied()) {
        return (trace_state, true);
    }
    // Rare: find the entries `TraceState` accepts, one by one.
    let accepted = entries
        .as_slice()
        .iter()
        .copied()
        .filter(|&(key, value)| TraceState::NONE.insert(key, value).is_ok());
    (
        TraceState::from_key_value(accepted).unwrap_or_default(),
        false,
    )
}

/// The `tracestate` value to send for a span context, or `None` when empty.
fn tracestate_header(trace_state: &TraceState, exact: Option<&ExactTraceState>) -> Option<String> {
    let entries = match exact {
        // Unchanged since extraction: send what was received.
        Some(exact) if exact.lossy == *trace_state => {
            return (!exact.header.is_empty()).then(|| exact.header.to_string());
        }
        // Changed (e.g. a sampler added its own key): new and updated entries
        // first, in their order, then the received entries that are still
        // there unchanged or that `TraceState` could not hold, in their order.
        Some(exact) => {
            let lossy = &exact.lossy;
            let new_or_updated = trace_state
                .into_iter()
                .filter(|&(key, value)| lossy.get(key) != Some(value));
            let kept = exact
                .header
                .split(',')
                .filter_map(|member| member.split_once('='))
                .filter(|&(key, value)| {
                    lossy.get(key).is_none() || trace_state.get(key) == Some(value)
                });
            Entries::for_sending(new_or_updated.chain(kept))
        }
        None => Entries::for_sending(trace_state),
    };
    (!entries.is_empty()).then(|| entries.to_header())
}

#[cfg(test)]
mod header_path_tests {
    use http::{HeaderMap, HeaderValue};
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry::Context;

    use super::TraceContextPropagator;
    use crate::propagation::{HeaderExtractor, HeaderInjector};

    /// What a context sends on: its span context re-injected, as header pairs.
    fn sent(cx: &Context) -> Vec<(String, String)> {
        let mut out = HeaderMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(&mut out));
        let mut pairs: Vec<_> = out
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        pairs.sort();
        pairs.push((
            "valid".into(),
            cx.span().span_context().is_valid().to_string(),
        ));
        pairs
    }

    #[test]
    fn the_header_map_path_extracts_what_the_extractor_path_does() {
        const TP: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cases: Vec<Vec<(&str, &[u8])>> = vec![
            vec![],
            vec![("traceparent", TP)],
            vec![(
                "traceparent",
                b" 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02\t",
            )],
            vec![("traceparent", TP), ("traceparent", TP)],
            vec![("traceparent", TP), ("traceparent", b"\xff")],
            vec![("traceparent", b"\xff")],
            vec![(
                "traceparent",
                b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            )],
            vec![
                ("traceparent", TP),
                ("tracestate", b"a=1"),
                ("tracestate", b"b@c=2, d=3"),
            ],
            vec![
                ("traceparent", TP),
                ("tracestate", b"a=1"),
                ("tracestate", b"\xff"),
            ],
            vec![("traceparent", TP), ("tracestate", b"foo@@bar=1")],
            vec![("tracestate", b"a=1")],
        ];
        let p = TraceContextPropagator::new();
        for case in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in &case {
                headers.append(*name, HeaderValue::from_bytes(value).unwrap());
            }
            let via_extractor = p.extract_with_context(&Context::new(), &HeaderExtractor(&headers));
            let via_headers = p.extract_from_headers(&Context::new(), &headers);
            assert_eq!(sent(&via_headers), sent(&via_extractor), "{case:?}");
        }
    }
}
