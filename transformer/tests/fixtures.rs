//! Every real task definition and template in `tests/fixtures/ecs-taskdefs/` (the repository's
//! verbatim copy of `../shared/fixtures/ecs-taskdefs/`; SOURCES.md
//! there says where each comes from) goes through inject, inject again, check and eject, with the
//! expected outcome for each: the meshable ones must inject idempotently, check clean, keep
//! their identity, and eject back; the negative ones (bridge, host, default network mode,
//! Windows) must be refused with a message naming file, resource, field and the fix. The
//! injected task definitions are golden snapshots (tests/snapshots/), reviewed by hand against
//! reference/transformer-anchors §0.

use std::path::PathBuf;

use serde_json::Value;
use taskmesh::{
    Document, Format, INJECTED_LABEL, InjectOptions, Severity, TransformError, check_document,
    eject_document, inject_document,
};

fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TASKMESH_FIXTURES") {
        return PathBuf::from(dir);
    }
    // The repository's verbatim copy of shared/fixtures/ecs-taskdefs (see tests/src/fixtures.rs).
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ecs-taskdefs")
}

fn load(file: &str) -> Document {
    let path = fixtures_dir().join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read fixture {} ({e}); the fixtures live in tests/fixtures/ecs-taskdefs in the workspace, or set TASKMESH_FIXTURES",
            path.display()
        )
    });
    Document::parse(&bytes, file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn opts() -> InjectOptions {
    InjectOptions {
        mesh: Some("colorapp".into()),
        config: Some("s3://my-bucket/colorapp.yaml".into()),
        ..InjectOptions::default()
    }
}

enum Expect {
    /// Injects; `plain` = had no mesh before (so eject(inject(x)) must equal x exactly);
    /// `notes` = substrings that must appear in the notes.
    Meshes {
        plain: bool,
        notes: &'static [&'static str],
    },
    /// Refused with exit 2; the message must contain every substring.
    Refused(&'static [&'static str]),
}

const F: &[(&str, &str, Expect)] = &[
    (
        "aws__aws-app-mesh-examples__walkthroughs__howto-ecs-basics__deploy__2-meshify.yaml",
        "01_meshify",
        Expect::Meshes {
            plain: false,
            notes: &["kept the existing APPMESH_RESOURCE_ARN"],
        },
    ),
    (
        "aws__aws-app-mesh-examples__walkthroughs__howto-ecs-basics__deploy__0-prelude.yaml",
        "02_prelude",
        Expect::Meshes {
            plain: true,
            notes: &[],
        },
    ),
    (
        "aws__aws-app-mesh-examples__walkthroughs__howto-ingress-gateway__infrastructure__ecs-service.yaml",
        "03_ingress_gateway",
        Expect::Meshes {
            plain: false,
            notes: &["ColorGatewayTaskDefinition: skipped: an App Mesh virtual gateway"],
        },
    ),
    (
        "aws__aws-app-mesh-examples__walkthroughs__howto-metrics-extension-ecs__deploy__djapp-v1.yaml",
        "04_djapp",
        Expect::Meshes {
            plain: false,
            notes: &["DJAppGatewayTaskDef: skipped: an App Mesh virtual gateway"],
        },
    ),
    (
        "aws__aws-app-mesh-examples__blogs__ecs-service-connectivity__yelb__deployments__platformdeployment__AWS__ECS__yelb-cloudformation-ECS-AppMesh-deployment.yaml",
        "05_yelb",
        Expect::Meshes {
            plain: false,
            notes: &[],
        },
    ),
    (
        "aws__aws-app-mesh-examples__examples__apps__colorapp__ecs__ecs-colorapp.at-c736c86.yaml",
        "06_preview_proxyinit",
        Expect::Meshes {
            plain: false,
            notes: &[],
        },
    ),
    (
        "cdklabs__cdk-ecs-service-extensions__test__all-service-addons.integ.snapshot__aws-ecs-integ.template.json",
        "07_cdk_appmesh_extension",
        Expect::Meshes {
            plain: false,
            notes: &[
                "Fargate task size raised from Cpu 1024 / Memory 2048 to Cpu 2048 / Memory 4096",
            ],
        },
    ),
    (
        "aws__aws-cdk__packages__@aws-cdk-testing__framework-integ__test__aws-ecs__test__ec2__integ.app-mesh-proxy-config.js.snapshot__aws-ecs-integ-appmesh-proxy.template.json.EXTRACT-taskdef-only.json",
        "08_cdk_proxy_config",
        Expect::Meshes {
            plain: false,
            notes: &[],
        },
    ),
    (
        "aws-samples__aws-containers-task-definitions__nginx__nginx_fargate.json",
        "09_nginx_fargate",
        Expect::Meshes {
            plain: true,
            notes: &["Fargate task size raised from cpu 256 / memory 512 to cpu 512 / memory 1024"],
        },
    ),
    (
        "aws-samples__aws-containers-task-definitions__nginx__nginx_ec2.json",
        "10_nginx_ec2_bridge",
        Expect::Refused(&[
            "nginx_ec2.json",
            "field networkMode",
            "network mode 'bridge'",
            "awsvpc",
            "Fix:",
        ]),
    ),
    (
        "aws-samples__aws-containers-task-definitions__consul__ConsulClient.json",
        "11_consul_host",
        Expect::Refused(&[
            "ConsulClient.json",
            "field networkMode",
            "network mode 'host'",
            "Fix:",
        ]),
    ),
    (
        "aws-samples__aws-containers-task-definitions__kibana__kibana_fargate.json",
        "12_kibana_fargate",
        Expect::Meshes {
            plain: true,
            notes: &["to cpu 2048 / memory 4096"],
        },
    ),
    (
        "aws-samples__aws-containers-task-definitions__tomcat__tomcat_ec2.json",
        "13_tomcat_ec2",
        Expect::Meshes {
            plain: true,
            notes: &[],
        },
    ),
    (
        "aws-actions__amazon-ecs-deploy-task-definition__testing.json.at-61622e0.json",
        "14_describe_export",
        Expect::Meshes {
            plain: true,
            notes: &[],
        },
    ),
    (
        "aws-actions__amazon-ecs-deploy-task-definition__task-definition.json.at-777e820.json",
        "15_httpd_fargate",
        Expect::Meshes {
            plain: true,
            notes: &["to cpu 512 / memory 1024"],
        },
    ),
    (
        "awsdocs__aws-app-mesh-user-guide__doc_source__getting-started-ecs.md.at-626e466.example-fargate.json",
        "16_appmesh_doc_fargate",
        Expect::Meshes {
            plain: false,
            notes: &[],
        },
    ),
    (
        "awsdocs__aws-app-mesh-user-guide__doc_source__getting-started-ecs.md.at-626e466.example-xray-fargate.json",
        "17_appmesh_doc_xray_fargate",
        Expect::Meshes {
            plain: false,
            notes: &[],
        },
    ),
    (
        "awsdocs__aws-app-mesh-user-guide__doc_source__getting-started-ecs.md.at-626e466.example-ec2.json",
        "18_appmesh_doc_ec2",
        Expect::Meshes {
            plain: false,
            notes: &[],
        },
    ),
    (
        "awsdocs__amazon-ecs-developer-guide__doc_source__example_task_definitions.md.at-3aef759.container-dependency.json",
        "19_ecs_doc_container_dependency",
        Expect::Meshes {
            plain: false,
            notes: &[],
        },
    ),
    (
        "awsdocs__amazon-ecs-developer-guide__doc_source__example_task_definitions.md.at-3aef759.windows-fargate-webserver.json",
        "20_windows_fargate",
        Expect::Refused(&[
            "windows-fargate-webserver.json",
            "field runtimePlatform.operatingSystemFamily",
            "WINDOWS_SERVER_2019_CORE",
            "Fix:",
        ]),
    ),
    (
        "aws__copilot-cli__internal__pkg__deploy__cloudformation__stack__testdata__workloads__svc-prod.stack.yml",
        "21_copilot_svc_prod",
        Expect::Meshes {
            plain: true,
            notes: &["intrinsic function, so the Fargate size was not checked"],
        },
    ),
    (
        "aws__copilot-cli__internal__pkg__deploy__cloudformation__stack__testdata__workloads__windows-svc-test.stack.yml",
        "22_copilot_windows",
        Expect::Refused(&[
            "windows-svc-test.stack.yml",
            "resource TaskDefinition",
            "field RuntimePlatform.OperatingSystemFamily",
            "Windows",
            "Fix:",
        ]),
    ),
    (
        "aws__copilot-cli__internal__pkg__deploy__cloudformation__stack__testdata__workloads__backend__simple-template.yml",
        "23_copilot_backend",
        Expect::Meshes {
            plain: true,
            notes: &[],
        },
    ),
    (
        "aws-samples__ecs-refarch-cloudformation__services__product-service__service.yaml",
        "24_refarch_default_bridge",
        Expect::Refused(&[
            "service.yaml",
            "resource TaskDefinition",
            "field NetworkMode",
            "NetworkMode is not set",
            "bridge",
            "Fix: set NetworkMode to awsvpc",
        ]),
    ),
];

/// The task definitions of a document: (logical id or "", API/CFN properties).
fn task_definitions(doc: &Document) -> Vec<(String, Value)> {
    match doc.format() {
        Format::ApiJson | Format::DescribeOutput => vec![(String::new(), doc.value().clone())],
        Format::CfnJson | Format::CfnYaml => doc.value()["Resources"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, r)| r["Type"] == "AWS::ECS::TaskDefinition")
            .map(|(id, r)| (id.clone(), r["Properties"].clone()))
            .collect(),
    }
}

fn key(doc: &Document, api: &str) -> String {
    if doc.format().is_cfn() {
        let mut c = api.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    } else {
        api.to_string()
    }
}

/// The injected task-definition resources (CFN) or the whole task definition, for the snapshot.
fn snapshot_text(doc: &Document, notes: &[taskmesh::Note]) -> String {
    let mut out = String::new();
    for n in notes {
        out.push_str(&format!("# {n}\n"));
    }
    let body = match doc.format() {
        Format::CfnJson | Format::CfnYaml => {
            let res: serde_json::Map<String, Value> = doc.value()["Resources"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, r)| r["Type"] == "AWS::ECS::TaskDefinition")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Document::from_value(
                doc.format(),
                serde_json::json!({ "Resources": res }),
                "snapshot",
            )
            .render()
        }
        _ => doc.render(),
    };
    out.push_str(&body);
    out
}

#[test]
fn every_fixture_is_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap_or_else(|e| {
            panic!(
                "cannot list {} ({e}); set TASKMESH_FIXTURES",
                fixtures_dir().display()
            )
        })
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SOURCES.md")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = F.iter().map(|(f, _, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn refused_fixtures_name_file_resource_field_and_fix() {
    for (file, _, expect) in F {
        let Expect::Refused(needles) = expect else {
            continue;
        };
        let doc = load(file);
        let err = inject_document(&doc, &opts()).expect_err(file);
        assert_eq!(err.exit_code(), 2);
        assert!(
            matches!(err, TransformError::Invalid { .. }),
            "{file}: {err:?}"
        );
        let msg = err.to_string();
        for n in *needles {
            assert!(msg.contains(n), "{file}: message lacks {n:?}:\n{msg}");
        }
    }
}

#[test]
fn meshable_fixtures_inject_idempotently_check_clean_and_eject_back() {
    for (file, name, expect) in F {
        let Expect::Meshes {
            plain,
            notes: want_notes,
        } = expect
        else {
            continue;
        };
        let doc = load(file);
        let (injected, notes) =
            inject_document(&doc, &opts()).unwrap_or_else(|e| panic!("{file}: {e}"));
        for w in *want_notes {
            assert!(
                notes.iter().any(|n| n.to_string().contains(w)),
                "{file}: no note containing {w:?} in {notes:#?}"
            );
        }
        let rendered = injected.render();

        // Inject again, from the rendered bytes: byte-identical.
        let reparsed = Document::parse(rendered.as_bytes(), file)
            .unwrap_or_else(|e| panic!("{file}: reparse: {e}"));
        assert_eq!(reparsed.format(), injected.format(), "{file}");
        let (again, _) = inject_document(&reparsed, &opts())
            .unwrap_or_else(|e| panic!("{file}: second inject: {e}"));
        assert_eq!(
            again.render(),
            rendered,
            "{file}: inject twice differs from inject once"
        );

        // Check: nothing to report on the injected output, except a problem the input itself has
        // and inject cannot decide (#19: no memory setting anywhere, as published).
        let findings = check_document(&reparsed, &InjectOptions::default());
        let residual: &[&str] = if *name == "19_ecs_doc_container_dependency" {
            &["container 'app': field memory: the task has no task-level memory"]
        } else {
            &[]
        };
        assert_eq!(
            findings.len(),
            residual.len(),
            "{file}: findings after inject: {findings:#?}"
        );
        for r in residual {
            assert!(
                findings.iter().any(|f| f.to_string().contains(r)),
                "{file}: {findings:#?}"
            );
        }

        // Every injected task definition has exactly one proxy and no legacy wiring.
        let before: Vec<String> = task_definitions(&doc)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for (id, td) in task_definitions(&reparsed) {
            let containers = td[key(&reparsed, "containerDefinitions")]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let labels = key(&reparsed, "dockerLabels");
            let injected_count = containers
                .iter()
                .filter(|c| c[&labels].get(INJECTED_LABEL).is_some())
                .count();
            let text = serde_json::to_string(&containers).unwrap_or_default();
            let skipped = notes.iter().any(|n| {
                n.location.ends_with(&format!("resource {id}")) && n.message.starts_with("skipped")
            });
            if skipped {
                assert_eq!(injected_count, 0, "{file}: {id} was skipped but injected");
                continue;
            }
            assert!(before.contains(&id), "{file}: {id}");
            assert_eq!(
                injected_count, 1,
                "{file}: {id}: expected one injected proxy"
            );
            assert!(
                !text.contains("APPMESH_VIRTUAL_NODE_NAME"),
                "{file}: {id}: legacy env left"
            );
            assert!(
                !text.contains("proxy-route-manager"),
                "{file}: {id}: legacy proxyinit left"
            );
            assert!(
                !text.contains("aws-appmesh-envoy"),
                "{file}: {id}: App Mesh envoy left"
            );
            let pc = &td[key(&reparsed, "proxyConfiguration")];
            assert_eq!(
                pc[key(&reparsed, "containerName")],
                "taskmesh-agent",
                "{file}: {id}"
            );
        }

        // Eject: removes all of it; for a definition that had no mesh, gives back the input.
        let ejected = eject_document(&reparsed, &InjectOptions::default())
            .unwrap_or_else(|e| panic!("{file}: eject: {e}"));
        let ejected_original = eject_document(&doc, &InjectOptions::default())
            .unwrap_or_else(|e| panic!("{file}: eject: {e}"));
        assert_eq!(
            ejected.value(),
            ejected_original.value(),
            "{file}: eject(inject(x)) != eject(x)"
        );
        assert!(!ejected.render().contains(INJECTED_LABEL), "{file}");
        if *plain {
            let original = match doc.format() {
                Format::DescribeOutput => {
                    Value::Object(taskmesh::format::describe::to_registrable(doc.value()))
                }
                _ => doc.value().clone(),
            };
            assert_eq!(ejected.value(), &original, "{file}: eject(inject(x)) != x");
        }

        insta::assert_snapshot!(*name, snapshot_text(&injected, &notes));
    }
}

#[test]
fn legacy_identity_is_kept_when_no_node_or_mesh_is_given() {
    let doc = load(
        "awsdocs__aws-app-mesh-user-guide__doc_source__getting-started-ecs.md.at-626e466.example-fargate.json",
    );
    let o = InjectOptions {
        config: Some("s3://b/k".into()),
        ..InjectOptions::default()
    };
    let (out, _) = inject_document(&doc, &o).unwrap();
    let agent = out.value()["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "taskmesh-agent")
        .unwrap()
        .clone();
    assert_eq!(
        agent["environment"][0],
        serde_json::json!({"name": "APPMESH_RESOURCE_ARN", "value": "mesh/apps/virtualNode/serviceB"})
    );
    // The doc example's EgressIgnoredPorts "22" is kept.
    let props = out.value()["proxyConfiguration"]["properties"]
        .as_array()
        .unwrap();
    assert!(
        props.contains(&serde_json::json!({"name": "EgressIgnoredPorts", "value": "22"})),
        "{props:?}"
    );
    // Its "0.5 vCPU" task cpu is understood: 512 units hold app + agent, nothing is resized.
    assert_eq!(out.value()["cpu"], "0.5 vCPU");
}

#[test]
fn cfn_intrinsic_identity_is_kept_verbatim() {
    let doc =
        load("aws__aws-app-mesh-examples__walkthroughs__howto-ecs-basics__deploy__2-meshify.yaml");
    let o = InjectOptions {
        config: Some("s3://b/k".into()),
        ..InjectOptions::default()
    };
    let (out, _) = inject_document(&doc, &o).unwrap();
    let text = out.render();
    let wired = "- Name: APPMESH_RESOURCE_ARN\n          Value:\n            Fn::Join:\n            - ''\n            - - mesh/\n              - !GetAtt Mesh.MeshName\n              - /virtualNode/\n              - !GetAtt ColorVirtualNode.VirtualNodeName";
    assert!(text.contains(wired), "{text}");
}

#[test]
fn check_reports_the_known_problems_of_the_originals() {
    let cases: &[(&str, &str)] = &[
        (
            "awsdocs__amazon-ecs-developer-guide__doc_source__example_task_definitions.md.at-3aef759.container-dependency.json",
            "health check `echo hello` always passes",
        ),
        (
            "awsdocs__amazon-ecs-developer-guide__doc_source__example_task_definitions.md.at-3aef759.container-dependency.json",
            "container 'envoy': field user: no user",
        ),
        (
            "aws__aws-cdk__packages__@aws-cdk-testing__framework-integ__test__aws-ecs__test__ec2__integ.app-mesh-proxy-config.js.snapshot__aws-ecs-integ-appmesh-proxy.template.json.EXTRACT-taskdef-only.json",
            "container 'envoy': field User: no user",
        ),
        (
            "aws__aws-app-mesh-examples__examples__apps__colorapp__ecs__ecs-colorapp.at-c736c86.yaml",
            "container 'app': field DependsOn: does not wait for the proxy",
        ),
        (
            "aws-samples__aws-containers-task-definitions__nginx__nginx_fargate.json",
            "not meshed",
        ),
        (
            "aws__aws-app-mesh-examples__walkthroughs__howto-ecs-basics__deploy__2-meshify.yaml",
            "App Mesh's control plane was discontinued",
        ),
    ];
    for (file, needle) in cases {
        let findings = check_document(&load(file), &InjectOptions::default());
        assert!(
            findings.iter().any(|f| f.to_string().contains(needle)),
            "{file}: no finding with {needle:?}: {findings:#?}"
        );
    }
    let f = check_document(
        &load("aws__aws-app-mesh-examples__walkthroughs__howto-ecs-basics__deploy__2-meshify.yaml"),
        &InjectOptions::default(),
    );
    assert!(f.iter().all(|x| x.severity == Severity::Warning), "{f:#?}");
}

#[test]
fn truncated_fixtures_never_panic() {
    // Every fixture cut at many points: parse may fail (exit 2), but nothing panics, and whatever
    // parses goes through inject, check and eject without panicking either.
    for (file, _, _) in F {
        let bytes =
            std::fs::read(fixtures_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let step = (bytes.len() / 40).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            let Ok(doc) = Document::parse(&bytes[..cut], file) else {
                continue;
            };
            let _ = check_document(&doc, &InjectOptions::default());
            let _ = eject_document(&doc, &InjectOptions::default());
            if let Ok((out, _)) = inject_document(&doc, &opts()) {
                let _ = out.render();
                let _ = check_document(&out, &InjectOptions::default());
            }
        }
    }
}

#[test]
fn is_meshed_tells_taskmesh_from_app_mesh() {
    let legacy = load(
        "awsdocs__aws-app-mesh-user-guide__doc_source__getting-started-ecs.md.at-626e466.example-fargate.json",
    );
    assert!(!taskmesh::is_meshed(legacy.value()));
    let (out, _) = inject_document(&legacy, &opts()).unwrap();
    assert!(taskmesh::is_meshed(out.value()));
    let ejected = eject_document(&out, &InjectOptions::default()).unwrap();
    assert!(!taskmesh::is_meshed(ejected.value()));
}

/// Whether a container is an X-Ray daemon, by the marks `--xray` documents: image
/// `aws-xray-daemon`, name `xray-daemon`, or a 2000/udp port mapping.
fn is_daemon(ctr: &Value, cfn: bool) -> bool {
    let k = |api: &str| {
        if cfn {
            let mut c = api.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        } else {
            api.to_string()
        }
    };
    let image = serde_json::to_string(&ctr[k("image")]).unwrap_or_default();
    let udp_2000 = ctr[k("portMappings")]
        .as_array()
        .into_iter()
        .flatten()
        .any(|pm| {
            pm[k("protocol")]
                .as_str()
                .is_some_and(|p| p.eq_ignore_ascii_case("udp"))
                && (pm[k("containerPort")] == 2000 || pm[k("containerPort")] == "2000")
        });
    image.contains("aws-xray-daemon") || ctr[k("name")] == "xray-daemon" || udp_2000
}

/// Fixtures whose `--xray` output is a golden snapshot: an added daemon on Fargate (resized),
/// on EC2 awsvpc, from a describe export; the task's own daemon reused in CloudFormation YAML
/// and in the App Mesh guide's API JSON.
const XRAY_SNAPSHOTS: &[&str] = &[
    "02_prelude",
    "09_nginx_fargate",
    "13_tomcat_ec2",
    "14_describe_export",
    "17_appmesh_doc_xray_fargate",
];

#[test]
fn xray_reuses_or_adds_one_daemon_idempotently_and_ejects_back() {
    let xo = InjectOptions {
        xray: true,
        ..opts()
    };
    let mut reused = 0;
    let mut added = 0;
    for (file, name, expect) in F {
        let Expect::Meshes { plain, .. } = expect else {
            continue;
        };
        let doc = load(file);
        let cfn = doc.format().is_cfn();
        let (injected, notes) =
            inject_document(&doc, &xo).unwrap_or_else(|e| panic!("{file}: --xray: {e}"));
        let rendered = injected.render();
        let reparsed = Document::parse(rendered.as_bytes(), file)
            .unwrap_or_else(|e| panic!("{file}: reparse: {e}"));
        let (again, _) = inject_document(&reparsed, &xo)
            .unwrap_or_else(|e| panic!("{file}: second inject: {e}"));
        assert_eq!(again.render(), rendered, "{file}: --xray twice differs");

        // Check stays clean (#19's published problem aside).
        let findings = check_document(&reparsed, &InjectOptions::default());
        let residual = usize::from(*name == "19_ecs_doc_container_dependency");
        assert_eq!(findings.len(), residual, "{file}: {findings:#?}");

        let originals: std::collections::BTreeMap<String, Value> =
            task_definitions(&doc).into_iter().collect();
        // The input without App Mesh wiring (and with ECS number forms normalised), which is
        // what inject starts from.
        let ejected_original = eject_document(&doc, &InjectOptions::default())
            .unwrap_or_else(|e| panic!("{file}: eject: {e}"));
        let stripped: std::collections::BTreeMap<String, Value> =
            task_definitions(&ejected_original).into_iter().collect();
        for (id, td) in task_definitions(&reparsed) {
            let skipped = notes.iter().any(|n| {
                n.location.ends_with(&format!("resource {id}")) && n.message.starts_with("skipped")
            });
            let list = td[key(&reparsed, "containerDefinitions")]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let daemons: Vec<&Value> = list.iter().filter(|c| is_daemon(c, cfn)).collect();
            let had = originals[&id][key(&doc, "containerDefinitions")]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| is_daemon(c, cfn))
                .count();
            if skipped {
                assert_eq!(daemons.len(), had, "{file}: {id}: skipped but changed");
                continue;
            }
            assert_eq!(daemons.len(), 1, "{file}: {id}: one X-Ray daemon");
            let daemon = daemons[0];
            let labels = key(&reparsed, "dockerLabels");
            let daemon_injected = daemon[&labels].get(INJECTED_LABEL).is_some();
            if had == 1 {
                reused += 1;
                assert!(
                    !daemon_injected,
                    "{file}: {id}: the task's daemon is reused"
                );
                let before = stripped[&id][key(&doc, "containerDefinitions")]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| is_daemon(c, cfn))
                    .unwrap_or_else(|| panic!("{file}: {id}: eject lost the daemon"));
                assert_eq!(daemon, before, "{file}: {id}: the reused daemon changed");
            } else {
                added += 1;
                assert!(
                    daemon_injected,
                    "{file}: {id}: the added daemon is labelled"
                );
                assert_eq!(daemon[key(&reparsed, "name")], "xray-daemon");
                assert_eq!(daemon[key(&reparsed, "user")], "1337");
                assert_eq!(
                    daemon[key(&reparsed, "image")],
                    taskmesh::options::DEFAULT_XRAY_IMAGE
                );
            }
            let agent = list
                .iter()
                .find(|c| c[key(&reparsed, "name")] == "taskmesh-agent")
                .unwrap_or_else(|| panic!("{file}: {id}: no agent"));
            let env = agent[key(&reparsed, "environment")].to_string();
            assert!(
                env.contains("ENABLE_ENVOY_XRAY_TRACING"),
                "{file}: {id}: {env}"
            );
            if daemon[key(&reparsed, "user")] == "1337" {
                let deps = &agent[key(&reparsed, "dependsOn")];
                assert_eq!(
                    deps[0][key(&reparsed, "containerName")],
                    daemon[key(&reparsed, "name")],
                    "{file}: {id}: the agent waits for the daemon"
                );
                assert_eq!(deps[0][key(&reparsed, "condition")], "START");
            }
        }

        // Eject: the added daemon goes, the task's own stays; a plain input comes back whole.
        let ejected = eject_document(&reparsed, &InjectOptions::default())
            .unwrap_or_else(|e| panic!("{file}: eject: {e}"));
        assert_eq!(
            ejected.value(),
            ejected_original.value(),
            "{file}: eject(inject(x, --xray)) != eject(x)"
        );
        if *plain {
            let original = match doc.format() {
                Format::DescribeOutput => {
                    Value::Object(taskmesh::format::describe::to_registrable(doc.value()))
                }
                _ => doc.value().clone(),
            };
            assert_eq!(ejected.value(), &original, "{file}: eject(inject(x)) != x");
        }
        // Without --xray, the daemon taskmesh added goes away again.
        let (plain_again, _) = inject_document(&reparsed, &opts()).unwrap();
        let (plain_once, _) = inject_document(&doc, &opts()).unwrap();
        assert_eq!(
            plain_again.render(),
            plain_once.render(),
            "{file}: inject without --xray after --xray"
        );

        if XRAY_SNAPSHOTS.contains(name) {
            insta::assert_snapshot!(format!("xray_{name}"), snapshot_text(&injected, &notes));
        }
    }
    assert!(
        reused >= 5,
        "task definitions with their own daemon: {reused}"
    );
    assert!(added >= 10, "task definitions given a daemon: {added}");
}

#[test]
fn migrating_a_tracing_app_mesh_envoy_without_xray_says_how_to_keep_tracing() {
    let doc =
        load("aws__aws-app-mesh-examples__walkthroughs__howto-ecs-basics__deploy__2-meshify.yaml");
    let (_, notes) = inject_document(&doc, &opts()).unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.to_string().contains("container 'envoy'")
                && n.message.contains("pass --xray")),
        "{notes:#?}"
    );
    let xo = InjectOptions {
        xray: true,
        ..opts()
    };
    let (_, notes) = inject_document(&doc, &xo).unwrap();
    assert!(!notes.iter().any(|n| n.message.contains("pass --xray")));
}

#[test]
fn check_reports_tracing_without_a_daemon() {
    // The App Mesh guide's X-Ray example, with its daemon taken out: Envoy still traces.
    let doc = load(
        "awsdocs__aws-app-mesh-user-guide__doc_source__getting-started-ecs.md.at-626e466.example-xray-fargate.json",
    );
    let mut td = doc.value().clone();
    let list = td["containerDefinitions"].as_array_mut().unwrap();
    list.retain(|c| c["name"] != "xray-daemon");
    let findings = taskmesh::check_task_definition(&td, &taskmesh::Location::file("td.json"));
    assert!(
        findings.iter().any(|f| f.severity == Severity::Warning
            && f.to_string().contains("container 'envoy'")
            && f.message.contains("runs no X-Ray daemon")),
        "{findings:#?}"
    );
    // With the daemon, or with a daemon address elsewhere, nothing is reported.
    let with = taskmesh::check_task_definition(doc.value(), &taskmesh::Location::file("td.json"));
    assert!(
        !with.iter().any(|f| f.message.contains("X-Ray daemon")),
        "{with:#?}"
    );
    let envoy = td["containerDefinitions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "envoy")
        .unwrap();
    envoy["environment"].as_array_mut().unwrap().push(
        serde_json::json!({"name": "AWS_XRAY_DAEMON_ADDRESS", "value": "xray.internal:2000"}),
    );
    let remote = taskmesh::check_task_definition(&td, &taskmesh::Location::file("td.json"));
    assert!(
        !remote.iter().any(|f| f.message.contains("X-Ray daemon")),
        "{remote:#?}"
    );
}
