//! `describe-task-definition` output to a registrable task definition: unwrap
//! `{"taskDefinition": …}`, keep the sibling `tags` (an empty list is dropped), drop the
//! read-only fields and every `null`
//! (empty strings, e.g. in `proxyConfiguration.properties[].value`, are kept).

use serde_json::{Map, Value};

/// Fields DescribeTaskDefinition returns that RegisterTaskDefinition refuses.
pub const READ_ONLY_FIELDS: [&str; 9] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
    "deleteRequestedAt",
];

/// The registrable task definition inside describe output (or a console export).
pub fn to_registrable(v: &Value) -> Map<String, Value> {
    let Some(top) = v.as_object() else {
        return Map::new();
    };
    let mut td = match top.get("taskDefinition").and_then(Value::as_object) {
        Some(inner) => {
            let mut td = inner.clone();
            // Empty tags mean nothing to register; non-empty ones are kept.
            if let Some(tags) = top
                .get("tags")
                .filter(|t| t.as_array().is_none_or(|a| !a.is_empty()))
            {
                td.insert("tags".to_string(), tags.clone());
            }
            td
        }
        None => top.clone(),
    };
    for f in READ_ONLY_FIELDS {
        td.shift_remove(f);
    }
    if td
        .get("tags")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        td.shift_remove("tags");
    }
    let mut out = Value::Object(td);
    drop_nulls(&mut out);
    match out {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Remove every `null` (object members and array items), recursively.
pub fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => {
            a.retain(|x| !x.is_null());
            a.iter_mut().for_each(drop_nulls);
        }
        _ => {}
    }
}
