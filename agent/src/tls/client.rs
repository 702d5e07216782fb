//! Client TLS on egress, per backend virtual service: when the backend's `clientPolicy.tls`
//! (else the node's `backendDefaults`) is enforced and its `ports` cover the target port, the
//! upstream connection is TLS, verified against `validation.trust.file.certificateChain` and
//! the names in `validation.subjectAlternativeNames.match.exact` (none given: the virtual
//! service name), presenting `certificate.file` as the client certificate when set (mTLS).
//! These connections have their own keep-alive pools, apart from plaintext ones; tcpRoute
//! targets get the same TLS around their byte stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use taskmesh_mesh::model::{ClientPolicyTls, ClientTlsCertificate};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Origin, TlsError, Watched};
use crate::proxy::pool::{CONNECT_TIMEOUT, UpstreamBody, UpstreamError, UpstreamResponseBody};

/// How long idle TLS upstream connections are kept for reuse.
pub const POOL_IDLE: Duration = Duration::from_secs(60);

type TlsClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// The enforced client TLS policy towards one backend virtual service.
pub struct ClientPolicy {
    virtual_service: Arc<str>,
    ports: Vec<u16>,
    clients: Watched<Clients>,
}

/// HTTP/1.1 and HTTP/2 pools over one rustls client config, and that config (no ALPN) for
/// opaque TCP (tcpRoute targets).
struct Clients {
    h1: TlsClient,
    h2: TlsClient,
    tcp: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl ClientPolicy {
    /// Loads the policy's trust (and client certificate) for backend `virtual_service`.
    pub(crate) fn build(
        virtual_service: &str,
        policy: &ClientPolicyTls,
        idle: Duration,
        origin: &Origin,
    ) -> Result<ClientPolicy, TlsError> {
        let trust_origin = origin.at("validation.trust");
        let trust = PathBuf::from(super::trust_file(&policy.validation.trust, &trust_origin)?);
        let mut files = vec![trust.clone()];
        let cert = match &policy.certificate {
            None => None,
            Some(ClientTlsCertificate::File {
                certificate_chain,
                private_key,
            }) => {
                let pair = (PathBuf::from(certificate_chain), PathBuf::from(private_key));
                files.extend([pair.0.clone(), pair.1.clone()]);
                Some(pair)
            }
            Some(ClientTlsCertificate::Sds { .. }) => {
                return Err(TlsError::Unsupported {
                    node: origin.node.clone(),
                    field: format!("{}.certificate.sds", origin.field),
                    source_kind: "an SDS client certificate",
                    hint: "certificate.file {certificateChain, privateKey}",
                });
            }
        };
        let names: Vec<String> = match &policy.validation.subject_alternative_names {
            Some(s) if !s.san_match.exact.is_empty() => s.san_match.exact.clone(),
            _ => vec![virtual_service.to_string()],
        };
        let mut server_names = Vec::new();
        for n in &names {
            let name = ServerName::try_from(n.clone()).map_err(|e| {
                origin
                    .at("validation.subjectAlternativeNames")
                    .config_error(format!("{n:?} is not a DNS name or IP address: {e}"))
            })?;
            server_names.push(name);
        }
        let origin = origin.clone();
        let what = format!(
            "virtualNodes[{}].spec.{} (client TLS to {virtual_service})",
            origin.node, origin.field
        );
        let build = move || {
            let o = origin.at("validation.trust.file.certificateChain");
            let roots = super::load_roots(&trust, &o)?;
            let inner = WebPkiServerVerifier::builder_with_provider(roots, super::provider())
                .build()
                .map_err(|e| o.config_error(e))?;
            let verifier = Arc::new(SanServerVerifier {
                inner,
                names: server_names.clone(),
            });
            let builder = ClientConfig::builder_with_provider(super::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| origin.config_error(e))?
                .dangerous()
                .with_custom_certificate_verifier(verifier);
            let config = match &cert {
                None => builder.with_no_client_auth(),
                Some((chain, key)) => {
                    let o = origin.at("certificate.file");
                    let certs = super::load_certs(chain, &o)?;
                    let key = super::load_key(key, &o)?;
                    builder.with_client_auth_cert(certs, key).map_err(|e| {
                        o.config_error(format!("certificate and key do not fit: {e}"))
                    })?
                }
            };
            Ok(Clients::new(config, server_names[0].clone(), idle))
        };
        Ok(ClientPolicy {
            virtual_service: virtual_service.into(),
            ports: policy
                .ports
                .iter()
                .filter_map(|p| u16::try_from(*p).ok())
                .collect(),
            clients: Watched::new(what, files, build)?,
        })
    }

    /// Whether the policy applies to target port `port` (empty `ports`: every port).
    pub fn covers(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }

    /// The backend virtual service this policy is for.
    pub fn virtual_service(&self) -> &str {
        &self.virtual_service
    }

    /// Sends the request `head` (absolute `http://ip:port/…` URI; cloned, the caller keeps it
    /// for a retry) and `body` over TLS, HTTP/2 when `h2`. A handshake or verification failure
    /// is [`UpstreamError::Tls`].
    pub async fn send(
        &self,
        head: &http::request::Parts,
        body: UpstreamBody,
        h2: bool,
    ) -> Result<Response<UpstreamResponseBody>, UpstreamError> {
        let mut req = Request::from_parts(head.clone(), body);
        let authority = req.uri().authority().cloned();
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTPS);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        let clients = self.clients.get();
        let client = if h2 {
            *req.version_mut() = http::Version::HTTP_2;
            &clients.h2
        } else {
            &clients.h1
        };
        let resp = client.request(req).await.map_err(|source| {
            let addr = authority.map(|a| a.to_string()).unwrap_or_default();
            if let Some(tls) = tls_cause(&source) {
                UpstreamError::Tls {
                    addr,
                    virtual_service: self.virtual_service.to_string(),
                    why: tls.to_string(),
                }
            } else {
                UpstreamError::from_client(addr, source)
            }
        })?;
        Ok(resp.map(UpstreamResponseBody::unpooled))
    }
}

impl ClientPolicy {
    /// Forwards an opaque TCP stream (a tcpRoute target) to `upstream` over TLS, verified as
    /// for HTTP, closing both sides when nothing moved for `idle` (the route's idle timeout).
    /// A handshake failure is an error naming the virtual service.
    pub async fn forward_tcp<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut downstream: S,
        upstream: SocketAddr,
        idle: Option<Duration>,
    ) -> std::io::Result<crate::proxy::tcp::Spliced> {
        let clients = self.clients.get();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = tcp.set_nodelay(true);
        let mut tls = tokio_rustls::TlsConnector::from(clients.tcp.clone())
            .connect(clients.name.clone(), tcp)
            .await
            .map_err(|e| {
                let why = tls_cause(&e).map_or_else(|| e.to_string(), |r| r.to_string());
                std::io::Error::other(format!(
                    "TLS to {upstream} for virtual service {} failed: {why}",
                    self.virtual_service
                ))
            })?;
        crate::proxy::tcp::splice(&mut downstream, &mut tls, idle).await
    }
}

impl Clients {
    fn new(config: ClientConfig, name: ServerName<'static>, idle: Duration) -> Clients {
        let connector = |alpn: &[&[u8]]| {
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            http.set_connect_timeout(Some(CONNECT_TIMEOUT));
            http.enforce_http(false);
            let mut config = config.clone();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            HttpsConnector::new(
                http,
                config,
                true,
                Arc::new(FixedServerNameResolver::new(name.clone())),
            )
        };
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1024)
            .set_host(false)
            .build(connector(&[b"http/1.1"]));
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .set_host(false)
            .build(connector(&[b"h2"]));
        Clients {
            h1,
            h2,
            tcp: Arc::new(config),
            name,
        }
    }
}

/// The rustls error somewhere in `e`'s chain (io errors carry it as their inner error).
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = tls_cause(inner)
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Server-certificate verification: the CA chain (webpki), valid for one of `names` whatever
/// address was dialled (endpoints are IPs; the identity is the service's name).
#[derive(Debug)]
struct SanServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for SanServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut last = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        for name in &self.names {
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
