//! `appmesh:` source: the App Mesh API read through aws-sdk-appmesh. DescribeMesh, then
//! DescribeVirtualNode for this node, DescribeVirtualService for each backend, for each router
//! provider DescribeVirtualRouter + ListRoutes (paginated) + DescribeRoute, and DescribeVirtualNode
//! for every target node; the raw response bodies (the API's `*Data` shapes) are assembled into a
//! mesh document. Throttling and transient errors are retried by the SDK's standard retry mode
//! (6 attempts, exponential backoff with jitter).
//!
//! An interceptor keeps each raw response body and makes it parseable by the SDK: timestamps
//! that are not epoch numbers (moto sends `"25/11/2026, 17:15:11"`, which aws-smithy-json
//! rejects) become 0, and moto's `"egressFilter": {"type": null}` is dropped (AWS omits it).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_sdk_appmesh::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use serde_json::{Value, json};
use taskmesh_mesh::NodeRef;

use super::source::{Fetched, SourceError, content_hash};

type Slot = Arc<Mutex<Option<Value>>>;

/// The App Mesh API as a source.
pub struct AppMeshSource {
    client: aws_sdk_appmesh::Client,
    slot: Slot,
    mesh: String,
    node: String,
    last: Option<String>,
}

impl AppMeshSource {
    /// A source for `node`, configured from the standard AWS environment.
    pub async fn new(node: &NodeRef) -> AppMeshSource {
        let shared = aws_config::load_from_env().await;
        let slot: Slot = Arc::default();
        let conf = aws_sdk_appmesh::config::Builder::from(&shared)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(6))
            .interceptor(RawBody { slot: slot.clone() })
            .build();
        AppMeshSource {
            client: aws_sdk_appmesh::Client::from_conf(conf),
            slot,
            mesh: node.mesh.clone(),
            node: node.node.clone(),
            last: None,
        }
    }

    fn take(&self) -> Value {
        self.slot
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or(Value::Null)
    }

    /// Reads the node's slice of the mesh and assembles a document.
    pub async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let doc = self.read_mesh().await?;
        let bytes = serde_json::to_vec(&doc).map_err(|e| SourceError::AppMesh {
            operation: "assemble",
            resource: self.mesh.clone(),
            why: e.to_string(),
        })?;
        let version = content_hash(&bytes);
        if self.last.as_deref() == Some(version.as_str()) {
            return Ok(Fetched::NotModified);
        }
        self.last = Some(version.clone());
        Ok(Fetched::Document { bytes, version })
    }

    async fn read_mesh(&self) -> Result<Value, SourceError> {
        let mesh = &self.mesh;
        let fail = |operation: &'static str, resource: &str, e: String| SourceError::AppMesh {
            operation,
            resource: resource.to_string(),
            why: e,
        };
        macro_rules! call {
            ($op:literal, $res:expr, $fut:expr) => {{
                $fut.await.map_err(|e| {
                    fail(
                        $op,
                        $res,
                        aws_sdk_appmesh::error::DisplayErrorContext(&e).to_string(),
                    )
                })?;
                self.take()
            }};
        }
        let mesh_data = call!(
            "DescribeMesh",
            mesh,
            self.client.describe_mesh().mesh_name(mesh).send()
        );
        let me = call!(
            "DescribeVirtualNode",
            &self.node,
            self.client
                .describe_virtual_node()
                .mesh_name(mesh)
                .virtual_node_name(&self.node)
                .send()
        );
        let mut services = Vec::new();
        let mut routers = Vec::new();
        let mut routes = Vec::new();
        let mut node_names: Vec<String> = Vec::new();
        let backends: Vec<String> = me
            .pointer("/spec/backends")
            .and_then(Value::as_array)
            .map(|b| {
                b.iter()
                    .filter_map(|b| b.pointer("/virtualService/virtualServiceName"))
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for vs in &backends {
            let data = call!(
                "DescribeVirtualService",
                vs,
                self.client
                    .describe_virtual_service()
                    .mesh_name(mesh)
                    .virtual_service_name(vs)
                    .send()
            );
            if let Some(n) = data
                .pointer("/spec/provider/virtualNode/virtualNodeName")
                .and_then(Value::as_str)
            {
                push_unique(&mut node_names, n);
            }
            if let Some(r) = data
                .pointer("/spec/provider/virtualRouter/virtualRouterName")
                .and_then(Value::as_str)
                .map(str::to_string)
                && !routers
                    .iter()
                    .any(|x: &Value| x.get("virtualRouterName").and_then(Value::as_str) == Some(&r))
            {
                let router = call!(
                    "DescribeVirtualRouter",
                    &r,
                    self.client
                        .describe_virtual_router()
                        .mesh_name(mesh)
                        .virtual_router_name(&r)
                        .send()
                );
                routers.push(router);
                let mut token: Option<String> = None;
                loop {
                    let page = call!(
                        "ListRoutes",
                        &r,
                        self.client
                            .list_routes()
                            .mesh_name(mesh)
                            .virtual_router_name(&r)
                            .set_next_token(token.clone())
                            .send()
                    );
                    let names: Vec<String> = page
                        .get("routes")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.get("routeName").and_then(Value::as_str))
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    for rn in names {
                        let route = call!(
                            "DescribeRoute",
                            &rn,
                            self.client
                                .describe_route()
                                .mesh_name(mesh)
                                .virtual_router_name(&r)
                                .route_name(&rn)
                                .send()
                        );
                        for t in route_targets(&route) {
                            push_unique(&mut node_names, &t);
                        }
                        routes.push(route);
                    }
                    token = page
                        .get("nextToken")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string);
                    if token.is_none() {
                        break;
                    }
                }
            }
            services.push(data);
        }
        let mut nodes = vec![me];
        for n in node_names.iter().filter(|n| **n != self.node) {
            let data = call!(
                "DescribeVirtualNode",
                n,
                self.client
                    .describe_virtual_node()
                    .mesh_name(mesh)
                    .virtual_node_name(n)
                    .send()
            );
            nodes.push(data);
        }
        Ok(json!({
            "meshName": mesh,
            "spec": mesh_data.get("spec").cloned().unwrap_or_else(|| json!({})),
            "virtualServices": services,
            "virtualRouters": routers,
            "routes": routes,
            "virtualNodes": nodes,
        }))
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// Virtual node names in a route's weighted targets (any route kind).
fn route_targets(route: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(spec) = route.get("spec").and_then(Value::as_object) {
        for kind in ["httpRoute", "http2Route", "grpcRoute", "tcpRoute"] {
            if let Some(ts) = spec
                .get(kind)
                .and_then(|r| r.pointer("/action/weightedTargets"))
                .and_then(Value::as_array)
            {
                for t in ts {
                    if let Some(n) = t.get("virtualNode").and_then(Value::as_str) {
                        out.push(n.to_string());
                    }
                }
            }
        }
    }
    out
}

/// Makes timestamps numeric and drops null egress filters; returns the cleaned JSON.
pub fn sanitize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in ["createdAt", "lastUpdatedAt"] {
                if let Some(t) = map.get_mut(key)
                    && !t.is_number()
                {
                    *t = json!(0);
                }
            }
            if map
                .get("egressFilter")
                .is_some_and(|f| f.get("type").is_none_or(Value::is_null))
            {
                map.remove("egressFilter");
            }
            for (_, child) in map.iter_mut() {
                sanitize(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(sanitize),
        _ => {}
    }
}

fn clean_bytes(raw: &[u8], slot: &Slot) -> Bytes {
    match serde_json::from_slice::<Value>(raw) {
        Ok(mut v) => {
            sanitize(&mut v);
            let out = serde_json::to_vec(&v).unwrap_or_else(|_| raw.to_vec());
            if let Ok(mut s) = slot.lock() {
                *s = Some(v);
            }
            Bytes::from(out)
        }
        Err(_) => Bytes::copy_from_slice(raw),
    }
}

/// The interceptor (see the module docs).
#[derive(Debug)]
struct RawBody {
    slot: Slot,
}

impl Intercept for RawBody {
    fn name(&self) -> &'static str {
        "taskmesh-raw-body"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_appmesh::error::BoxError> {
        let resp = context.response_mut();
        if !(200..300).contains(&resp.status().as_u16()) {
            return Ok(());
        }
        let body = std::mem::replace(resp.body_mut(), SdkBody::taken());
        let new = match body.bytes() {
            Some(b) => SdkBody::from(clean_bytes(b, &self.slot)),
            None => SdkBody::from_body_1_x(Cleaning {
                inner: body,
                buf: Vec::new(),
                done: false,
                slot: self.slot.clone(),
            }),
        };
        *resp.body_mut() = new;
        Ok(())
    }
}

/// A body that buffers its inner body and yields it cleaned.
struct Cleaning {
    inner: SdkBody,
    buf: Vec<u8>,
    done: bool,
    slot: Slot,
}

impl http_body::Body for Cleaning {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            let this = &mut *self;
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.buf.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let out = clean_bytes(&this.buf, &this.slot);
                    return Poll::Ready(Some(Ok(http_body::Frame::data(out))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moto_timestamps_and_null_egress_filter_are_cleaned() {
        let mut v = json!({"meshName": "m", "metadata": {"createdAt": "25/11/2026, 17:15:11",
            "lastUpdatedAt": 1.7e9}, "spec": {"egressFilter": {"type": null}}});
        sanitize(&mut v);
        assert_eq!(v["metadata"]["createdAt"], json!(0));
        assert_eq!(v["metadata"]["lastUpdatedAt"], json!(1.7e9));
        assert!(v["spec"].get("egressFilter").is_none());
        let mut keep = json!({"spec": {"egressFilter": {"type": "ALLOW_ALL"}}});
        sanitize(&mut keep);
        assert_eq!(keep["spec"]["egressFilter"]["type"], "ALLOW_ALL");
    }

    #[test]
    fn targets_of_every_route_kind() {
        let r = json!({"spec": {"tcpRoute": {"action": {"weightedTargets": [
            {"virtualNode": "a", "weight": 1}]}}}});
        assert_eq!(route_targets(&r), vec!["a".to_string()]);
    }
}
