//! The cost of `logs::TraceJson` per log line, beside `tracing-subscriber`'s own JSON
//! format: each case formats `n` events (one string field) into a sink, under a sampled
//! OpenTelemetry span made current (so `TraceJson` adds the ids), or with none.
//!
//!   cargo bench --bench logs --features tracing-json -- [CASE] [N]
//!   bash benches/callgrind_logs.sh      (instructions per line, by callgrind)
//!
//! Cases: `json` (the inner format alone), `trace_json` (with the ids), `trace_json/none`
//! (no current span: the line is the inner format's, unchanged).

use std::time::Instant;

use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use tower_otel_http::logs::TraceJson;
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt as _;

fn run(case: &str, n: u64) {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = provider.tracer("bench");
    let span = tracer.start("request");
    let cx = opentelemetry::Context::current_with_span(span);
    let _attached = (case != "trace_json/none").then(|| cx.attach());
    let json = fmt::layer().json().with_writer(std::io::sink);
    let dispatch = match case {
        "json" => tracing::Dispatch::new(tracing_subscriber::registry().with(json)),
        "trace_json" | "trace_json/none" => tracing::Dispatch::new(
            tracing_subscriber::registry().with(json.event_format(TraceJson::new())),
        ),
        other => panic!("no case named {other:?}"),
    };
    tracing::dispatcher::with_default(&dispatch, || {
        let start = Instant::now();
        for i in 0..n {
            tracing::info!(order = i, "looking the order up");
        }
        let per_line = start.elapsed().as_nanos() as f64 / n as f64;
        println!("{case:<16} {per_line:>8.0} ns/line");
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    match args.first() {
        Some(case) => run(case, n),
        None => {
            // Interleaved rounds, so that the machine's drift hits every case alike.
            for _ in 0..3 {
                for case in ["json", "trace_json", "trace_json/none"] {
                    run(case, n);
                }
            }
        }
    }
}
