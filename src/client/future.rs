use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::record::ClientRecord;
use crate::guard::{EndEarly, RequestGuard};
use crate::ResponseBody;

pin_project! {
    /// The response future of [`OtelClient`](super::OtelClient).
    ///
    /// When it resolves, the record moves into the [`ResponseBody`]; on an error the span
    /// ends at once; dropped before a response (the caller cancelled), the span ends
    /// without an error.
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
            .field("recording", &self.guard.is_recording())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: 'static,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let guard = this.guard;
        let inner = this.inner;
        let result = ready!(guard.user_code(|_| inner.poll(cx)));
        if !guard.is_recording() {
            return Poll::Ready(result.map(|res| res.map(ResponseBody::passthrough)));
        }
        Poll::Ready(match result {
            Ok(res) => {
                let (ended, drop_completes) = guard
                    .user_code(|record| {
                        let record = record.as_mut()?;
                        record.on_response(&res);
                        Some((res.body().is_end_stream(), !record.is_rpc()))
                    })
                    .unwrap_or((false, true));
                let (parts, body) = res.into_parts();
                let body = match guard.take() {
                    // The caller may stop reading an HTTP body at any point: a dropped body
                    // is the end, not an abort, so no declared length is needed. A gRPC
                    // call dropped before its trailers is cancelled.
                    Some(record) => ResponseBody::new(body, record, None, drop_completes, ended),
                    None => ResponseBody::passthrough(body),
                };
                Ok(Response::from_parts(parts, body))
            }
            Err(err) => {
                if let Some(record) = guard.take() {
                    let (error_type, description) = crate::errors::transport_failure(&err);
                    (*record).transport_error(
                        error_type,
                        description,
                        crate::attributes::error_type_name::<E>(),
                    );
                }
                Err(err)
            }
        })
    }
}

/// The client's guard: see [`RequestGuard`].
pub(crate) type FutureGuard = RequestGuard<Box<ClientRecord>>;

impl EndEarly for Box<ClientRecord> {
    /// Dropped before a response: a cancellation the caller chose, so not an error; a
    /// panic is one.
    fn end_early(self, panicked: bool) {
        (*self).end_early(panicked);
    }
}
