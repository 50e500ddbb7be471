//! OpenTelemetry traces and metrics for tower/hyper HTTP servers and clients.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attributes;
mod body;
pub mod client;
mod macros;
pub mod propagation;
mod route;
mod semconv;
pub mod server;
mod telemetry;

pub use body::ResponseBody;
pub use client::OtelClientLayer;
pub use route::{HttpRoute, HttpRouteLayer, HttpRouteService, RouteFuture};
pub use server::{OtelLayer, PeerAddr};
