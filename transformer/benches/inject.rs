//! Criterion benchmark: a 64 KiB ECS task definition (the ECS size limit) through the whole
//! CLI path — `Document::parse`, `inject_document`, `render` — plus each step alone.
//!
//! The definition is generated: 9 Fargate app containers (the proxy makes 10, the ECS limit)
//! with port mappings, `dependsOn`, awslogs and long environment lists, padded to just under
//! 64 KiB of pretty JSON. Goal: well under 1 ms for the whole path.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use taskmesh::{Document, InjectOptions, inject_document};

/// ECS's task-definition size limit.
const TARGET_BYTES: usize = 64 * 1024;
/// App containers; with the injected proxy the task has 10, the ECS maximum.
const CONTAINERS: usize = 9;

fn container(index: usize, env_per_container: usize) -> Value {
    let environment: Vec<Value> = (0..env_per_container)
        .map(|n| {
            json!({
                "name": format!("APP_{index}_SETTING_{n:03}"),
                "value": format!("value-{index}-{n}-{}", "x".repeat(24)),
            })
        })
        .collect();
    json!({
        "name": format!("app-{index}"),
        "image": format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/app-{index}:1.2.{index}"),
        "essential": index == 0,
        "cpu": 64,
        "memoryReservation": 128,
        "portMappings": [{"containerPort": 8080 + index, "protocol": "tcp"}],
        "dependsOn": if index == 0 { json!([]) } else {
            json!([{"containerName": "app-0", "condition": "START"}])
        },
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": "/ecs/bench", "awslogs-region": "us-east-1",
            "awslogs-stream-prefix": format!("app-{index}")}},
        "environment": environment,
    })
}

fn task_definition(env_per_container: usize) -> Value {
    let containers: Vec<Value> = (0..CONTAINERS)
        .map(|i| container(i, env_per_container))
        .collect();
    json!({
        "family": "bench-64k",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "4096",
        "memory": "8192",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "containerDefinitions": containers,
    })
}

/// The largest generated definition whose pretty JSON fits in 64 KiB.
fn input_64k() -> String {
    let mut env = 1;
    let mut best = serde_json::to_string_pretty(&task_definition(env)).expect("serialize");
    loop {
        let next = serde_json::to_string_pretty(&task_definition(env + 1)).expect("serialize");
        if next.len() > TARGET_BYTES {
            return best;
        }
        best = next;
        env += 1;
    }
}

fn options() -> InjectOptions {
    InjectOptions {
        mesh: Some("bench".to_string()),
        config: Some("file:///etc/taskmesh/mesh.json".to_string()),
        ..InjectOptions::default()
    }
}

fn bench(c: &mut Criterion) {
    let input = input_64k();
    let opts = options();
    assert!(input.len() > TARGET_BYTES - 2048 && input.len() <= TARGET_BYTES);
    let doc = Document::parse(input.as_bytes(), "bench.json").expect("parse");
    let (injected, _) = inject_document(&doc, &opts).expect("inject");
    eprintln!(
        "input: {} bytes, {CONTAINERS} containers; output: {} bytes",
        input.len(),
        injected.render().len()
    );

    let mut group = c.benchmark_group("task_definition_64k");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("parse_inject_render", |b| {
        b.iter(|| {
            let doc = Document::parse(black_box(input.as_bytes()), "bench.json").expect("parse");
            let (out, notes) = inject_document(&doc, &opts).expect("inject");
            black_box(notes);
            black_box(out.render())
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| Document::parse(black_box(input.as_bytes()), "bench.json").expect("parse"))
    });
    group.bench_function("inject", |b| {
        b.iter(|| inject_document(black_box(&doc), &opts).expect("inject"))
    });
    group.bench_function("render", |b| b.iter(|| black_box(&injected).render()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
