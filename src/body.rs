//! The pass-through response body shared by the server and client layers: it counts the
//! bytes that really pass, and ends the request's telemetry exactly once, on whichever way
//! the body ends first.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`Otel`](crate::server::Otel) and
    /// [`OtelClient`](crate::client::OtelClient): the inner body, untouched, with the same
    /// `Data` and `Error` types and the same `size_hint` and `is_end_stream`.
    ///
    /// It ends the request's span and records its metrics when the body ends: at its last
    /// frame, at trailers, on an error, or when it is dropped before that (the peer went
    /// away). See [When telemetry is recorded](crate#when-telemetry-is-recorded).
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        guard: BodyGuard,
    }
}

impl<B> ResponseBody<B> {
    /// A body that records nothing: the request was filtered out, or telemetry is off.
    pub(crate) fn passthrough(inner: B) -> Self {
        Self {
            inner,
            guard: BodyGuard {
                record: None,
                bytes: 0,
                expected: None,
                drop_completes: false,
                polling: false,
                frames: None,
            },
        }
    }

    /// Wraps `inner`; `expected` is the declared length; `drop_completes` says that being
    /// dropped before the end is not an abort (HEAD, 204, 304 on the server, whose bodies
    /// are never sent; any client body, which the caller may stop reading).
    /// `ended` is the body's `is_end_stream()`, read by the caller.
    #[inline]
    pub(crate) fn new(
        inner: B,
        record: Record,
        expected: Option<u64>,
        drop_completes: bool,
        ended: bool,
    ) -> Self {
        let frames = record
            .message_events()
            .is_some_and(|events| events.recording())
            .then_some(0);
        let mut guard = BodyGuard {
            record: Some(record),
            bytes: 0,
            expected,
            drop_completes,
            polling: false,
            frames,
        };
        // A consumer that sees an empty body may never poll it.
        if ended {
            guard.finish(BodyEnd::Complete);
        }
        Self { inner, guard }
    }

    /// Consumes `self`, returning the inner body. The telemetry ends now, without an
    /// error: what happens to the body afterwards is not seen.
    pub fn into_inner(self) -> B {
        let Self { inner, mut guard } = self;
        guard.finish(BodyEnd::Complete);
        inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(record) = &this.guard.record else {
            return this.inner.poll_frame(cx);
        };
        // User code may run while the body is produced (a stream): let it see the span.
        let _attached = record.context().map(|cx| cx.clone().attach());
        // Set while the inner body runs: if the guard is dropped then, it panicked.
        this.guard.polling = true;
        let result = this.inner.as_mut().poll_frame(cx);
        this.guard.polling = false;
        match &result {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = bytes::Buf::remaining(data) as u64;
                    this.guard.bytes += len;
                    if let Some(frames) = &mut this.guard.frames {
                        *frames += 1;
                        let events = this.guard.record.as_ref().and_then(|r| r.message_events());
                        if let Some(events) = events {
                            events.frame(*frames, len, this.guard.bytes);
                        }
                    }
                    // hyper stops polling once the body says it is done.
                    if this.inner.is_end_stream() {
                        this.guard.finish(BodyEnd::Complete);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    if let Some(record) = this.guard.record.as_mut() {
                        record.trailers(trailers);
                    }
                    this.guard.finish(BodyEnd::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.guard.finish(BodyEnd::Error(
                crate::attributes::error_type_name::<B::Error>(),
            )),
            Poll::Ready(None) => this.guard.finish(BodyEnd::Complete),
        }
        result
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("bytes", &self.guard.bytes)
            .field("recording", &self.guard.record.is_some())
            .finish()
    }
}

/// How a response body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// All of it was produced (end of stream, trailers, or the declared length).
    Complete,
    /// The body failed; the `error.type` is the error's type name.
    Error(&'static str),
    /// Dropped before the end: the peer went away, or the consumer gave up.
    Aborted,
    /// The body panicked while it produced a frame.
    Panic,
}

/// What a kind of call (a server request, a client request, ...) records when its
/// response body ends. The body knows no side: it says how the body ended, once, and the
/// record says what that means for its span and metrics.
pub(crate) trait CallRecord: Send + Sync + 'static {
    /// The context to make current while the body is polled: a server span, under which
    /// a streaming body's user code runs. A client body is polled by the caller, in the
    /// caller's own context (the default).
    fn context(&self) -> Option<&opentelemetry::Context> {
        None
    }

    /// The body's trailers went by (before it ends with [`BodyEnd::Complete`]).
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}

    /// The call's message events, when they are on (`message_events(true)`) and it has
    /// a span: the body reports its data frames there, if the span records.
    fn message_events(&self) -> Option<crate::telemetry::MessageEvents<'_>> {
        None
    }

    /// The body ended, `bytes` of data having passed.
    fn finish(self: Box<Self>, end: BodyEnd, bytes: u64);
}

/// The per-request state of whichever kind of call made the body.
pub(crate) type Record = Box<dyn CallRecord>;

/// Owns the record outside the pinned body so that `Drop` needs no `PinnedDrop`, and
/// finishes it exactly once (`Option::take`).
struct BodyGuard {
    record: Option<Record>,
    bytes: u64,
    expected: Option<u64>,
    drop_completes: bool,
    /// The inner body is being polled: a drop now is an unwind out of it.
    polling: bool,
    /// The data frames so far, when the record reports them (message events).
    frames: Option<u64>,
}

impl BodyGuard {
    fn finish(&mut self, end: BodyEnd) {
        if let Some(record) = self.record.take() {
            if let Some(frames) = self.frames {
                if let Some(events) = record.message_events() {
                    events.end(frames, self.bytes);
                }
            }
            record.finish(end, self.bytes);
        }
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        if self.record.is_none() {
            return;
        }
        // A stream sent with a Content-Length never says it ended: hyper drops it once
        // the declared length went out. HEAD, 204 and 304 bodies are never polled.
        let end = if self.polling || std::thread::panicking() {
            BodyEnd::Panic
        } else if self.drop_completes || self.expected == Some(self.bytes) {
            BodyEnd::Complete
        } else {
            BodyEnd::Aborted
        };
        self.finish(end);
    }
}
