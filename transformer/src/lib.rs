//! taskmesh: rewrites Amazon ECS task definitions so their tasks join the mesh.
//!
//! The library is pure (data in, data out, no I/O). It reads every input people have — ECS API
//! JSON, `describe-task-definition` output, CloudFormation JSON and YAML with intrinsics — into
//! a [`Document`], and renders it back in the same format. [`inject_document`] adds the proxy
//! sidecar, the redirect and the wiring; [`eject_document`] removes them (and legacy App Mesh
//! wiring); [`check_document`] reports ECS and mesh problems. The `*_task_definition` and
//! `inject_cfn_*` functions are the same operations on one task definition or a
//! CloudFormation template, for the Lambda and `taskmesh register`.
//!
//! Layout: [`format`] (detect, parse, render), [`taskdef`] (naming layer, numbers, Fargate
//! sizes, recognising wiring), [`inject`], [`eject`], [`check`], [`template`] (CloudFormation
//! resources), [`options`], [`error`], and the CLI in `cli`.

pub mod check;
pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "aws")]
pub mod ecs;
pub mod eject;
pub mod error;
pub mod format;
pub mod inject;
pub mod meshdoc;
pub mod options;
pub mod taskdef;
pub mod template;

use serde_json::Value;

pub use error::{Finding, Location, Note, Severity, TransformError};
pub use format::{Document, Format, Syntax};
pub use inject::proxy::{DEFAULT_ENVOY_IMAGE, VERSION, default_agent_image};
pub use options::{DEFAULT_XRAY_IMAGE, InjectOptions, ProxyKind, Redirect};
pub use taskdef::wiring::{
    CREATED_DEPENDS_ON_LABEL, INJECTED_LABEL, ORIGINAL_CPU_LABEL, ORIGINAL_MEMORY_LABEL,
};

use taskdef::Casing;

/// The result of injecting one task definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// The task definition with the mesh wiring, API shape.
    pub value: Value,
    /// What the user should know (e.g. a Fargate resize).
    pub notes: Vec<Note>,
}

fn as_object<'a>(
    td: &'a Value,
    ctx: &Location,
) -> Result<&'a serde_json::Map<String, Value>, TransformError> {
    td.as_object().ok_or_else(|| {
        TransformError::invalid(ctx.clone(), "a task definition must be a JSON object")
    })
}

/// Inject one ECS task definition in API (camelCase) shape.
pub fn inject_task_definition(
    td: &Value,
    opts: &InjectOptions,
    ctx: &Location,
) -> Result<Injected, TransformError> {
    let map = as_object(td, ctx)?;
    let target = inject::Target {
        loc: ctx.clone(),
        ..inject::Target::default()
    };
    let (mut value, notes) = inject::inject_td(map, Casing::Api, opts, &target)?;
    taskdef::numbers::normalise_container_numbers(&mut value);
    Ok(Injected {
        value: Value::Object(value),
        notes,
    })
}

/// Remove what inject added (and legacy App Mesh wiring) from one API-shape task definition.
pub fn eject_task_definition(td: &Value, ctx: &Location) -> Result<Value, TransformError> {
    let map = as_object(td, ctx)?;
    let mut value = eject::strip(map, Casing::Api, ctx).td;
    taskdef::numbers::normalise_container_numbers(&mut value);
    Ok(Value::Object(value))
}

/// Check one API-shape task definition.
pub fn check_task_definition(td: &Value, ctx: &Location) -> Vec<Finding> {
    match td.as_object() {
        Some(map) => check::check_td(map, Casing::Api, ctx),
        None => vec![Finding::error(
            ctx,
            "a task definition must be a JSON object",
        )],
    }
}

/// Whether an API-shape task definition is meshed by taskmesh (what the validating hooks ask).
pub fn is_meshed(td: &Value) -> bool {
    td.as_object()
        .is_some_and(|m| taskdef::wiring::is_meshed_in(m, Casing::Api))
}

fn cfn_casing(format: Format) -> Casing {
    Casing::Cfn {
        short_tags: format == Format::CfnYaml,
    }
}

/// Inject a whole document; the result keeps the input's format (describe output becomes a
/// registrable API-JSON task definition).
pub fn inject_document(
    doc: &Document,
    opts: &InjectOptions,
) -> Result<(Document, Vec<Note>), TransformError> {
    let loc = Location::file(doc.source());
    match doc.format() {
        Format::ApiJson => {
            let r = inject_task_definition(doc.value(), opts, &loc)?;
            Ok((doc.with_tree(Format::ApiJson, r.value), r.notes))
        }
        Format::DescribeOutput => {
            let td = Value::Object(format::describe::to_registrable(doc.value()));
            let r = inject_task_definition(&td, opts, &loc)?;
            Ok((doc.with_tree(Format::ApiJson, r.value), r.notes))
        }
        f @ (Format::CfnJson | Format::CfnYaml) => {
            let (tree, notes) = template::inject_template(doc.value(), cfn_casing(f), opts, &loc)?;
            Ok((doc.with_tree(f, tree), notes))
        }
    }
}

/// Eject a whole document (only `opts.resources` is used).
pub fn eject_document(doc: &Document, opts: &InjectOptions) -> Result<Document, TransformError> {
    let loc = Location::file(doc.source());
    match doc.format() {
        Format::ApiJson => {
            Ok(doc.with_tree(Format::ApiJson, eject_task_definition(doc.value(), &loc)?))
        }
        Format::DescribeOutput => {
            let td = Value::Object(format::describe::to_registrable(doc.value()));
            Ok(doc.with_tree(Format::ApiJson, eject_task_definition(&td, &loc)?))
        }
        f @ (Format::CfnJson | Format::CfnYaml) => Ok(doc.with_tree(
            f,
            template::eject_template(doc.value(), cfn_casing(f), opts, &loc)?,
        )),
    }
}

/// Check a whole document (only `opts.resources` is used).
pub fn check_document(doc: &Document, opts: &InjectOptions) -> Vec<Finding> {
    let loc = Location::file(doc.source());
    match doc.format() {
        Format::ApiJson => check_task_definition(doc.value(), &loc),
        Format::DescribeOutput => check_task_definition(
            &Value::Object(format::describe::to_registrable(doc.value())),
            &loc,
        ),
        f @ (Format::CfnJson | Format::CfnYaml) => {
            template::check_template(doc.value(), cfn_casing(f), opts, &loc)
        }
    }
}

/// The CloudFormation macro path: inject a template (long-form intrinsics, as CloudFormation
/// hands it to a macro), honouring `Metadata.taskmesh` per resource.
pub fn inject_cfn_template(
    template: &Value,
    opts: &InjectOptions,
) -> Result<(Value, Vec<Note>), TransformError> {
    template::inject_template(
        template,
        Casing::Cfn { short_tags: false },
        opts,
        &Location::file("template"),
    )
}

/// Inject the `Properties` of one `AWS::ECS::TaskDefinition` (per-resource `Fn::Transform`).
pub fn inject_cfn_task_definition_properties(
    props: &Value,
    logical_id: &str,
    opts: &InjectOptions,
) -> Result<(Value, Vec<Note>), TransformError> {
    let loc = Location::file("template").with_resource(logical_id);
    let map = props.as_object().ok_or_else(|| {
        TransformError::invalid(loc.with_field("Properties"), "Properties must be an object")
    })?;
    let c = Casing::Cfn { short_tags: false };
    let target = inject::Target {
        loc: loc.clone(),
        default_node: inject::default_node(map, c, Some(logical_id)),
        overrides: inject::Overrides::default(),
    };
    let (out, notes) = inject::inject_td(map, c, opts, &target)?;
    Ok((Value::Object(out), notes))
}
