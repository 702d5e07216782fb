//! CloudFormation templates: find every `AWS::ECS::TaskDefinition` (or those named by
//! `--resource`), read its `Metadata.taskmesh {virtualNode, mesh, config, skip}`, and run
//! inject / eject / check on its `Properties` in CloudFormation casing. Every other resource,
//! and every key around them, stays as it was.

use serde_json::{Map, Value};

use crate::check;
use crate::eject;
use crate::error::{Finding, Location, Note, TransformError};
use crate::inject::{self, Overrides, Target};
use crate::options::InjectOptions;
use crate::taskdef::Casing;

/// The CloudFormation type transformed here.
pub const TASK_DEFINITION_TYPE: &str = "AWS::ECS::TaskDefinition";

/// One selected task-definition resource.
struct Selected<'a> {
    id: &'a str,
    props: Option<&'a Map<String, Value>>,
    overrides: Overrides,
    skip: bool,
    named: bool,
    /// A malformed `Metadata.taskmesh` (refused by inject; eject and check ignore it).
    meta_error: Option<TransformError>,
}

fn resources<'a>(
    template: &'a Value,
    loc: &Location,
) -> Result<&'a Map<String, Value>, TransformError> {
    template
        .get("Resources")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            TransformError::invalid(
                loc.with_field("Resources"),
                "the template has no Resources object",
            )
        })
}

fn select<'a>(
    res: &'a Map<String, Value>,
    opts: &InjectOptions,
    loc: &Location,
) -> Result<Vec<Selected<'a>>, TransformError> {
    for name in &opts.resources {
        match res.get(name) {
            None => {
                return Err(TransformError::usage(
                    loc.with_resource(name),
                    format!("--resource {name}: no such resource in the template"),
                ));
            }
            Some(r) if r.get("Type").and_then(Value::as_str) != Some(TASK_DEFINITION_TYPE) => {
                return Err(TransformError::usage(
                    loc.with_resource(name).with_field("Type"),
                    format!("--resource {name}: it is not an {TASK_DEFINITION_TYPE}"),
                ));
            }
            Some(_) => {}
        }
    }
    let mut out = Vec::new();
    for (id, r) in res {
        if r.get("Type").and_then(Value::as_str) != Some(TASK_DEFINITION_TYPE) {
            continue;
        }
        let named = opts.resources.iter().any(|n| n == id);
        if !opts.resources.is_empty() && !named {
            continue;
        }
        let meta = r.get("Metadata").and_then(|m| m.get("taskmesh"));
        let s = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let meta_error = meta.and_then(|m| {
            let rloc = loc.with_resource(id);
            let Some(m) = m.as_object() else {
                return Some(TransformError::invalid(rloc.with_field("Metadata.taskmesh"), "Metadata.taskmesh must be a mapping {virtualNode, mesh, config, skip}"));
            };
            m.iter().find_map(|(k, v)| match (k.as_str(), v) {
                ("virtualNode" | "mesh" | "config", Value::String(_)) | ("skip", Value::Bool(_) | Value::String(_)) => None,
                ("virtualNode" | "mesh" | "config", _) => Some(TransformError::invalid(
                    rloc.with_field(format!("Metadata.taskmesh.{k}")),
                    format!("must be a literal string, found {v}"),
                )),
                ("skip", _) => Some(TransformError::invalid(rloc.with_field("Metadata.taskmesh.skip"), format!("must be true or false, found {v}"))),
                (other, _) => Some(TransformError::invalid(
                    rloc.with_field(format!("Metadata.taskmesh.{other}")),
                    format!("unknown setting '{other}'; the settings are virtualNode, mesh, config and skip"),
                )),
            })
        });
        let skip = meta.and_then(|m| m.get("skip")).is_some_and(|v| match v {
            Value::Bool(b) => *b,
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        });
        out.push(Selected {
            id,
            props: r.get("Properties").and_then(Value::as_object),
            overrides: Overrides {
                virtual_node: s("virtualNode"),
                mesh: s("mesh"),
                config: s("config"),
            },
            skip,
            named,
            meta_error,
        });
    }
    Ok(out)
}

fn replace_props(template: &mut Value, id: &str, props: Map<String, Value>) {
    if let Some(r) = template
        .get_mut("Resources")
        .and_then(|r| r.get_mut(id))
        .and_then(Value::as_object_mut)
    {
        r.insert("Properties".to_string(), Value::Object(props));
    }
}

/// Inject every selected task definition of a template.
pub fn inject_template(
    template: &Value,
    c: Casing,
    opts: &InjectOptions,
    loc: &Location,
) -> Result<(Value, Vec<Note>), TransformError> {
    let res = resources(template, loc)?;
    let mut out = template.clone();
    let mut notes = Vec::new();
    let selected = select(res, opts, loc)?;
    if selected.is_empty() {
        notes.push(Note::new(
            loc,
            format!("the template has no {TASK_DEFINITION_TYPE} resources; nothing to do"),
        ));
    }
    for sel in selected {
        let rloc = loc.with_resource(sel.id);
        if let Some(e) = sel.meta_error {
            return Err(e);
        }
        if sel.skip {
            notes.push(Note::new(&rloc, "skipped: Metadata.taskmesh.skip is true"));
            continue;
        }
        let props = sel.props.ok_or_else(|| {
            TransformError::invalid(
                rloc.with_field("Properties"),
                "the task definition has no literal Properties object",
            )
        })?;
        if !sel.named && inject::is_gateway(props, c) {
            notes.push(Note::new(&rloc, "skipped: an App Mesh virtual gateway task (its Envoy is the application, not a sidecar)"));
            continue;
        }
        let target = Target {
            loc: rloc,
            default_node: inject::default_node(props, c, Some(sel.id)),
            overrides: sel.overrides,
        };
        let (new_props, n) = inject::inject_td(props, c, opts, &target)?;
        notes.extend(n);
        replace_props(&mut out, sel.id, new_props);
    }
    Ok((out, notes))
}

/// Eject every selected task definition of a template (skip settings are ignored: eject only
/// removes wiring).
pub fn eject_template(
    template: &Value,
    c: Casing,
    opts: &InjectOptions,
    loc: &Location,
) -> Result<Value, TransformError> {
    let res = resources(template, loc)?;
    let mut out = template.clone();
    for sel in select(res, opts, loc)? {
        if let Some(props) = sel.props {
            let stripped = eject::strip(props, c, &loc.with_resource(sel.id));
            replace_props(&mut out, sel.id, stripped.td);
        }
    }
    Ok(out)
}

/// Check every selected task definition of a template (skipped ones are not checked).
pub fn check_template(
    template: &Value,
    c: Casing,
    opts: &InjectOptions,
    loc: &Location,
) -> Vec<Finding> {
    let res = match resources(template, loc) {
        Ok(r) => r,
        Err(e) => return vec![Finding::error(e.location(), e.to_string())],
    };
    let selected = match select(res, opts, loc) {
        Ok(s) => s,
        Err(e) => return vec![Finding::error(e.location(), e.to_string())],
    };
    let mut out = Vec::new();
    for sel in selected {
        let rloc = loc.with_resource(sel.id);
        if sel.skip {
            continue;
        }
        match sel.props {
            Some(props) => out.extend(check::check_td(props, c, &rloc)),
            None => out.push(Finding::error(
                &rloc.with_field("Properties"),
                "no literal Properties object",
            )),
        }
    }
    out
}
