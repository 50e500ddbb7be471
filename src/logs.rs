//! Log lines that carry the trace: [`TraceJson`], a `tracing-subscriber` JSON event
//! format whose lines carry the current OpenTelemetry `trace_id` and `span_id`.
//!
//! The server layer makes its span the current OpenTelemetry [`Context`] while the inner
//! service's future is polled and while the response body is produced (a streamed body's
//! code runs under it too). So an event a handler logs with `tracing` can name the
//! request's trace:
//!
//! - **OpenTelemetry log records.** Use `opentelemetry-appender-tracing`'s
//!   `OpenTelemetryTracingBridge` with an SDK logger provider: the SDK fills each
//!   record's trace context from the current `Context`. Nothing from this crate is
//!   needed.
//! - **JSON lines** (standard output, files): [`TraceJson`] wraps the JSON format of
//!   `tracing-subscriber` and adds two top-level fields to each line, `trace_id` (32
//!   lowercase hex digits) and `span_id` (16), the names the OpenTelemetry
//!   specification gives them in non-OTLP log formats
//!   (["Trace Context in non-OTLP Log Formats"][spec]); `trace_flags` (`"01"` when
//!   sampled) on request.
//!
//! ```
//! use tower_otel_http::logs::TraceJson;
//!
//! tracing_subscriber::fmt()
//!     .json() // the JSON field formatter, for the spans' fields
//!     .event_format(TraceJson::new())
//!     .init();
//!
//! tracing::info!("no request here: this line has no trace_id");
//! ```
//!
//! A line logged in a handler then reads
//! `{"timestamp":"…","level":"INFO","fields":{"message":"…"},"target":"…","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}`.
//!
//! The inner format is configured as usual and given to [`TraceJson::with_format`]; as a
//! layer, beside the OpenTelemetry bridge:
//!
//! ```
//! use tracing_subscriber::fmt;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tower_otel_http::logs::TraceJson;
//!
//! let format = TraceJson::new()
//!     .with_format(fmt::format().json().flatten_event(true).with_current_span(false))
//!     .with_trace_flags(true);
//! let subscriber = tracing_subscriber::registry()
//!     // .with(OpenTelemetryTracingBridge::new(&logger_provider)) for the log records
//!     .with(fmt::layer().json().event_format(format));
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::info!(user = 42, "signed in");
//! });
//! ```
//!
//! # Which ids
//!
//! The ids are those of the span in the **current OpenTelemetry `Context`** when the
//! event is formatted, as for the SDK's log records; a line formatted with no valid span
//! context current is written exactly as the inner format wrote it. So:
//!
//! - in a handler, in an inner layer, and in a streamed response body's code: the server
//!   span of this crate (or a span the application made current under it), sampled or
//!   not (`trace_flags` tells); with `traces(false)` there is no span, and no ids;
//! - in a task the handler **spawned**: nothing, unless the task carries the context,
//!   as tasks do not inherit thread-local state:
//!   `tokio::spawn(work.with_current_context())`, with
//!   [`opentelemetry::context::FutureExt`];
//! - a `tracing` span bridged to OpenTelemetry by `tracing-opentelemetry` counts only
//!   while that bridge makes it the current `Context` (its "context activation",
//!   `OpenTelemetryLayer::with_context_activation`, on by default in 0.34); otherwise the
//!   line carries the enclosing current `Context`'s ids, not the `tracing` span's.
//!
//! # The output
//!
//! The inner format must write one JSON object per event (as `tracing-subscriber`'s JSON
//! format does): the fields are inserted before its closing `}`, so the line stays
//! valid JSON, however the event's fields are escaped. Output that does not start with
//! `{` and end with `}` (and whitespace) is written unchanged. The fields are added
//! whatever the object holds: an event with its own field `trace_id`, flattened to the
//! top level, gives a line with the key twice (valid JSON, but readers keep one).
//!
//! Under a span, the inner format writes its line into a per-thread buffer (reused: no
//! allocation once warm; more than 64 KiB is not kept), which then goes out with the ids
//! inserted: about 1 150 instructions per line over the inner format alone (+10 %), by
//! `bash benches/callgrind_logs.sh`. With no span, the inner format writes straight
//! through. The inner format's [`Writer`] then reports no ANSI colours (JSON has none).
//!
//! [spec]: https://opentelemetry.io/docs/specs/otel/compatibility/logging_trace_context/
//! [`Context`]: opentelemetry::Context

use std::fmt;

use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A [`FormatEvent`] that adds the current OpenTelemetry `trace_id` and `span_id` to each
/// JSON line of an inner format (by default `tracing-subscriber`'s
/// [`Format<Json>`](tracing_subscriber::fmt::format::Format)).
///
/// ```
/// use tower_otel_http::logs::TraceJson;
///
/// let format = TraceJson::new(); // the default JSON format
/// let format = TraceJson::new()
///     .with_format(tracing_subscriber::fmt::format().json().flatten_event(true))
///     .with_trace_flags(true);
/// ```
///
/// See the [module docs](crate::logs).
#[derive(Clone, Debug)]
pub struct TraceJson<F = Format<Json>> {
    inner: F,
    trace_flags: bool,
}

impl TraceJson {
    /// Adds the ids to `tracing-subscriber`'s default JSON format
    /// (`tracing_subscriber::fmt::format().json()`).
    pub fn new() -> Self {
        Self::default()
    }
}

impl Default for TraceJson {
    fn default() -> Self {
        Self {
            inner: tracing_subscriber::fmt::format().json(),
            trace_flags: false,
        }
    }
}

impl<F> TraceJson<F> {
    /// Adds the ids to the lines of `inner` instead, which must write one JSON object per
    /// event: a configured `Format<Json>` (`fmt::format().json().flatten_event(true)`),
    /// or a JSON format of your own.
    pub fn with_format<F2>(self, inner: F2) -> TraceJson<F2> {
        TraceJson {
            inner,
            trace_flags: self.trace_flags,
        }
    }

    /// Also adds `trace_flags`, the span's W3C trace flags as two hex digits (`"01"`:
    /// sampled). Off by default.
    pub fn with_trace_flags(self, trace_flags: bool) -> Self {
        Self {
            trace_flags,
            ..self
        }
    }

    /// The inner format.
    pub fn get_ref(&self) -> &F {
        &self.inner
    }
}

impl<S, N, F> FormatEvent<S, N> for TraceJson<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // OpenTelemetry logs some of its own warnings while it holds the current context
        // (a context attached or dropped out of order): reading it then would panic.
        // Those lines are not a request's: they go out without ids.
        let ids = if event.metadata().target().starts_with("opentelemetry") {
            None
        } else {
            Ids::current(self.trace_flags)
        };
        let Some(ids) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        LINE.with(|line| {
            // An event logged while one is formatted (by a field's `Debug`, say) is
            // written without the buffer, and without the ids.
            let Ok(mut line) = line.try_borrow_mut() else {
                return self.inner.format_event(ctx, writer, event);
            };
            line.clear();
            let formatted = self
                .inner
                .format_event(ctx, Writer::new(&mut *line), event)
                .and_then(|()| splice(&mut writer, &line, &ids));
            // A huge line does not keep its memory.
            if line.capacity() > MAX_KEPT {
                *line = String::new();
            }
            formatted
        })
    }
}

/// The most memory the per-thread line buffer keeps between events.
const MAX_KEPT: usize = 64 * 1024;

thread_local! {
    /// The inner format's line, before the ids go in: one buffer per thread, reused (the
    /// `fmt` layer buffers its lines the same way).
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The ids of the current span context, formatted as JSON members:
/// `"trace_id":"…","span_id":"…"` (and `,"trace_flags":"01"`).
struct Ids {
    buf: [u8; Ids::MAX],
    len: usize,
}

impl Ids {
    const MAX: usize = r#""trace_id":"","span_id":"","trace_flags":"""#.len() + 32 + 16 + 2;

    fn current(trace_flags: bool) -> Option<Self> {
        opentelemetry::Context::map_current(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid().then(|| Self::new(sc, trace_flags))
        })
    }

    fn new(sc: &SpanContext, trace_flags: bool) -> Self {
        let mut ids = Self {
            buf: [0; Self::MAX],
            len: 0,
        };
        ids.push(br#""trace_id":""#);
        ids.hex(&sc.trace_id().to_bytes());
        ids.push(br#"","span_id":""#);
        ids.hex(&sc.span_id().to_bytes());
        ids.push(b"\"");
        if trace_flags {
            ids.push(br#","trace_flags":""#);
            ids.hex(&[sc.trace_flags().to_u8()]);
            ids.push(b"\"");
        }
        ids
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn hex(&mut self, bytes: &[u8]) {
        let end = self.len + 2 * bytes.len();
        crate::propagation::hex_into(&mut self.buf[self.len..end], bytes);
        self.len = end;
    }

    fn as_str(&self) -> Result<&str, fmt::Error> {
        std::str::from_utf8(&self.buf[..self.len]).map_err(|_| fmt::Error)
    }
}

/// JSON's insignificant whitespace.
fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Writes `line` to `out` with `ids`' members inserted before its closing `}`, when it is
/// a JSON object (starts with `{` and ends with `}`, around whitespace); else unchanged.
fn splice(out: &mut impl fmt::Write, line: &str, ids: &Ids) -> fmt::Result {
    let body = line.trim_end_matches(is_ws);
    let close = match body.strip_suffix('}') {
        Some(open) if line.trim_start_matches(is_ws).starts_with('{') => open.len(),
        _ => return out.write_str(line),
    };
    let (before, after) = line.split_at(close);
    out.write_str(before)?;
    if !before.trim_end_matches(is_ws).ends_with('{') {
        out.write_char(',')?;
    }
    out.write_str(ids.as_str()?)?;
    out.write_str(after)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::Context;
    use serde_json::Value;
    use tracing_subscriber::fmt::format::{self, DefaultFields, Full};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN_ID: &str = "00f067aa0ba902b7";

    fn context(flags: TraceFlags) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex(TRACE_ID).unwrap(),
            SpanId::from_hex(SPAN_ID).unwrap(),
            flags,
            true,
            TraceState::default(),
        ))
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Capture {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// The lines `log` writes through `format`, with `cx` current (if any).
    fn lines<F>(format: F, cx: Option<Context>, log: impl FnOnce()) -> Vec<String>
    where
        F: FormatEvent<tracing_subscriber::Registry, format::JsonFields> + Send + Sync + 'static,
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .event_format(format)
                .with_writer(capture.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let _attached = cx.map(Context::attach);
            log();
        });
        capture.lines()
    }

    fn json() -> Format<Json, ()> {
        format().json().without_time()
    }

    fn format() -> Format {
        tracing_subscriber::fmt::format()
    }

    fn parse(line: &str) -> serde_json::Map<String, Value> {
        match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a JSON object: {line:?}: {other:?}"),
        }
    }

    /// The same event through the inner format alone and through `TraceJson` with a span
    /// current: the same object, plus the ids at the end.
    fn assert_spliced<F>(inner: F, log: impl Fn())
    where
        F: FormatEvent<tracing_subscriber::Registry, format::JsonFields>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let plain = lines(inner.clone(), None, &log);
        let traced = lines(
            TraceJson::new().with_format(inner),
            Some(context(TraceFlags::SAMPLED)),
            &log,
        );
        assert_eq!(plain.len(), traced.len());
        for (plain, traced) in plain.iter().zip(&traced) {
            let mut expected = parse(plain);
            expected.insert("trace_id".into(), TRACE_ID.into());
            expected.insert("span_id".into(), SPAN_ID.into());
            let got = parse(traced);
            assert_eq!(got, expected, "{traced}");
            // Appended at the end, one line each.
            let end = format!(r#","trace_id":"{TRACE_ID}","span_id":"{SPAN_ID}"}}"#);
            assert!(traced.ends_with(&end), "{traced}");
            assert!(!traced.contains('\n'));
        }
    }

    #[test]
    fn adds_the_current_span_context_ids() {
        let lines = lines(TraceJson::new(), Some(context(TraceFlags::SAMPLED)), || {
            tracing::info!(answer = 42, "hello");
        });
        assert_eq!(lines.len(), 1);
        let line = parse(&lines[0]);
        assert_eq!(line["trace_id"], TRACE_ID);
        assert_eq!(line["span_id"], SPAN_ID);
        assert_eq!(line["fields"]["message"], "hello");
        assert_eq!(line["fields"]["answer"], 42);
        assert_eq!(line["level"], "INFO");
        assert!(line.contains_key("timestamp"));
        assert!(!line.contains_key("trace_flags"));
    }

    #[test]
    fn without_a_current_span_the_line_is_unchanged() {
        let log = || tracing::info!(answer = 42, "hello");
        let plain = lines(json(), None, log);
        assert_eq!(
            lines(TraceJson::new().with_format(json()), None, log),
            plain
        );
        // A context with no span, or an invalid one, is no span.
        let invalid = Context::new().with_remote_span_context(SpanContext::empty_context());
        assert_eq!(
            lines(TraceJson::new().with_format(json()), Some(invalid), log),
            plain
        );
        assert_eq!(
            lines(
                TraceJson::new().with_format(json()),
                Some(Context::new()),
                log
            ),
            plain
        );
        assert!(!parse(&plain[0]).contains_key("trace_id"));
    }

    #[test]
    fn trace_flags_on_request() {
        for (flags, expected) in [(TraceFlags::SAMPLED, "01"), (TraceFlags::default(), "00")] {
            let lines = lines(
                TraceJson::new().with_trace_flags(true),
                Some(context(flags)),
                || tracing::info!("hello"),
            );
            let line = parse(&lines[0]);
            assert_eq!(line["trace_flags"], expected);
            assert_eq!(line["trace_id"], TRACE_ID);
            assert_eq!(line["span_id"], SPAN_ID);
        }
    }

    #[test]
    fn stays_valid_json_with_any_field_content() {
        let nasty = "a \"quoted\" }{ value\nwith a newline}\r\n\t\\ and \u{1b}[31m, é, 🦀}";
        for inner in [
            json(),
            json().flatten_event(true),
            json().with_current_span(false).with_span_list(false),
            json().flatten_event(true).with_current_span(false),
        ] {
            assert_spliced(inner, || {
                tracing::info!(text = nasty, "{nasty}");
                tracing::warn!(empty = "", "}}}}}}");
                tracing::error!(brace = "}", "trailing }}\n  ");
                let span = tracing::info_span!("request", path = "/a}\"b");
                let _entered = span.enter();
                tracing::info!(inner = "}", "in a span}}");
                let nested = tracing::info_span!("nested", n = 1);
                let _entered = nested.enter();
                tracing::debug!("}}");
            });
        }
    }

    #[test]
    fn any_field_layout_and_metadata() {
        let inner = json()
            .with_thread_ids(true)
            .with_thread_names(true)
            .with_file(true)
            .with_line_number(true)
            .with_level(false)
            .with_target(false);
        assert_spliced(inner, || tracing::info!(x = 1.5, y = true, "m"));
    }

    /// Not JSON: written as it is.
    #[test]
    fn other_formats_pass_through() {
        let inner: Format<Full, ()> = format().without_time().with_ansi(false);
        let log = || tracing::info!(a = "}", "{{x}}");
        let plain = lines(inner.clone(), None, log);
        let traced = lines(
            TraceJson::new().with_format(inner),
            Some(context(TraceFlags::SAMPLED)),
            log,
        );
        // The fields, formatted as JSON here, end the line with `}`.
        assert!(plain[0].ends_with('}'), "{}", plain[0]);
        assert_eq!(traced, plain);
    }

    /// An inner format that writes a fixed text, in the pieces given.
    #[derive(Clone)]
    struct Pieces(&'static [&'static str]);

    impl<S, N> FormatEvent<S, N> for Pieces
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            _: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            _: &Event<'_>,
        ) -> fmt::Result {
            self.0.iter().try_for_each(|piece| writer.write_str(piece))
        }
    }

    #[test]
    fn an_empty_object_gets_no_comma() {
        let lines = lines(
            TraceJson::new().with_format(Pieces(&["{", " ", "}", "\n"])),
            Some(context(TraceFlags::SAMPLED)),
            || tracing::info!("x"),
        );
        assert_eq!(
            lines,
            [format!(
                r#"{{ "trace_id":"{TRACE_ID}","span_id":"{SPAN_ID}"}}"#
            )]
        );
    }

    /// The splice of whole lines: objects get the members before their last `}`, other
    /// output is unchanged.
    #[test]
    fn splices_objects_only() {
        let ids = Ids::new(context(TraceFlags::SAMPLED).span().span_context(), false);
        let members = ids.as_str().unwrap().to_owned();
        let cases = [
            (
                r#"{"a":"}}"}"#.to_owned() + "\n",
                format!(r#"{{"a":"}}}}",{members}}}"#) + "\n",
            ),
            (
                r#"  {"a":{"b":{}} }"#.to_owned() + " \r\n",
                r#"  {"a":{"b":{}} ,"#.to_owned() + &members + "} \r\n",
            ),
            ("{}".to_owned(), format!("{{{members}}}")),
            ("{\n}\n".to_owned(), format!("{{\n{members}}}\n")),
            (
                r#"{"é":"🦀}"}"#.to_owned(),
                format!(r#"{{"é":"🦀}}",{members}}}"#),
            ),
            (
                format!("{{}}{}", " ".repeat(40)),
                format!("{{{members}}}{}", " ".repeat(40)),
            ),
            // Not an object, or not closed: unchanged.
            ("[1,{}]\n".to_owned(), "[1,{}]\n".to_owned()),
            ("plain}\n".to_owned(), "plain}\n".to_owned()),
            (r#"{"a":1"#.to_owned(), r#"{"a":1"#.to_owned()),
            ("}".to_owned(), "}".to_owned()),
            (String::new(), String::new()),
        ];
        for (input, expected) in cases {
            let mut out = String::new();
            splice(&mut out, &input, &ids).unwrap();
            assert_eq!(out, expected, "{input:?}");
            if expected.trim_start().starts_with('{') && expected != input {
                let value: Value = serde_json::from_str(&out).unwrap();
                assert_eq!(value["trace_id"], TRACE_ID);
            }
        }
    }

    /// OpenTelemetry's own warnings, logged while it holds the current context borrowed,
    /// are written (without ids) instead of panicking.
    #[test]
    fn opentelemetrys_own_warnings_are_written_without_ids() {
        let lines = lines(TraceJson::new(), Some(context(TraceFlags::SAMPLED)), || {
            // Attaching more contexts than its stack holds makes the API warn while it
            // holds the stack (the `internal-logs` feature is on in this build).
            let cx = context(TraceFlags::SAMPLED);
            let guards: Vec<_> = (0..usize::from(u16::MAX) + 2)
                .map(|_| cx.clone().attach())
                .collect();
            drop(guards);
        });
        assert!(
            lines.iter().any(|line| line.contains("opentelemetry")),
            "no warning from the API: {} lines",
            lines.len()
        );
        for line in &lines {
            let object = parse(line);
            if object["target"]
                .as_str()
                .unwrap_or("")
                .starts_with("opentelemetry")
            {
                assert!(!object.contains_key("trace_id"), "{line}");
            }
        }
    }

    /// The per-thread line buffer is reused, but a huge line does not keep its memory.
    #[test]
    fn a_huge_line_does_not_keep_its_buffer() {
        let capacity = || LINE.with(|line| line.borrow().capacity());
        let huge = lines(TraceJson::new(), Some(context(TraceFlags::SAMPLED)), || {
            tracing::info!(big = "x".repeat(200 * 1024).as_str(), "a huge line");
        });
        assert_eq!(parse(&huge[0])["trace_id"], TRACE_ID);
        assert!(capacity() <= MAX_KEPT, "{}", capacity());
        let small = lines(TraceJson::new(), Some(context(TraceFlags::SAMPLED)), || {
            tracing::info!("a small line");
        });
        assert_eq!(parse(&small[0])["trace_id"], TRACE_ID);
        assert!(
            capacity() > 0,
            "a small line's buffer is kept for the next one"
        );
    }

    #[test]
    fn ids_are_lowercase_hex() {
        let sc = SpanContext::new(
            TraceId::from_hex("0000000000000000000000000000ABCD").unwrap(),
            SpanId::from_hex("00000000000000EF").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        assert_eq!(
            Ids::new(&sc, true).as_str().unwrap(),
            r#""trace_id":"0000000000000000000000000000abcd","span_id":"00000000000000ef","trace_flags":"01""#
        );
        assert_eq!(Ids::new(&sc, true).len, Ids::MAX);
    }

    #[test]
    fn default_fields_compile() {
        // The default field formatter works too (spans' fields are then not JSON).
        fn assert_format<T: FormatEvent<tracing_subscriber::Registry, DefaultFields>>(_: T) {}
        assert_format(TraceJson::new());
    }
}
