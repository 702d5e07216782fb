//! Every accepted shape of the mesh document parses to the same canonical document, in JSON
//! and in YAML; metadata, status, timestamps and unknown fields are ignored; a document with
//! elements of two meshes is rejected.

use serde_json::{Value, json};
use taskmesh_mesh::{DocumentError, MeshDocument};

fn service() -> Value {
    json!({"virtualServiceName": "colorteller.colorapp.local",
           "spec": {"provider": {"virtualRouter": {"virtualRouterName": "colorteller-vr"}}}})
}
fn router() -> Value {
    json!({"virtualRouterName": "colorteller-vr",
           "spec": {"listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}]}})
}
fn route() -> Value {
    json!({"virtualRouterName": "colorteller-vr", "routeName": "canary",
           "spec": {"priority": 10, "httpRoute": {"match": {"prefix": "/"},
               "action": {"weightedTargets": [{"virtualNode": "colorteller-white", "weight": 3},
                                              {"virtualNode": "colorteller-blue", "weight": 1}]}}}})
}
fn node(name: &str) -> Value {
    json!({"virtualNodeName": name,
           "spec": {"listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}],
                    "serviceDiscovery": {"dns": {"hostname": format!("{name}.colorapp.local")}}}})
}

fn canonical() -> Value {
    json!({"meshName": "colorapp", "spec": {"egressFilter": {"type": "DROP_ALL"}},
           "virtualServices": [service()], "virtualRouters": [router()], "routes": [route()],
           "virtualNodes": [node("colorteller-white"), node("colorteller-blue")]})
}

/// Adds API noise (metadata with timestamps in several forms, status, unknown fields, meshName).
fn noisy(mut v: Value, created: Value) -> Value {
    let obj = v.as_object_mut().expect("object");
    obj.insert("meshName".into(), json!("colorapp"));
    obj.insert(
        "metadata".into(),
        json!({"arn": "arn:aws:appmesh:us-west-2:111122223333:mesh/colorapp/x",
        "createdAt": created.clone(), "lastUpdatedAt": created, "meshOwner": "111122223333",
        "resourceOwner": "111122223333", "uid": "a1b2", "version": 3}),
    );
    obj.insert("status".into(), json!({"status": "ACTIVE"}));
    obj.insert("someFutureField".into(), json!({"x": 1}));
    v
}

fn expected() -> Value {
    MeshDocument::from_value(canonical())
        .expect("canonical document is valid")
        .to_json_value()
}

#[test]
fn canonical_json_and_yaml() {
    let json_bytes = serde_json::to_vec(&canonical()).unwrap();
    let doc = MeshDocument::from_slice(&json_bytes).unwrap();
    assert_eq!(doc.mesh_name(), "colorapp");
    assert_eq!(doc.routes().len(), 1);
    assert_eq!(doc.virtual_nodes().len(), 2);
    let yaml = serde_yaml_ng::to_string(&canonical()).unwrap();
    assert_eq!(
        MeshDocument::from_slice(yaml.as_bytes())
            .unwrap()
            .to_json_value(),
        expected()
    );
}

#[test]
fn design_md_yaml_example() {
    let yaml = r#"
meshName: colorapp
spec: {egressFilter: {type: DROP_ALL}}            # optional; App Mesh defaults apply
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
        action: {weightedTargets: [{virtualNode: colorteller-white, weight: 3},
                                   {virtualNode: colorteller-blue, weight: 1}]}
virtualNodes:
  - virtualNodeName: colorteller-white
    spec:
      listeners: [{portMapping: {port: 9080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: colorteller-white.colorapp.local}}
  - virtualNodeName: colorteller-blue
    spec:
      listeners: [{portMapping: {port: 9080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: colorteller-blue.colorapp.local}}
"#;
    assert_eq!(
        MeshDocument::from_slice(yaml.as_bytes())
            .unwrap()
            .to_json_value(),
        expected()
    );
}

#[test]
fn array_of_describe_outputs_with_cli_timestamps() {
    let arr = json!([
        {"mesh": noisy(json!({"spec": {"egressFilter": {"type": "DROP_ALL"}}}), json!("2022-04-06T13:48:20.749000-05:00"))},
        {"virtualService": noisy(service(), json!("2022-04-06T13:48:20.749000-05:00"))},
        {"virtualRouter": noisy(router(), json!(1649252750.072))},
        {"route": noisy(route(), json!("25/11/2026, 17:15:11"))},
        {"virtualNode": noisy(node("colorteller-white"), json!(1649252750))},
        {"virtualNode": noisy(node("colorteller-blue"), Value::Null)},
    ]);
    let doc = MeshDocument::from_slice(&serde_json::to_vec(&arr).unwrap()).unwrap();
    assert_eq!(doc.to_json_value(), expected());
    assert_eq!(
        doc,
        MeshDocument::from_value(canonical()).unwrap(),
        "equal content, whatever the shape"
    );
}

#[test]
fn array_of_raw_api_bodies() {
    let arr = json!([
        noisy(
            json!({"spec": {"egressFilter": {"type": "DROP_ALL"}}}),
            json!(1.5)
        ),
        noisy(service(), json!(1.5)),
        noisy(router(), json!(1.5)),
        noisy(route(), json!(1.5)),
        noisy(node("colorteller-white"), json!(1.5)),
        noisy(node("colorteller-blue"), json!(1.5)),
    ]);
    let doc = MeshDocument::from_slice(&serde_json::to_vec(&arr).unwrap()).unwrap();
    assert_eq!(doc.to_json_value(), expected());
}

#[test]
fn single_raw_bodies_and_wrapped_single_resources() {
    let doc = MeshDocument::from_slice(&serde_json::to_vec(&noisy(node("a"), json!(1))).unwrap())
        .unwrap();
    assert_eq!(doc.mesh_name(), "colorapp");
    assert_eq!(doc.virtual_nodes()[0].virtual_node_name, "a");
    let wrapped = json!({"virtualNode": noisy(node("b"), json!("2022-04-06T13:48:20Z"))});
    let doc = MeshDocument::from_slice(&serde_json::to_vec(&wrapped).unwrap()).unwrap();
    assert_eq!(doc.virtual_nodes()[0].virtual_node_name, "b");
    // A bare MeshData body is a document without elements.
    let mesh = noisy(
        json!({"spec": {"egressFilter": {"type": "ALLOW_ALL"}}}),
        json!(1),
    );
    let doc = MeshDocument::from_slice(&serde_json::to_vec(&mesh).unwrap()).unwrap();
    assert_eq!(
        doc.spec().egress_filter_type(),
        taskmesh_mesh::model::EgressFilterType::AllowAll
    );
    assert!(doc.routes().is_empty());
}

#[test]
fn multi_document_yaml_of_describe_outputs() {
    let parts: Vec<String> = [
        json!({"virtualService": noisy(service(), json!("2022-04-06T13:48:20.749000-05:00"))}),
        json!({"virtualRouter": noisy(router(), json!(1))}),
        json!({"route": noisy(route(), json!(1))}),
        json!({"virtualNode": noisy(node("colorteller-white"), json!(1))}),
        json!({"virtualNode": noisy(node("colorteller-blue"), json!(1))}),
        json!({"mesh": noisy(json!({"spec": {"egressFilter": {"type": "DROP_ALL"}}}), json!(1))}),
    ]
    .iter()
    .map(|v| serde_yaml_ng::to_string(v).unwrap())
    .collect();
    let yaml = parts.join("---\n");
    let doc = MeshDocument::from_slice(yaml.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(doc.to_json_value(), expected());
    let err = MeshDocument::from_slice(b"meshName: m\n---\n: [").unwrap_err();
    assert!(
        matches!(err, DocumentError::Syntax { format: "YAML", .. }),
        "{err}"
    );
}

#[test]
fn mesh_wrapper_around_a_document() {
    let wrapped = json!({"mesh": canonical()});
    let doc = MeshDocument::from_slice(&serde_json::to_vec(&wrapped).unwrap()).unwrap();
    assert_eq!(doc.to_json_value(), expected());
    let yaml = serde_yaml_ng::to_string(&wrapped).unwrap();
    assert_eq!(
        MeshDocument::from_slice(yaml.as_bytes())
            .unwrap()
            .to_json_value(),
        expected()
    );
}

#[test]
fn canonical_output_round_trips() {
    let out = expected();
    let again = MeshDocument::from_value(out.clone())
        .unwrap()
        .to_json_value();
    assert_eq!(out, again);
    // Elements in the canonical output carry no meshName of their own.
    assert!(out["routes"][0].get("meshName").is_none());
}

#[test]
fn two_meshes_in_one_document_is_an_error() {
    let mut other = node("x");
    other["meshName"] = json!("othermesh");
    let arr = json!([{"virtualNode": noisy(node("colorteller-white"), json!(1))}, {"virtualNode": other}]);
    let err = MeshDocument::from_slice(&serde_json::to_vec(&arr).unwrap()).unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    assert_eq!(problems[0].path, "[1].virtualNode.meshName");
    assert!(
        problems[0].message.contains("othermesh"),
        "{}",
        problems[0].message
    );
    let mut doc = canonical();
    doc["routes"][0]["meshName"] = json!("elsewhere");
    let err = MeshDocument::from_value(doc).unwrap_err();
    assert_eq!(err.problems()[0].path, "routes[0].meshName");
}

#[test]
fn syntax_errors_and_missing_mesh_name() {
    assert!(matches!(
        MeshDocument::from_slice(b"{\"meshName\": "),
        Err(DocumentError::Syntax { .. })
    ));
    assert!(matches!(
        MeshDocument::from_slice(b"  \n"),
        Err(DocumentError::Syntax { .. })
    ));
    assert!(matches!(
        MeshDocument::from_slice(b"a: [unclosed"),
        Err(DocumentError::Syntax { .. })
    ));
    let err = MeshDocument::from_value(json!({"virtualNodes": [node("a")]})).unwrap_err();
    assert_eq!(err.problems()[0].path, "meshName");
    let err = MeshDocument::from_slice(b"42").unwrap_err();
    assert!(err.to_string().contains("expected an object"), "{err}");
}

#[test]
fn type_errors_carry_the_field_path() {
    let mut doc = canonical();
    doc["virtualNodes"][1]["spec"]["listeners"][0]["portMapping"]["protocol"] = json!("https");
    doc["routes"][0]["spec"]["httpRoute"]["match"]["method"] = json!("FETCH");
    let err = MeshDocument::from_value(doc).unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert!(
        paths.contains(&"routes[0].spec.httpRoute.match.method"),
        "{err}"
    );
    assert!(
        paths.contains(&"virtualNodes[1].spec.listeners[0].portMapping.protocol"),
        "{err}"
    );
}

#[test]
fn defaults_are_applied_by_accessors() {
    let doc = MeshDocument::from_value(json!({"meshName": "m"})).unwrap();
    assert_eq!(
        doc.spec().egress_filter_type(),
        taskmesh_mesh::model::EgressFilterType::DropAll
    );
}
