//! The options both layers take, resolved once when a layer is built.
//!
//! One rule for the whole crate: **a builder option that cannot work panics in `build()`**,
//! with a message that names the option (an invalid header name, an empty list of known
//! methods, a metrics option on a layer built without metrics). Operators' settings come
//! from the environment instead, and a builder option always wins over them; a malformed
//! value there is reported once on standard error and ignored, never a panic, since a
//! service must not fail to start over a telemetry setting.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use http::header::HeaderName;
use http::Method;

use crate::attributes::{CapturedHeader, KnownMethods};
use crate::enrich::Enrichment;
use crate::semconv;
use crate::telemetry::Side;

/// `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`: the methods recorded as themselves.
pub(crate) const KNOWN_METHODS_ENV: &str = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS";
/// The header names whose values are recorded as `REDACTED` (Python's name).
pub(crate) const SANITIZE_FIELDS_ENV: &str =
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS";
/// The paths the server layer does not record.
pub(crate) const SERVER_EXCLUDED_PATHS_ENV: &str =
    "OTEL_INSTRUMENTATION_HTTP_SERVER_EXCLUDED_PATHS";

/// The variable that lists the headers to capture on one side.
fn capture_env(side: Side, response: bool) -> &'static str {
    match (side, response) {
        (Side::Server, false) => "OTEL_INSTRUMENTATION_HTTP_SERVER_CAPTURE_REQUEST_HEADERS",
        (Side::Server, true) => "OTEL_INSTRUMENTATION_HTTP_SERVER_CAPTURE_RESPONSE_HEADERS",
        (Side::Client, false) => "OTEL_INSTRUMENTATION_HTTP_CLIENT_CAPTURE_REQUEST_HEADERS",
        (Side::Client, true) => "OTEL_INSTRUMENTATION_HTTP_CLIENT_CAPTURE_RESPONSE_HEADERS",
    }
}

/// The header names whose captured values are `REDACTED` unless the user says otherwise:
/// credentials and session tokens.
pub(crate) const SENSITIVE_HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
];

/// The options the server and client builders share, as the user gave them.
#[derive(Debug, Default)]
pub(crate) struct Options {
    pub(crate) request_headers: Option<Vec<String>>,
    pub(crate) response_headers: Option<Vec<String>>,
    pub(crate) sensitive_headers: Option<Vec<String>>,
    pub(crate) known_methods: Option<Vec<String>>,
    pub(crate) sensitive_query_keys: Option<Vec<Cow<'static, str>>>,
    pub(crate) active_requests: bool,
    /// `None`: the side's default.
    pub(crate) body_size_metrics: Option<bool>,
    pub(crate) enrichment: Enrichment,
    pub(crate) response_head_event: bool,
    pub(crate) message_events: bool,
}

/// The shared options, checked and completed from the environment.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) request_headers: Arc<[CapturedHeader]>,
    pub(crate) response_headers: Arc<[CapturedHeader]>,
    pub(crate) known_methods: KnownMethods,
    pub(crate) sensitive_query_keys: Box<[Cow<'static, str>]>,
    pub(crate) active_requests: bool,
    pub(crate) body_size_metrics: bool,
    pub(crate) enrichment: Enrichment,
    pub(crate) response_head_event: bool,
    pub(crate) message_events: bool,
}

impl Options {
    /// Checks the options (an error names one that cannot work) and fills the unset ones
    /// from the environment. `metrics` says whether the layer records metrics at all;
    /// `body_sizes_by_default` is the side's default for the body-size histograms.
    pub(crate) fn resolve(
        self,
        side: Side,
        traces: bool,
        metrics: bool,
        body_sizes_by_default: bool,
    ) -> Result<Common, Misconfigured> {
        if !traces && self.enrichment.record_exception {
            return Err(Misconfigured::new(
                "record_exception",
                "is on, but the layer makes no spans",
            ));
        }
        if !traces && self.message_events {
            return Err(Misconfigured::new(
                "message_events",
                "is on, but the layer makes no spans",
            ));
        }
        if !metrics {
            if self.active_requests {
                return Err(Misconfigured::new(
                    "active_requests",
                    "is on, but the layer records no metrics",
                ));
            }
            if self.body_size_metrics == Some(true) {
                return Err(Misconfigured::new(
                    "body_size_metrics",
                    "is on, but the layer records no metrics",
                ));
            }
        }
        let sensitive: Vec<HeaderName> = match self.sensitive_headers {
            Some(names) => names
                .iter()
                .map(|n| header_name("sensitive_headers", n))
                .collect::<Result<_, _>>()?,
            None => from_env(SANITIZE_FIELDS_ENV, |v| {
                parse_list(SANITIZE_FIELDS_ENV, v, env_header_name)
            })
            .unwrap_or_else(|| {
                SENSITIVE_HEADERS
                    .iter()
                    .map(|n| HeaderName::from_static(n))
                    .collect()
            }),
        };
        let capture = |option: &'static str, given: Option<Vec<String>>, response: bool| {
            let (prefix, env) = match response {
                false => (semconv::HTTP_REQUEST_HEADER, capture_env(side, false)),
                true => (semconv::HTTP_RESPONSE_HEADER, capture_env(side, true)),
            };
            let names: Vec<HeaderName> = match given {
                Some(names) => names
                    .iter()
                    .map(|n| header_name(option, n))
                    .collect::<Result<_, _>>()?,
                None => from_env(env, |v| parse_list(env, v, env_header_name)).unwrap_or_default(),
            };
            Ok(crate::attributes::capture_list(prefix, names, &sensitive))
        };
        let known_methods = match self.known_methods {
            Some(methods) => {
                if methods.is_empty() {
                    return Err(Misconfigured::new(
                        "known_methods",
                        "is empty: every method would be recorded as _OTHER",
                    ));
                }
                for m in &methods {
                    if Method::from_bytes(m.trim().as_bytes()).is_err() {
                        return Err(Misconfigured::new(
                            "known_methods",
                            format!("has {m:?}, which is not an HTTP method"),
                        ));
                    }
                }
                KnownMethods::custom(methods)
            }
            None => from_env(KNOWN_METHODS_ENV, |v| {
                let list = parse_list(KNOWN_METHODS_ENV, v, |m| {
                    Method::from_bytes(m.as_bytes()).ok().map(|_| m.to_owned())
                })?;
                Some(KnownMethods::custom(list))
            })
            .unwrap_or(KnownMethods::Default),
        };
        let sensitive_query_keys = match self.sensitive_query_keys {
            Some(keys) => {
                if keys.iter().any(|k| k.is_empty()) {
                    return Err(Misconfigured::new(
                        "sensitive_query_keys",
                        "has an empty key",
                    ));
                }
                keys.into_boxed_slice()
            }
            None => semconv::SENSITIVE_QUERY_KEYS
                .iter()
                .map(|k| Cow::Borrowed(*k))
                .collect(),
        };
        Ok(Common {
            request_headers: capture("request_headers", self.request_headers, false)?,
            response_headers: capture("response_headers", self.response_headers, true)?,
            known_methods,
            sensitive_query_keys,
            active_requests: self.active_requests,
            body_size_metrics: metrics && self.body_size_metrics.unwrap_or(body_sizes_by_default),
            enrichment: self.enrichment,
            response_head_event: self.response_head_event,
            message_events: self.message_events,
        })
    }
}

/// A path the server layer does not record: exact, or every path under a prefix
/// (written with a trailing `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ExcludedPath {
    Exact(Box<str>),
    Prefix(Box<str>),
}

impl ExcludedPath {
    /// `None` for a pattern that is not a path.
    pub(crate) fn parse(pattern: &str) -> Option<Self> {
        let pattern = pattern.trim();
        if !pattern.starts_with('/') {
            return None;
        }
        Some(match pattern.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.into()),
            None => Self::Exact(pattern.into()),
        })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => **p == *path,
            Self::Prefix(p) => path.starts_with(&**p),
        }
    }
}

/// The server's excluded paths: the builder's, else the environment's; `None` when there
/// are none, so that a request pays for nothing.
pub(crate) fn excluded_paths(
    given: Option<Vec<String>>,
) -> Result<Option<Arc<[ExcludedPath]>>, Misconfigured> {
    let list: Vec<ExcludedPath> = match given {
        Some(patterns) => patterns
            .iter()
            .map(|p| {
                ExcludedPath::parse(p).ok_or_else(|| {
                    Misconfigured::new(
                        "excluded_paths",
                        format!("has {p:?}, which does not start with '/'"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        None => from_env(SERVER_EXCLUDED_PATHS_ENV, |v| {
            parse_list(SERVER_EXCLUDED_PATHS_ENV, v, ExcludedPath::parse)
        })
        .unwrap_or_default(),
    };
    Ok((!list.is_empty()).then(|| list.into()))
}

/// An option that cannot work: `build()` panics with it, at the caller's line.
#[derive(Debug)]
pub(crate) struct Misconfigured {
    option: &'static str,
    problem: Cow<'static, str>,
}

impl Misconfigured {
    pub(crate) fn new(option: &'static str, problem: impl Into<Cow<'static, str>>) -> Self {
        Self {
            option,
            problem: problem.into(),
        }
    }

    /// Panics, naming the option. Called straight from a `#[track_caller]` `build()`, so
    /// that the panic points at the user's code.
    #[track_caller]
    pub(crate) fn panic(self) -> ! {
        panic!(
            "tower-otel-http: the `{}` option {}",
            self.option, self.problem
        )
    }
}

fn header_name(option: &'static str, name: &str) -> Result<HeaderName, Misconfigured> {
    HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        Misconfigured::new(
            option,
            format!("has {name:?}, which is not a valid header name"),
        )
    })
}

fn env_header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// Reads `var` and parses a set value with `parse`; unset (or not Unicode, reported) is
/// `None`.
fn from_env<T>(var: &'static str, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    match std::env::var(var) {
        Ok(value) => parse(&value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            report_once(var, &format!("{var} is not valid Unicode; it is ignored"));
            None
        }
    }
}

/// A comma-separated list from the environment: each entry parsed by `item`; malformed
/// entries are reported once and skipped; a list with no valid entry is ignored (`None`),
/// and so is an empty value.
fn parse_list<T>(
    var: &'static str,
    value: &str,
    item: impl Fn(&str) -> Option<T>,
) -> Option<Vec<T>> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match item(entry) {
            Some(parsed) => out.push(parsed),
            None => bad.push(entry),
        }
    }
    if !bad.is_empty() {
        report_once(
            var,
            &format!("{var}: ignoring the malformed entries {bad:?}"),
        );
    }
    (!out.is_empty()).then_some(out)
}

/// Set when an [`HttpRouteLayer`](crate::HttpRouteLayer) is made: a program that tags its
/// routes by hand names them without axum's `MatchedPath`, so the missing `axum` feature
/// is no mistake there.
pub(crate) static ROUTES_TAGGED_BY_HAND: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Reports, once, an `OtelLayer` applied to an axum service in a build without this
/// crate's `axum` feature: it then reads neither `MatchedPath` (`http.route`) nor
/// `ConnectInfo` (`client.address`), which fails silently otherwise. Called where the
/// layer wraps a service (once per route under `Router::layer`), never per request.
#[cfg(not(feature = "axum"))]
pub(crate) fn axum_without_feature<S>() {
    if is_axum::<S>() && !ROUTES_TAGGED_BY_HAND.load(std::sync::atomic::Ordering::Relaxed) {
        report_once(
            "axum-feature",
            "OtelLayer wraps an axum service, but the `axum` feature of tower-otel-http is \
             off: no `http.route` from axum's `MatchedPath` and no `client.address` from \
             `ConnectInfo` will be recorded. Enable it: \
             tower-otel-http = { version = \"0.1\", features = [\"axum\"] }",
        );
    }
}

#[cfg(not(feature = "axum"))]
fn is_axum<S>() -> bool {
    std::any::type_name::<S>().starts_with("axum::")
}

/// Writes `message` to standard error the first time `key` is reported in this process;
/// returns whether it did.
pub(crate) fn report_once(key: &str, message: &str) -> bool {
    static REPORTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if reported.iter().any(|k| k == key) {
        return false;
    }
    reported.push(key.to_owned());
    eprintln!("tower-otel-http: {message}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_once_per_key() {
        assert!(report_once("test-key-a", "first"));
        assert!(!report_once("test-key-a", "again"));
        assert!(report_once("test-key-b", "another key"));
    }

    #[cfg(not(feature = "axum"))]
    #[test]
    fn an_axum_service_without_the_axum_feature_is_reported_once() {
        // What `Router::layer` hands a layer, and a whole router wrapped from outside.
        assert!(is_axum::<axum::routing::Route>());
        assert!(is_axum::<axum::Router>());
        assert!(!is_axum::<tower::util::BoxCloneService<(), (), ()>>());
        axum_without_feature::<axum::routing::Route>();
        assert!(!report_once("axum-feature", ""), "it was not reported");
    }

    #[test]
    fn env_lists_skip_malformed_entries() {
        let parsed = parse_list("TEST_VAR_1", " x-a, bad name ,,X-B", env_header_name).unwrap();
        assert_eq!(parsed, ["x-a", "x-b"]);
        // The report was made once; a second parse does not report again.
        assert!(!report_once("TEST_VAR_1", ""));
        assert!(parse_list("TEST_VAR_2", "bad name", env_header_name).is_none());
        assert!(parse_list("TEST_VAR_3", " , ", env_header_name).is_none());
    }

    #[test]
    fn excluded_path_patterns() {
        let exact = ExcludedPath::parse(" /health ").unwrap();
        assert!(exact.matches("/health"));
        assert!(!exact.matches("/health/deep"));
        let prefix = ExcludedPath::parse("/internal/*").unwrap();
        assert!(prefix.matches("/internal/"));
        assert!(prefix.matches("/internal/metrics"));
        assert!(!prefix.matches("/internals"));
        assert!(ExcludedPath::parse("health").is_none());
        assert!(ExcludedPath::parse("").is_none());
    }

    fn problem(options: Options, metrics: bool) -> String {
        let err = options
            .resolve(Side::Server, true, metrics, true)
            .unwrap_err();
        format!("the `{}` option {}", err.option, err.problem)
    }

    #[test]
    fn options_that_cannot_work_are_named() {
        let bad_header = Options {
            request_headers: Some(vec!["x tenant".into()]),
            ..Options::default()
        };
        assert_eq!(
            problem(bad_header, true),
            "the `request_headers` option has \"x tenant\", which is not a valid header name"
        );
        let no_methods = Options {
            known_methods: Some(vec![]),
            ..Options::default()
        };
        assert!(problem(no_methods, true).starts_with("the `known_methods` option is empty"));
        let active = Options {
            active_requests: true,
            ..Options::default()
        };
        assert_eq!(
            problem(active, false),
            "the `active_requests` option is on, but the layer records no metrics"
        );
    }
}
