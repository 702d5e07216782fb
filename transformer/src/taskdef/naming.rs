//! Key names in the document's own casing. inject/eject/check work on the task definition as
//! it is (API `camelCase` or CloudFormation `PascalCase`) and ask [`Casing::k`] for every key,
//! instead of converting whole documents back and forth. Also: recognising CloudFormation
//! intrinsic functions, which are opaque values everywhere.

use serde_json::{Map, Value};

/// The casing of a task definition, and how intrinsics are written in its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Casing {
    /// ECS API shape (`containerDefinitions`, `proxyConfiguration.properties`).
    Api,
    /// CloudFormation `AWS::ECS::TaskDefinition` properties (`ContainerDefinitions`,
    /// `ProxyConfiguration.ProxyConfigurationProperties`). `short_tags` says the document is
    /// YAML whose intrinsics are kept as short tags (encoded as `{"!Join": …}` in the tree).
    Cfn { short_tags: bool },
}

impl Casing {
    /// The key for API name `api` (camelCase) in this casing. CloudFormation upper-cases the
    /// first letter, except the names of reference/transformer-anchors §5.9 that matter here:
    /// `proxyConfiguration.properties` is `ProxyConfigurationProperties`.
    pub fn k(self, api: &str) -> String {
        match self {
            Casing::Api => api.to_string(),
            Casing::Cfn { .. } => match api {
                "properties" => "ProxyConfigurationProperties".to_string(),
                _ => {
                    let mut chars = api.chars();
                    match chars.next() {
                        Some(first) => first.to_uppercase().chain(chars).collect(),
                        None => String::new(),
                    }
                }
            },
        }
    }

    /// Whether this is a CloudFormation task definition.
    pub fn is_cfn(self) -> bool {
        matches!(self, Casing::Cfn { .. })
    }

    /// `Fn::Join` with `sep` over `parts`, written the way the document writes intrinsics.
    pub fn join(self, sep: &str, parts: Vec<Value>) -> Value {
        let key = match self {
            Casing::Cfn { short_tags: true } => "!Join",
            _ => "Fn::Join",
        };
        let mut m = Map::new();
        m.insert(
            key.to_string(),
            Value::Array(vec![Value::String(sep.to_string()), Value::Array(parts)]),
        );
        Value::Object(m)
    }
}

/// Whether `v` is a CloudFormation intrinsic function (`{"Ref": …}`, `{"Fn::…": …}`,
/// `{"Condition": …}`, or a YAML short tag kept as `{"!Tag": …}`). Intrinsics are opaque:
/// nothing is ever read out of them.
pub fn is_intrinsic(v: &Value) -> bool {
    match v {
        Value::Object(m) if m.len() == 1 => m.keys().next().is_some_and(|k| {
            k == "Ref" || k == "Condition" || k.starts_with("Fn::") || k.starts_with('!')
        }),
        _ => false,
    }
}

/// A field path for messages: `containerDefinitions[2].portMappings[0].containerPort`.
pub fn path(parts: &[&str]) -> String {
    parts.join(".")
}
