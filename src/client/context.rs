//! The caller's context, carried with the request to a client service that runs
//! elsewhere (a `Buffer`'s worker task).

use std::task::{Context as TaskContext, Poll};

use opentelemetry::Context;
use tower_layer::Layer;
use tower_service::Service;

/// The parent of a request's CLIENT span, carried in the request's extensions.
///
/// [`OtelClientLayer`](super::OtelClientLayer) makes its span a child of the **current**
/// context of the task that calls it. Where that is not the caller's task, the parent is
/// lost and the span starts a new trace: a client behind a `tower::buffer::Buffer` is
/// called from the buffer's worker task. A request that carries a `ParentContext` gets
/// that parent wherever it is sent from. Insert it by hand, or put
/// [`CaptureContextLayer`] outside the buffer.
///
/// ```
/// use tower_otel_http::client::ParentContext;
///
/// let mut req = http::Request::get("http://api.local/").body(()).unwrap();
/// req.extensions_mut().insert(ParentContext::current());
/// ```
///
/// See [Context across tasks and buffers](super#context-across-tasks-and-buffers).
#[derive(Clone, Debug)]
pub struct ParentContext(pub Context);

impl ParentContext {
    /// The current context of this task.
    pub fn current() -> Self {
        Self(Context::current())
    }
}

/// A [`Layer`] that puts the caller's current context into each request as a
/// [`ParentContext`] (unless the request carries one), for an
/// [`OtelClientLayer`](super::OtelClientLayer) that runs on another task: place it
/// **outside** a `Buffer`.
///
/// ```
/// # use bytes::Bytes;
/// # use http_body_util::Full;
/// # use hyper_util::client::legacy::Client;
/// # use hyper_util::rt::TokioExecutor;
/// use tower::ServiceBuilder;
/// use tower_otel_http::client::CaptureContextLayer;
/// use tower_otel_http::OtelClientLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let client = ServiceBuilder::new()
///     .layer(CaptureContextLayer::new()) // on the caller's task
///     .buffer(64)                        // calls the layers below from its worker task
///     .layer(OtelClientLayer::new())
///     .service(client);
/// # drop(client);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureContextLayer {
    _private: (),
}

impl CaptureContextLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for CaptureContextLayer {
    type Service = CaptureContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CaptureContext { inner }
    }
}

/// The service of [`CaptureContextLayer`].
#[derive(Clone, Debug)]
pub struct CaptureContext<S> {
    inner: S,
}

impl<S> CaptureContext<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S, B> Service<http::Request<B>> for CaptureContext<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if req.extensions().get::<ParentContext>().is_none() {
            req.extensions_mut().insert(ParentContext::current());
        }
        self.inner.call(req)
    }
}
