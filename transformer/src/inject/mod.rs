//! Inject: make one task definition join the mesh. Starting from the definition with any
//! previous taskmesh injection and any legacy App Mesh wiring stripped (see [`crate::eject`]), it
//! adds the proxy container, the redirect (`proxyConfiguration`, or a `proxy-init` container),
//! `dependsOn` HEALTHY (SUCCESS on proxy-init) from every app container, and a Fargate resize
//! when needed, and with `--xray` the X-Ray daemon sidecar ([`xray`]); every rule it enforces fails with an error naming file, resource, container,
//! field and the fix. Because it always starts from the stripped definition, inject∘inject = inject.

pub mod identity;
pub mod proxy;
pub mod resize;
pub mod xray;

use serde_json::{Map, Value};

use crate::eject;
use crate::error::{Location, Note, TransformError};
use crate::options::{DEFAULT_EGRESS_IGNORED_IPS, InjectOptions, ProxyKind, Redirect};
use crate::taskdef::naming::is_intrinsic;
use crate::taskdef::wiring::{self, CREATED_DEPENDS_ON_LABEL, Role};
use crate::taskdef::{Casing, numbers};

pub use identity::Overrides;

/// At most this many containers in a task definition (ECS quota, not adjustable).
pub const MAX_CONTAINERS: usize = 10;
/// Only this many ports per redirect list take effect (iptables multiport limit).
pub const MAX_PORTS: usize = 15;

/// Which task definition is being injected, and its per-resource settings.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub loc: Location,
    /// The literal family (CloudFormation: `Family`, else the logical id): the default node name.
    pub default_node: Option<String>,
    pub overrides: Overrides,
}

/// Whether the task definition is an App Mesh virtual gateway task (its Envoy is the app).
pub fn is_gateway(td: &Map<String, Value>, c: Casing) -> bool {
    let roles = wiring::roles(td, c);
    roles.contains(&Role::Gateway)
        && !roles
            .iter()
            .any(|r| matches!(r, Role::Injected | Role::LegacyProxy))
}

fn literal_family(td: &Map<String, Value>, c: Casing) -> Option<String> {
    td.get(&c.k("family"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The default node name of a task definition: its literal family, else `fallback`.
pub fn default_node(td: &Map<String, Value>, c: Casing, fallback: Option<&str>) -> Option<String> {
    literal_family(td, c).or_else(|| fallback.map(str::to_string))
}

fn check_network_mode(
    td: &Map<String, Value>,
    c: Casing,
    opts: &InjectOptions,
    target: &Target,
    notes: &mut Vec<Note>,
) -> Result<(), TransformError> {
    let key = c.k("networkMode");
    let loc = target.loc.with_field(&key);
    let why = match opts.redirect {
        Redirect::Ecs => {
            "ECS applies proxyConfiguration only in awsvpc mode (\"APPMESH proxy configuration is only supported in networkMode=awsvpc\")"
        }
        Redirect::ProxyInit => {
            "the proxy-init iptables rules only reach the app when every container shares the task's own network namespace, which is awsvpc mode"
        }
    };
    let fix = format!(
        "Fix: set {key} to awsvpc (each task gets its own network interface; hostPort must then equal containerPort or be omitted; on EC2 mind the ENI limits of the instance type)"
    );
    match td.get(&key) {
        Some(Value::String(m)) if m == "awsvpc" => Ok(()),
        Some(v) if is_intrinsic(v) => {
            notes.push(Note::new(
                &loc,
                format!(
                    "{key} is an intrinsic function; it must resolve to awsvpc for the mesh to work"
                ),
            ));
            Ok(())
        }
        Some(Value::String(m)) => {
            let detail = match m.as_str() {
                "bridge" => {
                    "in bridge mode each container has its own network namespace behind the docker bridge, so there is no task-wide redirect"
                }
                "host" => {
                    "in host mode the containers use the instance's network namespace: a redirect would capture the whole host's traffic"
                }
                "none" => "in none mode the task has no external network at all",
                _ => "it is not a valid ECS network mode",
            };
            Err(TransformError::invalid(
                loc,
                format!("network mode '{m}' cannot carry the mesh: {detail}; {why}. {fix}"),
            ))
        }
        None => Err(TransformError::invalid(
            loc,
            format!(
                "{key} is not set, so ECS uses the default (bridge on EC2, where each container has its own network namespace): {why}. {fix}"
            ),
        )),
        Some(other) => Err(TransformError::invalid(
            loc,
            format!("{key} must be the string awsvpc, found {other}. {fix}"),
        )),
    }
}

fn check_platform(
    td: &Map<String, Value>,
    c: Casing,
    target: &Target,
) -> Result<(), TransformError> {
    let rp = c.k("runtimePlatform");
    let osf = c.k("operatingSystemFamily");
    if let Some(Value::String(os)) = td.get(&rp).and_then(|r| r.get(&osf))
        && os.to_ascii_uppercase().starts_with("WINDOWS")
    {
        return Err(TransformError::invalid(
            target.loc.with_field(format!("{rp}.{osf}")),
            format!(
                "operating system {os} is Windows: ECS supports proxyConfiguration, container user IDs and iptables redirection only for Linux tasks, so a Windows task cannot join the mesh. Fix: mesh a Linux variant of the task, or leave this task out (CloudFormation: --resource for the others, or Metadata.taskmesh.skip: true)"
            ),
        ));
    }
    Ok(())
}

/// The literal TCP container ports of a container, and whether it has non-literal ones.
fn tcp_ports(ctr: &Value, c: Casing) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let mut opaque = false;
    let Some(list) = ctr.get(c.k("portMappings")).and_then(Value::as_array) else {
        return (out, false);
    };
    for pm in list {
        if is_intrinsic(pm) {
            opaque = true;
            continue;
        }
        let tcp = match pm.get(c.k("protocol")) {
            None => true,
            Some(Value::String(p)) => !p.eq_ignore_ascii_case("udp"),
            Some(_) => true,
        };
        if !tcp {
            continue;
        }
        match pm.get(c.k("containerPort")) {
            Some(v) if numbers::int(v).is_some() => {
                out.push(Value::from(numbers::int(v).unwrap_or_default()))
            }
            Some(v) if is_intrinsic(v) => out.push(v.clone()),
            _ => {}
        }
    }
    (out, opaque)
}

fn uid_gid(user: &str) -> (Option<&str>, Option<&str>) {
    match user.split_once(':') {
        Some((u, g)) => (Some(u), Some(g)),
        None => (Some(user), None),
    }
}

/// Whether the container runs as the ignored UID or GID (its traffic bypasses the proxy anyway).
fn bypasses_proxy(ctr: &Value, c: Casing, uid: &str, gid: Option<&str>) -> bool {
    let Some(user) = ctr.get(c.k("user")).and_then(Value::as_str) else {
        return false;
    };
    let (u, g) = uid_gid(user);
    u == Some(uid) || (gid.is_some() && g == gid)
}

fn csv<T: ToString>(items: &[T]) -> Value {
    Value::from(
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Inject one task definition given in its own casing.
pub fn inject_td(
    td: &Map<String, Value>,
    c: Casing,
    opts: &InjectOptions,
    target: &Target,
) -> Result<(Map<String, Value>, Vec<Note>), TransformError> {
    let loc = &target.loc;
    let mut notes = Vec::new();
    let cd_key = c.k("containerDefinitions");
    if wiring::containers(td, c).is_none() {
        return Err(TransformError::invalid(
            loc.with_field(&cd_key),
            format!(
                "{cd_key} must be a literal list of containers (an intrinsic function or a missing list cannot be meshed)"
            ),
        ));
    }
    let ports = [opts.ingress_port, opts.egress_port, opts.admin_port];
    if ports[0] == ports[1] || ports[0] == ports[2] || ports[1] == ports[2] || ports.contains(&0) {
        return Err(TransformError::usage(
            loc.clone(),
            format!(
                "--ingress-port {}, --egress-port {} and --admin-port {} must be three different non-zero ports",
                ports[0], ports[1], ports[2]
            ),
        ));
    }
    if opts.xray_image.is_some() && !opts.xray {
        return Err(TransformError::usage(
            loc.clone(),
            "--xray-image names the image of the X-Ray daemon that --xray adds; pass --xray too",
        ));
    }
    check_platform(td, c, target)?;
    if is_gateway(td, c) {
        return Err(TransformError::invalid(
            loc.with_field(&cd_key),
            "this is an App Mesh virtual gateway task (its Envoy's APPMESH_RESOURCE_ARN names a virtualGateway): the Envoy is the application here, not a sidecar, and taskmesh does not mesh gateways. Fix: leave this task definition out (--resource for the others, or Metadata.taskmesh.skip: true)",
        ));
    }
    check_network_mode(td, c, opts, target, &mut notes)?;
    let fargate = resize::is_fargate(td, c);
    if fargate && opts.redirect == Redirect::ProxyInit {
        return Err(TransformError::invalid(
            loc.with_field(c.k("requiresCompatibilities")),
            "--redirect proxy-init needs the NET_ADMIN capability, which Fargate refuses (Fargate only allows adding SYS_PTRACE). Fix: use the default --redirect ecs (task-level proxyConfiguration), or run the task on EC2",
        ));
    }

    // What the existing wiring says, before it is stripped.
    let roles = wiring::roles(td, c);
    let list: &[Value] = wiring::containers(td, c).map_or(&[], Vec::as_slice);
    let mut hints = identity::Hints::default();
    for (ctr, role) in list.iter().zip(&roles) {
        match role {
            Role::Injected if !wiring::has_net_admin(ctr, c) => {
                hints.resource_arn = wiring::appmesh_identity(ctr, c)
                    .cloned()
                    .or(hints.resource_arn);
                hints.config = wiring::env_value(ctr, c, "TASKMESH_CONFIG")
                    .cloned()
                    .or(hints.config);
            }
            Role::LegacyProxy if hints.resource_arn.is_none() => {
                hints.resource_arn = wiring::appmesh_identity(ctr, c).cloned();
            }
            _ => {}
        }
        if *role == Role::LegacyProxy && !opts.xray && xray::traces(ctr, c) {
            notes.push(Note::new(
                &loc.with_container(wiring::str_field(ctr, c, "name").unwrap_or("envoy")),
                "the App Mesh Envoy traced to X-Ray (ENABLE_ENVOY_XRAY_TRACING); pass --xray to keep tracing with the new proxy",
            ));
        }
    }
    let existing = |name: &str| wiring::proxy_property(td, c, name).cloned();
    let (old_gid, old_ips, old_ignored_ports, old_app_ports) = (
        existing("IgnoredGID"),
        existing("EgressIgnoredIPs"),
        existing("EgressIgnoredPorts"),
        existing("AppPorts").filter(|v| v.as_str() != Some("")),
    );

    let stripped = eject::strip(td, c, loc);
    let mut out = stripped.td;
    let default_node = target
        .default_node
        .clone()
        .or_else(|| literal_family(&out, c));
    let id = identity::resolve(
        opts,
        &target.overrides,
        &hints,
        default_node.as_deref(),
        loc,
    )?;
    if let Some(mesh) = &id.ignored_mesh {
        notes.push(Note::new(
            loc,
            format!("kept the existing APPMESH_RESOURCE_ARN (an intrinsic function, so it cannot be split into mesh and node) as this task's identity; mesh '{mesh}' was not applied. Pass --virtual-node (or Metadata.taskmesh.virtualNode) too to replace it"),
        ));
    }

    let proxy_name = proxy::proxy_name(opts);
    // Read in place until the Fargate resize; then moved out of `out` to be edited.
    let containers: &[Value] = wiring::containers(&out, c).map_or(&[], Vec::as_slice);

    // Names, ports and count.
    for (i, ctr) in containers.iter().enumerate() {
        let name = wiring::display_name(ctr, c, i);
        let reserved: &[&str] = match opts.redirect {
            Redirect::Ecs => &[proxy_name],
            Redirect::ProxyInit => &[proxy_name, proxy::PROXY_INIT_CONTAINER],
        };
        if reserved.contains(&name.as_str()) {
            return Err(TransformError::invalid(
                loc.with_container(&name)
                    .with_field(format!("{cd_key}[{i}].{}", c.k("name"))),
                format!(
                    "an application container is already named '{name}', the name of the container inject adds. Fix: rename the application container"
                ),
            ));
        }
        if let Some(pms) = ctr.get(c.k("portMappings")).and_then(Value::as_array) {
            for (j, pm) in pms.iter().enumerate() {
                for field in ["containerPort", "hostPort"] {
                    let Some(p) = pm.get(c.k(field)).and_then(numbers::int) else {
                        continue;
                    };
                    if ports.iter().any(|&r| i64::from(r) == p) {
                        return Err(TransformError::invalid(
                            loc.with_container(&name).with_field(format!(
                                "{}[{j}].{}",
                                c.k("portMappings"),
                                c.k(field)
                            )),
                            format!(
                                "port {p} is taken by the proxy (ingress {}, egress {}, admin {}). Fix: move the application off port {p}, or choose other proxy ports with --ingress-port/--egress-port/--admin-port",
                                ports[0], ports[1], ports[2]
                            ),
                        ));
                    }
                }
            }
        }
    }
    // App containers: those that do not bypass the proxy.
    let uid = opts.ignored_uid.to_string();
    let gid = opts
        .ignored_gid
        .map(|g| g.to_string())
        .or_else(|| old_gid.as_ref().and_then(Value::as_str).map(str::to_string));

    // The X-Ray daemon: the task's own, or one to add.
    let daemon = opts.xray.then(|| {
        xray::plan(
            containers,
            c,
            |ctr| bypasses_proxy(ctr, c, &uid, gid.as_deref()),
            loc,
            &mut notes,
        )
    });
    let add_daemon = daemon.as_ref().is_some_and(|d| d.added);

    let mut added_names = vec!["the proxy"];
    if opts.redirect == Redirect::ProxyInit {
        added_names.push("proxy-init");
    }
    if add_daemon {
        added_names.push("the X-Ray daemon");
    }
    let added = added_names.len();
    if containers.len() + added > MAX_CONTAINERS {
        return Err(TransformError::invalid(
            loc.with_field(&cd_key),
            format!(
                "the task would have {} containers with {}, more than the ECS limit of {MAX_CONTAINERS}. Fix: move a sidecar into another task, or merge containers",
                containers.len() + added,
                added_names.join(" and ")
            ),
        ));
    }
    let app_idx: Vec<usize> = containers
        .iter()
        .enumerate()
        .filter(|(_, ctr)| {
            ctr.is_object() && !is_intrinsic(ctr) && !bypasses_proxy(ctr, c, &uid, gid.as_deref())
        })
        .map(|(i, _)| i)
        .collect();
    for (i, ctr) in containers.iter().enumerate() {
        if is_intrinsic(ctr) {
            notes.push(Note::new(
                &loc.with_field(format!("{cd_key}[{i}]")),
                "this container is an intrinsic function: its ports are not in AppPorts and it gets no dependsOn on the proxy; add them by hand if it is an application container",
            ));
        }
    }

    // Redirect settings.
    let app_ports: Option<Value> = match &opts.app_ports {
        Some(p) if p.is_empty() => None,
        Some(p) => {
            if p.len() > MAX_PORTS {
                return Err(TransformError::usage(
                    loc.clone(),
                    format!(
                        "--app-ports lists {} ports; only the first {MAX_PORTS} take effect (iptables multiport limit)",
                        p.len()
                    ),
                ));
            }
            Some(csv(p))
        }
        None => {
            let mut lits: Vec<i64> = Vec::new();
            let mut parts: Vec<Value> = Vec::new();
            for &i in &app_idx {
                let (ps, _) = tcp_ports(&containers[i], c);
                for p in ps {
                    match p.as_i64() {
                        Some(n) if !lits.contains(&n) => {
                            lits.push(n);
                            parts.push(p);
                        }
                        Some(_) => {}
                        None => parts.push(p),
                    }
                }
            }
            if parts.len() > MAX_PORTS {
                return Err(TransformError::invalid(
                    loc.with_field(&cd_key),
                    format!(
                        "the app containers expose {} TCP ports; only the first {MAX_PORTS} can be redirected (iptables multiport limit). Fix: pass the ports that take mesh traffic with --app-ports",
                        parts.len()
                    ),
                ));
            }
            if parts.is_empty() {
                old_app_ports
            } else if parts.iter().all(|p| p.is_i64()) {
                Some(csv(&lits))
            } else if c.is_cfn() {
                let strs = parts
                    .into_iter()
                    .map(|p| {
                        if let Some(n) = p.as_i64() {
                            Value::from(n.to_string())
                        } else {
                            p
                        }
                    })
                    .collect();
                Some(c.join(",", strs))
            } else {
                None
            }
        }
    };
    if app_ports.is_none() {
        notes.push(Note::new(loc, "no TCP container ports found in the app containers: the proxy gets egress only (no ProxyIngressPort/AppPorts); pass --app-ports to redirect ingress"));
    }
    let settings = proxy::RedirectSettings {
        ignored_uid: Value::from(opts.ignored_uid.to_string()),
        ignored_gid: opts
            .ignored_gid
            .map(|g| Value::from(g.to_string()))
            .or(old_gid),
        ingress_port: app_ports
            .as_ref()
            .map(|_| Value::from(opts.ingress_port.to_string())),
        egress_port: Value::from(opts.egress_port.to_string()),
        app_ports: app_ports.clone(),
        egress_ignored_ips: opts
            .egress_ignored_ips
            .as_ref()
            .map(|ips| Value::from(ips.join(",")))
            .or(old_ips)
            .unwrap_or_else(|| Value::from(DEFAULT_EGRESS_IGNORED_IPS)),
        egress_ignored_ports: match &opts.egress_ignored_ports {
            Some(p) if p.is_empty() => None,
            Some(p) => {
                if p.len() > MAX_PORTS {
                    return Err(TransformError::usage(
                        loc.clone(),
                        format!(
                            "--egress-ignored-ports lists {} ports; only the first {MAX_PORTS} take effect (iptables multiport limit)",
                            p.len()
                        ),
                    ));
                }
                Some(csv(p))
            }
            None => old_ignored_ports,
        },
    };

    // Fargate size.
    let (mut extra_cpu, mut extra_mem) = match opts.proxy {
        ProxyKind::Agent => (proxy::AGENT_CPU, proxy::AGENT_MEMORY_RESERVATION),
        ProxyKind::Envoy => (proxy::ENVOY_CPU, proxy::ENVOY_MEMORY_RESERVATION),
    };
    let mut sized = "the proxy";
    if add_daemon {
        extra_cpu += xray::XRAY_CPU;
        extra_mem += xray::XRAY_MEMORY_RESERVATION;
        sized = "the proxy and the X-Ray daemon";
    }
    let mut labels = resize::fit(
        &mut out,
        c,
        opts,
        resize::Extra {
            cpu: extra_cpu as u64,
            memory: extra_mem as u64,
            what: sized,
        },
        loc,
        &mut notes,
    )?;

    // The container list, moved out of `out` (its slot stays, so it is put back in place).
    let mut containers: Vec<Value> = match out.get_mut(&cd_key) {
        Some(Value::Array(list)) => std::mem::take(list),
        _ => Vec::new(),
    };

    // dependsOn from every app container.
    let dep_key = c.k("dependsOn");
    let mut created = Vec::new();
    let mut wants = vec![(proxy_name, "HEALTHY")];
    if opts.redirect == Redirect::ProxyInit {
        wants.push((proxy::PROXY_INIT_CONTAINER, "SUCCESS"));
    }
    for &i in &app_idx {
        let name = wiring::display_name(&containers[i], c, i);
        let Some(obj) = containers[i].as_object_mut() else {
            continue;
        };
        if !obj.contains_key(&dep_key) {
            obj.insert(dep_key.clone(), Value::Array(Vec::new()));
            created.push(name.clone());
        }
        let Some(Value::Array(deps)) = obj.get_mut(&dep_key) else {
            notes.push(Note::new(
                &loc.with_container(&name).with_field(&dep_key),
                "dependsOn is not a literal list; add the dependency on the proxy by hand",
            ));
            continue;
        };
        for (target_name, condition) in &wants {
            deps.push(proxy::obj(
                c,
                vec![
                    ("containerName", Value::from(*target_name)),
                    ("condition", Value::from(*condition)),
                ],
            ));
        }
    }
    if !created.is_empty() {
        labels.push((CREATED_DEPENDS_ON_LABEL.to_string(), created.join(",")));
    }

    // The new containers.
    // The proxy logs like the app, except through FireLens: the log router may itself wait for
    // the proxy, and a proxy logging through it would wait for the router (a start-up cycle).
    let log_configuration = app_idx
        .iter()
        .filter_map(|&i| containers[i].get(c.k("logConfiguration")))
        .find(|l| l.get(c.k("logDriver")).and_then(Value::as_str) != Some("awsfirelens"))
        .cloned();
    let mut proxy_ctr = proxy::proxy_container(
        c,
        opts,
        &id.resource_arn,
        id.config.as_ref(),
        log_configuration.as_ref(),
        &labels,
    );
    if let Some(d) = &daemon {
        xray::wire_proxy(&mut proxy_ctr, c, opts, d);
    }
    let at = stripped
        .proxy_index
        .unwrap_or(containers.len())
        .min(containers.len());
    containers.insert(at, proxy_ctr);
    let mut next = at + 1;
    match opts.redirect {
        Redirect::ProxyInit => {
            containers.insert(
                next,
                proxy::proxy_init_container(c, opts, &settings, log_configuration.as_ref()),
            );
            next += 1;
        }
        Redirect::Ecs => {
            let pc = proxy::proxy_configuration(c, opts, &settings);
            let key = c.k("proxyConfiguration");
            let idx = stripped
                .proxy_config_index
                .unwrap_or(out.len())
                .min(out.len());
            out.shift_insert(idx, key, pc);
        }
    }
    if add_daemon {
        containers.insert(
            next,
            xray::daemon_container(c, opts, log_configuration.as_ref()),
        );
    }
    out.insert(cd_key, Value::Array(containers));
    if opts.proxy == ProxyKind::Envoy {
        notes.push(Note::new(loc, "--proxy envoy: the App Mesh Envoy image takes its routes from the App Mesh control plane, which AWS discontinued on 2026-09-30; use the default --proxy agent to run the mesh with taskmesh-agent"));
    }
    Ok((out, notes))
}
