use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::FutureGuard;
use super::layer::ClientShared;
use super::record::ClientRecord;
use super::ResponseFuture;
use crate::ResponseBody;

/// The service of [`OtelClientLayer`](super::OtelClientLayer): a CLIENT span, context
/// injection and metrics for each request sent through the inner client.
///
/// The response and error types are the inner service's, the body wrapped in a
/// pass-through [`ResponseBody`]. Cloning costs one atomic increment.
///
/// See the [module docs](crate::client).
#[derive(Clone)]
pub struct OtelClient<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<ClientShared>,
}

impl<S> OtelClient<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for OtelClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelClient")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for OtelClient<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: 'static,
    ReqB: Body,
    ResB: Body,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if self.shared.inert || !self.shared.config.records(&req) {
            return ResponseFuture::new(self.inner.call(req), FutureGuard::entering(None).left());
        }
        let (record, req) = ClientRecord::start(&self.shared, req);
        let guard = FutureGuard::entering(Some(Box::new(record)));
        let future = self.inner.call(req);
        ResponseFuture::new(future, guard.left())
    }
}
