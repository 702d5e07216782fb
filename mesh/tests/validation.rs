//! Validation: every problem is reported with its exact path and all problems are listed.

use serde_json::{Value, json};
use taskmesh_mesh::MeshDocument;

fn base() -> Value {
    json!({"meshName": "m",
        "virtualServices": [
            {"virtualServiceName": "a.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}}],
        "virtualRouters": [
            {"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}},
            {"virtualRouterName": "two", "spec": {"listeners": [
                {"portMapping": {"port": 80, "protocol": "http"}}, {"portMapping": {"port": 81, "protocol": "grpc"}}]}}],
        "routes": [
            {"virtualRouterName": "r", "routeName": "ok", "spec": {"httpRoute": {"match": {"prefix": "/"},
                "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}}],
        "virtualNodes": [
            {"virtualNodeName": "n", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "n.local"}}}},
            {"virtualNodeName": "multi", "spec": {"listeners": [
                {"portMapping": {"port": 80, "protocol": "http"}}, {"portMapping": {"port": 90, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "multi.local"}}}}]})
}

fn problems(doc: Value) -> Vec<(String, String)> {
    match MeshDocument::from_value(doc) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect(),
    }
}

fn add_route(doc: &mut Value, route: Value) {
    doc["routes"].as_array_mut().unwrap().push(route);
}

fn http_route(name: &str, m: Value, targets: Value) -> Value {
    json!({"virtualRouterName": "r", "routeName": name, "spec": {"httpRoute": {"match": m, "action": {"weightedTargets": targets}}}})
}

fn assert_paths(doc: Value, expected: &[&str]) {
    let got = problems(doc);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, expected, "problems: {got:#?}");
}

#[test]
fn base_document_is_valid() {
    assert_paths(base(), &[]);
}

#[test]
fn dangling_target_names_node_and_mesh() {
    let mut doc = base();
    add_route(
        &mut doc,
        http_route(
            "x",
            json!({"prefix": "/x"}),
            json!([{"virtualNode": "n", "weight": 1}, {"virtualNode": "x", "weight": 1}]),
        ),
    );
    add_route(
        &mut doc,
        http_route(
            "y",
            json!({"prefix": "/y"}),
            json!([{"virtualNode": "x", "weight": 1}]),
        ),
    );
    let got = problems(doc);
    assert_eq!(
        got[0].0,
        "routes[1].spec.httpRoute.action.weightedTargets[1].virtualNode"
    );
    assert_eq!(got[0].1, "no virtual node \"x\" in mesh \"m\"");
    assert_eq!(
        got[1].0,
        "routes[2].spec.httpRoute.action.weightedTargets[0].virtualNode"
    );
    assert_eq!(got.len(), 2);
}

#[test]
fn dangling_router_provider_and_backend() {
    let mut doc = base();
    doc["virtualServices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"virtualServiceName": "b.local",
        "spec": {"provider": {"virtualNode": {"virtualNodeName": "ghost"}}}}));
    doc["virtualServices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"virtualServiceName": "c.local",
        "spec": {"provider": {"virtualRouter": {"virtualRouterName": "ghost"}}}}));
    doc["routes"][0]["virtualRouterName"] = json!("nope");
    doc["virtualNodes"][0]["spec"]["backends"] = json!([{"virtualService": {"virtualServiceName": "a.local"}},
        {"virtualService": {"virtualServiceName": "missing.local"}}]);
    assert_paths(
        doc,
        &[
            "virtualServices[1].spec.provider.virtualNode.virtualNodeName",
            "virtualServices[2].spec.provider.virtualRouter.virtualRouterName",
            "routes[0].virtualRouterName",
            "virtualNodes[0].spec.backends[1].virtualService.virtualServiceName",
        ],
    );
}

#[test]
fn duplicate_names() {
    let mut doc = base();
    let dup_node = doc["virtualNodes"][0].clone();
    doc["virtualNodes"].as_array_mut().unwrap().push(dup_node);
    let dup_route = doc["routes"][0].clone();
    add_route(&mut doc, dup_route);
    let dup_vs = doc["virtualServices"][0].clone();
    doc["virtualServices"].as_array_mut().unwrap().push(dup_vs);
    let got = problems(doc);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "virtualServices[1].virtualServiceName",
            "routes[1].routeName",
            "virtualNodes[2].virtualNodeName"
        ]
    );
    assert!(
        got[2].1.contains("first at virtualNodes[0]"),
        "{}",
        got[2].1
    );
}

#[test]
fn weights_targets_and_priority_limits() {
    let mut doc = base();
    let eleven: Vec<Value> = (0..11)
        .map(|_| json!({"virtualNode": "n", "weight": 1}))
        .collect();
    add_route(
        &mut doc,
        http_route("many", json!({"prefix": "/m"}), Value::Array(eleven)),
    );
    add_route(
        &mut doc,
        http_route(
            "heavy",
            json!({"prefix": "/h"}),
            json!([{"virtualNode": "n", "weight": 101}]),
        ),
    );
    add_route(
        &mut doc,
        http_route(
            "zero",
            json!({"prefix": "/z"}),
            json!([{"virtualNode": "n", "weight": 0}]),
        ),
    );
    add_route(
        &mut doc,
        http_route("empty", json!({"prefix": "/e"}), json!([])),
    );
    let mut prio = http_route(
        "prio",
        json!({"prefix": "/p"}),
        json!([{"virtualNode": "n", "weight": 1}]),
    );
    prio["spec"]["priority"] = json!(1001);
    add_route(&mut doc, prio);
    assert_paths(
        doc,
        &[
            "routes[1].spec.httpRoute.action.weightedTargets",
            "routes[2].spec.httpRoute.action.weightedTargets[0].weight",
            "routes[2].spec.httpRoute.action.weightedTargets",
            "routes[3].spec.httpRoute.action.weightedTargets",
            "routes[4].spec.httpRoute.action.weightedTargets",
            "routes[5].spec.priority",
        ],
    );
}

#[test]
fn target_ports_of_multi_listener_nodes() {
    let mut doc = base();
    add_route(
        &mut doc,
        http_route(
            "noport",
            json!({"prefix": "/a"}),
            json!([{"virtualNode": "multi", "weight": 1}]),
        ),
    );
    add_route(
        &mut doc,
        http_route(
            "badport",
            json!({"prefix": "/b"}),
            json!([{"virtualNode": "multi", "weight": 1, "port": 91}]),
        ),
    );
    add_route(
        &mut doc,
        http_route(
            "goodport",
            json!({"prefix": "/c"}),
            json!([{"virtualNode": "multi", "weight": 1, "port": 90}]),
        ),
    );
    assert_paths(
        doc,
        &[
            "routes[1].spec.httpRoute.action.weightedTargets[0].port",
            "routes[2].spec.httpRoute.action.weightedTargets[0].port",
        ],
    );
}

#[test]
fn exactly_one_route_kind_and_listener_protocol() {
    let mut doc = base();
    add_route(
        &mut doc,
        json!({"virtualRouterName": "r", "routeName": "none", "spec": {}}),
    );
    let mut both = http_route(
        "both",
        json!({"prefix": "/"}),
        json!([{"virtualNode": "n", "weight": 1}]),
    );
    both["spec"]["tcpRoute"] =
        json!({"action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}});
    add_route(&mut doc, both);
    add_route(
        &mut doc,
        json!({"virtualRouterName": "r", "routeName": "grpc", "spec": {"grpcRoute": {
        "match": {"serviceName": "s"}, "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}}),
    );
    // Router "two" has two listeners: port required, and must exist, and protocol must match.
    add_route(
        &mut doc,
        json!({"virtualRouterName": "two", "routeName": "noport", "spec": {"httpRoute": {
        "match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}}),
    );
    add_route(
        &mut doc,
        json!({"virtualRouterName": "two", "routeName": "wrongport", "spec": {"httpRoute": {
        "match": {"prefix": "/", "port": 82}, "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}}),
    );
    add_route(
        &mut doc,
        json!({"virtualRouterName": "two", "routeName": "wrongproto", "spec": {"httpRoute": {
        "match": {"prefix": "/", "port": 81}, "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}}),
    );
    add_route(
        &mut doc,
        json!({"virtualRouterName": "two", "routeName": "grpc81", "spec": {"grpcRoute": {
        "match": {"port": 81}, "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}}),
    );
    let got = problems(doc);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[1].spec",
            "routes[2].spec",
            "routes[3].spec.grpcRoute",
            "routes[4].spec.httpRoute.match.port",
            "routes[5].spec.httpRoute.match.port",
            "routes[6].spec.httpRoute",
        ],
        "{got:#?}"
    );
    assert!(got[1].1.contains("httpRoute, tcpRoute"), "{}", got[1].1);
    assert!(
        got[2].1.contains("grpc route needs a grpc listener"),
        "{}",
        got[2].1
    );
}

#[test]
fn match_constraints() {
    let mut doc = base();
    let eleven: Vec<Value> = (0..11).map(|i| json!({"name": format!("h{i}")})).collect();
    add_route(
        &mut doc,
        http_route(
            "m1",
            json!({"prefix": "api", "headers": eleven}),
            json!([{"virtualNode": "n", "weight": 1}]),
        ),
    );
    add_route(
        &mut doc,
        http_route(
            "m2",
            json!({"path": {"regex": "(unclosed"}, "headers": [
        {"name": "x", "match": {"regex": "[z-a]"}},
        {"name": "bad name", "match": {"exact": "1"}},
        {"name": "r", "match": {"range": {"start": 5, "end": 5}}},
        {"name": "e", "match": {"exact": ""}}]}),
            json!([{"virtualNode": "n", "weight": 1}]),
        ),
    );
    add_route(
        &mut doc,
        http_route(
            "m3",
            json!({"prefix": "/", "path": {"exact": "/a"}}),
            json!([{"virtualNode": "n", "weight": 1}]),
        ),
    );
    add_route(
        &mut doc,
        http_route(
            "m4",
            json!({"path": {"exact": "/a", "regex": "/b"}}),
            json!([{"virtualNode": "n", "weight": 1}]),
        ),
    );
    assert_paths(
        doc,
        &[
            "routes[1].spec.httpRoute.match.prefix",
            "routes[1].spec.httpRoute.match.headers",
            "routes[2].spec.httpRoute.match.path.regex",
            "routes[2].spec.httpRoute.match.headers[0].match.regex",
            "routes[2].spec.httpRoute.match.headers[1].name",
            "routes[2].spec.httpRoute.match.headers[2].match.range",
            "routes[2].spec.httpRoute.match.headers[3].match.exact",
            "routes[3].spec.httpRoute.match",
            "routes[4].spec.httpRoute.match.path",
        ],
    );
}

#[test]
fn grpc_and_retry_constraints() {
    let mut doc = base();
    doc["virtualRouters"][0]["spec"]["listeners"][0]["portMapping"]["protocol"] = json!("grpc");
    doc["routes"] = json!([{"virtualRouterName": "r", "routeName": "g", "spec": {"grpcRoute": {
        "match": {"methodName": "Get", "metadata": [{"name": "x", "invert": true, "match": {"suffix": "y"}}]},
        "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]},
        "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"value": 1, "unit": "s"},
            "grpcRetryEvents": ["unavailable", "bogus"], "tcpRetryEvents": ["connection-reset"],
            "httpRetryEvents": ["gateway-error", "teapot"]}}}}]);
    assert_paths(
        doc,
        &[
            "routes[0].spec.grpcRoute.match.methodName",
            "routes[0].spec.grpcRoute.retryPolicy.httpRetryEvents[1]",
            "routes[0].spec.grpcRoute.retryPolicy.tcpRetryEvents[0]",
            "routes[0].spec.grpcRoute.retryPolicy.grpcRetryEvents[1]",
        ],
    );
}

#[test]
fn ports_and_node_listener_rules() {
    let mut doc = base();
    doc["virtualRouters"][0]["spec"]["listeners"][0]["portMapping"]["port"] = json!(70000);
    doc["virtualNodes"].as_array_mut().unwrap().push(json!({"virtualNodeName": "bad", "spec": {
        "listeners": [
            {"portMapping": {"port": 0, "protocol": "tcp"}, "timeout": {"http": {"idle": {"value": 1, "unit": "s"}}},
             "connectionPool": {"http": {"maxConnections": 0}}},
            {"portMapping": {"port": 8080, "protocol": "http"},
             "healthCheck": {"protocol": "http", "port": 9000, "healthyThreshold": 1, "unhealthyThreshold": 3,
                             "timeoutMillis": 2000, "intervalMillis": 5000},
             "outlierDetection": {"maxServerErrors": 0, "interval": {"value": 10, "unit": "s"},
                                  "baseEjectionDuration": {"value": 30, "unit": "s"}, "maxEjectionPercent": 150}},
            {"portMapping": {"port": 8080, "protocol": "http"}}]}}));
    assert_paths(
        doc,
        &[
            "virtualRouters[0].spec.listeners[0].portMapping.port",
            "virtualNodes[2].spec.listeners[0].portMapping.port",
            "virtualNodes[2].spec.listeners[0].timeout.http",
            "virtualNodes[2].spec.listeners[0].connectionPool.http",
            "virtualNodes[2].spec.listeners[0].connectionPool.http.maxConnections",
            "virtualNodes[2].spec.listeners[1].outlierDetection.maxServerErrors",
            "virtualNodes[2].spec.listeners[1].outlierDetection.maxEjectionPercent",
            "virtualNodes[2].spec.listeners[1].healthCheck.healthyThreshold",
            "virtualNodes[2].spec.listeners[1].healthCheck.port",
            "virtualNodes[2].spec.listeners[1].healthCheck.path",
            "virtualNodes[2].spec.listeners[2].portMapping.port",
            "virtualNodes[2].spec.serviceDiscovery",
        ],
    );
}

#[test]
fn paths_follow_the_input_shape() {
    let arr = json!([
        {"route": {"meshName": "m", "virtualRouterName": "r", "routeName": "x", "spec": {"httpRoute": {
            "match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "ghost", "weight": 1}]}}}}},
        {"virtualRouter": {"meshName": "m", "virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}}}
    ]);
    let got = problems(arr);
    assert_eq!(
        got[0].0,
        "[0].route.spec.httpRoute.action.weightedTargets[0].virtualNode"
    );
}

#[test]
fn display_lists_every_problem() {
    let mut doc = base();
    add_route(
        &mut doc,
        http_route(
            "x",
            json!({"prefix": "/x"}),
            json!([{"virtualNode": "x", "weight": 1}]),
        ),
    );
    doc["routes"][0]["spec"]["priority"] = json!(5000);
    let err = MeshDocument::from_value(doc).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("2 problems"), "{text}");
    assert!(
        text.contains("routes[0].spec.priority: priority must be 0–1000, found 5000"),
        "{text}"
    );
    assert!(text.contains("routes[1].spec.httpRoute.action.weightedTargets[0].virtualNode: no virtual node \"x\" in mesh \"m\""), "{text}");
}
