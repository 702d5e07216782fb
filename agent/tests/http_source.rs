//! `http://` source against a real test server: ETag / If-None-Match (304) on every poll, a new
//! ETag installs the new document, and a server error keeps the last good one.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::{DocBuilder, HttpClient, eventually, http_backend, settings};
use taskmesh_agent::Agent;

#[derive(Default)]
struct Served {
    doc: String,
    etag: String,
    fail: bool,
    log: Vec<(Option<String>, u16)>,
}

async fn doc_server(state: Arc<Mutex<Served>>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        let mut st = state.lock().unwrap();
                        let inm = req
                            .headers()
                            .get("if-none-match")
                            .map(|v| v.to_str().unwrap().to_string());
                        let mut r = Response::new(Full::new(Bytes::new()));
                        if st.fail {
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        } else if inm.as_deref() == Some(st.etag.as_str()) {
                            *r.status_mut() = StatusCode::NOT_MODIFIED;
                        } else {
                            *r.body_mut() = Full::new(Bytes::from(st.doc.clone()));
                            r.headers_mut().insert("etag", st.etag.parse().unwrap());
                        }
                        let code = r.status().as_u16();
                        st.log.push((inm, code));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn doc(app: u16, target: &str, port: u16) -> String {
    DocBuilder::new("DROP_ALL")
        .node("front", app, "http", &["svc.local"])
        .node(target, port, "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[(target, 1)])
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_source_uses_etags_and_keeps_last_good_on_errors() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let green = http_backend("green").await;
    let state = Arc::new(Mutex::new(Served {
        doc: doc(app.addr.port(), "blue", blue.addr.port()),
        etag: "\"v1\"".into(),
        ..Default::default()
    }));
    let server = doc_server(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        "front",
        &format!("http://{server}/mesh.json"),
        &dir.path().join("c.json"),
    );
    let agent = Agent::start(s).await.unwrap();
    assert!(agent.wait_live(Duration::from_secs(10)).await);
    let c = HttpClient::new();
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/")
            .await
            .header("x-backend"),
        "blue"
    );
    eventually("conditional GETs answered 304", || async {
        state
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|(inm, code)| inm.as_deref() == Some("\"v1\"") && *code == 304)
    })
    .await;
    let info = support::admin_get(agent.admin_addr, "/server_info").await.1;
    assert!(info.contains("\"version\": \"v1\""), "{info}");
    // New document, new ETag.
    {
        let mut st = state.lock().unwrap();
        st.doc = doc(app.addr.port(), "green", green.addr.port());
        st.etag = "\"v2\"".into();
    }
    eventually("the new document is served", || async {
        c.get(agent.egress_addr, "svc.local", "/")
            .await
            .header("x-backend")
            == "green"
    })
    .await;
    // The source fails: last good kept, failure counted.
    state.lock().unwrap().fail = true;
    eventually("the failure is counted", || async {
        support::admin_get(agent.admin_addr, "/stats/prometheus")
            .await
            .1
            .lines()
            .any(|l| l.starts_with("taskmesh_config_fetch_failures_total") && !l.ends_with(" 0"))
    })
    .await;
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/")
            .await
            .header("x-backend"),
        "green"
    );
    assert_eq!(agent.state(), taskmesh_agent::State::Live);
    agent.shutdown().await;
}
