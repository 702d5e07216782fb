//! The original destination of a redirected connection: `SO_ORIGINAL_DST` (IPv4) or
//! `IP6T_SO_ORIGINAL_DST` (IPv6) via `getsockopt`, through socket2's wrappers (as linkerd2-proxy
//! does). A connection made straight to the listener ("explicit mode") has no NAT entry, or one
//! whose original destination is the listener itself: both answer `None`.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The pre-NAT destination of `stream`, or `None` in explicit mode.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = SockRef::from(stream);
    let orig = if local.is_ipv4() || is_v4_mapped(&local) {
        sock.original_dst()
    } else {
        sock.original_dst_ipv6()
    }
    .ok()?
    .as_socket()?;
    let orig = unmap(orig);
    if orig == unmap(local) {
        None
    } else {
        Some(orig)
    }
}

fn is_v4_mapped(a: &SocketAddr) -> bool {
    matches!(a, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some())
}

fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn direct_connection_is_explicit_mode() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await.unwrap() });
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(super::original_dst(&s), None);
        drop(c.await.unwrap());
    }
}
