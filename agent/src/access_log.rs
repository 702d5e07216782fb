//! Access log: one JSON line per proxied request, on stdout or appended to the virtual node's
//! `logging.accessLog.file.path` (`/dev/stdout` also works there).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;
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

/// The writer.
#[derive(Default)]
pub struct AccessLog {
    file: Mutex<Option<(String, File)>>,
}

impl AccessLog {
    /// Writes `entry` to `path` (when given) or stdout.
    pub fn write(&self, path: Option<&str>, entry: &Entry<'_>) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        match path {
            None | Some("/dev/stdout") => {
                let _ = std::io::stdout().lock().write_all(&line);
            }
            Some(p) => {
                let Ok(mut guard) = self.file.lock() else {
                    return;
                };
                if guard.as_ref().map(|(q, _)| q.as_str()) != Some(p) {
                    match OpenOptions::new().create(true).append(true).open(p) {
                        Ok(f) => *guard = Some((p.to_string(), f)),
                        Err(e) => {
                            tracing::warn!(path = p, error = %e, "cannot open access log; using stdout");
                            let _ = std::io::stdout().lock().write_all(&line);
                            return;
                        }
                    }
                }
                if let Some((_, f)) = guard.as_mut() {
                    let _ = f.write_all(&line);
                }
            }
        }
    }
}

/// Seconds since the epoch of `t`.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}
