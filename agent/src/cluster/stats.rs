//! What the endpoint sets show operators: per-cluster counters (retries, retry-budget overflow,
//! outlier ejections, connect-failure cool-downs, the `grpc-status` in each upstream attempt's
//! response headers), the per-host view of `/clusters` (Envoy's
//! `health_flags::/failed_outlier_check`, plus `/connect_cooldown` for an endpoint cooling down
//! after a connect failure; `rq_active`, `rq_total`, `rq_error`) as JSON or as Envoy's text
//! lines, and the Prometheus series appended to `/stats/prometheus`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::{Cluster, Clusters};

/// gRPC status codes 0..=16 have their own counter; anything else is `other`.
const GRPC_CODES: usize = 17;

/// A Prometheus series of a cluster: name, type, value.
type Series = (&'static str, &'static str, fn(&Cluster) -> u64);

/// Counters of one endpoint set (lock-free; the request path only adds).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Retries made.
    pub retries: AtomicU64,
    /// Retries not made because the retry budget was spent.
    pub retry_overflow: AtomicU64,
    /// Ejections made.
    pub ejections_total: AtomicU64,
    /// Ejections refused by `maxEjectionPercent` (or to keep one endpoint).
    pub ejections_refused: AtomicU64,
    /// Connect-failure cool-downs started ([`super::accrual`]).
    pub cooldowns_total: AtomicU64,
    grpc: [AtomicU64; GRPC_CODES],
    grpc_other: AtomicU64,
}

impl ClusterStats {
    /// A response carried `grpc-status: code`.
    pub fn grpc_status(&self, code: u32) {
        match self.grpc.get(code as usize) {
            Some(c) => c.fetch_add(1, Ordering::Relaxed),
            None => self.grpc_other.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Responses seen with `grpc-status: code` (codes above 16 are counted together under 17).
    pub fn grpc_count(&self, code: u32) -> u64 {
        match self.grpc.get(code as usize) {
            Some(c) => c.load(Ordering::Relaxed),
            None => self.grpc_other.load(Ordering::Relaxed),
        }
    }
}

impl Clusters {
    /// The set of `node` on `port` if one was made.
    pub fn find(&self, node: &str, port: u16) -> Option<std::sync::Arc<Cluster>> {
        self.by_node
            .read()
            .ok()?
            .get(node)?
            .iter()
            .find(|c| c.port == port)
            .cloned()
    }

    /// Appends the endpoint-set series to a Prometheus text exposition.
    pub fn render_prometheus(&self, out: &mut String) {
        let all = self.all();
        let series: [Series; 8] = [
            ("taskmesh_outlier_ejections_active", "gauge", |c| {
                c.ejected_now() as u64
            }),
            ("taskmesh_outlier_ejections_total", "counter", |c| {
                c.stats.ejections_total.load(Ordering::Relaxed)
            }),
            ("taskmesh_outlier_ejections_refused_total", "counter", |c| {
                c.stats.ejections_refused.load(Ordering::Relaxed)
            }),
            ("taskmesh_endpoint_cooldowns_active", "gauge", |c| {
                c.cooling_now() as u64
            }),
            ("taskmesh_endpoint_cooldowns_total", "counter", |c| {
                c.stats.cooldowns_total.load(Ordering::Relaxed)
            }),
            ("taskmesh_upstream_retries_total", "counter", |c| {
                c.stats.retries.load(Ordering::Relaxed)
            }),
            ("taskmesh_upstream_retry_overflow_total", "counter", |c| {
                c.stats.retry_overflow.load(Ordering::Relaxed)
            }),
            ("taskmesh_upstream_endpoints", "gauge", |c| {
                c.hosts.load().hosts.len() as u64
            }),
        ];
        for (name, kind, value) in series {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for c in &all {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(c), value(c));
            }
        }
        let _ = writeln!(out, "# TYPE taskmesh_upstream_grpc_status_total counter");
        for c in &all {
            for code in 0..=GRPC_CODES as u32 {
                let n = c.stats.grpc_count(code);
                if n > 0 {
                    let code_label = if (code as usize) < GRPC_CODES {
                        code.to_string()
                    } else {
                        "other".to_string()
                    };
                    let _ = writeln!(
                        out,
                        "taskmesh_upstream_grpc_status_total{{{},grpc_status=\"{code_label}\"}} {n}",
                        labels(c)
                    );
                }
            }
        }
    }

    /// The `/clusters` view of the sets of `node` (JSON): counters and one entry per host.
    pub fn admin_json(&self, node: &str) -> serde_json::Value {
        let sets: Vec<_> = self
            .all()
            .into_iter()
            .filter(|c| &*c.node == node)
            .collect();
        let hosts: Vec<serde_json::Value> = sets
            .iter()
            .flat_map(|c| {
                let now = c.now();
                c.hosts
                    .load()
                    .hosts
                    .iter()
                    .map(|h| {
                        let until = h.ejected_until.load(Ordering::Relaxed);
                        let cool_until = h.cooldown_until.load(Ordering::Relaxed);
                        json!({
                            "address": h.addr.to_string(),
                            "health_flags": health_flags(h.is_ejected(now), h.is_cooling(now)),
                            "rq_active": h.rq_active.load(Ordering::Relaxed),
                            "rq_total": h.rq_total.load(Ordering::Relaxed),
                            "rq_error": h.rq_error.load(Ordering::Relaxed),
                            "times_ejected": h.times_ejected.load(Ordering::Relaxed),
                            "ejection_remaining_ms": until.saturating_sub(now) / 1_000_000,
                            "consecutive_connect_failures": h.connect_failures(),
                            "cooldown_remaining_ms": cool_until.saturating_sub(now) / 1_000_000,
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let sum = |f: fn(&Cluster) -> u64| sets.iter().map(|c| f(c)).sum::<u64>();
        json!({
            "hosts": hosts,
            "outlier_ejections_active": sum(|c| c.ejected_now() as u64),
            "outlier_ejections_total": sum(|c| c.stats.ejections_total.load(Ordering::Relaxed)),
            "cooldowns_active": sum(|c| c.cooling_now() as u64),
            "cooldowns_total": sum(|c| c.stats.cooldowns_total.load(Ordering::Relaxed)),
            "retries": sum(|c| c.stats.retries.load(Ordering::Relaxed)),
            "retry_overflow": sum(|c| c.stats.retry_overflow.load(Ordering::Relaxed)),
        })
    }

    /// Envoy's text form of `/clusters`: `<cluster>::<host>::<stat>::<value>` lines, the
    /// cluster named by `name(node, port)`.
    pub fn admin_text(&self, name: impl Fn(&str, u16) -> String) -> String {
        let mut out = String::new();
        for c in self.all() {
            let cname = name(&c.node, c.port);
            let _ = writeln!(
                out,
                "{cname}::outlier::ejections_active::{}",
                c.ejected_now()
            );
            let now = c.now();
            for h in c.hosts.load().hosts.iter() {
                let a = h.addr;
                let _ = writeln!(
                    out,
                    "{cname}::{a}::rq_active::{}",
                    h.rq_active.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{cname}::{a}::rq_error::{}",
                    h.rq_error.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{cname}::{a}::rq_total::{}",
                    h.rq_total.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    out,
                    "{cname}::{a}::health_flags::{}",
                    health_flags(h.is_ejected(now), h.is_cooling(now))
                );
            }
        }
        out
    }
}

/// Envoy's spelling of a host's health (flags joined as Envoy joins them), with
/// `/connect_cooldown` for a connect-failure cool-down.
fn health_flags(ejected: bool, cooling: bool) -> &'static str {
    match (ejected, cooling) {
        (false, false) => "healthy",
        (true, false) => "/failed_outlier_check",
        (false, true) => "/connect_cooldown",
        (true, true) => "/failed_outlier_check/connect_cooldown",
    }
}

fn labels(c: &Cluster) -> String {
    format!(
        "target_node=\"{}\",port=\"{}\"",
        c.node
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
        c.port
    )
}
