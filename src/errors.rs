//! What a failed client call says: a low-cardinality `error.type` for the usual transport
//! failures, and the error's messages as the span status description.
//!
//! The client layer knows its inner service's error only as a type parameter. It looks at
//! the error where the type is one it can see through: a boxed error (`tower`'s
//! `BoxError`, what a `Buffer` or a `Timeout` returns), an `std::io::Error`, and, with the
//! `hyper-util` feature (on with `reqwest`), hyper-util's legacy client `Error`; it then
//! walks the error's `source()` chain. Any other error keeps its type name as
//! `error.type` and the generic description.

use std::any::Any;
use std::error::Error;
use std::io;

use crate::attributes;

/// `error.type` when the connection could not be established (refused, unreachable,
/// name resolution).
pub(crate) const CONNECT: &str = "connect";
/// `error.type` when a deadline passed (connecting, or waiting for the response).
pub(crate) const TIMEOUT: &str = "timeout";
/// `error.type` when the server closed the connection before a complete response.
pub(crate) const CONNECTION_CLOSED: &str = "connection_closed";
/// `error.type` when the connection was reset.
pub(crate) const CONNECTION_RESET: &str = "connection_reset";

/// `error.type` of a call whose inner service, or response body, panicked.
pub(crate) const PANIC: &str = "panic";

type BoxError = Box<dyn Error + Send + Sync>;

/// The `error.type` and the status description of a failed call whose error is `err`.
pub(crate) fn transport_failure<E: 'static>(err: &E) -> (&'static str, Option<String>) {
    match as_error(err) {
        Some(e) => (
            classify(e).unwrap_or_else(attributes::error_type_name::<E>),
            Some(describe(e)),
        ),
        None => (attributes::error_type_name::<E>(), None),
    }
}

/// The messages of `err` and its sources, where its type is one this module can see
/// through.
pub(crate) fn message<E: 'static>(err: &E) -> Option<String> {
    as_error(err).map(describe)
}

/// `err` as an `std::error::Error`, where its type is one this module can see through.
fn as_error<E: 'static>(err: &E) -> Option<&(dyn Error + 'static)> {
    let any = err as &dyn Any;
    if let Some(e) = any.downcast_ref::<BoxError>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<io::Error>() {
        return Some(e);
    }
    #[cfg(feature = "hyper-util")]
    if let Some(e) = any.downcast_ref::<hyper_util::client::legacy::Error>() {
        return Some(e);
    }
    None
}

/// The class of a transport failure, from every error of the chain: a timeout anywhere
/// wins (a connect timeout is a timeout), then a failed connect, then how an established
/// connection ended.
pub(crate) fn classify(err: &(dyn Error + 'static)) -> Option<&'static str> {
    let mut class = None;
    let mut error = Some(err);
    while let Some(e) = error {
        let this = classify_one(e);
        if this == Some(TIMEOUT) {
            return this;
        }
        if class.is_none() || this == Some(CONNECT) {
            class = this.or(class);
        }
        error = e.source();
    }
    class
}

fn classify_one(e: &(dyn Error + 'static)) -> Option<&'static str> {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return match io.kind() {
            io::ErrorKind::TimedOut => Some(TIMEOUT),
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable => Some(CONNECT),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                Some(CONNECTION_RESET)
            }
            io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => Some(CONNECTION_CLOSED),
            _ => None,
        };
    }
    #[cfg(feature = "hyper-util")]
    {
        if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            return client.is_connect().then_some(CONNECT);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            return if hyper.is_timeout() {
                Some(TIMEOUT)
            } else if hyper.is_incomplete_message() || hyper.is_closed() {
                Some(CONNECTION_CLOSED)
            } else {
                None
            };
        }
    }
    None
}

/// The messages of the error and of its sources, joined by `": "` (each said once:
/// some errors repeat their source's message), bounded.
pub(crate) fn describe(err: &(dyn Error + 'static)) -> String {
    let mut out = String::new();
    let mut error = Some(err);
    while let Some(e) = error {
        let message = e.to_string();
        if !message.is_empty() && !out.ends_with(&message) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&message);
        }
        if out.len() >= attributes::MAX_VALUE_LEN {
            break;
        }
        error = e.source();
    }
    let end = attributes::bounded(&out).len();
    out.truncate(end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn refused_connection_through_a_boxed_error() {
        let err: BoxError = Box::new(Outer(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )));
        let (error_type, description) = transport_failure(&err);
        assert_eq!(error_type, CONNECT);
        assert_eq!(
            description.as_deref(),
            Some("client error (Connect): Connection refused (os error 111)")
        );
    }

    #[test]
    fn a_timeout_anywhere_in_the_chain_wins() {
        let err = Outer(io::Error::new(
            io::ErrorKind::TimedOut,
            "deadline has elapsed",
        ));
        assert_eq!(classify(&err), Some(TIMEOUT));
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(transport_failure(&reset).0, CONNECTION_RESET);
    }

    #[test]
    fn errors_it_cannot_see_through_keep_their_type_name() {
        #[derive(Debug)]
        struct Opaque;
        let (error_type, description) = transport_failure(&Opaque);
        assert!(error_type.ends_with("Opaque"), "{error_type}");
        assert!(description.is_none());
        // An error that says nothing known keeps the type name too.
        let other: BoxError = Box::new(io::Error::other("odd"));
        let (error_type, description) = transport_failure(&other);
        assert_eq!(error_type, "Box<dyn Error + Send + Sync>");
        assert_eq!(description.as_deref(), Some("odd"));
    }

    #[test]
    fn descriptions_are_bounded() {
        let long = io::Error::other("x".repeat(10_000));
        assert_eq!(describe(&long).len(), attributes::MAX_VALUE_LEN);
    }
}
