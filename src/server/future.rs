use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::record::{Early, ServerRecord};
use crate::guard::{EndEarly, RequestGuard};
use crate::ResponseBody;

/// `Server-Timing`, which `http` has no constant for.
const SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");

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
        let poll = {
            let _attached = guard
                .record()
                .and_then(|record| record.context())
                .map(|cx| cx.clone().attach());
            let inner = this.inner;
            guard.user_code(|_| inner.poll(cx))
        };
        let result = ready!(poll);
        if !guard.is_recording() {
            return Poll::Ready(result.map(|res| res.map(ResponseBody::passthrough)));
        }
        Poll::Ready(match result {
            Ok(res) => {
                // A span-name callback and the body's hints are user code: the record
                // stays in the guard until the body owns it.
                let (expected, bodiless, ended, timing, at_head) = guard
                    .user_code(|record| {
                        let record = record.as_mut()?;
                        record.on_response(&res);
                        Some((
                            record.expected_body_len(&res),
                            record.bodiless(),
                            res.body().is_end_stream(),
                            record.server_timing(),
                            record.ends_at_head(&res),
                        ))
                    })
                    .unwrap_or((None, false, false, None, false));
                if at_head {
                    if let Some(record) = guard.take() {
                        (*record).finish_at_head();
                    }
                }
                let (mut parts, body) = res.into_parts();
                if let Some(timing) = timing {
                    // Appended: the response's own `Server-Timing` entries stay.
                    parts.headers.append(SERVER_TIMING, timing);
                }
                let body = match guard.take() {
                    Some(record) => ResponseBody::new(body, record, expected, bodiless, ended),
                    None => ResponseBody::passthrough(body),
                };
                Ok(Response::from_parts(parts, body))
            }
            Err(err) => {
                if let Some(record) = guard.take() {
                    (*record).finish_early(Early::ServiceError(
                        crate::attributes::error_type_name::<E>(),
                        crate::errors::message(&err),
                    ));
                }
                Err(err)
            }
        })
    }
}

/// The server's guard: see [`RequestGuard`].
pub(crate) type FutureGuard = RequestGuard<Box<ServerRecord>>;

impl EndEarly for Box<ServerRecord> {
    fn end_early(self, panicked: bool) {
        (*self).finish_early(if panicked {
            Early::Panic
        } else {
            Early::Cancelled
        });
    }
}
