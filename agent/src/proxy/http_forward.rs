//! Rewriting a request for the next hop and a response for the client: hop-by-hop fields
//! removed as RFC 9110 §7.6.1 says (`Connection` and every field it names, plus `Keep-Alive`,
//! `Proxy-Connection`, `TE` other than `trailers` (which gRPC over HTTP/2 needs),
//! `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`), `x-forwarded-for` appended, `x-request-id` kept or generated, and the
//! absolute upstream URI set for the pooled client.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop fields always removed (`Connection`, the fields it names, and `TE` other than
/// `trailers` are handled on their own).
static ALWAYS_HOP_BY_HOP: [&HeaderName; 6] = [
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
];

/// Whether `name` is one of the hop-by-hop fields [`strip_hop_by_hop`] looks at.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION || name == header::TE || ALWAYS_HOP_BY_HOP.contains(&name)
}

/// Removes hop-by-hop fields from `headers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the field names (most messages carry none of these) instead of a hashed
    // lookup per hop-by-hop name: this runs on every request and every response.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Fields named by Connection (collected first: we cannot mutate while iterating).
    if headers.contains_key(header::CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            if let Ok(s) = v.to_str() {
                for token in s.split(',') {
                    let token = token.trim();
                    if !token.is_empty()
                        && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                    {
                        named.push(name);
                    }
                }
            }
        }
        for n in named {
            headers.remove(n);
        }
        headers.remove(header::CONNECTION);
    }
    // `TE: trailers` is the one value HTTP/2 (gRPC) requires end to end; any other is dropped.
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    for n in ALWAYS_HOP_BY_HOP {
        if headers.contains_key(n) {
            headers.remove(n);
        }
    }
}

/// Appends the client address to `x-forwarded-for`.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let ip = client_ip_value(client);
    let v = match headers.get(&X_FORWARDED_FOR) {
        None => ip,
        Some(prev) => {
            let mut buf = Vec::with_capacity(prev.len() + 2 + ip.len());
            buf.extend_from_slice(prev.as_bytes());
            buf.extend_from_slice(b", ");
            buf.extend_from_slice(ip.as_bytes());
            match HeaderValue::from_maybe_shared(bytes::Bytes::from(buf)) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
    };
    headers.insert(X_FORWARDED_FOR.clone(), v);
}

thread_local! {
    /// The last client address formatted on this thread: a sidecar's clients are almost always
    /// the same one or two addresses, so the `Display` work is done once, not per request.
    static CLIENT_IP: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    /// Upstream address -> URI authority, so the upstream URI is not formatted and re-parsed on
    /// every request. Bounded: cleared when it outgrows [`AUTHORITY_CACHE_MAX`].
    static AUTHORITIES: RefCell<foldhash::HashMap<SocketAddr, Authority>> =
        RefCell::new(foldhash::HashMap::default());
}

/// Entries kept in the per-thread authority cache before it is cleared.
const AUTHORITY_CACHE_MAX: usize = 4096;

fn client_ip_value(client: IpAddr) -> HeaderValue {
    CLIENT_IP.with_borrow_mut(|last| {
        if let Some((ip, v)) = last
            && *ip == client
        {
            return v.clone();
        }
        let v = HeaderValue::from_str(&itoa_ip(client))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((client, v.clone()));
        v
    })
}

/// `upstream` as a URI authority (`10.0.0.1:8080`, `[fd00::1]:8080`), cached per thread.
pub fn authority_for(upstream: SocketAddr) -> Authority {
    AUTHORITIES.with_borrow_mut(|cache| {
        if let Some(a) = cache.get(&upstream) {
            return a.clone();
        }
        let a = Authority::try_from(upstream.to_string().as_str())
            .unwrap_or_else(|_| Authority::from_static("invalid"));
        if cache.len() >= AUTHORITY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(upstream, a.clone());
        a
    })
}

fn itoa_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    }
}

/// Keeps a valid `x-request-id` or sets a new random UUID (v4 form); returns the value.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
    {
        return v.clone();
    }
    let v = new_request_id();
    headers.insert(X_REQUEST_ID.clone(), v.clone());
    v
}

/// A random UUID v4 as a header value (hex-encoded by table, byte by byte, no formatting
/// machinery).
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let r: u128 = rand::random();
    let r = (r & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in r.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0xf)];
        at += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Rewrites the request head `req` for the upstream at `upstream`: absolute URI, hop-by-hop
/// removed, XFF. The caller has made sure of the request id ([`ensure_request_id`]) before, as
/// it logs it.
pub fn prepare_request(
    req: &mut http::request::Parts,
    client: IpAddr,
    upstream: SocketAddr,
) -> Result<(), http::Error> {
    let headers = &mut req.headers;
    strip_hop_by_hop(headers);
    append_forwarded_for(headers, client);
    // Keep the original Host; HTTP/1.0 clients may omit it.
    if !headers.contains_key(header::HOST)
        && let Some(a) = req.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
    }
    let pq = req
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = authority_for(upstream);
    req.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(pq)
        .build()?;
    req.version = http::Version::HTTP_11;
    Ok(())
}

/// Cleans a response for the client.
pub fn prepare_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    #[test]
    fn hop_by_hop_and_connection_listed_fields_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-keep"], "yes");
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn xff_appends_and_request_id_kept_or_made() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        append_forwarded_for(&mut h, "::ffff:10.0.0.2".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(id.to_str().unwrap().as_bytes()[14], b'4');
        assert_eq!(ensure_request_id(&mut h), id);
        assert_ne!(new_request_id(), new_request_id());
        for _ in 0..64 {
            let id = new_request_id();
            let s = id.to_str().unwrap();
            let groups: Vec<&str> = s.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{s}"
            );
            assert!(
                s.bytes()
                    .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_eq!(&s[14..15], "4", "version nibble: {s}");
            assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "variant: {s}");
        }
    }

    #[test]
    fn request_gets_absolute_upstream_uri_and_keeps_host() {
        let (mut req, ()) = Request::get("/a/b?c=1")
            .header("host", "svc.local:9080")
            .body(())
            .unwrap()
            .into_parts();
        prepare_request(
            &mut req,
            "127.0.0.1".parse().unwrap(),
            "10.1.1.1:8080".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(req.uri, "http://10.1.1.1:8080/a/b?c=1");
        assert_eq!(
            authority_for("10.1.1.1:8080".parse().unwrap()),
            "10.1.1.1:8080"
        );
        assert_eq!(
            authority_for("[fd00::1]:80".parse().unwrap()),
            "[fd00::1]:80"
        );
        assert_eq!(
            authority_for("10.1.1.1:8080".parse().unwrap()),
            "10.1.1.1:8080"
        );
        assert_eq!(req.headers["host"], "svc.local:9080");
    }
}
