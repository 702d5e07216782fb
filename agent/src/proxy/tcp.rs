//! Opaque TCP forwarding (tcpRoute targets, TCP listeners on ingress, ALLOW_ALL pass-through):
//! connect, then copy both ways until either side closes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Connect timeout for TCP upstreams.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `upstream` and splices `downstream` (a socket, or a TLS stream terminated on
/// ingress) to it. Returns bytes (down->up, up->down).
pub async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    mut downstream: S,
    upstream: SocketAddr,
) -> std::io::Result<(u64, u64)> {
    let mut up = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = up.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut downstream, &mut up).await
}
