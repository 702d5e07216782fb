//! Compiled request matchers of one route: path (prefix / exact / regex / any), method, scheme,
//! headers (exact, prefix, suffix, regex, range, present; invert) and query parameters. Regexes
//! are compiled here, once, anchored for a full match (Envoy `safe_regex` semantics). The
//! per-request evaluation lives in `router::matcher`.

use http::HeaderName;

use crate::model::{
    HeaderMatchMethod, HttpRouteHeader, HttpRouteMatch, HttpScheme, QueryParameterMatch,
};

/// What a route requires of a request.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    pub path: PathMatch,
    pub method: Option<http::Method>,
    pub scheme: Option<HttpScheme>,
    pub headers: Box<[HeaderMatcher]>,
    pub query: Box<[QueryMatcher]>,
}

/// Path matcher (against the path without the query string).
#[derive(Debug, Clone)]
pub(crate) enum PathMatch {
    /// No path condition.
    Any,
    /// Plain, case-sensitive string prefix.
    Prefix(Box<str>),
    Exact(Box<str>),
    Regex(regex::Regex),
}

/// Which header a header matcher reads: a real header or a pseudo-header.
#[derive(Debug, Clone)]
pub(crate) enum HeaderKey {
    Name(HeaderName),
    Authority,
    Method,
    Path,
    Scheme,
}

/// One header (or gRPC metadata) condition.
#[derive(Debug, Clone)]
pub(crate) struct HeaderMatcher {
    pub key: HeaderKey,
    pub invert: bool,
    pub kind: HeaderMatchKind,
}

/// The header condition proper.
#[derive(Debug, Clone)]
pub(crate) enum HeaderMatchKind {
    Present,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Regex(regex::bytes::Regex),
    /// `start` inclusive, `end` exclusive.
    Range {
        start: i64,
        end: i64,
    },
}

/// One query-parameter condition (`exact: None` = present).
#[derive(Debug, Clone)]
pub(crate) struct QueryMatcher {
    pub name: Box<str>,
    pub exact: Option<Box<str>>,
}

/// Compiles `re` for a full match of a `&str`.
pub(crate) fn compile_regex(re: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("regex does not compile: {e}"))
}

/// Compiles `re` for a full match of header bytes.
pub(crate) fn compile_bytes_regex(re: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| format!("regex does not compile: {e}"))
}

/// The header a header-match name refers to (`:authority`, `:method`, `:path`, `:scheme`
/// are the pseudo-headers; anything else must be a valid header name).
pub(crate) fn header_key(name: &str) -> Result<HeaderKey, String> {
    match name.to_ascii_lowercase().as_str() {
        ":authority" | "host" => Ok(HeaderKey::Authority),
        ":method" => Ok(HeaderKey::Method),
        ":path" => Ok(HeaderKey::Path),
        ":scheme" => Ok(HeaderKey::Scheme),
        lower => HeaderName::from_bytes(lower.as_bytes())
            .map(HeaderKey::Name)
            .map_err(|_| format!("\"{name}\" is not a valid header name")),
    }
}

impl HeaderMatcher {
    pub(crate) fn compile(
        name: &str,
        invert: bool,
        m: Option<&HeaderMatchMethod>,
    ) -> Result<HeaderMatcher, String> {
        let kind = match m {
            None => HeaderMatchKind::Present,
            Some(HeaderMatchMethod::Exact(s)) => HeaderMatchKind::Exact(s.as_bytes().into()),
            Some(HeaderMatchMethod::Prefix(s)) => HeaderMatchKind::Prefix(s.as_bytes().into()),
            Some(HeaderMatchMethod::Suffix(s)) => HeaderMatchKind::Suffix(s.as_bytes().into()),
            Some(HeaderMatchMethod::Regex(s)) => HeaderMatchKind::Regex(compile_bytes_regex(s)?),
            Some(HeaderMatchMethod::Range(r)) => HeaderMatchKind::Range {
                start: r.start,
                end: r.end,
            },
        };
        Ok(HeaderMatcher {
            key: header_key(name)?,
            invert,
            kind,
        })
    }
}

impl Matcher {
    /// Compiles an HTTP / HTTP2 route match.
    pub(crate) fn http(m: &HttpRouteMatch) -> Result<Matcher, String> {
        let path = match (&m.prefix, &m.path) {
            (Some(p), _) => PathMatch::Prefix(p.as_str().into()),
            (None, Some(p)) => match (&p.exact, &p.regex) {
                (Some(e), _) => PathMatch::Exact(e.as_str().into()),
                (None, Some(re)) => PathMatch::Regex(compile_regex(re)?),
                (None, None) => PathMatch::Any,
            },
            (None, None) => PathMatch::Any,
        };
        let headers = m
            .headers
            .iter()
            .map(|h: &HttpRouteHeader| {
                HeaderMatcher::compile(&h.name, h.invert, h.header_match.as_ref())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let query = m
            .query_parameters
            .iter()
            .map(|q| QueryMatcher {
                name: q.name.as_str().into(),
                exact: q
                    .parameter_match
                    .as_ref()
                    .map(|QueryParameterMatch { exact }| exact.as_str().into()),
            })
            .collect();
        Ok(Matcher {
            path,
            method: m.method.map(|m| m.to_http()),
            scheme: m.scheme,
            headers: headers.into(),
            query,
        })
    }

    /// Compiles a gRPC route match: the service and method become a path condition on
    /// `/<service>/<method>`, metadata become header conditions.
    pub(crate) fn grpc(m: &crate::model::GrpcRouteMatch) -> Result<Matcher, String> {
        let path = match (&m.service_name, &m.method_name) {
            (Some(s), Some(me)) => PathMatch::Exact(format!("/{s}/{me}").into()),
            (Some(s), None) => PathMatch::Prefix(format!("/{s}/").into()),
            (None, _) => PathMatch::Any,
        };
        let headers = m
            .metadata
            .iter()
            .map(|md| HeaderMatcher::compile(&md.name, md.invert, md.metadata_match.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Matcher {
            path,
            method: None,
            scheme: None,
            headers: headers.into(),
            query: Box::new([]),
        })
    }

    /// A matcher that matches everything (TCP routes, virtual-node providers).
    pub(crate) fn any() -> Matcher {
        Matcher {
            path: PathMatch::Any,
            method: None,
            scheme: None,
            headers: Box::new([]),
            query: Box::new([]),
        }
    }

    /// Number of conditions besides the path (specificity tie-break).
    pub(crate) fn condition_count(&self) -> usize {
        self.headers.len()
            + self.query.len()
            + usize::from(self.method.is_some())
            + usize::from(self.scheme.is_some())
    }
}
