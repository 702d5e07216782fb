//! The `taskmesh` binary end to end: exit codes (0 done, 1 findings, 2 bad input/usage, 3 I/O),
//! stdin, `-o`, atomic `--in-place` (nothing written on error), `--help`, the bundled examples
//! (the README's first command), and `mesh check` / `mesh from-template`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_taskmesh"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run taskmesh")
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The binary may refuse before reading its input (e.g. --in-place with stdin): a broken pipe
    // here is then expected, and the exit status tells the rest.
    if let Err(e) = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
    {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
    child.wait_with_output().expect("wait")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates/examples")
}

fn example(name: &str) -> String {
    examples().join(name).display().to_string()
}

const MESH: [&str; 4] = [
    "--mesh",
    "colorapp",
    "--config",
    "s3://my-bucket/colorapp.yaml",
];

const BRIDGE: &str = r#"{"family": "web", "networkMode": "bridge", "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 128}]}"#;

#[test]
fn readme_first_command_injects_the_bundled_example() {
    let o = run(&[
        &["inject", &example("colorteller-fargate.json")][..],
        &MESH[..],
    ]
    .concat());
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).expect("JSON on stdout");
    assert!(taskmesh::is_meshed(&v));
    assert_eq!(
        v["proxyConfiguration"]["properties"][3],
        serde_json::json!({"name": "AppPorts", "value": "9080"})
    );
}

#[test]
fn every_bundled_example_injects_and_checks_clean() {
    for name in [
        "colorteller-fargate.json",
        "colorapp-cfn.yaml",
        "orders-ec2-describe.json",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(name);
        std::fs::copy(examples().join(name), &copy).unwrap();
        let path = copy.display().to_string();
        let o = run(&["check", &path]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{name}: plain example should have findings: {}",
            err(&o)
        );
        assert!(err(&o).contains("not meshed"), "{}", err(&o));
        let o = run(&[&["inject", &path, "--in-place"][..], &MESH[..]].concat());
        assert_eq!(o.status.code(), Some(0), "{name}: {}", err(&o));
        assert!(out(&o).is_empty());
        let o = run(&["check", &path]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", err(&o));
        assert!(err(&o).contains("no problems found"));
    }
}

#[test]
fn cfn_example_keeps_yaml_and_takes_metadata_identity() {
    let o = run(&[&["inject", &example("colorapp-cfn.yaml")][..], &MESH[..]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    assert!(
        text.contains("Value: mesh/colorapp/virtualNode/colorteller-white"),
        "{text}"
    );
    assert!(
        text.contains("Value: mesh/colorapp/virtualNode/colorgateway"),
        "{text}"
    );
    assert!(
        text.contains("ExecutionRoleArn: !GetAtt TaskExecutionRole.Arn"),
        "{text}"
    );
    let o = run(&[
        &[
            "inject",
            &example("colorapp-cfn.yaml"),
            "-o",
            "json",
            "--resource",
            "ColorGatewayTaskDef",
        ][..],
        &MESH[..],
    ]
    .concat());
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(
        v["Resources"]["ColorGatewayTaskDef"]["Properties"]["ExecutionRoleArn"],
        serde_json::json!({"Fn::GetAtt": ["TaskExecutionRole", "Arn"]})
    );
    assert_eq!(
        v["Resources"]["ColorTellerWhiteTaskDef"]["Properties"]["ContainerDefinitions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn stdin_and_stdout() {
    let doc = r#"{"family": "web", "networkMode": "awsvpc", "memory": "512", "containerDefinitions": [{"name": "web", "image": "nginx"}]}"#;
    let o = run_stdin(&[&["inject"][..], &MESH[..]].concat(), doc);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let injected = out(&o);
    assert!(injected.contains("taskmesh-agent"));
    let o = run_stdin(&["eject", "-"], &injected);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let back: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(doc).unwrap()
    );
    let o = run_stdin(
        &[
            "inject",
            "--in-place",
            "--mesh",
            "m",
            "--config",
            "s3://b/k",
        ],
        doc,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--in-place needs a FILE"), "{}", err(&o));
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn bad_input_is_exit_2_and_in_place_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.json");
    std::fs::write(&path, BRIDGE).unwrap();
    let p = path.display().to_string();
    let o = run(&[&["inject", &p, "--in-place"][..], &MESH[..]].concat());
    assert_eq!(o.status.code(), Some(2));
    let e = err(&o);
    assert!(
        e.starts_with(&format!(
            "error: {p}: field networkMode: network mode 'bridge'"
        )),
        "{e}"
    );
    assert!(e.contains("Fix: set networkMode to awsvpc"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), BRIDGE);
    assert_eq!(listing(dir.path()), ["web.json"]);
    // Unparseable input, bad flag values: also 2.
    std::fs::write(&path, "{ not json").unwrap();
    let o = run(&[&["inject", &p][..], &MESH[..]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains(&format!("{p}: cannot parse: invalid JSON at line 1")),
        "{}",
        err(&o)
    );
    let o = run(&[
        "inject",
        &example("colorteller-fargate.json"),
        "--app-ports",
        "80,x",
        "--mesh",
        "m",
        "--config",
        "c",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--app-ports: 'x'"), "{}", err(&o));
    let o = run(&["inject", "--proxy", "haproxy"]);
    assert_eq!(o.status.code(), Some(2), "clap usage errors exit 2");
}

#[test]
fn in_place_replaces_atomically_keeping_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("td.json");
    std::fs::copy(examples().join("colorteller-fargate.json"), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let p = path.display().to_string();
    let o = run(&[&["inject", &p, "--in-place"][..], &MESH[..]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let once = std::fs::read_to_string(&path).unwrap();
    assert!(once.contains("taskmesh-agent"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(listing(dir.path()), ["td.json"]);
    // inject twice = once, byte for byte
    let o = run(&[&["inject", &p, "--in-place"][..], &MESH[..]].concat());
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), once);
    // eject in place restores the example byte for byte
    let o = run(&["eject", &p, "--in-place"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        std::fs::read_to_string(examples().join("colorteller-fargate.json")).unwrap()
    );
}

#[test]
fn io_failures_are_exit_3() {
    let o = run(&[&["inject", "/nonexistent/dir/td.json"][..], &MESH[..]].concat());
    assert_eq!(o.status.code(), Some(3));
    assert!(
        err(&o).contains("reading /nonexistent/dir/td.json"),
        "{}",
        err(&o)
    );
    let o = run(&["check", "/nonexistent/td.json"]);
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn check_reports_findings_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.json");
    std::fs::write(
        &path,
        r#"{"family": "x", "networkMode": "bridge", "memory": "512",
            "proxyConfiguration": {"type": "APPMESH", "containerName": "envoy", "properties": [{"name": "IgnoredUID", "value": "1337"}]},
            "containerDefinitions": [{"name": "app", "image": "a"}, {"name": "envoy", "image": "envoyproxy/envoy:v1.16.2"}]}"#,
    )
    .unwrap();
    let o = run(&["check", &path.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    for needle in [
        "field networkMode: proxyConfiguration needs networkMode awsvpc",
        "container 'envoy': field healthCheck: the proxy has no health check",
        "container 'envoy': field user: no user",
        "container 'app': field dependsOn: does not wait for the proxy",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn help_explains_every_flag_with_its_default() {
    let o = run(&["inject", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let h = out(&o);
    for flag in [
        "--virtual-node",
        "--mesh",
        "--config",
        "--proxy",
        "--image",
        "--redirect",
        "--ingress-port",
        "--egress-port",
        "--admin-port",
        "--ignored-uid",
        "--ignored-gid",
        "--egress-ignored-ips",
        "--egress-ignored-ports",
        "--app-ports",
        "--resource",
        "--no-resize",
        "--xray",
        "--xray-image",
        "public.ecr.aws/xray/aws-xray-daemon:latest",
        "ENABLE_ENVOY_XRAY_TRACING=1",
        "--output",
        "--in-place",
        "[default: 15000]",
        "[default: 15001]",
        "[default: 9901]",
        "[default: 1337]",
        "[default: agent]",
        "[default: ecs]",
    ] {
        assert!(h.contains(flag), "inject --help lacks {flag}:\n{h}");
    }
    let o = run(&["--help"]);
    let h = out(&o);
    for cmd in ["inject", "eject", "check", "mesh", "Exit codes"] {
        assert!(h.contains(cmd), "--help lacks {cmd}:\n{h}");
    }
}

const MESH_DOC: &str = r#"meshName: colorapp
virtualServices:
  - virtualServiceName: colorteller.colorapp.local
    spec: {provider: {virtualRouter: {virtualRouterName: colorteller-vr}}}
virtualRouters:
  - virtualRouterName: colorteller-vr
    spec: {listeners: [{portMapping: {port: 9080, protocol: http}}]}
routes:
  - virtualRouterName: colorteller-vr
    routeName: canary
    spec:
      priority: 10
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNode: colorteller-white, weight: 3}]}
virtualNodes:
  - virtualNodeName: colorteller-white
    spec:
      listeners: [{portMapping: {port: 9080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: colorteller-white.colorapp.local}}
"#;

#[test]
fn mesh_check_validates_documents() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("mesh.yaml");
    std::fs::write(&good, MESH_DOC).unwrap();
    let o = run(&["mesh", "check", &good.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).contains("mesh colorapp"), "{}", err(&o));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        MESH_DOC.replace(
            "virtualNode: colorteller-white, weight",
            "virtualNode: nowhere, weight",
        ),
    )
    .unwrap();
    let o = run(&["mesh", "check", &bad.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("routes[0]"), "{}", err(&o));
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "meshName: [").unwrap();
    let o = run(&["mesh", "check", &broken.display().to_string()]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}

#[test]
fn mesh_from_template_compiles_app_mesh_resources() {
    let template = r#"Resources:
  Mesh:
    Type: AWS::AppMesh::Mesh
    Properties: {MeshName: colorapp}
  Node:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualNodeName: white
      Spec:
        Listeners: [{PortMapping: {Port: 9080, Protocol: http}}]
        ServiceDiscovery: {DNS: {Hostname: white.colorapp.local}}
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, template).unwrap();
    let o = run(&[
        "mesh",
        "from-template",
        &path.display().to_string(),
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["meshName"], "colorapp");
    assert_eq!(v["virtualNodes"][0]["virtualNodeName"], "white");
    let o = run_stdin(&["mesh", "from-template", "-"], "Resources: {}\n");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}

#[test]
fn xray_flags_on_inject_and_register() {
    let td = r#"{"family": "web", "networkMode": "awsvpc", "memory": "512", "containerDefinitions": [{"name": "web", "image": "nginx", "portMappings": [{"containerPort": 80}]}]}"#;
    let o = run_stdin(&[&["inject", "-", "--xray"][..], &MESH[..]].concat(), td);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let names: Vec<&str> = v["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["web", "taskmesh-agent", "xray-daemon"]);
    // --xray-image alone is a usage error from clap (exit 2), naming the missing flag.
    let o = run_stdin(
        &[&["inject", "-", "--xray-image", "my/xray:1"][..], &MESH[..]].concat(),
        td,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--xray"), "{}", err(&o));
    // register takes the same flags.
    let o = run(&["register", "--help"]);
    let h = out(&o);
    assert!(h.contains("--xray") && h.contains("--xray-image"), "{h}");
}
