//! `Custom::MeshTaskDefinition` properties: CloudFormation turns every scalar into a string, so each
//! property is coerced to its type here, with errors naming the property.

use serde_json::{Map, Value};
use taskmesh::{InjectOptions, ProxyKind, Redirect};

/// Properties CloudFormation itself adds; not ours to validate.
const CLOUDFORMATION_PROPERTIES: &[&str] = &["ServiceToken", "ServiceTimeout"];

/// Every property the resource takes.
pub const KNOWN_PROPERTIES: &[&str] = &[
    "TaskDefinition",
    "VirtualNode",
    "Mesh",
    "Config",
    "Proxy",
    "Image",
    "Redirect",
    "IngressPort",
    "EgressPort",
    "AdminPort",
    "IgnoredUid",
    "IgnoredGid",
    "EgressIgnoredIps",
    "EgressIgnoredPorts",
    "AppPorts",
    "Resize",
    "Xray",
    "XrayImage",
];

/// A property that cannot be used.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("property {property}: {message}")]
pub struct PropertyError {
    pub property: String,
    pub message: String,
}

fn err(property: &str, message: impl Into<String>) -> PropertyError {
    PropertyError {
        property: property.to_string(),
        message: message.into(),
    }
}

/// What the resource is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTaskDefinitionProperties {
    /// The source task definition: ARN, `family` or `family:revision`.
    pub task_definition: String,
    pub options: InjectOptions,
}

impl MeshTaskDefinitionProperties {
    /// Reads `ResourceProperties`.
    pub fn parse(properties: &Value) -> Result<Self, PropertyError> {
        let empty = Map::new();
        let map = match properties {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => {
                return Err(err(
                    "ResourceProperties",
                    format!("expected an object, got {}", kind(other)),
                ));
            }
        };
        if let Some(unknown) = map.keys().find(|k| {
            !KNOWN_PROPERTIES.contains(&k.as_str())
                && !CLOUDFORMATION_PROPERTIES.contains(&k.as_str())
        }) {
            return Err(err(
                unknown,
                format!("unknown property (known: {})", KNOWN_PROPERTIES.join(", ")),
            ));
        }
        let task_definition = string(map, "TaskDefinition")?.ok_or_else(|| {
            err(
                "TaskDefinition",
                "required: the source task definition ARN (e.g. !Ref MyTaskDefinition)",
            )
        })?;
        let mut o = InjectOptions {
            virtual_node: string(map, "VirtualNode")?,
            mesh: string(map, "Mesh")?,
            config: string(map, "Config")?,
            ..InjectOptions::default()
        };
        if let Some(p) = string(map, "Proxy")? {
            o.proxy = match p.to_ascii_lowercase().as_str() {
                "agent" => ProxyKind::Agent,
                "envoy" => ProxyKind::Envoy,
                _ => return Err(err("Proxy", format!("'{p}' is not one of: agent, envoy"))),
            };
        }
        o.image = string(map, "Image")?;
        if let Some(r) = string(map, "Redirect")? {
            o.redirect = match r.to_ascii_lowercase().as_str() {
                "ecs" => Redirect::Ecs,
                "proxy-init" => Redirect::ProxyInit,
                _ => {
                    return Err(err(
                        "Redirect",
                        format!("'{r}' is not one of: ecs, proxy-init"),
                    ));
                }
            };
        }
        if let Some(p) = port(map, "IngressPort")? {
            o.ingress_port = p;
        }
        if let Some(p) = port(map, "EgressPort")? {
            o.egress_port = p;
        }
        if let Some(p) = port(map, "AdminPort")? {
            o.admin_port = p;
        }
        if let Some(uid) = integer::<u32>(map, "IgnoredUid", "a user id")? {
            o.ignored_uid = uid;
        }
        o.ignored_gid = integer::<u32>(map, "IgnoredGid", "a group id")?;
        o.egress_ignored_ips = list(map, "EgressIgnoredIps")?
            .map(|items| {
                items
                    .into_iter()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s),
                        other => Err(err(
                            &format!("EgressIgnoredIps[{i}]"),
                            format!("expected an IP address or CIDR, got {}", kind(&other)),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        o.egress_ignored_ports = port_list(map, "EgressIgnoredPorts")?;
        o.app_ports = port_list(map, "AppPorts")?;
        if let Some(v) = map.get("Resize") {
            o.resize = boolean("Resize", v)?;
        }
        if let Some(v) = map.get("Xray").filter(|v| !v.is_null()) {
            o.xray = boolean("Xray", v)?;
        }
        o.xray_image = string(map, "XrayImage")?;
        if o.xray_image.is_some() && !o.xray {
            return Err(err(
                "XrayImage",
                "is the image of the X-Ray daemon that Xray: true adds; set Xray: true too",
            ));
        }
        Ok(Self {
            task_definition,
            options: o,
        })
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

fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, PropertyError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(other) => Err(err(key, format!("expected a string, got {}", kind(other)))),
    }
}

fn scalar_text(key: &str, v: &Value) -> Result<String, PropertyError> {
    match v {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(err(key, format!("expected a value, got {}", kind(other)))),
    }
}

fn boolean(key: &str, v: &Value) -> Result<bool, PropertyError> {
    let text = scalar_text(key, v)?;
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(err(key, format!("'{text}' is not true or false"))),
    }
}

fn integer<T: std::str::FromStr>(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<T>, PropertyError> {
    let Some(v) = map.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let text = scalar_text(key, v)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<T>()
        .map(Some)
        .map_err(|_| err(key, format!("'{text}' is not {what}")))
}

fn port(map: &Map<String, Value>, key: &str) -> Result<Option<u16>, PropertyError> {
    integer::<u16>(map, key, "a port number (0-65535)")
}

/// A list property: a JSON list (of strings, as CloudFormation sends them) or one comma-separated
/// string. Items come back with their index.
fn list(map: &Map<String, Value>, key: &str) -> Result<Option<Vec<(usize, Value)>>, PropertyError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items.iter().cloned().enumerate().collect())),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .enumerate()
                .collect(),
        )),
        Some(Value::Number(n)) => Ok(Some(vec![(0, Value::Number(n.clone()))])),
        Some(other) => Err(err(
            key,
            format!(
                "expected a list or a comma-separated string, got {}",
                kind(other)
            ),
        )),
    }
}

fn port_list(map: &Map<String, Value>, key: &str) -> Result<Option<Vec<u16>>, PropertyError> {
    list(map, key)?
        .map(|items| {
            items
                .into_iter()
                .map(|(i, v)| {
                    let name = format!("{key}[{i}]");
                    let text = scalar_text(&name, &v)?;
                    text.parse::<u16>()
                        .map_err(|_| err(&name, format!("'{text}' is not a port number (0-65535)")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
}
