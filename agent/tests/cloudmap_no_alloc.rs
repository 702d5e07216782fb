//! Routing to an `awsCloudMap` target node allocates nothing once its instance list is cached:
//! the Cloud Map cache is looked up with the borrowed namespace, service and attribute filter
//! (a real moto server holds the instances), and the endpoint set, the pick and the outcome
//! report follow as for DNS targets — counted by a global allocator wrapper on the test's thread.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_servicediscovery::Client;
use serde_json::json;
use support::alloc::{Counting, count};
use support::moto::{Moto, create_service, service_discovery};
use taskmesh_agent::cluster::Clusters;
use taskmesh_agent::cluster::outlier::Outcome;
use taskmesh_agent::discovery::Resolver;
use taskmesh_agent::discovery::cloudmap::CloudMapSettings;
use taskmesh_mesh::{MeshDocument, NodeRef, RouteTable};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Registers `ips` as instances of service `colors` in namespace `apps.local`, with
/// `version` attributes v1 (all but the last) and v2 (the last).
async fn register(sd: &Client, ips: &[&str]) {
    let service_id = create_service(sd, "apps.local", "colors").await;
    for (i, ip) in ips.iter().enumerate() {
        let version = if i + 1 == ips.len() { "v2" } else { "v1" };
        sd.register_instance()
            .service_id(&service_id)
            .instance_id(format!("i-{i}"))
            .attributes("AWS_INSTANCE_IPV4", *ip)
            .attributes("version", version)
            .send()
            .await
            .expect("RegisterInstance");
    }
}

#[test]
fn routing_to_a_cloud_map_target_does_not_allocate() {
    // SAFETY: set before any other thread of this test binary (one test) reads the environment;
    // the agent's Cloud Map client takes its credentials and region from it.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let moto = Moto::start();
    let doc = json!({"meshName": "m",
        "virtualServices": [{"virtualServiceName": "colors.apps.local",
            "spec": {"provider": {"virtualNode": {"virtualNodeName": "colors"}}}}],
        "virtualNodes": [
            {"virtualNodeName": "front", "spec": {"backends": [
                {"virtualService": {"virtualServiceName": "colors.apps.local"}}]}},
            {"virtualNodeName": "colors", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"awsCloudMap": {"namespaceName": "apps.local",
                    "serviceName": "colors",
                    "attributes": [{"key": "version", "value": "v1"}]}}}}]});
    let doc = MeshDocument::from_slice(doc.to_string().as_bytes()).unwrap();
    let table =
        RouteTable::compile(&doc, &NodeRef::parse("mesh/m/virtualNode/front").unwrap()).unwrap();
    let resolver = Resolver::with_name_servers(&["127.0.0.1:9".parse().unwrap()], None)
        .with_cloud_map(CloudMapSettings {
            endpoint: Some(moto.endpoint()),
            refresh: Some(Duration::from_secs(3600)),
        });
    let clusters = Clusters::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = &table.targets()[0];
    rt.block_on(async {
        let sd = service_discovery(&moto);
        register(&sd, &["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]).await;
        let one = || async {
            let routed = clusters.route(&resolver, target, 8080).await.unwrap();
            let attempt = routed.take_first().unwrap();
            routed
                .cluster
                .report(&attempt, Outcome::Success, routed.outlier.as_ref());
            routed.first_addr
        };
        // Warm: the first lookup asks moto and builds the cache entry and the endpoint set.
        let cold = count();
        one().await;
        one().await;
        assert!(count() > cold, "the allocation counter saw nothing");
        let before = count();
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            let addr = one().await;
            let std::net::IpAddr::V4(ip) = addr.ip() else {
                panic!("{addr}")
            };
            assert_eq!(addr.port(), 8080);
            let last = usize::from(ip.octets()[3]);
            assert!((1..=3).contains(&last), "v2 instance or unknown: {addr}");
            seen[last - 1] += 1;
        }
        let allocated = count() - before;
        assert_eq!(
            allocated, 0,
            "{allocated} allocations in 300 Cloud Map routes"
        );
        assert!(
            seen.iter().all(|n| *n > 30),
            "every instance is used: {seen:?}"
        );
        let listed: HashSet<_> = clusters
            .get("colors", 8080)
            .hosts()
            .hosts()
            .iter()
            .map(|h| h.addr())
            .collect();
        assert_eq!(listed.len(), 3, "{listed:?}");
    });
}
