use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::record::ClientRecord;
use crate::body::Record;
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
    pub(crate) fn new(inner: F, record: Option<ClientRecord>) -> Self {
        Self {
            inner,
            guard: FutureGuard(record),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("recording", &self.guard.0.is_some())
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
        let result = ready!(this.inner.poll(cx));
        let Some(mut record) = this.guard.0.take() else {
            return Poll::Ready(result.map(|res| res.map(ResponseBody::passthrough)));
        };
        Poll::Ready(match result {
            Ok(res) => {
                record.on_response(&res);
                let expected = res.body().size_hint().exact();
                let (parts, body) = res.into_parts();
                let body = ResponseBody::new(body, Record::Client(record), expected, false);
                Ok(Response::from_parts(parts, body))
            }
            Err(err) => {
                record.finish(Some(crate::attributes::error_type_name::<E>()), None);
                Err(err)
            }
        })
    }
}

/// Ends the record if the caller drops the future before a response: a cancellation the
/// caller chose, so not an error.
struct FutureGuard(Option<ClientRecord>);

impl Drop for FutureGuard {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            record.finish(None, None);
        }
    }
}
