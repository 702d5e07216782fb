//! The per-request path allocates nothing: routing HTTP requests of every match kind (regex,
//! headers with several values, query parameters, mixed-case hosts), routing TCP and picking
//! targets, counted by a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;
use taskmesh_mesh::{HttpRequestView, HttpRouting, MeshDocument, NodeRef, RouteTable, TcpRouting};

struct Counting;

thread_local! {
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    let before = COUNT.with(Cell::get);
    f();
    COUNT.with(Cell::get) - before
}

#[test]
fn routing_does_not_allocate() {
    let target = |n: &str| json!([{"virtualNode": n, "weight": 1}]);
    let doc = json!({"meshName": "m",
        "virtualServices": [
            {"virtualServiceName": "api.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}},
            {"virtualServiceName": "db.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "db"}}}}],
        "virtualRouters": [
            {"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}},
            {"virtualRouterName": "db", "spec": {"listeners": [{"portMapping": {"port": 5432, "protocol": "tcp"}}]}}],
        "routes": [
            {"virtualRouterName": "r", "routeName": "re", "spec": {"priority": 1, "httpRoute": {
                "match": {"path": {"regex": "/items/[0-9]+"}, "headers": [{"name": "x-multi", "match": {"regex": "a,b"}}]},
                "action": {"weightedTargets": target("n")}}}},
            {"virtualRouterName": "r", "routeName": "q", "spec": {"priority": 2, "httpRoute": {
                "match": {"prefix": "/", "queryParameters": [{"name": "v", "match": {"exact": "2"}}],
                          "headers": [{"name": "x-n", "match": {"range": {"start": 0, "end": 10}}}]},
                "action": {"weightedTargets": target("n")}}}},
            {"virtualRouterName": "db", "routeName": "t", "spec": {"tcpRoute": {"action": {"weightedTargets": target("d")}}}}],
        "virtualNodes": [
            {"virtualNodeName": "n", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "n.local"}}}},
            {"virtualNodeName": "d", "spec": {"listeners": [{"portMapping": {"port": 5432, "protocol": "tcp"}}],
                "serviceDiscovery": {"dns": {"hostname": "d.local"}}}},
            {"virtualNodeName": "c", "spec": {"backends": [
                {"virtualService": {"virtualServiceName": "api.local"}}, {"virtualService": {"virtualServiceName": "db.local"}}]}}]});
    let doc = MeshDocument::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
    let table =
        RouteTable::compile(&doc, &NodeRef::parse("mesh/m/virtualNode/c").unwrap()).unwrap();
    let mut headers = HeaderMap::new();
    headers.append("x-multi", HeaderValue::from_static("a"));
    headers.append("x-multi", HeaderValue::from_static("b"));
    headers.append("x-n", HeaderValue::from_static("5"));
    let method = Method::GET;
    let requests = [
        ("API.Local:80", "/items/42"),
        ("api.local", "/other?a=1&v=2"),
        ("api.local", "/nothing"),
        ("elsewhere.example", "/"),
    ];
    // Warm up (lazy regex caches allocate once per thread).
    for (authority, path) in requests {
        let req = HttpRequestView {
            authority,
            dest_port: None,
            method: &method,
            scheme: "http",
            path_and_query: path,
            headers: &headers,
        };
        let _ = table.route_http(&req);
    }
    let mut matched = 0;
    let n = allocations(|| {
        for _ in 0..100 {
            for (authority, path) in requests {
                let req = HttpRequestView {
                    authority,
                    dest_port: None,
                    method: &method,
                    scheme: "http",
                    path_and_query: path,
                    headers: &headers,
                };
                if let HttpRouting::Matched(m) = table.route_http(&req) {
                    matched += 1;
                    std::hint::black_box(m.pick(12345));
                }
            }
            if let TcpRouting::Matched(m) = table.route_tcp(5432) {
                std::hint::black_box(m.pick(1));
            }
            std::hint::black_box(RouteTable::is_always_allowed("S3.amazonaws.com:443"));
        }
    });
    assert_eq!(matched, 200, "the regex and the query route must match");
    assert_eq!(n, 0, "routing allocated {n} times");
}
