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
//! - string values, and the strings of an array value, are cut at 2048 bytes (as
//!   captured headers are);
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
use opentelemetry::{Array, KeyValue, StringValue, Value};

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
pub struct Labeler(Arc<Mutex<Small<4>>>);

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
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Small<4>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl From<Vec<KeyValue>> for Labeler {
    fn from(labels: Vec<KeyValue>) -> Self {
        // Pushed one by one: the inline slots hold the first ones, so the order (which
        // decides which value of a key wins) stays the order given.
        let mut small = Small::default();
        for label in labels {
            small.push(label);
        }
        Self(Arc::new(Mutex::new(small)))
    }
}

impl fmt::Debug for Labeler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Labeler").field(&self.get()).finish()
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
    pub(crate) span: Small<2>,
    pub(crate) metrics: Small<2>,
    /// Bit `i`: the `i`th attribute given (of the first 64) was a metric one, so that
    /// the span gets them all in the order given.
    order: u64,
    given: u32,
}

impl Attributes {
    /// Adds an attribute to the span.
    pub fn span(&mut self, attribute: KeyValue) -> &mut Self {
        self.span.push(attribute);
        self.given = self.given.saturating_add(1);
        self
    }

    /// Adds an attribute to the span and to the request's metric points.
    pub fn metric(&mut self, attribute: KeyValue) -> &mut Self {
        self.metrics.push(attribute);
        if self.given < 64 {
            self.order |= 1 << self.given;
        }
        self.given = self.given.saturating_add(1);
        self
    }

    /// Everything for the span, added to `attrs` in the order given: the span-only
    /// attributes (moved out) and the metric ones (cloned; checked when the hook
    /// returned). Beyond the 64th, the span-only ones come first.
    pub(crate) fn move_to_span(&mut self, attrs: &mut Vec<KeyValue>) {
        if self.metrics.is_empty() {
            self.span.drain(|kv| attrs.push(kv));
            return;
        }
        let mut spans = self.span.take_all();
        let mut metrics = self.metrics.iter();
        for i in 0..self.given.min(64) {
            let next = if self.order & (1 << i) != 0 {
                metrics.next().cloned()
            } else {
                spans.next()
            };
            attrs.extend(next);
        }
        attrs.extend(spans);
        attrs.extend(metrics.cloned());
    }
}

/// A few attributes, inline up to `N`, then on the heap: a hook or a handler that adds a
/// few attributes allocates nothing for them.
#[derive(Debug)]
pub(crate) struct Small<const N: usize> {
    /// The first `len` are `Some`.
    inline: [Option<KeyValue>; N],
    len: usize,
    more: Vec<KeyValue>,
}

impl<const N: usize> Default for Small<N> {
    fn default() -> Self {
        Self {
            inline: std::array::from_fn(|_| None),
            len: 0,
            more: Vec::new(),
        }
    }
}

impl<const N: usize> Small<N> {
    fn push(&mut self, kv: KeyValue) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(kv);
                self.len += 1;
            }
            None => self.more.push(kv),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0 && self.more.is_empty()
    }

    fn len(&self) -> usize {
        self.len + self.more.len()
    }

    pub(crate) fn iter(&self) -> SmallIter<'_, N> {
        SmallIter {
            small: self,
            next: 0,
        }
    }

    /// Every attribute, moved out in order, leaving this empty.
    fn take_all(&mut self) -> impl Iterator<Item = KeyValue> + '_ {
        let len = std::mem::take(&mut self.len);
        self.inline[..len]
            .iter_mut()
            .filter_map(Option::take)
            .chain(self.more.drain(..))
    }

    /// Moves every attribute out, in order, leaving this empty. The same as
    /// `take_all().for_each(f)`, written out: that costs layer/enriched_span about 160
    /// instructions more per request (callgrind).
    fn drain(&mut self, mut f: impl FnMut(KeyValue)) {
        for slot in &mut self.inline[..self.len] {
            if let Some(kv) = slot.take() {
                f(kv);
            }
        }
        self.len = 0;
        if !self.more.is_empty() {
            self.more.drain(..).for_each(f);
        }
    }

    /// Drops the attributes whose keys are not the user's to set, and cuts string values
    /// at the length limit.
    fn sanitize(&mut self) {
        fn fine(kv: &KeyValue) -> bool {
            !reserved(kv.key.as_str()) && !too_long(&kv.value)
        }
        // The usual case: nothing to drop or cut.
        if self.inline[..self.len].iter().flatten().all(fine) && self.more.iter().all(fine) {
            return;
        }
        let mut all = std::mem::take(self);
        all.drain(|kv| match checked(&kv) {
            Ok(()) => self.push(kv),
            Err(Some(cut)) => self.push(cut),
            Err(None) => {}
        });
    }
}

/// The attributes of a [`Small`], in order.
pub(crate) struct SmallIter<'a, const N: usize> {
    small: &'a Small<N>,
    next: usize,
}

impl<'a, const N: usize> Iterator for SmallIter<'a, N> {
    type Item = &'a KeyValue;

    fn next(&mut self) -> Option<&'a KeyValue> {
        let i = self.next;
        self.next += 1;
        match self.small.inline[..self.small.len].get(i) {
            Some(slot) => slot.as_ref(),
            None => self.small.more.get(i - self.small.len),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.small.len().saturating_sub(self.next);
        (left, Some(left))
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
#[inline]
pub(crate) fn run_hook(which: &'static str, hook: impl FnOnce(&mut Attributes)) -> Attributes {
    let mut attributes = Attributes::default();
    let caught = catch_unwind(AssertUnwindSafe(|| hook(&mut attributes)));
    if caught.is_ok() {
        attributes.span.sanitize();
        attributes.metrics.sanitize();
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

/// Room kept in the user attributes' list for the attributes of the conventions, which
/// are put after them when the metrics are recorded (no metric of this crate takes more
/// than eight).
const CONVENTIONS_ROOM: usize = 8;

/// The user attributes of one request for its metric points: checked, bounded, one value
/// per key, in a list with room for the conventions' attributes after them (one
/// allocation for the whole list).
#[derive(Debug, Default)]
pub(crate) struct Extra {
    metrics: Vec<KeyValue>,
}

impl Extra {
    /// Adds checked attributes (a hook's metric ones, labels), moving them out of
    /// `from`.
    fn add<const N: usize>(&mut self, from: &mut Small<N>) {
        if from.is_empty() {
            return;
        }
        if self.metrics.capacity() == 0 {
            // Room for a few labels after a hook's attributes, without growing.
            self.metrics =
                Vec::with_capacity(CONVENTIONS_ROOM + from.len().clamp(4, MAX_METRIC_ATTRIBUTES));
        }
        let metrics = &mut self.metrics;
        from.drain(|kv| {
            // One value per key: the last given wins, as on the span, where a later
            // attribute of the same key is the one backends show.
            match metrics.iter().position(|m| m.key == kv.key) {
                Some(i) => metrics[i] = kv,
                None if metrics.len() < MAX_METRIC_ATTRIBUTES => metrics.push(kv),
                None => {}
            }
        });
    }

    /// Adds a labeler's labels, checked, to the span and to the metric attributes.
    fn add_labels(&mut self, labeler: &Labeler, span: Option<&opentelemetry::Context>) {
        let mut labels = labeler.lock();
        if labels.is_empty() {
            return;
        }
        labels.sanitize();
        if let Some(cx) = span {
            use opentelemetry::trace::TraceContextExt as _;
            cx.span().set_attributes(labels.iter().cloned());
        }
        self.add(&mut labels);
    }

    /// The list for a metric point's attributes, to which the conventions' are added:
    /// on the stack when the user gave none, else after the user attributes (the order of
    /// a point's attributes means nothing to the SDK).
    pub(crate) fn attrs<const N: usize>(self) -> crate::attributes::Attrs<N> {
        if self.metrics.is_empty() {
            crate::attributes::Attrs::new()
        } else {
            crate::attributes::Attrs::after(self.metrics)
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

/// The user telemetry of one call: empty (no allocation) unless something is used (a
/// hook giving metric attributes, a labeler).
#[derive(Debug, Default)]
pub(crate) struct Enriched {
    extra: Extra,
    /// The request's labeler: put there by the server layer, or by the caller.
    labeler: Option<Labeler>,
    /// A labeler in the response's extensions.
    response_labeler: Option<Labeler>,
}

impl Enriched {
    pub(crate) fn start(hooked: Option<&mut Attributes>, labeler: Option<Labeler>) -> Self {
        let mut enriched = Self {
            labeler,
            ..Self::default()
        };
        if let Some(hooked) = hooked {
            enriched.extra.add(&mut hooked.metrics);
        }
        enriched
    }

    pub(crate) fn labeler(&self) -> Option<&Labeler> {
        self.labeler.as_ref()
    }

    /// The response arrived: a labeler in its extensions, and the response hook's
    /// attributes (set on the span at once).
    pub(crate) fn on_response(
        &mut self,
        extensions: &Extensions,
        hooked: Option<&mut Attributes>,
        span: Option<&opentelemetry::Context>,
    ) {
        use opentelemetry::trace::TraceContextExt as _;
        if let Some(labeler) = extensions.get::<Labeler>() {
            self.response_labeler = Some(labeler.clone());
        }
        if let Some(hooked) = hooked {
            if let Some(cx) = span {
                let mut attrs = Vec::with_capacity(hooked.span.len() + hooked.metrics.len());
                hooked.move_to_span(&mut attrs);
                cx.span().set_attributes(attrs);
            }
            self.extra.add(&mut hooked.metrics);
        }
    }

    /// The call ends: the labels go on the span, and the metric attributes are handed
    /// back.
    pub(crate) fn finish(self, span: Option<&opentelemetry::Context>) -> Extra {
        let Self {
            mut extra,
            labeler,
            response_labeler,
        } = self;
        if let Some(labeler) = labeler {
            extra.add_labels(&labeler, span);
        }
        if let Some(labeler) = response_labeler {
            extra.add_labels(&labeler, span);
        }
        extra
    }
}

/// Whether an attribute is the user's to set as it is: `Err(None)` drops it (a key the
/// conventions own), `Err(Some(cut))` replaces it (a string value cut at the length
/// limit).
fn checked(kv: &KeyValue) -> Result<(), Option<KeyValue>> {
    if reserved(kv.key.as_str()) {
        return Err(None);
    }
    if !too_long(&kv.value) {
        return Ok(());
    }
    let cut = |s: &StringValue| -> StringValue {
        if s.as_str().len() > attributes::MAX_VALUE_LEN {
            StringValue::from(Cow::Owned(attributes::bounded(s.as_str()).to_owned()))
        } else {
            s.clone()
        }
    };
    let value = match &kv.value {
        Value::String(s) => Value::String(cut(s)),
        Value::Array(Array::String(items)) => {
            Value::Array(Array::String(items.iter().map(cut).collect()))
        }
        other => other.clone(),
    };
    Err(Some(KeyValue::new(kv.key.clone(), value)))
}

/// A string value, or a string in an array value, longer than the length limit.
#[inline]
fn too_long(value: &Value) -> bool {
    let long = |s: &StringValue| s.as_str().len() > attributes::MAX_VALUE_LEN;
    match value {
        Value::String(s) => long(s),
        Value::Array(Array::String(items)) => items.iter().any(long),
        _ => false,
    }
}

/// An empty key, or one in a namespace the conventions own here.
#[inline]
fn reserved(key: &str) -> bool {
    match key.as_bytes().first() {
        None => true,
        Some(b'h' | b'u' | b's' | b'c' | b'n' | b'e' | b'r') => {
            RESERVED.iter().any(|ns| key.starts_with(ns))
        }
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions_cannot_be_replaced_and_values_are_cut() {
        let mut extra = Extra::default();
        let mut labels = Small::<4>::default();
        for kv in [
            KeyValue::new("http.route", "/evil/{x}"),
            KeyValue::new("error.type", "mine"),
            KeyValue::new("", "empty"),
            KeyValue::new("app.tenant", "acme"),
            KeyValue::new("app.tenant", "other"),
            KeyValue::new("app.long", "x".repeat(5000)),
        ] {
            labels.push(kv);
        }
        labels.sanitize();
        extra.add(&mut labels);
        let all = extra.with(&[]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], KeyValue::new("app.tenant", "other"));
        assert_eq!(all[1].value.as_str().len(), attributes::MAX_VALUE_LEN);
    }

    #[test]
    fn at_most_sixteen_user_attributes() {
        let mut extra = Extra::default();
        let mut labels = Small::<4>::default();
        for i in 0..40 {
            labels.push(KeyValue::new(format!("app.k{i}"), i64::from(i)));
        }
        extra.add(&mut labels);
        assert!(labels.is_empty() && labels.more.is_empty());
        // A key already there takes a later value, even with the cap reached.
        labels.push(KeyValue::new("app.k3", "late"));
        extra.add(&mut labels);
        let all = extra.with(&[KeyValue::new("http.request.method", "GET")]);
        assert_eq!(all.len(), 1 + MAX_METRIC_ATTRIBUTES);
        assert_eq!(all[16].key.as_str(), "app.k15");
        assert_eq!(all[4], KeyValue::new("app.k3", "late"));
    }

    #[test]
    fn a_hooks_attributes_reach_the_span_in_the_order_given() {
        let mut attributes = Attributes::default();
        attributes
            .metric(KeyValue::new("app.k", "first"))
            .span(KeyValue::new("app.k", "second"))
            .span(KeyValue::new("app.s", 1))
            .metric(KeyValue::new("app.m", 2))
            .span(KeyValue::new("app.t", 3));
        let mut attrs = Vec::new();
        attributes.move_to_span(&mut attrs);
        let keys: Vec<String> = attrs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        assert_eq!(
            keys,
            [
                "app.k=first",
                "app.k=second",
                "app.s=1",
                "app.m=2",
                "app.t=3"
            ]
        );
        // The metric ones stay for the metrics.
        assert_eq!(attributes.metrics.len(), 2);
    }

    #[test]
    fn strings_in_arrays_are_cut_too() {
        let mut labels = Small::<4>::default();
        labels.push(KeyValue::new(
            "app.list",
            Value::Array(Array::String(vec![
                StringValue::from("short"),
                StringValue::from("y".repeat(5000)),
            ])),
        ));
        labels.sanitize();
        let kv = labels.iter().next().unwrap();
        let Value::Array(Array::String(items)) = &kv.value else {
            panic!("{kv:?}");
        };
        assert_eq!(items[0].as_str(), "short");
        assert_eq!(items[1].as_str().len(), attributes::MAX_VALUE_LEN);
    }

    #[test]
    fn labels_keep_their_order_and_the_last_value_wins() {
        let labeler = Labeler::from(vec![KeyValue::new("app.a", 1), KeyValue::new("app.b", 1)]);
        for i in 2..7 {
            labeler.add(KeyValue::new("app.a", i));
        }
        let keys: Vec<i64> = labeler
            .get()
            .iter()
            .filter(|kv| kv.key.as_str() == "app.a")
            .map(|kv| match kv.value {
                Value::I64(i) => i,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(keys, [1, 2, 3, 4, 5, 6]);
        let mut extra = Extra::default();
        extra.add_labels(&labeler, None);
        assert_eq!(
            extra.with(&[]),
            [KeyValue::new("app.a", 6), KeyValue::new("app.b", 1)]
        );
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
