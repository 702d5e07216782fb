//! Every inject rule and option on small task definitions through the public API: the
//! redirect variants, the proxy variants, each refusal (with file, container, field and fix in
//! the message), Fargate resizing and its reversal, idempotence and eject(inject(x)) = x.

use serde_json::{Value, json};
use taskmesh::{
    Document, InjectOptions, Location, ProxyKind, Redirect, TransformError, check_task_definition,
    eject_task_definition, inject_cfn_task_definition_properties, inject_cfn_template,
    inject_document, inject_task_definition, is_meshed,
};

fn loc() -> Location {
    Location::file("td.json")
}

fn opts() -> InjectOptions {
    InjectOptions {
        mesh: Some("colorapp".into()),
        config: Some("s3://b/colorapp.yaml".into()),
        ..InjectOptions::default()
    }
}

fn fargate() -> Value {
    json!({
        "family": "web",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [
            {"name": "web", "image": "nginx", "cpu": 64, "memory": 128,
             "portMappings": [{"containerPort": 8080, "protocol": "tcp"}, {"containerPort": 8125, "protocol": "udp"}],
             "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}}}
        ],
        "x-unknown-field": {"kept": true}
    })
}

fn ec2() -> Value {
    json!({
        "family": "worker",
        "networkMode": "awsvpc",
        "memory": "1024",
        "containerDefinitions": [{"name": "app", "image": "app", "portMappings": [{"containerPort": 9080}]}]
    })
}

fn container<'a>(td: &'a Value, name: &str) -> &'a Value {
    td["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {td:#}"))
}

fn err(td: &Value, o: &InjectOptions) -> TransformError {
    inject_task_definition(td, o, &loc()).expect_err("inject must refuse")
}

#[test]
fn agent_with_ecs_redirect_has_the_canonical_shape() {
    let out = inject_task_definition(&fargate(), &opts(), &loc())
        .unwrap()
        .value;
    assert!(is_meshed(&out));
    let agent = container(&out, "taskmesh-agent");
    assert_eq!(agent["user"], "1337");
    assert_eq!(agent["essential"], true);
    assert_eq!(
        agent["image"],
        format!(
            "public.ecr.aws/taskmesh/taskmesh-agent:{}",
            taskmesh::VERSION
        )
    );
    assert_eq!(
        agent["healthCheck"],
        json!({"command": ["CMD", "taskmesh-agent", "health"], "startPeriod": 10, "interval": 5, "timeout": 2, "retries": 3})
    );
    assert_eq!(
        agent["ulimits"],
        json!([{"name": "nofile", "softLimit": 15000, "hardLimit": 15000}])
    );
    assert_eq!(
        agent["logConfiguration"],
        fargate()["containerDefinitions"][0]["logConfiguration"]
    );
    assert_eq!(
        agent["dockerLabels"][taskmesh::INJECTED_LABEL],
        taskmesh::VERSION
    );
    let env = agent["environment"].as_array().unwrap();
    assert!(env.contains(
        &json!({"name": "APPMESH_RESOURCE_ARN", "value": "mesh/colorapp/virtualNode/web"})
    ));
    assert!(env.contains(&json!({"name": "TASKMESH_CONFIG", "value": "s3://b/colorapp.yaml"})));
    assert_eq!(
        container(&out, "web")["dependsOn"],
        json!([{"containerName": "taskmesh-agent", "condition": "HEALTHY"}])
    );
    assert_eq!(
        out["proxyConfiguration"],
        json!({"type": "APPMESH", "containerName": "taskmesh-agent", "properties": [
            {"name": "IgnoredUID", "value": "1337"},
            {"name": "ProxyIngressPort", "value": "15000"},
            {"name": "ProxyEgressPort", "value": "15001"},
            {"name": "AppPorts", "value": "8080"},
            {"name": "EgressIgnoredIPs", "value": "169.254.170.2,169.254.169.254"}]})
    );
    assert_eq!(out["x-unknown-field"], json!({"kept": true}));
    assert!(
        check_task_definition(&out, &loc()).is_empty(),
        "{:#?}",
        check_task_definition(&out, &loc())
    );
}

#[test]
fn envoy_proxy_has_the_app_mesh_shape() {
    let o = InjectOptions {
        proxy: ProxyKind::Envoy,
        config: None,
        ..opts()
    };
    let out = inject_task_definition(&ec2(), &o, &loc()).unwrap().value;
    let envoy = container(&out, "envoy");
    assert_eq!(envoy["image"], taskmesh::DEFAULT_ENVOY_IMAGE);
    assert_eq!(
        envoy["healthCheck"]["command"],
        json!([
            "CMD-SHELL",
            "curl -s http://localhost:9901/server_info | grep state | grep -q LIVE"
        ])
    );
    assert_eq!(
        envoy["environment"],
        json!([{"name": "APPMESH_RESOURCE_ARN", "value": "mesh/colorapp/virtualNode/worker"}])
    );
    assert_eq!(out["proxyConfiguration"]["containerName"], "envoy");
}

#[test]
fn proxy_init_redirect_adds_a_non_essential_net_admin_container() {
    let o = InjectOptions {
        redirect: Redirect::ProxyInit,
        ignored_gid: Some(1338),
        egress_ignored_ports: Some(vec![22, 5432]),
        ..opts()
    };
    let out = inject_task_definition(&ec2(), &o, &loc()).unwrap().value;
    assert!(out.get("proxyConfiguration").is_none());
    let init = container(&out, "taskmesh-proxy-init");
    assert_eq!(init["essential"], false);
    assert_eq!(init["command"], json!(["proxy-init"]));
    assert_eq!(
        init["linuxParameters"]["capabilities"]["add"],
        json!(["NET_ADMIN"])
    );
    assert_eq!(
        init["environment"],
        json!([
            {"name": "TASKMESH_IGNORED_UID", "value": "1337"},
            {"name": "TASKMESH_IGNORED_GID", "value": "1338"},
            {"name": "TASKMESH_PROXY_INGRESS_PORT", "value": "15000"},
            {"name": "TASKMESH_PROXY_EGRESS_PORT", "value": "15001"},
            {"name": "TASKMESH_APP_PORTS", "value": "9080"},
            {"name": "TASKMESH_EGRESS_IGNORED_IPS", "value": "169.254.170.2,169.254.169.254"},
            {"name": "TASKMESH_EGRESS_IGNORED_PORTS", "value": "22,5432"}
        ])
    );
    assert_eq!(
        container(&out, "app")["dependsOn"],
        json!([{"containerName": "taskmesh-agent", "condition": "HEALTHY"}, {"containerName": "taskmesh-proxy-init", "condition": "SUCCESS"}])
    );
    assert!(is_meshed(&out));
    assert!(
        check_task_definition(&out, &loc()).is_empty(),
        "{:#?}",
        check_task_definition(&out, &loc())
    );
    assert_eq!(eject_task_definition(&out, &loc()).unwrap(), ec2());
}

#[test]
fn proxy_init_is_refused_on_fargate() {
    let e = err(
        &fargate(),
        &InjectOptions {
            redirect: Redirect::ProxyInit,
            ..opts()
        },
    );
    let m = e.to_string();
    assert!(
        m.contains("td.json: field requiresCompatibilities")
            && m.contains("NET_ADMIN")
            && m.contains("Fix:"),
        "{m}"
    );
}

#[test]
fn network_modes_other_than_awsvpc_are_refused_with_the_reason() {
    for (mode, needle) in [
        (json!("bridge"), "network mode 'bridge'"),
        (json!("host"), "network mode 'host'"),
        (json!("none"), "network mode 'none'"),
    ] {
        let mut td = ec2();
        td["networkMode"] = mode;
        let m = err(&td, &opts()).to_string();
        assert!(
            m.starts_with("td.json: field networkMode: ")
                && m.contains(needle)
                && m.contains("Fix: set networkMode to awsvpc"),
            "{m}"
        );
    }
    let mut td = ec2();
    td.as_object_mut().unwrap().remove("networkMode");
    let m = err(&td, &opts()).to_string();
    assert!(
        m.contains("networkMode is not set") && m.contains("bridge"),
        "{m}"
    );
}

#[test]
fn windows_is_refused() {
    let mut td = fargate();
    td["runtimePlatform"] = json!({"operatingSystemFamily": "WINDOWS_SERVER_2022_CORE"});
    let m = err(&td, &opts()).to_string();
    assert!(
        m.contains("field runtimePlatform.operatingSystemFamily") && m.contains("Windows"),
        "{m}"
    );
}

#[test]
fn port_and_name_clashes_name_the_container_and_field() {
    let mut td = ec2();
    td["containerDefinitions"][0]["portMappings"] =
        json!([{"containerPort": 9080}, {"containerPort": 15001}]);
    let m = err(&td, &opts()).to_string();
    assert!(
        m.contains("container 'app': field portMappings[1].containerPort")
            && m.contains("port 15001"),
        "{m}"
    );
    let mut td = ec2();
    td["containerDefinitions"][0]["portMappings"] =
        json!([{"containerPort": 80, "hostPort": 9901}]);
    assert!(
        err(&td, &opts())
            .to_string()
            .contains("field portMappings[0].hostPort")
    );
    let mut td = ec2();
    td["containerDefinitions"][0]["name"] = json!("taskmesh-agent");
    let m = err(&td, &opts()).to_string();
    assert!(
        m.contains("container 'taskmesh-agent': field containerDefinitions[0].name")
            && m.contains("rename"),
        "{m}"
    );
    let o = InjectOptions {
        ingress_port: 15001,
        ..opts()
    };
    assert!(matches!(err(&ec2(), &o), TransformError::Usage { .. }));
}

#[test]
fn more_than_ten_containers_are_refused() {
    let mut td = ec2();
    let list: Vec<Value> = (0..10)
        .map(|i| json!({"name": format!("c{i}"), "image": "x", "memory": 64}))
        .collect();
    td["containerDefinitions"] = Value::Array(list);
    let m = err(&td, &opts()).to_string();
    assert!(
        m.contains("11 containers") && m.contains("limit of 10"),
        "{m}"
    );
}

#[test]
fn missing_mesh_or_config_is_a_usage_error() {
    let e = err(
        &ec2(),
        &InjectOptions {
            mesh: None,
            ..opts()
        },
    );
    assert!(
        matches!(e, TransformError::Usage { .. }) && e.to_string().contains("--mesh"),
        "{e}"
    );
    let e = err(
        &ec2(),
        &InjectOptions {
            config: None,
            ..opts()
        },
    );
    assert!(e.to_string().contains("--config"), "{e}");
}

#[test]
fn fargate_resize_is_reported_reversible_and_refusable() {
    let mut td = fargate();
    td["containerDefinitions"][0]["cpu"] = json!(256);
    td["containerDefinitions"][0]["memory"] = json!(512);
    let r = inject_task_definition(&td, &opts(), &loc()).unwrap();
    assert_eq!(
        (r.value["cpu"].clone(), r.value["memory"].clone()),
        (json!("512"), json!("1024"))
    );
    assert!(
        r.notes[0]
            .message
            .contains("raised from cpu 256 / memory 512 to cpu 512 / memory 1024"),
        "{:?}",
        r.notes
    );
    let labels = &container(&r.value, "taskmesh-agent")["dockerLabels"];
    assert_eq!(labels["taskmesh.original-cpu"], "256");
    assert_eq!(labels["taskmesh.original-memory"], "512");
    assert_eq!(eject_task_definition(&r.value, &loc()).unwrap(), td);
    let again = inject_task_definition(&r.value, &opts(), &loc()).unwrap();
    assert_eq!(again.value, r.value);

    let m = err(
        &td,
        &InjectOptions {
            resize: false,
            ..opts()
        },
    )
    .to_string();
    assert!(
        m.contains("field cpu/memory") && m.contains("512 / 1024") && m.contains("--no-resize"),
        "{m}"
    );

    // Numeric task sizes stay numbers; "1 vCPU" / "2GB" are read.
    let mut td2 = td.clone();
    td2["cpu"] = json!("0.25 vCPU");
    td2["memory"] = json!("0.5GB");
    let r2 = inject_task_definition(&td2, &opts(), &loc()).unwrap();
    assert_eq!(r2.value["cpu"], "512");
    assert_eq!(eject_task_definition(&r2.value, &loc()).unwrap(), td2);
}

#[test]
fn legacy_app_mesh_wiring_is_replaced_not_doubled() {
    let legacy = json!({
        "family": "colorteller",
        "networkMode": "awsvpc",
        "memory": "512",
        "proxyConfiguration": {"type": "APPMESH", "containerName": "envoy", "properties": [
            {"name": "IgnoredUID", "value": "1337"}, {"name": "ProxyIngressPort", "value": "15000"},
            {"name": "ProxyEgressPort", "value": "15001"}, {"name": "AppPorts", "value": "9080"},
            {"name": "EgressIgnoredIPs", "value": "169.254.170.2,169.254.169.254"}, {"name": "EgressIgnoredPorts", "value": "22"}]},
        "containerDefinitions": [
            {"name": "app", "image": "app", "portMappings": [{"containerPort": 9080}], "dependsOn": [{"containerName": "envoy", "condition": "HEALTHY"}]},
            {"name": "envoy", "image": "840364872350.dkr.ecr.us-west-2.amazonaws.com/aws-appmesh-envoy:v1.25.4.0-prod", "user": "1337",
             "environment": [{"name": "APPMESH_RESOURCE_ARN", "value": "arn:aws:appmesh:us-west-2:111122223333:mesh/apps/virtualNode/colorteller-vn"}]},
            {"name": "proxyinit", "image": "111345817488.dkr.ecr.us-west-2.amazonaws.com/aws-appmesh-proxy-route-manager", "essential": false,
             "linuxParameters": {"capabilities": {"add": ["NET_ADMIN"]}}, "environment": [{"name": "APPMESH_START_ENABLED", "value": "1"}]}
        ]
    });
    let o = InjectOptions {
        mesh: None,
        ..opts()
    };
    let out = inject_task_definition(&legacy, &o, &loc()).unwrap().value;
    let names: Vec<&str> = out["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["app", "taskmesh-agent"]);
    // Identity kept verbatim (full ARN), EgressIgnoredPorts kept, position of proxyConfiguration kept.
    assert_eq!(
        container(&out, "taskmesh-agent")["environment"][0]["value"],
        "arn:aws:appmesh:us-west-2:111122223333:mesh/apps/virtualNode/colorteller-vn"
    );
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(keys[3], "proxyConfiguration");
    assert!(
        out["proxyConfiguration"]["properties"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "EgressIgnoredPorts", "value": "22"}))
    );
    assert_eq!(
        container(&out, "app")["dependsOn"],
        json!([{"containerName": "taskmesh-agent", "condition": "HEALTHY"}])
    );
    // Eject removes the legacy wiring too: a migration path off App Mesh.
    let ejected = eject_task_definition(&legacy, &loc()).unwrap();
    assert!(ejected.get("proxyConfiguration").is_none());
    assert_eq!(
        ejected["containerDefinitions"],
        json!([{"name": "app", "image": "app", "portMappings": [{"containerPort": 9080}]}])
    );
    // With --virtual-node and --mesh the identity is replaced.
    let o = InjectOptions {
        virtual_node: Some("blue".into()),
        ..opts()
    };
    let out = inject_task_definition(&legacy, &o, &loc()).unwrap().value;
    assert_eq!(
        container(&out, "taskmesh-agent")["environment"][0]["value"],
        "mesh/colorapp/virtualNode/blue"
    );
}

#[test]
fn inject_is_idempotent_and_reversible_with_every_option() {
    let variants = [
        opts(),
        InjectOptions {
            proxy: ProxyKind::Envoy,
            ..opts()
        },
        InjectOptions {
            ingress_port: 16000,
            egress_port: 16001,
            admin_port: 19901,
            ignored_uid: 1500,
            ignored_gid: Some(1501),
            egress_ignored_ips: Some(vec!["10.0.0.0/8".into()]),
            egress_ignored_ports: Some(vec![22]),
            app_ports: Some(vec![8080, 8081]),
            image: Some("registry.example.com/agent:dev".into()),
            virtual_node: Some("node".into()),
            ..opts()
        },
    ];
    let mut existing_empty_deps = fargate();
    existing_empty_deps["containerDefinitions"][0]["dependsOn"] = json!([]);
    for o in &variants {
        for td in [fargate(), ec2(), existing_empty_deps.clone()] {
            let once = inject_task_definition(&td, o, &loc()).unwrap().value;
            let twice = inject_task_definition(&once, o, &loc()).unwrap().value;
            assert_eq!(once, twice, "{o:?}");
            assert_eq!(eject_task_definition(&once, &loc()).unwrap(), td, "{o:?}");
            assert!(
                check_task_definition(&once, &loc()).is_empty(),
                "{o:?}: {:#?}",
                check_task_definition(&once, &loc())
            );
        }
    }
}

#[test]
fn string_numbers_are_understood_and_normalised() {
    let mut td = fargate();
    td["containerDefinitions"][0]["memory"] = json!("128");
    td["containerDefinitions"][0]["cpu"] = json!("64");
    let out = inject_task_definition(&td, &opts(), &loc()).unwrap().value;
    assert_eq!(container(&out, "web")["memory"], 128);
    assert_eq!(container(&out, "web")["cpu"], 64);
    assert_eq!(out["cpu"], "256");
}

#[test]
fn no_app_ports_gives_an_egress_only_proxy() {
    let mut td = ec2();
    td["containerDefinitions"][0]
        .as_object_mut()
        .unwrap()
        .remove("portMappings");
    let r = inject_task_definition(&td, &opts(), &loc()).unwrap();
    let names: Vec<&str> = r.value["proxyConfiguration"]["properties"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["IgnoredUID", "ProxyEgressPort", "EgressIgnoredIPs"]);
    assert!(r.notes.iter().any(|n| n.message.contains("egress only")));
}

#[test]
fn cfn_template_metadata_resource_selection_and_intrinsics() {
    let t = json!({
        "Resources": {
            "A": {"Type": "AWS::ECS::TaskDefinition", "Metadata": {"taskmesh": {"virtualNode": "alpha", "mesh": "m2", "config": "file:///mesh.yaml"}},
                  "Properties": {"Family": {"Fn::Sub": "${AWS::StackName}-a"}, "NetworkMode": "awsvpc", "Memory": "512",
                                 "ContainerDefinitions": [{"Name": "app", "Image": {"Ref": "Image"}, "PortMappings": [{"ContainerPort": {"Ref": "Port"}}]}]}},
            "B": {"Type": "AWS::ECS::TaskDefinition", "Metadata": {"taskmesh": {"skip": true}},
                  "Properties": {"NetworkMode": "bridge", "ContainerDefinitions": [{"Name": "x", "Image": "x"}]}},
            "Bucket": {"Type": "AWS::S3::Bucket"}
        }
    });
    let (out, notes) = inject_cfn_template(&t, &opts()).unwrap();
    let a = &out["Resources"]["A"]["Properties"];
    let agent = &a["ContainerDefinitions"][1];
    assert_eq!(
        agent["Environment"][0],
        json!({"Name": "APPMESH_RESOURCE_ARN", "Value": "mesh/m2/virtualNode/alpha"})
    );
    assert_eq!(
        agent["Environment"][1],
        json!({"Name": "TASKMESH_CONFIG", "Value": "file:///mesh.yaml"})
    );
    assert_eq!(
        a["ProxyConfiguration"]["ProxyConfigurationProperties"][3],
        json!({"Name": "AppPorts", "Value": {"Fn::Join": [",", [{"Ref": "Port"}]]}})
    );
    assert_eq!(out["Resources"]["B"], t["Resources"]["B"]);
    assert_eq!(out["Resources"]["Bucket"], t["Resources"]["Bucket"]);
    assert!(
        notes
            .iter()
            .any(|n| n.location.ends_with("resource B") && n.message.contains("skip")),
        "{notes:?}"
    );

    // --resource: unknown or non-task-definition ids are usage errors.
    let e = inject_cfn_template(
        &t,
        &InjectOptions {
            resources: vec!["Nope".into()],
            ..opts()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("--resource Nope"), "{e}");
    let e = inject_cfn_template(
        &t,
        &InjectOptions {
            resources: vec!["Bucket".into()],
            ..opts()
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("not an AWS::ECS::TaskDefinition"),
        "{e}"
    );

    // The per-resource Fn::Transform path: the logical id is the default node.
    let props = json!({"NetworkMode": "awsvpc", "Memory": "512", "ContainerDefinitions": [{"Name": "app", "Image": "x"}]});
    let (p, _) = inject_cfn_task_definition_properties(&props, "Orders", &opts()).unwrap();
    assert_eq!(
        p["ContainerDefinitions"][1]["Environment"][0]["Value"],
        "mesh/colorapp/virtualNode/Orders"
    );
}

#[test]
fn bad_cfn_resources_are_refused_with_their_location() {
    let yaml = "Resources:\n  T:\n    Type: AWS::ECS::TaskDefinition\n    Properties:\n      NetworkMode: awsvpc\n      ContainerDefinitions: !Ref Defs\n";
    let doc = Document::parse(yaml.as_bytes(), "t.yaml").unwrap();
    let e = inject_document(&doc, &opts()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("t.yaml: resource T: field ContainerDefinitions: "),
        "{e}"
    );
}

fn findings(td: &Value) -> Vec<String> {
    check_task_definition(td, &loc())
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_finding(td: &Value, needle: &str) {
    let f = findings(td);
    assert!(
        f.iter().any(|x| x.contains(needle)),
        "no finding with {needle:?}: {f:#?}"
    );
}

#[test]
fn check_rules_each_produce_a_located_finding() {
    let meshed = inject_task_definition(&fargate(), &opts(), &loc())
        .unwrap()
        .value;
    assert!(findings(&meshed).is_empty());

    let mut td = meshed.clone();
    td["networkMode"] = json!("bridge");
    assert_finding(
        &td,
        "error: td.json: field networkMode: proxyConfiguration needs networkMode awsvpc",
    );

    let mut td = meshed.clone();
    td["proxyConfiguration"]["type"] = json!("ISTIO");
    assert_finding(&td, "field proxyConfiguration.type: type must be APPMESH");

    let mut td = meshed.clone();
    td["proxyConfiguration"]["properties"][0]["value"] = Value::Null;
    assert_finding(
        &td,
        "field proxyConfiguration.properties[0]: property IgnoredUID has no value",
    );

    let mut td = meshed.clone();
    td["proxyConfiguration"]["properties"][1]["value"] = json!(15000);
    assert_finding(
        &td,
        "property ProxyIngressPort value 15000 must be a string",
    );

    let mut td = meshed.clone();
    td["proxyConfiguration"]["properties"][0]["value"] = json!("1000");
    assert_finding(
        &td,
        "container 'taskmesh-agent': field user: user '1337' is not the IgnoredUID 1000",
    );

    let mut td = meshed.clone();
    td["proxyConfiguration"]["containerName"] = json!("ghost");
    assert_finding(&td, "names container 'ghost', which does not exist");

    let mut td = meshed.clone();
    td["containerDefinitions"][1]["healthCheck"]["interval"] = json!(1);
    assert_finding(
        &td,
        "container 'taskmesh-agent': field healthCheck.interval: interval 1 is outside the ECS range 5–300",
    );

    let mut td = meshed.clone();
    td["containerDefinitions"][1]["healthCheck"]["command"] = json!(["CMD-SHELL", "exit 0"]);
    assert_finding(&td, "always passes");

    let mut td = meshed.clone();
    td["containerDefinitions"][1]["healthCheck"]["command"] = json!(["sh", "-c", "true"]);
    assert_finding(&td, "must start with CMD or CMD-SHELL");

    let mut td = meshed.clone();
    td["containerDefinitions"][1]["essential"] = json!(false);
    assert_finding(&td, "field essential: the proxy must be essential");

    let mut td = meshed.clone();
    td["containerDefinitions"][0]
        .as_object_mut()
        .unwrap()
        .remove("dependsOn");
    assert_finding(
        &td,
        "container 'web': field dependsOn: does not wait for the proxy",
    );

    let mut td = meshed.clone();
    td["containerDefinitions"][0]["dependsOn"] =
        json!([{"containerName": "taskmesh-agent", "condition": "SUCCESS"}]);
    assert_finding(
        &td,
        "condition SUCCESS on essential container 'taskmesh-agent'",
    );

    let mut td = meshed.clone();
    td["containerDefinitions"][0]["linuxParameters"] =
        json!({"capabilities": {"add": ["NET_ADMIN"]}});
    assert_finding(
        &td,
        "container 'web': field linuxParameters.capabilities.add: NET_ADMIN on Fargate",
    );

    let mut td = meshed.clone();
    td["containerDefinitions"][0]["portMappings"][0]["containerPort"] = json!(15000);
    assert_finding(&td, "port 15000 is a proxy listener port");

    let mut td = meshed.clone();
    td["memory"] = json!("3000");
    assert_finding(
        &td,
        "256 CPU units / 3000 MiB is not a valid Fargate task size",
    );

    let mut td = meshed.clone();
    td["containerDefinitions"][0]["memory"] = json!(4096);
    assert_finding(&td, "the containers need");

    let mut td = meshed.clone();
    let extra: Vec<Value> = (0..9)
        .map(|i| json!({"name": format!("s{i}"), "image": "x", "user": "1337"}))
        .collect();
    td["containerDefinitions"]
        .as_array_mut()
        .unwrap()
        .extend(extra);
    assert_finding(&td, "11 containers; ECS allows at most 10");

    let mut td = meshed.clone();
    td["runtimePlatform"] = json!({"operatingSystemFamily": "WINDOWS_SERVER_2019_CORE"});
    assert_finding(&td, "not supported for Windows");

    let mut td = meshed;
    td.as_object_mut().unwrap().remove("proxyConfiguration");
    assert_finding(&td, "nothing redirects traffic to it");

    assert_finding(&fargate(), "warning: td.json: not meshed");
}

#[test]
fn malformed_taskmesh_metadata_is_refused_by_inject_only() {
    let t = json!({"Resources": {"A": {"Type": "AWS::ECS::TaskDefinition", "Metadata": {"taskmesh": {"virtualNode": {"Ref": "Node"}}},
        "Properties": {"NetworkMode": "awsvpc", "Memory": "512", "ContainerDefinitions": [{"Name": "app", "Image": "x"}]}}}});
    let e = inject_cfn_template(&t, &opts()).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "template: resource A: field Metadata.taskmesh.virtualNode: must be a literal string"
        ),
        "{e}"
    );
    let mut t2 = t.clone();
    t2["Resources"]["A"]["Metadata"]["taskmesh"] = json!({"skipp": true});
    let e = inject_cfn_template(&t2, &opts()).unwrap_err();
    assert!(e.to_string().contains("unknown setting 'skipp'"), "{e}");
    let doc = Document::from_value(taskmesh::Format::CfnJson, t, "t.json");
    assert!(taskmesh::eject_document(&doc, &InjectOptions::default()).is_ok());
}

fn xray() -> InjectOptions {
    InjectOptions {
        xray: true,
        ..opts()
    }
}

fn names(td: &Value) -> Vec<&str> {
    td["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn xray_adds_the_daemon_after_the_proxy_as_the_app_mesh_examples_did() {
    let out = inject_task_definition(&fargate(), &xray(), &loc()).unwrap();
    let td = out.value;
    assert_eq!(names(&td), ["web", "taskmesh-agent", "xray-daemon"]);
    assert_eq!(
        container(&td, "xray-daemon"),
        &json!({
            "name": "xray-daemon",
            "image": "public.ecr.aws/xray/aws-xray-daemon:latest",
            "essential": true,
            "user": "1337",
            "cpu": 32,
            "memoryReservation": 256,
            "portMappings": [{"containerPort": 2000, "protocol": "udp"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}},
            "dockerLabels": {"taskmesh.injected": taskmesh::VERSION}
        })
    );
    let agent = container(&td, "taskmesh-agent");
    assert_eq!(
        agent["dependsOn"],
        json!([{"containerName": "xray-daemon", "condition": "START"}])
    );
    let env = agent["environment"].as_array().unwrap();
    assert_eq!(
        env.last(),
        Some(&json!({"name": "ENABLE_ENVOY_XRAY_TRACING", "value": "1"}))
    );
    assert!(
        !env.iter().any(|e| e["name"] == "AWS_XRAY_DAEMON_ADDRESS"),
        "the daemon is on the task's loopback at the default 2000 in awsvpc: {env:?}"
    );
    // The app waits for the proxy only; 256/512 still holds web + agent + daemon (224 / 448).
    assert_eq!(
        container(&td, "web")["dependsOn"],
        json!([{"containerName": "taskmesh-agent", "condition": "HEALTHY"}])
    );
    assert_eq!(
        (td["cpu"].clone(), td["memory"].clone()),
        (json!("256"), json!("512"))
    );
    assert!(is_meshed(&td));
    assert!(
        check_task_definition(&td, &loc()).is_empty(),
        "{:#?}",
        check_task_definition(&td, &loc())
    );
    // Idempotent, and eject gives the input back.
    let again = inject_task_definition(&td, &xray(), &loc()).unwrap().value;
    assert_eq!(again, td);
    assert_eq!(eject_task_definition(&td, &loc()).unwrap(), fargate());
    // Dropping --xray removes the daemon taskmesh added, and only the tracing wiring.
    let without = inject_task_definition(&td, &opts(), &loc()).unwrap().value;
    assert_eq!(
        without,
        inject_task_definition(&fargate(), &opts(), &loc())
            .unwrap()
            .value
    );
}

#[test]
fn xray_daemon_counts_in_the_fargate_size_and_the_resize_is_undone() {
    let mut td = fargate();
    td["containerDefinitions"][0]["memory"] = json!(256);
    // Without the daemon, 256 + 64 MiB fit 512.
    let plain = inject_task_definition(&td, &opts(), &loc()).unwrap();
    assert_eq!(plain.value["memory"], "512");
    // With it, 576 MiB do not: --no-resize refuses naming the daemon, resize picks 256/1024.
    let e = err(
        &td,
        &InjectOptions {
            resize: false,
            ..xray()
        },
    );
    let m = e.to_string();
    assert!(
        m.contains(
            "the containers plus the proxy and the X-Ray daemon need 224 CPU units and 576 MiB"
        ) && m.contains("Fix:"),
        "{m}"
    );
    let out = inject_task_definition(&td, &xray(), &loc()).unwrap();
    assert_eq!(
        (out.value["cpu"].clone(), out.value["memory"].clone()),
        (json!("256"), json!("1024"))
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.message.contains("plus the proxy and the X-Ray daemon")),
        "{:?}",
        out.notes
    );
    assert_eq!(
        container(&out.value, "taskmesh-agent")["dockerLabels"]["taskmesh.original-memory"],
        "512"
    );
    assert_eq!(eject_task_definition(&out.value, &loc()).unwrap(), td);
}

/// A task that already runs a daemon on 2001/udp, named `tracing`.
fn with_own_daemon(user: Option<&str>) -> Value {
    let mut td = ec2();
    let mut daemon = json!({"name": "tracing", "image": "amazon/aws-xray-daemon:3.x", "memoryReservation": 64,
        "command": ["-b", "0.0.0.0:2001"], "portMappings": [{"containerPort": 2001, "protocol": "udp"}]});
    if let Some(u) = user {
        daemon["user"] = json!(u);
    }
    td["containerDefinitions"]
        .as_array_mut()
        .unwrap()
        .push(daemon);
    td
}

#[test]
fn xray_reuses_the_tasks_own_daemon_and_its_port() {
    let td = with_own_daemon(Some("1337"));
    let out = inject_task_definition(&td, &xray(), &loc()).unwrap().value;
    assert_eq!(names(&out), ["app", "tracing", "taskmesh-agent"]);
    assert_eq!(container(&out, "tracing"), &td["containerDefinitions"][1]);
    let agent = container(&out, "taskmesh-agent");
    assert_eq!(
        agent["dependsOn"],
        json!([{"containerName": "tracing", "condition": "START"}])
    );
    let env = agent["environment"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "ENABLE_ENVOY_XRAY_TRACING", "value": "1"})));
    assert!(env.contains(&json!({"name": "AWS_XRAY_DAEMON_ADDRESS", "value": "127.0.0.1:2001"})));
    assert!(check_task_definition(&out, &loc()).is_empty());
    assert_eq!(eject_task_definition(&out, &loc()).unwrap(), td);

    // The App Mesh Envoy is told the port its own way.
    let envoy = InjectOptions {
        proxy: ProxyKind::Envoy,
        config: None,
        ..xray()
    };
    let out = inject_task_definition(&td, &envoy, &loc()).unwrap().value;
    let env = container(&out, "envoy")["environment"].clone();
    assert_eq!(
        env,
        json!([
            {"name": "APPMESH_RESOURCE_ARN", "value": "mesh/colorapp/virtualNode/worker"},
            {"name": "ENABLE_ENVOY_XRAY_TRACING", "value": "1"},
            {"name": "XRAY_DAEMON_PORT", "value": "2001"}
        ])
    );
    assert_eq!(
        container(&out, "envoy")["dependsOn"],
        json!([{"containerName": "tracing", "condition": "START"}])
    );
}

#[test]
fn xray_daemon_not_running_as_the_ignored_uid_waits_for_the_proxy_instead() {
    let td = with_own_daemon(None);
    let out = inject_task_definition(&td, &xray(), &loc()).unwrap();
    assert!(
        out.notes.iter().any(|n| n
            .to_string()
            .contains("container 'tracing': field user: --xray: the task's X-Ray daemon does not run as the ignored UID")),
        "{:?}",
        out.notes
    );
    let v = &out.value;
    assert!(container(v, "taskmesh-agent").get("dependsOn").is_none());
    assert_eq!(
        container(v, "tracing")["dependsOn"],
        json!([{"containerName": "taskmesh-agent", "condition": "HEALTHY"}])
    );
    assert!(check_task_definition(v, &loc()).is_empty());
    assert_eq!(eject_task_definition(v, &loc()).unwrap(), td);
}

#[test]
fn xray_with_proxy_init_and_the_container_limit() {
    let o = InjectOptions {
        redirect: Redirect::ProxyInit,
        ..xray()
    };
    let out = inject_task_definition(&ec2(), &o, &loc()).unwrap().value;
    assert_eq!(
        names(&out),
        [
            "app",
            "taskmesh-agent",
            "taskmesh-proxy-init",
            "xray-daemon"
        ]
    );
    assert!(is_meshed(&out));
    assert!(check_task_definition(&out, &loc()).is_empty());
    assert_eq!(eject_task_definition(&out, &loc()).unwrap(), ec2());

    // 9 containers: the proxy fits, the proxy and an added daemon do not...
    let mut nine = ec2();
    for i in 1..9 {
        nine["containerDefinitions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": format!("side{i}"), "image": "busybox", "memory": 16}));
    }
    assert!(inject_task_definition(&nine, &opts(), &loc()).is_ok());
    let m = err(&nine, &xray()).to_string();
    assert!(
        m.contains("11 containers with the proxy and the X-Ray daemon")
            && m.contains("limit of 10"),
        "{m}"
    );
    // ...but reusing the task's own daemon adds nothing.
    nine["containerDefinitions"][8]["image"] = json!("public.ecr.aws/xray/aws-xray-daemon");
    nine["containerDefinitions"][8]["user"] = json!("1337");
    let out = inject_task_definition(&nine, &xray(), &loc())
        .unwrap()
        .value;
    assert_eq!(names(&out).len(), 10);
    assert_eq!(
        container(&out, "taskmesh-agent")["dependsOn"],
        json!([{"containerName": "side8", "condition": "START"}])
    );
}

#[test]
fn xray_image_overrides_and_needs_xray() {
    let o = InjectOptions {
        xray_image: Some("111122223333.dkr.ecr.us-east-1.amazonaws.com/xray:3.3.14".into()),
        ..opts()
    };
    let e = err(&ec2(), &o);
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("pass --xray too"), "{e}");
    let out = inject_task_definition(&ec2(), &InjectOptions { xray: true, ..o }, &loc())
        .unwrap()
        .value;
    assert_eq!(
        container(&out, "xray-daemon")["image"],
        "111122223333.dkr.ecr.us-east-1.amazonaws.com/xray:3.3.14"
    );
}

#[test]
fn xray_in_cloudformation_properties_uses_pascal_case() {
    let props = json!({
        "Family": "web", "NetworkMode": "awsvpc", "Memory": "1024",
        "ContainerDefinitions": [{"Name": "app", "Image": {"Ref": "AppImage"},
            "PortMappings": [{"ContainerPort": 8080}],
            "LogConfiguration": {"LogDriver": "awslogs", "Options": {"awslogs-group": {"Ref": "Logs"}}}}]
    });
    let (out, _) = inject_cfn_task_definition_properties(&props, "TaskDef", &xray()).unwrap();
    let list = out["ContainerDefinitions"].as_array().unwrap();
    let daemon = list.iter().find(|c| c["Name"] == "xray-daemon").unwrap();
    assert_eq!(
        daemon["PortMappings"],
        json!([{"ContainerPort": 2000, "Protocol": "udp"}])
    );
    assert_eq!(
        daemon["LogConfiguration"],
        props["ContainerDefinitions"][0]["LogConfiguration"]
    );
    let agent = list.iter().find(|c| c["Name"] == "taskmesh-agent").unwrap();
    assert_eq!(
        agent["DependsOn"],
        json!([{"ContainerName": "xray-daemon", "Condition": "START"}])
    );
}

#[test]
fn is_meshed_and_check_do_not_take_the_daemon_for_the_proxy() {
    let mut td = inject_task_definition(&ec2(), &xray(), &loc())
        .unwrap()
        .value;
    // The added daemon first: still the agent is the proxy.
    let list = td["containerDefinitions"].as_array_mut().unwrap();
    let daemon = list.pop().unwrap();
    list.insert(0, daemon);
    assert!(is_meshed(&td));
    assert!(check_task_definition(&td, &loc()).is_empty());
    // Tracing on, daemon gone: check says so.
    td["containerDefinitions"].as_array_mut().unwrap().remove(0);
    let f = check_task_definition(&td, &loc());
    assert!(
        f.iter().any(|x| x.to_string().contains(
            "container 'taskmesh-agent': field environment: ENABLE_ENVOY_XRAY_TRACING is on but the task runs no X-Ray daemon"
        )),
        "{f:#?}"
    );
}
