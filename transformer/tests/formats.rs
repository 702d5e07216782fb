//! Format detection, parsing and rendering: the four formats are told apart, output keeps the
//! input's format, key order, indentation, unknown fields and CloudFormation intrinsics (short
//! YAML tags and long `Fn::*` forms), `-o` converts, describe output becomes registrable, and
//! malformed input is a parse error naming the file (never a panic).

use taskmesh::{
    Document, Format, InjectOptions, Syntax, TransformError, eject_document, inject_document,
};

fn parse(text: &str) -> Document {
    Document::parse(text.as_bytes(), "in").unwrap_or_else(|e| panic!("{e}"))
}

const YAML: &str = r#"AWSTemplateFormatVersion: '2010-09-09'
Parameters:
  Image:
    Type: String
Resources:
  Zeta:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub '${AWS::StackName}-bucket'
  TaskDef:
    Type: AWS::ECS::TaskDefinition
    Properties:
      Family: !Join ['-', [!Ref 'AWS::StackName', web]]
      NetworkMode: awsvpc
      Memory: !If [IsProd, '2048', '512']
      UnknownFutureProperty: {Anything: [1, 2]}
      ContainerDefinitions:
        - Name: web
          Image: !Ref Image
          Environment:
            - Name: REGION
              Value: !FindInMap [RegionMap, !Ref 'AWS::Region', Name]
            - Name: PORT
              Value: 9080
            - Name: ARN
              Value: !GetAtt Role.Arn
            - Name: PICK
              Value: !Select [0, !GetAZs '']
          PortMappings:
            - ContainerPort: 9080
  Alpha:
    Type: AWS::SNS::Topic
"#;

#[test]
fn detects_every_format() {
    assert_eq!(
        parse(r#"{"family": "x", "containerDefinitions": []}"#).format(),
        Format::ApiJson
    );
    assert_eq!(
        parse(r#"{"taskDefinition": {"containerDefinitions": []}, "tags": []}"#).format(),
        Format::DescribeOutput
    );
    assert_eq!(
        parse(r#"{"taskDefinitionArn": "arn", "containerDefinitions": []}"#).format(),
        Format::DescribeOutput
    );
    assert_eq!(parse(r#"{"Resources": {}}"#).format(), Format::CfnJson);
    assert_eq!(parse(YAML).format(), Format::CfnYaml);
}

#[test]
fn malformed_input_is_a_parse_error_naming_the_file() {
    for bad in [
        "",
        "   ",
        "{\"containerDefinitions\": [",
        "[1, 2]",
        "\"x\"",
        "a: [",
        "just: a mapping",
        "containerDefinitions: []\n",
        "\u{0}\u{1}",
        "{\"x\": 1}",
    ] {
        let e = Document::parse(bad.as_bytes(), "bad.json").expect_err(bad);
        assert!(matches!(e, TransformError::Parse { .. }), "{bad:?}: {e:?}");
        assert!(e.to_string().starts_with("bad.json: cannot parse: "), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
    let e = Document::parse(&[0xff, 0xfe, 0x00], "bin").unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}

#[test]
fn yaml_round_trips_short_tags_key_order_and_unknown_fields() {
    let doc = parse(YAML);
    // A changed document is serialised again: render the tree without the original text.
    let out = Document::from_value(Format::CfnYaml, doc.value().clone(), "in").render();
    for needle in [
        "BucketName: !Sub ${AWS::StackName}-bucket",
        "Family: !Join\n      - '-'\n      - - !Ref AWS::StackName\n        - web",
        "Memory: !If\n      - IsProd\n      - '2048'\n      - '512'",
        "Image: !Ref Image",
        "Value: !FindInMap\n          - RegionMap\n          - !Ref AWS::Region\n          - Name",
        "Value: 9080",
        "Value: !GetAtt Role.Arn",
        "Value: !Select\n          - 0\n          - !GetAZs ''",
        "UnknownFutureProperty:\n        Anything:\n        - 1\n        - 2",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let zeta = out.find("Zeta:").unwrap();
    let task = out.find("TaskDef:").unwrap();
    let alpha = out.find("Alpha:").unwrap();
    assert!(zeta < task && task < alpha, "key order changed:\n{out}");
    // Parsing the output again gives the same tree.
    assert_eq!(parse(&out).value(), doc.value());
}

#[test]
fn inject_keeps_intrinsics_opaque_in_yaml() {
    let o = InjectOptions {
        mesh: Some("m".into()),
        config: Some("s3://b/k".into()),
        virtual_node: Some("web".into()),
        ..InjectOptions::default()
    };
    let (out, notes) = inject_document(&parse(YAML), &o).unwrap();
    let text = out.render();
    assert!(text.contains("Memory: !If\n      - IsProd"), "{text}");
    assert!(
        text.contains(
            "- Name: taskmesh-agent\n        Image: public.ecr.aws/taskmesh/taskmesh-agent:"
        ),
        "{text}"
    );
    assert!(text.contains("Value: '15000'"), "{text}");
    // Task memory is an intrinsic: nothing is read out of it (and Fargate is not asked for here).
    assert!(notes.is_empty(), "{notes:?}");
    let back = eject_document(&out, &InjectOptions::default()).unwrap();
    assert_eq!(back.value(), parse(YAML).value());
}

#[test]
fn json_keeps_indentation_trailing_newline_and_long_form_intrinsics() {
    let text = "{\n    \"Resources\": {\n        \"T\": {\"Type\": \"AWS::SNS::Topic\", \"Properties\": {\"TopicName\": {\"Fn::Sub\": \"${AWS::StackName}\"}}}\n    }\n}";
    let doc = parse(text);
    let out = doc.render();
    assert!(
        out.starts_with("{\n    \"Resources\": {\n        \"T\": {"),
        "{out}"
    );
    assert!(out.contains("\"Fn::Sub\": \"${AWS::StackName}\""), "{out}");
    assert!(!out.ends_with('\n'));
    assert!(parse(&format!("{text}\n")).render().ends_with("}\n"));
}

#[test]
fn output_conversion_turns_short_tags_into_long_form() {
    let json = parse(YAML).render_as(Syntax::Json);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let props = &v["Resources"]["TaskDef"]["Properties"];
    assert_eq!(
        props["Family"],
        serde_json::json!({"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, "web"]]})
    );
    assert_eq!(
        props["ContainerDefinitions"][0]["Environment"][2]["Value"],
        serde_json::json!({"Fn::GetAtt": ["Role", "Arn"]})
    );
    assert_eq!(
        props["ContainerDefinitions"][0]["Environment"][3]["Value"],
        serde_json::json!({"Fn::Select": [0, {"Fn::GetAZs": ""}]})
    );
    // ... and that JSON is a CloudFormation JSON template again.
    assert_eq!(parse(&json).format(), Format::CfnJson);
    let api = parse(r#"{"family": "x", "containerDefinitions": [{"name": "a"}]}"#);
    assert_eq!(
        api.render_as(Syntax::Yaml),
        "family: x\ncontainerDefinitions:\n- name: a\n"
    );
}

#[test]
fn describe_output_becomes_registrable() {
    let text = r#"{"taskDefinition": {"taskDefinitionArn": "arn:aws:ecs:r:1:task-definition/x:3", "family": "x", "revision": 3,
        "status": "ACTIVE", "networkMode": "awsvpc", "memory": "512", "requiresAttributes": [], "compatibilities": ["EC2"],
        "registeredAt": "2026-01-01T00:00:00Z", "registeredBy": "me", "deregisteredAt": null, "deleteRequestedAt": null,
        "containerDefinitions": [{"name": "a", "image": "a", "dependsOn": null, "portMappings": [{"containerPort": 80}]}],
        "proxyConfiguration": null}, "tags": [{"key": "team", "value": "x"}]}"#;
    let o = InjectOptions {
        mesh: Some("m".into()),
        config: Some("s3://b/k".into()),
        ..InjectOptions::default()
    };
    let (out, _) = inject_document(&parse(text), &o).unwrap();
    assert_eq!(out.format(), Format::ApiJson);
    let v = out.value();
    for gone in [
        "taskDefinitionArn",
        "revision",
        "status",
        "requiresAttributes",
        "compatibilities",
        "registeredAt",
        "registeredBy",
        "deregisteredAt",
        "deleteRequestedAt",
        "taskDefinition",
    ] {
        assert!(v.get(gone).is_none(), "{gone} kept");
    }
    assert_eq!(
        v["tags"],
        serde_json::json!([{"key": "team", "value": "x"}])
    );
    assert_eq!(v["proxyConfiguration"]["type"], "APPMESH");
    let ejected = eject_document(&parse(text), &InjectOptions::default()).unwrap();
    assert_eq!(
        ejected.value()["containerDefinitions"],
        serde_json::json!([{"name": "a", "image": "a", "portMappings": [{"containerPort": 80}]}])
    );
}

#[test]
fn empty_proxy_property_values_are_kept() {
    let text = r#"{"family": "x", "networkMode": "awsvpc", "memory": "512", "containerDefinitions": [{"name": "a", "image": "a"}],
        "proxyConfiguration": {"type": "APPMESH", "containerName": "envoy", "properties": [{"name": "IgnoredUID", "value": "1337"}, {"name": "EgressIgnoredPorts", "value": ""}]}}"#;
    let o = InjectOptions {
        mesh: Some("m".into()),
        config: Some("s3://b/k".into()),
        ..InjectOptions::default()
    };
    let (out, _) = inject_document(&parse(text), &o).unwrap();
    let props = out.value()["proxyConfiguration"]["properties"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        props.contains(&serde_json::json!({"name": "EgressIgnoredPorts", "value": ""})),
        "{props:?}"
    );
}

#[test]
fn yaml_outside_the_changed_resources_is_kept_byte_for_byte() {
    let text = "# stack header comment\nParameters:\n  Image: {Type: String}   # flow style kept\nResources:\n\n  # the bucket\n  Bucket:\n    Type: 'AWS::S3::Bucket'\n    Properties:\n      BucketName: !Sub \"${AWS::StackName}-b\"\n\n  # the service\n  Web:\n    Type: AWS::ECS::TaskDefinition\n    Properties:\n      NetworkMode: awsvpc\n      Memory: '512'\n      ContainerDefinitions:\n        - Name: web   # inline comment\n          Image: !Ref Image\n\n  Topic:\n    Type: AWS::SNS::Topic # trailing\nOutputs:\n  Arn: {Value: !Ref Topic}\n";
    let doc = parse(text);
    assert_eq!(
        doc.render(),
        text,
        "an unchanged document renders as it was read"
    );
    let o = InjectOptions {
        mesh: Some("m".into()),
        config: Some("s3://b/k".into()),
        ..InjectOptions::default()
    };
    let (out, _) = inject_document(&doc, &o).unwrap();
    let rendered = out.render();
    let web = rendered.find("  Web:\n").unwrap();
    assert_eq!(&rendered[..web], &text[..text.find("  Web:\n").unwrap()]);
    let tail = &text[text.find("\n\n  Topic:").unwrap()..];
    assert!(rendered.ends_with(tail), "{rendered}");
    assert!(
        rendered.contains("    - Name: taskmesh-agent\n"),
        "{rendered}"
    );
    assert_eq!(parse(&rendered).value(), out.value());
    // inject again: byte for byte the same; eject: the resource's values are back.
    let (again, _) = inject_document(&parse(&rendered), &o).unwrap();
    assert_eq!(again.render(), rendered);
    let back = eject_document(&parse(&rendered), &InjectOptions::default()).unwrap();
    assert_eq!(back.value(), doc.value());
}
