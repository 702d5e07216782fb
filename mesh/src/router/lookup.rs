//! First match in App Mesh order over a [`RouteIndex`]: candidates come from the exact-path
//! map, the prefix trie (walked along the request path) and the always-checked list; each list
//! is rank-sorted, so every list is scanned only until its first full match or until it passes
//! the best rank found so far.

use crate::table::CompiledRoute;
use crate::table::index::RouteIndex;

use super::HttpRequestView;
use super::matcher::{Request, route_matches};

pub(super) fn first_match<'t>(
    index: &'t RouteIndex,
    req: &HttpRequestView<'_>,
) -> Option<&'t CompiledRoute> {
    let (path, query) = match req.path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path_and_query, None),
    };
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let request = Request {
        view: req,
        path,
        query,
    };
    let mut best: u32 = u32::MAX;
    let scan = |ranks: &[u32], best: &mut u32| {
        for &rank in ranks {
            if rank >= *best {
                break;
            }
            if let Some(route) = index.routes.get(rank as usize)
                && route_matches(route, &request)
            {
                *best = rank;
                break;
            }
        }
    };
    if !index.exact.is_empty()
        && let Some(ranks) = index.exact.get(path)
    {
        scan(ranks, &mut best);
    }
    if let Some(root) = index.trie.first() {
        scan(index.ranks_of(root), &mut best);
        let mut node = root;
        for b in path.bytes() {
            let edges = index.edges_of(node);
            let Ok(i) = edges.binary_search_by_key(&b, |e| e.0) else {
                break;
            };
            let Some(next) = index.trie.get(edges[i].1 as usize) else {
                break;
            };
            node = next;
            let ranks = index.ranks_of(node);
            if !ranks.is_empty() {
                scan(ranks, &mut best);
            }
        }
    }
    scan(&index.always, &mut best);
    index.routes.get(best as usize)
}
