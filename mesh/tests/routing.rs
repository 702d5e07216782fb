//! Per-request routing with App Mesh semantics: every match kind, priority and the
//! unprioritised order, invert and ranges, gRPC, TCP, provider nodes, authority handling,
//! listener selection by port, egress filter.

use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};
use taskmesh_mesh::{
    EgressFilter, HttpRequestView, HttpRouting, MeshDocument, NodeRef, Protocol, RouteKind,
    RouteTable, TcpRouting,
};

fn node(name: &str, port: u16, protocol: &str) -> Value {
    json!({"virtualNodeName": name, "spec": {
        "listeners": [{"portMapping": {"port": port, "protocol": protocol}}],
        "serviceDiscovery": {"dns": {"hostname": format!("{name}.local")}}}})
}

/// Router `api` (http 8080) serving `api.local`, with `routes` (httpRoute matches → node).
fn table_with(routes: Vec<(&str, Option<u32>, Value)>) -> RouteTable {
    let routes: Vec<Value> = routes
        .into_iter()
        .map(|(name, priority, m)| {
            let mut spec = json!({"httpRoute": {"match": m,
                "action": {"weightedTargets": [{"virtualNode": format!("n-{name}"), "weight": 1}]}}});
            if let Some(p) = priority {
                spec["priority"] = json!(p);
            }
            json!({"virtualRouterName": "api", "routeName": name, "spec": spec})
        })
        .collect();
    let mut nodes: Vec<Value> = routes
        .iter()
        .map(|r| {
            node(
                &format!("n-{}", r["routeName"].as_str().unwrap()),
                8080,
                "http",
            )
        })
        .collect();
    nodes.push(json!({"virtualNodeName": "client", "spec": {
        "backends": [{"virtualService": {"virtualServiceName": "api.local"}}]}}));
    let doc = json!({"meshName": "m",
        "virtualServices": [{"virtualServiceName": "api.local",
            "spec": {"provider": {"virtualRouter": {"virtualRouterName": "api"}}}}],
        "virtualRouters": [{"virtualRouterName": "api",
            "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}],
        "routes": routes, "virtualNodes": nodes});
    let doc = MeshDocument::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
    RouteTable::compile(&doc, &NodeRef::parse("mesh/m/virtualNode/client").unwrap()).unwrap()
}

struct Req<'a> {
    method: Method,
    path: &'a str,
    headers: HeaderMap,
    scheme: &'a str,
    authority: &'a str,
    port: Option<u16>,
}

fn req(path: &str) -> Req<'_> {
    Req {
        method: Method::GET,
        path,
        headers: HeaderMap::new(),
        scheme: "http",
        authority: "api.local",
        port: None,
    }
}

impl Req<'_> {
    fn header(mut self, k: &'static str, v: &'static str) -> Self {
        self.headers.append(k, HeaderValue::from_static(v));
        self
    }
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
}

/// The matched route's name, or "404" / "unknown".
fn route(t: &RouteTable, r: &Req<'_>) -> String {
    let view = HttpRequestView {
        authority: r.authority,
        dest_port: r.port,
        method: &r.method,
        scheme: r.scheme,
        path_and_query: r.path,
        headers: &r.headers,
    };
    match t.route_http(&view) {
        HttpRouting::Matched(m) => m.route.name.to_string(),
        HttpRouting::NoRoute { .. } => "404".into(),
        HttpRouting::UnknownDestination => "unknown".into(),
    }
}

#[test]
fn prefix_exact_and_regex_paths() {
    let t = table_with(vec![
        ("prefix", None, json!({"prefix": "/api"})),
        ("exact", None, json!({"path": {"exact": "/api/exact"}})),
        ("regex", None, json!({"path": {"regex": "/items/[0-9]+"}})),
    ]);
    assert_eq!(route(&t, &req("/api/exact")), "exact");
    assert_eq!(route(&t, &req("/api/exact?x=1")), "exact");
    assert_eq!(route(&t, &req("/api/exact/more")), "prefix");
    assert_eq!(
        route(&t, &req("/apix")),
        "prefix",
        "an App Mesh prefix is a plain string prefix"
    );
    assert_eq!(route(&t, &req("/items/42")), "regex");
    assert_eq!(
        route(&t, &req("/items/42/x")),
        "404",
        "regex must match the whole path"
    );
    assert_eq!(route(&t, &req("/API")), "404", "paths are case-sensitive");
    assert_eq!(route(&t, &req("/")), "404");
}

#[test]
fn method_scheme_and_query() {
    let t = table_with(vec![
        ("post", Some(1), json!({"prefix": "/", "method": "POST"})),
        ("https", Some(2), json!({"prefix": "/", "scheme": "https"})),
        (
            "q-exact",
            Some(3),
            json!({"prefix": "/", "queryParameters": [{"name": "v", "match": {"exact": "2"}}]}),
        ),
        (
            "q-present",
            Some(4),
            json!({"prefix": "/", "queryParameters": [{"name": "debug"}]}),
        ),
        ("rest", Some(5), json!({"prefix": "/"})),
    ]);
    assert_eq!(route(&t, &req("/").method(Method::POST)), "post");
    assert_eq!(
        route(
            &t,
            &Req {
                scheme: "https",
                ..req("/")
            }
        ),
        "https"
    );
    assert_eq!(route(&t, &req("/x?a=1&v=2")), "q-exact");
    assert_eq!(route(&t, &req("/x?v=3")), "rest");
    assert_eq!(route(&t, &req("/x?debug")), "q-present");
    assert_eq!(route(&t, &req("/x?debug=")), "q-present");
    assert_eq!(route(&t, &req("/x?debugger=1")), "rest");
}

#[test]
fn header_match_kinds_invert_and_range() {
    let t = table_with(vec![
        (
            "exact",
            Some(1),
            json!({"prefix": "/", "headers": [{"name": "x-e", "match": {"exact": "yes"}}]}),
        ),
        (
            "prefix",
            Some(2),
            json!({"prefix": "/", "headers": [{"name": "x-p", "match": {"prefix": "ab"}}]}),
        ),
        (
            "suffix",
            Some(3),
            json!({"prefix": "/", "headers": [{"name": "x-s", "match": {"suffix": "yz"}}]}),
        ),
        (
            "regex",
            Some(4),
            json!({"prefix": "/", "headers": [{"name": "x-r", "match": {"regex": "v[0-9]"}}]}),
        ),
        (
            "range",
            Some(5),
            json!({"prefix": "/", "headers": [{"name": "x-n", "match": {"range": {"start": 1, "end": 100}}}]}),
        ),
        (
            "present",
            Some(6),
            json!({"prefix": "/", "headers": [{"name": "x-present"}]}),
        ),
        (
            "inverted",
            Some(7),
            json!({"prefix": "/", "headers": [{"name": "x-i", "invert": true, "match": {"exact": "no"}}]}),
        ),
        (
            "absent",
            Some(8),
            json!({"prefix": "/", "headers": [{"name": "x-gone", "invert": true}]}),
        ),
    ]);
    assert_eq!(route(&t, &req("/").header("x-e", "yes")), "exact");
    assert_eq!(
        route(&t, &req("/").header("X-E", "yes")),
        "exact",
        "header names are case-insensitive"
    );
    assert_eq!(route(&t, &req("/").header("x-p", "abc")), "prefix");
    assert_eq!(route(&t, &req("/").header("x-s", "xyz")), "suffix");
    assert_eq!(route(&t, &req("/").header("x-r", "v7")), "regex");
    assert_eq!(
        route(&t, &req("/").header("x-r", "v7x").header("x-gone", "1")),
        "404",
        "regex is a full match"
    );
    assert_eq!(
        route(&t, &req("/").header("x-n", "1")),
        "range",
        "start is inclusive"
    );
    assert_eq!(route(&t, &req("/").header("x-n", "99")), "range");
    assert_eq!(
        route(&t, &req("/").header("x-n", "100").header("x-gone", "1")),
        "404",
        "end is exclusive"
    );
    assert_eq!(
        route(&t, &req("/").header("x-n", "abc").header("x-gone", "1")),
        "404"
    );
    assert_eq!(route(&t, &req("/").header("x-present", "")), "present");
    assert_eq!(route(&t, &req("/").header("x-i", "yes")), "inverted");
    assert_eq!(
        route(&t, &req("/").header("x-i", "no")),
        "absent",
        "inverted exact does not match the value"
    );
    // An absent header does not satisfy an inverted value match; it does satisfy an inverted
    // presence match.
    assert_eq!(route(&t, &req("/")), "absent");
    assert_eq!(route(&t, &req("/").header("x-gone", "1")), "404");
    // Several values are joined with "," as Envoy does.
    assert_eq!(
        route(
            &t,
            &req("/")
                .header("x-e", "yes")
                .header("x-e", "no")
                .header("x-gone", "1")
        ),
        "404"
    );
    assert_eq!(
        route(&t, &req("/").header("x-s", "a").header("x-s", "xyz")),
        "suffix"
    );
}

#[test]
fn priority_order_zero_first() {
    let t = table_with(vec![
        ("low", Some(100), json!({"prefix": "/"})),
        ("high", Some(0), json!({"prefix": "/"})),
        ("mid", Some(1), json!({"prefix": "/a"})),
    ]);
    assert_eq!(route(&t, &req("/a")), "high");
    let t = table_with(vec![
        ("low", Some(100), json!({"prefix": "/a/b/c"})),
        ("mid", Some(5), json!({"prefix": "/"})),
    ]);
    assert_eq!(
        route(&t, &req("/a/b/c")),
        "mid",
        "priority beats specificity"
    );
}

#[test]
fn unprioritised_order() {
    let t = table_with(vec![
        ("catchall", None, json!({"prefix": "/"})),
        ("short", None, json!({"prefix": "/api"})),
        ("long", None, json!({"prefix": "/api/v1"})),
        ("exact", None, json!({"path": {"exact": "/api/v1/x"}})),
        (
            "hdr",
            None,
            json!({"prefix": "/api", "headers": [{"name": "x-canary", "match": {"exact": "1"}}]}),
        ),
        ("nopath", None, json!({"method": "DELETE"})),
    ]);
    // Longest prefix first, exact before prefixes, more conditions first, then document order.
    assert_eq!(route(&t, &req("/api/v1/x")), "exact");
    assert_eq!(route(&t, &req("/api/v1/y")), "long");
    assert_eq!(route(&t, &req("/api/v2")), "short");
    assert_eq!(route(&t, &req("/api/v2").header("x-canary", "1")), "hdr");
    assert_eq!(route(&t, &req("/other")), "catchall");
    assert_eq!(
        route(&t, &req("/other").method(Method::DELETE)),
        "catchall",
        "a path condition is more specific"
    );
    // Prioritised routes come before all unprioritised ones.
    let t = table_with(vec![
        ("exact", None, json!({"path": {"exact": "/a"}})),
        ("prio", Some(1000), json!({"prefix": "/"})),
    ]);
    assert_eq!(route(&t, &req("/a")), "prio");
    // Equal priorities: document order after specificity.
    let t = table_with(vec![
        ("first", Some(3), json!({"prefix": "/"})),
        ("second", Some(3), json!({"prefix": "/"})),
    ]);
    assert_eq!(route(&t, &req("/x")), "first");
}

#[test]
fn authority_matching() {
    let t = table_with(vec![("all", None, json!({"prefix": "/"}))]);
    assert_eq!(
        route(
            &t,
            &Req {
                authority: "API.Local",
                ..req("/")
            }
        ),
        "all"
    );
    assert_eq!(
        route(
            &t,
            &Req {
                authority: "api.local:8080",
                ..req("/")
            }
        ),
        "all"
    );
    assert_eq!(
        route(
            &t,
            &Req {
                authority: "api.local.",
                ..req("/")
            }
        ),
        "all"
    );
    assert_eq!(
        route(
            &t,
            &Req {
                authority: "api",
                ..req("/")
            }
        ),
        "unknown"
    );
    assert_eq!(
        route(
            &t,
            &Req {
                authority: "other.local",
                ..req("/")
            }
        ),
        "unknown"
    );
    // Redirected connection: the original destination port picks the router listener.
    assert_eq!(
        route(
            &t,
            &Req {
                port: Some(8080),
                ..req("/")
            }
        ),
        "all"
    );
    assert_eq!(
        route(
            &t,
            &Req {
                port: Some(9999),
                ..req("/")
            }
        ),
        "unknown"
    );
    // Explicit mode: an authority port that is not a listener falls back to the first listener.
    assert_eq!(
        route(
            &t,
            &Req {
                authority: "api.local:15001",
                ..req("/")
            }
        ),
        "all"
    );
    assert!(RouteTable::is_always_allowed("sts.us-east-1.amazonaws.com"));
    assert!(RouteTable::is_always_allowed("S3.AmazonAWS.com:443"));
    assert!(!RouteTable::is_always_allowed("amazonaws.com.evil.example"));
    assert!(!RouteTable::is_always_allowed("evilamazonaws.com"));
    assert_eq!(t.egress_filter(), EgressFilter::DropAll);
}

/// A mesh with every provider kind and protocol, seen from node `client`.
fn full_mesh() -> RouteTable {
    let backends: Vec<Value> = [
        "grpc.local",
        "db.local",
        "db2.local",
        "direct.local",
        "multi.local",
        "empty.local",
    ]
    .iter()
    .map(|s| json!({"virtualService": {"virtualServiceName": s}}))
    .collect();
    let doc = json!({"meshName": "m", "spec": {"egressFilter": {"type": "ALLOW_ALL"}},
        "virtualServices": [
            {"virtualServiceName": "grpc.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "grpc"}}}},
            {"virtualServiceName": "db.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "db"}}}},
            {"virtualServiceName": "db2.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "db2"}}}},
            {"virtualServiceName": "direct.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "direct"}}}},
            {"virtualServiceName": "multi.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "multi"}}}},
            {"virtualServiceName": "empty.local"}],
        "virtualRouters": [
            {"virtualRouterName": "grpc", "spec": {"listeners": [{"portMapping": {"port": 50051, "protocol": "grpc"}}]}},
            {"virtualRouterName": "db", "spec": {"listeners": [{"portMapping": {"port": 5432, "protocol": "tcp"}}]}},
            {"virtualRouterName": "db2", "spec": {"listeners": [{"portMapping": {"port": 5432, "protocol": "tcp"}}]}},
            {"virtualRouterName": "multi", "spec": {"listeners": [
                {"portMapping": {"port": 80, "protocol": "http"}}, {"portMapping": {"port": 81, "protocol": "http2"}}]}}],
        "routes": [
            {"virtualRouterName": "grpc", "routeName": "any", "spec": {"grpcRoute": {
                "action": {"weightedTargets": [{"virtualNode": "g-any", "weight": 1}]}}}},
            {"virtualRouterName": "grpc", "routeName": "svc", "spec": {"grpcRoute": {"match": {"serviceName": "pkg.Users"},
                "action": {"weightedTargets": [{"virtualNode": "g-svc", "weight": 1}]}}}},
            {"virtualRouterName": "grpc", "routeName": "method", "spec": {"grpcRoute": {
                "match": {"serviceName": "pkg.Users", "methodName": "Get"},
                "action": {"weightedTargets": [{"virtualNode": "g-method", "weight": 1}]}}}},
            {"virtualRouterName": "grpc", "routeName": "meta", "spec": {"priority": 1, "grpcRoute": {
                "match": {"serviceName": "pkg.Users", "metadata": [{"name": "tenant", "match": {"prefix": "beta-"}}]},
                "action": {"weightedTargets": [{"virtualNode": "g-meta", "weight": 1}]}}}},
            {"virtualRouterName": "db", "routeName": "tcp-second", "spec": {"priority": 9, "tcpRoute": {
                "action": {"weightedTargets": [{"virtualNode": "db-b", "weight": 1}]}}}},
            {"virtualRouterName": "db", "routeName": "tcp-first", "spec": {"priority": 2, "tcpRoute": {
                "action": {"weightedTargets": [{"virtualNode": "db-a", "weight": 1}]}, "timeout": {"idle": {"value": 0, "unit": "s"}}}}},
            {"virtualRouterName": "db2", "routeName": "tcp-shadowed", "spec": {"tcpRoute": {
                "action": {"weightedTargets": [{"virtualNode": "db-b", "weight": 1}]}}}},
            {"virtualRouterName": "multi", "routeName": "on80", "spec": {"httpRoute": {"match": {"prefix": "/", "port": 80},
                "action": {"weightedTargets": [{"virtualNode": "web", "weight": 1}]}}}},
            {"virtualRouterName": "multi", "routeName": "on81", "spec": {"http2Route": {"match": {"prefix": "/", "port": 81},
                "action": {"weightedTargets": [{"virtualNode": "web2", "weight": 1}]},
                "timeout": {"perRequest": {"value": 30, "unit": "s"}},
                "retryPolicy": {"maxRetries": 3, "perRetryTimeout": {"value": 500, "unit": "ms"},
                                "httpRetryEvents": ["gateway-error"], "tcpRetryEvents": ["connection-error"]}}}}],
        "virtualNodes": [
            node("g-any", 50051, "grpc"), node("g-svc", 50051, "grpc"), node("g-method", 50051, "grpc"),
            node("g-meta", 50051, "grpc"), node("db-a", 5432, "tcp"), node("db-b", 5432, "tcp"),
            node("direct", 7000, "http"), node("web", 80, "http"), node("web2", 81, "http2"),
            {"virtualNodeName": "client", "spec": {
                "listeners": [{"portMapping": {"port": 3000, "protocol": "http"},
                    "timeout": {"http": {"perRequest": {"value": 0, "unit": "s"}}}}],
                "serviceDiscovery": {"dns": {"hostname": "client.local"}},
                "backendDefaults": {"clientPolicy": {"tls": {"validation": {"trust": {"file": {"certificateChain": "/ca.pem"}}}}}},
                "backends": backends}}]});
    let doc = MeshDocument::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
    RouteTable::compile(
        &doc,
        &NodeRef::parse(
            "arn:aws:appmesh:eu-west-1:111122223333:mesh/m@111122223333/virtualNode/client",
        )
        .unwrap(),
    )
    .unwrap()
}

fn target_of(t: &RouteTable, r: &Req<'_>) -> String {
    let view = HttpRequestView {
        authority: r.authority,
        dest_port: r.port,
        method: &r.method,
        scheme: r.scheme,
        path_and_query: r.path,
        headers: &r.headers,
    };
    match t.route_http(&view) {
        HttpRouting::Matched(m) => t.targets()[m.pick(7).node].name.to_string(),
        HttpRouting::NoRoute { virtual_service } => format!("404 {virtual_service}"),
        HttpRouting::UnknownDestination => "unknown".into(),
    }
}

#[test]
fn grpc_routes() {
    let t = full_mesh();
    let g = |path: &'static str| Req {
        authority: "grpc.local:50051",
        method: Method::POST,
        ..req(path)
    };
    assert_eq!(target_of(&t, &g("/pkg.Users/Get")), "g-method");
    assert_eq!(target_of(&t, &g("/pkg.Users/List")), "g-svc");
    assert_eq!(target_of(&t, &g("/pkg.Orders/List")), "g-any");
    assert_eq!(
        target_of(&t, &g("/pkg.Users/Get").header("tenant", "beta-7")),
        "g-meta",
        "priority 1 wins"
    );
    assert_eq!(target_of(&t, &g("/pkg.UsersX/Get")), "g-any");
}

#[test]
fn tcp_routes_by_port() {
    let t = full_mesh();
    let TcpRouting::Matched(m) = t.route_tcp(5432) else {
        panic!("5432 must route")
    };
    assert_eq!(
        m.virtual_service, "db.local",
        "the first backend on a port wins"
    );
    assert_eq!(&*m.route.name, "tcp-first", "routes in priority order");
    assert_eq!(m.route.kind, RouteKind::Tcp);
    assert_eq!(m.route.timeout.idle, None, "idle 0 disables");
    assert_eq!(&*t.targets()[m.pick(u32::MAX).node].name, "db-a");
    assert!(matches!(t.route_tcp(5433), TcpRouting::UnknownDestination));
    assert!(matches!(t.route_tcp(50051), TcpRouting::UnknownDestination));
    assert_eq!(t.egress_protocol(5432), Some(Protocol::Tcp));
    assert_eq!(t.egress_protocol(50051), Some(Protocol::Grpc));
    // HTTP to a TCP-only service finds no route.
    assert_eq!(
        target_of(
            &t,
            &Req {
                authority: "db.local",
                ..req("/")
            }
        ),
        "404 db.local"
    );
}

#[test]
fn provider_node_multi_listener_and_no_provider() {
    let t = full_mesh();
    let r = Req {
        authority: "direct.local",
        ..req("/anything")
    };
    assert_eq!(target_of(&t, &r), "direct");
    let view = HttpRequestView {
        authority: "direct.local:7000",
        dest_port: Some(7000),
        method: &Method::GET,
        scheme: "http",
        path_and_query: "/",
        headers: &HeaderMap::new(),
    };
    let HttpRouting::Matched(m) = t.route_http(&view) else {
        panic!("provider node must match")
    };
    assert_eq!(m.pick(0).port, Some(7000));
    assert_eq!(&*m.route.router, "");
    assert_eq!(
        target_of(
            &t,
            &Req {
                authority: "multi.local",
                port: Some(80),
                ..req("/")
            }
        ),
        "web"
    );
    assert_eq!(
        target_of(
            &t,
            &Req {
                authority: "multi.local",
                port: Some(81),
                ..req("/")
            }
        ),
        "web2"
    );
    assert_eq!(
        target_of(
            &t,
            &Req {
                authority: "multi.local:81",
                ..req("/")
            }
        ),
        "web2"
    );
    assert_eq!(
        target_of(
            &t,
            &Req {
                authority: "multi.local",
                ..req("/")
            }
        ),
        "web"
    );
    assert_eq!(
        target_of(
            &t,
            &Req {
                authority: "empty.local",
                ..req("/")
            }
        ),
        "404 empty.local"
    );
    assert_eq!(t.egress_filter(), EgressFilter::AllowAll);
}

#[test]
fn defaults_and_policies_in_the_table() {
    let t = full_mesh();
    assert_eq!(t.mesh_name(), "m");
    assert_eq!(t.node_name(), "client");
    let l = t.listener_for_port(3000).unwrap();
    assert_eq!(l.protocol, Protocol::Http);
    assert_eq!(l.timeout.per_request, None, "perRequest 0 disables");
    assert_eq!(l.timeout.idle, Some(std::time::Duration::from_secs(300)));
    let view = HttpRequestView {
        authority: "multi.local",
        dest_port: Some(81),
        method: &Method::GET,
        scheme: "http",
        path_and_query: "/",
        headers: &HeaderMap::new(),
    };
    let HttpRouting::Matched(m) = t.route_http(&view) else {
        panic!()
    };
    assert_eq!(m.route.kind, RouteKind::Http2);
    assert_eq!(
        m.route.timeout.per_request,
        Some(std::time::Duration::from_secs(30))
    );
    let rp = m.route.retry_policy.as_ref().unwrap();
    assert_eq!(rp.max_retries, 3);
    assert!(rp.retries_status(503) && rp.retries_status(504) && !rp.retries_status(500));
    assert!(rp.on_connect_failure && rp.on_reset && !rp.on_refused_stream);
    let view = HttpRequestView {
        dest_port: Some(80),
        ..view
    };
    let HttpRouting::Matched(m) = t.route_http(&view) else {
        panic!()
    };
    assert_eq!(
        m.route.timeout.per_request,
        Some(std::time::Duration::from_secs(15)),
        "default 15 s"
    );
    assert!(m.route.retry_policy.is_none());
    assert!(t.targets().iter().any(|n| &*n.name == "web"));
    assert_eq!(t.routes().count(), 9 + 1);
    let tls = t
        .client_tls("Multi.Local")
        .expect("backend defaults apply to every backend");
    assert!(tls.enforce(), "enforce defaults to true");
    assert!(tls.ports.is_empty());
    assert!(t.client_tls("nowhere.local").is_none());
}
