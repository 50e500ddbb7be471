//! Counting the request body's bytes, and its message events, where the server layer can
//! re-wrap the body without changing the request's type: axum's `Body` (with the `axum`
//! feature).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::telemetry::{Direction, MessageEvents};

/// The bytes of a request body read so far, shared between the body and the record.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counter(Arc<AtomicU64>);

impl Counter {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Re-wraps an axum request body so that its bytes are counted as the handler reads them,
/// with a `read` event on `events`' span for each frame; `None` for any other body type,
/// or a body with nothing to read.
pub(crate) fn count_axum_body<B: 'static>(
    body: &mut B,
    events: Option<MessageEvents<'_>>,
) -> Option<Counter> {
    let body = (body as &mut dyn std::any::Any).downcast_mut::<axum::body::Body>()?;
    if body.is_end_stream() {
        return None;
    }
    let counter = Counter::default();
    let inner = std::mem::take(body);
    *body = axum::body::Body::new(Counting {
        inner,
        counter: counter.clone(),
        events: events.map(|events| ReadEvents {
            span: events.cx.clone(),
            span_start: events.span_start,
            start: events.start,
            frames: 0,
            total: 0,
        }),
    });
    Some(counter)
}

/// The `read` events of a request body: its span, on the span's clock.
struct ReadEvents {
    span: opentelemetry::Context,
    span_start: SystemTime,
    start: Instant,
    frames: u64,
    /// The bytes so far (the running total of the last frame).
    total: u64,
}

impl ReadEvents {
    fn events(&self) -> MessageEvents<'_> {
        MessageEvents {
            cx: &self.span,
            span_start: self.span_start,
            start: self.start,
            direction: Direction::Read,
        }
    }

    fn frame(&mut self, bytes: u64, total: u64) {
        self.frames += 1;
        self.total = total;
        self.events().frame(self.frames, bytes, total);
    }
}

/// The body ended, or was dropped before its end (a handler that stopped reading, a
/// size limit): the summary, when due, goes out once either way.
impl Drop for ReadEvents {
    fn drop(&mut self) {
        self.events().end(self.frames, self.total);
    }
}

pin_project! {
    /// A pass-through body that adds the length of each data frame to a counter.
    struct Counting<B> {
        #[pin]
        inner: B,
        counter: Counter,
        // The message events (`None`: off, or the body ended).
        events: Option<ReadEvents>,
    }
}

impl<B: Body> Body for Counting<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let result = this.inner.as_mut().poll_frame(cx);
        match &result {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = bytes::Buf::remaining(data) as u64;
                    let total = this.counter.0.fetch_add(n, Ordering::Relaxed) + n;
                    if let Some(events) = this.events {
                        events.frame(n, total);
                        if this.inner.is_end_stream() {
                            // The summary, when due, goes out as the events are dropped.
                            *this.events = None;
                        }
                    }
                } else if frame.is_trailers() {
                    *this.events = None;
                }
            }
            Poll::Ready(_) => *this.events = None,
            Poll::Pending => {}
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
