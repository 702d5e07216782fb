//! The reload loop: fetch from the source every poll (and at once when a watched file changes),
//! compile, swap in atomically, save to the cache; on a bad document or an unreachable source
//! keep the last good table, log and count why, and retry with exponential backoff.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::source::{Fetched, Source};
use super::{ActiveConfig, cache};
use crate::agent::Shared;

/// First retry delay after a failed fetch.
const BACKOFF_START: Duration = Duration::from_millis(250);

/// Installs the cached document at start-up, if there is a good one.
pub fn load_cache(shared: &Shared) {
    let path = &shared.settings.cache;
    match cache::read(path) {
        Ok(None) => {}
        Ok(Some(bytes)) => {
            let version = format!("cache:{}", super::source::content_hash(&bytes));
            match ActiveConfig::compile(
                &bytes,
                &shared.node,
                version,
                format!("cache:{}", path.display()),
            ) {
                Ok(active) => {
                    tracing::info!(cache = %path.display(), "serving the last good document from the cache until the source answers");
                    install(shared, active, None);
                }
                Err(e) => {
                    tracing::warn!(cache = %path.display(), error = %e, "ignoring unusable cache file")
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the cache"),
    }
}

fn install(shared: &Shared, active: ActiveConfig, cache_bytes: Option<&[u8]>) {
    // Saved before the state turns LIVE: once the agent says LIVE, a restart with the source
    // down can come up from this copy.
    if let Some(bytes) = cache_bytes
        && let Err(e) = cache::write(&shared.settings.cache, bytes)
    {
        tracing::warn!(error = %e, "cannot save the last good document");
    }
    tracing::info!(version = %active.version, source = %active.source, "mesh document installed");
    shared.config.store(Some(Arc::new(active)));
    shared.metrics.reload_ok();
    shared.lifecycle.mark_live();
    if let Ok(mut e) = shared.last_error.lock() {
        *e = None;
    }
}

fn record_problem(shared: &Shared, msg: String) {
    shared.lifecycle.set_initializing_reason(msg.clone());
    if let Ok(mut e) = shared.last_error.lock() {
        *e = Some(msg);
    }
}

/// Runs until the task is aborted.
pub async fn run(shared: Arc<Shared>, mut source: Source) {
    let (_watcher, mut changes) = match source.watch_path() {
        Some(p) => watch(p),
        None => (None, mpsc::channel(1).1),
    };
    let interval = shared.settings.poll_interval();
    let mut backoff = Duration::ZERO;
    loop {
        let ok = match source.fetch().await {
            Ok(Fetched::NotModified) => true,
            Ok(Fetched::Document { bytes, version }) => {
                match ActiveConfig::compile(
                    &bytes,
                    &shared.node,
                    version,
                    shared.config_uri.clone(),
                ) {
                    Ok(active) => install(&shared, active, Some(&bytes)),
                    Err(e) => {
                        shared.metrics.reload_rejected();
                        let kept = if shared.config.load().is_some() {
                            "keeping the last good document"
                        } else {
                            "no good document yet"
                        };
                        tracing::error!(source = %shared.config_uri, error = %e, "{kept}");
                        record_problem(&shared, format!("{}: {e}", shared.config_uri));
                    }
                }
                true
            }
            Err(e) => {
                shared.metrics.fetch_failed();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "config source unavailable");
                record_problem(&shared, e.to_string());
                false
            }
        };
        let wait = if ok {
            backoff = Duration::ZERO;
            interval
        } else {
            backoff = (backoff * 2)
                .max(BACKOFF_START)
                .min(interval.max(BACKOFF_START));
            backoff
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(()) = changes.recv() => {
                // Let a burst of writes settle.
                tokio::time::sleep(Duration::from_millis(30)).await;
                while changes.try_recv().is_ok() {}
            }
        }
    }
}

/// Whether a watcher event can mean new content. Opening and reading the file (as every fetch
/// does) and attribute changes cannot: taken as changes, each fetch's own read would start the
/// next fetch, re-reading the document ~20 times a second forever.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::ModifyKind;
    match kind {
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Other => false,
    }
}

/// Watches the directory of `path` (files are often replaced by rename) and signals changes.
fn watch(path: &Path) -> (Option<notify::RecommendedWatcher>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel(1);
    let name = path.file_name().map(|n| n.to_os_string());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let handler = move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && changes_content(&ev.kind)
            && ev
                .paths
                .iter()
                .any(|p| name.is_none() || p.file_name() == name.as_deref())
        {
            let _ = tx.try_send(());
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => (Some(w), rx),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; polling only");
                (None, rx)
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; polling only");
            (None, rx)
        }
    }
}

#[cfg(test)]
mod watch_tests {
    use std::time::Duration;

    /// Reading the watched document (each fetch does) is not a change; writing it, or replacing
    /// it by rename, is.
    #[tokio::test]
    async fn reads_are_not_changes_writes_and_renames_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.yaml");
        std::fs::write(&path, "meshName: m\n").unwrap();
        let (_w, mut rx) = super::watch(&path);
        tokio::time::sleep(Duration::from_millis(200)).await;
        while rx.try_recv().is_ok() {}
        for _ in 0..5 {
            let _ = std::fs::read(&path).unwrap();
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(500), rx.recv())
                .await
                .is_err(),
            "a read was taken for a change"
        );
        std::fs::write(&path, "meshName: m2\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a write is a change");
        tokio::time::sleep(Duration::from_millis(100)).await;
        while rx.try_recv().is_ok() {}
        let tmp = dir.path().join(".mesh.yaml.tmp");
        std::fs::write(&tmp, "meshName: m3\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a rename onto the file is a change");
    }
}
