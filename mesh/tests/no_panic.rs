//! No panic on any input: arbitrary bytes, and valid documents with arbitrary values spliced
//! in anywhere, go through parsing, validation, compilation for every node, and routing.

use proptest::prelude::*;
use serde_json::{Value, json};
use taskmesh_mesh::{HttpRequestView, MeshDocument, NodeRef, RouteTable};

fn seed() -> Value {
    json!({"meshName": "m", "spec": {"egressFilter": {"type": "ALLOW_ALL"}},
        "virtualServices": [
            {"virtualServiceName": "a.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}},
            {"virtualServiceName": "b.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "n"}}}}],
        "virtualRouters": [{"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}}],
        "routes": [
            {"virtualRouterName": "r", "routeName": "x", "spec": {"priority": 3, "httpRoute": {
                "match": {"prefix": "/a", "method": "GET", "headers": [{"name": "h", "invert": true, "match": {"range": {"start": 1, "end": 5}}}],
                          "queryParameters": [{"name": "q"}]},
                "action": {"weightedTargets": [{"virtualNode": "n", "weight": 2}, {"virtualNode": "o", "weight": 0}]},
                "retryPolicy": {"maxRetries": 1, "perRetryTimeout": {"value": 1, "unit": "s"}, "httpRetryEvents": ["server-error"]},
                "timeout": {"perRequest": {"value": 0, "unit": "ms"}}}}},
            {"virtualRouterName": "r", "routeName": "y", "spec": {"httpRoute": {
                "match": {"path": {"regex": "/b.*"}}, "action": {"weightedTargets": [{"virtualNode": "o", "weight": 1}]}}}}],
        "virtualNodes": [
            {"virtualNodeName": "n", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"},
                "healthCheck": {"protocol": "http", "path": "/", "healthyThreshold": 2, "unhealthyThreshold": 2, "timeoutMillis": 2000, "intervalMillis": 5000}}],
                "serviceDiscovery": {"dns": {"hostname": "n.local"}},
                "backends": [{"virtualService": {"virtualServiceName": "a.local"}}, {"virtualService": {"virtualServiceName": "b.local"}}]}},
            {"virtualNodeName": "o", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                "serviceDiscovery": {"awsCloudMap": {"namespaceName": "ns", "serviceName": "o"}}}}]})
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u32..70000).prop_map(Value::from),
        "[a-zA-Z/:.*()\\[\\]\\-]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "http", "tcp", "grpc", "http2", "/", "n", "o", "r", "a.local", "ms", "s", "DROP_ALL"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the `n`-th node (pre-order) of `v` with `with`.
fn splice(v: &mut Value, n: &mut usize, with: &Value) -> bool {
    if *n == 0 {
        *v = with.clone();
        return true;
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| splice(x, n, with)),
        Value::Object(o) => o.values_mut().any(|x| splice(x, n, with)),
        _ => false,
    }
}

fn exercise(doc: &MeshDocument) {
    for node in doc.virtual_nodes() {
        let node_ref = NodeRef {
            mesh: doc.mesh_name().to_owned(),
            node: node.virtual_node_name.clone(),
        };
        let Ok(table) = RouteTable::compile(doc, &node_ref) else {
            continue;
        };
        let headers = http::HeaderMap::new();
        for authority in ["a.local", "B.LOCAL:80", "x"] {
            for path in ["/a?q", "/b/c", "", "*"] {
                let req = HttpRequestView {
                    authority,
                    dest_port: Some(80),
                    method: &http::Method::GET,
                    scheme: "http",
                    path_and_query: path,
                    headers: &headers,
                };
                if let taskmesh_mesh::HttpRouting::Matched(m) = table.route_http(&req) {
                    for r in [0, u32::MAX, 7] {
                        let t = m.pick(r);
                        assert!(t.node < table.targets().len());
                        assert!(t.weight > 0);
                    }
                }
            }
        }
        let _ = table.route_tcp(80);
    }
    let again = MeshDocument::from_value(doc.to_json_value()).expect("canonical output re-parses");
    assert_eq!(&again, doc);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = MeshDocument::from_slice(&bytes);
    }

    #[test]
    fn arbitrary_values_spliced_into_a_valid_document(at in 0usize..200, with in json_value()) {
        let mut v = seed();
        let mut n = at;
        splice(&mut v, &mut n, &with);
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(doc) = MeshDocument::from_slice(&bytes) {
            exercise(&doc);
        }
    }
}

#[test]
fn seed_is_valid() {
    let doc = MeshDocument::from_value(seed()).unwrap_or_else(|e| panic!("{e}"));
    exercise(&doc);
}
