//! Per-request routing over a compiled [`RouteTable`], App Mesh semantics: the virtual service
//! is the backend whose name equals the request authority (with or without `:port`, host
//! compared ASCII-case-insensitively); its provider router's listener is chosen by port; the
//! first route in App Mesh order that matches wins; a weighted target is then picked. A
//! provider node is reached directly. TCP is routed by destination port alone. Nothing here
//! allocates: hosts are lowercased into a stack buffer, regexes are precompiled, the query
//! string is scanned in place.

mod authority;
mod lookup;
mod matcher;
mod normalize;
mod weighted;

pub(crate) use authority::lookup as lookup_host;
pub use authority::split_authority;
pub use normalize::normalize_path;

use crate::table::{CompiledRoute, Protocol, RouteTable, WeightedTarget};

/// What the router needs to know about an HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequestView<'a> {
    /// Host header or `:authority`, possibly with `:port`.
    pub authority: &'a str,
    /// `SO_ORIGINAL_DST` port; `None` in explicit mode (then the port from the authority when
    /// it names a listener, else the router's first listener).
    pub dest_port: Option<u16>,
    pub method: &'a http::Method,
    /// `"http"` or `"https"`.
    pub scheme: &'a str,
    /// Request target; App Mesh normalised it first ([`normalize_path`]), which the caller
    /// does so that what is matched is also what is forwarded.
    pub path_and_query: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// The outcome of routing an HTTP request.
#[derive(Debug, Clone, Copy)]
pub enum HttpRouting<'t> {
    Matched(RouteMatch<'t>),
    /// The authority is one of this node's backends but no route matched (or the service has
    /// no provider): answer 404.
    NoRoute {
        virtual_service: &'t str,
    },
    /// Not a backend of this node: the egress filter decides (`*.amazonaws.com` is always
    /// allowed: [`RouteTable::is_always_allowed`]).
    UnknownDestination,
}

/// A matched route.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'t> {
    pub virtual_service: &'t str,
    pub route: &'t CompiledRoute,
}

impl<'t> RouteMatch<'t> {
    /// Weighted choice; `r` is any uniformly random u32. Weight-0 targets are never picked.
    pub fn pick(&self, r: u32) -> &'t WeightedTarget {
        weighted::pick(self.route, r)
    }
}

/// The outcome of routing a TCP connection.
#[derive(Debug, Clone, Copy)]
pub enum TcpRouting<'t> {
    Matched(RouteMatch<'t>),
    UnknownDestination,
}

impl RouteTable {
    /// Routes one HTTP request (egress side).
    pub fn route_http(&self, req: &HttpRequestView<'_>) -> HttpRouting<'_> {
        let (host, authority_port) = split_authority(req.authority);
        let Some(si) = authority::lookup(&self.by_host, host) else {
            return HttpRouting::UnknownDestination;
        };
        let service = &self.services[si as usize];
        let virtual_service = &*service.name;
        let Some(pi) = service.provider else {
            return HttpRouting::NoRoute { virtual_service };
        };
        let ports = &self.providers[pi as usize].ports;
        let port = match req.dest_port {
            Some(p) => match ports.iter().find(|pp| pp.port == p) {
                Some(pp) => pp,
                None => return HttpRouting::UnknownDestination,
            },
            None => match authority_port
                .and_then(|p| ports.iter().find(|pp| pp.port == p))
                .or_else(|| ports.first())
            {
                Some(pp) => pp,
                None => return HttpRouting::NoRoute { virtual_service },
            },
        };
        if port.protocol == Protocol::Tcp {
            return HttpRouting::NoRoute { virtual_service };
        }
        match lookup::first_match(&port.index, req) {
            Some(route) => HttpRouting::Matched(RouteMatch {
                virtual_service,
                route,
            }),
            None => HttpRouting::NoRoute { virtual_service },
        }
    }

    /// Routes a TCP connection by its destination port: the first backend with a TCP listener
    /// on that port, its first route in App Mesh order.
    pub fn route_tcp(&self, dest_port: u16) -> TcpRouting<'_> {
        let Ok(i) = self.tcp.binary_search_by_key(&dest_port, |t| t.0) else {
            return TcpRouting::UnknownDestination;
        };
        let (_, si, pi, ppi) = self.tcp[i];
        let service = &self.services[si as usize];
        match self.providers[pi as usize].ports[ppi as usize]
            .index
            .routes
            .first()
        {
            Some(route) => TcpRouting::Matched(RouteMatch {
                virtual_service: &service.name,
                route,
            }),
            None => TcpRouting::UnknownDestination,
        }
    }

    /// True for destinations App Mesh always lets out, whatever the egress filter:
    /// `*.amazonaws.com` (authority with or without port, any case, trailing dot allowed).
    pub fn is_always_allowed(host: &str) -> bool {
        authority::is_amazonaws(split_authority(host).0)
    }
}
