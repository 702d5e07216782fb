//! Recognising proxy wiring in a task definition: containers taskmesh injected (docker label
//! `taskmesh.injected`), App Mesh Envoy sidecars (GA era: `APPMESH_RESOURCE_ARN` /
//! `APPMESH_VIRTUAL_NODE_NAME`), preview-era `proxyinit` route managers, and any other proxy
//! named by `proxyConfiguration.containerName`; and X-Ray daemon sidecars. Plus small accessors
//! used by inject/eject/check.

use serde_json::{Map, Value};

use super::naming::{Casing, is_intrinsic};

/// Docker label on every container taskmesh injects; its value is the taskmesh version.
pub const INJECTED_LABEL: &str = "taskmesh.injected";
/// Docker label (on the injected proxy) recording the task `cpu` before a Fargate resize.
pub const ORIGINAL_CPU_LABEL: &str = "taskmesh.original-cpu";
/// Docker label (on the injected proxy) recording the task `memory` before a Fargate resize.
pub const ORIGINAL_MEMORY_LABEL: &str = "taskmesh.original-memory";
/// Docker label (on the injected proxy) listing, comma-separated, the containers whose
/// `dependsOn` key inject created (so eject removes the key rather than leaving `[]`).
pub const CREATED_DEPENDS_ON_LABEL: &str = "taskmesh.created-dependson";
/// Value recorded in [`ORIGINAL_CPU_LABEL`] / [`ORIGINAL_MEMORY_LABEL`] when the task had no
/// such field.
pub const ABSENT: &str = "absent";

/// What a container is, as far as the mesh is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Added by taskmesh (carries [`INJECTED_LABEL`]).
    Injected,
    /// An App Mesh Envoy sidecar, or another proxy named by `proxyConfiguration`.
    LegacyProxy,
    /// A preview-era App Mesh `proxyinit` (aws-appmesh-proxy-route-manager) container.
    LegacyProxyInit,
    /// An App Mesh virtual gateway Envoy: the task's application, not a sidecar.
    Gateway,
    /// Anything else: the application and its own sidecars.
    App,
}

/// The container list, if it is a literal list.
pub fn containers(td: &Map<String, Value>, c: Casing) -> Option<&Vec<Value>> {
    td.get(&c.k("containerDefinitions"))?.as_array()
}

/// A string field of an object, if literal.
pub fn str_field<'a>(obj: &'a Value, c: Casing, api: &str) -> Option<&'a str> {
    obj.get(c.k(api))?.as_str()
}

/// A container's name for messages: the literal name, or `#<index>`.
pub fn display_name(container: &Value, c: Casing, index: usize) -> String {
    str_field(container, c, "name").map_or_else(|| format!("#{index}"), str::to_string)
}

/// The value of environment variable `name` in a container (`environment[].name/value`).
pub fn env_value<'a>(container: &'a Value, c: Casing, name: &str) -> Option<&'a Value> {
    // The keys once, not per entry: roles() asks several names of every container.
    let (name_key, value_key) = (c.k("name"), c.k("value"));
    container
        .get(c.k("environment"))?
        .as_array()?
        .iter()
        .find_map(|e| (e.get(&name_key)?.as_str()? == name).then(|| e.get(&value_key))?)
}

/// A docker label of a container (label keys are never case-converted).
pub fn label<'a>(container: &'a Value, c: Casing, key: &str) -> Option<&'a str> {
    container.get(c.k("dockerLabels"))?.get(key)?.as_str()
}

/// Whether the container adds the NET_ADMIN capability.
pub fn has_net_admin(container: &Value, c: Casing) -> bool {
    container
        .get(c.k("linuxParameters"))
        .and_then(|l| l.get(c.k("capabilities")))
        .and_then(|caps| caps.get(c.k("add")))
        .and_then(Value::as_array)
        .is_some_and(|add| add.iter().any(|v| v.as_str() == Some("NET_ADMIN")))
}

/// `proxyConfiguration.containerName`, if literal.
pub fn proxy_config_container(td: &Map<String, Value>, c: Casing) -> Option<&str> {
    td.get(&c.k("proxyConfiguration"))?
        .get(c.k("containerName"))?
        .as_str()
}

/// A `proxyConfiguration` property value, if present.
pub fn proxy_property<'a>(td: &'a Map<String, Value>, c: Casing, name: &str) -> Option<&'a Value> {
    td.get(&c.k("proxyConfiguration"))?
        .get(c.k("properties"))?
        .as_array()?
        .iter()
        .find_map(|p| (p.get(c.k("name"))?.as_str()? == name).then(|| p.get(c.k("value")))?)
}

/// The App Mesh identity variable of a container (`APPMESH_RESOURCE_ARN`, then
/// `APPMESH_VIRTUAL_NODE_NAME`), literal or an intrinsic.
pub fn appmesh_identity(container: &Value, c: Casing) -> Option<&Value> {
    env_value(container, c, "APPMESH_RESOURCE_ARN")
        .or_else(|| env_value(container, c, "APPMESH_VIRTUAL_NODE_NAME"))
}

fn mentions(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s.to_ascii_lowercase().contains(needle),
        Value::Array(a) => a.iter().any(|x| mentions(x, needle)),
        Value::Object(m) => m.values().any(|x| mentions(x, needle)),
        _ => false,
    }
}

/// The role of each container, in order.
pub fn roles(td: &Map<String, Value>, c: Casing) -> Vec<Role> {
    let named_proxy = proxy_config_container(td, c);
    let Some(list) = containers(td, c) else {
        return Vec::new();
    };
    let mut roles: Vec<Role> = list.iter().map(|ctr| role(ctr, c, named_proxy)).collect();
    // No redirect at all and an Envoy listening on its own ports: a virtual gateway whose
    // identity is an intrinsic (e.g. `!Ref Gateway`), not a sidecar.
    let redirected = td.contains_key(&c.k("proxyConfiguration"))
        || roles.iter().any(|r| matches!(r, Role::LegacyProxyInit));
    if !redirected {
        for (ctr, r) in list.iter().zip(roles.iter_mut()) {
            if *r == Role::LegacyProxy && listens_on_own_ports(ctr, c) {
                *r = Role::Gateway;
            }
        }
    }
    roles
}

/// Whether a container maps a port other than the sidecar ports (9901, 15000, 15001).
fn listens_on_own_ports(container: &Value, c: Casing) -> bool {
    container
        .get(c.k("portMappings"))
        .and_then(Value::as_array)
        .is_some_and(|pms| {
            pms.iter().any(|pm| match pm.get(c.k("containerPort")) {
                Some(Value::Number(n)) => !matches!(n.as_i64(), Some(9901 | 15000 | 15001)),
                Some(Value::String(s)) => !matches!(s.as_str(), "9901" | "15000" | "15001"),
                Some(_) => true,
                None => false,
            })
        })
}

fn role(container: &Value, c: Casing, named_proxy: Option<&str>) -> Role {
    if !container.is_object() || is_intrinsic(container) {
        return Role::App;
    }
    if label(container, c, INJECTED_LABEL).is_some() {
        return Role::Injected;
    }
    let name = str_field(container, c, "name");
    if let Some(id) = appmesh_identity(container, c) {
        if mentions(id, "virtualgateway") {
            return Role::Gateway;
        }
        return Role::LegacyProxy;
    }
    if name.is_some() && name == named_proxy {
        return Role::LegacyProxy;
    }
    let image_is = |needle: &str| {
        container
            .get(c.k("image"))
            .is_some_and(|i| mentions(i, needle))
    };
    if image_is("proxy-route-manager")
        || env_value(container, c, "APPMESH_START_ENABLED").is_some()
        || env_value(container, c, "APPMESH_IGNORE_UID").is_some()
        || (name == Some("proxyinit") && has_net_admin(container, c))
    {
        return Role::LegacyProxyInit;
    }
    if image_is("aws-appmesh-envoy") {
        return Role::LegacyProxy;
    }
    Role::App
}

/// Name of the X-Ray daemon container in the AWS examples, and of the one `--xray` adds.
pub const XRAY_DAEMON_NAME: &str = "xray-daemon";
/// The X-Ray daemon's UDP port (segments) in every AWS example and the daemon image's default.
pub const XRAY_DAEMON_PORT: u16 = 2000;

/// The literal containerPort of a `udp` port mapping, for each such mapping of a container.
pub fn udp_ports(container: &Value, c: Casing) -> Vec<i64> {
    container
        .get(c.k("portMappings"))
        .and_then(Value::as_array)
        .map(|pms| {
            pms.iter()
                .filter(|pm| {
                    pm.get(c.k("protocol"))
                        .and_then(Value::as_str)
                        .is_some_and(|p| p.eq_ignore_ascii_case("udp"))
                })
                .filter_map(|pm| pm.get(c.k("containerPort")).and_then(super::numbers::int))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a container is an AWS X-Ray daemon: its image is `aws-xray-daemon` (Docker Hub
/// `amazon/aws-xray-daemon`, ECR Public `public.ecr.aws/xray/aws-xray-daemon`, or a mirror of it,
/// also inside an intrinsic), or it is named `xray-daemon`, or it maps 2000/udp (the X-Ray port:
/// a second daemon could not bind it in the task's shared network namespace anyway).
pub fn is_xray_daemon(container: &Value, c: Casing) -> bool {
    if !container.is_object() || is_intrinsic(container) {
        return false;
    }
    container
        .get(c.k("image"))
        .is_some_and(|i| mentions(i, "aws-xray-daemon"))
        || str_field(container, c, "name") == Some(XRAY_DAEMON_NAME)
        || udp_ports(container, c).contains(&i64::from(XRAY_DAEMON_PORT))
}

/// Whether a task definition (API shape) is meshed by taskmesh: it carries an injected proxy
/// container, and its redirect (proxyConfiguration naming that proxy, or an injected
/// proxy-init container) is in place. This is what the validating hooks check.
pub fn is_meshed_in(td: &Map<String, Value>, c: Casing) -> bool {
    let Some(list) = containers(td, c) else {
        return false;
    };
    let injected: Vec<&Value> = list
        .iter()
        .filter(|x| label(x, c, INJECTED_LABEL).is_some())
        .collect();
    let proxy = injected
        .iter()
        .find(|x| !has_net_admin(x, c) && !is_xray_daemon(x, c));
    let Some(proxy_name) = proxy.and_then(|p| str_field(p, c, "name")) else {
        return false;
    };
    proxy_config_container(td, c) == Some(proxy_name)
        || injected.iter().any(|x| has_net_admin(x, c))
}
