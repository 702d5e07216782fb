//! The containers inject adds, in the document's casing: the proxy (the `taskmesh-agent`
//! sidecar, or the App Mesh Envoy shape) and, with `--redirect proxy-init`, the `proxy-init`
//! container; plus the redirect settings they share with `proxyConfiguration`.

use serde_json::{Map, Value};

use crate::options::{InjectOptions, ProxyKind};
use crate::taskdef::Casing;
use crate::taskdef::wiring::INJECTED_LABEL;

/// The crate version, written into [`INJECTED_LABEL`] and the default agent image tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Name of the injected agent container.
pub const AGENT_CONTAINER: &str = "taskmesh-agent";
/// Name of the injected Envoy container (`--proxy envoy`).
pub const ENVOY_CONTAINER: &str = "envoy";
/// Name of the injected proxy-init container (`--redirect proxy-init`).
pub const PROXY_INIT_CONTAINER: &str = "taskmesh-proxy-init";
/// The App Mesh Envoy image used by `--proxy envoy` (the last App Mesh controller default).
pub const DEFAULT_ENVOY_IMAGE: &str = "public.ecr.aws/appmesh/aws-appmesh-envoy:v1.34.13.3-prod";
/// CPU units given to the agent.
pub const AGENT_CPU: i64 = 128;
/// Memory reservation (MiB) given to the agent.
pub const AGENT_MEMORY_RESERVATION: i64 = 64;
/// CPU units given to Envoy.
pub const ENVOY_CPU: i64 = 256;
/// Memory reservation (MiB) given to Envoy.
pub const ENVOY_MEMORY_RESERVATION: i64 = 128;
/// Memory reservation (MiB) given to the short-lived proxy-init container.
pub const PROXY_INIT_MEMORY_RESERVATION: i64 = 32;
/// The `nofile` ulimit (soft and hard) of the proxy, as in the App Mesh examples.
pub const NOFILE_LIMIT: i64 = 15000;

/// The default agent image: `public.ecr.aws/taskmesh/taskmesh-agent:<crate version>`.
pub fn default_agent_image() -> String {
    format!("public.ecr.aws/taskmesh/taskmesh-agent:{VERSION}")
}

/// The image of the proxy container.
pub fn proxy_image(opts: &InjectOptions) -> String {
    match (&opts.image, opts.proxy) {
        (Some(i), _) => i.clone(),
        (None, ProxyKind::Agent) => default_agent_image(),
        (None, ProxyKind::Envoy) => DEFAULT_ENVOY_IMAGE.to_string(),
    }
}

/// The image of the proxy-init container: the agent image (`--image` when the proxy is the agent).
pub fn proxy_init_image(opts: &InjectOptions) -> String {
    match (&opts.image, opts.proxy) {
        (Some(i), ProxyKind::Agent) => i.clone(),
        _ => default_agent_image(),
    }
}

/// The name of the proxy container for `opts`.
pub fn proxy_name(opts: &InjectOptions) -> &'static str {
    match opts.proxy {
        ProxyKind::Agent => AGENT_CONTAINER,
        ProxyKind::Envoy => ENVOY_CONTAINER,
    }
}

/// The redirect settings, shared by `proxyConfiguration` and the proxy-init environment.
#[derive(Debug, Clone)]
pub struct RedirectSettings {
    pub ignored_uid: Value,
    pub ignored_gid: Option<Value>,
    /// `None` for an egress-only proxy (no app ports): ingress port and app ports are omitted.
    pub ingress_port: Option<Value>,
    pub egress_port: Value,
    pub app_ports: Option<Value>,
    pub egress_ignored_ips: Value,
    pub egress_ignored_ports: Option<Value>,
}

impl RedirectSettings {
    /// `(proxyConfiguration property name, proxy-init env name, value)`, in output order.
    pub fn entries(&self) -> Vec<(&'static str, &'static str, Value)> {
        let mut out = vec![(
            "IgnoredUID",
            "TASKMESH_IGNORED_UID",
            self.ignored_uid.clone(),
        )];
        if let Some(g) = &self.ignored_gid {
            out.push(("IgnoredGID", "TASKMESH_IGNORED_GID", g.clone()));
        }
        if let Some(p) = &self.ingress_port {
            out.push(("ProxyIngressPort", "TASKMESH_PROXY_INGRESS_PORT", p.clone()));
        }
        out.push((
            "ProxyEgressPort",
            "TASKMESH_PROXY_EGRESS_PORT",
            self.egress_port.clone(),
        ));
        if let Some(p) = &self.app_ports {
            out.push(("AppPorts", "TASKMESH_APP_PORTS", p.clone()));
        }
        out.push((
            "EgressIgnoredIPs",
            "TASKMESH_EGRESS_IGNORED_IPS",
            self.egress_ignored_ips.clone(),
        ));
        if let Some(p) = &self.egress_ignored_ports {
            out.push((
                "EgressIgnoredPorts",
                "TASKMESH_EGRESS_IGNORED_PORTS",
                p.clone(),
            ));
        }
        out
    }
}

/// An object with keys in casing `c`.
pub fn obj(c: Casing, pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (c.k(k), v)).collect())
}

fn env(c: Casing, vars: Vec<(&str, Value)>) -> Value {
    Value::Array(
        vars.into_iter()
            .map(|(n, v)| obj(c, vec![("name", Value::from(n)), ("value", v)]))
            .collect(),
    )
}

fn port_mapping(c: Casing, port: u16) -> Value {
    obj(
        c,
        vec![
            ("containerPort", Value::from(port)),
            ("protocol", Value::from("tcp")),
        ],
    )
}

fn labels(extra: &[(String, String)]) -> Value {
    let mut m = Map::new();
    m.insert(INJECTED_LABEL.to_string(), Value::from(VERSION));
    for (k, v) in extra {
        m.insert(k.clone(), Value::from(v.as_str()));
    }
    Value::Object(m)
}

/// The health check of the proxy. The agent answers `taskmesh-agent health` (no curl in the
/// image); Envoy gets the stock App Mesh check. Both: startPeriod 10, interval 5, timeout 2, retries 3.
pub fn health_check(c: Casing, opts: &InjectOptions) -> Value {
    let command = match opts.proxy {
        ProxyKind::Agent => vec![
            "CMD".to_string(),
            "taskmesh-agent".to_string(),
            "health".to_string(),
        ],
        ProxyKind::Envoy => vec![
            "CMD-SHELL".to_string(),
            format!(
                "curl -s http://localhost:{}/server_info | grep state | grep -q LIVE",
                opts.admin_port
            ),
        ],
    };
    obj(
        c,
        vec![
            ("command", Value::from(command)),
            ("startPeriod", Value::from(10)),
            ("interval", Value::from(5)),
            ("timeout", Value::from(2)),
            ("retries", Value::from(3)),
        ],
    )
}

/// The proxy container.
pub fn proxy_container(
    c: Casing,
    opts: &InjectOptions,
    resource_arn: &Value,
    config: Option<&Value>,
    log_configuration: Option<&Value>,
    extra_labels: &[(String, String)],
) -> Value {
    let mut vars = vec![("APPMESH_RESOURCE_ARN", resource_arn.clone())];
    let (cpu, memory) = match opts.proxy {
        ProxyKind::Agent => {
            if let Some(cfg) = config {
                vars.push(("TASKMESH_CONFIG", cfg.clone()));
            }
            vars.push((
                "TASKMESH_INGRESS_PORT",
                Value::from(opts.ingress_port.to_string()),
            ));
            vars.push((
                "TASKMESH_EGRESS_PORT",
                Value::from(opts.egress_port.to_string()),
            ));
            vars.push((
                "ENVOY_ADMIN_ACCESS_PORT",
                Value::from(opts.admin_port.to_string()),
            ));
            (AGENT_CPU, AGENT_MEMORY_RESERVATION)
        }
        ProxyKind::Envoy => {
            if opts.admin_port != crate::options::DEFAULT_ADMIN_PORT {
                vars.push((
                    "ENVOY_ADMIN_ACCESS_PORT",
                    Value::from(opts.admin_port.to_string()),
                ));
            }
            (ENVOY_CPU, ENVOY_MEMORY_RESERVATION)
        }
    };
    let mut pairs = vec![
        ("name", Value::from(proxy_name(opts))),
        ("image", Value::from(proxy_image(opts))),
        ("essential", Value::Bool(true)),
        ("user", Value::from(opts.ignored_uid.to_string())),
        ("cpu", Value::from(cpu)),
        ("memoryReservation", Value::from(memory)),
        (
            "portMappings",
            Value::Array(vec![
                port_mapping(c, opts.admin_port),
                port_mapping(c, opts.ingress_port),
                port_mapping(c, opts.egress_port),
            ]),
        ),
        ("environment", env(c, vars)),
        (
            "ulimits",
            Value::Array(vec![obj(
                c,
                vec![
                    ("name", Value::from("nofile")),
                    ("softLimit", Value::from(NOFILE_LIMIT)),
                    ("hardLimit", Value::from(NOFILE_LIMIT)),
                ],
            )]),
        ),
        ("healthCheck", health_check(c, opts)),
    ];
    if let Some(l) = log_configuration {
        pairs.push(("logConfiguration", l.clone()));
    }
    pairs.push(("dockerLabels", labels(extra_labels)));
    obj(c, pairs)
}

/// The proxy-init container: the agent image running `taskmesh-agent proxy-init` as root with
/// NET_ADMIN, not essential; its environment mirrors the `proxyConfiguration` properties
/// (`TASKMESH_IGNORED_UID`, `TASKMESH_IGNORED_GID`, `TASKMESH_PROXY_INGRESS_PORT`,
/// `TASKMESH_PROXY_EGRESS_PORT`, `TASKMESH_APP_PORTS`, `TASKMESH_EGRESS_IGNORED_IPS`,
/// `TASKMESH_EGRESS_IGNORED_PORTS`; comma lists as strings).
pub fn proxy_init_container(
    c: Casing,
    opts: &InjectOptions,
    settings: &RedirectSettings,
    log_configuration: Option<&Value>,
) -> Value {
    let vars = settings
        .entries()
        .into_iter()
        .map(|(_, env_name, v)| (env_name, v))
        .collect();
    let mut pairs = vec![
        ("name", Value::from(PROXY_INIT_CONTAINER)),
        ("image", Value::from(proxy_init_image(opts))),
        ("essential", Value::Bool(false)),
        ("user", Value::from("0")),
        (
            "memoryReservation",
            Value::from(PROXY_INIT_MEMORY_RESERVATION),
        ),
        ("entryPoint", Value::from(vec!["taskmesh-agent"])),
        ("command", Value::from(vec!["proxy-init"])),
        ("environment", env(c, vars)),
        (
            "linuxParameters",
            obj(
                c,
                vec![(
                    "capabilities",
                    obj(c, vec![("add", Value::from(vec!["NET_ADMIN"]))]),
                )],
            ),
        ),
    ];
    if let Some(l) = log_configuration {
        pairs.push(("logConfiguration", l.clone()));
    }
    pairs.push(("dockerLabels", labels(&[])));
    obj(c, pairs)
}

/// The task-level `proxyConfiguration` (type APPMESH; every property value a string).
pub fn proxy_configuration(c: Casing, opts: &InjectOptions, settings: &RedirectSettings) -> Value {
    let props = settings
        .entries()
        .into_iter()
        .map(|(name, _, v)| obj(c, vec![("name", Value::from(name)), ("value", v)]))
        .collect();
    obj(
        c,
        vec![
            ("type", Value::from("APPMESH")),
            ("containerName", Value::from(proxy_name(opts))),
            ("properties", Value::Array(props)),
        ],
    )
}
