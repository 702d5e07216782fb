//! Route-table micro-benchmarks: compiling 1 000 routes, matching with 10 / 100 / 1 000 routes
//! in one router (the cost must not grow linearly), and the weighted pick.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use taskmesh_mesh::{HttpRequestView, HttpRouting, MeshDocument, NodeRef, RouteTable};

/// A mesh with one router of `n` routes: a mix of prefix routes (one per "tenant"), exact
/// paths, header-conditioned and method-conditioned routes, weighted over 4 nodes.
fn document(n: usize) -> MeshDocument {
    let nodes: Vec<Value> = (0..4)
        .map(|i| {
            json!({"virtualNodeName": format!("app-v{i}"), "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": format!("app-v{i}.local")}}}})
        })
        .chain([json!({"virtualNodeName": "client", "spec": {
            "backends": [{"virtualService": {"virtualServiceName": "app.local"}}]}})])
        .collect();
    let routes: Vec<Value> = (0..n)
        .map(|i| {
            let m = match i % 4 {
                0 => json!({"prefix": format!("/tenant{i}/")}),
                1 => json!({"path": {"exact": format!("/exact/{i}")}}),
                2 => json!({"prefix": format!("/api/v{i}/"), "headers": [{"name": "x-version", "match": {"exact": format!("{i}")}}]}),
                _ => json!({"prefix": format!("/svc{i}"), "method": "POST"}),
            };
            json!({"virtualRouterName": "app", "routeName": format!("r{i}"), "spec": {"httpRoute": {
                "match": m,
                "action": {"weightedTargets": [
                    {"virtualNode": "app-v0", "weight": 40}, {"virtualNode": "app-v1", "weight": 30},
                    {"virtualNode": "app-v2", "weight": 20}, {"virtualNode": "app-v3", "weight": 10}]}}}})
        })
        .chain([json!({"virtualRouterName": "app", "routeName": "fallback", "spec": {"httpRoute": {
            "match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "app-v0", "weight": 1}]}}}})])
        .collect();
    let doc = json!({"meshName": "bench",
        "virtualServices": [{"virtualServiceName": "app.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "app"}}}}],
        "virtualRouters": [{"virtualRouterName": "app",
            "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}],
        "routes": routes, "virtualNodes": nodes});
    MeshDocument::from_value(doc).expect("benchmark document is valid")
}

fn node() -> NodeRef {
    NodeRef::parse("mesh/bench/virtualNode/client").expect("node ref")
}

fn compile(c: &mut Criterion) {
    let doc = document(1000);
    c.bench_function("compile/1000_routes", |b| {
        b.iter(|| RouteTable::compile(black_box(&doc), &node()).expect("compiles"))
    });
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-version", http::HeaderValue::from_static("2"));
    headers.insert("user-agent", http::HeaderValue::from_static("bench"));
    for n in [10usize, 100, 1000] {
        let table = RouteTable::compile(&document(n), &node()).expect("compiles");
        // A request matching the last prefix route, one matching an exact path in the
        // middle, one matching a header route, and one falling through to the catch-all.
        let last_prefix = (0..n).rev().find(|i| i % 4 == 0).unwrap_or(0);
        let cases = [
            ("prefix_last", format!("/tenant{last_prefix}/items?id=7")),
            ("exact_mid", format!("/exact/{}", (n / 2) / 4 * 4 + 1)),
            ("header", "/api/v2/things".to_owned()),
            ("fallback", "/nothing/here".to_owned()),
        ];
        for (name, path) in &cases {
            let req = HttpRequestView {
                authority: "App.Local:8080",
                dest_port: Some(8080),
                method: &http::Method::GET,
                scheme: "http",
                path_and_query: path,
                headers: &headers,
            };
            assert!(
                matches!(table.route_http(&req), HttpRouting::Matched(_)),
                "{name} at {n} routes"
            );
            group.bench_with_input(BenchmarkId::new(*name, n), &req, |b, req| {
                b.iter(|| match table.route_http(black_box(req)) {
                    HttpRouting::Matched(m) => black_box(m.route.priority),
                    _ => None,
                })
            });
        }
    }
    group.finish();
}

fn weighted_pick(c: &mut Criterion) {
    let table = RouteTable::compile(&document(10), &node()).expect("compiles");
    let headers = http::HeaderMap::new();
    let req = HttpRequestView {
        authority: "app.local",
        dest_port: None,
        method: &http::Method::GET,
        scheme: "http",
        path_and_query: "/tenant0/x",
        headers: &headers,
    };
    let HttpRouting::Matched(m) = table.route_http(&req) else {
        panic!("benchmark request must match")
    };
    let mut r: u32 = 0x9E37_79B9;
    c.bench_function("weighted_pick/4_targets", |b| {
        b.iter(|| {
            r ^= r << 13;
            r ^= r >> 17;
            r ^= r << 5;
            black_box(m.pick(black_box(r)).node)
        })
    });
}

criterion_group!(benches, compile, matching, weighted_pick);
criterion_main!(benches);
