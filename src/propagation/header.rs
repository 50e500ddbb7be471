use http::{
    header::{HeaderName, HeaderValue},
    HeaderMap,
};
use opentelemetry::propagation::{Extractor, Injector};

use super::tracestate::trim_ows;

/// Stands for a field value that is not UTF-8 in [`HeaderExtractor::get_all`],
/// so that it still counts as a value and fails every grammar.
const UNREADABLE: &str = "\u{fffd}";

/// Reads propagation fields from an [`http::HeaderMap`].
///
/// Header names are case-insensitive. Values are returned without the
/// optional whitespace (`SP`, `HTAB`) around them.
///
/// Unlike `opentelemetry-http`'s extractor, [`get_all`](Extractor::get_all)
/// returns every field of a header, including fields that are not UTF-8
/// (as `"\u{fffd}"`), so that a propagator can tell one field from several.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    /// The first field of the header, or `None` if absent or not UTF-8.
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?;
        std::str::from_utf8(value.as_bytes()).ok().map(trim_ows)
    }

    /// The names of all headers, lowercase.
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    /// Every field of the header in order, or `None` if absent. A field that
    /// is not UTF-8 is returned as `"\u{fffd}"`.
    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let mut values = self.0.get_all(key).iter().peekable();
        values.peek()?;
        Some(values.map(field_str).collect())
    }
}

/// A field's value as the propagator reads it: without OWS, `"\u{fffd}"` if not UTF-8.
pub(crate) fn field_str(value: &HeaderValue) -> &str {
    std::str::from_utf8(value.as_bytes()).map_or(UNREADABLE, trim_ows)
}

/// Writes propagation fields into an [`http::HeaderMap`].
///
/// [`set`](Injector::set) replaces every existing field of that header. A name
/// or value that is not a valid header name or value, or a map that is full,
/// is silently ignored: injecting never panics.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C fields without parsing their names; any other name parsed.
        let name = match key {
            "traceparent" => super::trace_context::TRACEPARENT_HEADER.clone(),
            "tracestate" => super::trace_context::TRACESTATE_HEADER.clone(),
            _ => match HeaderName::from_bytes(key.as_bytes()) {
                Ok(name) => name,
                Err(_) => return,
            },
        };
        let Ok(value) = HeaderValue::try_from(value) else {
            return;
        };
        // Fails only when the map already holds the maximum number of entries.
        let _ = self.0.try_insert(name, value);
    }

    fn reserve(&mut self, additional: usize) {
        let _ = self.0.try_reserve(additional);
    }
}
