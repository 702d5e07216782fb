//! `taskmesh mesh from-template`: compiles the `AWS::AppMesh::{Mesh, VirtualService,
//! VirtualRouter, Route, VirtualNode}` resources of a CloudFormation template (JSON or YAML,
//! short `!Ref` / `!GetAtt` / `!Sub` tags or the long `Fn::` forms) into a canonical mesh
//! document, validated by `taskmesh_mesh::MeshDocument`.
//!
//! CloudFormation property names (PascalCase, `AWSCloudMap`, `DNS`, `TLS`, `HTTP2`, …) become the
//! API's camelCase names; numbers and booleans that CloudFormation allows as strings become
//! numbers and booleans. Intrinsics are evaluated where the template alone decides the value:
//! `Ref` to a parameter (its literal `Default`, or a value given in [`TemplateInputs`]), `Ref`
//! and `GetAtt <X>.<Name>` between App Mesh resources (their names; CloudFormation's `Ref`
//! gives the ARN, whose last segment is that name), `GetAtt` of another resource's literal
//! property (e.g. a Cloud Map service's `Name`), `Sub`, `Join` and `Select`. Anything else
//! (a load balancer's DNS name, `AWS::Region`, `Fn::If`, …) is reported, naming the resource
//! and property, unless [`TemplateInputs`] supplies it.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Number, Value as Json};
use serde_yaml_ng::Value as Yaml;
use taskmesh_mesh::{DocumentError, MeshDocument};

/// Values a template cannot decide by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateInputs {
    /// Parameter values (also pseudo parameters such as `AWS::Region`), overriding defaults.
    pub parameters: BTreeMap<String, String>,
    /// Resource attributes as `"LogicalId.Attribute"` → value (e.g. `"Alb.DNSName"`).
    pub attributes: BTreeMap<String, String>,
    /// Which mesh to take when the template defines several.
    pub mesh: Option<String>,
}

/// One value that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// Logical ID of the resource.
    pub resource: String,
    /// Property path inside the resource (e.g. `Spec.ServiceDiscovery.DNS.Hostname`).
    pub property: String,
    pub message: String,
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "resource {}, property {}: {}",
            self.resource, self.property, self.message
        )
    }
}

/// Why a template could not be compiled into a mesh document.
#[derive(Debug, thiserror::Error)]
pub enum FromTemplateError {
    #[error("{file}: not a CloudFormation template (no Resources mapping)")]
    NotATemplate { file: String },
    #[error(
        "{file}: no AWS::AppMesh::Mesh, VirtualService, VirtualRouter, Route or VirtualNode resources"
    )]
    NoMeshResources { file: String },
    #[error("{file}: {} value{} cannot be resolved from the template alone:{}", problems.len(),
            if problems.len() == 1 { "" } else { "s" }, ProblemList(problems))]
    Unresolvable {
        file: String,
        problems: Vec<TemplateProblem>,
    },
    #[error("{file}: the template defines resources of several meshes ({}); choose one", meshes.join(", "))]
    SeveralMeshes { file: String, meshes: Vec<String> },
    #[error("{file}: the compiled mesh document is invalid: {error}")]
    Invalid { file: String, error: DocumentError },
}

struct ProblemList<'a>(&'a [TemplateProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Compiles the App Mesh resources of `template` (read from `source`, named in errors) into a
/// canonical mesh document. See the module documentation for what is resolved.
pub fn from_template(template: &Yaml, source: &str) -> Result<Json, FromTemplateError> {
    from_template_with(template, source, &TemplateInputs::default())
}

/// [`from_template`] with parameter values, resource attributes and a mesh choice supplied.
pub fn from_template_with(
    template: &Yaml,
    source: &str,
    inputs: &TemplateInputs,
) -> Result<Json, FromTemplateError> {
    let template = normalize(template);
    let Some(resources) = template.get("Resources").and_then(Json::as_object) else {
        return Err(FromTemplateError::NotATemplate {
            file: source.to_owned(),
        });
    };
    let empty = Map::new();
    let parameters = template
        .get("Parameters")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let ctx = Ctx {
        resources,
        parameters,
        inputs,
    };
    let mut problems = Vec::new();
    let mut items: Vec<(&'static str, Json, Option<String>)> = Vec::new();
    let mut meshes: Vec<String> = Vec::new();
    for (id, res) in resources {
        let Some(kind) = res.get("Type").and_then(Json::as_str).and_then(mesh_kind) else {
            continue;
        };
        let props = res
            .get("Properties")
            .and_then(Json::as_object)
            .unwrap_or(&empty);
        let mut r = Resolver {
            ctx: &ctx,
            resource: id,
            problems: &mut problems,
        };
        match r.element(kind, props) {
            Some((element, mesh)) => {
                if let Some(m) = &mesh
                    && !meshes.contains(m)
                {
                    meshes.push(m.clone());
                }
                items.push((kind.list, element, mesh));
            }
            None => continue,
        }
    }
    if items.is_empty() && problems.is_empty() {
        return Err(FromTemplateError::NoMeshResources {
            file: source.to_owned(),
        });
    }
    if !problems.is_empty() {
        return Err(FromTemplateError::Unresolvable {
            file: source.to_owned(),
            problems,
        });
    }
    let mesh = match (&inputs.mesh, meshes.as_slice()) {
        (Some(m), _) => m.clone(),
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(FromTemplateError::NoMeshResources {
                file: source.to_owned(),
            });
        }
        (None, _) => {
            return Err(FromTemplateError::SeveralMeshes {
                file: source.to_owned(),
                meshes,
            });
        }
    };
    let mut doc = Map::new();
    doc.insert("meshName".into(), Json::String(mesh.clone()));
    for list in [
        "virtualServices",
        "virtualRouters",
        "routes",
        "virtualNodes",
    ] {
        doc.insert(list.into(), Json::Array(Vec::new()));
    }
    for (list, element, element_mesh) in items {
        if element_mesh.as_deref().is_some_and(|m| m != mesh) {
            continue;
        }
        if list == "mesh" {
            if let Some(spec) = element.get("spec") {
                doc.insert("spec".into(), spec.clone());
            }
        } else if let Some(Json::Array(a)) = doc.get_mut(list) {
            a.push(element);
        }
    }
    let doc = MeshDocument::from_value(Json::Object(doc)).map_err(|error| {
        FromTemplateError::Invalid {
            file: source.to_owned(),
            error,
        }
    })?;
    Ok(doc.to_json_value())
}

/// An App Mesh resource type this compiler handles.
#[derive(Clone, Copy)]
struct Kind {
    /// The CloudFormation name property (e.g. `VirtualNodeName`).
    name_property: &'static str,
    /// The API name key (e.g. `virtualNodeName`).
    name_key: &'static str,
    /// The document list it goes to (`mesh` for the mesh itself).
    list: &'static str,
}

fn mesh_kind(t: &str) -> Option<Kind> {
    let (name_property, name_key, list) = match t {
        "AWS::AppMesh::Mesh" => ("MeshName", "meshName", "mesh"),
        "AWS::AppMesh::VirtualService" => (
            "VirtualServiceName",
            "virtualServiceName",
            "virtualServices",
        ),
        "AWS::AppMesh::VirtualRouter" => {
            ("VirtualRouterName", "virtualRouterName", "virtualRouters")
        }
        "AWS::AppMesh::Route" => ("RouteName", "routeName", "routes"),
        "AWS::AppMesh::VirtualNode" => ("VirtualNodeName", "virtualNodeName", "virtualNodes"),
        _ => return None,
    };
    Some(Kind {
        name_property,
        name_key,
        list,
    })
}

struct Ctx<'t> {
    resources: &'t Map<String, Json>,
    parameters: &'t Map<String, Json>,
    inputs: &'t TemplateInputs,
}

struct Resolver<'c, 't> {
    ctx: &'c Ctx<'t>,
    resource: &'c str,
    problems: &'c mut Vec<TemplateProblem>,
}

/// Why a value is unknown (the property path is added by the caller).
type Unknown = String;

const MAX_DEPTH: usize = 24;

impl Resolver<'_, '_> {
    fn problem(&mut self, property: &str, message: impl Into<String>) {
        self.problems.push(TemplateProblem {
            resource: self.resource.to_owned(),
            property: property.to_owned(),
            message: message.into(),
        });
    }

    /// One API element (`*Data` shape) and its mesh name.
    fn element(&mut self, kind: Kind, props: &Map<String, Json>) -> Option<(Json, Option<String>)> {
        let before = self.problems.len();
        let mut out = Map::new();
        let mesh = self.string_property(props, "MeshName", kind.list == "mesh");
        if kind.list != "mesh" {
            if let Some(m) = &mesh {
                out.insert("meshName".into(), Json::String(m.clone()));
            }
            match self.string_property(props, kind.name_property, true) {
                Some(n) => {
                    out.insert(kind.name_key.into(), Json::String(n));
                }
                None => return None,
            }
            if kind.list == "routes" {
                let router = self.string_property(props, "VirtualRouterName", true)?;
                out.insert("virtualRouterName".into(), Json::String(router));
            }
        }
        let spec = match props.get("Spec") {
            Some(spec) => match self.resolve(spec, 0) {
                Ok(v) => api_shape(&v, ""),
                Err((path, message)) => {
                    self.problem(&join("Spec", &path), message);
                    Json::Null
                }
            },
            None => Json::Object(Map::new()),
        };
        out.insert("spec".into(), spec);
        (self.problems.len() == before).then_some((Json::Object(out), mesh))
    }

    fn string_property(
        &mut self,
        props: &Map<String, Json>,
        key: &str,
        required: bool,
    ) -> Option<String> {
        let Some(v) = props.get(key) else {
            if required {
                self.problem(key, "not set: CloudFormation would generate a name, which a mesh document cannot know");
            }
            return None;
        };
        match self.resolve(v, 0) {
            Ok(Json::String(s)) => Some(s),
            Ok(Json::Number(n)) => Some(n.to_string()),
            Ok(other) => {
                self.problem(key, format!("expected a string, found {other}"));
                None
            }
            Err((path, message)) => {
                self.problem(&join(key, &path), message);
                None
            }
        }
    }

    /// Evaluates intrinsics in `v`. Errors carry the property path below `v`.
    fn resolve(&self, v: &Json, depth: usize) -> Result<Json, (String, Unknown)> {
        if depth > MAX_DEPTH {
            return Err((
                String::new(),
                "references nest too deeply (a cycle?)".into(),
            ));
        }
        match v {
            Json::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                if k == "Ref" || k.starts_with("Fn::") || k == "Condition" {
                    return self
                        .intrinsic(k, arg, depth)
                        .map_err(|e| (String::new(), e));
                }
                let inner = self
                    .resolve(arg, depth)
                    .map_err(|(p, e)| (join(k, &p), e))?;
                let mut out = Map::new();
                out.insert(k.clone(), inner);
                Ok(Json::Object(out))
            }
            Json::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    out.insert(
                        k.clone(),
                        self.resolve(x, depth).map_err(|(p, e)| (join(k, &p), e))?,
                    );
                }
                Ok(Json::Object(out))
            }
            Json::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    self.resolve(x, depth)
                        .map_err(|(p, e)| (join(&format!("[{i}]"), &p), e))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            other => Ok(other.clone()),
        }
    }

    fn intrinsic(&self, name: &str, arg: &Json, depth: usize) -> Result<Json, Unknown> {
        match name {
            "Ref" => {
                let Some(target) = arg.as_str() else {
                    return Err(format!("Ref needs a name, found {arg}"));
                };
                self.reference(target, depth)
            }
            "Fn::GetAtt" => {
                let (res, attr) = match arg {
                    Json::String(s) => s
                        .split_once('.')
                        .ok_or_else(|| format!("Fn::GetAtt \"{s}\" needs Resource.Attribute"))?,
                    Json::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                        (Json::String(r), Json::String(at)) => (r.as_str(), at.as_str()),
                        _ => {
                            return Err(format!(
                                "Fn::GetAtt needs [Resource, Attribute], found {arg}"
                            ));
                        }
                    },
                    _ => return Err(format!("Fn::GetAtt needs Resource.Attribute, found {arg}")),
                };
                self.attribute(res, attr, depth)
            }
            "Fn::Sub" => {
                let (text, vars) = match arg {
                    Json::String(s) => (s.as_str(), None),
                    Json::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                        (Json::String(s), Json::Object(vars)) => (s.as_str(), Some(vars)),
                        _ => {
                            return Err(format!(
                                "Fn::Sub needs [String, {{Variables}}], found {arg}"
                            ));
                        }
                    },
                    _ => return Err(format!("Fn::Sub needs a string, found {arg}")),
                };
                self.sub(text, vars, depth).map(Json::String)
            }
            "Fn::Join" => {
                let Some([sep, Json::Array(list)]) = arg.as_array().map(Vec::as_slice) else {
                    return Err(format!("Fn::Join needs [separator, [values]], found {arg}"));
                };
                let sep = sep.as_str().ok_or("Fn::Join separator must be a string")?;
                let parts = list
                    .iter()
                    .map(|x| {
                        self.resolve(x, depth + 1)
                            .map_err(|(_, e)| e)
                            .and_then(|v| scalar(&v))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Json::String(parts.join(sep)))
            }
            "Fn::Select" => {
                let Some([index, list]) = arg.as_array().map(Vec::as_slice) else {
                    return Err(format!("Fn::Select needs [index, [values]], found {arg}"));
                };
                let index = scalar(&self.resolve(index, depth + 1).map_err(|(_, e)| e)?)?;
                let i: usize = index
                    .parse()
                    .map_err(|_| format!("Fn::Select index \"{index}\" is not a number"))?;
                match self.resolve(list, depth + 1).map_err(|(_, e)| e)? {
                    Json::Array(items) => items
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("Fn::Select index {i} is out of range")),
                    other => Err(format!("Fn::Select needs a list, found {other}")),
                }
            }
            other => Err(format!(
                "{other} cannot be evaluated from the template alone"
            )),
        }
    }

    fn reference(&self, target: &str, depth: usize) -> Result<Json, Unknown> {
        if let Some(v) = self.ctx.inputs.parameters.get(target) {
            return Ok(Json::String(v.clone()));
        }
        if let Some(p) = self.ctx.parameters.get(target) {
            return match p.get("Default") {
                Some(d @ (Json::String(_) | Json::Number(_) | Json::Bool(_))) => Ok(d.clone()),
                Some(Json::Array(items)) => Ok(Json::Array(items.clone())),
                _ => Err(format!(
                    "Ref {target}: parameter {target} has no literal Default; give its value"
                )),
            };
        }
        if target.starts_with("AWS::") {
            return Err(format!(
                "Ref {target}: pseudo parameter known only at deployment; give its value"
            ));
        }
        match self.ctx.resources.get(target) {
            Some(res) => {
                let kind = res.get("Type").and_then(Json::as_str).unwrap_or("?");
                match mesh_kind(kind) {
                    // A mesh document holds names; the ARN's last segment is the name.
                    Some(k) => self.attribute(target, k.name_property, depth),
                    None => Err(format!(
                        "Ref {target}: a {kind} is known only after deployment; give its value"
                    )),
                }
            }
            None => Err(format!(
                "Ref {target}: no parameter or resource named {target}"
            )),
        }
    }

    fn attribute(&self, res: &str, attr: &str, depth: usize) -> Result<Json, Unknown> {
        let key = format!("{res}.{attr}");
        if let Some(v) = self.ctx.inputs.attributes.get(&key) {
            return Ok(Json::String(v.clone()));
        }
        let Some(r) = self.ctx.resources.get(res) else {
            return Err(format!("GetAtt {key}: no resource named {res}"));
        };
        let kind = r.get("Type").and_then(Json::as_str).unwrap_or("?");
        match r.get("Properties").and_then(|p| p.get(attr)) {
            Some(v) => self
                .resolve(v, depth + 1)
                .map_err(|(_, e)| format!("GetAtt {key}: {e}")),
            None if attr == "MeshName" => {
                Err(format!("GetAtt {key}: {res} ({kind}) sets no MeshName"))
            }
            None => Err(format!(
                "GetAtt {key}: known only after deployment of {res} ({kind}); give its value"
            )),
        }
    }

    fn sub(
        &self,
        text: &str,
        vars: Option<&Map<String, Json>>,
        depth: usize,
    ) -> Result<String, Unknown> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("Fn::Sub: unclosed ${{ in \"{text}\""));
            };
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else {
                let value = match vars.and_then(|v| v.get(name)) {
                    Some(v) => self.resolve(v, depth + 1).map_err(|(_, e)| e)?,
                    None => match name.split_once('.') {
                        Some((res, attr)) if !name.starts_with("AWS::") => {
                            self.attribute(res, attr, depth)?
                        }
                        _ => self.reference(name, depth)?,
                    },
                };
                out.push_str(&scalar(&value)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn scalar(v: &Json) -> Result<String, Unknown> {
    match v {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected a single value, found {other}")),
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

/// YAML (with short-form tags) → JSON with long-form intrinsics.
fn normalize(v: &Yaml) -> Json {
    match v {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Json::Number(u.into())
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .map_or(Json::Null, Json::Number)
            }
        }
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(s) => Json::Array(s.iter().map(normalize).collect()),
        Yaml::Mapping(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => scalar(&normalize(other)).unwrap_or_default(),
                    };
                    (key, normalize(v))
                })
                .collect(),
        ),
        Yaml::Tagged(t) => {
            let tag = t.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let key = match tag {
                "Ref" | "Condition" => tag.to_owned(),
                other => format!("Fn::{other}"),
            };
            let mut inner = normalize(&t.value);
            // `!GetAtt A.B` is a string in short form.
            if key == "Fn::GetAtt"
                && let Json::String(s) = &inner
                && let Some((a, b)) = s.split_once('.')
            {
                inner = Json::Array(vec![Json::String(a.into()), Json::String(b.into())]);
            }
            let mut m = Map::new();
            m.insert(key, inner);
            Json::Object(m)
        }
    }
}

/// Members whose API type is a number (CloudFormation also accepts strings).
const NUMBERS: &[&str] = &[
    "port",
    "weight",
    "priority",
    "maxRetries",
    "value",
    "healthyThreshold",
    "unhealthyThreshold",
    "timeoutMillis",
    "intervalMillis",
    "maxConnections",
    "maxPendingRequests",
    "maxRequests",
    "maxServerErrors",
    "maxEjectionPercent",
    "start",
    "end",
    "ports",
];
/// Members whose API type is a boolean.
const BOOLEANS: &[&str] = &["invert", "enforce"];

/// CloudFormation property name → API member name.
fn api_key(k: &str) -> String {
    match k {
        "AWSCloudMap" => "awsCloudMap".into(),
        _ if k
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) =>
        {
            k.to_ascii_lowercase()
        }
        _ => {
            let mut c = k.chars();
            match c.next() {
                Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
                None => String::new(),
            }
        }
    }
}

/// Renames keys to the API's and coerces string numbers / booleans (`key` = the member holding `v`).
fn api_shape(v: &Json, key: &str) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.iter()
                .map(|(k, x)| {
                    let k = api_key(k);
                    let x = api_shape(x, &k);
                    (k, x)
                })
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.iter().map(|x| api_shape(x, key)).collect()),
        Json::String(s) if NUMBERS.contains(&key) => match s.trim().parse::<i64>() {
            Ok(n) => Json::Number(n.into()),
            Err(_) => v.clone(),
        },
        Json::String(s) if BOOLEANS.contains(&key) => {
            match s.trim().to_ascii_lowercase().as_str() {
                "true" => Json::Bool(true),
                "false" => Json::Bool(false),
                _ => v.clone(),
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Yaml {
        serde_yaml_ng::from_str(s).expect("test YAML parses")
    }

    const TEMPLATE: &str = r#"
Parameters:
  Env: {Type: String, Default: prod}
  Port: {Type: Number, Default: 8080}
  Secret: {Type: String}
Resources:
  Mesh:
    Type: AWS::AppMesh::Mesh
    Properties:
      MeshName: !Sub '${Env}-mesh'
      Spec: {EgressFilter: {Type: ALLOW_ALL}}
  Node:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualNodeName: !Sub '${Env}-api'
      Spec:
        Listeners:
          - PortMapping: {Port: !Ref Port, Protocol: http}
            Timeout: {HTTP: {PerRequest: {Unit: s, Value: '30'}}}
            ConnectionPool: {HTTP: {MaxConnections: '10'}}
            HealthCheck: {Protocol: http, Path: /ping, HealthyThreshold: 2, UnhealthyThreshold: 2,
                          TimeoutMillis: 2000, IntervalMillis: 5000}
        ServiceDiscovery:
          AWSCloudMap:
            NamespaceName: !Join ['.', [!Ref Env, local]]
            ServiceName: !GetAtt Registry.Name
            Attributes: [{Key: ECS_TASK_DEFINITION_FAMILY, Value: api}]
        BackendDefaults:
          ClientPolicy: {TLS: {Enforce: 'false', Validation: {Trust: {File: {CertificateChain: /ca.pem}}}}}
        Logging: {AccessLog: {File: {Path: /dev/stdout}}}
  Client:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualNodeName: client
      Spec:
        Backends: [{VirtualService: {VirtualServiceName: !GetAtt Service.VirtualServiceName}}]
  Registry:
    Type: AWS::ServiceDiscovery::Service
    Properties: {Name: api}
  Router:
    Type: AWS::AppMesh::VirtualRouter
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualRouterName: api-router
      Spec: {Listeners: [{PortMapping: {Port: 8080, Protocol: http}}]}
  Route:
    Type: AWS::AppMesh::Route
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualRouterName: !GetAtt Router.VirtualRouterName
      RouteName: all
      Spec:
        Priority: '5'
        HttpRoute:
          Match:
            Prefix: /
            Headers: [{Name: x-canary, Invert: 'true', Match: {Range: {Start: 1, End: '9'}}}]
          Action: {WeightedTargets: [{VirtualNode: !Ref Node, Weight: '1'}]}
          RetryPolicy: {MaxRetries: 2, PerRetryTimeout: {Unit: ms, Value: 500}, HttpRetryEvents: [gateway-error]}
  Service:
    Type: AWS::AppMesh::VirtualService
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualServiceName: api.prod.local
      Spec: {Provider: {VirtualRouter: {VirtualRouterName: !GetAtt [Router, VirtualRouterName]}}}
  Bucket:
    Type: AWS::S3::Bucket
"#;

    #[test]
    fn compiles_every_mesh_resource() {
        let doc = from_template(&yaml(TEMPLATE), "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc["meshName"], "prod-mesh");
        assert_eq!(doc["spec"]["egressFilter"]["type"], "ALLOW_ALL");
        let node = &doc["virtualNodes"][0];
        assert_eq!(node["virtualNodeName"], "prod-api");
        let l = &node["spec"]["listeners"][0];
        assert_eq!(l["portMapping"]["port"], 8080);
        assert_eq!(l["timeout"]["http"]["perRequest"]["value"], 30);
        assert_eq!(l["connectionPool"]["http"]["maxConnections"], 10);
        let cm = &node["spec"]["serviceDiscovery"]["awsCloudMap"];
        assert_eq!(cm["namespaceName"], "prod.local");
        assert_eq!(cm["serviceName"], "api");
        assert_eq!(
            node["spec"]["backendDefaults"]["clientPolicy"]["tls"]["enforce"],
            false
        );
        assert_eq!(
            node["spec"]["logging"]["accessLog"]["file"]["path"],
            "/dev/stdout"
        );
        let route = &doc["routes"][0];
        assert_eq!(route["virtualRouterName"], "api-router");
        assert_eq!(route["spec"]["priority"], 5);
        let h = &route["spec"]["httpRoute"]["match"]["headers"][0];
        assert_eq!(h["invert"], true);
        assert_eq!(h["match"]["range"]["end"], 9);
        assert_eq!(
            route["spec"]["httpRoute"]["action"]["weightedTargets"][0]["virtualNode"],
            "prod-api"
        );
        assert_eq!(
            doc["virtualServices"][0]["spec"]["provider"]["virtualRouter"]["virtualRouterName"],
            "api-router"
        );
        assert_eq!(
            doc["virtualNodes"][1]["spec"]["backends"][0]["virtualService"]["virtualServiceName"],
            "api.prod.local"
        );
        MeshDocument::from_slice(&serde_json::to_vec(&doc).unwrap()).unwrap();
    }

    #[test]
    fn json_long_form_templates() {
        let json: Json = serde_json::json!({"Resources": {
            "M": {"Type": "AWS::AppMesh::Mesh", "Properties": {"MeshName": "m"}},
            "N": {"Type": "AWS::AppMesh::VirtualNode", "Properties": {
                "MeshName": {"Fn::GetAtt": ["M", "MeshName"]},
                "VirtualNodeName": {"Fn::Sub": ["${A}-${B}", {"A": "x", "B": {"Ref": "AWS::NoValueHere"}}]},
                "Spec": {}}}}});
        let y: Yaml = serde_yaml_ng::to_value(&json).unwrap();
        let err = from_template(&y, "t.json").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("resource N, property VirtualNodeName: Ref AWS::NoValueHere"),
            "{text}"
        );
        let inputs = TemplateInputs {
            parameters: [("AWS::NoValueHere".to_owned(), "y".to_owned())].into(),
            ..Default::default()
        };
        let doc = from_template_with(&y, "t.json", &inputs).unwrap();
        assert_eq!(doc["virtualNodes"][0]["virtualNodeName"], "x-y");
    }

    #[test]
    fn unresolvable_values_name_resource_and_property() {
        let t = yaml(
            r#"
Parameters: {Name: {Type: String}}
Resources:
  M: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: !Ref Name}}
  N:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: m
      VirtualNodeName: n
      Spec:
        Listeners: [{PortMapping: {Port: 80, Protocol: http}}]
        ServiceDiscovery: {DNS: {Hostname: !GetAtt Alb.DNSName}}
  R: {Type: AWS::AppMesh::VirtualRouter, Properties: {MeshName: m}}
  Alb: {Type: AWS::ElasticLoadBalancingV2::LoadBalancer}
"#,
        );
        let Err(FromTemplateError::Unresolvable { problems, .. }) = from_template(&t, "t.yaml")
        else {
            panic!("must be unresolvable")
        };
        let got: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.resource.as_str(), p.property.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("M", "MeshName"),
                ("N", "Spec.ServiceDiscovery.DNS.Hostname"),
                ("R", "VirtualRouterName")
            ]
        );
        assert!(
            problems[0].message.contains("no literal Default"),
            "{}",
            problems[0].message
        );
        assert!(
            problems[1].message.contains("Alb.DNSName"),
            "{}",
            problems[1].message
        );
    }

    #[test]
    fn several_meshes_and_no_mesh() {
        let t = yaml(
            "Resources:\n  A: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: a}}\n  B: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: b}}\n",
        );
        assert!(matches!(
            from_template(&t, "t"),
            Err(FromTemplateError::SeveralMeshes { .. })
        ));
        let inputs = TemplateInputs {
            mesh: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(
            from_template_with(&t, "t", &inputs).unwrap()["meshName"],
            "b"
        );
        let t = yaml("Resources:\n  B: {Type: AWS::S3::Bucket}\n");
        assert!(matches!(
            from_template(&t, "t"),
            Err(FromTemplateError::NoMeshResources { .. })
        ));
        assert!(matches!(
            from_template(&yaml("a: 1"), "t"),
            Err(FromTemplateError::NotATemplate { .. })
        ));
    }

    #[test]
    fn invalid_result_is_reported_with_paths() {
        let t = yaml(
            r#"
Resources:
  R:
    Type: AWS::AppMesh::Route
    Properties:
      MeshName: m
      VirtualRouterName: ghost
      RouteName: r
      Spec: {HttpRoute: {Match: {Prefix: /}, Action: {WeightedTargets: [{VirtualNode: n, Weight: 1}]}}}
"#,
        );
        let err = from_template(&t, "t.yaml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("routes[0].virtualRouterName: no virtual router \"ghost\""),
            "{text}"
        );
    }

    #[test]
    fn sub_escapes_and_select() {
        let t = yaml(
            r#"
Resources:
  M: {Type: AWS::AppMesh::Mesh, Properties: {MeshName: !Select [1, [a, m, c]]}}
  N: {Type: AWS::AppMesh::VirtualNode, Properties: {MeshName: !Ref M, VirtualNodeName: !Sub 'n-${!Literal}'}}
"#,
        );
        let doc = from_template(&t, "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc["meshName"], "m");
        assert_eq!(doc["virtualNodes"][0]["virtualNodeName"], "n-${Literal}");
    }

    /// The real App Mesh templates among the fixtures: the repository's copy
    /// (`tests/fixtures/ecs-taskdefs/`), else the shared originals beside the workspace.
    fn fixture(name: &str) -> Yaml {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let candidates = [
            root.join("tests/fixtures/ecs-taskdefs").join(name),
            root.join("../shared/fixtures/ecs-taskdefs").join(name),
        ];
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            panic!("fixture {name} is missing: looked in {candidates:?}");
        };
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn check_document(doc: &Json) -> MeshDocument {
        MeshDocument::from_slice(&serde_json::to_vec_pretty(doc).unwrap())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn fixture_cdk_service_extensions_compiles_without_inputs() {
        let name = "cdklabs__cdk-ecs-service-extensions__test__all-service-addons.integ.snapshot__aws-ecs-integ.template.json";
        let doc = from_template(&fixture(name), name).unwrap_or_else(|e| panic!("{e}"));
        let doc = check_document(&doc);
        assert_eq!(doc.mesh_name(), "awsecsintegmymeshFCC0D554");
        assert_eq!(doc.virtual_nodes().len(), 3);
        assert_eq!(doc.routes().len(), 3);
        let greeter = doc.virtual_node("greeter").unwrap();
        assert_eq!(greeter.spec.backends.len(), 2);
        assert!(matches!(&greeter.spec.service_discovery,
            Some(taskmesh_mesh::model::ServiceDiscovery::AwsCloudMap(c)) if c.namespace_name == "production" && c.service_name == "greeter"));
    }

    #[test]
    fn fixture_djapp_needs_its_project_name_then_compiles() {
        let name = "aws__aws-app-mesh-examples__walkthroughs__howto-metrics-extension-ecs__deploy__djapp-v1.yaml";
        let t = fixture(name);
        let err = from_template(&t, name).unwrap_err();
        let FromTemplateError::Unresolvable { problems, .. } = &err else {
            panic!("{err}")
        };
        assert!(
            problems
                .iter()
                .any(|p| p.resource == "Mesh" && p.property == "MeshName"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("parameter ProjectName has no literal Default"),
            "{err}"
        );
        let inputs = TemplateInputs {
            parameters: [("ProjectName".to_owned(), "djapp".to_owned())].into(),
            ..Default::default()
        };
        let doc = check_document(
            &from_template_with(&t, name, &inputs).unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(doc.mesh_name(), "djapp");
        let metal = doc
            .routes()
            .iter()
            .find(|r| r.route_name == "metal")
            .unwrap();
        let targets = &metal
            .spec
            .http_route
            .as_ref()
            .unwrap()
            .action
            .weighted_targets;
        assert_eq!(
            (targets[0].virtual_node.as_str(), targets[0].weight),
            ("metal-v1", 60)
        );
        assert_eq!(
            doc.virtual_service("jazz.djapp.local")
                .map(|s| s.virtual_service_name.as_str()),
            Some("jazz.djapp.local")
        );
        assert_eq!(
            doc.virtual_node("jazz").unwrap().spec.listeners[0]
                .port_mapping
                .port,
            8080
        );
    }

    #[test]
    fn fixture_ecs_basics_needs_the_load_balancer_name_then_compiles() {
        let name =
            "aws__aws-app-mesh-examples__walkthroughs__howto-ecs-basics__deploy__2-meshify.yaml";
        let t = fixture(name);
        let inputs = TemplateInputs {
            parameters: [("ProjectName".to_owned(), "basics".to_owned())].into(),
            ..Default::default()
        };
        let err = from_template_with(&t, name, &inputs).unwrap_err();
        let FromTemplateError::Unresolvable { problems, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 1, "{err}");
        assert_eq!(problems[0].resource, "FrontVirtualNode");
        assert_eq!(problems[0].property, "Spec.ServiceDiscovery.DNS.Hostname");
        assert!(
            problems[0].message.contains("PublicLoadBalancer.DNSName"),
            "{err}"
        );
        let mut inputs = inputs;
        inputs.attributes.insert(
            "PublicLoadBalancer.DNSName".into(),
            "front-123.elb.amazonaws.com".into(),
        );
        let doc = check_document(
            &from_template_with(&t, name, &inputs).unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(doc.mesh_name(), "basics");
        let front = doc.virtual_node("basics-front-node").unwrap();
        assert_eq!(
            front.spec.backends[0].virtual_service_name(),
            "color.basics.mesh.local"
        );
    }
}
