//! Virtual node checks: names, listener ports (1–65535, unique), per-protocol unions matching
//! the listener protocol (timeout, connection pool), health check and outlier detection ranges,
//! service discovery present when there are listeners, backends that exist.

use std::collections::HashMap;

use super::{Validator, check_name, check_port};
use crate::document::join;
use crate::model::{
    ConnectionPoolSpec, ListenerSpec, ListenerTimeoutSpec, PortProtocol, ServiceDiscovery,
};

pub(super) fn check(v: &mut Validator<'_>) {
    let doc = v.doc;
    let origins = &doc.origins().virtual_nodes;
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (n, o) in doc.virtual_nodes().iter().zip(origins) {
        check_name(v, join(o, "virtualNodeName"), &n.virtual_node_name, "name");
        if let Some(first) = seen.insert(&n.virtual_node_name, o) {
            v.push(
                join(o, "virtualNodeName"),
                format!(
                    "duplicate virtual node \"{}\" (first at {first})",
                    n.virtual_node_name
                ),
            );
        }
        let mut ports: HashMap<u32, usize> = HashMap::new();
        for (i, l) in n.spec.listeners.iter().enumerate() {
            let lp = join(o, &format!("spec.listeners[{i}]"));
            if let Some(first) = ports.insert(l.port_mapping.port, i) {
                v.push(
                    join(&lp, "portMapping.port"),
                    format!(
                        "port {} already used by listeners[{first}]",
                        l.port_mapping.port
                    ),
                );
            }
            listener(v, l, &lp);
        }
        match &n.spec.service_discovery {
            None if !n.spec.listeners.is_empty() => v.push(
                join(o, "spec.serviceDiscovery"),
                "required when the virtual node has listeners",
            ),
            Some(ServiceDiscovery::Dns(d)) if d.hostname.is_empty() => v.push(
                join(o, "spec.serviceDiscovery.dns.hostname"),
                "must not be empty",
            ),
            Some(ServiceDiscovery::AwsCloudMap(c)) => {
                if c.namespace_name.is_empty() {
                    v.push(
                        join(o, "spec.serviceDiscovery.awsCloudMap.namespaceName"),
                        "must not be empty",
                    );
                }
                if c.service_name.is_empty() {
                    v.push(
                        join(o, "spec.serviceDiscovery.awsCloudMap.serviceName"),
                        "must not be empty",
                    );
                }
            }
            _ => {}
        }
        for (i, b) in n.spec.backends.iter().enumerate() {
            let name = b.virtual_service_name();
            if doc.virtual_service(name).is_none() {
                let msg = v.no_such("virtual service", name);
                v.push(
                    join(
                        o,
                        &format!("spec.backends[{i}].virtualService.virtualServiceName"),
                    ),
                    msg,
                );
            }
        }
    }
}

fn listener(v: &mut Validator<'_>, l: &ListenerSpec, lp: &str) {
    let port = l.port_mapping.port;
    let protocol = l.port_mapping.protocol;
    check_port(v, join(lp, "portMapping.port"), port);
    if let Some(t) = &l.timeout {
        let (kind, p) = match t {
            ListenerTimeoutSpec::Http(_) => ("http", PortProtocol::Http),
            ListenerTimeoutSpec::Http2(_) => ("http2", PortProtocol::Http2),
            ListenerTimeoutSpec::Grpc(_) => ("grpc", PortProtocol::Grpc),
            ListenerTimeoutSpec::Tcp(_) => ("tcp", PortProtocol::Tcp),
        };
        if p != protocol {
            v.push(
                join(lp, &format!("timeout.{kind}")),
                format!("a {kind} timeout on a {} listener", protocol.as_str()),
            );
        }
    }
    if let Some(cp) = &l.connection_pool {
        let (kind, p, values): (&str, PortProtocol, Vec<(&str, u32)>) = match *cp {
            ConnectionPoolSpec::Tcp { max_connections } => (
                "tcp",
                PortProtocol::Tcp,
                vec![("maxConnections", max_connections)],
            ),
            ConnectionPoolSpec::Http {
                max_connections,
                max_pending_requests,
            } => (
                "http",
                PortProtocol::Http,
                vec![
                    ("maxConnections", max_connections),
                    ("maxPendingRequests", max_pending_requests.unwrap_or(1)),
                ],
            ),
            ConnectionPoolSpec::Http2 { max_requests } => (
                "http2",
                PortProtocol::Http2,
                vec![("maxRequests", max_requests)],
            ),
            ConnectionPoolSpec::Grpc { max_requests } => (
                "grpc",
                PortProtocol::Grpc,
                vec![("maxRequests", max_requests)],
            ),
        };
        let cpp = join(lp, &format!("connectionPool.{kind}"));
        if p != protocol {
            v.push(
                cpp.clone(),
                format!(
                    "a {kind} connection pool on a {} listener",
                    protocol.as_str()
                ),
            );
        }
        for (name, value) in values {
            if value < 1 {
                v.push(join(&cpp, name), "must be at least 1");
            }
        }
    }
    if let Some(o) = &l.outlier_detection {
        let op = join(lp, "outlierDetection");
        if o.max_server_errors < 1 {
            v.push(join(&op, "maxServerErrors"), "must be at least 1");
        }
        if o.max_ejection_percent > 100 {
            v.push(
                join(&op, "maxEjectionPercent"),
                format!("must be 0–100, found {}", o.max_ejection_percent),
            );
        }
    }
    if let Some(h) = &l.health_check {
        let hp = join(lp, "healthCheck");
        let ranges = [
            ("healthyThreshold", u64::from(h.healthy_threshold), 2, 10),
            (
                "unhealthyThreshold",
                u64::from(h.unhealthy_threshold),
                2,
                10,
            ),
            ("intervalMillis", h.interval_millis, 5000, 300_000),
            ("timeoutMillis", h.timeout_millis, 2000, 60_000),
        ];
        for (name, value, lo, hi) in ranges {
            if value < lo || value > hi {
                v.push(join(&hp, name), format!("must be {lo}–{hi}, found {value}"));
            }
        }
        if let Some(p) = h.port
            && p != port
        {
            v.push(
                join(&hp, "port"),
                format!("must equal the listener port {port}, found {p}"),
            );
        }
        if matches!(h.protocol, PortProtocol::Http | PortProtocol::Http2)
            && h.path.as_deref().is_none_or(str::is_empty)
        {
            v.push(
                join(&hp, "path"),
                "required for an http or http2 health check",
            );
        }
    }
}
