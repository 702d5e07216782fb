//! Mesh-document tooling for the `taskmesh mesh …` subcommands: compiling the App Mesh
//! resources of a CloudFormation template into a mesh document ([`from_template`]).

pub mod from_template;

pub use from_template::{
    FromTemplateError, TemplateInputs, TemplateProblem, from_template, from_template_with,
};
