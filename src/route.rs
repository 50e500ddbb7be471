//! The route tag: [`HttpRoute`], and [`HttpRouteLayer`], which tags a route's responses.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use opentelemetry::StringValue;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// The low-cardinality route template of a request, such as `/users/{id}`: the
/// `http.route` attribute, and the `{route}` of the server span's name `{method} {route}`.
///
/// [`OtelLayer`](crate::OtelLayer) looks for it in the **request** extensions when the
/// request arrives (an outer router that already matched sets it there), and otherwise in
/// the **response** extensions when the inner service answers. That second place lets an
/// `OtelLayer` that wraps a whole router still learn the route from a tag set deep inside
/// it, by [`HttpRouteLayer`] or by hand.
///
/// Inside a router, tag the **response** (as [`HttpRouteLayer`] does): a tag inserted
/// into the request by a layer *inside* the `OtelLayer` comes after the layer looked.
///
/// Never put a raw path here: the value becomes a metric attribute, and one series is
/// kept per distinct value.
///
/// Cloning is cheap: a `&'static str` or an `Arc<str>`.
///
/// ```
/// use tower_otel_http::HttpRoute;
///
/// let route = HttpRoute::from_static("/users/{id}");
/// assert_eq!(route.as_str(), "/users/{id}");
/// assert_eq!(HttpRoute::new(String::from("/users/{id}")), route);
/// ```
#[derive(Clone)]
pub struct HttpRoute(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl HttpRoute {
    /// A route from a string literal; costs nothing to create or clone.
    pub const fn from_static(route: &'static str) -> Self {
        Self(Repr::Static(route))
    }

    /// A route from a runtime string.
    pub fn new(route: impl Into<Arc<str>>) -> Self {
        Self(Repr::Shared(route.into()))
    }

    /// The route template.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// A layer that tags every response with `route`: the same as
    /// [`HttpRouteLayer::new`].
    #[deprecated(since = "0.2.0", note = "use `HttpRouteLayer::new`")]
    pub fn layer(route: impl Into<HttpRoute>) -> HttpRouteLayer {
        HttpRouteLayer::new(route)
    }

    /// A layer that tags each response with the route axum matched: the same as
    /// [`HttpRouteLayer::matched_path`].
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    #[deprecated(since = "0.2.0", note = "use `HttpRouteLayer::matched_path`")]
    pub fn matched_path_layer() -> HttpRouteLayer {
        HttpRouteLayer::matched_path()
    }

    pub(crate) fn value(&self) -> StringValue {
        match &self.0 {
            Repr::Static(s) => StringValue::from(*s),
            Repr::Shared(s) => StringValue::from(s.clone()),
        }
    }

    /// The route a request carries: our tag, else (with the `axum` feature) axum's
    /// `MatchedPath`.
    pub(crate) fn from_extensions(ext: &http::Extensions) -> Option<Self> {
        if let Some(route) = ext.get::<HttpRoute>().filter(|r| !r.as_str().is_empty()) {
            return Some(route.clone());
        }
        #[cfg(feature = "axum")]
        if let Some(path) = ext
            .get::<axum::extract::MatchedPath>()
            .filter(|p| !p.as_str().is_empty())
        {
            return Some(HttpRoute::new(path.as_str()));
        }
        None
    }
}

impl From<&'static str> for HttpRoute {
    fn from(route: &'static str) -> Self {
        Self::from_static(route)
    }
}

impl From<String> for HttpRoute {
    fn from(route: String) -> Self {
        Self::new(route)
    }
}

impl From<Arc<str>> for HttpRoute {
    fn from(route: Arc<str>) -> Self {
        Self::new(route)
    }
}

impl PartialEq for HttpRoute {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HttpRoute {}

impl std::hash::Hash for HttpRoute {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for HttpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HttpRoute").field(&self.as_str()).finish()
    }
}

impl fmt::Display for HttpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tags responses with an [`HttpRoute`], for an [`OtelLayer`](crate::OtelLayer) outside.
///
/// See the [`HttpRoute`] docs.
#[derive(Clone, Debug)]
pub struct HttpRouteLayer {
    source: Source,
}

impl HttpRouteLayer {
    /// A layer that tags every response of the service it wraps with `route`, so that an
    /// outer [`OtelLayer`](crate::OtelLayer) records it. Put it on one route's service,
    /// inside the `OtelLayer`.
    ///
    /// ```
    /// use tower::ServiceBuilder;
    /// use tower_otel_http::HttpRouteLayer;
    /// # let handler = tower::service_fn(|_req: http::Request<String>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// # });
    /// let user = ServiceBuilder::new()
    ///     .layer(HttpRouteLayer::new("/users/{id}"))
    ///     .service(handler);
    /// ```
    pub fn new(route: impl Into<HttpRoute>) -> Self {
        crate::config::ROUTES_TAGGED_BY_HAND.store(true, std::sync::atomic::Ordering::Relaxed);
        Self {
            source: Source::Fixed(route.into()),
        }
    }

    /// A layer for axum's `Router::route_layer` that tags each response with the route
    /// template axum matched (`MatchedPath`), for an [`OtelLayer`](crate::OtelLayer) that
    /// wraps the whole router from outside (where `MatchedPath` is not yet known).
    /// [`OtelLayer::wrap_router`](crate::OtelLayer::wrap_router) adds it for you.
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use tower_otel_http::HttpRouteLayer;
    ///
    /// let app: Router = Router::new()
    ///     .route("/users/{id}", get(|| async { "user" }))
    ///     .route_layer(HttpRouteLayer::matched_path());
    /// ```
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn matched_path() -> Self {
        Self {
            source: Source::MatchedPath,
        }
    }
}

#[derive(Clone, Debug)]
enum Source {
    Fixed(HttpRoute),
    #[cfg(feature = "axum")]
    MatchedPath,
}

impl<S> Layer<S> for HttpRouteLayer {
    type Service = HttpRouteService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpRouteService {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service of [`HttpRouteLayer`].
///
/// See the [`HttpRoute`] docs.
#[derive(Clone, Debug)]
pub struct HttpRouteService<S> {
    inner: S,
    source: Source,
}

impl<S> HttpRouteService<S> {
    crate::macros::define_inner_service_accessors!();
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for HttpRouteService<S>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let route = match &self.source {
            Source::Fixed(route) => Some(route.clone()),
            #[cfg(feature = "axum")]
            Source::MatchedPath => req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| HttpRoute::new(p.as_str())),
        };
        ResponseFuture {
            inner: self.inner.call(req),
            route,
        }
    }
}

pin_project! {
    /// The response future of [`HttpRouteService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        route: Option<HttpRoute>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(route)) = (&mut result, this.route.take()) {
            response.extensions_mut().insert(route);
        }
        Poll::Ready(result)
    }
}
