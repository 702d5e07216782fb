//! Input and output formats: detecting ECS API JSON, `describe-task-definition` output and
//! CloudFormation JSON/YAML ([`detect`]), parsing into one JSON tree ([`Document`]), and rendering
//! back in the same format, key order, indentation and intrinsic style ([`yaml`] keeps short
//! tags such as `!Ref` / `!Sub` as `{"!Ref": …}` inside the tree).

pub mod describe;
pub mod detect;
pub mod splice;
pub mod yaml;

use serde_json::Value;

use crate::error::{Location, TransformError};

/// The kind of input (and output) file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `aws ecs register-task-definition --cli-input-json` shape.
    ApiJson,
    /// `aws ecs describe-task-definition` output (`{"taskDefinition": …, "tags": …}`) or a
    /// console export carrying read-only fields; transformed output is API JSON.
    DescribeOutput,
    /// CloudFormation template, JSON.
    CfnJson,
    /// CloudFormation template, YAML (short-form intrinsics kept).
    CfnYaml,
}

impl Format {
    /// Whether this is a CloudFormation template.
    pub fn is_cfn(self) -> bool {
        matches!(self, Format::CfnJson | Format::CfnYaml)
    }
}

/// The output syntax asked for with `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Json,
    Yaml,
}

/// One input file: its format and its tree (YAML short tags encoded as `{"!Tag": value}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    format: Format,
    tree: Value,
    source: String,
    /// JSON indentation of the input (e.g. 2 or 4 spaces, or a tab).
    indent: String,
    trailing_newline: bool,
    /// A YAML template's original text and tree, so unchanged parts render byte for byte.
    original: Option<std::sync::Arc<(String, Value)>>,
}

impl Document {
    /// Parse a file in any supported format. `source` is the file name (or `-`) for messages.
    pub fn parse(bytes: &[u8], source: &str) -> Result<Document, TransformError> {
        let loc = Location::file(source);
        let text = std::str::from_utf8(bytes).map_err(|e| TransformError::Parse {
            location: loc.clone(),
            message: format!("not UTF-8 text: {e}"),
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let (format, tree) = detect::detect(text, &loc)?;
        let original = (format == Format::CfnYaml)
            .then(|| std::sync::Arc::new((text.to_string(), tree.clone())));
        Ok(Document {
            format,
            tree,
            source: source.to_string(),
            indent: detect::json_indent(text),
            trailing_newline: text.ends_with('\n'),
            original,
        })
    }

    /// Build a document from a tree (e.g. a CloudFormation macro fragment).
    pub fn from_value(format: Format, tree: Value, source: &str) -> Document {
        Document {
            format,
            tree,
            source: source.to_string(),
            indent: "  ".to_string(),
            trailing_newline: true,
            original: None,
        }
    }

    /// The detected format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The tree (YAML short tags encoded as single-key `{"!Tag": value}` objects).
    pub fn value(&self) -> &Value {
        &self.tree
    }

    /// The file name given to [`Document::parse`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The same document with another tree and format, keeping source and layout.
    pub(crate) fn with_tree(&self, format: Format, tree: Value) -> Document {
        // Field by field: `..self.clone()` would deep-copy the old tree only to drop it.
        Document {
            format,
            tree,
            source: self.source.clone(),
            indent: self.indent.clone(),
            trailing_newline: self.trailing_newline,
            original: self.original.clone(),
        }
    }

    /// Render in the input's format, key order, indentation and intrinsic style.
    pub fn render(&self) -> String {
        match self.format {
            Format::CfnYaml => self.render_as(Syntax::Yaml),
            _ => self.render_as(Syntax::Json),
        }
    }

    /// Render as JSON or YAML (`-o`). YAML short tags become long-form intrinsics in JSON.
    pub fn render_as(&self, syntax: Syntax) -> String {
        let mut out = match syntax {
            Syntax::Json => {
                // Only a tree with short tags needs the rewritten copy.
                let long_form;
                let tree = if yaml::has_short_tags(&self.tree) {
                    long_form = yaml::tags_to_long_form(&self.tree);
                    &long_form
                } else {
                    &self.tree
                };
                let mut buf = Vec::new();
                let fmt = serde_json::ser::PrettyFormatter::with_indent(self.indent.as_bytes());
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
                // Serialising a serde_json::Value into a Vec cannot fail.
                let _ = serde::Serialize::serialize(tree, &mut ser);
                String::from_utf8(buf).unwrap_or_default()
            }
            Syntax::Yaml => match &self.original {
                Some(orig) => splice::splice(&orig.0, &orig.1, &self.tree)
                    .unwrap_or_else(|| yaml::to_yaml_string(&self.tree)),
                None => yaml::to_yaml_string(&self.tree),
            },
        };
        if self.trailing_newline && !out.ends_with('\n') {
            out.push('\n');
        }
        if !self.trailing_newline && syntax == Syntax::Json {
            while out.ends_with('\n') {
                out.pop();
            }
        }
        out
    }
}
