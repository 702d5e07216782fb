//! Agent settings: every knob of the `taskmesh-agent` runtime contract (DESIGN.md), read from
//! the environment with a `--flag` override for each, with the contract's defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Settings of `taskmesh-agent run`. Field names mirror the environment variables.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Which virtual node this task is: `mesh/<mesh>/virtualNode/<node>` or the full ARN.
    #[arg(long = "resource-arn", env = "APPMESH_RESOURCE_ARN")]
    pub resource_arn: Option<String>,

    /// Legacy form of the node identity (`mesh/<mesh>/virtualNode/<node>`).
    #[arg(long = "virtual-node-name", env = "APPMESH_VIRTUAL_NODE_NAME")]
    pub virtual_node_name: Option<String>,

    /// Where the mesh document comes from: `file:///path`, `s3://bucket/key`, `http(s)://…`, `appmesh:`.
    #[arg(long = "config", env = "TASKMESH_CONFIG")]
    pub config: Option<String>,

    /// Ingress listener port (traffic redirected to the app's ports).
    #[arg(
        long = "ingress-port",
        env = "TASKMESH_INGRESS_PORT",
        default_value_t = 15000
    )]
    pub ingress_port: u16,

    /// Egress listener port (the app's outbound traffic).
    #[arg(
        long = "egress-port",
        env = "TASKMESH_EGRESS_PORT",
        default_value_t = 15001
    )]
    pub egress_port: u16,

    /// Address the ingress and egress listeners bind to.
    #[arg(long = "listen-addr", env = "TASKMESH_LISTEN_ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub listen_addr: IpAddr,

    /// Admin port.
    #[arg(
        long = "admin-port",
        env = "ENVOY_ADMIN_ACCESS_PORT",
        default_value_t = 9901
    )]
    pub admin_port: u16,

    /// Admin bind address (ip or ip:port); default 127.0.0.1 on the admin port.
    #[arg(long = "admin-addr", env = "TASKMESH_ADMIN_ADDR")]
    pub admin_addr: Option<String>,

    /// How often the source is re-read, in seconds (a file is also re-read on change).
    #[arg(
        long = "poll-seconds",
        env = "TASKMESH_POLL_SECONDS",
        default_value_t = 10
    )]
    pub poll_seconds: u64,

    /// Graceful drain after SIGTERM, in seconds.
    #[arg(
        long = "drain-seconds",
        env = "LISTENER_DRAIN_WAIT_TIME_S",
        default_value_t = 20
    )]
    pub drain_seconds: u64,

    /// Where the last good mesh document is kept across restarts.
    #[arg(
        long = "cache",
        env = "TASKMESH_CACHE",
        default_value = "/tmp/taskmesh/last-good.json"
    )]
    pub cache: PathBuf,

    /// Proxy worker threads; default: the CPUs available to the task (cgroup-aware).
    #[arg(long = "workers", env = "TASKMESH_WORKERS")]
    pub workers: Option<usize>,

    /// Log filter (`ENVOY_LOG_LEVEL` is also accepted; `RUST_LOG` wins when set).
    #[arg(long = "log-level", env = "ENVOY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Most concurrent downstream connections per listener; over it, HTTP gets 503.
    #[arg(
        long = "max-connections",
        env = "TASKMESH_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// Most bytes of request line plus headers (431 above).
    #[arg(
        long = "max-header-bytes",
        env = "TASKMESH_MAX_HEADER_BYTES",
        default_value_t = 65_536
    )]
    pub max_header_bytes: usize,

    /// Most request header fields, 1 to 256 (431 above).
    #[arg(
        long = "max-headers",
        env = "TASKMESH_MAX_HEADERS",
        default_value_t = 100,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256)
    )]
    pub max_headers: usize,

    /// Seconds a client may take to send a request head, and may stay idle between requests.
    #[arg(
        long = "client-timeout-seconds",
        env = "TASKMESH_CLIENT_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub client_timeout_seconds: u64,

    /// Seconds an idle keep-alive connection to an upstream is kept for reuse.
    #[arg(
        long = "upstream-idle-seconds",
        env = "TASKMESH_UPSTREAM_IDLE_SECONDS",
        default_value_t = 60
    )]
    pub upstream_idle_seconds: u64,

    /// Cloud Map API endpoint override (e.g. a local moto server); the `data-` host prefix of
    /// DiscoverInstances is not added to it.
    #[arg(long = "cloudmap-endpoint", env = "TASKMESH_CLOUDMAP_ENDPOINT")]
    pub cloudmap_endpoint: Option<String>,

    /// How often Cloud Map instances are re-read, in seconds.
    #[arg(
        long = "cloudmap-refresh-seconds",
        env = "TASKMESH_CLOUDMAP_REFRESH_SECONDS",
        default_value_t = 10
    )]
    pub cloudmap_refresh_seconds: u64,
    /// Tracing (X-Ray and OTLP exporters, sampling, queue).
    #[command(flatten)]
    pub trace: crate::trace::TraceSettings,
}

impl Settings {
    /// An agent for a unit test: no mesh document to load, every listener on a free loopback
    /// port, the last-good cache under `dir`.
    #[cfg(test)]
    pub fn for_unit_test(dir: &std::path::Path) -> Settings {
        let mut s = Settings::new("mesh/m/virtualNode/n", "file:///nonexistent/mesh.yaml");
        s.listen_addr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        s.ingress_port = 0;
        s.egress_port = 0;
        s.admin_addr = Some("127.0.0.1:0".into());
        s.cache = dir.join("last-good.json");
        s
    }

    /// Defaults of the runtime contract with the given node and source; ports as given.
    pub fn new(node: impl Into<String>, config: impl Into<String>) -> Settings {
        Settings {
            resource_arn: Some(node.into()),
            virtual_node_name: None,
            config: Some(config.into()),
            ingress_port: 15000,
            egress_port: 15001,
            listen_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            admin_port: 9901,
            admin_addr: None,
            poll_seconds: 10,
            drain_seconds: 20,
            cache: PathBuf::from("/tmp/taskmesh/last-good.json"),
            workers: None,
            log_level: "info".into(),
            max_connections: 10_000,
            max_header_bytes: 65_536,
            max_headers: 100,
            client_timeout_seconds: 30,
            upstream_idle_seconds: 60,
            cloudmap_endpoint: None,
            cloudmap_refresh_seconds: 10,
            trace: crate::trace::TraceSettings::default(),
        }
    }

    /// Node identity string: `APPMESH_RESOURCE_ARN` first, then `APPMESH_VIRTUAL_NODE_NAME`.
    pub fn node_identity(&self) -> Option<&str> {
        self.resource_arn
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.virtual_node_name.as_deref().filter(|s| !s.is_empty()))
    }

    /// The admin bind address.
    pub fn admin_socket_addr(&self) -> Result<SocketAddr, String> {
        match self.admin_addr.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                self.admin_port,
            )),
            Some(s) => {
                if let Ok(sa) = s.parse::<SocketAddr>() {
                    Ok(sa)
                } else if let Ok(ip) = s.parse::<IpAddr>() {
                    Ok(SocketAddr::new(ip, self.admin_port))
                } else {
                    Err(format!(
                        "TASKMESH_ADMIN_ADDR: {s:?} is neither an IP address nor ip:port"
                    ))
                }
            }
        }
    }

    /// Poll interval; `0` polls every 200 ms (used by tests).
    pub fn poll_interval(&self) -> Duration {
        if self.poll_seconds == 0 {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(self.poll_seconds)
        }
    }

    /// The drain wait.
    pub fn drain_wait(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    /// Worker threads: the setting, else the CPUs this process may use.
    pub fn worker_threads(&self) -> usize {
        self.workers
            .filter(|w| *w > 0)
            .unwrap_or_else(available_cpus)
    }
}

/// CPUs available to this process. `std::thread::available_parallelism` already honours the
/// affinity mask and cgroup v1/v2 CPU quotas on Linux (std docs: "may take into account
/// cgroups"); the cgroup v2 `/sys/fs/cgroup/cpu.max` quota is also read here and the smaller
/// number wins, so an ECS task's CPU limit is respected even where std cannot see it.
pub fn available_cpus() -> usize {
    let std_count = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|s| cgroup_cpu_max(&s));
    match quota {
        Some(q) => q.min(std_count).max(1),
        None => std_count.max(1),
    }
}

/// Parses cgroup v2 `cpu.max` ("max 100000" or "150000 100000") into whole CPUs (rounded up).
pub fn cgroup_cpu_max(text: &str) -> Option<usize> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: u64 = it.next()?.parse().ok()?;
    if quota == "max" || period == 0 {
        return None;
    }
    let quota: u64 = quota.parse().ok()?;
    Some(quota.div_ceil(period).max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_parses_quota_and_unlimited() {
        assert_eq!(cgroup_cpu_max("max 100000\n"), None);
        assert_eq!(cgroup_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(cgroup_cpu_max("100000 100000"), Some(1));
        assert_eq!(cgroup_cpu_max("50000 100000"), Some(1));
        assert_eq!(cgroup_cpu_max("garbage"), None);
    }

    #[test]
    fn admin_addr_forms() {
        let mut s = Settings::new("mesh/m/virtualNode/n", "file:///x");
        assert_eq!(
            s.admin_socket_addr().unwrap(),
            "127.0.0.1:9901".parse().unwrap()
        );
        s.admin_addr = Some("0.0.0.0".into());
        assert_eq!(
            s.admin_socket_addr().unwrap(),
            "0.0.0.0:9901".parse().unwrap()
        );
        s.admin_addr = Some("127.0.0.1:0".into());
        assert_eq!(
            s.admin_socket_addr().unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        s.admin_addr = Some("nonsense".into());
        assert!(s.admin_socket_addr().is_err());
    }
}
