//! Configuration: settings (env + flags), mesh-document sources, the on-disk last-good cache,
//! and the reload loop that compiles each new document into an immutable route table and swaps
//! it in atomically (requests in flight keep the `Arc` of the table they started with).

pub mod appmesh;
pub mod cache;
pub mod file;
pub mod http;
pub mod reload;
pub mod s3;
pub mod settings;
pub mod source;

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use taskmesh_mesh::{ConnectionPool, MeshDocument, NodeRef, RouteTable};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::RouteStats;

/// One good, compiled mesh document and what was learnt about it.
pub struct ActiveConfig {
    /// The compiled table the proxy reads.
    pub table: RouteTable,
    /// Canonical JSON of the document (for `/config_dump`).
    pub document: serde_json::Value,
    /// Version tag (ETag, content hash).
    pub version: String,
    /// Where it came from (`TASKMESH_CONFIG`, or `cache:<path>`).
    pub source: String,
    /// When it was installed.
    pub loaded_at: SystemTime,
    /// `logging.accessLog.file.path` of this node, if any.
    pub access_log_path: Option<Arc<str>>,
    /// Connection-pool limits of this node's listeners (ingress), by port.
    pub ingress_limits: foldhash::HashMap<u16, Arc<PoolLimit>>,
    /// Listener TLS and backend client TLS of this node (certificates loaded from files).
    pub tls: crate::tls::TlsState,
    /// Per (route, target) metric handles, filled lazily, so the hot path never builds labels.
    stats: RwLock<foldhash::HashMap<(usize, usize), Arc<RouteStats>>>,
}

/// Why a document was not installed.
#[derive(thiserror::Error, Debug)]
pub enum RejectError {
    /// Parse or validation failure.
    #[error("mesh document rejected: {0}")]
    Document(#[from] taskmesh_mesh::DocumentError),
    /// TLS material that cannot be used (ACM/SDS source, unreadable or invalid PEM files).
    #[error("mesh document rejected: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl ActiveConfig {
    /// Parses, validates and compiles `bytes` for `node`.
    pub fn compile(
        bytes: &[u8],
        node: &NodeRef,
        version: String,
        source: String,
    ) -> Result<ActiveConfig, RejectError> {
        let doc = MeshDocument::from_slice(bytes)?;
        let table = RouteTable::compile(&doc, node)?;
        let tls = crate::tls::TlsState::build(&doc, &table, crate::tls::client::POOL_IDLE)?;
        let document = doc.to_json_value();
        let access_log_path = access_log_path(&document, &node.node);
        let ingress_limits = table
            .listeners()
            .iter()
            .filter_map(|l| {
                let (max, pending) = match l.connection_pool? {
                    ConnectionPool::Http {
                        max_connections,
                        max_pending_requests,
                    } => (max_connections, max_pending_requests),
                    ConnectionPool::Tcp { max_connections } => (max_connections, 0),
                    ConnectionPool::Http2 { max_requests }
                    | ConnectionPool::Grpc { max_requests } => (max_requests, 0),
                };
                Some((l.port, Arc::new(PoolLimit::new(max, pending))))
            })
            .collect();
        Ok(ActiveConfig {
            ingress_limits,
            tls,
            table,
            document,
            version,
            source,
            loaded_at: SystemTime::now(),
            access_log_path,
            stats: RwLock::new(foldhash::HashMap::default()),
        })
    }

    /// The metric handle for `key`, created through `make` on first use.
    pub fn stats_for(
        &self,
        key: (usize, usize),
        make: impl FnOnce() -> Arc<RouteStats>,
    ) -> Arc<RouteStats> {
        if let Ok(map) = self.stats.read()
            && let Some(s) = map.get(&key)
        {
            return s.clone();
        }
        let s = make();
        if let Ok(mut map) = self.stats.write() {
            return map.entry(key).or_insert(s).clone();
        }
        s
    }
}

/// A listener's `connectionPool`: at most `max` requests (HTTP) or connections (TCP) to the
/// app at once, up to `max_pending` more waiting; beyond that the caller gets 503 (Envoy's
/// `UO` overflow). Counters start afresh with each installed document.
pub struct PoolLimit {
    slots: Arc<Semaphore>,
    pending: std::sync::atomic::AtomicU32,
    max_pending: u32,
}

impl PoolLimit {
    fn new(max: u32, max_pending: u32) -> PoolLimit {
        PoolLimit {
            slots: Arc::new(Semaphore::new(
                max.clamp(1, Semaphore::MAX_PERMITS as u32) as usize
            )),
            pending: std::sync::atomic::AtomicU32::new(0),
            max_pending,
        }
    }

    /// A slot, waiting in line when there is room in the queue; `None` on overflow.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        let queued = self.pending.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let p = self.slots.clone().acquire_owned().await.ok();
        self.pending.fetch_sub(1, Ordering::AcqRel);
        p
    }
}

/// `virtualNodes[name=node].spec.logging.accessLog.file.path` of the canonical document.
fn access_log_path(doc: &serde_json::Value, node: &str) -> Option<Arc<str>> {
    doc.get("virtualNodes")?
        .as_array()?
        .iter()
        .find(|n| n.get("virtualNodeName").and_then(|v| v.as_str()) == Some(node))?
        .pointer("/spec/logging/accessLog/file/path")?
        .as_str()
        .map(Arc::from)
}
