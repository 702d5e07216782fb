//! A recorded-response front for moto: a real HTTP server that answers the AWS operations moto
//! does not implement with recorded responses, and forwards every other request to moto
//! unchanged.
//!
//! moto covers most of ECS and App Mesh but not everything a taskmesh component calls
//! (ECS `DescribeServiceRevisions`, App Mesh VirtualService calls). A test starts a
//! [`RecordedFront`] in front of its [`MotoServer`](crate::moto::MotoServer), points its SDK
//! client at [`RecordedFront::endpoint`], and registers one [`Route`] per missing operation:
//! [`Route::JsonTarget`] for the AWS JSON protocols (the `X-Amz-Target` header, e.g.
//! `AmazonEC2ContainerServiceV20141113.DescribeServiceRevisions`) and [`Route::Path`] for
//! REST protocols (method and path prefix). Each route's answer is a closure that builds the
//! [`Recording`] from the request, so one recording can serve several resources. Recordings
//! should be checked against botocore's output shape with [`validate_output_files`] so they
//! stay faithful to the real API.
//!
//! The server runs on its own thread with its own Tokio runtime, so synchronous tests and tests
//! on any runtime flavour can use it; it stops when dropped. Every request is logged
//! ([`RecordedFront::requests`]) with whether it was answered or forwarded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;

use crate::HarnessError;
use crate::botocore::Validation;
use crate::venv::venv;

/// Content type of the AWS JSON 1.1 protocol (ECS, among others).
pub const AMZ_JSON_1_1: &str = "application/x-amz-json-1.1";

/// Which requests a recording answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// AWS JSON protocol: the request's `X-Amz-Target` header equals this
    /// (`<targetPrefix>.<Operation>`).
    JsonTarget(String),
    /// REST protocols: the method matches and the path starts with `prefix`.
    Path { method: String, prefix: String },
}

impl Route {
    /// The JSON-protocol route of `operation` for a service whose model has `target_prefix`
    /// (botocore `metadata.targetPrefix`, e.g. `AmazonEC2ContainerServiceV20141113`).
    pub fn json_target(target_prefix: &str, operation: &str) -> Route {
        Route::JsonTarget(format!("{target_prefix}.{operation}"))
    }

    fn matches(&self, request: &FrontRequest) -> bool {
        match self {
            Route::JsonTarget(target) => request.target.as_deref() == Some(target.as_str()),
            Route::Path { method, prefix } => {
                request.method.eq_ignore_ascii_case(method) && request.path.starts_with(prefix)
            }
        }
    }
}

/// One request the front received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `X-Amz-Target` header, if any.
    pub target: Option<String>,
    pub body: Vec<u8>,
    /// Whether a recording answered it (`false`: forwarded to the upstream).
    pub answered: bool,
}

impl FrontRequest {
    /// The body as JSON (AWS JSON and REST-JSON requests).
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A recorded HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Recording {
    /// `200` with a JSON body of `content_type` (e.g. [`AMZ_JSON_1_1`]).
    pub fn json(content_type: &str, body: &serde_json::Value) -> Recording {
        Recording {
            status: 200,
            content_type: content_type.to_owned(),
            body: body.to_string().into_bytes(),
        }
    }
}

type Answer = Arc<dyn Fn(&FrontRequest) -> Recording + Send + Sync>;

/// Routes and their answers, before the server starts.
pub struct FrontBuilder {
    upstream: SocketAddr,
    routes: Vec<(Route, Answer)>,
}

impl FrontBuilder {
    /// Answers requests matching `route` with `answer(request)`.
    pub fn answer(
        mut self,
        route: Route,
        answer: impl Fn(&FrontRequest) -> Recording + Send + Sync + 'static,
    ) -> FrontBuilder {
        self.routes.push((route, Arc::new(answer)));
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start(self) -> Result<RecordedFront, HarnessError> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| io("bind", source))?;
        listener
            .set_nonblocking(true)
            .map_err(|source| io("set_nonblocking", source))?;
        let addr = listener
            .local_addr()
            .map_err(|source| io("local_addr", source))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| io("tokio runtime", source))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream: self.upstream,
            routes: self.routes,
            log: log.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let thread = std::thread::Builder::new()
            .name(format!("aws-front:{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, shared, stopped)))
            .map_err(|source| io("spawn thread", source))?;
        Ok(RecordedFront {
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn io(what: &str, source: std::io::Error) -> HarnessError {
    HarnessError::Io {
        path: PathBuf::from(format!("aws_front: {what}")),
        source,
    }
}

/// A running front; stops when dropped.
pub struct RecordedFront {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<FrontRequest>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RecordedFront {
    /// A front forwarding to `upstream` (a moto server's port on 127.0.0.1).
    pub fn builder(upstream_port: u16) -> FrontBuilder {
        FrontBuilder {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            routes: Vec::new(),
        }
    }

    /// `http://localhost:<port>`: the endpoint URL for SDK clients.
    pub fn endpoint(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<FrontRequest> {
        self.log
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The `X-Amz-Target` of every request so far, with whether it was answered from a
    /// recording (`true`) or forwarded.
    pub fn targets(&self) -> Vec<(String, bool)> {
        self.requests()
            .into_iter()
            .map(|r| (r.target.unwrap_or_else(|| r.path.clone()), r.answered))
            .collect()
    }
}

impl Drop for RecordedFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    routes: Vec<(Route, Answer)>,
    log: Arc<Mutex<Vec<FrontRequest>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (mut parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("aws_front: request body: {err}"),
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut seen = FrontRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        target: parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
        answered: false,
    };
    if let Some((_, answer)) = shared.routes.iter().find(|(route, _)| route.matches(&seen)) {
        let recording = answer(&seen);
        seen.answered = true;
        record(shared, seen);
        let mut response = Response::new(Full::new(Bytes::from(recording.body)));
        *response.status_mut() =
            StatusCode::from_u16(recording.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(value) = recording.content_type.parse() {
            response.headers_mut().insert("content-type", value);
        }
        return response;
    }
    record(shared, seen);
    parts.uri = match format!("http://{}{path}", shared.upstream).parse() {
        Ok(uri) => uri,
        Err(err) => return plain(StatusCode::BAD_REQUEST, format!("aws_front: {path}: {err}")),
    };
    let forwarded = match shared
        .client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(response) => response,
        Err(err) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("aws_front: forwarding {path} to {}: {err}", shared.upstream),
            );
        }
    };
    let (mut parts, body) = forwarded.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("aws_front: upstream body for {path}: {err}"),
            );
        }
    };
    // The body is re-sent whole: its length is known, so no chunked framing.
    parts.headers.remove("transfer-encoding");
    Response::from_parts(parts, Full::new(body))
}

fn record(shared: &Shared, request: FrontRequest) {
    shared
        .log
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .push(request);
}

fn plain(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response
}

/// The output-shape validator shipped with this crate.
pub fn output_validator_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/validate_response.py")
}

#[derive(Deserialize)]
struct Report {
    results: Vec<Validation>,
}

/// Validates recorded response bodies (one JSON body per file) against botocore's output shape
/// of `service`'s `operation`: unknown members, wrong types, missing required members, and
/// that botocore's own protocol parser reads the body. Results come in the order of `files`.
pub fn validate_output_files<P: AsRef<Path>>(
    service: &str,
    operation: &str,
    files: &[P],
) -> Result<Vec<Validation>, HarnessError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let python = venv().python();
    let output = Command::new(&python)
        .arg(output_validator_script())
        .arg(service)
        .arg(operation)
        .args(files.iter().map(AsRef::as_ref))
        .output()
        .map_err(|source| HarnessError::Spawn {
            program: python.display().to_string(),
            source,
        })?;
    let tool_error = |message: String| HarnessError::Tool {
        tool: format!("validate_response.py {service} {operation}"),
        status: output.status.to_string(),
        message,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if !output.status.success() {
        return Err(tool_error("exited with an error".to_owned()));
    }
    let report: Report = serde_json::from_slice(&output.stdout).map_err(|err| {
        tool_error(format!(
            "unreadable report ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        ))
    })?;
    Ok(report.results)
}
