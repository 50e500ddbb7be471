//! Counting the request body's bytes, and its message events, where the server layer can
//! re-wrap the body without changing the request's type: axum's `Body` (with the `axum`
//! feature).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

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
    events: Option<opentelemetry::Context>,
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
        events,
        frames: 0,
    });
    Some(counter)
}

pin_project! {
    /// A pass-through body that adds the length of each data frame to a counter.
    struct Counting<B> {
        #[pin]
        inner: B,
        counter: Counter,
        // The span of the message events (`None`: off, or the body ended).
        events: Option<opentelemetry::Context>,
        frames: u64,
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
        let ended = match &result {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) => {
                    let n = bytes::Buf::remaining(data) as u64;
                    let total = this.counter.0.fetch_add(n, Ordering::Relaxed) + n;
                    if let Some(span) = this.events {
                        *this.frames += 1;
                        crate::telemetry::message_event(
                            span,
                            crate::telemetry::Direction::Read,
                            *this.frames,
                            n,
                            total,
                        );
                    }
                    this.inner.is_end_stream()
                }
                None => frame.is_trailers(),
            },
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if ended {
            if let Some(span) = this.events.take() {
                crate::telemetry::message_summary(
                    &span,
                    crate::telemetry::Direction::Read,
                    *this.frames,
                    this.counter.get(),
                );
            }
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
