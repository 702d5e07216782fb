//! taskmesh-agent: the sidecar that replaces Envoy in each task.
