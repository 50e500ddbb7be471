//! OpenTelemetry traces and metrics for tower/hyper HTTP servers and clients.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod propagation;
