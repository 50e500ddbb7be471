//! W3C Trace Context propagation (placeholder; being written).
