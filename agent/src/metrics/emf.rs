//! CloudWatch Embedded Metric Format: App Mesh's metrics-extension set
//! (`APPMESH_METRIC_EXTENSION_VERSION=1`, agent-anchors §2.8) computed from the agent's own
//! counters and written as EMF JSON lines on stdout, so the awslogs driver turns them into
//! CloudWatch metrics with no CloudWatch agent.
//!
//! Every interval (60 s; `TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS` overrides, fractions allowed)
//! the [`EmfReporter`] takes the difference of each counter since the previous report and writes:
//!
//! - one inbound line, dimensions `[Mesh, VirtualNode]`: `ActiveConnectionCount` (gauge),
//!   `NewConnectionCount`, `RequestCount`, `GrpcRequestCount` (requests with
//!   `content-type: application/grpc…`), `ProcessedBytes` (request and response body bytes
//!   between the clients and the app, counted as they stream);
//! - one outbound line per (target virtual service, target virtual node) that saw requests,
//!   dimensions `[Mesh, VirtualNode, TargetVirtualService, TargetVirtualNode]`:
//!   `RequestCountPerTarget`, `HTTPCode_Target_2XX_Count` … `_5XX_Count`,
//!   `TargetResponseTime` (mean of the interval, milliseconds), `TargetConnectionErrorCount`,
//!   `TargetProcessedBytes` (request and response body bytes exchanged with the target).
//!
//! Bytes are HTTP body bytes (headers are not counted); opaque TCP routes count no bytes.
//!
//! The format (docs.aws.amazon.com, "Embedded metric format specification"): a JSON object
//! with `_aws.Timestamp` (ms since the epoch) and `_aws.CloudWatchMetrics`, an array of
//! directives `{Namespace, Dimensions: [[names…]], Metrics: [{Name, Unit}]}` (at most 100
//! metrics per directive, at most 30 dimensions per set); every dimension and metric named
//! there is a top-level member of the object.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::{Direction, Metrics};

/// Default CloudWatch namespace of the emitted metrics.
pub const DEFAULT_NAMESPACE: &str = "taskmesh";
/// Default reporting interval (App Mesh's CloudWatch agent examples flush every 60 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// EMF settings, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct EmfConfig {
    /// CloudWatch namespace (`TASKMESH_CLOUDWATCH_NAMESPACE`, default `taskmesh`).
    pub namespace: String,
    /// How often lines are written.
    pub interval: Duration,
}

/// A bad EMF setting.
#[derive(Debug, thiserror::Error)]
pub enum EmfConfigError {
    /// The interval is not a positive number of seconds.
    #[error(
        "TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS={0:?}: expected a positive number of seconds"
    )]
    Interval(String),
    /// The switch has a value other than 1/0/true/false.
    #[error("TASKMESH_CLOUDWATCH_EMF={0:?}: expected 1 or 0")]
    Switch(String),
}

impl EmfConfig {
    /// `Some` when `TASKMESH_CLOUDWATCH_EMF=1` (or `true`), reading the other settings from
    /// `get` (the process environment in the agent, a map in tests).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<EmfConfig>, EmfConfigError> {
        match get("TASKMESH_CLOUDWATCH_EMF").as_deref().map(str::trim) {
            None | Some("") | Some("0") | Some("false") => return Ok(None),
            Some("1") | Some("true") => {}
            Some(other) => return Err(EmfConfigError::Switch(other.to_string())),
        }
        let interval = match get("TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS") {
            None => DEFAULT_INTERVAL,
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Duration::from_secs_f64(s),
                _ => return Err(EmfConfigError::Interval(raw)),
            },
        };
        let namespace = get("TASKMESH_CLOUDWATCH_NAMESPACE")
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        Ok(Some(EmfConfig {
            namespace,
            interval,
        }))
    }

    /// [`EmfConfig::from_lookup`] over the process environment.
    pub fn from_env() -> Result<Option<EmfConfig>, EmfConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// Counter values of one outbound (service, node) pair at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Outbound {
    requests: u64,
    responses: [u64; 5],
    latency_count: u64,
    latency_sum_us: u64,
    connect_failures: u64,
    bytes: u64,
}

/// Counter values at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
struct Snapshot {
    inbound_connections: u64,
    inbound_requests: u64,
    inbound_grpc: u64,
    inbound_bytes: u64,
    outbound: BTreeMap<(String, String), Outbound>,
}

fn snapshot(m: &Metrics) -> Snapshot {
    let mut s = Snapshot {
        inbound_connections: m.connections_total[Direction::Ingress.idx()].load(Ordering::Relaxed),
        ..Snapshot::default()
    };
    let routes: Vec<Arc<super::RouteStats>> = match m.routes.lock() {
        Ok(map) => map.values().cloned().collect(),
        Err(_) => Vec::new(),
    };
    for r in routes {
        match r.direction {
            Direction::Ingress => {
                s.inbound_requests += r.requests.load(Ordering::Relaxed);
                s.inbound_grpc += r.grpc_requests.load(Ordering::Relaxed);
                s.inbound_bytes += r.request_bytes.load(Ordering::Relaxed)
                    + r.response_bytes.load(Ordering::Relaxed);
            }
            Direction::Egress => {
                // Pass-through (ALLOW_ALL) and refused traffic has no target in the mesh.
                if r.virtual_service.is_empty() || r.target_node.is_empty() {
                    continue;
                }
                let o = s
                    .outbound
                    .entry((r.virtual_service.to_string(), r.target_node.to_string()))
                    .or_default();
                o.requests += r.requests.load(Ordering::Relaxed);
                for (i, c) in r.responses.iter().enumerate() {
                    o.responses[i] += c.load(Ordering::Relaxed);
                }
                o.latency_count += r.latency_count.load(Ordering::Relaxed);
                o.latency_sum_us += r.latency_sum_us.load(Ordering::Relaxed);
                o.connect_failures += r.connect_failures.load(Ordering::Relaxed);
                o.bytes += r.request_bytes.load(Ordering::Relaxed)
                    + r.response_bytes.load(Ordering::Relaxed);
            }
        }
    }
    s
}

/// Turns the agent's counters into EMF lines, one report per call.
#[derive(Debug)]
pub struct EmfReporter {
    metrics: Arc<Metrics>,
    namespace: String,
    mesh: String,
    virtual_node: String,
    previous: Snapshot,
}

impl EmfReporter {
    /// A reporter for this agent's node; the first report counts from now.
    pub fn new(
        metrics: Arc<Metrics>,
        namespace: &str,
        mesh: &str,
        virtual_node: &str,
    ) -> EmfReporter {
        let previous = snapshot(&metrics);
        EmfReporter {
            metrics,
            namespace: namespace.to_string(),
            mesh: mesh.to_string(),
            virtual_node: virtual_node.to_string(),
            previous,
        }
    }

    /// The lines for everything counted since the previous report, stamped `timestamp_ms`.
    pub fn report(&mut self, timestamp_ms: u64) -> Vec<Value> {
        let now = snapshot(&self.metrics);
        let mut lines = Vec::new();
        let active = self.metrics.active_connections(Direction::Ingress).max(0);
        lines.push(self.line(
            timestamp_ms,
            &[],
            &[
                ("ActiveConnectionCount", "Count", json!(active)),
                (
                    "NewConnectionCount",
                    "Count",
                    json!(
                        now.inbound_connections
                            .saturating_sub(self.previous.inbound_connections)
                    ),
                ),
                (
                    "RequestCount",
                    "Count",
                    json!(
                        now.inbound_requests
                            .saturating_sub(self.previous.inbound_requests)
                    ),
                ),
                (
                    "GrpcRequestCount",
                    "Count",
                    json!(now.inbound_grpc.saturating_sub(self.previous.inbound_grpc)),
                ),
                (
                    "ProcessedBytes",
                    "Bytes",
                    json!(now.inbound_bytes.saturating_sub(self.previous.inbound_bytes)),
                ),
            ],
        ));
        for ((service, node), o) in &now.outbound {
            let before = self
                .previous
                .outbound
                .get(&(service.clone(), node.clone()))
                .copied()
                .unwrap_or_default();
            let requests = o.requests.saturating_sub(before.requests);
            let failures = o.connect_failures.saturating_sub(before.connect_failures);
            if requests == 0 && failures == 0 {
                continue;
            }
            let code =
                |class: usize| json!(o.responses[class].saturating_sub(before.responses[class]));
            let mut metrics = vec![
                ("RequestCountPerTarget", "Count", json!(requests)),
                ("HTTPCode_Target_2XX_Count", "Count", code(1)),
                ("HTTPCode_Target_3XX_Count", "Count", code(2)),
                ("HTTPCode_Target_4XX_Count", "Count", code(3)),
                ("HTTPCode_Target_5XX_Count", "Count", code(4)),
                ("TargetConnectionErrorCount", "Count", json!(failures)),
                (
                    "TargetProcessedBytes",
                    "Bytes",
                    json!(o.bytes.saturating_sub(before.bytes)),
                ),
            ];
            let count = o.latency_count.saturating_sub(before.latency_count);
            if count > 0 {
                let sum_us = o.latency_sum_us.saturating_sub(before.latency_sum_us);
                let mean_ms = sum_us as f64 / count as f64 / 1000.0;
                metrics.push(("TargetResponseTime", "Milliseconds", json!(mean_ms)));
            }
            lines.push(self.line(
                timestamp_ms,
                &[
                    ("TargetVirtualService", service.as_str()),
                    ("TargetVirtualNode", node.as_str()),
                ],
                &metrics,
            ));
        }
        self.previous = now;
        lines
    }

    fn line(
        &self,
        timestamp_ms: u64,
        extra_dims: &[(&str, &str)],
        metrics: &[(&str, &str, Value)],
    ) -> Value {
        let mut obj = Map::new();
        let mut dims = vec!["Mesh", "VirtualNode"];
        obj.insert("Mesh".into(), Value::String(self.mesh.clone()));
        obj.insert(
            "VirtualNode".into(),
            Value::String(self.virtual_node.clone()),
        );
        for (k, v) in extra_dims {
            dims.push(k);
            obj.insert((*k).into(), Value::String((*v).to_string()));
        }
        let defs: Vec<Value> = metrics
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
            .collect();
        for (name, _, value) in metrics {
            obj.insert((*name).into(), value.clone());
        }
        obj.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [dims],
                    "Metrics": defs,
                }],
            }),
        );
        Value::Object(obj)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes a report every `config.interval` to `out` (stdout in the agent), one JSON object a
/// line, each line in a single write. Runs until the task is aborted.
pub async fn run(mut reporter: EmfReporter, interval: Duration, mut out: impl Write + Send) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut buf = Vec::with_capacity(1024);
        for line in reporter.report(now_ms()) {
            if serde_json::to_writer(&mut buf, &line).is_ok() {
                buf.push(b'\n');
            }
        }
        if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "cannot write CloudWatch EMF metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn config_follows_the_switch_and_checks_values() {
        assert_eq!(EmfConfig::from_lookup(lookup(&[])).unwrap(), None);
        assert_eq!(
            EmfConfig::from_lookup(lookup(&[("TASKMESH_CLOUDWATCH_EMF", "0")])).unwrap(),
            None
        );
        let c = EmfConfig::from_lookup(lookup(&[("TASKMESH_CLOUDWATCH_EMF", "1")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.namespace, "taskmesh");
        let c = EmfConfig::from_lookup(lookup(&[
            ("TASKMESH_CLOUDWATCH_EMF", "1"),
            ("TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS", "0.25"),
            ("TASKMESH_CLOUDWATCH_NAMESPACE", "AppMesh"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.namespace, "AppMesh");
        for bad in ["0", "-1", "x", "NaN", "inf"] {
            let e = EmfConfig::from_lookup(lookup(&[
                ("TASKMESH_CLOUDWATCH_EMF", "1"),
                ("TASKMESH_CLOUDWATCH_EMF_INTERVAL_SECONDS", bad),
            ]));
            assert!(matches!(e, Err(EmfConfigError::Interval(_))), "{bad}");
        }
        assert!(matches!(
            EmfConfig::from_lookup(lookup(&[("TASKMESH_CLOUDWATCH_EMF", "yes please")])),
            Err(EmfConfigError::Switch(_))
        ));
    }

    #[test]
    fn reports_count_only_what_happened_since_the_last_one() {
        let m = Arc::new(Metrics::default());
        let before = m.route_stats(Direction::Egress, "svc.local", "r", "blue");
        before.request();
        before.response(200, Duration::from_millis(1));
        let mut r = EmfReporter::new(m.clone(), "ns", "mesh", "front");
        let s = m.route_stats(Direction::Egress, "svc.local", "r", "blue");
        let s2 = m.route_stats(Direction::Egress, "svc.local", "r2", "blue");
        for (stats, status, ms) in [(&s, 200, 2), (&s, 503, 4), (&s2, 404, 6)] {
            stats.request();
            stats.response(status, Duration::from_millis(ms));
            stats.bytes(crate::proxy::body::Flow::Response, 100);
        }
        s.bytes(crate::proxy::body::Flow::Request, 7);
        let inbound = m.route_stats(Direction::Ingress, "", "", "front");
        inbound.request();
        inbound.grpc_request();
        inbound.bytes(crate::proxy::body::Flow::Request, 5);
        inbound.bytes(crate::proxy::body::Flow::Response, 11);
        let _c = m.connection_opened(Direction::Ingress);
        let lines = r.report(1_700_000_000_000);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["RequestCount"], 1);
        assert_eq!(lines[0]["ActiveConnectionCount"], 1);
        assert_eq!(lines[0]["NewConnectionCount"], 1);
        assert_eq!(lines[0]["GrpcRequestCount"], 1);
        assert_eq!(lines[0]["ProcessedBytes"], 16);
        let o = &lines[1];
        assert_eq!(o["TargetProcessedBytes"], 307);
        assert_eq!(o["TargetVirtualService"], "svc.local");
        assert_eq!(o["TargetVirtualNode"], "blue");
        assert_eq!(
            o["RequestCountPerTarget"], 3,
            "two routes, one target: summed"
        );
        assert_eq!(o["HTTPCode_Target_2XX_Count"], 1);
        assert_eq!(o["HTTPCode_Target_4XX_Count"], 1);
        assert_eq!(o["HTTPCode_Target_5XX_Count"], 1);
        assert_eq!(o["TargetResponseTime"], 4.0);
        assert_eq!(o["_aws"]["Timestamp"], 1_700_000_000_000u64);
        // Nothing new: the inbound line only, with zero counts.
        let lines = r.report(1_700_000_060_000);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["RequestCount"], 0);
        assert_eq!(lines[0]["NewConnectionCount"], 0);
    }
}
