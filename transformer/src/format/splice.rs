//! Keeping a YAML template's text: when only some resources changed, their text is replaced in
//! the original (re-serialised at the original indentation) and every other line — comments,
//! blank lines, quoting, flow style — stays byte for byte. The result is parsed back and must
//! equal the new tree; otherwise the caller renders the whole document instead.

use serde_json::{Map, Value};

use super::yaml;

/// The original text with the changed top-level `Resources` entries re-rendered, or `None` when
/// that cannot be done safely (then the whole document is rendered).
pub fn splice(original_text: &str, original: &Value, current: &Value) -> Option<String> {
    let (orig, cur) = (original.as_object()?, current.as_object()?);
    // Everything but Resources must be unchanged, and the resources the same ids in the same order.
    if orig.len() != cur.len()
        || orig
            .iter()
            .zip(cur)
            .any(|((k1, v1), (k2, v2))| k1 != k2 || (k1 != "Resources" && v1 != v2))
    {
        return None;
    }
    let (ro, rc) = (
        orig.get("Resources")?.as_object()?,
        cur.get("Resources")?.as_object()?,
    );
    if ro.len() != rc.len() || ro.keys().zip(rc.keys()).any(|(a, b)| a != b) {
        return None;
    }
    let changed: Vec<&String> = ro
        .iter()
        .filter(|(k, v)| rc.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    if changed.is_empty() {
        return Some(original_text.to_string());
    }

    let lines: Vec<&str> = original_text.split_inclusive('\n').collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "Resources:" || l.starts_with("Resources: #"))?;
    let is_content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    let indent_of = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let end = lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .find(|(_, l)| is_content(l) && indent_of(l) == 0)
        .map_or(lines.len(), |(i, _)| i);
    let first = lines[start + 1..end].iter().find(|l| is_content(l))?;
    let indent = indent_of(first);
    if indent == 0 || first.trim_start().starts_with('-') {
        return None;
    }

    // Resource key lines at `indent`, in order.
    let mut keys: Vec<(usize, String)> = Vec::new();
    for (i, l) in lines.iter().enumerate().take(end).skip(start + 1) {
        if is_content(l) && indent_of(l) == indent {
            let key = l
                .trim_start()
                .split(':')
                .next()?
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string();
            keys.push((i, key));
        } else if is_content(l) && indent_of(l) < indent {
            return None;
        }
    }
    if keys.len() != ro.len() || keys.iter().zip(ro.keys()).any(|((_, a), b)| a != b) {
        return None;
    }

    let mut out = String::with_capacity(original_text.len() * 2);
    let mut cursor = 0;
    for (n, (line, key)) in keys.iter().enumerate() {
        if !changed.contains(&key) {
            continue;
        }
        // The span: from the key line to the last content line before the next key / section end.
        let limit = keys.get(n + 1).map_or(end, |(l, _)| *l);
        let last = (*line..limit)
            .rev()
            .find(|&i| is_content(lines[i]) && indent_of(lines[i]) > indent)
            .unwrap_or(*line);
        out.extend(lines[cursor..*line].iter().copied());
        let mut one = Map::new();
        one.insert(key.clone(), rc.get(key)?.clone());
        let rendered = yaml::to_yaml_string(&Value::Object(one));
        let pad = " ".repeat(indent);
        for l in rendered.lines() {
            out.push_str(&pad);
            out.push_str(l);
            out.push('\n');
        }
        cursor = last + 1;
    }
    out.extend(lines[cursor..].iter().copied());
    if !original_text.ends_with('\n') && out.ends_with('\n') && cursor >= lines.len() {
        out.pop();
    }
    let check = yaml::from_yaml_str(&out).ok()?;
    (check == *current).then_some(out)
}
