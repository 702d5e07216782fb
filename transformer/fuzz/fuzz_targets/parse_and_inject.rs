//! Fuzz target: arbitrary bytes through format detection and parsing (`Document::parse`),
//! then everything the CLI does with a parsed document — render, inject (agent + ECS redirect,
//! and Envoy + proxy-init), inject again, check, eject. Errors are fine; a panic (or a crash,
//! hang or runaway allocation) is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskmesh::{
    Document, InjectOptions, ProxyKind, Redirect, Syntax, check_document, eject_document,
    inject_document,
};

fn options(proxy: ProxyKind, redirect: Redirect) -> InjectOptions {
    InjectOptions {
        mesh: Some("fuzz".to_string()),
        config: Some("file:///etc/taskmesh/mesh.json".to_string()),
        proxy,
        redirect,
        ..InjectOptions::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = Document::parse(data, "fuzz-input") else {
        return;
    };
    let _ = doc.render();
    let _ = doc.render_as(Syntax::Json);
    let _ = doc.render_as(Syntax::Yaml);
    for opts in [
        options(ProxyKind::Agent, Redirect::Ecs),
        options(ProxyKind::Envoy, Redirect::ProxyInit),
    ] {
        let _ = check_document(&doc, &opts);
        let _ = eject_document(&doc, &opts);
        if let Ok((injected, _notes)) = inject_document(&doc, &opts) {
            let rendered = injected.render();
            let _ = inject_document(&injected, &opts);
            let _ = eject_document(&injected, &opts);
            if let Ok(reparsed) = Document::parse(rendered.as_bytes(), "fuzz-output") {
                let _ = inject_document(&reparsed, &opts);
            }
        }
    }
});
