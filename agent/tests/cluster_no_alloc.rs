//! The endpoint-set path of a routed request allocates nothing once warm: refreshing the set
//! from discovery (DNS `ENDPOINTS` through a hosts file, and an IP literal), picking an endpoint
//! by power of two choices, and reporting the outcome to outlier detection and to the
//! connect-failure cool-down (a failure starting one, a success ending it) — counted by a global
//! allocator wrapper on the test's thread.

mod support;

use std::sync::atomic::Ordering;

use serde_json::json;
use support::alloc::{Counting, count};
use taskmesh_agent::cluster::Clusters;
use taskmesh_agent::cluster::outlier::Outcome;
use taskmesh_agent::discovery::Resolver;
use taskmesh_mesh::{MeshDocument, NodeRef, RouteTable};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn routing_to_an_endpoint_set_does_not_allocate() {
    let node = |name: &str, host: &str| {
        json!({"virtualNodeName": name, "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"},
                "outlierDetection": {"maxServerErrors": 5, "interval": {"value": 10, "unit": "s"},
                    "baseEjectionDuration": {"value": 30, "unit": "s"}, "maxEjectionPercent": 50}}],
            "serviceDiscovery": {"dns": {"hostname": host, "responseType": "ENDPOINTS"}}}})
    };
    let doc = json!({"meshName": "m",
        "virtualServices": [
            {"virtualServiceName": "api.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "api"}}}},
            {"virtualServiceName": "lit.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "lit"}}}}],
        "virtualNodes": [
            {"virtualNodeName": "front", "spec": {"backends": [
                {"virtualService": {"virtualServiceName": "api.local"}},
                {"virtualService": {"virtualServiceName": "lit.local"}}]}},
            node("api", "api.test"),
            node("lit", "127.0.0.1")]});
    let doc = MeshDocument::from_slice(doc.to_string().as_bytes()).unwrap();
    let table =
        RouteTable::compile(&doc, &NodeRef::parse("mesh/m/virtualNode/front").unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "10.0.0.1 api.test\n10.0.0.2 api.test\n10.0.0.3 api.test\n",
    )
    .unwrap();
    let resolver = Resolver::with_name_servers(&["127.0.0.1:9".parse().unwrap()], Some(&hosts));
    let clusters = Clusters::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let targets = table.targets();
    assert_eq!(targets.len(), 2);
    rt.block_on(async {
        let one = |t: usize| {
            let (clusters, resolver, target) = (&clusters, &resolver, &targets[t]);
            async move {
                let routed = clusters.route(resolver, target, 8080).await.unwrap();
                let attempt = routed.take_first().unwrap();
                routed
                    .cluster
                    .report(&attempt, Outcome::Success, routed.outlier.as_ref());
                routed.first_addr
            }
        };
        // Warm: the sets, the DNS cache slots and the endpoint lists are made once (and the
        // counter sees them: it counts this thread's allocations).
        let cold = count();
        for t in 0..2 {
            one(t).await;
        }
        assert!(count() > cold, "the allocation counter saw nothing");
        let before = count();
        let mut picked = [0u32; 3];
        for _ in 0..300 {
            if let std::net::IpAddr::V4(ip) = one(0).await.ip() {
                picked[usize::from(ip.octets()[3] - 1)] += 1;
            }
            one(1).await;
        }
        let allocated = count() - before;
        assert_eq!(allocated, 0, "{allocated} allocations in 600 routed picks");
        assert_eq!(clusters.get("api", 8080).hosts().hosts().len(), 3);
        assert!(
            picked.iter().all(|n| *n > 50),
            "every endpoint is used: {picked:?}"
        );
        // Connect failures cool an endpoint down and a success ends it, without allocating.
        let api = clusters.get("api", 8080);
        let before = count();
        for _ in 0..100 {
            let routed = clusters.route(&resolver, &targets[0], 8080).await.unwrap();
            let attempt = routed.take_first().unwrap();
            routed
                .cluster
                .report(&attempt, Outcome::ConnectFailure, routed.outlier.as_ref());
            assert_eq!(api.cooling_now(), 1);
            let again = routed.cluster.pick(&routed.hosts, Default::default());
            assert_ne!(again.addr(), routed.first_addr, "cooling endpoint picked");
            routed.cluster.report(&attempt, Outcome::Success, None);
            assert_eq!(api.cooling_now(), 0);
        }
        let allocated = count() - before;
        assert_eq!(allocated, 0, "{allocated} allocations in 100 cool-downs");
        assert_eq!(api.stats().cooldowns_total.load(Ordering::Relaxed), 100);
    });
}
