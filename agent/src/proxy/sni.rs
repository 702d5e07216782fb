//! TLS ClientHello server-name (SNI) extraction for redirected opaque connections, so that
//! under `DROP_ALL` TLS to `*.amazonaws.com` is still allowed (App Mesh's
//! `cds_egress_<mesh>_amazonaws` rule). Only peeks; the bytes stay in the socket for the
//! pass-through.

use std::time::Duration;

use tokio::net::TcpStream;

/// Peeks until a whole first TLS record is buffered (or `wait` passes) and returns its SNI.
pub async fn peek_sni(stream: &TcpStream, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if n >= 5 && 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]])) > buf.len() {
            return None;
        }
        match server_name(&buf[..n]) {
            Parse::Done(name) => return name,
            Parse::NeedMore if n < buf.len() => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
            }
            Parse::NeedMore => return None,
        }
    }
}

/// Outcome of parsing a (possibly partial) first record.
#[derive(Debug, PartialEq)]
pub enum Parse {
    /// Parsed: the SNI host name, if the record is a ClientHello carrying one.
    Done(Option<String>),
    /// The record is not complete yet.
    NeedMore,
}

/// Parses the SNI out of the first TLS record in `data`.
pub fn server_name(data: &[u8]) -> Parse {
    if data.is_empty() {
        return Parse::NeedMore;
    }
    if data[0] != 0x16 {
        return Parse::Done(None);
    }
    if data.len() < 5 {
        return Parse::NeedMore;
    }
    let len = usize::from(u16::from_be_bytes([data[3], data[4]]));
    if data.len() < 5 + len {
        return Parse::NeedMore;
    }
    Parse::Done(client_hello_sni(&data[5..5 + len]))
}

fn client_hello_sni(hs: &[u8]) -> Option<String> {
    let mut r = Reader(hs);
    if r.u8()? != 0x01 {
        return None;
    }
    let body_len = r.u24()?;
    let mut r = Reader(r.take(body_len)?);
    r.take(2 + 32)?; // client_version, random
    let sid = usize::from(r.u8()?);
    r.take(sid)?;
    let cs = usize::from(r.u16()?);
    r.take(cs)?;
    let comp = usize::from(r.u8()?);
    r.take(comp)?;
    let ext_len = usize::from(r.u16()?);
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let data = exts.take(len)?;
        if ty == 0 {
            let mut l = Reader(data);
            let list_len = usize::from(l.u16()?);
            let mut list = Reader(l.take(list_len)?);
            while !list.0.is_empty() {
                let kind = list.u8()?;
                let n = usize::from(list.u16()?);
                let name = list.take(n)?;
                if kind == 0 {
                    return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                }
            }
            return None;
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello from rustls.
    pub fn client_hello(host: &str) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn sni_of_a_real_client_hello() {
        let hello = client_hello("Sts.US-East-1.amazonaws.com");
        assert_eq!(
            server_name(&hello),
            Parse::Done(Some("sts.us-east-1.amazonaws.com".into()))
        );
        assert_eq!(server_name(&hello[..hello.len() / 2]), Parse::NeedMore);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), Parse::Done(None));
        assert_eq!(
            server_name(&[0x16, 3, 1, 0, 4, 1, 0, 0, 0]),
            Parse::Done(None)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..600 {
            let mut v = vec![0x16u8, 3, 1, (len >> 8) as u8, len as u8];
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push(seed as u8);
            }
            let _ = server_name(&v);
        }
    }
}
