//! The client layer (in progress).
