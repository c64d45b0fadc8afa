//! Running the real function binaries locally: a Lambda Runtime API emulator, an HTTP API
//! (API Gateway, payload v2) front that turns plain HTTP requests into invocations, and a
//! handle on a spawned function process.
//!
//! The emulator serves the three calls a runtime client makes (`GET .../invocation/next`,
//! `POST .../invocation/{id}/response`, `POST .../invocation/{id}/error`, plus
//! `POST .../init/error`), one Runtime API per function, as Lambda gives each execution
//! environment its own. It records when the process first asked for an event: the init time.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

const API: &str = "/2018-06-01/runtime";

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response (parsed as JSON when it is JSON, else a string).
    Response(Value),
    /// The function reported an error (`Lambda-Runtime-Function-Error-Type` and the body).
    Error { error_type: String, body: Value },
}

impl Outcome {
    /// The response, or a panic naming the error.
    pub fn response(self) -> Value {
        match self {
            Outcome::Response(v) => v,
            Outcome::Error { error_type, body } => {
                panic!("the function failed: {error_type}: {body}")
            }
        }
    }
}

struct Pending {
    id: String,
    payload: Vec<u8>,
    reply: oneshot::Sender<Outcome>,
}

struct Shared {
    function_name: String,
    timeout: Duration,
    queue: Mutex<VecDeque<Pending>>,
    ready: Notify,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    first_poll: OnceLock<std::time::Instant>,
    polled: Notify,
    next_id: AtomicU64,
    init_errors: Mutex<Vec<String>>,
}

/// A Lambda Runtime API for one function.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RuntimeApi {
    /// Serves on a free loopback port. `timeout` is the function's configured timeout: each
    /// event's deadline is now + timeout.
    pub async fn start(function_name: &str, timeout: Duration) -> RuntimeApi {
        let shared = Arc::new(Shared {
            function_name: function_name.into(),
            timeout,
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            first_poll: OnceLock::new(),
            polled: Notify::new(),
            next_id: AtomicU64::new(1),
            init_errors: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route(&format!("{API}/invocation/next"), get(next))
            .route(&format!("{API}/invocation/{{id}}/response"), post(response))
            .route(&format!("{API}/invocation/{{id}}/error"), post(error))
            .route(&format!("{API}/init/error"), post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Runtime API");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi {
            addr,
            shared,
            server,
        }
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API` (host:port, no scheme).
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn function_name(&self) -> &str {
        &self.shared.function_name
    }

    /// When the function first asked for an event.
    pub fn first_poll(&self) -> Option<std::time::Instant> {
        self.shared.first_poll.get().copied()
    }

    /// Waits for the function's first `GET .../invocation/next` (its init is over).
    pub async fn wait_first_poll(&self, timeout: Duration) -> Option<std::time::Instant> {
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let polled = self.shared.polled.notified();
                if let Some(at) = self.first_poll() {
                    return at;
                }
                polled.await;
            }
        })
        .await;
        waited.ok()
    }

    /// Errors the function reported during init.
    pub fn init_errors(&self) -> Vec<String> {
        self.shared.init_errors.lock().expect("lock").clone()
    }

    /// Queues one event and waits for the function's answer (at most its timeout + 30 s).
    pub async fn invoke(&self, payload: &Value) -> Outcome {
        let n = self.shared.next_id.fetch_add(1, Ordering::SeqCst);
        let id = format!("{:08x}-0000-4000-8000-{n:012x}", fastrand::u32(..));
        let (reply, answer) = oneshot::channel();
        self.shared.queue.lock().expect("lock").push_back(Pending {
            id: id.clone(),
            payload: serde_json::to_vec(payload).expect("payload"),
            reply,
        });
        self.shared.ready.notify_one();
        let limit = self.shared.timeout + Duration::from_secs(30);
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => panic!("the Runtime API dropped invocation {id}"),
            Err(_) => panic!(
                "{} did not answer invocation {id} within {limit:?}",
                self.shared.function_name
            ),
        }
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    if shared.first_poll.set(std::time::Instant::now()).is_ok() {
        shared.polled.notify_waiters();
    }
    let pending = loop {
        if let Some(p) = shared.queue.lock().expect("lock").pop_front() {
            break p;
        }
        shared.ready.notified().await;
    };
    shared
        .in_flight
        .lock()
        .expect("lock")
        .insert(pending.id.clone(), pending.reply);
    let deadline = epoch_ms() + shared.timeout.as_millis() as u64;
    let arn = format!(
        "arn:aws:lambda:us-east-1:123456789012:function:{}",
        shared.function_name
    );
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).expect("header value"));
    };
    set("lambda-runtime-aws-request-id", pending.id.clone());
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set("lambda-runtime-invoked-function-arn", arn);
    set(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
            epoch_ms() / 1000,
            fastrand::u128(..) >> 32,
            fastrand::u64(..)
        ),
    );
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, pending.payload).into_response()
}

fn settle(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match shared.in_flight.lock().expect("lock").remove(id) {
        Some(reply) => {
            let _ = reply.send(outcome);
            StatusCode::ACCEPTED
        }
        // Lambda answers 400 for an unknown or already answered request id.
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    settle(&shared, &id, Outcome::Response(json_or_text(&body)))
}

async fn error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Unhandled")
        .to_owned();
    settle(
        &shared,
        &id,
        Outcome::Error {
            error_type,
            body: json_or_text(&body),
        },
    )
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    shared
        .init_errors
        .lock()
        .expect("lock")
        .push(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}

// ---- HTTP API front ----

/// An HTTP server that forwards every request to a function as an API Gateway HTTP API
/// (payload format 2.0) event and answers with the function's response, as API Gateway does.
pub struct HttpApi {
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for HttpApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HttpApi {
    pub async fn start(function: Arc<RuntimeApi>) -> HttpApi {
        let app = Router::new().fallback(gateway).with_state(function);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the HTTP API");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpApi { addr, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The API Gateway HTTP API (v2) event for a request on route `POST /webhooks/{dam}`.
pub fn http_api_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Value {
    let mut joined: serde_json::Map<String, Value> = serde_json::Map::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let merged = match joined.get(&name).and_then(Value::as_str) {
            // API Gateway joins repeated headers with commas.
            Some(previous) => format!("{previous},{value}"),
            None => value.clone(),
        };
        joined.insert(name, Value::from(merged));
    }
    let dam = shared::ingest::route(path).unwrap_or_default();
    let user_agent = joined.get("user-agent").cloned().unwrap_or(Value::from(""));
    let now = epoch_ms();
    json!({
        "version": "2.0",
        "routeKey": "POST /webhooks/{dam}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "local.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": user_agent,
            },
            "requestId": format!("{:016x}", fastrand::u64(..)),
            "routeKey": "POST /webhooks/{dam}",
            "stage": "$default",
            "time": "28/Nov/2026:10:22:00 +0000",
            "timeEpoch": now,
        },
        "pathParameters": { "dam": dam },
        "body": STANDARD.encode(body),
        "isBase64Encoded": true,
    })
}

async fn gateway(State(function): State<Arc<RuntimeApi>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 10 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let event = http_api_event(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &headers,
        &body,
    );
    match function.invoke(&event).await {
        Outcome::Response(answer) => {
            let status = answer["statusCode"]
                .as_u64()
                .and_then(|s| StatusCode::from_u16(s as u16).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            let text = answer["body"].as_str().unwrap_or_default();
            let bytes = if answer["isBase64Encoded"] == true {
                STANDARD.decode(text).unwrap_or_default()
            } else {
                text.as_bytes().to_vec()
            };
            let mut out = HeaderMap::new();
            if let Some(map) = answer["headers"].as_object() {
                for (k, v) in map {
                    if let (Ok(name), Some(Ok(value))) = (
                        axum::http::HeaderName::from_bytes(k.as_bytes()),
                        v.as_str().map(HeaderValue::from_str),
                    ) {
                        out.insert(name, value);
                    }
                }
            }
            (status, out, bytes).into_response()
        }
        // API Gateway answers 500 when the integration fails.
        Outcome::Error { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
    }
}

// ---- function processes ----

/// A function binary running against a [`RuntimeApi`]; killed on drop.
pub struct FunctionProcess {
    name: String,
    child: Child,
    started: std::time::Instant,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => into.lock().expect("lock").push(line),
                Err(_) => break,
            }
        }
    });
}

impl FunctionProcess {
    /// Starts `binary` with the variables Lambda sets for a function (name, memory, version,
    /// JSON log format, `AWS_LAMBDA_RUNTIME_API`) plus `env`. The test's own environment is
    /// inherited (e.g. `AWS_ENDPOINT_URL` for moto).
    pub fn spawn(binary: &Path, runtime: &RuntimeApi, env: &[(&str, String)]) -> FunctionProcess {
        let mut command = Command::new(binary);
        command
            .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", runtime.function_name())
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", runtime.function_name()),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let started = std::time::Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().expect("stdout"), stdout.clone());
        collect(child.stderr.take().expect("stderr"), stderr.clone());
        FunctionProcess {
            name: runtime.function_name().to_owned(),
            child,
            started,
            stdout,
            stderr,
        }
    }

    /// Process start → first request for an event. Panics with the function's output when
    /// it exits or does not get there within `timeout`.
    pub async fn init_time(&mut self, runtime: &RuntimeApi, timeout: Duration) -> Duration {
        let step = Duration::from_millis(100);
        let mut waited = Duration::ZERO;
        loop {
            if let Some(at) = runtime.wait_first_poll(step).await {
                return at.duration_since(self.started);
            }
            waited += step;
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during init ({status}); init errors {:?}; output:\n{}",
                    self.name,
                    runtime.init_errors(),
                    self.output().join("\n")
                );
            }
            if waited >= timeout {
                panic!(
                    "{} did not ask for an event within {timeout:?}; output:\n{}",
                    self.name,
                    self.output().join("\n")
                );
            }
        }
    }

    /// Lines written to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("lock").clone()
    }

    /// Lines written to stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// stdout then stderr.
    pub fn output(&self) -> Vec<String> {
        let mut all = self.stdout();
        all.extend(self.stderr());
        all
    }
}

// ---- locating the binaries ----

/// The three function binaries.
pub const FUNCTIONS: [&str; 3] = ["webhook-ingest", "asset-consumer", "reconcile-poller"];

/// The function binaries. This package builds each function's own `main.rs` as a bin named
/// `fn-<function>` (see Cargo.toml), so cargo compiles them, with the workspace's features,
/// before the tests and benchmarks that start them; they sit next to the running executable's
/// `deps/` directory.
pub fn function_binaries() -> &'static HashMap<String, PathBuf> {
    static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // <target>/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from <target>/<profile>/deps")
            .to_path_buf();
        FUNCTIONS
            .iter()
            .map(|name| {
                let path = profile_dir.join(format!("fn-{name}{}", std::env::consts::EXE_SUFFIX));
                assert!(
                    path.exists(),
                    "{} is missing; `cargo test -p dam-sync-tests` (or `cargo build -p \
                     dam-sync-tests --bins`) builds it",
                    path.display()
                );
                (name.to_string(), path)
            })
            .collect()
    })
}

/// The path of one function binary (see [`function_binaries`]).
pub fn function_binary(name: &str) -> PathBuf {
    function_binaries()
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not a function binary"))
        .clone()
}
