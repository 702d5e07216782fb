//! Fuzzes `MeshDocument::from_slice` (JSON and YAML, every accepted shape), then compiles the
//! table of every node of an accepted document and routes a request built from the input.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run document` in `mesh/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use taskmesh_mesh::{HttpRequestView, MeshDocument, NodeRef, RouteTable};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = MeshDocument::from_slice(data) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    let headers = http::HeaderMap::new();
    for node in doc.virtual_nodes() {
        let node = NodeRef {
            mesh: doc.mesh_name().to_owned(),
            node: node.virtual_node_name.clone(),
        };
        let Ok(table) = RouteTable::compile(&doc, &node) else {
            continue;
        };
        for authority in doc
            .virtual_services()
            .iter()
            .map(|s| s.virtual_service_name.as_str())
        {
            let req = HttpRequestView {
                authority,
                dest_port: None,
                method: &http::Method::GET,
                scheme: "http",
                path_and_query: &text,
                headers: &headers,
            };
            if let taskmesh_mesh::HttpRouting::Matched(m) = table.route_http(&req) {
                let _ = m.pick(data.len() as u32);
            }
        }
        let _ = table.route_tcp(80);
    }
    let again = MeshDocument::from_value(doc.to_json_value()).expect("canonical output re-parses");
    assert_eq!(again, doc);
});
