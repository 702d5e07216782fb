//! Property tests of the transformer library on generated task definitions (containers with
//! names, images, port mappings, environment, `dependsOn`, optional cpu/memory, docker labels,
//! awslogs; roles and tags; awsvpc on EC2 or Fargate; either proxy and redirect, with or without
//! `--xray`): injecting twice equals injecting once, and eject(inject(x)) gives back x with
//! every field. Checked on the API shape, through whole documents (parse → inject → render),
//! and on the same definition as a CloudFormation template.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use taskmesh::{
    Document, Format, InjectOptions, Location, ProxyKind, Redirect, eject_document,
    eject_task_definition, inject_document, inject_task_definition,
};

/// Fargate task sizes (cpu units, memory MiB) the generator picks from (transformer-anchors §5.3).
const FARGATE_SIZES: [(u32, u32); 8] = [
    (256, 512),
    (256, 1024),
    (256, 2048),
    (512, 1024),
    (512, 4096),
    (1024, 2048),
    (2048, 8192),
    (4096, 30720),
];

/// Ports the proxy owns; the generator's apps never use them (inject refuses such clashes).
const PROXY_PORTS: [u16; 3] = [15000, 15001, 9901];

#[derive(Debug, Clone)]
struct Container {
    image: String,
    ports: Vec<(u16, Option<&'static str>, bool)>,
    env: Vec<(String, String)>,
    cpu: Option<u32>,
    memory: Option<u32>,
    memory_reservation: Option<u32>,
    essential: Option<bool>,
    depends_on_earlier: Vec<prop::sample::Index>,
    labels: Vec<(String, String)>,
    awslogs: bool,
}

#[derive(Debug, Clone)]
struct Generated {
    family: String,
    fargate: Option<(u32, u32)>,
    roles: bool,
    tags: Vec<(String, String)>,
    containers: Vec<Container>,
    proxy: ProxyKind,
    proxy_init: bool,
    /// `--xray`: the X-Ray daemon sidecar and the proxy's tracing.
    xray: bool,
}

fn image() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-z0-9]{3,8}\\.dkr\\.ecr\\.us-east-1\\.amazonaws\\.com/"),
        "[a-z][a-z0-9-]{0,15}",
        prop::option::of("[a-z0-9][a-z0-9.-]{0,8}"),
    )
        .prop_map(|(registry, repo, tag)| {
            let mut image = registry.unwrap_or_default() + &repo;
            if let Some(tag) = tag {
                image.push(':');
                image.push_str(&tag);
            }
            image
        })
}

fn container() -> impl Strategy<Value = Container> {
    (
        image(),
        vec(
            (
                1u16..=65535,
                prop::option::of(prop::sample::select(vec!["tcp", "udp"])),
                any::<bool>(),
            ),
            0..3,
        ),
        vec(("APP_[A-Z0-9_]{1,10}", "[ -~]{0,24}"), 0..5),
        prop::option::of(0u32..=128),
        prop::option::of(32u32..=256),
        prop::option::of(16u32..=128),
        prop::option::of(any::<bool>()),
        vec(any::<prop::sample::Index>(), 0..3),
        vec(("[a-z][a-z0-9.-]{0,12}", "[ -~]{0,12}"), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(
                image,
                ports,
                env,
                cpu,
                memory,
                memory_reservation,
                essential,
                deps,
                labels,
                awslogs,
            )| Container {
                image,
                ports: ports
                    .into_iter()
                    .filter(|(port, _, _)| !PROXY_PORTS.contains(port))
                    .collect(),
                env,
                cpu,
                memory,
                memory_reservation,
                essential,
                depends_on_earlier: deps,
                labels,
                awslogs,
            },
        )
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        "[a-z][a-z0-9_-]{0,30}",
        prop::option::of(prop::sample::select(FARGATE_SIZES.to_vec())),
        any::<bool>(),
        vec(("[A-Za-z][A-Za-z0-9]{0,8}", "[a-z0-9 ]{0,8}"), 0..3),
        vec(container(), 1..=5),
        prop::sample::select(vec![ProxyKind::Agent, ProxyKind::Envoy]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(family, fargate, roles, tags, containers, proxy, proxy_init, xray)| Generated {
                family,
                fargate,
                roles,
                tags,
                containers,
                proxy,
                // NET_ADMIN (proxy-init) is refused on Fargate.
                proxy_init: proxy_init && fargate.is_none(),
                xray,
            },
        )
}

/// The generated task definition in API (camelCase) shape.
fn task_definition(g: &Generated) -> Value {
    let mut used_ports = std::collections::BTreeSet::new();
    let names: Vec<String> = (0..g.containers.len())
        .map(|i| format!("app-{i}"))
        .collect();
    let containers: Vec<Value> = g
        .containers
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let mut out = Map::new();
            out.insert("name".into(), json!(names[index]));
            out.insert("image".into(), json!(c.image));
            // The first container is always essential (ECS needs one).
            match (index, c.essential) {
                (0, Some(_)) => {
                    out.insert("essential".into(), json!(true));
                }
                (_, Some(essential)) => {
                    out.insert("essential".into(), json!(essential));
                }
                (_, None) => {}
            }
            if let Some(cpu) = c.cpu {
                out.insert("cpu".into(), json!(cpu));
            }
            if let Some(memory) = c.memory {
                out.insert("memory".into(), json!(memory));
            }
            if let Some(reservation) = c.memory_reservation {
                out.insert("memoryReservation".into(), json!(reservation));
            }
            // In awsvpc mode container ports are task-wide: keep them unique.
            let mappings: Vec<Value> = c
                .ports
                .iter()
                .filter(|(port, _, _)| used_ports.insert(*port))
                .map(|(port, protocol, host)| {
                    let mut m = Map::new();
                    m.insert("containerPort".into(), json!(port));
                    if *host {
                        m.insert("hostPort".into(), json!(port));
                    }
                    if let Some(protocol) = protocol {
                        m.insert("protocol".into(), json!(protocol));
                    }
                    Value::Object(m)
                })
                .collect();
            if !mappings.is_empty() {
                out.insert("portMappings".into(), Value::Array(mappings));
            }
            if !c.env.is_empty() {
                let env: Vec<Value> = c
                    .env
                    .iter()
                    .map(|(name, value)| json!({"name": name, "value": value}))
                    .collect();
                out.insert("environment".into(), Value::Array(env));
            }
            if !c.labels.is_empty() {
                let labels: Map<String, Value> = c
                    .labels
                    .iter()
                    .map(|(key, value)| (key.clone(), json!(value)))
                    .collect();
                out.insert("dockerLabels".into(), Value::Object(labels));
            }
            if c.awslogs {
                out.insert(
                    "logConfiguration".into(),
                    json!({"logDriver": "awslogs", "options": {
                        "awslogs-group": format!("/ecs/{}", g.family),
                        "awslogs-region": "us-east-1",
                        "awslogs-stream-prefix": names[index]}}),
                );
            }
            if index > 0 && !c.depends_on_earlier.is_empty() {
                let targets: std::collections::BTreeSet<usize> = c
                    .depends_on_earlier
                    .iter()
                    .map(|i| i.index(index))
                    .collect();
                let deps: Vec<Value> = targets
                    .into_iter()
                    .map(|t| json!({"containerName": names[t], "condition": "START"}))
                    .collect();
                out.insert("dependsOn".into(), Value::Array(deps));
            }
            Value::Object(out)
        })
        .collect();
    let mut td = Map::new();
    td.insert("family".into(), json!(g.family));
    td.insert("networkMode".into(), json!("awsvpc"));
    td.insert("containerDefinitions".into(), Value::Array(containers));
    if g.roles {
        td.insert(
            "executionRoleArn".into(),
            json!("arn:aws:iam::123456789012:role/ecsTaskExecutionRole"),
        );
        td.insert(
            "taskRoleArn".into(),
            json!(format!("{}-task-role", g.family)),
        );
    }
    if !g.tags.is_empty() {
        let tags: Vec<Value> = g
            .tags
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect();
        td.insert("tags".into(), Value::Array(tags));
    }
    if let Some((cpu, memory)) = g.fargate {
        td.insert("requiresCompatibilities".into(), json!(["FARGATE"]));
        td.insert("cpu".into(), json!(cpu.to_string()));
        td.insert("memory".into(), json!(memory.to_string()));
    }
    Value::Object(td)
}

/// The same definition as a CloudFormation JSON template (PascalCase properties).
fn template(td: &Value) -> Value {
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "untouched"}},
            "TaskDef": {"Type": "AWS::ECS::TaskDefinition", "Properties": pascal(td)}
        }
    })
}

/// camelCase → PascalCase keys, recursively (exact for every key the generator writes);
/// the keys of `dockerLabels` and `logConfiguration.options` are data and stay as they are.
fn pascal(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| {
                    let mut chars = key.chars();
                    let upper = chars
                        .next()
                        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                        .unwrap_or_default();
                    let v = if key == "dockerLabels" || key == "options" {
                        v.clone()
                    } else {
                        pascal(v)
                    };
                    (upper, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(pascal).collect()),
        other => other.clone(),
    }
}

fn options(g: &Generated) -> InjectOptions {
    InjectOptions {
        mesh: Some("generated-mesh".into()),
        config: Some("file:///etc/taskmesh/mesh.json".into()),
        proxy: g.proxy,
        redirect: if g.proxy_init {
            Redirect::ProxyInit
        } else {
            Redirect::Ecs
        },
        xray: g.xray,
        ..InjectOptions::default()
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn inject_is_idempotent_and_eject_restores_every_field(g in generated()) {
        let td = task_definition(&g);
        let opts = options(&g);
        let loc = Location::file("generated.json");
        let once = inject_task_definition(&td, &opts, &loc)
            .unwrap_or_else(|err| panic!("inject refused a valid definition: {err}\n{td:#}"));
        prop_assert_ne!(&once.value, &td, "inject changed nothing");
        prop_assert!(taskmesh::is_meshed(&once.value));
        let twice = inject_task_definition(&once.value, &opts, &loc)
            .unwrap_or_else(|err| panic!("inject refused its own output: {err}"));
        prop_assert_eq!(&twice.value, &once.value, "inject(inject(x)) != inject(x)");
        let ejected = eject_task_definition(&once.value, &loc)
            .unwrap_or_else(|err| panic!("eject refused inject's output: {err}"));
        prop_assert_eq!(&ejected, &td, "eject(inject(x)) != x");
        prop_assert!(!taskmesh::is_meshed(&ejected));
    }

    #[test]
    fn documents_round_trip_through_render_and_parse(g in generated()) {
        let td = task_definition(&g);
        let opts = options(&g);
        let text = serde_json::to_string_pretty(&td).expect("serialize");
        let doc = Document::parse(text.as_bytes(), "generated.json").expect("parse");
        prop_assert_eq!(doc.format(), Format::ApiJson);
        let (once, _) = inject_document(&doc, &opts).expect("inject");
        let rendered = once.render();
        let reparsed = Document::parse(rendered.as_bytes(), "injected.json").expect("reparse");
        let (twice, _) = inject_document(&reparsed, &opts).expect("inject again");
        prop_assert_eq!(twice.render(), rendered, "rendered inject(inject(x)) != inject(x)");
        let ejected = eject_document(&reparsed, &opts).expect("eject");
        let back: Value = serde_json::from_str(&ejected.render()).expect("ejected JSON");
        prop_assert_eq!(back, td);
    }

    #[test]
    fn cloudformation_templates_round_trip(g in generated(), yaml in any::<bool>()) {
        let input = template(&task_definition(&g));
        let opts = options(&g);
        let text = serde_json::to_string_pretty(&input).expect("serialize");
        let doc = Document::parse(text.as_bytes(), "template.json").expect("parse template");
        prop_assert_eq!(doc.format(), Format::CfnJson);
        let doc = if yaml {
            let yaml_text = doc.render_as(taskmesh::Syntax::Yaml);
            let doc = Document::parse(yaml_text.as_bytes(), "template.yaml").expect("parse YAML");
            prop_assert_eq!(doc.format(), Format::CfnYaml);
            doc
        } else {
            doc
        };
        let (once, _) = inject_document(&doc, &opts).expect("inject template");
        prop_assert_eq!(&once.value()["Resources"]["Queue"], &input["Resources"]["Queue"]);
        let (twice, _) = inject_document(&once, &opts).expect("inject template again");
        prop_assert_eq!(twice.value(), once.value(), "template inject not idempotent");
        prop_assert_eq!(twice.render(), once.render());
        let ejected = eject_document(&once, &opts).expect("eject template");
        prop_assert_eq!(ejected.value(), &input, "eject(inject(template)) != template");
    }
}
