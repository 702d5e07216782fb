//! Test support for the taskmesh-lambda tests: a real HTTP server that records the custom-resource
//! answers PUT to it, a TCP endpoint that never answers (for deadline tests), ECS clients pointed at
//! a moto server, and the event files.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use taskmesh::ecs::EcsApi;
use taskmesh_e2e::moto::{CREDENTIAL, MotoServer, REGION};
use tokio::net::TcpListener;

/// One request the recorder received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    /// Header names (lower case) and values, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the recorded body is JSON")
    }
}

/// An HTTP server on 127.0.0.1 that answers every request 200 and records it.
pub struct ResponseRecorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ResponseRecorder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            let method = req.method().to_string();
                            let path_and_query = req
                                .uri()
                                .path_and_query()
                                .map(ToString::to_string)
                                .unwrap_or_default();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                                })
                                .collect();
                            let body = req.into_body().collect().await?.to_bytes().to_vec();
                            store.lock().unwrap().push(Recorded {
                                method,
                                path_and_query,
                                headers,
                                body,
                            });
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    /// A pre-signed-looking URL on this server.
    pub fn url(&self) -> String {
        format!(
            "http://{}/arn%3Aaws%3Acloudformation%3Aus-east-1%3A123456789012%3Astack/app/1%7CMeshedTaskDef%7Cr?X-Amz-Signature=abc",
            self.addr
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request received; panics (fails the test) unless there was exactly one.
    pub fn single(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one answer, got {requests:#?}"
        );
        requests.into_iter().next().unwrap()
    }
}

impl Drop for ResponseRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP endpoint that accepts connections and never answers.
pub struct Blackhole {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { addr, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An ECS client for `endpoint` with moto's test credentials.
pub fn ecs_at(endpoint: &str) -> EcsApi {
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
        .region(aws_sdk_ecs::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            CREDENTIAL,
            CREDENTIAL,
            None,
            None,
            "taskmesh-tests",
        ))
        .build();
    EcsApi::new(aws_sdk_ecs::Client::from_conf(config))
}

pub fn moto() -> MotoServer {
    MotoServer::start().expect("moto_server starts (scripts/setup-test-env.sh installs it)")
}

pub fn ecs(moto: &MotoServer) -> EcsApi {
    ecs_at(&moto.endpoint())
}

/// A plain (unmeshed) Fargate task definition in API shape, family `family`.
pub fn source_task_definition(family: &str) -> Value {
    serde_json::json!({
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "containerDefinitions": [{
            "name": "app",
            "image": "public.ecr.aws/example/colorteller:latest",
            "essential": true,
            "portMappings": [{"containerPort": 9080, "protocol": "tcp"}],
            "environment": [{"name": "COLOR", "value": "white"}]
        }],
        "tags": [{"key": "team", "value": "color"}]
    })
}

/// Registers `body` in ECS (moto) and returns the new ARN.
pub async fn register(api: &EcsApi, body: &Value) -> String {
    let td = api
        .register_task_definition(body)
        .await
        .expect("register in moto");
    td["taskDefinitionArn"].as_str().expect("arn").to_string()
}

/// The path of an event file.
pub fn event_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/events")
        .join(name)
}

/// An event file, parsed.
pub fn event(name: &str) -> Value {
    let path = event_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A deadline `secs` seconds from now.
pub fn deadline_in(secs: f64) -> SystemTime {
    SystemTime::now() + Duration::from_secs_f64(secs)
}
