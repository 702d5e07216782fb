//! The real-world ECS task definitions and CloudFormation templates the tests run on, kept in
//! `tests/fixtures/ecs-taskdefs/` (copied verbatim from `../shared/fixtures/ecs-taskdefs/`;
//! provenance and licences in `SOURCES.md` there), with their input format.

use std::path::{Path, PathBuf};

/// Format of a fixture file, as a reader would classify it from its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FixtureKind {
    /// `register-task-definition --cli-input-json` shape.
    ApiJson,
    /// `describe-task-definition` output: wrapped (`{"taskDefinition": …}`) or a console export
    /// with the read-only members (`taskDefinitionArn`, `revision`, …) at the top.
    DescribeOutput,
    /// CloudFormation template in JSON.
    CfnJson,
    /// CloudFormation template in YAML (short-form intrinsics).
    CfnYaml,
}

impl FixtureKind {
    /// Whether the file is a CloudFormation template.
    pub fn is_cfn(self) -> bool {
        matches!(self, FixtureKind::CfnJson | FixtureKind::CfnYaml)
    }
}

/// One fixture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    pub path: PathBuf,
    pub kind: FixtureKind,
}

impl Fixture {
    /// The file name (what `SOURCES.md` lists).
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// `tests/fixtures/ecs-taskdefs/`.
pub fn ecs_taskdefs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ecs-taskdefs")
}

/// Every task-definition fixture (not `SOURCES.md`), sorted by file name. Panics if the
/// directory is unreadable or a JSON fixture does not parse: the fixtures are part of the repo.
pub fn ecs_taskdefs() -> Vec<Fixture> {
    let dir = ecs_taskdefs_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read the fixture directory {}: {err}", dir.display()));
    let mut fixtures: Vec<Fixture> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter_map(|path| classify(&path).map(|kind| Fixture { path, kind }))
        .collect();
    fixtures.sort_by(|a, b| a.path.cmp(&b.path));
    fixtures
}

/// The fixture whose file name contains `needle` (exactly one must match).
pub fn ecs_taskdef(needle: &str) -> Fixture {
    let matches: Vec<Fixture> = ecs_taskdefs()
        .into_iter()
        .filter(|fixture| fixture.name().contains(needle))
        .collect();
    match matches.as_slice() {
        [one] => one.clone(),
        other => panic!(
            "{} fixtures match {needle:?} in {}: {:?}",
            other.len(),
            ecs_taskdefs_dir().display(),
            other.iter().map(Fixture::name).collect::<Vec<_>>()
        ),
    }
}

/// Members only DescribeTaskDefinition returns (transformer-anchors §5.1).
const READ_ONLY_MEMBERS: [&str; 9] = [
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

fn classify(path: &Path) -> Option<FixtureKind> {
    let extension = path.extension()?.to_str()?;
    match extension {
        "yaml" | "yml" => Some(FixtureKind::CfnYaml),
        "json" => {
            let text = std::fs::read(path)
                .unwrap_or_else(|err| panic!("cannot read fixture {}: {err}", path.display()));
            let value: serde_json::Value = serde_json::from_slice(&text)
                .unwrap_or_else(|err| panic!("fixture {} is not JSON: {err}", path.display()));
            Some(if value.get("Resources").is_some() {
                FixtureKind::CfnJson
            } else if value.get("taskDefinition").is_some()
                || READ_ONLY_MEMBERS.iter().any(|key| value.get(key).is_some())
            {
                FixtureKind::DescribeOutput
            } else {
                FixtureKind::ApiJson
            })
        }
        _ => None,
    }
}
