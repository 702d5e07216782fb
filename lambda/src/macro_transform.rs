//! The CloudFormation macro `TaskMesh`: a template-level `Transform` meshes every
//! `AWS::ECS::TaskDefinition` (per-resource `Metadata.taskmesh` settings and `skip` honoured); an
//! `Fn::Transform` inside a task definition's `Properties` (or beside its `Type`) meshes that one.
//! Intrinsics pass through untouched. The output is validated before it is returned; any problem
//! gives `status: failure` with a message naming the resource and field.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use taskmesh::{InjectOptions, ProxyKind, Redirect};

use crate::admission::{self, TASK_DEFINITION_TYPE};

/// Largest template CloudFormation accepts from a macro (the S3 limit; inline is 51,200 bytes).
pub const MAX_FRAGMENT_BYTES: usize = 1_048_576;

/// Macro parameters (`Parameters` of the transform), matched case-insensitively.
pub const PARAMETERS: &[&str] = &[
    "Mesh",
    "Config",
    "Proxy",
    "Image",
    "VirtualNode",
    "Redirect",
    "Xray",
    "XrayImage",
];

/// The macro request (lambda-anchors §2.1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MacroRequest {
    pub region: String,
    pub account_id: String,
    pub fragment: Value,
    pub transform_id: String,
    pub params: Map<String, Value>,
    pub request_id: String,
    pub template_parameter_values: Map<String, Value>,
}

/// The macro response.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MacroResponse {
    pub request_id: String,
    /// `success` or `failure`.
    pub status: String,
    pub fragment: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl MacroResponse {
    fn success(request_id: &str, fragment: Value) -> Self {
        Self {
            request_id: request_id.to_string(),
            status: "success".into(),
            fragment,
            error_message: None,
        }
    }

    fn failure(request_id: &str, fragment: Value, message: String) -> Self {
        Self {
            request_id: request_id.to_string(),
            status: "failure".into(),
            fragment,
            error_message: Some(message),
        }
    }
}

/// Handles a raw macro event: a request that does not parse still gets a `failure` answer.
pub fn handle_macro_event(event: &Value) -> MacroResponse {
    match MacroRequest::deserialize(event) {
        Ok(request) => handle_macro(&request),
        Err(e) => MacroResponse::failure(
            event
                .get("requestId")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            event.get("fragment").cloned().unwrap_or(Value::Null),
            format!("malformed macro request: {e}"),
        ),
    }
}

/// Transforms the fragment of `request`.
pub fn handle_macro(request: &MacroRequest) -> MacroResponse {
    match transform(request) {
        Ok(fragment) => MacroResponse::success(&request.request_id, fragment),
        Err(message) => {
            tracing::warn!(request_id = %request.request_id, %message, "macro failed");
            MacroResponse::failure(&request.request_id, request.fragment.clone(), message)
        }
    }
}

/// What kind of fragment CloudFormation sent.
enum Fragment<'a> {
    /// A whole template (template-level `Transform`).
    Template,
    /// `{Type, Properties, ...}` of one resource (`Fn::Transform` beside `Type`).
    Resource(&'a Map<String, Value>),
    /// The `Properties` of one task definition (`Fn::Transform` inside `Properties`).
    Properties,
}

fn classify(fragment: &Value) -> Result<Fragment<'_>, String> {
    let Value::Object(map) = fragment else {
        return Err("the fragment is not an object".into());
    };
    if map.contains_key("Resources") {
        Ok(Fragment::Template)
    } else if map.contains_key("Type") && map.contains_key("Properties") {
        match map.get("Type").and_then(Value::as_str) {
            Some(TASK_DEFINITION_TYPE) => Ok(Fragment::Resource(map)),
            other => Err(format!(
                "Fn::Transform TaskMesh is on a resource of type {}; it only applies to {TASK_DEFINITION_TYPE}",
                other.unwrap_or("(none)")
            )),
        }
    } else if map.contains_key("ContainerDefinitions") {
        Ok(Fragment::Properties)
    } else {
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        Err(format!(
            "the fragment is neither a template (Resources), a task definition resource (Type, \
             Properties) nor task definition Properties (ContainerDefinitions); keys seen: [{}]",
            keys.join(", ")
        ))
    }
}

fn transform(request: &MacroRequest) -> Result<Value, String> {
    let opts = options(request)?;
    let output = match classify(&request.fragment)? {
        Fragment::Template => {
            let (out, notes) = taskmesh::inject_cfn_template(&request.fragment, &opts)
                .map_err(|e| e.to_string())?;
            log_notes(&notes);
            let ids = meshed_resource_ids(&request.fragment, &out, &opts);
            admission::validate_cfn_template(&out, &ids, "template")
                .map_err(|e| format!("output failed validation: {e}"))?;
            out
        }
        Fragment::Resource(resource) => {
            let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
            let new_props = fragment_properties(&props, &opts)?;
            let mut out = resource.clone();
            out.insert("Properties".into(), new_props);
            Value::Object(out)
        }
        Fragment::Properties => fragment_properties(&request.fragment, &opts)?,
    };
    let size = serde_json::to_vec(&output).map(|b| b.len()).unwrap_or(0);
    if size > MAX_FRAGMENT_BYTES {
        return Err(format!(
            "the transformed template is {size} bytes, over CloudFormation's limit of {MAX_FRAGMENT_BYTES}"
        ));
    }
    Ok(output)
}

const FRAGMENT_ID: &str = "Fn::Transform";

fn fragment_properties(props: &Value, opts: &InjectOptions) -> Result<Value, String> {
    let family_given = props.get("Family").is_some_and(|f| !f.is_null());
    if !family_given && opts.virtual_node.is_none() {
        return Err(format!(
            "{FRAGMENT_ID} fragment: field Family: the task definition has no Family and the \
             transform has no VirtualNode parameter, so its virtual node is unknown; set one of them"
        ));
    }
    let (out, notes) = taskmesh::inject_cfn_task_definition_properties(props, FRAGMENT_ID, opts)
        .map_err(|e| e.to_string())?;
    log_notes(&notes);
    admission::validate_cfn_task_definition(&out, FRAGMENT_ID, "fragment")
        .map_err(|e| format!("output failed validation: {e}"))?;
    Ok(out)
}

/// Task-definition resources the transform meshed: not opted out with `Metadata.taskmesh.skip`,
/// among `opts.resources` when that is set, and changed by it or meshed already (the transformer
/// leaves some alone on purpose, e.g. App Mesh virtual gateways, with a note).
fn meshed_resource_ids(input: &Value, template: &Value, opts: &InjectOptions) -> Vec<String> {
    let Some(resources) = template.get("Resources").and_then(Value::as_object) else {
        return Vec::new();
    };
    resources
        .iter()
        .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(TASK_DEFINITION_TYPE))
        .filter(|(id, _)| opts.resources.is_empty() || opts.resources.contains(id))
        .filter(|(id, r)| {
            let props = r.get("Properties");
            let before = input
                .get("Resources")
                .and_then(|rs| rs.get(id.as_str()))
                .and_then(|r| r.get("Properties"));
            props != before || props.is_some_and(admission::cfn_is_meshed)
        })
        .filter(|(_, r)| {
            let skip = r.pointer("/Metadata/taskmesh/skip");
            !matches!(skip, Some(Value::Bool(true)))
                && !matches!(skip, Some(Value::String(s)) if s.eq_ignore_ascii_case("true"))
        })
        .map(|(id, _)| id.clone())
        .collect()
}

fn log_notes(notes: &[taskmesh::Note]) {
    for note in notes {
        tracing::info!(%note, "macro note");
    }
}

/// The inject options from the transform's `Parameters`.
fn options(request: &MacroRequest) -> Result<InjectOptions, String> {
    let mut opts = InjectOptions::default();
    for (name, raw) in &request.params {
        let value = param_text(name, raw, &request.template_parameter_values)?;
        match name.to_ascii_lowercase().as_str() {
            "mesh" => opts.mesh = Some(value),
            "config" => opts.config = Some(value),
            "image" => opts.image = Some(value),
            "virtualnode" => opts.virtual_node = Some(value),
            "xrayimage" => opts.xray_image = Some(value),
            "xray" => {
                opts.xray = match value.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(format!(
                            "transform parameter {name}: '{value}' is not true or false"
                        ));
                    }
                }
            }
            "proxy" => {
                opts.proxy = match value.to_ascii_lowercase().as_str() {
                    "agent" => ProxyKind::Agent,
                    "envoy" => ProxyKind::Envoy,
                    _ => {
                        return Err(format!(
                            "transform parameter {name}: '{value}' is not one of: agent, envoy"
                        ));
                    }
                }
            }
            "redirect" => {
                opts.redirect = match value.to_ascii_lowercase().as_str() {
                    "ecs" => Redirect::Ecs,
                    "proxy-init" => Redirect::ProxyInit,
                    _ => {
                        return Err(format!(
                            "transform parameter {name}: '{value}' is not one of: ecs, proxy-init"
                        ));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "transform parameter {name} is not known (known: {})",
                    PARAMETERS.join(", ")
                ));
            }
        }
    }
    if opts.xray_image.is_some() && !opts.xray {
        return Err(
            "transform parameter XrayImage is the image of the X-Ray daemon that Xray: true adds; set Xray: true too"
                .to_string(),
        );
    }
    Ok(opts)
}

/// A parameter value as text; `{"Ref": P}` is resolved from the stack's parameter values.
fn param_text(
    name: &str,
    raw: &Value,
    stack_params: &Map<String, Value>,
) -> Result<String, String> {
    match raw {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Object(map) if map.len() == 1 && map.contains_key("Ref") => {
            let param = map.get("Ref").and_then(Value::as_str).unwrap_or_default();
            match stack_params.get(param) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                Some(other) => Err(format!(
                    "transform parameter {name}: stack parameter {param} is {other}, not a single value"
                )),
                None => Err(format!(
                    "transform parameter {name}: Ref to {param}, which is not a stack parameter with a value"
                )),
            }
        }
        Value::Object(map)
            if map.len() == 1 && map.get("Fn::Sub").is_some_and(Value::is_string) =>
        {
            let text = map
                .get("Fn::Sub")
                .and_then(Value::as_str)
                .unwrap_or_default();
            substitute(name, text, stack_params)
        }
        other => Err(format!(
            "transform parameter {name}: expected a string, number, boolean, Ref or Fn::Sub of \
             stack parameters, got {other}"
        )),
    }
}

/// `Fn::Sub` over stack parameters only (`${Param}`; `${!Literal}` stays literal): the macro runs
/// before CloudFormation resolves anything else.
fn substitute(name: &str, text: &str, stack_params: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "transform parameter {name}: unclosed ${{ in Fn::Sub '{text}'"
            ));
        };
        let var = &after[..end];
        if let Some(literal) = var.strip_prefix('!') {
            out.push_str("${");
            out.push_str(literal);
            out.push('}');
        } else {
            match stack_params.get(var) {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Number(n)) => out.push_str(&n.to_string()),
                _ => {
                    return Err(format!(
                        "transform parameter {name}: Fn::Sub '{text}' uses ${{{var}}}, which is not \
                         a stack parameter with a single value (a macro sees only stack parameters)"
                    ));
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
