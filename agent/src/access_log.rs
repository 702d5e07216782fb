//! Access log: one JSON line per proxied request, on stdout or appended to the virtual node's
//! `logging.accessLog.file.path` (`/dev/stdout` also works there).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One request's record.
#[derive(Serialize, Debug)]
pub struct Entry<'a> {
    /// Start time, RFC 3339-ish seconds since the epoch with millis.
    pub start_time: f64,
    /// `ingress` or `egress`.
    pub direction: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Host / authority.
    pub authority: &'a str,
    /// Response status.
    pub code: u16,
    /// Request body bytes (from Content-Length when known).
    pub bytes_received: u64,
    /// Response body bytes (from Content-Length when known).
    pub bytes_sent: u64,
    /// Milliseconds until the response head.
    pub duration_ms: f64,
    /// Upstream address.
    pub upstream: &'a str,
    /// Virtual service.
    pub virtual_service: &'a str,
    /// Route name.
    pub route: &'a str,
    /// Target virtual node.
    pub target_node: &'a str,
    /// x-request-id.
    pub request_id: &'a str,
    /// Envoy-style response flag (`NR` no route, `UF` upstream connect failure, `UT` timeout…).
    pub flags: &'a str,
}

/// The writer: lines are serialized on the request's task and handed to one background
/// thread that writes them through a buffer (flushed whenever the queue runs empty), so a
/// request never waits on stdout or the disk.
pub struct AccessLog {
    tx: Option<mpsc::SyncSender<Line>>,
}

/// One queued line and the file it goes to (`None`: stdout).
type Line = (Option<Arc<str>>, Vec<u8>);

/// Lines queued beyond this are dropped rather than slowing traffic down.
const QUEUE: usize = 65_536;

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog::new()
    }
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn new() -> AccessLog {
        let (tx, rx) = mpsc::sync_channel::<Line>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the access-log thread; access log off");
            return AccessLog { tx: None };
        }
        AccessLog { tx: Some(tx) }
    }

    /// Queues `entry` for `path` (when given) or stdout.
    pub fn write(&self, path: Option<&Arc<str>>, entry: &Entry<'_>) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        if let Some(tx) = &self.tx {
            let _ = tx.try_send((path.cloned(), line));
        }
    }
}

fn writer(rx: mpsc::Receiver<Line>) {
    let mut stdout = BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let mut file: Option<(Arc<str>, BufWriter<File>)> = None;
    let mut next = rx.recv().ok();
    while let Some((path, line)) = next.take() {
        match path.as_deref() {
            None | Some("/dev/stdout") => {
                let _ = stdout.write_all(&line);
            }
            Some(p) => {
                if file.as_ref().map(|(q, _)| &**q) != Some(p) {
                    if let Some((_, mut f)) = file.take() {
                        let _ = f.flush();
                    }
                    match OpenOptions::new().create(true).append(true).open(p) {
                        Ok(f) => file = Some((Arc::from(p), BufWriter::new(f))),
                        Err(e) => {
                            tracing::warn!(path = p, error = %e, "cannot open access log; using stdout");
                        }
                    }
                }
                match file.as_mut() {
                    Some((_, f)) => {
                        let _ = f.write_all(&line);
                    }
                    None => {
                        let _ = stdout.write_all(&line);
                    }
                }
            }
        }
        next = match rx.try_recv() {
            Ok(x) => Some(x),
            Err(_) => {
                let _ = stdout.flush();
                if let Some((_, f)) = file.as_mut() {
                    let _ = f.flush();
                }
                rx.recv().ok()
            }
        };
    }
}

/// Seconds since the epoch of `t`.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
