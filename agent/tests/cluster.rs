//! Endpoint sets through the real agent: three real backends on 127.0.0.1/.2/.3 behind one
//! `ENDPOINTS` DNS name (hosts file). Power of two choices keeps work off a slow endpoint,
//! retries go to endpoints not yet tried, outlier detection ejects a failing endpoint and lets
//! it back after the ejection time (visible in `/clusters` and Prometheus) without ejecting more
//! than `maxEjectionPercent`, the retry budget caps retries in an outage, small request bodies
//! are replayed (large ones are not).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::endpoints::{
    api_mesh, cluster_of, endpoint_set, host_of, hosts_file, prom_value, start_front,
};
use support::{HttpClient, World, admin_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn labels(port: u16) -> String {
    format!("{{target_node=\"api\",port=\"{port}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_keeps_work_off_a_slow_endpoint() {
    let eps = endpoint_set(3).await;
    eps[2].set_delay(200);
    let world = World::new(&api_mesh(eps[0].addr.port(), None, None));
    let hosts = hosts_file(world.dir.path(), &eps);
    let agent = start_front(&world, &hosts).await;
    let egress = agent.egress_addr;
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(tokio::spawn(async move {
            let c = HttpClient::new();
            for _ in 0..25 {
                assert_eq!(c.get(egress, "api.local", "/").await.status, StatusCode::OK);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let hits: Vec<u64> = eps.iter().map(|e| e.hits()).collect();
    let total: u64 = hits.iter().sum();
    assert_eq!(total, 300);
    // Round robin or random would give the slow endpoint a third (100).
    assert!(
        hits[2] * 100 < total * 20,
        "slow endpoint got {} of {total} requests: {hits:?}",
        hits[2]
    );
    let c = cluster_of(agent.admin_addr, "api").await;
    let rq_total: u64 = c["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["rq_total"].as_u64().unwrap())
        .sum();
    assert_eq!(rq_total, 300, "{c}");
    assert!(
        c["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["rq_active"] == 0 && h["health_flags"] == "healthy"),
        "{c}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_endpoints_not_yet_tried() {
    let eps = endpoint_set(3).await;
    eps[0].set_status(503);
    eps[1].set_status(503);
    // No outlier detection: only the retry's choice of endpoint can save each request.
    let world = World::new(&api_mesh(eps[0].addr.port(), None, None));
    let hosts = hosts_file(world.dir.path(), &eps);
    let agent = start_front(&world, &hosts).await;
    let c = HttpClient::new();
    for i in 0..60 {
        let r = c.get(agent.egress_addr, "api.local", "/").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.body, "127.0.0.3");
    }
    // Each request tried each failing endpoint at most once.
    assert!(eps[0].hits() <= 60 && eps[1].hits() <= 60);
    assert_eq!(eps[2].hits(), 60);
    let retries = prom_value(
        agent.admin_addr,
        &format!(
            "taskmesh_upstream_retries_total{}",
            labels(eps[0].addr.port())
        ),
    )
    .await
    .unwrap();
    assert_eq!(retries as u64, eps[0].hits() + eps[1].hits());
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_readmits_it() {
    let eps = endpoint_set(3).await;
    let port = eps[0].addr.port();
    let od = json!({"maxServerErrors": 3, "interval": {"value": 10, "unit": "s"},
        "baseEjectionDuration": {"value": 1500, "unit": "ms"}, "maxEjectionPercent": 50});
    let world = World::new(&api_mesh(port, Some(od), None));
    let hosts = hosts_file(world.dir.path(), &eps);
    let agent = start_front(&world, &hosts).await;
    let admin = agent.admin_addr;
    let c = HttpClient::new();
    // 500 is not retried by the default policy: the client sees them until the ejection.
    eps[1].set_status(500);
    let mut sent = 0;
    loop {
        c.get(agent.egress_addr, "api.local", "/").await;
        sent += 1;
        assert!(sent < 200, "endpoint .2 never ejected");
        if host_of(&cluster_of(admin, "api").await, eps[1].addr)["health_flags"]
            == "/failed_outlier_check"
        {
            break;
        }
    }
    assert_eq!(
        eps[1].hits(),
        3,
        "ejected after exactly maxServerErrors errors"
    );
    let text = admin_get(admin, "/clusters?format=text").await.1;
    let flag = format!("::{}::health_flags::/failed_outlier_check", eps[1].addr);
    assert!(text.contains(&flag), "{text}");
    let l = labels(port);
    let active = format!("taskmesh_outlier_ejections_active{l}");
    assert_eq!(prom_value(admin, &active).await, Some(1.0));
    // While ejected it gets nothing, and a second failing endpoint is not ejected
    // (maxEjectionPercent 50 of 3 endpoints: one).
    eps[0].set_status(500);
    for _ in 0..30 {
        let r = c.get(agent.egress_addr, "api.local", "/").await;
        assert_ne!(r.body, "127.0.0.2");
    }
    assert_eq!(eps[1].hits(), 3);
    assert_eq!(prom_value(admin, &active).await, Some(1.0));
    let refused = format!("taskmesh_outlier_ejections_refused_total{l}");
    assert!(prom_value(admin, &refused).await.unwrap() >= 1.0);
    // Healthy again and the ejection time over: it is back in the rotation.
    eps[0].set_status(200);
    eps[1].set_status(200);
    support::eventually("ejection of .2 ends", || async {
        host_of(&cluster_of(admin, "api").await, eps[1].addr)["health_flags"] == "healthy"
    })
    .await;
    for _ in 0..30 {
        assert_eq!(
            c.get(agent.egress_addr, "api.local", "/").await.status,
            StatusCode::OK
        );
    }
    assert!(eps[1].hits() > 3, "readmitted endpoint got no traffic");
    assert_eq!(prom_value(admin, &active).await, Some(0.0));
    assert_eq!(
        prom_value(admin, &format!("taskmesh_outlier_ejections_total{l}")).await,
        Some(1.0)
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_retries_in_an_outage() {
    let eps = endpoint_set(1).await;
    eps[0].set_status(503);
    eps[0].set_delay(300);
    let extras = json!({"retryPolicy": {"maxRetries": 3,
        "perRetryTimeout": {"value": 5, "unit": "s"}, "httpRetryEvents": ["gateway-error"]}});
    let world = World::new(&api_mesh(eps[0].addr.port(), None, Some(extras)));
    let hosts = hosts_file(world.dir.path(), &eps);
    let agent = start_front(&world, &hosts).await;
    let egress = agent.egress_addr;
    let calls: Vec<_> = (0..12)
        .map(|_| {
            tokio::spawn(
                async move { HttpClient::new().get(egress, "api.local", "/").await.status },
            )
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // Without a budget: 12 × (1 + 3) = 48 attempts. With it: at most 3 retries at a time.
    let hits = eps[0].hits();
    assert!((12..=30).contains(&hits), "{hits} attempts");
    let l = labels(eps[0].addr.port());
    let overflow = prom_value(
        agent.admin_addr,
        &format!("taskmesh_upstream_retry_overflow_total{l}"),
    )
    .await
    .unwrap();
    let retries = prom_value(
        agent.admin_addr,
        &format!("taskmesh_upstream_retries_total{l}"),
    )
    .await
    .unwrap();
    assert!(overflow >= 1.0, "no retry was refused by the budget");
    assert_eq!(retries as u64, hits - 12);
    agent.shutdown().await;
}

/// A raw HTTP/1.1 request with a chunked body (no Content-Length); returns (status, body).
async fn chunked_post(to: SocketAddr, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(to).await.unwrap();
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: api.local\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Content-Length framed (hyper answers a known-length body so).
    (status, body.to_string())
}

fn post(body: Bytes) -> Request<Full<Bytes>> {
    Request::post("/echo")
        .header("host", "api.local")
        .body(Full::new(body))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_request_bodies_are_replayed_large_ones_are_not() {
    let eps = endpoint_set(1).await;
    let ep = &eps[0];
    let world = World::new(&api_mesh(ep.addr.port(), None, None));
    let hosts = hosts_file(world.dir.path(), &eps);
    let agent = start_front(&world, &hosts).await;
    let egress = agent.egress_addr;
    let c = HttpClient::new();
    // Two 503s: the body goes three times (1 try + the default policy's 2 retries).
    ep.fail_next(2);
    let r = c
        .send(egress, post(Bytes::from_static(b"payload")))
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "payload"));
    assert_eq!(ep.hits(), 3);
    // Chunked (no length), small: kept while it streams, replayed.
    ep.fail_next(2);
    let (status, body) = chunked_post(egress, "chunked payload").await;
    assert_eq!((status, body.as_str()), (200, "chunked payload"));
    assert_eq!(ep.hits(), 6);
    // 60 KiB, within the 64 KiB bound: replayed whole.
    ep.fail_next(1);
    let within = Bytes::from(vec![b'w'; 60 * 1024]);
    let r = c.send(egress, post(within.clone())).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_bytes(), &within[..]);
    assert_eq!(ep.hits(), 8);
    // Over the bound: streamed, not retried; the 503 comes back.
    ep.fail_next(1);
    let big = Bytes::from(vec![b'x'; 100 * 1024]);
    let r = c.send(egress, post(big)).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ep.hits(), 9);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_bound_for_a_dead_endpoint_goes_to_another() {
    let eps = endpoint_set(3).await;
    let world = World::new(&api_mesh(eps[0].addr.port(), None, None));
    let hosts = hosts_file(world.dir.path(), &eps);
    let agent = start_front(&world, &hosts).await;
    let c = HttpClient::new();
    // Warm the agent's pool to every endpoint, then kill one: its connections are reset and
    // new ones refused. The bodies that never reached it are sent to another endpoint.
    for _ in 0..12 {
        c.send(agent.egress_addr, post(Bytes::from_static(b"warm")))
            .await
            .unwrap();
    }
    eps[1].kill();
    let payload = Bytes::from(vec![b'y'; 10 * 1024]);
    for i in 0..30 {
        let r = c
            .send(agent.egress_addr, post(payload.clone()))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "POST {i}: {}", r.body);
        assert_eq!(r.body.as_bytes(), &payload[..]);
    }
    let dead = host_of(&cluster_of(agent.admin_addr, "api").await, eps[1].addr);
    assert!(
        dead["rq_error"].as_u64().unwrap() > 0,
        "dead endpoint never tried: {dead}"
    );
    agent.shutdown().await;
}
