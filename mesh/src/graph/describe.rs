//! Plain-text descriptions of resources for the picture: listeners, service discovery, a
//! route's match, retry policy and timeout, priorities and weights. Unescaped: the renderers
//! escape for their language.

use crate::model::{
    Duration, DurationUnit, GrpcRouteMetadata, HeaderMatchMethod, HttpRetryPolicy, HttpRoute,
    HttpRouteHeader, HttpTimeout, ListenerTimeoutSpec, PortMapping, RouteSpec, RouterListener,
    ServiceDiscovery, VirtualNodeSpec, WeightedTargetSpec,
};

fn port(p: &PortMapping) -> String {
    format!("{}:{}", p.protocol.as_str(), p.port)
}

fn duration(d: Duration) -> String {
    match d.unit {
        DurationUnit::Milliseconds => format!("{}ms", d.value),
        DurationUnit::Seconds => format!("{}s", d.value),
    }
}

/// `listeners http:9080, tcp:5432`.
pub(super) fn router_listeners(listeners: &[RouterListener]) -> String {
    if listeners.is_empty() {
        return "no listeners".to_string();
    }
    let ports: Vec<String> = listeners.iter().map(|l| port(&l.port_mapping)).collect();
    format!("listeners {}", ports.join(", "))
}

/// A virtual node's listeners (with health check, outlier detection, TLS) and discovery.
pub(super) fn node_details(spec: &VirtualNodeSpec) -> Vec<String> {
    let mut out = Vec::new();
    for l in &spec.listeners {
        let mut line = format!("listener {}", port(&l.port_mapping));
        let mut extras = Vec::new();
        if l.health_check.is_some() {
            extras.push("health check".to_string());
        }
        if l.outlier_detection.is_some() {
            extras.push("outlier detection".to_string());
        }
        if let Some(tls) = &l.tls {
            extras.push(format!("TLS {:?}", tls.mode).to_uppercase());
        }
        if let Some(t) = &l.timeout {
            let per_request = match t {
                ListenerTimeoutSpec::Http(t)
                | ListenerTimeoutSpec::Http2(t)
                | ListenerTimeoutSpec::Grpc(t) => t.per_request,
                ListenerTimeoutSpec::Tcp(_) => None,
            };
            if let Some(d) = per_request {
                extras.push(format!("timeout {}", duration(d)));
            }
        }
        if !extras.is_empty() {
            line.push_str(&format!(" ({})", extras.join(", ")));
        }
        out.push(line);
    }
    match &spec.service_discovery {
        Some(ServiceDiscovery::Dns(d)) => out.push(format!("dns {}", d.hostname)),
        Some(ServiceDiscovery::AwsCloudMap(c)) => {
            let mut line = format!("cloud map {}.{}", c.service_name, c.namespace_name);
            for a in &c.attributes {
                line.push_str(&format!(" {}={}", a.key, a.value));
            }
            out.push(line);
        }
        None => {}
    }
    if spec.listeners.is_empty() && spec.service_discovery.is_none() {
        out.push("client only".to_string());
    }
    out
}

/// `priority 10` / `no priority`.
pub(super) fn priority(spec: &RouteSpec) -> String {
    match spec.priority {
        Some(p) => format!("priority {p}"),
        None => "no priority".to_string(),
    }
}

/// `weight 8 (80%)`.
pub(super) fn weight(weight: u32, total: u64) -> String {
    if total == 0 {
        return format!("weight {weight} (0%)");
    }
    let share = f64::from(weight) * 100.0 / total as f64;
    if (share - share.round()).abs() < 0.05 {
        format!("weight {weight} ({share:.0}%)")
    } else {
        format!("weight {weight} ({share:.1}%)")
    }
}

fn header_match(m: &Option<HeaderMatchMethod>, invert: bool) -> String {
    let (eq, ne) = if invert { ("!", "not ") } else { ("", "") };
    match m {
        None => format!("{ne}present"),
        Some(HeaderMatchMethod::Exact(v)) => format!("{eq}= {v}"),
        Some(HeaderMatchMethod::Prefix(v)) => format!("{ne}prefix {v}"),
        Some(HeaderMatchMethod::Suffix(v)) => format!("{ne}suffix {v}"),
        Some(HeaderMatchMethod::Regex(v)) => format!("{eq}~ {v}"),
        Some(HeaderMatchMethod::Range(r)) => format!("{ne}in [{}, {})", r.start, r.end),
    }
}

fn headers(hs: &[HttpRouteHeader], out: &mut Vec<String>) {
    for h in hs {
        out.push(format!(
            "header {} {}",
            h.name,
            header_match(&h.header_match, h.invert)
        ));
    }
}

fn metadata(ms: &[GrpcRouteMetadata], out: &mut Vec<String>) {
    for m in ms {
        out.push(format!(
            "metadata {} {}",
            m.name,
            header_match(&m.metadata_match, m.invert)
        ));
    }
}

fn retries(r: &HttpRetryPolicy) -> String {
    let events: Vec<&str> = r
        .http_retry_events
        .iter()
        .chain(&r.tcp_retry_events)
        .map(String::as_str)
        .collect();
    format!(
        "retries {} x {} on {}",
        r.max_retries,
        duration(r.per_retry_timeout),
        events.join(", ")
    )
}

fn timeout(t: &Option<HttpTimeout>, out: &mut Vec<String>) {
    if let Some(t) = t {
        if let Some(d) = t.per_request {
            out.push(format!("timeout {}", duration(d)));
        }
        if let Some(d) = t.idle {
            out.push(format!("idle {}", duration(d)));
        }
    }
}

fn http(r: &HttpRoute) -> Vec<String> {
    let m = &r.route_match;
    let mut out = Vec::new();
    if let Some(p) = &m.prefix {
        out.push(format!("prefix {p}"));
    }
    if let Some(p) = &m.path {
        if let Some(e) = &p.exact {
            out.push(format!("path = {e}"));
        }
        if let Some(re) = &p.regex {
            out.push(format!("path ~ {re}"));
        }
    }
    if let Some(method) = m.method {
        out.push(format!("method {}", method.to_http()));
    }
    if let Some(s) = m.scheme {
        out.push(format!("scheme {s:?}").to_lowercase());
    }
    if let Some(p) = m.port {
        out.push(format!("port {p}"));
    }
    headers(&m.headers, &mut out);
    for q in &m.query_parameters {
        match &q.parameter_match {
            Some(e) => out.push(format!("query {} = {}", q.name, e.exact)),
            None => out.push(format!("query {} present", q.name)),
        }
    }
    if let Some(r) = &r.retry_policy {
        out.push(retries(r));
    }
    timeout(&r.timeout, &mut out);
    out
}

/// A route's kind, its detail lines (match, retries, timeout) and its weighted targets.
pub(super) fn route(spec: &RouteSpec) -> (&'static str, Vec<String>, &[WeightedTargetSpec]) {
    let kind = super::route_kind(spec);
    if let Some(r) = spec.http_route.as_ref().or(spec.http2_route.as_ref()) {
        return (kind, http(r), &r.action.weighted_targets);
    }
    if let Some(r) = &spec.grpc_route {
        let m = &r.route_match;
        let mut out = vec![match (&m.service_name, &m.method_name) {
            (Some(s), Some(meth)) => format!("service {s} method {meth}"),
            (Some(s), None) => format!("service {s}"),
            (None, _) => "any service".to_string(),
        }];
        metadata(&m.metadata, &mut out);
        if let Some(p) = m.port {
            out.push(format!("port {p}"));
        }
        if let Some(rp) = &r.retry_policy {
            let events: Vec<&str> = rp
                .grpc_retry_events
                .iter()
                .chain(&rp.http_retry_events)
                .chain(&rp.tcp_retry_events)
                .map(String::as_str)
                .collect();
            out.push(format!(
                "retries {} x {} on {}",
                rp.max_retries,
                duration(rp.per_retry_timeout),
                events.join(", ")
            ));
        }
        timeout(&r.timeout, &mut out);
        return (kind, out, &r.action.weighted_targets);
    }
    if let Some(r) = &spec.tcp_route {
        let mut out = vec![match r.route_match.and_then(|m| m.port) {
            Some(p) => format!("port {p}"),
            None => "any connection".to_string(),
        }];
        if let Some(d) = r.timeout.and_then(|t| t.idle) {
            out.push(format!("idle {}", duration(d)));
        }
        return (kind, out, &r.action.weighted_targets);
    }
    (kind, Vec::new(), &[])
}
