//! The per-listener route index. Routes are stored in App Mesh order (position = rank), and
//! indexed by their path condition so that a request only looks at routes whose path can
//! match: an exact-path hash map, a byte trie of prefixes (walked along the request path), and
//! a short list of routes that must always be checked (regex path or no path condition).
//! Each list is sorted by rank; the lookup (`router::lookup`) takes the lowest-ranked route
//! that fully matches across the lists, so the result is the first match in App Mesh order
//! while the work depends on the request path, not on the number of routes.

use std::collections::HashMap;

use super::matcher::PathMatch;
use super::route::CompiledRoute;

/// Routes of one router listener (or provider-node listener), ready for lookup.
#[derive(Debug, Clone)]
pub(crate) struct RouteIndex {
    /// In App Mesh order.
    pub routes: Box<[CompiledRoute]>,
    /// Exact path → ranks.
    pub exact: HashMap<Box<str>, Box<[u32]>, super::FastHash>,
    /// Prefix trie; node 0 is the root (the empty prefix).
    pub trie: Box<[TrieNode]>,
    /// Ranks of routes checked for every request.
    pub always: Box<[u32]>,
}

/// One trie node: edges sorted by byte, and the ranks of routes whose prefix ends here.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrieNode {
    pub edges: Box<[(u8, u32)]>,
    pub routes: Box<[u32]>,
}

impl RouteIndex {
    /// Builds the index over `routes`, which must already be in App Mesh order.
    pub(crate) fn build(routes: Vec<CompiledRoute>) -> RouteIndex {
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut always: Vec<u32> = Vec::new();
        let mut edges: Vec<Vec<(u8, u32)>> = vec![Vec::new()];
        let mut lists: Vec<Vec<u32>> = vec![Vec::new()];
        for (rank, r) in routes.iter().enumerate() {
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            match &r.matcher.path {
                PathMatch::Exact(p) => exact.entry(p.clone()).or_default().push(rank),
                PathMatch::Prefix(p) => {
                    let mut node = 0usize;
                    for &b in p.as_bytes() {
                        node = match edges[node].binary_search_by_key(&b, |e| e.0) {
                            Ok(i) => edges[node][i].1 as usize,
                            Err(i) => {
                                let next = edges.len();
                                edges.push(Vec::new());
                                lists.push(Vec::new());
                                edges[node].insert(i, (b, u32::try_from(next).unwrap_or(u32::MAX)));
                                next
                            }
                        };
                    }
                    lists[node].push(rank);
                }
                PathMatch::Regex(_) | PathMatch::Any => always.push(rank),
            }
        }
        let trie = edges
            .into_iter()
            .zip(lists)
            .map(|(e, l)| TrieNode {
                edges: e.into(),
                routes: l.into(),
            })
            .collect();
        RouteIndex {
            routes: routes.into(),
            exact: exact.into_iter().map(|(k, v)| (k, v.into())).collect(),
            trie,
            always: always.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::matcher::Matcher;
    use crate::table::route::provider_node_route;
    use crate::table::{RouteKind, RouteTimeouts};

    fn route(path: PathMatch) -> CompiledRoute {
        let mut r = provider_node_route(
            "n",
            0,
            80,
            RouteKind::Http,
            RouteTimeouts {
                per_request: None,
                idle: None,
            },
        );
        r.matcher = Matcher {
            path,
            ..Matcher::any()
        };
        r
    }

    #[test]
    fn routes_land_in_their_lists_in_rank_order() {
        let idx = RouteIndex::build(vec![
            route(PathMatch::Prefix("/a".into())),
            route(PathMatch::Exact("/a/b".into())),
            route(PathMatch::Any),
            route(PathMatch::Prefix("/a".into())),
            route(PathMatch::Prefix("/ab".into())),
        ]);
        assert_eq!(&*idx.always, &[2]);
        assert_eq!(&*idx.exact[&Box::<str>::from("/a/b")], &[1]);
        // root → '/' → 'a' holds ranks 0 and 3; → 'b' holds rank 4.
        let slash = idx.trie[0].edges[0];
        assert_eq!(slash.0, b'/');
        let a = &idx.trie[slash.1 as usize];
        let a_node = &idx.trie[a.edges[0].1 as usize];
        assert_eq!(&*a_node.routes, &[0, 3]);
        let ab = &idx.trie[a_node.edges[0].1 as usize];
        assert_eq!(&*ab.routes, &[4]);
    }
}
