//! Path normalisation as App Mesh configured Envoy for routes with prefix or path matches
//! (`normalize_path` + `merge_slashes`): runs of `/` become one, `.` and `..` segments are
//! resolved (RFC 3986 §5.2.4, never above the root). The query string is kept as it is. The
//! agent applies it before routing and forwards the normalised path; a path that is already
//! normal is borrowed, not copied.

use std::borrow::Cow;

/// The normalised form of `path_and_query`.
pub fn normalize_path(path_and_query: &str) -> Cow<'_, str> {
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    if !path.starts_with('/') || is_normal(path) {
        return Cow::Borrowed(path_and_query);
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/').skip(1) {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let last = path.rsplit('/').next().unwrap_or("");
    let trailing = matches!(last, "" | "." | "..") && !segments.is_empty();
    let mut out = String::with_capacity(path_and_query.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segments.is_empty() {
        out.push('/');
    }
    out.push_str(query);
    Cow::Owned(out)
}

fn is_normal(path: &str) -> bool {
    !path.contains("//") && path.split('/').all(|s| s != "." && s != "..")
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn normalises_like_envoy() {
        for (input, want) in [
            ("/a/b?x=1", "/a/b?x=1"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a//b/?q=//x", "/a/b/?q=//x"),
            ("/..", "/"),
            ("/", "/"),
            ("*", "*"),
            ("", ""),
            ("/a..b/.c", "/a..b/.c"),
        ] {
            assert_eq!(normalize_path(input), want, "{input}");
        }
        assert!(matches!(
            normalize_path("/already/normal?x"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
