//! From bytes to collected `*Data` elements: JSON or YAML, then every accepted shape
//! (canonical document, `{"mesh": {...}}`, an array of `describe-*` outputs such as
//! `{"route": {...}}`, raw API bodies told apart by their name keys). Each element remembers
//! where it came from so problems name the path the user wrote.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{DocumentError, Problem};
use crate::model::{MeshSpec, RouteData, VirtualNodeData, VirtualRouterData, VirtualServiceData};

/// Elements gathered from a document, each with its origin path.
#[derive(Default)]
pub(crate) struct Collected {
    /// Every mesh name seen, with the path it was seen at.
    pub mesh_names: Vec<(String, String)>,
    pub spec: Option<MeshSpec>,
    pub virtual_services: Vec<(VirtualServiceData, String)>,
    pub virtual_routers: Vec<(VirtualRouterData, String)>,
    pub routes: Vec<(RouteData, String)>,
    pub virtual_nodes: Vec<(VirtualNodeData, String)>,
    pub problems: Vec<Problem>,
}

/// Parses bytes as JSON (when they look like JSON) or YAML into a JSON value.
pub(crate) fn parse_bytes(bytes: &[u8]) -> Result<Value, DocumentError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first.is_none() {
        return Err(DocumentError::Syntax {
            format: "JSON or YAML",
            message: "the document is empty".into(),
        });
    }
    if matches!(first, Some(b'{') | Some(b'[')) {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => return Ok(v),
            Err(json_err) => {
                // Flow-style YAML also starts with `{` or `[`.
                return serde_yaml_ng::from_slice::<Value>(bytes).map_err(|_| {
                    DocumentError::Syntax {
                        format: "JSON",
                        message: json_err.to_string(),
                    }
                });
            }
        }
    }
    parse_yaml(bytes)
}

/// YAML, possibly several documents (`---`): several become a list, like a JSON array of
/// `describe-*` outputs.
fn parse_yaml(bytes: &[u8]) -> Result<Value, DocumentError> {
    use serde::Deserialize;
    let syntax = |e: serde_yaml_ng::Error| DocumentError::Syntax {
        format: "YAML",
        message: e.to_string(),
    };
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_slice(bytes) {
        docs.push(Value::deserialize(de).map_err(syntax)?);
    }
    match docs.len() {
        0 => Err(DocumentError::Syntax {
            format: "YAML",
            message: "the document is empty".into(),
        }),
        1 => Ok(docs.pop().unwrap_or(Value::Null)),
        _ => Ok(Value::Array(docs)),
    }
}

/// Joins a path prefix and a segment (`""+"routes[0]"`, `"[3]"+"route"` → `"[3].route"`).
pub(crate) fn join(prefix: &str, segment: &str) -> String {
    if prefix.is_empty() {
        segment.to_owned()
    } else if segment.is_empty() {
        prefix.to_owned()
    } else if segment.starts_with('[') {
        format!("{prefix}{segment}")
    } else {
        format!("{prefix}.{segment}")
    }
}

const WRAPPERS: [&str; 5] = [
    "mesh",
    "virtualService",
    "virtualRouter",
    "route",
    "virtualNode",
];
const LISTS: [&str; 4] = [
    "virtualServices",
    "virtualRouters",
    "routes",
    "virtualNodes",
];
const NAME_KEYS: [&str; 5] = [
    "meshName",
    "virtualServiceName",
    "virtualRouterName",
    "routeName",
    "virtualNodeName",
];

impl Collected {
    /// Collects every element of a parsed document.
    pub(crate) fn from_value(value: Value) -> Collected {
        let mut c = Collected::default();
        match value {
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    c.item(item, format!("[{i}]"));
                }
            }
            other => c.item(other, String::new()),
        }
        c
    }

    fn item(&mut self, value: Value, origin: String) {
        let Value::Object(obj) = value else {
            self.problems.push(Problem::new(
                origin,
                format!(
                    "expected an object (a mesh document or an App Mesh resource), found {}",
                    kind(&value)
                ),
            ));
            return;
        };
        let has_names = NAME_KEYS.iter().any(|k| obj.contains_key(*k));
        let has_lists = LISTS.iter().any(|k| obj.contains_key(*k));
        if !has_names && !has_lists {
            if let Some(key) = WRAPPERS
                .iter()
                .find(|k| obj.get(**k).is_some_and(Value::is_object))
            {
                let key = *key;
                let mut obj = obj;
                let inner = obj.remove(key).unwrap_or(Value::Null);
                let path = join(&origin, key);
                if key == "mesh" {
                    self.item(inner, path);
                } else {
                    self.element(key, inner, path);
                }
                return;
            }
            self.problems.push(Problem::new(
                origin,
                "not a mesh document: expected meshName with virtualServices/virtualRouters/routes/\
                 virtualNodes, a describe-* output such as {\"route\": {...}}, or an App Mesh resource body",
            ));
            return;
        }
        if has_lists {
            self.document(obj, origin);
        } else if obj.contains_key("routeName") {
            self.element("route", Value::Object(obj), origin);
        } else if obj.contains_key("virtualNodeName") {
            self.element("virtualNode", Value::Object(obj), origin);
        } else if obj.contains_key("virtualServiceName") {
            self.element("virtualService", Value::Object(obj), origin);
        } else if obj.contains_key("virtualRouterName") {
            self.element("virtualRouter", Value::Object(obj), origin);
        } else {
            // meshName only: a MeshData body, i.e. a document without elements.
            self.document(obj, origin);
        }
    }

    fn document(&mut self, mut obj: Map<String, Value>, origin: String) {
        match obj.remove("meshName") {
            Some(Value::String(name)) => self.mesh_names.push((name, join(&origin, "meshName"))),
            Some(Value::Null) | None => {}
            Some(other) => self.problems.push(Problem::new(
                join(&origin, "meshName"),
                format!("expected a string, found {}", kind(&other)),
            )),
        }
        if let Some(spec) = obj.remove("spec").filter(|v| !v.is_null())
            && let Some(spec) = self.deserialize::<MeshSpec>(spec, &join(&origin, "spec"))
            && self.spec.is_none()
        {
            self.spec = Some(spec);
        }
        for (list, element) in
            LISTS
                .iter()
                .zip(["virtualService", "virtualRouter", "route", "virtualNode"])
        {
            match obj.remove(*list) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let path = join(&origin, &format!("{list}[{i}]"));
                        self.element(element, item, path);
                    }
                }
                Some(other) => self.problems.push(Problem::new(
                    join(&origin, list),
                    format!("expected a list, found {}", kind(&other)),
                )),
            }
        }
    }

    fn element(&mut self, element: &str, value: Value, origin: String) {
        if let Some(Value::String(mesh)) = value.get("meshName") {
            self.mesh_names
                .push((mesh.clone(), join(&origin, "meshName")));
        }
        match element {
            "virtualService" => {
                if let Some(mut d) = self.deserialize::<VirtualServiceData>(value, &origin) {
                    d.mesh_name = None;
                    self.virtual_services.push((d, origin));
                }
            }
            "virtualRouter" => {
                if let Some(mut d) = self.deserialize::<VirtualRouterData>(value, &origin) {
                    d.mesh_name = None;
                    self.virtual_routers.push((d, origin));
                }
            }
            "route" => {
                if let Some(mut d) = self.deserialize::<RouteData>(value, &origin) {
                    d.mesh_name = None;
                    self.routes.push((d, origin));
                }
            }
            "virtualNode" => {
                if let Some(mut d) = self.deserialize::<VirtualNodeData>(value, &origin) {
                    d.mesh_name = None;
                    self.virtual_nodes.push((d, origin));
                }
            }
            _ => self.problems.push(Problem::new(
                origin,
                format!("unknown element kind {element}"),
            )),
        }
    }

    fn deserialize<T: DeserializeOwned>(&mut self, value: Value, origin: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let path = if inner == "." {
                    origin.to_owned()
                } else {
                    join(origin, &inner)
                };
                self.problems
                    .push(Problem::new(path, e.into_inner().to_string()));
                None
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
