use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::future::FutureGuard;
use super::layer::Shared;
use super::record::{request_uri, ServerRecord};
use super::ResponseFuture;
use crate::ResponseBody;

/// Marks a request that an [`Otel`] service records, for any `Otel` inside it to pass it
/// through.
#[derive(Clone, Copy, Debug)]
struct Recorded;

/// The service of [`OtelLayer`](super::OtelLayer): traces and measures each request to
/// the inner service.
///
/// The response and error types are the inner service's, the body wrapped in a
/// pass-through [`ResponseBody`]. Cloning costs one atomic increment.
///
/// See the [module docs](crate::server).
#[derive(Clone)]
pub struct Otel<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S> Otel<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for Otel<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otel")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Otel<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: 'static,
    ReqB: Body + 'static,
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
        let shared = &self.shared;
        if shared.inert {
            return ResponseFuture::new(self.inner.call(req), FutureGuard::entering(None).left());
        }
        let config = &shared.config;
        let mut req = req;
        // An `OtelLayer` outside already records this request (an app-wide layer around
        // a router that has its own): one span and one set of points per request. One
        // map operation marks the request and says whether it was marked.
        if req.extensions_mut().insert(Recorded).is_some() {
            return ResponseFuture::new(self.inner.call(req), FutureGuard::entering(None).left());
        }
        if let Some(excluded) = &config.excluded_paths {
            let path = request_uri(&req).path();
            if excluded.iter().any(|p| p.matches(path)) {
                // Not recorded here: an `OtelLayer` inside may record it.
                req.extensions_mut().remove::<Recorded>();
                return ResponseFuture::new(
                    self.inner.call(req),
                    FutureGuard::entering(None).left(),
                );
            }
        }
        let mut public = false;
        let req = if config.filter.is_some() || config.public_endpoint.is_some() {
            let (mut parts, body) = req.into_parts();
            let recorded = config.filter.as_ref().map_or(true, |f| f(&parts));
            public = config.public_endpoint.as_ref().is_some_and(|p| p(&parts));
            if !recorded {
                parts.extensions.remove::<Recorded>();
                return ResponseFuture::new(
                    self.inner.call(Request::from_parts(parts, body)),
                    FutureGuard::entering(None).left(),
                );
            }
            Request::from_parts(parts, body)
        } else {
            req
        };
        // Boxed: the future and the body stay small, which every move of them pays for.
        #[cfg_attr(not(feature = "axum"), allow(unused_mut))] // counting needs it
        let mut record = Box::new(ServerRecord::start(shared, &req, public));
        #[cfg(feature = "axum")]
        let req = record.count_request_body(req);
        let mut req = req;
        if let Some(labeler) = record.labeler() {
            req.extensions_mut().insert(labeler.clone());
        }
        let guard = FutureGuard::entering(Some(record));
        // Handlers that run inside `call` see the span too.
        let future = match guard.record().and_then(|record| record.context()) {
            Some(cx) => {
                let _attached = cx.clone().attach();
                self.inner.call(req)
            }
            None => self.inner.call(req),
        };
        ResponseFuture::new(future, guard.left())
    }
}
