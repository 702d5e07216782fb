//! The running agent: shared state (settings, node identity, lifecycle, the swappable config,
//! metrics, resolver, upstream pool, access log), and [`Agent::start`], which binds the
//! listeners and admin, loads the cached document, and starts the reload loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use taskmesh_mesh::NodeRef;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::config::settings::Settings;
use crate::config::source::{Source, SourceError};
use crate::config::{ActiveConfig, reload};
use crate::discovery::Resolver;
use crate::metrics::{Direction, Metrics};
use crate::proxy::pool::UpstreamPool;
use crate::state::{Lifecycle, State};

/// Everything the tasks of one agent share.
pub struct Shared {
    /// Settings in force.
    pub settings: Settings,
    /// This task's virtual node.
    pub node: NodeRef,
    /// `TASKMESH_CONFIG` as given.
    pub config_uri: String,
    /// INITIALIZING / LIVE / DRAINING.
    pub lifecycle: Lifecycle,
    /// The current good config (`None` before the first).
    pub config: ArcSwapOption<ActiveConfig>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// DNS cache.
    pub resolver: Resolver,
    /// Endpoint sets of the target nodes (balancing, outlier detection, retry budgets).
    pub clusters: crate::cluster::Clusters,
    /// Upstream keep-alive pool.
    pub pool: UpstreamPool,
    /// Access log writer.
    pub access_log: AccessLog,
    /// Trace propagation and span export (disabled without an exporter).
    pub tracer: crate::trace::Tracer,
    /// Start time.
    pub started: Instant,
    /// The last reload problem (kept after recovery for operators; cleared on success).
    pub last_error: std::sync::Mutex<Option<String>>,
}

/// Why the agent could not start.
#[derive(thiserror::Error, Debug)]
pub enum StartError {
    /// No node identity.
    #[error("APPMESH_RESOURCE_ARN (or APPMESH_VIRTUAL_NODE_NAME) is required")]
    NoNode,
    /// No config source.
    #[error("TASKMESH_CONFIG is required (file:///path, s3://bucket/key, http(s)://…, appmesh:)")]
    NoConfig,
    /// Bad node identity.
    #[error("APPMESH_RESOURCE_ARN {value:?}: {why}")]
    BadNode {
        /// The value.
        value: String,
        /// Why.
        why: String,
    },
    /// Bad source.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Bad admin address.
    #[error("{0}")]
    Admin(String),
    /// Bad CloudWatch EMF setting.
    #[error(transparent)]
    Emf(#[from] crate::metrics::emf::EmfConfigError),
    /// Bad tracing setting.
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceConfigError),
    /// Bind failure.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Entry point of the library.
pub struct Agent;

/// A started agent.
pub struct AgentHandle {
    /// Bound ingress address.
    pub ingress_addr: SocketAddr,
    /// Bound egress address.
    pub egress_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Binds listeners (port 0 = ephemeral), loads the cached document, starts the reload loop.
    pub async fn start(settings: Settings) -> Result<AgentHandle, StartError> {
        Agent::start_with_resolver(settings, Resolver::default()).await
    }

    /// [`Agent::start`] with DNS endpoints found by `resolver` (e.g. one reading a test's hosts
    /// file or asking a test's DNS server) instead of the system's; Cloud Map settings still
    /// come from `settings`.
    pub async fn start_with_resolver(
        settings: Settings,
        resolver: Resolver,
    ) -> Result<AgentHandle, StartError> {
        let node_id = settings
            .node_identity()
            .ok_or(StartError::NoNode)?
            .to_string();
        let node = NodeRef::parse(&node_id).map_err(|e| StartError::BadNode {
            value: node_id.clone(),
            why: e.to_string(),
        })?;
        let config_uri = settings
            .config
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(StartError::NoConfig)?;
        let admin_addr = settings.admin_socket_addr().map_err(StartError::Admin)?;
        let emf = crate::metrics::emf::EmfConfig::from_env()?;
        let trace = settings.trace.resolve()?;
        let source = Source::from_uri(&config_uri, &node).await?;

        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { what, addr, source })
        };
        let ingress = bind(
            "ingress",
            SocketAddr::new(settings.listen_addr, settings.ingress_port),
        )
        .await?;
        let egress = bind(
            "egress",
            SocketAddr::new(settings.listen_addr, settings.egress_port),
        )
        .await?;
        let admin = bind("admin", admin_addr).await?;
        let addr = |l: &TcpListener, what| {
            l.local_addr().map_err(|source| StartError::Bind {
                what,
                addr: admin_addr,
                source,
            })
        };
        let (ingress_addr, egress_addr, admin_addr) = (
            addr(&ingress, "ingress")?,
            addr(&egress, "egress")?,
            addr(&admin, "admin")?,
        );

        let resolver = resolver.with_cloud_map(crate::discovery::cloudmap::CloudMapSettings {
            endpoint: settings.cloudmap_endpoint.clone().filter(|e| !e.is_empty()),
            refresh: Some(Duration::from_secs(
                settings.cloudmap_refresh_seconds.max(1),
            )),
        });
        let metrics = Arc::new(Metrics::default());
        let mut tasks = Vec::new();
        let tracer = match &trace {
            Some(t) => {
                let (tracer, task) = crate::trace::Tracer::start(
                    t,
                    crate::trace::Identity {
                        mesh: node.mesh.clone(),
                        virtual_node: node.node.clone(),
                    },
                    metrics.clone(),
                );
                tasks.push(task);
                tracer
            }
            None => crate::trace::Tracer::disabled(),
        };
        let shared = Arc::new(Shared {
            pool: UpstreamPool::new(Duration::from_secs(settings.upstream_idle_seconds.max(1))),
            settings,
            node,
            config_uri,
            lifecycle: Lifecycle::new(),
            config: ArcSwapOption::empty(),
            metrics,
            resolver,
            clusters: crate::cluster::Clusters::default(),
            access_log: AccessLog::default(),
            tracer,
            started: Instant::now(),
            last_error: std::sync::Mutex::new(None),
        });
        reload::load_cache(&shared);
        tracing::info!(
            %ingress_addr, %egress_addr, %admin_addr,
            node = %shared.node.node, mesh = %shared.node.mesh,
            config = %shared.config_uri, state = shared.lifecycle.state().as_str(),
            "taskmesh-agent started"
        );
        tasks.extend([
            tokio::spawn(reload::run(shared.clone(), source)),
            tokio::spawn(crate::admin::serve(admin, shared.clone())),
            tokio::spawn(crate::proxy::serve(
                ingress,
                shared.clone(),
                Direction::Ingress,
            )),
            tokio::spawn(crate::proxy::serve(
                egress,
                shared.clone(),
                Direction::Egress,
            )),
        ]);
        if let Some(emf) = emf {
            let reporter = crate::metrics::emf::EmfReporter::new(
                shared.metrics.clone(),
                &emf.namespace,
                &shared.node.mesh,
                &shared.node.node,
            );
            tracing::info!(namespace = %emf.namespace, interval_s = emf.interval.as_secs_f64(), "CloudWatch EMF metrics on stdout");
            tasks.push(tokio::spawn(crate::metrics::emf::run(
                reporter,
                emf.interval,
                std::io::stdout(),
            )));
        }
        Ok(AgentHandle {
            ingress_addr,
            egress_addr,
            admin_addr,
            shared,
            tasks,
        })
    }
}

impl AgentHandle {
    /// Current lifecycle state.
    pub fn state(&self) -> State {
        self.shared.lifecycle.state()
    }

    /// The shared state (metrics, config) for inspection.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits until the agent is LIVE or `timeout` passes; true when LIVE.
    pub async fn wait_live(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.state() == State::Live {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.state() == State::Live
    }

    /// DRAINING: stop accepting, let in-flight connections finish (up to the drain wait),
    /// then stop every task. Returns the connections still open at the deadline.
    pub async fn shutdown(self) -> i64 {
        self.shared.lifecycle.drain("shutting down (SIGTERM)", true);
        let deadline = Instant::now() + self.shared.settings.drain_wait();
        let open = || {
            self.shared.metrics.active_connections(Direction::Ingress)
                + self.shared.metrics.active_connections(Direction::Egress)
        };
        while open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let left = open();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain time over; closing remaining connections"
            );
        } else {
            tracing::info!("drained; exiting");
        }
        for t in &self.tasks {
            t.abort();
        }
        // Requests answered during the drain are logged before the process goes.
        self.shared.access_log.flush(Duration::from_secs(2));
        left
    }
}
