//! Where things are and what went wrong: [`Location`] (file, resource, container, field),
//! [`TransformError`] (bad input or usage, exit code 2), [`Finding`] (what `check` reports) and
//! [`Note`] (what a successful transformation wants the user to know, e.g. a Fargate resize).

use std::fmt;

/// Where something is: file, CloudFormation resource (logical id), container, field.
///
/// Displays as `file.yaml: resource TaskDef: container 'app': field PortMappings[0].ContainerPort`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The file name, or `-` for standard input.
    pub file: String,
    /// The CloudFormation logical id of the task definition, when the input is a template.
    pub resource: Option<String>,
    /// The container name (or `#index` when the container has no literal name).
    pub container: Option<String>,
    /// The field, in the document's own casing (`networkMode` or `NetworkMode`).
    pub field: Option<String>,
}

impl Location {
    /// A location naming only the file.
    pub fn file(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            ..Self::default()
        }
    }
    /// The same location inside CloudFormation resource `logical_id`.
    pub fn with_resource(&self, logical_id: impl Into<String>) -> Self {
        Self {
            resource: Some(logical_id.into()),
            container: None,
            field: None,
            ..self.clone()
        }
    }
    /// The same location inside container `name`.
    pub fn with_container(&self, name: impl Into<String>) -> Self {
        Self {
            container: Some(name.into()),
            field: None,
            ..self.clone()
        }
    }
    /// The same location at field `field`.
    pub fn with_field(&self, field: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..self.clone()
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            if self.file.is_empty() {
                "-"
            } else {
                &self.file
            }
        )?;
        if let Some(r) = &self.resource {
            write!(f, ": resource {r}")?;
        }
        if let Some(c) = &self.container {
            write!(f, ": container '{c}'")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        Ok(())
    }
}

/// Why a transformation was refused. Every variant names where (file, resource, container,
/// field) and, where there is one, the fix. All map to exit code 2.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TransformError {
    /// The input could not be read as any supported format.
    #[error("{location}: cannot parse: {message}")]
    Parse { location: Location, message: String },
    /// The options are incomplete or contradict the input (e.g. no mesh name).
    #[error("{location}: {message}")]
    Usage { location: Location, message: String },
    /// The task definition breaks a rule that the mesh needs (e.g. bridge network mode).
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
}

impl TransformError {
    /// The process exit code for this error: always 2 (bad input or usage).
    pub fn exit_code(&self) -> i32 {
        2
    }
    /// Where the problem is.
    pub fn location(&self) -> &Location {
        match self {
            Self::Parse { location, .. }
            | Self::Usage { location, .. }
            | Self::Invalid { location, .. } => location,
        }
    }
    pub(crate) fn invalid(location: Location, message: impl Into<String>) -> Self {
        Self::Invalid {
            location,
            message: message.into(),
        }
    }
    pub(crate) fn usage(location: Location, message: impl Into<String>) -> Self {
        Self::Usage {
            location,
            message: message.into(),
        }
    }
}

/// How bad a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Works, but not as intended (e.g. legacy App Mesh wiring that no longer has a control plane).
    Warning,
    /// ECS will refuse it, or the mesh will not work.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// One problem reported by `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// [`Location`] rendered as text.
    pub location: String,
    pub message: String,
    pub severity: Severity,
}

impl Finding {
    pub(crate) fn error(location: &Location, message: impl Into<String>) -> Self {
        Self {
            location: location.to_string(),
            message: message.into(),
            severity: Severity::Error,
        }
    }
    pub(crate) fn warning(location: &Location, message: impl Into<String>) -> Self {
        Self {
            location: location.to_string(),
            message: message.into(),
            severity: Severity::Warning,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.severity, self.location, self.message)
    }
}

/// Something a successful transformation tells the user (printed on stderr by the CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// [`Location`] rendered as text.
    pub location: String,
    pub message: String,
}

impl Note {
    pub(crate) fn new(location: &Location, message: impl Into<String>) -> Self {
        Self {
            location: location.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "note: {}: {}", self.location, self.message)
    }
}
