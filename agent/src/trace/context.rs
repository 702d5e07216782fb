//! Trace context on the wire: the ids, and the two header forms a hop reads and writes.
//!
//! - AWS X-Ray `X-Amzn-Trace-Id: Root=1-<8 hex epoch seconds>-<24 hex>;Parent=<16 hex>;Sampled=0|1`
//!   (fields in any order, other fields ignored; `Sampled=?` or none leaves the decision to us);
//! - W3C Trace Context `traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`
//!   (bit 0 of the flags: sampled); `tracestate` is vendor data passed through untouched.
//!
//! Both carry the same 128-bit trace id: the X-Ray root's 8 + 24 hex digits are the W3C id's 32
//! (the layout AWS's own OpenTelemetry propagators use). Parsing never allocates; writing fills
//! a stack buffer and allocates only the header value itself.

use http::HeaderValue;
use http::header::{HeaderMap, HeaderName};

/// `X-Amzn-Trace-Id`.
pub static X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");
/// W3C `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C `tracestate` (passed through).
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A 128-bit trace id (never all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span id (never all zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
    }
    Some(out)
}

impl TraceId {
    /// A new id: the first 4 bytes are the current epoch seconds (X-Ray requires that, W3C does
    /// not mind), the other 12 random.
    pub fn generate(epoch_secs: u32) -> TraceId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&epoch_secs.to_be_bytes());
        let r: [u8; 12] = rand::random();
        id[4..].copy_from_slice(&r);
        TraceId(id)
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(self) -> String {
        let mut buf = [0u8; 32];
        hex_into(&self.0, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The X-Ray form `1-<8 hex>-<24 hex>`.
    pub fn to_xray(self) -> String {
        let mut buf = [0u8; 35];
        self.write_xray(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn write_xray(self, out: &mut [u8]) {
        out[0] = b'1';
        out[1] = b'-';
        hex_into(&self.0[..4], &mut out[2..10]);
        out[10] = b'-';
        hex_into(&self.0[4..], &mut out[11..35]);
    }
}

impl SpanId {
    /// A new random, non-zero id.
    pub fn generate() -> SpanId {
        loop {
            let r: u64 = rand::random();
            if r != 0 {
                return SpanId(r.to_be_bytes());
            }
        }
    }

    /// 16 lowercase hex digits.
    pub fn to_hex(self) -> String {
        let mut buf = [0u8; 16];
        hex_into(&self.0, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// What a request brought: its trace, the caller's span, and the caller's sampling decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// The caller's span (the parent of this hop's span), when it said.
    pub parent: Option<SpanId>,
    /// The caller's decision: `Some(true)` sampled, `Some(false)` not, `None` left to us.
    pub sampled: Option<bool>,
}

/// Parses `traceparent` (version 00, or a later version read as 00 as the spec says); `None`
/// when absent or invalid (an all-zero id is invalid).
pub fn parse_traceparent(v: &[u8]) -> Option<Incoming> {
    // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2 = 55 bytes.
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let parent = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some(Incoming {
        trace_id: TraceId(trace_id),
        parent: Some(SpanId(parent)),
        sampled: Some(flags & 1 == 1),
    })
}

/// Parses `X-Amzn-Trace-Id`; `None` when there is no valid `Root`.
pub fn parse_xray(v: &[u8]) -> Option<Incoming> {
    let mut root = None;
    let mut parent = None;
    let mut sampled = None;
    for field in v.split(|b| *b == b';') {
        let field = field.trim_ascii();
        let Some(eq) = field.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (key, value) = (&field[..eq], field[eq + 1..].trim_ascii());
        match key.trim_ascii() {
            b"Root" => {
                // 1-<8 hex>-<24 hex>
                if value.len() != 35 || &value[..2] != b"1-" || value[10] != b'-' {
                    return None;
                }
                let epoch = unhex::<4>(&value[2..10])?;
                let rest = unhex::<12>(&value[11..35])?;
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&epoch);
                id[4..].copy_from_slice(&rest);
                root = Some(TraceId(id));
            }
            b"Parent" => parent = unhex::<8>(value).filter(|p| *p != [0; 8]).map(SpanId),
            b"Sampled" => {
                sampled = match value {
                    b"1" => Some(true),
                    b"0" => Some(false),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    let trace_id = root.filter(|r| r.0 != [0; 16])?;
    Some(Incoming {
        trace_id,
        parent,
        sampled,
    })
}

/// The trace context of a request's headers: `traceparent` when valid, else
/// `X-Amzn-Trace-Id`; `None` when neither is there (a new trace starts).
pub fn extract(headers: &HeaderMap) -> Option<Incoming> {
    headers
        .get(&TRACEPARENT)
        .and_then(|v| parse_traceparent(v.as_bytes()))
        .or_else(|| {
            headers
                .get(&X_AMZN_TRACE_ID)
                .and_then(|v| parse_xray(v.as_bytes()))
        })
}

/// `X-Amzn-Trace-Id` naming `span` as the parent of the next hop.
pub fn xray_header(trace_id: TraceId, span: SpanId, sampled: bool) -> HeaderValue {
    // Root=<35>;Parent=<16>;Sampled=<1>
    let mut buf = [0u8; 5 + 35 + 8 + 16 + 9 + 1];
    buf[..5].copy_from_slice(b"Root=");
    trace_id.write_xray(&mut buf[5..40]);
    buf[40..48].copy_from_slice(b";Parent=");
    hex_into(&span.0, &mut buf[48..64]);
    buf[64..73].copy_from_slice(b";Sampled=");
    buf[73] = if sampled { b'1' } else { b'0' };
    header_value(&buf)
}

/// `traceparent` naming `span` as the parent of the next hop.
pub fn traceparent_header(trace_id: TraceId, span: SpanId, sampled: bool) -> HeaderValue {
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&trace_id.0, &mut buf[3..35]);
    hex_into(&span.0, &mut buf[36..52]);
    buf[54] = if sampled { b'1' } else { b'0' };
    header_value(&buf)
}

fn header_value(ascii: &[u8]) -> HeaderValue {
    // Only hex digits and ASCII punctuation were written: always a valid value.
    HeaderValue::from_bytes(ascii).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Writes both headers for the next hop (replacing what came in; `tracestate` stays).
pub fn inject(headers: &mut HeaderMap, trace_id: TraceId, span: SpanId, sampled: bool) {
    headers.insert(
        X_AMZN_TRACE_ID.clone(),
        xray_header(trace_id, span, sampled),
    );
    headers.insert(
        TRACEPARENT.clone(),
        traceparent_header(trace_id, span, sampled),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xray_header_parses_in_any_order_and_round_trips() {
        let i = parse_xray(
            b"Sampled=1;Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Lineage=a:1",
        )
        .unwrap();
        assert_eq!(i.trace_id.to_xray(), "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(i.parent.unwrap().to_hex(), "53995c3f42cd8ad8");
        assert_eq!(i.sampled, Some(true));
        let v = xray_header(i.trace_id, i.parent.unwrap(), false);
        assert_eq!(
            v,
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
        );
        assert_eq!(
            parse_xray(b"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=?")
                .unwrap()
                .sampled,
            None
        );
        assert_eq!(
            parse_xray(b"Root=1-5759e988-bd862e3fe1be46a994272793")
                .unwrap()
                .parent,
            None
        );
        for bad in [
            &b""[..],
            b"Parent=53995c3f42cd8ad8",
            b"Root=2-5759e988-bd862e3fe1be46a994272793",
            b"Root=1-5759e988-bd862e3fe1be46a99427279",
            b"Root=1-5759e98g-bd862e3fe1be46a994272793",
            b"Root=1-00000000-000000000000000000000000",
        ] {
            assert_eq!(parse_xray(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn traceparent_parses_and_round_trips_with_the_same_trace_id() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let i = parse_traceparent(tp).unwrap();
        assert_eq!(i.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(i.sampled, Some(true));
        let span = SpanId([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            traceparent_header(i.trace_id, span, true),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
        // The same trace in X-Ray form.
        assert_eq!(
            xray_header(i.trace_id, span, true),
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=0102030405060708;Sampled=1"
        );
        assert_eq!(
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled,
            Some(false)
        );
        // A future version with more fields is read as 00.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn extract_prefers_traceparent_and_falls_back_to_xray() {
        let mut h = HeaderMap::new();
        assert_eq!(extract(&h), None);
        h.insert(
            X_AMZN_TRACE_ID.clone(),
            HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"),
        );
        assert_eq!(
            extract(&h).unwrap().trace_id.to_xray(),
            "1-5759e988-bd862e3fe1be46a994272793"
        );
        h.insert(
            TRACEPARENT.clone(),
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            extract(&h).unwrap().trace_id.to_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        h.insert(TRACEPARENT.clone(), HeaderValue::from_static("broken"));
        assert_eq!(extract(&h).unwrap().sampled, Some(false));
    }

    #[test]
    fn generated_ids_are_valid_in_both_forms() {
        let t = TraceId::generate(0x5759_e988);
        assert!(t.to_xray().starts_with("1-5759e988-"));
        let s = SpanId::generate();
        assert_ne!(s.0, [0; 8]);
        let mut h = HeaderMap::new();
        inject(&mut h, t, s, true);
        let a = parse_xray(h[&X_AMZN_TRACE_ID].as_bytes()).unwrap();
        let b = parse_traceparent(h[&TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.parent, Some(s));
    }
}
