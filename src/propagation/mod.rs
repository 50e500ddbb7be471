//! Strict [W3C Trace Context] (Level 2) propagation over HTTP headers.
//!
//! [`TraceContextPropagator`] is an OpenTelemetry
//! [`TextMapPropagator`](opentelemetry::propagation::TextMapPropagator) for the
//! `traceparent` and `tracestate` headers that applies the W3C rules to the
//! letter: its tests port all 41 cases of the W3C conformance suite
//! (`w3c/trace-context`, `test/test.py`, Level 2). [`HeaderExtractor`] and
//! [`HeaderInjector`] connect it (or any other propagator) to an
//! [`http::HeaderMap`].
//!
//! # Rules applied when extracting
//!
//! `traceparent`:
//!
//! - Every field of the header is read ([`Extractor::get_all`]); names are
//!   case-insensitive and the whitespace (`SP`, `HTAB`) around a value is
//!   ignored. More than one `traceparent` field is invalid. (This needs an
//!   extractor whose `get_all` returns every field, as [`HeaderExtractor`]
//!   does; the trait's default `get_all` returns the first one only.)
//! - Version `00` is exactly 55 characters of lowercase hex fields with exact
//!   lengths (`00-{32}-{16}-{2}`), with nothing after the flags.
//! - Version `ff` is invalid. A higher version is read with the W3C
//!   forward-compatibility rule: at least 55 characters, the version-00 fields
//!   at their places, the flags followed by the end of the value or by `-`;
//!   what follows is ignored, and the header is sent on as version `00`.
//! - An all-zero trace id or parent id is invalid.
//! - An invalid `traceparent` restarts the trace: the context is returned
//!   unchanged (no remote span context) and `tracestate` is not read.
//! - Of the trace flags, the sampled (`0x01`) and Level-2 random-trace-id
//!   (`0x02`) bits are kept; the others are zeroed.
//!
//! `tracestate` (only read along with a valid `traceparent`):
//!
//! - Several fields are combined in order, as if joined with `,`.
//! - Empty and whitespace-only list-members are skipped.
//! - A key is `(a-z / 0-9) 0*255(a-z / 0-9 / _ / - / * / / / @)` (the Level 2
//!   grammar); a value is 1 to 256 printable ASCII characters other than `,`
//!   and `=`, not ending with a space.
//! - More than 32 list-members, or any invalid member, discards the whole
//!   tracestate (and keeps the `traceparent`).
//! - A duplicated key keeps its first entry; the rest of the list is kept.
//! - At most 512 characters are propagated (the minimum the W3C asks for).
//!   A longer list is truncated by whole entries: entries longer than 128
//!   characters go first, right-most first, then entries from the right end.
//!   The order of the kept entries never changes.
//!
//! # Rules applied when injecting
//!
//! - Nothing is written for an invalid span context.
//! - `traceparent: 00-{trace-id}-{span-id}-{flags}`, lowercase, with only the
//!   sampled and random bits of the flags.
//! - `tracestate` holds the span context's [`TraceState`] entries in order,
//!   without entries that break the grammar (for example an empty value,
//!   which `TraceState` accepts), without duplicate keys, at most 32 entries
//!   and 512 characters (truncated as above). No `tracestate` header is written
//!   when that leaves nothing.
//! - Header names are written lowercase; [`HeaderInjector`] replaces any
//!   existing field of the same name.
//!
//! # Limits on hostile input
//!
//! Extraction never panics, and its work is bounded whatever the request
//! holds:
//!
//! - a `traceparent` field longer than 512 bytes is rejected without being
//!   parsed, and a valid one is read in its first 56 bytes;
//! - `tracestate` fields longer than 32 KiB in total (twice the longest list
//!   the grammar allows without padding) are discarded without being parsed;
//!   so are more than 32 Ki fields (their separators alone exceed that);
//! - parsing `tracestate` allocates nothing: only the resulting
//!   [`TraceState`] does, once the list is known to be valid.
//!
//! Extracting a valid `traceparent` without `tracestate` allocates only the
//! `Vec` that [`Extractor::get_all`] returns and what
//! [`TraceContextExt::with_remote_span_context`] needs, except in the two
//! cases below.
//!
//! # Level 2 and opentelemetry 0.33
//!
//! Two Level 2 features do not fit the OpenTelemetry types of this version;
//! the propagator makes up for both by storing a private entry in the
//! extracted [`Context`], which it reads back when injecting a span context of
//! the same trace:
//!
//! - **Random-trace-id flag.** [`TraceFlags`] carries `0x02`, and the SDK
//!   keeps it on a child span it records, but it resets all flags of a span
//!   it drops (`SamplingDecision::Drop`, which the default parent-based
//!   sampler decides under an unsampled parent). The W3C requires the
//!   incoming flag on every outgoing `traceparent` of the same trace, so when
//!   it is set on an unsampled `traceparent`, the entry remembers it and
//!   injection restores it.
//! - **Level 2 `tracestate` keys.** [`TraceState`] validates keys with an older
//!   grammar: one `@` at most, followed by 1 to 14 characters starting with a
//!   letter or a digit. It rejects valid keys such as `foo@@bar`,
//!   `foo@bar@baz` or `t@vvvvvvvvvvvvvvv`. When a received tracestate holds such
//!   keys, the remote span context's [`TraceState`] gets the entries it
//!   accepts, and the entry keeps the whole list: injection sends it exactly
//!   as received. If the span context's tracestate changed in between (a
//!   sampler added its own key, say), the new and updated entries come first,
//!   followed by the received entries still present, in their order.
//!
//! The entry is found only through a [`Context`] derived from the extracted
//! one (as a server span's context is); samplers and exporters see the
//! [`TraceState`] without the rejected entries.
//!
//! # Combining with baggage
//!
//! The OpenTelemetry API crate has no baggage propagator; the SDK's
//! `BaggagePropagator` combines with this one through
//! [`TextMapCompositePropagator`](opentelemetry::propagation::TextMapCompositePropagator):
//!
//! ```
//! use http::HeaderMap;
//! use opentelemetry::{
//!     baggage::BaggageExt,
//!     propagation::{TextMapCompositePropagator, TextMapPropagator},
//!     trace::TraceContextExt,
//!     Context,
//! };
//! use opentelemetry_sdk::propagation::BaggagePropagator;
//! use tower_otel_http::propagation::{HeaderExtractor, HeaderInjector, TraceContextPropagator};
//!
//! let propagator = TextMapCompositePropagator::new(vec![
//!     Box::new(TraceContextPropagator::new()),
//!     Box::new(BaggagePropagator::new()),
//! ]);
//! // Applications usually install it once, at start-up:
//! // opentelemetry::global::set_text_map_propagator(propagator);
//!
//! let mut request = HeaderMap::new();
//! request.insert(
//!     "traceparent",
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
//! );
//! request.insert("baggage", "user.tier=gold".parse().unwrap());
//!
//! let cx = propagator.extract_with_context(&Context::new(), &HeaderExtractor(&request));
//! assert_eq!(
//!     cx.span().span_context().trace_id().to_string(),
//!     "4bf92f3577b34da6a3ce929d0e0e4736"
//! );
//! assert_eq!(cx.baggage().get("user.tier").map(|v| v.as_str()), Some("gold"));
//!
//! let mut outgoing = HeaderMap::new();
//! propagator.inject_context(&cx, &mut HeaderInjector(&mut outgoing));
//! assert!(outgoing.contains_key("traceparent"));
//! assert_eq!(outgoing["baggage"], "user.tier=gold");
//! ```
//!
//! [W3C Trace Context]: https://www.w3.org/TR/trace-context-2/
//! [`Extractor::get_all`]: opentelemetry::propagation::Extractor::get_all
//! [`TraceState`]: opentelemetry::trace::TraceState
//! [`TraceFlags`]: opentelemetry::trace::TraceFlags
//! [`Context`]: opentelemetry::Context
//! [`TraceContextExt::with_remote_span_context`]: opentelemetry::trace::TraceContextExt::with_remote_span_context

mod header;
mod trace_context;
mod tracestate;

pub use header::{HeaderExtractor, HeaderInjector};
#[cfg(feature = "tracing-json")]
pub(crate) use trace_context::hex_into;
pub(crate) use trace_context::push_traceparent;
pub use trace_context::TraceContextPropagator;

#[cfg(test)]
mod tests;
