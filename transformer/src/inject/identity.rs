//! Which virtual node and mesh the task is, and where the agent reads its mesh document.
//! Order: per-resource `Metadata.taskmesh` settings, then the options (CLI flags), then the
//! existing wiring (a previous injection, or the App Mesh Envoy's `APPMESH_RESOURCE_ARN` /
//! `APPMESH_VIRTUAL_NODE_NAME`, kept verbatim — even when it is an intrinsic — so a migrated task
//! keeps its identity), then the node defaults to the literal family (CloudFormation: `Family`,
//! else the logical id). A missing mesh, or a missing config URI for the agent, is a usage error.

use serde_json::Value;

use crate::error::{Location, TransformError};
use crate::options::{InjectOptions, ProxyKind};

/// Per-resource settings from a template's `Metadata.taskmesh`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub virtual_node: Option<String>,
    pub mesh: Option<String>,
    pub config: Option<String>,
}

/// What the existing definition says about its identity.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// `APPMESH_RESOURCE_ARN` (or `APPMESH_VIRTUAL_NODE_NAME`) of the existing proxy.
    pub resource_arn: Option<Value>,
    /// `TASKMESH_CONFIG` of a previously injected agent.
    pub config: Option<Value>,
}

/// The resolved identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The value of `APPMESH_RESOURCE_ARN`: `mesh/<mesh>/virtualNode/<node>`, or the existing
    /// value (a full ARN or an intrinsic) when nothing overrides it.
    pub resource_arn: Value,
    /// The value of `TASKMESH_CONFIG` (agent only).
    pub config: Option<Value>,
    /// The given mesh name that was not applied because the existing identity is an intrinsic
    /// function (it cannot be split into mesh and node); the caller notes it.
    pub ignored_mesh: Option<String>,
}

/// `(mesh, node)` from `mesh/<mesh>/virtualNode/<node>` or a full App Mesh ARN.
pub fn parse_resource(s: &str) -> Option<(String, String)> {
    let start = s.find("mesh/")?;
    let parts: Vec<&str> = s[start..].split('/').collect();
    match parts.as_slice() {
        ["mesh", mesh, "virtualNode", node] if !mesh.is_empty() && !node.is_empty() => {
            Some((mesh.to_string(), node.to_string()))
        }
        _ => None,
    }
}

/// Resolve node, mesh and config for one task definition.
pub fn resolve(
    opts: &InjectOptions,
    overrides: &Overrides,
    hints: &Hints,
    default_node: Option<&str>,
    loc: &Location,
) -> Result<Identity, TransformError> {
    let node_given = overrides
        .virtual_node
        .clone()
        .or_else(|| opts.virtual_node.clone());
    let mesh_given = overrides.mesh.clone().or_else(|| opts.mesh.clone());
    let parsed = hints
        .resource_arn
        .as_ref()
        .and_then(Value::as_str)
        .and_then(parse_resource);

    let mut kept_opaque: Option<String> = None;
    let opaque = hints
        .resource_arn
        .as_ref()
        .filter(|v| parsed.is_none() && !v.is_string());
    let resource_arn = match (&node_given, &mesh_given, &hints.resource_arn) {
        (None, None, Some(existing)) => existing.clone(),
        // An intrinsic identity cannot be split: keep it whole unless the node is given too.
        (None, Some(mesh), Some(_)) if opaque.is_some() => {
            kept_opaque = Some(mesh.clone());
            opaque.cloned().unwrap_or_default()
        }
        _ => {
            let node = node_given
                .or_else(|| parsed.as_ref().map(|(_, n)| n.clone()))
                .or_else(|| default_node.map(str::to_string))
                .ok_or_else(|| {
                    TransformError::usage(
                        loc.with_field("family"),
                        "no virtual node name: the family is not a literal string; pass --virtual-node NAME (or set Metadata.taskmesh.virtualNode on the resource)",
                    )
                })?;
            let mesh = mesh_given.or_else(|| parsed.as_ref().map(|(m, _)| m.clone())).ok_or_else(|| {
                TransformError::usage(
                    loc.clone(),
                    format!(
                        "no mesh name for virtual node '{node}': pass --mesh NAME (or set Metadata.taskmesh.mesh on the resource)"
                    ),
                )
            })?;
            Value::String(format!("mesh/{mesh}/virtualNode/{node}"))
        }
    };

    let config = match opts.proxy {
        ProxyKind::Envoy => None,
        ProxyKind::Agent => Some(
            overrides
                .config
                .clone()
                .or_else(|| opts.config.clone())
                .map(Value::String)
                .or_else(|| hints.config.clone())
                .ok_or_else(|| {
                    TransformError::usage(
                        loc.clone(),
                        "no mesh document for the agent: pass --config URI (file:///path, s3://bucket/key, http(s)://…, or appmesh:), or set Metadata.taskmesh.config on the resource",
                    )
                })?,
        ),
    };
    Ok(Identity {
        resource_arn,
        config,
        ignored_mesh: kept_opaque,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_short_and_full_resource_names() {
        assert_eq!(
            parse_resource("mesh/apps/virtualNode/serviceB"),
            Some(("apps".into(), "serviceB".into()))
        );
        assert_eq!(
            parse_resource("arn:aws:appmesh:us-west-2:111122223333:mesh/apps/virtualNode/serviceB"),
            Some(("apps".into(), "serviceB".into()))
        );
        assert_eq!(parse_resource("mesh/apps/virtualGateway/gw"), None);
        assert_eq!(parse_resource("serviceB"), None);
    }

    #[test]
    fn precedence_metadata_then_options_then_wiring_then_family() {
        let loc = Location::file("t.json");
        let hints = Hints {
            resource_arn: Some(json!("mesh/old/virtualNode/oldnode")),
            config: None,
        };
        let mut opts = InjectOptions {
            config: Some("s3://b/k".into()),
            ..InjectOptions::default()
        };
        // nothing given: existing wiring kept verbatim
        let id = resolve(&opts, &Overrides::default(), &hints, Some("fam"), &loc).unwrap();
        assert_eq!(id.resource_arn, json!("mesh/old/virtualNode/oldnode"));
        // mesh given: node from wiring
        opts.mesh = Some("new".into());
        let id = resolve(&opts, &Overrides::default(), &hints, Some("fam"), &loc).unwrap();
        assert_eq!(id.resource_arn, json!("mesh/new/virtualNode/oldnode"));
        // metadata wins over options
        let ov = Overrides {
            virtual_node: Some("meta".into()),
            mesh: Some("m2".into()),
            config: None,
        };
        let id = resolve(&opts, &ov, &hints, Some("fam"), &loc).unwrap();
        assert_eq!(id.resource_arn, json!("mesh/m2/virtualNode/meta"));
        // no wiring: family
        let id = resolve(
            &opts,
            &Overrides::default(),
            &Hints::default(),
            Some("fam"),
            &loc,
        )
        .unwrap();
        assert_eq!(id.resource_arn, json!("mesh/new/virtualNode/fam"));
        assert_eq!(id.config, Some(json!("s3://b/k")));
    }

    #[test]
    fn missing_mesh_and_config_are_usage_errors() {
        let loc = Location::file("t.json");
        let opts = InjectOptions {
            config: Some("s3://b/k".into()),
            ..InjectOptions::default()
        };
        let err = resolve(
            &opts,
            &Overrides::default(),
            &Hints::default(),
            Some("fam"),
            &loc,
        )
        .unwrap_err();
        assert!(err.to_string().contains("--mesh"), "{err}");
        let opts = InjectOptions {
            mesh: Some("m".into()),
            ..InjectOptions::default()
        };
        let err = resolve(
            &opts,
            &Overrides::default(),
            &Hints::default(),
            Some("fam"),
            &loc,
        )
        .unwrap_err();
        assert!(err.to_string().contains("--config"), "{err}");
        let opts = InjectOptions {
            mesh: Some("m".into()),
            proxy: ProxyKind::Envoy,
            ..InjectOptions::default()
        };
        assert!(
            resolve(
                &opts,
                &Overrides::default(),
                &Hints::default(),
                Some("fam"),
                &loc
            )
            .is_ok()
        );
    }
}
