//! YAML with CloudFormation short-form intrinsics. `serde_yaml_ng` reads `!Ref x` as
//! `Value::Tagged`; inside the document tree a tag is kept as a single-key object
//! `{"!Ref": x}` (CloudFormation keys never start with `!`), and rendered back as the same tag.
//! Converting to JSON turns tags into the long form (`Ref`, `Fn::GetAtt` with a list, `Fn::*`).

use serde_json::{Map, Number, Value};
use serde_yaml_ng::value::{Tag, TaggedValue};

type Yaml = serde_yaml_ng::Value;

/// Parse YAML text into the tree.
pub fn from_yaml_str(text: &str) -> Result<Value, String> {
    let y: Yaml = serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    from_yaml(y)
}

fn from_yaml(y: Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("unsupported number {n} (NaN or infinite)"))?
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(seq) => {
            Value::Array(seq.into_iter().map(from_yaml).collect::<Result<_, _>>()?)
        }
        Yaml::Mapping(map) => {
            let mut m = Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s,
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Null => "null".to_string(),
                    other => {
                        return Err(format!(
                            "unsupported mapping key {other:?}: keys must be scalars"
                        ));
                    }
                };
                m.insert(key, from_yaml(v)?);
            }
            Value::Object(m)
        }
        Yaml::Tagged(t) => {
            let TaggedValue { tag, value } = *t;
            let mut m = Map::new();
            m.insert(tag.to_string(), from_yaml(value)?);
            Value::Object(m)
        }
    })
}

/// The tag name of an encoded short-form intrinsic (`{"!Ref": …}` → `Ref`).
fn tag_of(m: &Map<String, Value>) -> Option<(&str, &Value)> {
    if m.len() != 1 {
        return None;
    }
    let (k, v) = m.iter().next()?;
    let name = k.strip_prefix('!')?;
    (!name.is_empty() && !name.starts_with('!')).then_some((name, v))
}

fn to_yaml(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Yaml::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Yaml::Number(u.into())
            } else {
                Yaml::Number(n.as_f64().unwrap_or(0.0).into())
            }
        }
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Sequence(a.iter().map(to_yaml).collect()),
        Value::Object(m) => {
            if let Some((name, inner)) = tag_of(m) {
                return Yaml::Tagged(Box::new(TaggedValue {
                    tag: Tag::new(name),
                    value: to_yaml(inner),
                }));
            }
            Yaml::Mapping(
                m.iter()
                    .map(|(k, v)| (Yaml::String(k.clone()), to_yaml(v)))
                    .collect(),
            )
        }
    }
}

/// Render the tree as YAML, short tags restored.
pub fn to_yaml_string(v: &Value) -> String {
    // Serialising a Value built from valid data does not fail; fall back to JSON (valid YAML).
    serde_yaml_ng::to_string(&to_yaml(v)).unwrap_or_else(|_| v.to_string())
}

/// Whether the tree holds a short tag (`{"!Tag": value}`) that [`tags_to_long_form`] would rewrite.
pub fn has_short_tags(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(has_short_tags),
        Value::Object(m) => tag_of(m).is_some() || m.values().any(has_short_tags),
        _ => false,
    }
}

/// Replace encoded short tags by long-form intrinsics: `!Ref x` → `{"Ref": x}`,
/// `!GetAtt A.B` → `{"Fn::GetAtt": ["A", "B"]}`, `!Condition c` → `{"Condition": c}`,
/// `!X v` → `{"Fn::X": v}`.
pub fn tags_to_long_form(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(tags_to_long_form).collect()),
        Value::Object(m) => {
            if let Some((name, inner)) = tag_of(m) {
                let inner = tags_to_long_form(inner);
                let (key, value) = match name {
                    "Ref" => ("Ref".to_string(), inner),
                    "Condition" => ("Condition".to_string(), inner),
                    "GetAtt" => {
                        let value = match &inner {
                            Value::String(s) => match s.split_once('.') {
                                Some((a, b)) => Value::Array(vec![Value::from(a), Value::from(b)]),
                                None => inner.clone(),
                            },
                            _ => inner.clone(),
                        };
                        ("Fn::GetAtt".to_string(), value)
                    }
                    other => (format!("Fn::{other}"), inner),
                };
                let mut out = Map::new();
                out.insert(key, value);
                return Value::Object(out);
            }
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), tags_to_long_form(v)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}
