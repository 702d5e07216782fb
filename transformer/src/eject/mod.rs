//! Eject: remove everything inject added — the injected proxy and proxy-init containers (docker
//! label `taskmesh.injected`), `proxyConfiguration`, the `dependsOn` entries pointing at them, and a
//! Fargate resize (undone from the labels `taskmesh.original-cpu` / `taskmesh.original-memory`) —
//! and legacy App Mesh wiring (Envoy sidecars, preview `proxyinit`, any proxy named by
//! `proxyConfiguration`), as a migration path off App Mesh. `eject(inject(x))` equals `x`.
//! Inject starts from the same stripping, which makes inject idempotent.

use serde_json::{Map, Value};

use crate::error::Location;
use crate::taskdef::Casing;
use crate::taskdef::naming::is_intrinsic;
use crate::taskdef::wiring::{
    self, ABSENT, CREATED_DEPENDS_ON_LABEL, ORIGINAL_CPU_LABEL, ORIGINAL_MEMORY_LABEL, Role,
};

/// A task definition with all proxy wiring removed, and where that wiring was.
#[derive(Debug, Clone)]
pub struct Stripped {
    pub td: Map<String, Value>,
    /// Index (among task definition keys) where `proxyConfiguration` was.
    pub proxy_config_index: Option<usize>,
    /// Index (in the remaining container list) where the first removed proxy container was.
    pub proxy_index: Option<usize>,
    /// Names of the removed containers.
    pub removed: Vec<String>,
}

/// Remove injected and legacy proxy wiring from one task definition (in its own casing).
pub fn strip(td: &Map<String, Value>, c: Casing, _loc: &Location) -> Stripped {
    let key = c.k("containerDefinitions");
    // Every field but a literal container list, which is rebuilt below (no copy to throw away).
    let literal_list = wiring::containers(td, c).is_some();
    let mut out: Map<String, Value> = td
        .iter()
        .map(|(k, v)| {
            let v = if literal_list && *k == key {
                Value::Null
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let roles = wiring::roles(td, c);
    let mut removed = Vec::new();
    let mut proxy_index = None;
    let mut original_cpu = None;
    let mut original_memory = None;
    let mut created: Vec<String> = Vec::new();
    let mut any_injected = false;

    if let Some(list) = wiring::containers(td, c) {
        let mut kept = Vec::with_capacity(list.len());
        for (ctr, role) in list.iter().zip(&roles) {
            match role {
                Role::Injected | Role::LegacyProxy | Role::LegacyProxyInit => {
                    if proxy_index.is_none() {
                        proxy_index = Some(kept.len());
                    }
                    if let Some(name) = wiring::str_field(ctr, c, "name") {
                        removed.push(name.to_string());
                    }
                    if *role == Role::Injected {
                        any_injected = true;
                        original_cpu = original_cpu
                            .or(wiring::label(ctr, c, ORIGINAL_CPU_LABEL).map(str::to_string));
                        original_memory =
                            original_memory
                                .or(wiring::label(ctr, c, ORIGINAL_MEMORY_LABEL)
                                    .map(str::to_string));
                        if let Some(list) = wiring::label(ctr, c, CREATED_DEPENDS_ON_LABEL) {
                            created.extend(
                                list.split(',')
                                    .filter(|s| !s.is_empty())
                                    .map(str::to_string),
                            );
                        }
                    }
                }
                Role::Gateway | Role::App => kept.push(ctr.clone()),
            }
        }
        for (i, ctr) in kept.iter_mut().enumerate() {
            let name = Some(wiring::display_name(ctr, c, i));
            let dep_key = c.k("dependsOn");
            let Some(obj) = ctr.as_object_mut() else {
                continue;
            };
            let Some(Value::Array(deps)) = obj.get_mut(&dep_key) else {
                continue;
            };
            let before = deps.len();
            deps.retain(|d| {
                !d.get(c.k("containerName"))
                    .and_then(Value::as_str)
                    .is_some_and(|n| removed.iter().any(|r| r == n))
            });
            let dropped = before != deps.len();
            let was_created = name.as_ref().is_some_and(|n| created.contains(n));
            if deps.is_empty() && ((dropped && !any_injected) || was_created) {
                obj.shift_remove(&dep_key);
            }
        }
        out.insert(key, Value::Array(kept));
    }

    let pc_key = c.k("proxyConfiguration");
    let proxy_config_index = out.keys().position(|k| *k == pc_key);
    out.shift_remove(&pc_key);

    for (field, original) in [("cpu", original_cpu), ("memory", original_memory)] {
        let Some(original) = original else { continue };
        let k = c.k(field);
        if original == ABSENT {
            out.shift_remove(&k);
            continue;
        }
        let restored = match out.get(&k) {
            Some(Value::Number(_)) => original
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::String(original)),
            _ => Value::String(original),
        };
        if let Some(slot) = out.get_mut(&k).filter(|v| !is_intrinsic(v)) {
            *slot = restored;
        }
    }

    Stripped {
        td: out,
        proxy_config_index,
        proxy_index,
        removed,
    }
}
