//! Errors of reading a mesh document: unparseable bytes, or a list of problems each with the
//! path of the offending field.

use std::fmt;

/// One problem found in a mesh document, with the path of the field it is about
/// (e.g. `routes[2].spec.httpRoute.action.weightedTargets[0].virtualNode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a mesh document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// The bytes are neither JSON nor YAML (or not UTF-8).
    #[error("mesh document is not valid {format}: {message}")]
    Syntax {
        format: &'static str,
        message: String,
    },
    /// The document parsed but has problems; every one is listed.
    #[error("mesh document is invalid ({} problem{}):{}", problems.len(),
            if problems.len() == 1 { "" } else { "s" }, ProblemList(problems))]
    Invalid { problems: Vec<Problem> },
}

impl DocumentError {
    /// The problems (empty for a syntax error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            DocumentError::Syntax { .. } => &[],
            DocumentError::Invalid { problems } => problems,
        }
    }

    pub(crate) fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        DocumentError::Invalid {
            problems: vec![Problem::new(path, message)],
        }
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}
