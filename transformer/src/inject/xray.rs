//! `--xray`: the AWS X-Ray daemon sidecar, as the App Mesh examples ran it, and the proxy's
//! tracing settings. A daemon the task already runs (image `aws-xray-daemon`, name
//! `xray-daemon`, or 2000/udp: [`wiring::is_xray_daemon`]) is reused and never changed; otherwise
//! an `xray-daemon` container is added (labelled [`crate::INJECTED_LABEL`], so eject removes it
//! and inject starts again from the task without it). The proxy waits for the daemon (START)
//! when the daemon runs as the ignored UID/GID; it gets `ENABLE_ENVOY_XRAY_TRACING=1`, and the
//! daemon's address when it is not the default `127.0.0.1:2000`.
//!
//! Network modes: inject accepts only `awsvpc` (the redirect needs it), where every container of
//! the task shares one network namespace, so the daemon is on the proxy's `127.0.0.1`. In bridge
//! mode it would need `links` and `AWS_XRAY_DAEMON_ADDRESS=xray-daemon:2000`, and in host mode
//! one daemon per instance; neither mode can carry the mesh, so neither is produced here.

use serde_json::{Map, Value};

use crate::error::{Location, Note};
use crate::options::{DEFAULT_XRAY_IMAGE, InjectOptions, ProxyKind};
use crate::taskdef::Casing;
use crate::taskdef::wiring::{self, INJECTED_LABEL, XRAY_DAEMON_NAME, XRAY_DAEMON_PORT};

use super::proxy::{VERSION, obj};

/// CPU units given to the added daemon (the App Mesh examples and the X-Ray guide: 32).
pub const XRAY_CPU: i64 = 32;
/// Memory reservation (MiB) given to the added daemon (the App Mesh examples: 256).
pub const XRAY_MEMORY_RESERVATION: i64 = 256;
/// The variable that turns on the proxy's X-Ray tracing (App Mesh Envoy's name; the agent reads it too).
pub const TRACING_ENV: &str = "ENABLE_ENVOY_XRAY_TRACING";
/// Where the agent sends segments when not `127.0.0.1:2000` (the X-Ray SDKs' variable).
pub const ADDRESS_ENV: &str = "AWS_XRAY_DAEMON_ADDRESS";
/// The daemon's UDP port for the App Mesh Envoy image when not 2000.
pub const ENVOY_PORT_ENV: &str = "XRAY_DAEMON_PORT";

/// The image of the added daemon.
pub fn daemon_image(opts: &InjectOptions) -> String {
    opts.xray_image
        .clone()
        .unwrap_or_else(|| DEFAULT_XRAY_IMAGE.to_string())
}

/// The daemon the task will trace to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Its container name, when literal (the proxy's `dependsOn` needs it).
    pub name: Option<String>,
    /// Its UDP port (the first udp port mapping; 2000 when it maps none).
    pub port: i64,
    /// Whether inject adds it (false: the task's own, reused as it is).
    pub added: bool,
    /// Whether the proxy waits for it (START): it runs as the ignored UID/GID, so it neither
    /// waits for the proxy nor has its own traffic redirected.
    pub proxy_waits: bool,
}

/// The first X-Ray daemon among `containers` (the task without taskmesh's own containers), if
/// any, as `(index, container)`.
pub fn existing(containers: &[Value], c: Casing) -> Option<(usize, &Value)> {
    containers
        .iter()
        .enumerate()
        .find(|(_, ctr)| wiring::is_xray_daemon(ctr, c))
}

/// The daemon to trace to: the task's own (at `index` in `containers`), or an added one.
pub fn plan(
    containers: &[Value],
    c: Casing,
    bypasses: impl Fn(&Value) -> bool,
    loc: &Location,
    notes: &mut Vec<Note>,
) -> Daemon {
    let Some((i, ctr)) = existing(containers, c) else {
        return Daemon {
            name: Some(XRAY_DAEMON_NAME.to_string()),
            port: i64::from(XRAY_DAEMON_PORT),
            added: true,
            proxy_waits: true,
        };
    };
    let name = wiring::str_field(ctr, c, "name").map(str::to_string);
    let shown = wiring::display_name(ctr, c, i);
    let cl = loc.with_container(&shown);
    let port = wiring::udp_ports(ctr, c)
        .first()
        .copied()
        .unwrap_or(i64::from(XRAY_DAEMON_PORT));
    let bypass = bypasses(ctr);
    let dep_key = c.k("dependsOn");
    let waits_itself = ctr
        .get(&dep_key)
        .is_some_and(|d| d.as_array().is_none_or(|a| !a.is_empty()));
    if !bypass {
        notes.push(Note::new(
            &cl.with_field(c.k("user")),
            "--xray: the task's X-Ray daemon does not run as the ignored UID/GID, so its calls to the X-Ray API go through the proxy: it waits for the proxy (HEALTHY) like an application container, and the proxy does not wait for it (segments sent before it starts are lost). Set its user to the ignored UID (1337 by default) to have the proxy wait for it instead",
        ));
    } else if waits_itself {
        notes.push(Note::new(
            &cl.with_field(&dep_key),
            "--xray: the task's X-Ray daemon waits for other containers itself, so the proxy does not wait for it (that could close a start-up cycle); segments sent before it starts are lost",
        ));
    } else if name.is_none() {
        notes.push(Note::new(
            &cl.with_field(c.k("name")),
            "--xray: the task's X-Ray daemon has no literal name, so the proxy cannot wait for it (dependsOn needs the name); add the dependency by hand",
        ));
    }
    Daemon {
        proxy_waits: bypass && !waits_itself && name.is_some(),
        name,
        port,
        added: false,
    }
}

/// The proxy's tracing variables for `daemon`.
pub fn proxy_env(opts: &InjectOptions, daemon: &Daemon) -> Vec<(&'static str, Value)> {
    let mut vars = vec![(TRACING_ENV, Value::from("1"))];
    if daemon.port != i64::from(XRAY_DAEMON_PORT) {
        match opts.proxy {
            ProxyKind::Agent => vars.push((
                ADDRESS_ENV,
                Value::from(format!("127.0.0.1:{}", daemon.port)),
            )),
            ProxyKind::Envoy => vars.push((ENVOY_PORT_ENV, Value::from(daemon.port.to_string()))),
        }
    }
    vars
}

/// The added daemon container: as in the App Mesh examples (`user` = the ignored UID, so its
/// HTTPS calls to X-Ray bypass the redirect; 2000/udp; cpu 32; memoryReservation 256; essential),
/// logging like the proxy, labelled as injected.
pub fn daemon_container(
    c: Casing,
    opts: &InjectOptions,
    log_configuration: Option<&Value>,
) -> Value {
    let mut pairs = vec![
        ("name", Value::from(XRAY_DAEMON_NAME)),
        ("image", Value::from(daemon_image(opts))),
        ("essential", Value::Bool(true)),
        ("user", Value::from(opts.ignored_uid.to_string())),
        ("cpu", Value::from(XRAY_CPU)),
        ("memoryReservation", Value::from(XRAY_MEMORY_RESERVATION)),
        (
            "portMappings",
            Value::Array(vec![obj(
                c,
                vec![
                    ("containerPort", Value::from(XRAY_DAEMON_PORT)),
                    ("protocol", Value::from("udp")),
                ],
            )]),
        ),
    ];
    if let Some(l) = log_configuration {
        pairs.push(("logConfiguration", l.clone()));
    }
    let mut labels = Map::new();
    labels.insert(INJECTED_LABEL.to_string(), Value::from(VERSION));
    pairs.push(("dockerLabels", Value::Object(labels)));
    obj(c, pairs)
}

/// Wire the proxy container to `daemon`: its tracing variables at the end of its environment, and
/// `dependsOn` the daemon (START) just before its health check when the daemon does not wait for
/// the proxy.
pub fn wire_proxy(proxy: &mut Value, c: Casing, opts: &InjectOptions, daemon: &Daemon) {
    let Some(obj_map) = proxy.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(env)) = obj_map.get_mut(&c.k("environment")) {
        for (name, value) in proxy_env(opts, daemon) {
            env.push(obj(c, vec![("name", Value::from(name)), ("value", value)]));
        }
    }
    if let (true, Some(name)) = (daemon.proxy_waits, &daemon.name) {
        let dep = Value::Array(vec![obj(
            c,
            vec![
                ("containerName", Value::from(name.as_str())),
                ("condition", Value::from("START")),
            ],
        )]);
        let at = obj_map
            .keys()
            .position(|k| *k == c.k("healthCheck"))
            .unwrap_or(obj_map.len());
        obj_map.shift_insert(at, c.k("dependsOn"), dep);
    }
}

/// Whether a proxy container's environment turns X-Ray tracing on.
pub fn traces(proxy: &Value, c: Casing) -> bool {
    wiring::env_value(proxy, c, TRACING_ENV).is_some_and(|v| match v {
        Value::String(s) => s.trim() == "1" || s.trim().eq_ignore_ascii_case("true"),
        Value::Number(n) => n.as_i64() == Some(1),
        Value::Bool(b) => *b,
        _ => false,
    })
}

/// Whether the proxy sends its segments somewhere other than the task's own loopback (an
/// `AWS_XRAY_DAEMON_ADDRESS` naming another host): then no daemon in the task is needed.
pub fn remote_daemon(proxy: &Value, c: Casing) -> bool {
    let Some(addr) = wiring::env_value(proxy, c, ADDRESS_ENV) else {
        return false;
    };
    let Some(s) = addr.as_str() else {
        // An intrinsic: cannot tell, so do not claim the daemon is missing.
        return true;
    };
    // "host:port", "udp:host:port tcp:host:port" (the SDKs' two-address form).
    s.split_whitespace().all(|part| {
        let part = part
            .strip_prefix("udp:")
            .or_else(|| part.strip_prefix("tcp:"))
            .unwrap_or(part);
        let host = part.rsplit_once(':').map_or(part, |(h, _)| h);
        !(host == "localhost" || host.starts_with("127.") || host == "[::1]" || host == "::1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_addresses_are_told_from_loopback() {
        let p = |v: &str| json!({"environment": [{"name": ADDRESS_ENV, "value": v}]});
        assert!(!remote_daemon(&p("127.0.0.1:2000"), Casing::Api));
        assert!(!remote_daemon(&p("localhost:2001"), Casing::Api));
        assert!(!remote_daemon(
            &p("udp:127.0.0.1:2000 tcp:127.0.0.1:2000"),
            Casing::Api
        ));
        assert!(remote_daemon(&p("xray.internal:2000"), Casing::Api));
        assert!(remote_daemon(&p("10.0.0.5:2000"), Casing::Api));
        assert!(!remote_daemon(&json!({}), Casing::Api));
    }

    #[test]
    fn tracing_flag_values() {
        let p = |v: Value| json!({"Environment": [{"Name": TRACING_ENV, "Value": v}]});
        let c = Casing::Cfn { short_tags: false };
        assert!(traces(&p(json!("1")), c));
        assert!(traces(&p(json!(1)), c));
        assert!(!traces(&p(json!("0")), c));
        assert!(!traces(&json!({}), c));
    }

    #[test]
    fn non_default_daemon_port_reaches_the_proxy() {
        let d = Daemon {
            name: Some("x".into()),
            port: 2001,
            added: false,
            proxy_waits: true,
        };
        let agent = proxy_env(&InjectOptions::default(), &d);
        assert_eq!(agent[1], (ADDRESS_ENV, json!("127.0.0.1:2001")));
        let envoy = proxy_env(
            &InjectOptions {
                proxy: ProxyKind::Envoy,
                ..InjectOptions::default()
            },
            &d,
        );
        assert_eq!(envoy[1], (ENVOY_PORT_ENV, json!("2001")));
        let default = Daemon { port: 2000, ..d };
        assert_eq!(
            proxy_env(&InjectOptions::default(), &default),
            vec![(TRACING_ENV, json!("1"))]
        );
    }
}
