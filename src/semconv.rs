//! The names this crate emits, from the OpenTelemetry HTTP semantic conventions v1.42.0.
//!
//! Kept private and local so that the default build needs no
//! `semconv_experimental` feature for the few development-status names (body sizes,
//! active requests). The tests below compare each one with
//! `opentelemetry-semantic-conventions` so that they cannot drift.

use opentelemetry::Key;

/// The schema of the conventions followed.
pub(crate) const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.42.0";

pub(crate) const HTTP_REQUEST_METHOD: Key = Key::from_static_str("http.request.method");
pub(crate) const HTTP_REQUEST_METHOD_ORIGINAL: Key =
    Key::from_static_str("http.request.method_original");
pub(crate) const HTTP_RESPONSE_STATUS_CODE: Key = Key::from_static_str("http.response.status_code");
pub(crate) const HTTP_ROUTE: Key = Key::from_static_str("http.route");
pub(crate) const HTTP_REQUEST_RESEND_COUNT: Key = Key::from_static_str("http.request.resend_count");
pub(crate) const URL_PATH: Key = Key::from_static_str("url.path");
pub(crate) const URL_QUERY: Key = Key::from_static_str("url.query");
pub(crate) const URL_SCHEME: Key = Key::from_static_str("url.scheme");
pub(crate) const URL_FULL: Key = Key::from_static_str("url.full");
pub(crate) const URL_TEMPLATE: Key = Key::from_static_str("url.template");
pub(crate) const SERVER_ADDRESS: Key = Key::from_static_str("server.address");
pub(crate) const SERVER_PORT: Key = Key::from_static_str("server.port");
pub(crate) const CLIENT_ADDRESS: Key = Key::from_static_str("client.address");
pub(crate) const NETWORK_PEER_ADDRESS: Key = Key::from_static_str("network.peer.address");
pub(crate) const NETWORK_PEER_PORT: Key = Key::from_static_str("network.peer.port");
pub(crate) const NETWORK_PROTOCOL_VERSION: Key = Key::from_static_str("network.protocol.version");
pub(crate) const USER_AGENT_ORIGINAL: Key = Key::from_static_str("user_agent.original");
pub(crate) const ERROR_TYPE: Key = Key::from_static_str("error.type");

/// Prefixes of the captured-header attributes; `.<lowercase-name>` is appended.
pub(crate) const HTTP_REQUEST_HEADER: &str = "http.request.header";
pub(crate) const HTTP_RESPONSE_HEADER: &str = "http.response.header";

pub(crate) const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
pub(crate) const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http.server.active_requests";
pub(crate) const HTTP_SERVER_REQUEST_BODY_SIZE: &str = "http.server.request.body.size";
pub(crate) const HTTP_SERVER_RESPONSE_BODY_SIZE: &str = "http.server.response.body.size";
pub(crate) const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
pub(crate) const HTTP_CLIENT_ACTIVE_REQUESTS: &str = "http.client.active_requests";
pub(crate) const HTTP_CLIENT_REQUEST_BODY_SIZE: &str = "http.client.request.body.size";
pub(crate) const HTTP_CLIENT_RESPONSE_BODY_SIZE: &str = "http.client.response.body.size";

/// The `http.request.method` value of a method outside the known set.
pub(crate) const OTHER: &str = "_OTHER";

/// The bucket advice of `http.{server,client}.request.duration`, in seconds.
pub(crate) const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket advice for the body-size histograms, in bytes: 0, then powers of four from
/// 64 B to 1 GiB.
///
/// The conventions give none, and the SDK default (0 to 10 000) would put every
/// body over 10 kB into one bucket.
pub(crate) const BODY_SIZE_BUCKETS: [f64; 14] = [
    0.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
];

/// The query keys whose values are replaced by `REDACTED` by default: the union of every
/// list the conventions have had (v1.29 to main).
pub(crate) const SENSITIVE_QUERY_KEYS: [&str; 7] = [
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
];

/// The replacement of redacted values and credentials.
pub(crate) const REDACTED: &str = "REDACTED";

#[cfg(test)]
mod tests {
    use opentelemetry_semantic_conventions::{attribute as a, metric as m};

    #[test]
    fn names_match_the_semantic_conventions_crate() {
        let keys = [
            (super::HTTP_REQUEST_METHOD, a::HTTP_REQUEST_METHOD),
            (
                super::HTTP_REQUEST_METHOD_ORIGINAL,
                a::HTTP_REQUEST_METHOD_ORIGINAL,
            ),
            (
                super::HTTP_RESPONSE_STATUS_CODE,
                a::HTTP_RESPONSE_STATUS_CODE,
            ),
            (super::HTTP_ROUTE, a::HTTP_ROUTE),
            (
                super::HTTP_REQUEST_RESEND_COUNT,
                a::HTTP_REQUEST_RESEND_COUNT,
            ),
            (super::URL_PATH, a::URL_PATH),
            (super::URL_QUERY, a::URL_QUERY),
            (super::URL_SCHEME, a::URL_SCHEME),
            (super::URL_FULL, a::URL_FULL),
            (super::URL_TEMPLATE, a::URL_TEMPLATE),
            (super::SERVER_ADDRESS, a::SERVER_ADDRESS),
            (super::SERVER_PORT, a::SERVER_PORT),
            (super::CLIENT_ADDRESS, a::CLIENT_ADDRESS),
            (super::NETWORK_PEER_ADDRESS, a::NETWORK_PEER_ADDRESS),
            (super::NETWORK_PEER_PORT, a::NETWORK_PEER_PORT),
            (super::NETWORK_PROTOCOL_VERSION, a::NETWORK_PROTOCOL_VERSION),
            (super::USER_AGENT_ORIGINAL, a::USER_AGENT_ORIGINAL),
            (super::ERROR_TYPE, a::ERROR_TYPE),
        ];
        for (ours, theirs) in keys {
            assert_eq!(ours.as_str(), theirs);
        }
        assert_eq!(super::HTTP_REQUEST_HEADER, a::HTTP_REQUEST_HEADER);
        assert_eq!(super::HTTP_RESPONSE_HEADER, a::HTTP_RESPONSE_HEADER);
        let metrics = [
            (
                super::HTTP_SERVER_REQUEST_DURATION,
                m::HTTP_SERVER_REQUEST_DURATION,
            ),
            (
                super::HTTP_SERVER_ACTIVE_REQUESTS,
                m::HTTP_SERVER_ACTIVE_REQUESTS,
            ),
            (
                super::HTTP_SERVER_REQUEST_BODY_SIZE,
                m::HTTP_SERVER_REQUEST_BODY_SIZE,
            ),
            (
                super::HTTP_SERVER_RESPONSE_BODY_SIZE,
                m::HTTP_SERVER_RESPONSE_BODY_SIZE,
            ),
            (
                super::HTTP_CLIENT_REQUEST_DURATION,
                m::HTTP_CLIENT_REQUEST_DURATION,
            ),
            (
                super::HTTP_CLIENT_ACTIVE_REQUESTS,
                m::HTTP_CLIENT_ACTIVE_REQUESTS,
            ),
            (
                super::HTTP_CLIENT_REQUEST_BODY_SIZE,
                m::HTTP_CLIENT_REQUEST_BODY_SIZE,
            ),
            (
                super::HTTP_CLIENT_RESPONSE_BODY_SIZE,
                m::HTTP_CLIENT_RESPONSE_BODY_SIZE,
            ),
        ];
        for (ours, theirs) in metrics {
            assert_eq!(ours, theirs);
        }
        assert_eq!(
            super::SCHEMA_URL,
            opentelemetry_semantic_conventions::SCHEMA_URL
        );
    }
}
