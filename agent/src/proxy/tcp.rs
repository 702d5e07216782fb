//! Opaque TCP forwarding (tcpRoute targets, TCP listeners on ingress, ALLOW_ALL pass-through):
//! connect, then copy both ways until either side closes, or until no byte moved in either
//! direction for the idle timeout (tcpRoute `timeout.idle` on egress, the listener's
//! `timeout.tcp.idle` on ingress).
//!
//! The idle clock costs one timer per connection: the downstream side is wrapped so every read
//! or write that moves bytes stamps the time of last activity (an atomic store), and the single
//! timer, when it fires, either re-arms itself at `last activity + idle` or ends the splice.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Connect timeout for TCP upstreams.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// Bytes copied from downstream to upstream.
    pub down_to_up: u64,
    /// Bytes copied from upstream to downstream.
    pub up_to_down: u64,
    /// The connection was closed because it stayed idle for the idle timeout.
    pub idle_timed_out: bool,
}

/// Connects to `upstream` and splices `downstream` (a socket, or a TLS stream terminated on
/// ingress) to it, closing both when nothing moved for `idle` (`None`: no idle timeout).
pub async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    mut downstream: S,
    upstream: SocketAddr,
    idle: Option<Duration>,
) -> io::Result<Spliced> {
    let mut up = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = up.set_nodelay(true);
    splice(&mut downstream, &mut up, idle).await
}

/// Bytes moved per read, each direction: 16 KiB like nginx's stream `proxy_buffer_size` and
/// haproxy's `tune.bufsize` (tokio's default is 8 KiB: twice the system calls for bulk data).
pub const COPY_BUFFER: usize = 16 * 1024;

/// Copies both ways between `downstream` and `upstream` until either side closes, or until no
/// byte moved in either direction for `idle`. Both streams are left to the caller to drop
/// (which closes them).
pub async fn splice<D, U>(
    downstream: &mut D,
    upstream: &mut U,
    idle: Option<Duration>,
) -> io::Result<Spliced>
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let Some(idle) = idle else {
        let (a, b) = tokio::io::copy_bidirectional_with_sizes(
            downstream,
            upstream,
            COPY_BUFFER,
            COPY_BUFFER,
        )
        .await?;
        return Ok(Spliced {
            down_to_up: a,
            up_to_down: b,
            idle_timed_out: false,
        });
    };
    let origin = Instant::now();
    let clock = Activity {
        origin,
        last_ms: AtomicU64::new(0),
        down_to_up: AtomicU64::new(0),
        up_to_down: AtomicU64::new(0),
    };
    let mut tracked = Tracked {
        inner: downstream,
        clock: &clock,
    };
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut tracked, upstream, COPY_BUFFER, COPY_BUFFER);
    tokio::pin!(copy);
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            r = &mut copy => {
                let (a, b) = r?;
                return Ok(Spliced { down_to_up: a, up_to_down: b, idle_timed_out: false });
            }
            () = &mut timer => {
                let last = origin + Duration::from_millis(clock.last_ms.load(Ordering::Relaxed));
                let deadline = last + idle;
                if Instant::now() >= deadline {
                    return Ok(Spliced {
                        down_to_up: clock.down_to_up.load(Ordering::Relaxed),
                        up_to_down: clock.up_to_down.load(Ordering::Relaxed),
                        idle_timed_out: true,
                    });
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// Time of the last byte moved (milliseconds since `origin`) and bytes per direction.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    down_to_up: AtomicU64,
    up_to_down: AtomicU64,
}

impl Activity {
    fn moved(&self, counter: &AtomicU64, n: usize) {
        if n == 0 {
            return;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let ms = Instant::now().duration_since(self.origin).as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// The downstream stream with its reads (down->up) and writes (up->down) stamped: between them
/// they see every byte of the splice.
struct Tracked<'a, S: ?Sized> {
    inner: &'a mut S,
    clock: &'a Activity,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.clock
                .moved(&this.clock.down_to_up, buf.filled().len() - before);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            this.clock.moved(&this.clock.up_to_down, n);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_splice_ends_after_the_idle_time_and_not_before() {
        let (mut down, mut down_peer) = tokio::io::duplex(64);
        let (mut up, mut up_peer) = tokio::io::duplex(64);
        let idle = Duration::from_millis(300);
        let task = tokio::spawn(async move { splice(&mut down, &mut up, Some(idle)).await });
        // A byte each way every 100 ms for over 1 s keeps it open.
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            down_peer.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            up_peer.read_exact(&mut b).await.unwrap();
            up_peer.write_all(b"y").await.unwrap();
            down_peer.read_exact(&mut b).await.unwrap();
        }
        assert!(!task.is_finished(), "closed while bytes were flowing");
        let t0 = Instant::now();
        let s = task.await.unwrap().unwrap();
        assert!(s.idle_timed_out);
        assert_eq!((s.down_to_up, s.up_to_down), (12, 12));
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited <= Duration::from_secs(3),
            "{waited:?}"
        );
    }
}
