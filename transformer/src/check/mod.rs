//! Check: ECS and mesh rules over one task definition, reported as [`Finding`]s (the CLI
//! prints them on stderr and exits 1 when there are any). It never changes anything.
//!
//! Rules: at most 10 containers; meshed at all (proxy + redirect); legacy App Mesh wiring
//! (its control plane is gone); proxyConfiguration needs awsvpc and Linux, type APPMESH, a
//! containerName naming a container, every property with a string value, IgnoredUID equal to
//! the proxy's user, at most 15 ports per list; the proxy is essential with a real health check
//! within ECS ranges; every app container waits for the proxy (HEALTHY); SUCCESS/COMPLETE only
//! on non-essential containers; no NET_ADMIN on Fargate; app ports clear of the proxy ports; a
//! valid Fargate task size that holds all containers; a proxy that traces to X-Ray
//! (`ENABLE_ENVOY_XRAY_TRACING`) has an X-Ray daemon in the task (or an address elsewhere).

use serde_json::{Map, Value};

use crate::error::{Finding, Location};
use crate::inject::{MAX_CONTAINERS, MAX_PORTS, resize, xray};
use crate::taskdef::naming::is_intrinsic;
use crate::taskdef::wiring::{self, Role};
use crate::taskdef::{Casing, fargate, numbers};

fn essential(ctr: &Value, c: Casing) -> bool {
    match ctr.get(c.k("essential")) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(_) => true,
    }
}

fn check_health(ctr: &Value, c: Casing, loc: &Location, out: &mut Vec<Finding>) {
    let hk = c.k("healthCheck");
    let Some(hc) = ctr.get(&hk) else {
        out.push(Finding::error(&loc.with_field(&hk), "the proxy has no health check, so containers cannot wait for it with condition HEALTHY. Fix: run taskmesh inject (it adds `taskmesh-agent health`, or the stock Envoy check for --proxy envoy)"));
        return;
    };
    if is_intrinsic(hc) {
        return;
    }
    let cmd_key = c.k("command");
    match hc.get(&cmd_key).and_then(Value::as_array) {
        Some(cmd) => {
            let first = cmd.first().and_then(Value::as_str).unwrap_or("");
            if first != "CMD" && first != "CMD-SHELL" && !cmd.first().is_some_and(is_intrinsic) {
                out.push(Finding::error(
                    &loc.with_field(format!("{hk}.{cmd_key}[0]")),
                    format!(
                        "health check command must start with CMD or CMD-SHELL, found {:?}",
                        first
                    ),
                ));
            }
            let rest: Vec<&str> = cmd.iter().skip(1).filter_map(Value::as_str).collect();
            let joined = rest.join(" ");
            let trivial = joined.trim().is_empty()
                || ["echo", "true", "exit 0", ":"]
                    .iter()
                    .any(|t| joined.trim() == *t || joined.trim().starts_with(&format!("{t} ")));
            if trivial {
                out.push(Finding::error(&loc.with_field(format!("{hk}.{cmd_key}")), format!("health check `{joined}` always passes, so HEALTHY says nothing about the proxy. Fix: `curl -s http://localhost:9901/server_info | grep state | grep -q LIVE` (Envoy) or `taskmesh-agent health`")));
            }
        }
        None => out.push(Finding::error(
            &loc.with_field(format!("{hk}.{cmd_key}")),
            "health check has no command list",
        )),
    }
    for (field, lo, hi) in [
        ("interval", 5, 300),
        ("timeout", 2, 60),
        ("retries", 1, 10),
        ("startPeriod", 0, 300),
    ] {
        if let Some(v) = hc.get(c.k(field)).and_then(numbers::int)
            && (v < lo || v > hi)
        {
            out.push(Finding::error(
                &loc.with_field(format!("{hk}.{}", c.k(field))),
                format!("{field} {v} is outside the ECS range {lo}–{hi}"),
            ));
        }
    }
}

/// Check one task definition in its own casing.
pub fn check_td(td: &Map<String, Value>, c: Casing, loc: &Location) -> Vec<Finding> {
    let mut out = Vec::new();
    let cd_key = c.k("containerDefinitions");
    let Some(list) = wiring::containers(td, c) else {
        out.push(Finding::error(
            &loc.with_field(&cd_key),
            format!("{cd_key} is missing or not a literal list"),
        ));
        return out;
    };
    let roles = wiring::roles(td, c);
    let fargate = resize::is_fargate(td, c);
    if list.len() > MAX_CONTAINERS {
        out.push(Finding::error(
            &loc.with_field(&cd_key),
            format!(
                "{} containers; ECS allows at most {MAX_CONTAINERS} per task definition",
                list.len()
            ),
        ));
    }
    let pc_key = c.k("proxyConfiguration");
    let pc = td.get(&pc_key).filter(|v| !is_intrinsic(v));
    let proxy_init_present = list.iter().zip(&roles).any(|(ctr, r)| {
        *r == Role::LegacyProxyInit || (*r == Role::Injected && wiring::has_net_admin(ctr, c))
    });
    let proxy_idx = match wiring::proxy_config_container(td, c) {
        Some(name) => list
            .iter()
            .position(|ctr| wiring::str_field(ctr, c, "name") == Some(name)),
        None => list.iter().zip(&roles).position(|(ctr, r)| {
            matches!(r, Role::Injected | Role::LegacyProxy)
                && !wiring::has_net_admin(ctr, c)
                && !wiring::is_xray_daemon(ctr, c)
        }),
    };

    if roles.contains(&Role::Gateway) && proxy_idx.is_none() {
        return out;
    }
    if pc.is_none() && proxy_idx.is_none() && !td.contains_key(&pc_key) {
        out.push(Finding::warning(
            loc,
            "not meshed: no proxy container and no proxyConfiguration. Fix: taskmesh inject",
        ));
    }
    if pc.is_none() && proxy_idx.is_some() && !proxy_init_present {
        out.push(Finding::error(&loc.with_field(&pc_key), "a proxy container is present but nothing redirects traffic to it (no proxyConfiguration and no proxy-init container). Fix: taskmesh inject"));
    }
    for (i, (ctr, role)) in list.iter().zip(&roles).enumerate() {
        let cl = loc.with_container(wiring::display_name(ctr, c, i));
        match role {
            Role::LegacyProxy => out.push(Finding::warning(&cl, "App Mesh-era proxy: App Mesh's control plane was discontinued on 2026-09-30, so an App Mesh Envoy gets no routes. Fix: taskmesh inject replaces it with taskmesh-agent (keeping its node identity)")),
            Role::LegacyProxyInit => out.push(Finding::warning(&cl, "preview-era App Mesh proxyinit (aws-appmesh-proxy-route-manager) container. Fix: taskmesh inject replaces it")),
            _ => {}
        }
        if fargate && wiring::has_net_admin(ctr, c) {
            out.push(Finding::error(&cl.with_field(format!("{}.{}.{}", c.k("linuxParameters"), c.k("capabilities"), c.k("add"))), "NET_ADMIN on Fargate: Fargate only allows adding SYS_PTRACE. Fix: use proxyConfiguration (taskmesh inject --redirect ecs)"));
        }
        if (wiring::has_net_admin(ctr, c) && matches!(role, Role::Injected | Role::LegacyProxyInit))
            && essential(ctr, c)
        {
            out.push(Finding::error(&cl.with_field(c.k("essential")), "the proxy-init container exits after installing the rules, so it must be essential: false"));
        }
    }

    // proxyConfiguration rules
    let mut ignored_uid: Option<String> = None;
    let mut ignored_gid: Option<String> = None;
    let mut redirect_ports: Vec<i64> = Vec::new();
    if let Some(pc) = pc {
        let nm_key = c.k("networkMode");
        match td.get(&nm_key) {
            Some(Value::String(m)) if m == "awsvpc" => {}
            Some(v) if is_intrinsic(v) => {}
            other => out.push(Finding::error(&loc.with_field(&nm_key), format!("proxyConfiguration needs networkMode awsvpc, found {} (ECS: \"APPMESH proxy configuration is only supported in networkMode=awsvpc\")", other.map_or("nothing (bridge by default)".to_string(), |v| v.to_string())))),
        }
        let rp = td
            .get(&c.k("runtimePlatform"))
            .and_then(|r| r.get(c.k("operatingSystemFamily")))
            .and_then(Value::as_str);
        if rp.is_some_and(|os| os.to_ascii_uppercase().starts_with("WINDOWS")) {
            out.push(Finding::error(
                &loc.with_field(c.k("runtimePlatform")),
                "proxyConfiguration is not supported for Windows containers",
            ));
        }
        if let Some(t) = pc.get(c.k("type")).and_then(Value::as_str)
            && t != "APPMESH"
        {
            out.push(Finding::error(
                &loc.with_field(format!("{pc_key}.{}", c.k("type"))),
                format!("type must be APPMESH, found {t}"),
            ));
        }
        if let Some(name) = wiring::proxy_config_container(td, c)
            && proxy_idx.is_none()
        {
            out.push(Finding::error(
                &loc.with_field(format!("{pc_key}.{}", c.k("containerName"))),
                format!("names container '{name}', which does not exist"),
            ));
        }
        let props_key = c.k("properties");
        if let Some(props) = pc.get(&props_key).and_then(Value::as_array) {
            for (j, p) in props.iter().enumerate() {
                let pl = loc.with_field(format!("{pc_key}.{props_key}[{j}]"));
                let name = p.get(c.k("name")).and_then(Value::as_str).unwrap_or("");
                match p.get(c.k("value")) {
                    None | Some(Value::Null) => out.push(Finding::error(&pl, format!("property {name} has no value (ECS: \"ProxyConfiguration properties value cannot be null\"); use \"\" for an empty list"))),
                    Some(Value::String(s)) => {
                        if name == "IgnoredUID" {
                            ignored_uid = Some(s.clone());
                        }
                        if name == "IgnoredGID" && !s.is_empty() {
                            ignored_gid = Some(s.clone());
                        }
                        let items: Vec<&str> = s.split(',').filter(|x| !x.trim().is_empty()).collect();
                        if matches!(name, "AppPorts" | "EgressIgnoredPorts") && items.len() > MAX_PORTS {
                            out.push(Finding::warning(&pl, format!("{name} lists {} ports; only the first {MAX_PORTS} take effect", items.len())));
                        }
                        if matches!(name, "ProxyIngressPort" | "ProxyEgressPort") {
                            redirect_ports.extend(items.iter().filter_map(|x| x.trim().parse::<i64>().ok()));
                        }
                    }
                    Some(v) if is_intrinsic(v) => {}
                    Some(v) => out.push(Finding::error(&pl, format!("property {name} value {v} must be a string"))),
                }
            }
            let has = |n: &str| {
                props
                    .iter()
                    .any(|p| p.get(c.k("name")).and_then(Value::as_str) == Some(n))
            };
            if !has("IgnoredUID") && !has("IgnoredGID") {
                out.push(Finding::error(&loc.with_field(format!("{pc_key}.{props_key}")), "neither IgnoredUID nor IgnoredGID is set: the proxy's own traffic would loop back into it"));
            }
        }
    }

    // The proxy container.
    if let Some(pi) = proxy_idx {
        let proxy = &list[pi];
        let pname = wiring::display_name(proxy, c, pi);
        let pl = loc.with_container(&pname);
        if !essential(proxy, c) {
            out.push(Finding::error(
                &pl.with_field(c.k("essential")),
                "the proxy must be essential: without it the task has no network",
            ));
        }
        check_health(proxy, c, &pl, &mut out);
        if xray::traces(proxy, c)
            && !xray::remote_daemon(proxy, c)
            && !list.iter().any(|x| wiring::is_xray_daemon(x, c))
        {
            out.push(Finding::warning(
                &pl.with_field(c.k("environment")),
                format!(
                    "{} is on but the task runs no X-Ray daemon, so the proxy's segments go to 127.0.0.1 and are lost. Fix: taskmesh inject --xray (adds the daemon sidecar), or set {} to a daemon elsewhere",
                    xray::TRACING_ENV,
                    xray::ADDRESS_ENV
                ),
            ));
        }
        if let Some(uid) = &ignored_uid {
            let user = proxy.get(c.k("user"));
            match user {
                Some(Value::String(u)) if u.split(':').next() == Some(uid.as_str()) => {}
                Some(v) if is_intrinsic(v) => {}
                Some(Value::String(u)) => out.push(Finding::error(&pl.with_field(c.k("user")), format!("user '{u}' is not the IgnoredUID {uid}: the proxy's own outbound traffic is redirected back into itself. Fix: set user to \"{uid}\""))),
                _ => out.push(Finding::error(&pl.with_field(c.k("user")), format!("no user, so the proxy runs as the image's user, not the IgnoredUID {uid}: its own outbound traffic is redirected back into itself. Fix: set user to \"{uid}\""))),
            }
        }
        // Every app container waits for the proxy.
        let dep_key = c.k("dependsOn");
        for (i, (ctr, role)) in list.iter().zip(&roles).enumerate() {
            if i == pi || *role != Role::App || is_intrinsic(ctr) {
                continue;
            }
            let user = ctr.get(c.k("user")).and_then(Value::as_str).unwrap_or("");
            let (u, g) = match user.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (user, None),
            };
            let runs_as_ignored =
                ignored_uid.as_deref() == Some(u) || (g.is_some() && ignored_gid.as_deref() == g);
            if runs_as_ignored {
                continue;
            }
            let name = wiring::display_name(ctr, c, i);
            let waits = ctr
                .get(&dep_key)
                .and_then(Value::as_array)
                .is_some_and(|deps| {
                    deps.iter().any(|d| {
                        d.get(c.k("containerName")).and_then(Value::as_str) == Some(pname.as_str())
                            && d.get(c.k("condition")).and_then(Value::as_str) == Some("HEALTHY")
                    })
                });
            if !waits {
                out.push(Finding::error(&loc.with_container(&name).with_field(&dep_key), format!("does not wait for the proxy: add {{containerName: {pname}, condition: HEALTHY}}, or the app starts before the proxy and its first connections fail")));
            }
        }
    }

    // dependsOn conditions, and port clashes.
    let names_essential: Vec<(Option<&str>, bool)> = list
        .iter()
        .map(|x| (wiring::str_field(x, c, "name"), essential(x, c)))
        .collect();
    let proxy_ports: Vec<i64> = if redirect_ports.is_empty() {
        Vec::new()
    } else {
        redirect_ports
    };
    for (i, (ctr, role)) in list.iter().zip(&roles).enumerate() {
        let name = wiring::display_name(ctr, c, i);
        if let Some(deps) = ctr.get(c.k("dependsOn")).and_then(Value::as_array) {
            for (j, d) in deps.iter().enumerate() {
                let target = d.get(c.k("containerName")).and_then(Value::as_str);
                let cond = d
                    .get(c.k("condition"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let dl = loc
                    .with_container(&name)
                    .with_field(format!("{}[{j}]", c.k("dependsOn")));
                match names_essential.iter().find(|(n, _)| *n == target) {
                    None if target.is_some() => out.push(Finding::error(&dl, format!("depends on container '{}', which does not exist", target.unwrap_or_default()))),
                    Some((_, true)) if matches!(cond, "SUCCESS" | "COMPLETE") => out.push(Finding::error(&dl, format!("condition {cond} on essential container '{}': ECS refuses it; that container must be essential: false", target.unwrap_or_default()))),
                    _ => {}
                }
            }
        }
        if *role == Role::App
            && Some(i) != proxy_idx
            && let Some(pms) = ctr.get(c.k("portMappings")).and_then(Value::as_array)
        {
            for (j, pm) in pms.iter().enumerate() {
                if let Some(p) = pm.get(c.k("containerPort")).and_then(numbers::int)
                    && proxy_ports.contains(&p)
                {
                    out.push(Finding::error(
                        &loc.with_container(&name).with_field(format!(
                            "{}[{j}].{}",
                            c.k("portMappings"),
                            c.k("containerPort")
                        )),
                        format!("port {p} is a proxy listener port"),
                    ));
                }
            }
        }
    }

    // Without task-level memory, ECS needs a memory setting on every container.
    if !td.contains_key(&c.k("memory")) {
        for (i, ctr) in list.iter().enumerate() {
            if ctr.is_object()
                && !is_intrinsic(ctr)
                && ctr.get(c.k("memory")).is_none()
                && ctr.get(c.k("memoryReservation")).is_none()
            {
                out.push(Finding::error(
                    &loc.with_container(wiring::display_name(ctr, c, i)).with_field(c.k("memory")),
                    format!("the task has no task-level {} and this container sets neither {} nor {}; ECS refuses it (\"At least one of 'memory' or 'memoryReservation' must be specified\")", c.k("memory"), c.k("memory"), c.k("memoryReservation")),
                ));
            }
        }
    }

    // Fargate size.
    if fargate {
        let (ck, mk) = (c.k("cpu"), c.k("memory"));
        match (td.get(&ck), td.get(&mk)) {
            (Some(cv), Some(mv)) => {
                if let (Some(cpu), Some(mem)) = (numbers::task_cpu(cv), numbers::task_memory(mv)) {
                    if !fargate::is_valid(cpu, mem) {
                        out.push(Finding::error(&loc.with_field(format!("{ck}/{mk}")), format!("{cpu} CPU units / {mem} MiB is not a valid Fargate task size (valid memory for {cpu}: {:?})", fargate::memory_options(cpu))));
                    }
                    if let Some((sc, sm)) = resize::container_sums(td, c)
                        && (sc > u64::from(cpu) || sm > u64::from(mem))
                    {
                        out.push(Finding::error(&loc.with_field(format!("{ck}/{mk}")), format!("the containers need {sc} CPU units / {sm} MiB, more than the task's {cpu} / {mem}")));
                    }
                }
            }
            _ => out.push(Finding::error(
                &loc.with_field(format!("{ck}/{mk}")),
                "Fargate requires task-level cpu and memory",
            )),
        }
    }
    out
}
