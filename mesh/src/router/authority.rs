//! Authority handling without allocation: split `host[:port]` (IPv6 literals in brackets),
//! look a host up ASCII-case-insensitively through a lowercase stack buffer, and recognise
//! `*.amazonaws.com`.

use std::collections::HashMap;

/// Longest host name looked up (DNS names are at most 253 characters).
const MAX_HOST: usize = 255;

/// Splits an authority into host and port (`None` when absent or not a number). A trailing
/// dot on the host is dropped.
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    let authority = authority.trim_ascii();
    let bytes = authority.as_bytes();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':').and_then(parse_port)),
            None => (authority, None),
        }
    } else {
        match bytes.iter().rposition(|&b| b == b':') {
            Some(i) if !bytes[..i].contains(&b':') => {
                (&authority[..i], parse_port(&authority[i + 1..]))
            }
            _ => (authority, None),
        }
    };
    (host.strip_suffix('.').unwrap_or(host), port)
}

/// A decimal port 0–65535 (at most 5 digits, nothing else).
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    let mut n: u32 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    u16::try_from(n).ok()
}

/// Looks `host` up in a map keyed by lowercase names, without allocating.
pub(crate) fn lookup<S: std::hash::BuildHasher>(
    map: &HashMap<Box<str>, u32, S>,
    host: &str,
) -> Option<u32> {
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return map.get(host).copied();
    }
    let bytes = host.as_bytes();
    if bytes.len() > MAX_HOST {
        return None;
    }
    let mut buf = [0u8; MAX_HOST];
    let lower = &mut buf[..bytes.len()];
    lower.copy_from_slice(bytes);
    lower.make_ascii_lowercase();
    // ASCII lowercasing keeps UTF-8 valid.
    let lower = std::str::from_utf8(lower).ok()?;
    map.get(lower).copied()
}

/// `*.amazonaws.com`, compared ASCII-case-insensitively.
pub(super) fn is_amazonaws(host: &str) -> bool {
    const SUFFIX: &[u8] = b".amazonaws.com";
    let h = host.as_bytes();
    h.len() > SUFFIX.len() && h[h.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_authorities() {
        assert_eq!(split_authority("api.local"), ("api.local", None));
        assert_eq!(split_authority("api.local:8080"), ("api.local", Some(8080)));
        assert_eq!(split_authority("api.local.:80"), ("api.local", Some(80)));
        assert_eq!(split_authority("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_authority("[::1]"), ("::1", None));
        assert_eq!(split_authority("::1"), ("::1", None));
        assert_eq!(split_authority("api:notaport"), ("api", None));
        assert_eq!(split_authority(" api.local "), ("api.local", None));
        assert_eq!(split_authority("api:65535"), ("api", Some(65535)));
        assert_eq!(split_authority("api:65536"), ("api", None));
        assert_eq!(split_authority("api:+80"), ("api", None));
        assert_eq!(split_authority("api:"), ("api", None));
    }

    #[test]
    fn looks_up_case_insensitively() {
        let map: HashMap<Box<str>, u32> = [("api.local".into(), 7)].into();
        assert_eq!(lookup(&map, "api.local"), Some(7));
        assert_eq!(lookup(&map, "API.Local"), Some(7));
        assert_eq!(lookup(&map, "api.locals"), None);
        let long = "A".repeat(300);
        assert_eq!(lookup(&map, &long), None);
    }

    #[test]
    fn amazonaws_suffix() {
        assert!(is_amazonaws("s3.amazonaws.com"));
        assert!(is_amazonaws("ECS.us-east-1.AMAZONAWS.COM"));
        assert!(!is_amazonaws(".amazonaws.com"));
        assert!(!is_amazonaws("amazonaws.com"));
        assert!(!is_amazonaws("notamazonaws.com"));
    }
}
