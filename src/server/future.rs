use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::record::{Early, ServerRecord};
use crate::body::Record;
use crate::ResponseBody;

pin_project! {
    /// The response future of [`Otel`](super::Otel).
    ///
    /// The request's context is current while the inner future is polled. When it resolves,
    /// the record moves into the [`ResponseBody`]; if it fails, or is dropped first, the
    /// span ends and the metrics are recorded right away.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: FutureGuard,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, guard: FutureGuard) -> Self {
        Self { inner, guard }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("recording", &self.guard.record.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _attached = this
                .guard
                .record
                .as_ref()
                .and_then(ServerRecord::context)
                .map(|cx| cx.clone().attach());
            this.guard.in_inner = true;
            let poll = this.inner.poll(cx);
            this.guard.in_inner = false;
            ready!(poll)
        };
        let Some(mut record) = this.guard.record.take() else {
            return Poll::Ready(result.map(|res| res.map(ResponseBody::passthrough)));
        };
        Poll::Ready(match result {
            Ok(res) => {
                record.on_response(&res);
                let expected = record.expected_body_len(&res);
                let bodiless = record.bodiless();
                let (parts, body) = res.into_parts();
                let body = ResponseBody::new(body, Record::Server(record), expected, bodiless);
                Ok(Response::from_parts(parts, body))
            }
            Err(err) => {
                record.finish_early(Early::ServiceError(
                    crate::attributes::error_type_name::<E>(),
                ));
                Err(err)
            }
        })
    }
}

/// Ends the record if the future is dropped before the inner service answered.
///
/// `in_inner` is set while the inner service's `call` or `poll` runs: if the guard is
/// dropped then, that code never returned, so it panicked. This holds even when a
/// `catch_unwind` outside drops the future only after the panic was caught (when
/// `std::thread::panicking()` is already false again).
pub(crate) struct FutureGuard {
    record: Option<ServerRecord>,
    in_inner: bool,
}

impl FutureGuard {
    /// A guard for a request about to enter the inner service's `call`.
    pub(crate) fn entering(record: Option<ServerRecord>) -> Self {
        Self {
            record,
            in_inner: true,
        }
    }

    /// The inner service's `call` returned.
    pub(crate) fn left(mut self) -> Self {
        self.in_inner = false;
        self
    }

    pub(crate) fn record(&self) -> Option<&ServerRecord> {
        self.record.as_ref()
    }
}

impl Drop for FutureGuard {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            let reason = if self.in_inner || std::thread::panicking() {
                Early::Panic
            } else {
                Early::Cancelled
            };
            record.finish_early(reason);
        }
    }
}
