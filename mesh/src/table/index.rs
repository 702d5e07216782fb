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
    /// Prefix trie; node 0 is the root (the empty prefix). Nodes point into `edges` and
    /// `ranks` (one flat array each, for locality).
    pub trie: Box<[TrieNode]>,
    pub edges: Box<[(u8, u32)]>,
    pub ranks: Box<[u32]>,
    /// Ranks of routes checked for every request.
    pub always: Box<[u32]>,
}

/// One trie node: its edges (sorted by byte) and the ranks of routes whose prefix ends here,
/// as ranges of `RouteIndex::edges` / `RouteIndex::ranks`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TrieNode {
    edges_start: u32,
    edges_len: u32,
    ranks_start: u32,
    ranks_len: u32,
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
        let mut flat_edges = Vec::new();
        let mut flat_ranks = Vec::new();
        let trie = edges
            .into_iter()
            .zip(lists)
            .map(|(e, l)| {
                let node = TrieNode {
                    edges_start: len32(&flat_edges),
                    edges_len: len32(&e),
                    ranks_start: len32(&flat_ranks),
                    ranks_len: len32(&l),
                };
                flat_edges.extend(e);
                flat_ranks.extend(l);
                node
            })
            .collect();
        RouteIndex {
            routes: routes.into(),
            exact: exact.into_iter().map(|(k, v)| (k, v.into())).collect(),
            trie,
            edges: flat_edges.into(),
            ranks: flat_ranks.into(),
            always: always.into(),
        }
    }
}

impl RouteIndex {
    /// The edges of trie node `n`.
    pub(crate) fn edges_of(&self, n: &TrieNode) -> &[(u8, u32)] {
        let start = n.edges_start as usize;
        self.edges
            .get(start..start + n.edges_len as usize)
            .unwrap_or(&[])
    }

    /// The ranks of the routes whose prefix ends at trie node `n`.
    pub(crate) fn ranks_of(&self, n: &TrieNode) -> &[u32] {
        let start = n.ranks_start as usize;
        self.ranks
            .get(start..start + n.ranks_len as usize)
            .unwrap_or(&[])
    }
}

fn len32<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
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
        let slash = idx.edges_of(&idx.trie[0])[0];
        assert_eq!(slash.0, b'/');
        let a = &idx.trie[slash.1 as usize];
        let a_node = &idx.trie[idx.edges_of(a)[0].1 as usize];
        assert_eq!(idx.ranks_of(a_node), &[0, 3]);
        let ab = &idx.trie[idx.edges_of(a_node)[0].1 as usize];
        assert_eq!(idx.ranks_of(ab), &[4]);
    }
}
