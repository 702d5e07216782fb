//! Weighted target choice: picks follow the weights (proportions over a uniform sweep and a
//! random sample), and a weight-0 target is never picked.

use proptest::prelude::*;
use serde_json::{Value, json};
use taskmesh_mesh::{HttpRequestView, HttpRouting, MeshDocument, NodeRef, RouteTable};

fn table(weights: &[u32]) -> RouteTable {
    let nodes: Vec<Value> = (0..weights.len())
        .map(|i| {
            json!({"virtualNodeName": format!("t{i}"), "spec": {
                "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": format!("t{i}.local")}}}})
        })
        .chain([json!({"virtualNodeName": "c", "spec": {"backends": [{"virtualService": {"virtualServiceName": "s"}}]}})])
        .collect();
    let targets: Vec<Value> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"virtualNode": format!("t{i}"), "weight": w}))
        .collect();
    let doc = json!({"meshName": "m",
        "virtualServices": [{"virtualServiceName": "s", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}}],
        "virtualRouters": [{"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}}],
        "routes": [{"virtualRouterName": "r", "routeName": "w", "spec": {"httpRoute": {"match": {"prefix": "/"},
            "action": {"weightedTargets": targets}}}}],
        "virtualNodes": nodes});
    let doc = MeshDocument::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
    RouteTable::compile(&doc, &NodeRef::parse("mesh/m/virtualNode/c").unwrap()).unwrap()
}

/// Counts picks per target name index for every `r` in `rs`.
fn counts(t: &RouteTable, weights: &[u32], rs: impl Iterator<Item = u32>) -> Vec<u64> {
    let headers = http::HeaderMap::new();
    let req = HttpRequestView {
        authority: "s",
        dest_port: None,
        method: &http::Method::GET,
        scheme: "http",
        path_and_query: "/",
        headers: &headers,
    };
    let HttpRouting::Matched(m) = t.route_http(&req) else {
        panic!("route must match")
    };
    let mut c = vec![0u64; weights.len()];
    for r in rs {
        let target = m.pick(r);
        let name = &t.targets()[target.node].name;
        let i: usize = name[1..].parse().unwrap();
        assert_eq!(target.weight, weights[i]);
        c[i] += 1;
    }
    c
}

fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..=10, 1..=10)
        .prop_filter("total weight > 0", |w| w.iter().sum::<u32>() > 0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A uniform sweep of the u32 space gives each target its share within one step.
    #[test]
    fn proportions_follow_weights(w in weights()) {
        let t = table(&w);
        let total: u64 = w.iter().map(|&x| u64::from(x)).sum();
        let n: u64 = 100_000;
        let c = counts(&t, &w, (0..n).map(|i| ((u128::from(i) << 32) / u128::from(n)) as u32));
        for (i, &wi) in w.iter().enumerate() {
            let expected = n as f64 * wi as f64 / total as f64;
            prop_assert!((c[i] as f64 - expected).abs() <= 1.5, "target {i}: {} picks, expected {expected:.1} ({w:?})", c[i]);
        }
    }

    /// Weight-0 targets are never picked, whatever the random number.
    #[test]
    fn weight_zero_never_picked(w in weights(), rs in prop::collection::vec(any::<u32>(), 1..2000)) {
        let t = table(&w);
        let extremes = [0u32, 1, u32::MAX, u32::MAX - 1, 1 << 31];
        let c = counts(&t, &w, rs.into_iter().chain(extremes));
        for (i, &wi) in w.iter().enumerate() {
            if wi == 0 {
                prop_assert_eq!(c[i], 0, "weight-0 target {} picked ({:?})", i, w);
            }
        }
    }
}

#[test]
fn random_sample_within_two_percent() {
    // 90/10 canary over 20 000 pseudo-random picks (xorshift), ±2 % of the total.
    let w = [90, 10];
    let t = table(&w);
    let mut x: u32 = 0x1234_5678;
    let rs = std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    })
    .take(20_000);
    let c = counts(&t, &w, rs);
    let share = c[0] as f64 / 20_000.0;
    assert!((share - 0.9).abs() < 0.02, "share {share}");
}
