//! Listener TLS on ingress: a rustls server config per listener from
//! `tls.certificate.file {certificateChain, privateKey}`, with client certificates required and
//! verified against `tls.validation.trust.file.certificateChain` (and, when given, one of
//! `subjectAlternativeNames.match.exact`) for mTLS. [`accept`] applies the listener's mode:
//! STRICT takes TLS only, PERMISSIVE takes TLS or plaintext on the same port (the first byte
//! of a TLS connection is a handshake record, `0x16`; a TCP listener's client that stays
//! silent for [`PERMISSIVE_TCP_WAIT`] is plaintext too), DISABLED never gets here.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use taskmesh_mesh::ListenerTls;
use taskmesh_mesh::model::TlsMode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{Origin, TlsError, Watched};

/// How long a client may take to finish the TLS handshake (and to send its first byte on an
/// HTTP listener).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a PERMISSIVE TCP listener waits for the client's first byte before taking the
/// connection as plaintext (server-speaks-first protocols such as MySQL or SMTP send nothing).
pub const PERMISSIVE_TCP_WAIT: Duration = Duration::from_millis(300);

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// One listener's TLS: its mode and its (file-watched) rustls config.
pub struct ListenerTlsConfig {
    /// STRICT or PERMISSIVE.
    pub mode: TlsMode,
    /// Whether client certificates are required.
    pub mutual: bool,
    /// How long to wait for the first byte (see [`PERMISSIVE_TCP_WAIT`]).
    first_byte_wait: Duration,
    config: Watched<ServerConfig>,
}

impl ListenerTlsConfig {
    /// Loads the listener's certificate (and trust, for mTLS); `http` listeners offer ALPN
    /// `h2` and `http/1.1`.
    pub(crate) fn build(
        tls: &ListenerTls,
        http: bool,
        origin: &Origin,
    ) -> Result<ListenerTlsConfig, TlsError> {
        let (chain, key) = super::listener_certificate_files(&tls.certificate, origin)?;
        let (chain, key) = (PathBuf::from(chain), PathBuf::from(key));
        let mut files = vec![chain.clone(), key.clone()];
        let trust = match &tls.validation {
            None => None,
            Some(v) => {
                let o = origin.at("validation.trust");
                let path = PathBuf::from(super::trust_file(&v.trust, &o)?);
                files.push(path.clone());
                let sans: Vec<String> = v
                    .subject_alternative_names
                    .as_ref()
                    .map(|s| s.san_match.exact.clone())
                    .unwrap_or_default();
                Some((path, sans))
            }
        };
        let mutual = trust.is_some();
        let origin = origin.clone();
        let what = format!(
            "virtualNodes[{}].spec.{} (listener TLS)",
            origin.node, origin.field
        );
        let build = move || {
            let o = origin.at("certificate.file");
            let certs = super::load_certs(&chain, &o)?;
            let key = super::load_key(&key, &o)?;
            let builder = ServerConfig::builder_with_provider(super::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| origin.config_error(e))?;
            let builder = match &trust {
                None => builder.with_no_client_auth(),
                Some((path, sans)) => {
                    let o = origin.at("validation.trust.file.certificateChain");
                    let roots = super::load_roots(path, &o)?;
                    let inner =
                        WebPkiClientVerifier::builder_with_provider(roots, super::provider())
                            .build()
                            .map_err(|e| o.config_error(e))?;
                    let verifier: Arc<dyn ClientCertVerifier> = if sans.is_empty() {
                        inner
                    } else {
                        Arc::new(SanClientVerifier {
                            inner,
                            names: sans.clone(),
                        })
                    };
                    builder.with_client_cert_verifier(verifier)
                }
            };
            let mut cfg = builder
                .with_single_cert(certs, key)
                .map_err(|e| o.config_error(format!("certificate and key do not fit: {e}")))?;
            if http {
                cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            }
            Ok(cfg)
        };
        Ok(ListenerTlsConfig {
            mode: tls.mode,
            mutual,
            first_byte_wait: if tls.mode == TlsMode::Permissive && !http {
                PERMISSIVE_TCP_WAIT
            } else {
                HANDSHAKE_TIMEOUT
            },
            config: Watched::new(what, files, build)?,
        })
    }

    /// The current rustls config (rebuilt when the files changed).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.get()
    }

    /// Re-reads the files now if they changed; returns whether new certificates are in use.
    pub fn reload_if_changed(&self) -> bool {
        self.config.recheck(true)
    }
}

/// Client-certificate verification: the CA chain (rustls/webpki), then one of the configured
/// subject alternative names (DNS or IP SANs, as webpki matches a server name).
#[derive(Debug)]
struct SanClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for SanClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("client certificate: {e}")))?;
        let matches = self.names.iter().any(|n| {
            ServerName::try_from(n.as_str())
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        });
        if matches {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A downstream connection after the listener's TLS mode was applied.
pub enum IngressStream {
    /// Plaintext (PERMISSIVE with a non-TLS first byte, or no listener TLS).
    Plain(TcpStream),
    /// TLS terminated here.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a downstream connection was not accepted.
#[derive(thiserror::Error, Debug)]
pub enum AcceptError {
    /// STRICT listener, plaintext client.
    #[error("plaintext connection on a STRICT TLS listener")]
    PlaintextOnStrict,
    /// The client sent nothing in time.
    #[error("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    /// The handshake failed (bad or missing client certificate, protocol error…).
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

impl AcceptError {
    /// The `reason` label of `taskmesh_ingress_tls_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AcceptError::PlaintextOnStrict => "plaintext_on_strict",
            AcceptError::Timeout => "timeout",
            AcceptError::Handshake(_) => "handshake",
        }
    }
}

/// Applies `tls` (None: plaintext) to an accepted connection.
pub async fn accept(
    tls: Option<&ListenerTlsConfig>,
    stream: TcpStream,
) -> Result<IngressStream, AcceptError> {
    let Some(tls) = tls else {
        return Ok(IngressStream::Plain(stream));
    };
    if tls.mode == TlsMode::Disabled {
        return Ok(IngressStream::Plain(stream));
    }
    let mut first = [0u8; 1];
    let n = match tokio::time::timeout(tls.first_byte_wait, stream.peek(&mut first)).await {
        Ok(r) => r.map_err(AcceptError::Handshake)?,
        // Silent client on a PERMISSIVE listener: a server-speaks-first plaintext protocol.
        Err(_) if tls.mode == TlsMode::Permissive => return Ok(IngressStream::Plain(stream)),
        Err(_) => return Err(AcceptError::Timeout),
    };
    if n == 0 || first[0] != TLS_HANDSHAKE_RECORD {
        return match tls.mode {
            TlsMode::Strict => Err(AcceptError::PlaintextOnStrict),
            _ => Ok(IngressStream::Plain(stream)),
        };
    }
    let acceptor = TlsAcceptor::from(tls.server_config());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Err(_) => Err(AcceptError::Timeout),
        Ok(Err(e)) => Err(AcceptError::Handshake(e)),
        Ok(Ok(s)) => Ok(IngressStream::Tls(Box::new(s))),
    }
}

impl IngressStream {
    /// Whether TLS was terminated.
    pub fn is_tls(&self) -> bool {
        matches!(self, IngressStream::Tls(_))
    }

    /// The verified client certificate's leaf (mTLS), if any.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        match self {
            IngressStream::Tls(s) => s.get_ref().1.peer_certificates()?.first(),
            IngressStream::Plain(_) => None,
        }
    }

    /// Sets TCP_NODELAY on the underlying socket.
    pub fn set_nodelay(&self, on: bool) -> std::io::Result<()> {
        match self {
            IngressStream::Plain(s) => s.set_nodelay(on),
            IngressStream::Tls(s) => s.get_ref().0.set_nodelay(on),
        }
    }
}

impl AsyncRead for IngressStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            IngressStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            IngressStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for IngressStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            IngressStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            IngressStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            IngressStream::Plain(s) => Pin::new(s).poll_flush(cx),
            IngressStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            IngressStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            IngressStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            IngressStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            IngressStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            IngressStream::Plain(s) => s.is_write_vectored(),
            IngressStream::Tls(s) => s.is_write_vectored(),
        }
    }
}
