//! Route checks: the router exists, exactly one route kind, priority, the route kind against
//! the router listener it lands on, weighted targets (≤ 10, weight 0–100, existing node and
//! port), match constraints (prefix/path, header / query / metadata counts and values, regexes)
//! and retry-policy event names.

use std::collections::HashMap;

use super::{Validator, check_name, check_port};
use crate::document::join;
use crate::model::{
    GrpcRouteMetadata, HeaderMatchMethod, HttpRouteHeader, HttpRouteMatch, PortProtocol,
    RouteAction, RouteData,
};
use crate::table::matcher;

const HTTP_RETRY_EVENTS: [&str; 4] = [
    "server-error",
    "gateway-error",
    "client-error",
    "stream-error",
];
const GRPC_RETRY_EVENTS: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(super) fn check(v: &mut Validator<'_>) {
    let doc = v.doc;
    let origins = &doc.origins().routes;
    let mut seen: HashMap<(&str, &str), &str> = HashMap::new();
    for (r, o) in doc.routes().iter().zip(origins) {
        check_name(v, join(o, "routeName"), &r.route_name, "name");
        if let Some(first) = seen.insert((&r.virtual_router_name, &r.route_name), o) {
            v.push(
                join(o, "routeName"),
                format!(
                    "duplicate route \"{}\" of virtual router \"{}\" (first at {first})",
                    r.route_name, r.virtual_router_name
                ),
            );
        }
        route(v, r, o);
    }
}

fn route(v: &mut Validator<'_>, r: &RouteData, o: &str) {
    let spec = &r.spec;
    let kinds: Vec<&str> = [
        spec.http_route.as_ref().map(|_| "httpRoute"),
        spec.http2_route.as_ref().map(|_| "http2Route"),
        spec.grpc_route.as_ref().map(|_| "grpcRoute"),
        spec.tcp_route.as_ref().map(|_| "tcpRoute"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if kinds.len() != 1 {
        v.push(
            join(o, "spec"),
            format!(
                "a route needs exactly one of httpRoute, http2Route, grpcRoute, tcpRoute; found {}",
                if kinds.is_empty() {
                    "none".to_owned()
                } else {
                    kinds.join(", ")
                }
            ),
        );
    }
    if let Some(p) = spec.priority
        && p > 1000
    {
        v.push(
            join(o, "spec.priority"),
            format!("priority must be 0–1000, found {p}"),
        );
    }
    let (kind_path, protocol, port, action) = if let Some(h) = &spec.http_route {
        http_match(v, &h.route_match, &join(o, "spec.httpRoute.match"));
        retry_events(
            v,
            o,
            "spec.httpRoute",
            h.retry_policy
                .as_ref()
                .map(|p| (&p.http_retry_events, &p.tcp_retry_events, None)),
        );
        (
            "spec.httpRoute",
            PortProtocol::Http,
            h.route_match.port,
            &h.action,
        )
    } else if let Some(h) = &spec.http2_route {
        http_match(v, &h.route_match, &join(o, "spec.http2Route.match"));
        retry_events(
            v,
            o,
            "spec.http2Route",
            h.retry_policy
                .as_ref()
                .map(|p| (&p.http_retry_events, &p.tcp_retry_events, None)),
        );
        (
            "spec.http2Route",
            PortProtocol::Http2,
            h.route_match.port,
            &h.action,
        )
    } else if let Some(g) = &spec.grpc_route {
        let m = &g.route_match;
        let mp = join(o, "spec.grpcRoute.match");
        if m.method_name.is_some() && m.service_name.is_none() {
            v.push(join(&mp, "methodName"), "methodName needs serviceName");
        }
        if let Some(n) = &m.method_name {
            length(v, join(&mp, "methodName"), n, 50);
        }
        if let Some(n) = &m.service_name
            && n.is_empty()
        {
            v.push(join(&mp, "serviceName"), "must not be empty");
        }
        if let Some(port) = m.port {
            check_port(v, join(&mp, "port"), port);
        }
        metadata(v, &m.metadata, &mp);
        retry_events(
            v,
            o,
            "spec.grpcRoute",
            g.retry_policy.as_ref().map(|p| {
                (
                    &p.http_retry_events,
                    &p.tcp_retry_events,
                    Some(&p.grpc_retry_events),
                )
            }),
        );
        ("spec.grpcRoute", PortProtocol::Grpc, m.port, &g.action)
    } else if let Some(t) = &spec.tcp_route {
        let port = t.route_match.and_then(|m| m.port);
        if let Some(port) = port {
            check_port(v, join(o, "spec.tcpRoute.match.port"), port);
        }
        ("spec.tcpRoute", PortProtocol::Tcp, port, &t.action)
    } else {
        return;
    };
    listener(v, r, o, kind_path, protocol, port);
    targets(
        v,
        action,
        &join(o, &format!("{kind_path}.action.weightedTargets")),
    );
}

/// The route must land on a router listener of its own protocol.
fn listener(
    v: &mut Validator<'_>,
    r: &RouteData,
    o: &str,
    kind_path: &str,
    protocol: PortProtocol,
    port: Option<u32>,
) {
    let Some(router) = v.doc.virtual_router(&r.virtual_router_name) else {
        let msg = v.no_such("virtual router", &r.virtual_router_name);
        v.push(join(o, "virtualRouterName"), msg);
        return;
    };
    let listeners = &router.spec.listeners;
    let port_path = join(o, &format!("{kind_path}.match.port"));
    let found = match port {
        Some(p) => match listeners.iter().find(|l| l.port_mapping.port == p) {
            Some(l) => l,
            None => {
                v.push(
                    port_path,
                    format!(
                        "virtual router \"{}\" has no listener on port {p}",
                        r.virtual_router_name
                    ),
                );
                return;
            }
        },
        None if listeners.len() > 1 => {
            v.push(
                port_path,
                format!(
                    "required: virtual router \"{}\" has {} listeners",
                    r.virtual_router_name,
                    listeners.len()
                ),
            );
            return;
        }
        None => match listeners.first() {
            Some(l) => l,
            None => return,
        },
    };
    if found.port_mapping.protocol != protocol {
        v.push(
            join(o, kind_path),
            format!(
                "a {} route needs a {} listener, but virtual router \"{}\" listens on port {} with protocol {}",
                protocol.as_str(),
                protocol.as_str(),
                r.virtual_router_name,
                found.port_mapping.port,
                found.port_mapping.protocol.as_str()
            ),
        );
    }
}

fn targets(v: &mut Validator<'_>, action: &RouteAction, path: &str) {
    let t = &action.weighted_targets;
    if t.is_empty() || t.len() > 10 {
        v.push(
            path.to_owned(),
            format!("a route needs 1–10 weighted targets, found {}", t.len()),
        );
    }
    let mut total: u64 = 0;
    for (i, w) in t.iter().enumerate() {
        let p = join(path, &format!("[{i}]"));
        total += u64::from(w.weight);
        if w.weight > 100 {
            v.push(
                join(&p, "weight"),
                format!("weight must be 0–100, found {}", w.weight),
            );
        }
        let Some(node) = v.doc.virtual_node(&w.virtual_node) else {
            let msg = v.no_such("virtual node", &w.virtual_node);
            v.push(join(&p, "virtualNode"), msg);
            continue;
        };
        let listeners = &node.spec.listeners;
        match w.port {
            Some(port) => {
                check_port(v, join(&p, "port"), port);
                if !listeners.iter().any(|l| l.port_mapping.port == port) {
                    v.push(
                        join(&p, "port"),
                        format!(
                            "virtual node \"{}\" has no listener on port {port}",
                            w.virtual_node
                        ),
                    );
                }
            }
            None if listeners.len() > 1 => v.push(
                join(&p, "port"),
                format!(
                    "required: virtual node \"{}\" has {} listeners",
                    w.virtual_node,
                    listeners.len()
                ),
            ),
            None if listeners.is_empty() => v.push(
                join(&p, "virtualNode"),
                format!(
                    "virtual node \"{}\" has no listener to send traffic to",
                    w.virtual_node
                ),
            ),
            None => {}
        }
    }
    if !t.is_empty() && total == 0 {
        v.push(
            path.to_owned(),
            "at least one weighted target needs a weight above 0",
        );
    } else if total > 100 {
        v.push(
            path.to_owned(),
            format!("the weights add up to {total}; App Mesh allows at most 100"),
        );
    }
}

fn http_match(v: &mut Validator<'_>, m: &HttpRouteMatch, mp: &str) {
    if m.prefix.is_some() && m.path.is_some() {
        v.push(mp.to_owned(), "set either prefix or path, not both");
    }
    if let Some(prefix) = &m.prefix {
        if !prefix.starts_with('/') {
            v.push(
                join(mp, "prefix"),
                format!("a prefix must start with \"/\", found \"{prefix}\""),
            );
        }
        length(v, join(mp, "prefix"), prefix, 255);
    }
    if let Some(path) = &m.path {
        match (&path.exact, &path.regex) {
            (Some(e), None) => length(v, join(mp, "path.exact"), e, 255),
            (None, Some(re)) => {
                length(v, join(mp, "path.regex"), re, 255);
                if let Err(e) = matcher::compile_regex(re) {
                    v.push(join(mp, "path.regex"), e);
                }
            }
            _ => v.push(join(mp, "path"), "set exactly one of exact or regex"),
        }
    }
    if let Some(port) = m.port {
        check_port(v, join(mp, "port"), port);
    }
    if m.headers.len() > 10 {
        v.push(
            join(mp, "headers"),
            format!("at most 10 header matches, found {}", m.headers.len()),
        );
    }
    for (i, h) in m.headers.iter().enumerate() {
        header(v, h, &join(mp, &format!("headers[{i}]")));
    }
    if m.query_parameters.len() > 10 {
        v.push(
            join(mp, "queryParameters"),
            format!(
                "at most 10 query parameter matches, found {}",
                m.query_parameters.len()
            ),
        );
    }
    for (i, q) in m.query_parameters.iter().enumerate() {
        if q.name.is_empty() {
            v.push(
                join(mp, &format!("queryParameters[{i}].name")),
                "must not be empty",
            );
        }
    }
}

fn header(v: &mut Validator<'_>, h: &HttpRouteHeader, p: &str) {
    header_like(v, &h.name, h.header_match.as_ref(), p);
}

fn metadata(v: &mut Validator<'_>, m: &[GrpcRouteMetadata], mp: &str) {
    if m.len() > 10 {
        v.push(
            join(mp, "metadata"),
            format!("at most 10 metadata matches, found {}", m.len()),
        );
    }
    for (i, md) in m.iter().enumerate() {
        header_like(
            v,
            &md.name,
            md.metadata_match.as_ref(),
            &join(mp, &format!("metadata[{i}]")),
        );
    }
}

fn header_like(v: &mut Validator<'_>, name: &str, m: Option<&HeaderMatchMethod>, p: &str) {
    if name.is_empty() || name.len() > 50 {
        v.push(
            join(p, "name"),
            format!("a header name is 1–50 characters, found {}", name.len()),
        );
    } else if let Err(e) = matcher::header_key(name) {
        v.push(join(p, "name"), e);
    }
    match m {
        Some(HeaderMatchMethod::Exact(s)) => length(v, join(p, "match.exact"), s, 255),
        Some(HeaderMatchMethod::Prefix(s)) => length(v, join(p, "match.prefix"), s, 255),
        Some(HeaderMatchMethod::Suffix(s)) => length(v, join(p, "match.suffix"), s, 255),
        Some(HeaderMatchMethod::Regex(s)) => {
            length(v, join(p, "match.regex"), s, 255);
            if let Err(e) = matcher::compile_bytes_regex(s) {
                v.push(join(p, "match.regex"), e);
            }
        }
        Some(HeaderMatchMethod::Range(r)) if r.start >= r.end => {
            v.push(
                join(p, "match.range"),
                format!(
                    "start ({}) must be below end ({}): end is exclusive",
                    r.start, r.end
                ),
            );
        }
        _ => {}
    }
}

fn length(v: &mut Validator<'_>, path: String, s: &str, max: usize) {
    let n = s.chars().count();
    if n == 0 || n > max {
        v.push(path, format!("must be 1–{max} characters, found {n}"));
    }
}

type RetryEvents<'a> = (&'a Vec<String>, &'a Vec<String>, Option<&'a Vec<String>>);

fn retry_events(v: &mut Validator<'_>, o: &str, kind_path: &str, events: Option<RetryEvents<'_>>) {
    let Some((http, tcp, grpc)) = events else {
        return;
    };
    let rp = join(o, &format!("{kind_path}.retryPolicy"));
    if http.len() > 25 {
        v.push(
            join(&rp, "httpRetryEvents"),
            format!("at most 25 events, found {}", http.len()),
        );
    }
    for (i, e) in http.iter().enumerate() {
        if !HTTP_RETRY_EVENTS.contains(&e.as_str()) {
            v.push(
                join(&rp, &format!("httpRetryEvents[{i}]")),
                format!(
                    "unknown event \"{e}\" (expected one of {})",
                    HTTP_RETRY_EVENTS.join(", ")
                ),
            );
        }
    }
    if tcp.len() > 1 {
        v.push(
            join(&rp, "tcpRetryEvents"),
            format!("at most 1 event, found {}", tcp.len()),
        );
    }
    for (i, e) in tcp.iter().enumerate() {
        if e != "connection-error" {
            v.push(
                join(&rp, &format!("tcpRetryEvents[{i}]")),
                format!("unknown event \"{e}\" (expected connection-error)"),
            );
        }
    }
    if let Some(grpc) = grpc {
        if grpc.len() > 5 {
            v.push(
                join(&rp, "grpcRetryEvents"),
                format!("at most 5 events, found {}", grpc.len()),
            );
        }
        for (i, e) in grpc.iter().enumerate() {
            if !GRPC_RETRY_EVENTS.contains(&e.as_str()) {
                v.push(
                    join(&rp, &format!("grpcRetryEvents[{i}]")),
                    format!(
                        "unknown event \"{e}\" (expected one of {})",
                        GRPC_RETRY_EVENTS.join(", ")
                    ),
                );
            }
        }
    }
}
