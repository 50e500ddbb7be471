//! The Python processes of the interop tests (tests/interop.rs, tests/interop_grpc.rs,
//! each with its scripts in tests/interop/): the interpreter, a script's command, a
//! client run to completion, a server read while it runs, and the W3C ids both sides
//! compare.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_sdk::trace::SpanData;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

const SKIPPED: &str = "skipped: set OTEL_INTEROP_PYTHON to a python with \
                       tests/interop/requirements.txt installed (.ci/run does)";

/// How long a Python process may take to start, answer or exit.
pub(crate) const PYTHON_TIMEOUT: Duration = Duration::from_secs(20);

/// The Python interpreter to run the scripts with, or `None` (after saying why on
/// stderr) when `OTEL_INTEROP_PYTHON` is unset.
pub(crate) fn python() -> Option<PathBuf> {
    match std::env::var_os("OTEL_INTEROP_PYTHON") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            eprintln!("{SKIPPED}");
            None
        }
    }
}

/// The interpreter, or return from the test (skipped).
macro_rules! python_or_skip {
    () => {
        match $crate::common::python() {
            Some(python) => python,
            None => return,
        }
    };
}

/// `python tests/interop/{script}`, killed when dropped, with a clean OpenTelemetry
/// environment: no inherited `OTEL_*` variable (so the Python side uses its defaults:
/// the tracecontext and baggage propagators, a parent-based sampler), then `env`; no
/// proxy for loopback and no bytecode written into the source tree.
pub(crate) fn python_command(python: &PathBuf, script: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop")
            .join(script),
    );
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().copied())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd` (a [`python_command`], `what` in messages) with no stdin to completion,
/// bounded by [`PYTHON_TIMEOUT`] (the process is killed if it takes longer), and
/// asserts that it succeeded. Its stdout and stderr.
pub(crate) async fn run_to_completion(mut cmd: Command, what: &str) -> (String, String) {
    let child = cmd
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the {what}: {e:?}"));
    let out: Output = tokio::time::timeout(PYTHON_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {what} did not finish in time"))
        .unwrap_or_else(|e| panic!("wait for the {what}: {e:?}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the {what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// A Python server script, running until dropped (killed; it also exits when its stdin,
/// held here, closes). It prints its port on the first line; the lines after it are
/// kept, as is its stderr.
pub(crate) struct PythonServer {
    pub(crate) addr: SocketAddr,
    /// What the server is, in messages.
    what: &'static str,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    _child: Child,
}

impl PythonServer {
    /// Spawns `cmd` (a [`python_command`]) and waits for its port.
    pub(crate) async fn spawn(mut cmd: Command, what: &'static str) -> Self {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the {what}: {e:?}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_pipe = child.stderr.take().unwrap();
        let collected = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(PYTHON_TIMEOUT, stdout.next_line()).await;
        let port: u16 = match first {
            Ok(Ok(Some(line))) => line.trim().parse().expect("a port on the first line"),
            other => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "the {what} did not print its port: {other:?}\nstderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            what,
            lines,
            stderr,
            _child: child,
        }
    }

    /// The lines it printed after its port, so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until `spans` (what it exported so far) has `n` spans, then a
    /// little longer, and asserts that there are exactly `n`.
    pub(crate) async fn exactly<T: Debug>(
        &self,
        n: usize,
        spans: impl Fn(&Self) -> Vec<T>,
    ) -> Vec<T> {
        for _ in 0..500 {
            if spans(self).len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let spans = spans(self);
        assert_eq!(
            spans.len(),
            n,
            "the {} exported {} spans, expected {n}: {spans:#?}\nstderr:\n{}",
            self.what,
            spans.len(),
            self.stderr.lock().unwrap()
        );
        spans
    }
}

pub(crate) fn hex_trace_id(span: &SpanData) -> String {
    span.span_context.trace_id().to_string()
}

pub(crate) fn hex_span_id(span: &SpanData) -> String {
    span.span_context.span_id().to_string()
}

/// The `traceparent` that names `span` as the parent, with its flags.
pub(crate) fn traceparent_with_flags(span: &SpanData) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.span_context.trace_id(),
        span.span_context.span_id(),
        span.span_context.trace_flags().to_u8()
    )
}
