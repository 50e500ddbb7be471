//! Your own telemetry on every request: labels on the metrics ([`Labeler`]), and request
//! and response hooks that add attributes to the span and, where they say so, to the
//! metrics ([`Attributes`]). The same on the server layer, the client layer and reqwest's
//! middleware.
//!
//! # Bounds
//!
//! Metric attributes are where cardinality explodes, so what users add is bounded:
//!
//! - at most [`MAX_METRIC_ATTRIBUTES`] user attributes on a request's metric points
//!   (hook attributes first, in the order given, then labels); further keys are dropped;
//!   a key given twice keeps its last value, as the span shows it (request hook, then
//!   response hook, then labels). On the span the SDK's own attribute limit applies
//!   (128 by default): the cap is for metrics, where cardinality is the cost;
//! - string values are cut at 2048 bytes (as captured headers are);
//! - a user attribute cannot replace one of the conventions: a key in a namespace the
//!   conventions own here (`http.`, `url.`, `server.`, `client.`, `network.`, `error.`,
//!   `user_agent.`, `rpc.`) is dropped, on the span and on the metrics.
//!
//! Labels and hook attributes go on the span too, with the same key and length rules
//! (labels when the span ends, request-hook attributes when it starts, so a sampler sees
//! them).
//!
//! # Hooks that panic
//!
//! A hook is user code run inside the layer. If it panics, the panic is caught, the
//! attributes it gave are dropped, the panic is reported once on standard error, and the
//! request goes on with its telemetry whole: a hook cannot lose or break a request.
//!
//! See the [`Labeler`] and [`Attributes`] docs for examples.

use std::borrow::Cow;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use http::{Extensions, HeaderMap, Method, StatusCode, Uri, Version};
use opentelemetry::{KeyValue, StringValue, Value};

use crate::attributes;

/// The most user attributes (hook and label attributes together) on one request's metric
/// points.
pub const MAX_METRIC_ATTRIBUTES: usize = 16;

/// The namespaces whose attributes the conventions define here: a user key in them is
/// dropped.
const RESERVED: [&str; 8] = [
    "http.",
    "url.",
    "server.",
    "client.",
    "network.",
    "error.",
    "user_agent.",
    "rpc.",
];

/// Labels: attributes that code handling a request adds while it runs, for that
/// request's metric points (duration and body sizes) and its span. The `Labeler` of Go's
/// `otelhttp`.
///
/// - **Server.** With [`OtelLayerBuilder::labels(true)`](crate::OtelLayerBuilder::labels),
///   each request carries a `Labeler` in its extensions: a handler takes it (axum:
///   `Extension<Labeler>`) and adds to it. An inner layer that sees only the response can
///   insert a `Labeler` into the **response** extensions instead (read whatever the
///   option says).
/// - **Client.** The caller inserts a `Labeler` into the outgoing request's extensions
///   (reqwest: `RequestBuilder::with_extension`); labels added to it until the call ends
///   count.
///
/// Cloning shares the labels. Bounded as the [module docs](crate::enrich#bounds) say.
///
/// ```
/// use opentelemetry::KeyValue;
/// use tower_otel_http::Labeler;
///
/// // In a handler: `Extension(labeler): Extension<Labeler>`.
/// let labeler = Labeler::new();
/// labeler.add(KeyValue::new("app.tenant", "acme"));
/// assert_eq!(labeler.get(), [KeyValue::new("app.tenant", "acme")]);
/// ```
#[derive(Clone, Default)]
pub struct Labeler(Arc<Mutex<Vec<KeyValue>>>);

impl Labeler {
    /// An empty labeler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a label.
    pub fn add(&self, label: KeyValue) {
        self.lock().push(label);
    }

    /// The labels added so far.
    pub fn get(&self) -> Vec<KeyValue> {
        self.lock().clone()
    }

    /// The labels, taken out: the call has ended.
    fn take(&self) -> Vec<KeyValue> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<KeyValue>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl From<Vec<KeyValue>> for Labeler {
    fn from(labels: Vec<KeyValue>) -> Self {
        Self(Arc::new(Mutex::new(labels)))
    }
}

impl fmt::Debug for Labeler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Labeler").field(&*self.lock()).finish()
    }
}

/// What a request hook sees of a request: the same fields as
/// [`http::request::Parts`], borrowed (`parts.uri.path()`, `parts.headers`), on every
/// integration (reqwest has no `http::Request`).
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestParts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI (on the server: as received, axum's `OriginalUri` with the `axum` feature).
    pub uri: &'a Uri,
    /// The headers (on the client: before the trace context is injected).
    pub headers: &'a HeaderMap,
    /// The extensions.
    pub extensions: &'a Extensions,
}

/// What a response hook sees of a response: the same fields as
/// [`http::response::Parts`], borrowed.
#[derive(Debug)]
#[non_exhaustive]
pub struct ResponseParts<'a> {
    /// The status code.
    pub status: StatusCode,
    /// The HTTP version.
    pub version: Version,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions.
    pub extensions: &'a Extensions,
}

/// The attributes a hook adds: [`span`](Self::span) for the span only,
/// [`metric`](Self::metric) for the span **and** the request's metric points. Bounded as
/// the [module docs](crate::enrich#bounds) say.
///
/// ```
/// use opentelemetry::KeyValue;
/// use tower_otel_http::OtelLayer;
///
/// let layer = OtelLayer::builder()
///     .on_request(|parts, attributes| {
///         if let Some(plan) = parts.headers.get("x-plan").and_then(|v| v.to_str().ok()) {
///             attributes.metric(KeyValue::new("app.plan", plan.to_owned()));
///         }
///     })
///     .on_response(|parts, attributes| {
///         if parts.headers.contains_key("x-cache-hit") {
///             attributes.span(KeyValue::new("app.cache_hit", true));
///         }
///     })
///     .build();
/// ```
#[derive(Debug, Default)]
pub struct Attributes {
    pub(crate) span: Vec<KeyValue>,
    pub(crate) metrics: Vec<KeyValue>,
}

impl Attributes {
    /// Adds an attribute to the span.
    pub fn span(&mut self, attribute: KeyValue) -> &mut Self {
        self.span.push(attribute);
        self
    }

    /// Adds an attribute to the span and to the request's metric points.
    pub fn metric(&mut self, attribute: KeyValue) -> &mut Self {
        self.metrics.push(attribute);
        self
    }

    /// Everything for the span: the span-only attributes and the metric ones (checked
    /// when the hook returned).
    pub(crate) fn for_span(&self) -> impl Iterator<Item = KeyValue> + '_ {
        self.span.iter().chain(&self.metrics).cloned()
    }
}

pub(crate) type RequestHook = Arc<dyn Fn(&RequestParts<'_>, &mut Attributes) + Send + Sync>;
pub(crate) type ResponseHook = Arc<dyn Fn(&ResponseParts<'_>, &mut Attributes) + Send + Sync>;

/// The hooks, the labels switch and the exception switch of a layer.
#[derive(Clone, Default)]
pub(crate) struct Enrichment {
    pub(crate) on_request: Option<RequestHook>,
    pub(crate) on_response: Option<ResponseHook>,
    pub(crate) labels: bool,
    pub(crate) record_exception: bool,
}

impl fmt::Debug for Enrichment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrichment")
            .field("on_request", &self.on_request.is_some())
            .field("on_response", &self.on_response.is_some())
            .field("labels", &self.labels)
            .field("record_exception", &self.record_exception)
            .finish()
    }
}

/// Runs a hook, catching a panic: its attributes are then dropped, and the panic is
/// reported once.
pub(crate) fn run_hook(which: &'static str, hook: impl FnOnce(&mut Attributes)) -> Attributes {
    let mut attributes = Attributes::default();
    let caught = catch_unwind(AssertUnwindSafe(|| hook(&mut attributes)));
    if caught.is_ok() {
        sanitize(&mut attributes.span);
        sanitize(&mut attributes.metrics);
    } else {
        crate::config::report_once(
            which,
            &format!(
                "the {which} hook panicked; the attributes it gave were dropped (reported once)"
            ),
        );
        return Attributes::default();
    }
    attributes
}

/// The user attributes of one request for its metric points: checked, bounded.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    metrics: Vec<KeyValue>,
}

impl Extra {
    /// Adds checked attributes (a hook's metric ones, labels).
    pub(crate) fn add(&mut self, attributes: Vec<KeyValue>) {
        // The usual case: nothing yet, few enough, no key given twice.
        if self.metrics.is_empty()
            && attributes.len() <= MAX_METRIC_ATTRIBUTES
            && !has_repeats(&attributes)
        {
            self.metrics = attributes;
            return;
        }
        for kv in attributes {
            let known = self.metrics.iter().any(|m| m.key == kv.key);
            if self.metrics.len() == MAX_METRIC_ATTRIBUTES && !known {
                continue;
            }
            // One value per key: the last given wins, as on the span, where a later
            // attribute of the same key is the one backends show.
            match self.metrics.iter_mut().find(|m| m.key == kv.key) {
                Some(existing) => *existing = kv,
                None => self.metrics.push(kv),
            }
        }
    }

    /// Calls `record` with `conventions` followed by the user attributes: the stack
    /// array as it is when there are none, else one list, moved together.
    pub(crate) fn record_with<const N: usize>(
        self,
        conventions: crate::attributes::Attrs<N>,
        record: impl FnOnce(&[KeyValue]),
    ) {
        if self.metrics.is_empty() {
            record(conventions.as_slice());
        } else {
            record(&conventions.with_more(self.metrics));
        }
    }

    /// `conventions` followed by the user attributes (for tests).
    #[cfg(test)]
    fn with(&self, conventions: &[KeyValue]) -> Vec<KeyValue> {
        let mut all = conventions.to_vec();
        all.extend(self.metrics.iter().cloned());
        all
    }
}

/// The user telemetry of one call, made only when something is used (a hook, a
/// labeler), so that a call with none carries one empty pointer.
#[derive(Debug, Default)]
pub(crate) struct Enriched {
    extra: Extra,
    /// The request's labeler: put there by the server layer, or by the caller.
    labeler: Option<Labeler>,
    /// A labeler in the response's extensions.
    response_labeler: Option<Labeler>,
}

impl Enriched {
    /// `None` when there is nothing: no request-hook attributes and no labeler.
    pub(crate) fn start(hooked: Option<Attributes>, labeler: Option<Labeler>) -> Option<Box<Self>> {
        if hooked.is_none() && labeler.is_none() {
            return None;
        }
        let mut enriched = Box::new(Self {
            labeler,
            ..Self::default()
        });
        if let Some(hooked) = hooked {
            enriched.extra.add(hooked.metrics);
        }
        Some(enriched)
    }

    pub(crate) fn labeler(&self) -> Option<&Labeler> {
        self.labeler.as_ref()
    }

    /// The response arrived: a labeler in its extensions, and the response hook's
    /// attributes (set on the span at once).
    pub(crate) fn on_response(
        slot: &mut Option<Box<Self>>,
        extensions: &Extensions,
        hooked: Option<Attributes>,
        span: Option<&opentelemetry::Context>,
    ) {
        use opentelemetry::trace::TraceContextExt as _;
        let labeler = extensions.get::<Labeler>();
        if labeler.is_none() && hooked.is_none() {
            return;
        }
        let enriched = slot.get_or_insert_with(Box::default);
        enriched.response_labeler = labeler.cloned();
        if let Some(hooked) = hooked {
            if let Some(cx) = span {
                cx.span().set_attributes(hooked.for_span());
            }
            enriched.extra.add(hooked.metrics);
        }
    }

    /// The call ends: the labels go on the span, and the metric attributes are handed
    /// back.
    pub(crate) fn finish(self, span: Option<&opentelemetry::Context>) -> Extra {
        use opentelemetry::trace::TraceContextExt as _;
        let Self {
            mut extra,
            labeler,
            response_labeler,
        } = self;
        let mut labels = labeler.as_ref().map(Labeler::take).unwrap_or_default();
        if let Some(response) = &response_labeler {
            labels.extend(response.take());
        }
        if !labels.is_empty() {
            sanitize(&mut labels);
            if let Some(cx) = span {
                cx.span().set_attributes(labels.iter().cloned());
            }
            extra.add(labels);
        }
        extra
    }
}

/// Keeps the attributes whose keys are the user's to set, with string values cut at the
/// length limit.
fn sanitize(attributes: &mut Vec<KeyValue>) {
    let too_long = |kv: &KeyValue| matches!(&kv.value, Value::String(s) if s.as_str().len() > attributes::MAX_VALUE_LEN);
    // The usual case: nothing to drop or cut.
    if attributes
        .iter()
        .all(|kv| !reserved(kv.key.as_str()) && !too_long(kv))
    {
        return;
    }
    attributes.retain(|kv| !reserved(kv.key.as_str()));
    for kv in attributes.iter_mut() {
        if let Value::String(s) = &kv.value {
            if s.as_str().len() > attributes::MAX_VALUE_LEN {
                let cut = attributes::bounded(s.as_str()).to_owned();
                kv.value = Value::String(StringValue::from(Cow::Owned(cut)));
            }
        }
    }
}

/// An empty key, or one in a namespace the conventions own here.
fn reserved(key: &str) -> bool {
    match key.as_bytes().first() {
        None => true,
        Some(b'h' | b'u' | b's' | b'c' | b'n' | b'e' | b'r') => {
            RESERVED.iter().any(|ns| key.starts_with(ns))
        }
        Some(_) => false,
    }
}

/// Whether a key is given twice.
fn has_repeats(attributes: &[KeyValue]) -> bool {
    attributes
        .iter()
        .enumerate()
        .any(|(i, kv)| attributes[..i].iter().any(|earlier| earlier.key == kv.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions_cannot_be_replaced_and_values_are_cut() {
        let mut extra = Extra::default();
        let mut labels = vec![
            KeyValue::new("http.route", "/evil/{x}"),
            KeyValue::new("error.type", "mine"),
            KeyValue::new("", "empty"),
            KeyValue::new("app.tenant", "acme"),
            KeyValue::new("app.tenant", "other"),
            KeyValue::new("app.long", "x".repeat(5000)),
        ];
        sanitize(&mut labels);
        extra.add(labels);
        let all = extra.with(&[]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], KeyValue::new("app.tenant", "other"));
        assert_eq!(all[1].value.as_str().len(), attributes::MAX_VALUE_LEN);
    }

    #[test]
    fn at_most_sixteen_user_attributes() {
        let mut extra = Extra::default();
        let labels: Vec<KeyValue> = (0..40)
            .map(|i| KeyValue::new(format!("app.k{i}"), i64::from(i)))
            .collect();
        extra.add(labels);
        // A key already there takes a later value, even with the cap reached.
        extra.add(vec![KeyValue::new("app.k3", "late")]);
        let all = extra.with(&[KeyValue::new("http.request.method", "GET")]);
        assert_eq!(all.len(), 1 + MAX_METRIC_ATTRIBUTES);
        assert_eq!(all[16].key.as_str(), "app.k15");
        assert_eq!(all[4], KeyValue::new("app.k3", "late"));
    }

    #[test]
    fn a_panicking_hook_gives_nothing() {
        let attributes = run_hook("test_hook", |a| {
            a.metric(KeyValue::new("app.a", 1));
            panic!("boom");
        });
        assert!(attributes.span.is_empty() && attributes.metrics.is_empty());
    }
}
