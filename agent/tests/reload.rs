//! Configuration life cycle: INITIALIZING with a reason, hot reload under load with no failed
//! request, a bad document rejected (last good kept, counted), restart from the on-disk cache
//! with the source down.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use support::{DocBuilder, HttpClient, World, admin_get, eventually, http_backend, write_atomic};
use taskmesh_agent::{Agent, State};

fn doc_to(app_port: u16, target: &str, port: u16) -> String {
    DocBuilder::new("DROP_ALL")
        .node("front", app_port, "http", &["svc.local"])
        .node(target, port, "http", &[])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[(target, 1)])
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initializing_until_a_good_document_then_live() {
    let world = World::new(
        "meshName: m\nvirtualNodes: [{virtualNodeName: other, spec: {}}]\nthis is: [not valid",
    );
    let agent = Agent::start(world.settings("front")).await.unwrap();
    eventually("a rejection is recorded", || async {
        agent.shared().metrics.rejected_count() >= 1
    })
    .await;
    assert_eq!(agent.state(), State::Initializing);
    let (status, body) = admin_get(agent.admin_addr, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("INITIALIZING"));
    let info: serde_json::Value =
        serde_json::from_str(&admin_get(agent.admin_addr, "/server_info").await.1).unwrap();
    assert_eq!(info["state"], "INITIALIZING");
    let reason = info["not_live_reason"].as_str().unwrap();
    assert!(
        reason.contains("mesh.yaml"),
        "reason names the source: {reason}"
    );
    // Egress answers 503 while there is no table.
    let c = HttpClient::new();
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A good document arrives: LIVE.
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    write_atomic(
        &world.doc,
        &doc_to(app.addr.port(), "blue", blue.addr.port()),
    );
    assert!(agent.wait_live(Duration::from_secs(10)).await);
    assert_eq!(
        admin_get(agent.admin_addr, "/ready").await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/")
            .await
            .header("x-backend"),
        "blue"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_fails_no_request() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let green = http_backend("green").await;
    let world = World::new(&doc_to(app.addr.port(), "blue", blue.addr.port()));
    let agent = world.start("front").await;
    let eg = agent.egress_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (stop, ok) = (stop.clone(), ok.clone());
        load.push(tokio::spawn(async move {
            let c = HttpClient::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(eg, "svc.local", "/slow/2").await;
                if r.status == StatusCode::OK {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.push(r.status);
                }
            }
            failures
        }));
    }
    let docs = [
        doc_to(app.addr.port(), "green", green.addr.port()),
        doc_to(app.addr.port(), "blue", blue.addr.port()),
    ];
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        write_atomic(&world.doc, &docs[i % 2]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let failures = t.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during reload: {failures:?}"
        );
    }
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert!(agent.shared().metrics.ok_count() >= 5, "reloads happened");
    assert!(green.hits.load(Ordering::Relaxed) > 0 && blue.hits.load(Ordering::Relaxed) > 0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_document_is_rejected_last_good_kept_and_counted() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let world = World::new(&doc_to(app.addr.port(), "blue", blue.addr.port()));
    let agent = world.start("front").await;
    let c = HttpClient::new();
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/")
            .await
            .header("x-backend"),
        "blue"
    );
    // A route to a node that does not exist: invalid as a whole.
    let bad = DocBuilder::new("DROP_ALL")
        .node("front", app.addr.port(), "http", &["svc.local"])
        .routed_service("svc.local", "r", 9080, "http")
        .http_route("r", "all", None, json!({"prefix": "/"}), &[("ghost", 1)])
        .json();
    write_atomic(&world.doc, &bad);
    eventually("the bad document is rejected", || async {
        agent.shared().metrics.rejected_count() >= 1
    })
    .await;
    assert_eq!(agent.state(), State::Live);
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/")
            .await
            .header("x-backend"),
        "blue"
    );
    let prom = admin_get(agent.admin_addr, "/stats/prometheus").await.1;
    assert!(
        prom.contains("taskmesh_config_reloads_total{result=\"rejected\"} 1"),
        "{prom}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&admin_get(agent.admin_addr, "/server_info").await.1).unwrap();
    let last = info["config"]["last_error"].as_str().unwrap();
    assert!(last.contains("ghost"), "the problem is named: {last}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_source_down_comes_up_live_from_cache() {
    let app = http_backend("app").await;
    let blue = http_backend("blue").await;
    let world = World::new(&doc_to(app.addr.port(), "blue", blue.addr.port()));
    let agent = world.start("front").await;
    assert!(
        world.cache.exists(),
        "cache written after the first good document"
    );
    agent.shutdown().await;
    // The source disappears; a new agent starts from the cache alone.
    std::fs::remove_file(&world.doc).unwrap();
    let agent = Agent::start(world.settings("front")).await.unwrap();
    assert_eq!(agent.state(), State::Live, "LIVE straight from the cache");
    let c = HttpClient::new();
    assert_eq!(
        c.get(agent.egress_addr, "svc.local", "/")
            .await
            .header("x-backend"),
        "blue"
    );
    let info: serde_json::Value =
        serde_json::from_str(&admin_get(agent.admin_addr, "/server_info").await.1).unwrap();
    assert!(
        info["config"]["source"]
            .as_str()
            .unwrap()
            .starts_with("cache:")
    );
    eventually("the source failure is reported", || async {
        admin_get(agent.admin_addr, "/server_info")
            .await
            .1
            .contains("mesh.yaml")
    })
    .await;
    assert_eq!(agent.state(), State::Live);
    agent.shutdown().await;
}
