//! TLS from files, as App Mesh's `file` certificate and trust sources: `server.rs` terminates
//! TLS on the ingress listeners (`listeners[].tls`: STRICT / PERMISSIVE / DISABLED, optional
//! client-certificate validation), `client.rs` originates TLS towards backends whose
//! `clientPolicy.tls` applies. This file owns what both share: reading PEM files, the errors
//! (naming the virtual node, the field and the file), the per-document [`TlsState`] built
//! next to the route table, and [`Watched`], which rebuilds a rustls config when its files
//! change on disk (mtime/size checked at most every [`RECHECK`]).
//!
//! ACM and SDS sources exist only inside App Mesh (ACM private CA export, Envoy SDS over the
//! App Mesh agent); a document that needs them for this node is refused as a whole.

pub mod client;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use taskmesh_mesh::model::{
    ClientPolicyTls, ClientTlsCertificate, ListenerTlsCertificate, TlsMode, TlsValidationTrust,
    VirtualNodeData,
};
use taskmesh_mesh::{MeshDocument, RouteTable};

/// How often a [`Watched`] config looks at its files' modification times.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why TLS material could not be used.
#[derive(thiserror::Error, Debug, Clone)]
pub enum TlsError {
    /// A certificate or trust source that only App Mesh can serve.
    #[error(
        "virtualNodes[{node}].spec.{field}: {source_kind} is not available outside App Mesh; \
         use a file source ({hint})"
    )]
    Unsupported {
        /// The virtual node.
        node: String,
        /// Path of the field under the node's spec.
        field: String,
        /// `ACM` or `SDS`.
        source_kind: &'static str,
        /// What to write instead.
        hint: &'static str,
    },
    /// A PEM file that cannot be read or holds nothing usable.
    #[error("virtualNodes[{node}].spec.{field}: {path}: {why}")]
    File {
        /// The virtual node.
        node: String,
        /// Path of the field under the node's spec.
        field: String,
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the material (e.g. key does not match the certificate).
    #[error("virtualNodes[{node}].spec.{field}: {why}")]
    Config {
        /// The virtual node.
        node: String,
        /// Path of the field under the node's spec.
        field: String,
        /// What rustls said.
        why: String,
    },
}

/// Where a piece of TLS material is declared (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub node: String,
    pub field: String,
}

impl Origin {
    fn at(&self, sub: &str) -> Origin {
        Origin {
            node: self.node.clone(),
            field: format!("{}.{sub}", self.field),
        }
    }

    fn file_error(&self, path: &Path, why: impl Into<String>) -> TlsError {
        TlsError::File {
            node: self.node.clone(),
            field: self.field.clone(),
            path: path.display().to_string(),
            why: why.into(),
        }
    }

    fn config_error(&self, why: impl std::fmt::Display) -> TlsError {
        TlsError::Config {
            node: self.node.clone(),
            field: self.field.clone(),
            why: why.to_string(),
        }
    }
}

/// Every certificate of a PEM chain file (at least one).
pub(crate) fn load_certs(
    path: &Path,
    origin: &Origin,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| origin.file_error(path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| origin.file_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(origin.file_error(path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn load_key(path: &Path, origin: &Origin) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| origin.file_error(path, e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| origin.file_error(path, format!("no usable PEM private key: {e}")))
}

/// A root store of every certificate in a PEM trust file.
pub(crate) fn load_roots(path: &Path, origin: &Origin) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, origin)? {
        roots
            .add(cert)
            .map_err(|e| origin.file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The trust file of a validation context; ACM/SDS refused.
pub(crate) fn trust_file<'a>(
    trust: &'a TlsValidationTrust,
    origin: &Origin,
) -> Result<&'a str, TlsError> {
    match trust {
        TlsValidationTrust::File { certificate_chain } => Ok(certificate_chain),
        TlsValidationTrust::Acm { .. } => Err(TlsError::Unsupported {
            node: origin.node.clone(),
            field: format!("{}.acm", origin.field),
            source_kind: "ACM PCA trust",
            hint: "trust.file.certificateChain with the CA's PEM",
        }),
        TlsValidationTrust::Sds { .. } => Err(TlsError::Unsupported {
            node: origin.node.clone(),
            field: format!("{}.sds", origin.field),
            source_kind: "SDS trust",
            hint: "trust.file.certificateChain with the CA's PEM",
        }),
    }
}

/// The rustls crypto provider used everywhere (ring, as the rest of the workspace).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Modification time and size of a file (`None`: unreadable), to notice replacements.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A value built from files, rebuilt when one of them changes on disk. A failed rebuild keeps
/// the previous value (logged); it is tried again on the next change.
pub struct Watched<T> {
    current: ArcSwap<T>,
    files: Vec<PathBuf>,
    state: Mutex<(Instant, Vec<Stamp>)>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    what: String,
}

impl<T> Watched<T> {
    /// Builds the first value now (its error is the caller's to report).
    pub(crate) fn new(
        what: String,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Watched<T>, TlsError> {
        let stamps = files.iter().map(|f| stamp(f)).collect();
        let first = build()?;
        Ok(Watched {
            current: ArcSwap::from_pointee(first),
            files,
            state: Mutex::new((Instant::now(), stamps)),
            build: Box::new(build),
            what,
        })
    }

    /// The current value, rebuilt first when its files changed since the last look (looked at
    /// no more often than [`RECHECK`]).
    pub fn get(&self) -> Arc<T> {
        self.recheck(false);
        self.current.load_full()
    }

    /// Looks at the files now (or at most every [`RECHECK`] unless `force`); returns whether
    /// a new value was installed.
    pub fn recheck(&self, force: bool) -> bool {
        let Ok(mut state) = self.state.try_lock() else {
            return false;
        };
        if !force && state.0.elapsed() < RECHECK {
            return false;
        }
        state.0 = Instant::now();
        let now: Vec<Stamp> = self.files.iter().map(|f| stamp(f)).collect();
        if now == state.1 {
            return false;
        }
        match (self.build)() {
            Ok(v) => {
                state.1 = now;
                self.current.store(Arc::new(v));
                tracing::info!(what = %self.what, "TLS files changed; certificates reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(what = %self.what, error = %e, "TLS files changed but cannot be used; keeping the previous certificates");
                false
            }
        }
    }
}

/// The TLS side of one installed mesh document: listener TLS by port, client TLS by backend
/// virtual service (lowercase).
#[derive(Default)]
pub struct TlsState {
    listeners: foldhash::HashMap<u16, Arc<server::ListenerTlsConfig>>,
    clients: foldhash::HashMap<Box<str>, Arc<client::ClientPolicy>>,
}

impl TlsState {
    /// Builds the TLS configs this node needs from `doc` (its listeners' `tls` and its
    /// backends' client policies, as compiled in `table`). Any ACM/SDS source or unusable file
    /// is an error naming the node and field, so the document is refused.
    pub fn build(
        doc: &MeshDocument,
        table: &RouteTable,
        idle: Duration,
    ) -> Result<TlsState, TlsError> {
        let mut state = TlsState::default();
        let Some(me) = doc.virtual_node(table.node_name()) else {
            return Ok(state);
        };
        check_client_sources(me)?;
        for (i, l) in table.listeners().iter().enumerate() {
            let Some(tls) = &l.tls else { continue };
            if tls.mode == TlsMode::Disabled {
                continue;
            }
            let origin = Origin {
                node: table.node_name().to_string(),
                field: format!("listeners[{i}].tls"),
            };
            let cfg = server::ListenerTlsConfig::build(tls, l.protocol.is_http(), &origin)?;
            state.listeners.insert(l.port, Arc::new(cfg));
        }
        for vs in table.backend_services() {
            let Some(policy) = table.client_tls(vs) else {
                continue;
            };
            if !policy.enforce() {
                continue;
            }
            let origin = Origin {
                node: table.node_name().to_string(),
                field: client_policy_field(me, vs),
            };
            let built = client::ClientPolicy::build(vs, policy, idle, &origin)?;
            state
                .clients
                .insert(vs.to_ascii_lowercase().into(), Arc::new(built));
        }
        Ok(state)
    }

    /// The TLS config of this node's listener on `port` (absent: plaintext only).
    pub fn listener(&self, port: u16) -> Option<&Arc<server::ListenerTlsConfig>> {
        if self.listeners.is_empty() {
            return None;
        }
        self.listeners.get(&port)
    }

    /// The client TLS to use towards `virtual_service` on target port `port`, when its
    /// enforced policy covers that port.
    pub fn client(&self, virtual_service: &str, port: u16) -> Option<&Arc<client::ClientPolicy>> {
        if self.clients.is_empty() {
            return None;
        }
        let c = if virtual_service.bytes().any(|b| b.is_ascii_uppercase()) {
            self.clients
                .get(virtual_service.to_ascii_lowercase().as_str())
        } else {
            self.clients.get(virtual_service)
        }?;
        c.covers(port).then_some(c)
    }

    /// Whether any TLS is configured (listeners or clients).
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty() && self.clients.is_empty()
    }
}

/// The spec path of the client policy that applies to backend `vs` (its own, else the
/// backend defaults').
fn client_policy_field(me: &VirtualNodeData, vs: &str) -> String {
    for (i, b) in me.spec.backends.iter().enumerate() {
        let taskmesh_mesh::model::Backend::VirtualService(v) = b;
        if v.virtual_service_name.eq_ignore_ascii_case(vs)
            && v.client_policy.as_ref().is_some_and(|p| p.tls.is_some())
        {
            return format!("backends[{i}].virtualService.clientPolicy.tls");
        }
    }
    "backendDefaults.clientPolicy.tls".into()
}

/// Refuses ACM/SDS sources in every enforced client policy of the node (each backend's and
/// the backend defaults'), naming the exact field.
fn check_client_sources(me: &VirtualNodeData) -> Result<(), TlsError> {
    let node = me.virtual_node_name.clone();
    let mut policies: Vec<(String, &ClientPolicyTls)> = Vec::new();
    for (i, b) in me.spec.backends.iter().enumerate() {
        let taskmesh_mesh::model::Backend::VirtualService(v) = b;
        if let Some(t) = v.client_policy.as_ref().and_then(|p| p.tls.as_ref()) {
            policies.push((format!("backends[{i}].virtualService.clientPolicy.tls"), t));
        }
    }
    if let Some(t) = me
        .spec
        .backend_defaults
        .as_ref()
        .and_then(|d| d.client_policy.as_ref())
        .and_then(|p| p.tls.as_ref())
    {
        policies.push(("backendDefaults.clientPolicy.tls".into(), t));
    }
    for (field, t) in policies {
        if !t.enforce() {
            continue;
        }
        let origin = Origin {
            node: node.clone(),
            field: field.clone(),
        };
        trust_file(&t.validation.trust, &origin.at("validation.trust"))?;
        if let Some(ClientTlsCertificate::Sds { .. }) = &t.certificate {
            return Err(TlsError::Unsupported {
                node,
                field: format!("{field}.certificate.sds"),
                source_kind: "an SDS client certificate",
                hint: "certificate.file {certificateChain, privateKey}",
            });
        }
    }
    Ok(())
}

/// The file pair of a listener certificate; ACM/SDS refused.
pub(crate) fn listener_certificate_files<'a>(
    cert: &'a ListenerTlsCertificate,
    origin: &Origin,
) -> Result<(&'a str, &'a str), TlsError> {
    match cert {
        ListenerTlsCertificate::File {
            certificate_chain,
            private_key,
        } => Ok((certificate_chain, private_key)),
        ListenerTlsCertificate::Acm { .. } => Err(TlsError::Unsupported {
            node: origin.node.clone(),
            field: format!("{}.certificate.acm", origin.field),
            source_kind: "an ACM certificate",
            hint: "certificate.file {certificateChain, privateKey}",
        }),
        ListenerTlsCertificate::Sds { .. } => Err(TlsError::Unsupported {
            node: origin.node.clone(),
            field: format!("{}.certificate.sds", origin.field),
            source_kind: "an SDS certificate",
            hint: "certificate.file {certificateChain, privateKey}",
        }),
    }
}
