//! Evaluates a route's compiled conditions against one request: method, scheme, path regex
//! (exact and prefix paths were already satisfied by the index), headers with Envoy semantics
//! (several values joined by `,`; a missing header only satisfies an inverted presence match;
//! ranges parse the value as an integer, start inclusive, end exclusive) and query parameters
//! (first occurrence; no `match` = present).

use crate::table::CompiledRoute;
use crate::table::matcher::{HeaderKey, HeaderMatchKind, HeaderMatcher, PathMatch, QueryMatcher};

use super::HttpRequestView;

/// Longest joined multi-value header we evaluate (a stack buffer; longer never matches).
const JOIN_BUF: usize = 4096;

pub(super) struct Request<'a, 'r> {
    pub view: &'r HttpRequestView<'a>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

pub(super) fn route_matches(route: &CompiledRoute, req: &Request<'_, '_>) -> bool {
    let m = &route.matcher;
    if let Some(method) = &m.method
        && method != req.view.method
    {
        return false;
    }
    if let Some(scheme) = m.scheme {
        let want = match scheme {
            crate::model::HttpScheme::Http => "http",
            crate::model::HttpScheme::Https => "https",
        };
        if !req.view.scheme.eq_ignore_ascii_case(want) {
            return false;
        }
    }
    if let PathMatch::Regex(re) = &m.path
        && !re.is_match(req.path)
    {
        return false;
    }
    m.headers.iter().all(|h| header_matches(h, req))
        && m.query.iter().all(|q| query_matches(q, req.query))
}

fn header_matches(h: &HeaderMatcher, req: &Request<'_, '_>) -> bool {
    let v = req.view;
    match &h.key {
        HeaderKey::Authority => value_result(h, Some(v.authority.as_bytes())),
        HeaderKey::Method => value_result(h, Some(v.method.as_str().as_bytes())),
        HeaderKey::Path => value_result(h, Some(v.path_and_query.as_bytes())),
        HeaderKey::Scheme => value_result(h, Some(v.scheme.as_bytes())),
        HeaderKey::Name(name) => {
            let mut values = v.headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return value_result(h, None);
            };
            let Some(second) = values.next() else {
                return value_result(h, Some(first.as_bytes()));
            };
            let mut buf = [0u8; JOIN_BUF];
            let mut len = 0usize;
            for part in [first, second].into_iter().chain(values) {
                let bytes = part.as_bytes();
                let need = bytes.len() + usize::from(len > 0);
                if len + need > JOIN_BUF {
                    return h.invert;
                }
                if len > 0 {
                    buf[len] = b',';
                    len += 1;
                }
                buf[len..len + bytes.len()].copy_from_slice(bytes);
                len += bytes.len();
            }
            value_result(h, Some(&buf[..len]))
        }
    }
}

/// The match result for a header value (`None` = header absent), `invert` applied.
fn value_result(h: &HeaderMatcher, value: Option<&[u8]>) -> bool {
    let Some(value) = value else {
        // Envoy: an absent header matches only an inverted presence match.
        return h.invert && matches!(h.kind, HeaderMatchKind::Present);
    };
    let hit = match &h.kind {
        HeaderMatchKind::Present => true,
        HeaderMatchKind::Exact(e) => value == &**e,
        HeaderMatchKind::Prefix(p) => value.starts_with(p),
        HeaderMatchKind::Suffix(s) => value.ends_with(s),
        HeaderMatchKind::Regex(re) => re.is_match(value),
        HeaderMatchKind::Range { start, end } => {
            parse_i64(value).is_some_and(|n| n >= *start && n < *end)
        }
    };
    hit != h.invert
}

fn parse_i64(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn query_matches(q: &QueryMatcher, query: Option<&str>) -> bool {
    let Some(query) = query else { return false };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == &*q.name {
            return match &q.exact {
                None => true,
                Some(e) => value == &**e,
            };
        }
    }
    false
}
