//! Access log: one JSON line per proxied request, appended to the virtual node's
//! `logging.accessLog.file.path` (`/dev/stdout`: the agent's stdout). A node without one has no
//! access log (the handlers do not call [`AccessLog::write`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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

impl Entry<'_> {
    /// Appends the record as one JSON object (no newline) to `out`: byte for byte what
    /// `serde_json` writes for this struct (its string escaping, `itoa` integers, `zmij` floats,
    /// `null` for a non-finite float), without serde's per-field calls and key escaping.
    /// `serde_json` took about 3 500 instructions per request; this is on every request.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"start_time\":");
        push_f64(out, self.start_time);
        out.extend_from_slice(b",\"direction\":");
        push_str(out, self.direction);
        out.extend_from_slice(b",\"method\":");
        push_str(out, self.method);
        out.extend_from_slice(b",\"path\":");
        push_str(out, self.path);
        out.extend_from_slice(b",\"authority\":");
        push_str(out, self.authority);
        out.extend_from_slice(b",\"code\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.code).as_bytes());
        out.extend_from_slice(b",\"bytes_received\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes_received).as_bytes());
        out.extend_from_slice(b",\"bytes_sent\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.bytes_sent).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        push_f64(out, self.duration_ms);
        out.extend_from_slice(b",\"upstream\":");
        push_str(out, self.upstream);
        out.extend_from_slice(b",\"virtual_service\":");
        push_str(out, self.virtual_service);
        out.extend_from_slice(b",\"route\":");
        push_str(out, self.route);
        out.extend_from_slice(b",\"target_node\":");
        push_str(out, self.target_node);
        out.extend_from_slice(b",\"request_id\":");
        push_str(out, self.request_id);
        out.extend_from_slice(b",\"flags\":");
        push_str(out, self.flags);
        out.push(b'}');
    }
}

/// A JSON number as `serde_json` writes an `f64`: shortest round-trip form, `null` when not
/// finite.
fn push_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string as `serde_json` escapes it: `"` and `\\`, the short forms `\b \t \n \f \r`,
/// `\u00xx` for the other control characters; everything else (UTF-8 included) as is, copied
/// in runs.
fn push_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping (the common case: paths, names, ids).
        if let Some(word) = bytes[i..].first_chunk::<8>()
            && !needs_escape(u64::from_le_bytes(*word))
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        if b >= 0x20 && b != b'"' && b != b'\\' {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            c => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]),
        }
        run = i + 1;
        i += 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Whether any of the eight bytes of `w` needs escaping in a JSON string: a control byte
/// (below 0x20), `"` or `\`. Exact as a whole (the classic "has a byte less than n" and "has a
/// zero byte" word tricks; bytes from 0x80, UTF-8, never match).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let has_control = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    has_control || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\')))
}

/// The writer. A request serializes its line straight into a shared in-memory batch (one short
/// lock, no allocation once the batch buffers have grown, no thread wake-up); one background
/// thread writes the batch out every [`FLUSH_INTERVAL`], or as soon as [`WAKE_BYTES`] are
/// waiting, through one `write` per destination. So a request never waits on stdout or the disk,
/// and the cost per request is the JSON encoding alone. Lines beyond [`MAX_PENDING_BYTES`]
/// (stdout or the disk stalled) are dropped and counted rather than slowing traffic down.
/// [`AccessLog::flush`] writes everything pending (the agent calls it when it stops).
pub struct AccessLog {
    inner: Arc<Inner>,
}

/// How long a line may wait in memory before it is written (Envoy flushes its access-log
/// buffers every second; a tenth keeps `tail -f` lively).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Pending bytes that wake the writer early.
pub const WAKE_BYTES: usize = 64 * 1024;
/// Pending bytes beyond which new lines are dropped (and counted).
pub const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

struct Inner {
    batch: Mutex<Batch>,
    /// Signals the writer: an early wake-up (batch over [`WAKE_BYTES`]) or a flush request.
    wake: Condvar,
    /// Signals [`AccessLog::flush`] callers that a write round finished.
    written: Condvar,
    dropped: AtomicU64,
    writer_alive: AtomicBool,
}

/// Lines waiting to be written, grouped by destination in arrival order.
#[derive(Default)]
struct Batch {
    /// `(destination, lines)`. Consecutive lines for the same destination share one chunk.
    chunks: Vec<(Arc<str>, Vec<u8>)>,
    /// Emptied buffers kept for reuse, so the steady state allocates nothing.
    spare: Vec<Vec<u8>>,
    pending: usize,
    /// Bytes ever queued, and how many of them are written (for [`AccessLog::flush`]).
    queued_total: u64,
    written_total: u64,
    /// A flush was asked for: write now even if the batch is small.
    flush_asked: bool,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog::new()
    }
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn new() -> AccessLog {
        let inner = Arc::new(Inner {
            batch: Mutex::new(Batch::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            dropped: AtomicU64::new(0),
            writer_alive: AtomicBool::new(true),
        });
        let for_writer = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(&for_writer));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the access-log thread; access log off");
            inner.writer_alive.store(false, Ordering::Relaxed);
        }
        AccessLog { inner }
    }

    /// Queues `entry` for `path`.
    pub fn write(&self, path: &Arc<str>, entry: &Entry<'_>) {
        if !self.inner.writer_alive.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut b) = self.inner.batch.lock() else {
            return;
        };
        if b.pending >= MAX_PENDING_BYTES {
            drop(b);
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let same = b.chunks.last().is_some_and(|(p, _)| p == path);
        if !same {
            let buf = b.spare.pop().unwrap_or_default();
            b.chunks.push((path.clone(), buf));
        }
        let Some((_, buf)) = b.chunks.last_mut() else {
            return;
        };
        let before = buf.len();
        entry.encode(buf);
        buf.push(b'\n');
        let added = buf.len() - before;
        let was = b.pending;
        b.pending += added;
        b.queued_total += added as u64;
        if was < WAKE_BYTES && b.pending >= WAKE_BYTES {
            self.inner.wake.notify_one();
        }
    }

    /// Bytes ever queued (lines and their newlines).
    pub fn queued_bytes(&self) -> u64 {
        self.inner.batch.lock().map_or(0, |b| b.queued_total)
    }

    /// Lines dropped because too much was pending.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Writes everything queued so far and returns once it is written (or after `timeout`).
    pub fn flush(&self, timeout: Duration) {
        if !self.inner.writer_alive.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut b) = self.inner.batch.lock() else {
            return;
        };
        let target = b.queued_total;
        if b.written_total >= target {
            return;
        }
        b.flush_asked = true;
        self.inner.wake.notify_one();
        let deadline = std::time::Instant::now() + timeout;
        while b.written_total < target {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            match self.inner.written.wait_timeout(b, deadline - now) {
                Ok((g, _)) => b = g,
                Err(_) => return,
            }
        }
    }
}

fn writer(inner: &Inner) {
    let mut stdout = std::io::stdout();
    let mut file: Option<(Arc<str>, File)> = None;
    let mut out: Vec<(Arc<str>, Vec<u8>)> = Vec::new();
    let mut upto = 0u64;
    loop {
        {
            let Ok(mut b) = inner.batch.lock() else {
                return;
            };
            // Give the written buffers back for reuse.
            for (_, mut buf) in out.drain(..) {
                buf.clear();
                if b.spare.len() < 8 && buf.capacity() <= 4 * WAKE_BYTES {
                    b.spare.push(buf);
                }
            }
            b.written_total = upto;
            inner.written.notify_all();
            let deadline = std::time::Instant::now() + FLUSH_INTERVAL;
            while b.pending < WAKE_BYTES && !b.flush_asked {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                b = match inner.wake.wait_timeout(b, deadline - now) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
            b.flush_asked = false;
            b.pending = 0;
            upto = b.queued_total;
            std::mem::swap(&mut out, &mut b.chunks);
        }
        for (path, lines) in &out {
            write_lines(&mut stdout, &mut file, path, lines);
        }
    }
}

/// Writes `lines` to `p` (`/dev/stdout`: stdout), keeping the last file open.
fn write_lines(
    stdout: &mut std::io::Stdout,
    file: &mut Option<(Arc<str>, File)>,
    p: &str,
    lines: &[u8],
) {
    if p == "/dev/stdout" {
        let _ = stdout.lock().write_all(lines);
        return;
    }
    if file.as_ref().map(|(q, _)| &**q) != Some(p) {
        *file = None;
        match OpenOptions::new().create(true).append(true).open(p) {
            Ok(f) => *file = Some((Arc::from(p), f)),
            Err(e) => {
                tracing::warn!(path = p, error = %e, "cannot open access log; using stdout");
            }
        }
    }
    match file.as_mut() {
        Some((_, f)) => {
            let _ = f.write_all(lines);
        }
        None => {
            let _ = stdout.lock().write_all(lines);
        }
    }
}

/// Seconds since the epoch of `t`.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: u16, request_id: &str) -> Entry<'_> {
        Entry {
            start_time: 1.5,
            direction: "egress",
            method: "GET",
            path: "/p",
            authority: "svc.local",
            code,
            bytes_received: 0,
            bytes_sent: 2,
            duration_ms: 0.25,
            upstream: "10.0.0.1:80",
            virtual_service: "svc.local",
            route: "r",
            target_node: "n",
            request_id,
            flags: "-",
        }
    }

    /// The hand-written encoder writes exactly what serde_json writes for the struct, over every
    /// byte that needs escaping, multi-byte UTF-8, and the float and integer edge cases.
    #[test]
    fn encode_matches_serde_json_byte_for_byte() {
        let mut awkward: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "quote \" and backslash \\ and slash /".into(),
            "tab\tnewline\ncr\rbackspace\u{8}formfeed\u{c}".into(),
            "del \u{7f} é ✓ 🦀 \u{2028}".into(),
            "/api/v1/items?q=\"x\"&r=\\y".into(),
        ];
        awkward.extend((0u8..0x20).map(|c| format!("a{}b", char::from(c))));
        // Every escaped byte at every position of a string longer than two words, so that the
        // eight-bytes-at-a-time scan is checked on both sides of each word boundary.
        for c in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..20 {
                let mut s = "x".repeat(20);
                s.replace_range(at..at + 1, &char::from(c).to_string());
                awkward.push(s);
            }
        }
        awkward.push("é✓🦀 multi-byte only, no escapes, well past eight bytes".into());
        let floats = [
            0.0,
            -0.0,
            1.5,
            0.25,
            1e-7,
            1e21,
            123456789.123,
            1795651593.4363062,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let ints = [0u64, 1, 9, 10, 65_535, u64::from(u32::MAX) + 1, u64::MAX];
        let mut checked = 0;
        for (i, text) in awkward.iter().enumerate() {
            for (j, &f) in floats.iter().enumerate() {
                let n = ints[(i + j) % ints.len()];
                let e = Entry {
                    start_time: f,
                    direction: text,
                    method: "GET",
                    path: text,
                    authority: &awkward[(i + 1) % awkward.len()],
                    code: (n % 65_536) as u16,
                    bytes_received: n,
                    bytes_sent: u64::MAX - n,
                    duration_ms: floats[(j + 3) % floats.len()],
                    upstream: "[fd00::1]:8080",
                    virtual_service: text,
                    route: "r",
                    target_node: text,
                    request_id: text,
                    flags: "UF",
                };
                let mut ours = Vec::new();
                e.encode(&mut ours);
                let theirs = serde_json::to_vec(&e).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&theirs),
                    "text {text:?}, float {f}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, awkward.len() * floats.len());
    }

    fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn batched_lines_reach_their_files_in_order_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let a: Arc<str> = Arc::from(dir.path().join("a.log").to_str().unwrap());
        let b: Arc<str> = Arc::from(dir.path().join("b.log").to_str().unwrap());
        let log = AccessLog::new();
        let ids: Vec<String> = (0..3000).map(|i| format!("id-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let path = if i % 3 == 0 { &b } else { &a };
            log.write(path, &entry(200, id));
        }
        log.flush(Duration::from_secs(5));
        let got_a = lines(std::path::Path::new(&*a));
        let got_b = lines(std::path::Path::new(&*b));
        assert_eq!(got_a.len(), 2000);
        assert_eq!(got_b.len(), 1000);
        let want_b: Vec<&str> = ids.iter().step_by(3).map(String::as_str).collect();
        let seen_b: Vec<&str> = got_b
            .iter()
            .map(|l| l["request_id"].as_str().unwrap())
            .collect();
        assert_eq!(seen_b, want_b);
        assert_eq!(got_a[0]["request_id"], "id-1");
        assert_eq!(got_a[1999]["request_id"], "id-2999");
        assert_eq!(got_a[0]["upstream"], "10.0.0.1:80");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_line_is_written_within_the_flush_interval_without_being_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let path: Arc<str> = Arc::from(p.to_str().unwrap());
        let log = AccessLog::new();
        log.write(&path, &entry(404, "lonely"));
        let deadline = std::time::Instant::now() + FLUSH_INTERVAL * 20;
        while lines(&p).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = lines(&p);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["code"], 404);
    }

    #[test]
    fn a_stalled_destination_drops_and_counts_instead_of_growing_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stalled");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let path: Arc<str> = Arc::from(fifo.to_str().unwrap());
        let log = AccessLog::new();
        // The first line sends the writer to open a FIFO nobody reads: it blocks there, so
        // everything written afterwards stays pending.
        log.write(&path, &entry(200, "x"));
        std::thread::sleep(FLUSH_INTERVAL * 5);
        let per_line = serde_json::to_vec(&entry(200, "x")).unwrap().len() + 1;
        let fit = MAX_PENDING_BYTES.div_ceil(per_line);
        for _ in 0..fit + 1000 {
            log.write(&path, &entry(200, "x"));
        }
        assert_eq!(log.dropped(), 1000);
        // Unblock the writer (open the read end) so the thread can finish.
        let _reader = std::fs::File::open(&fifo).unwrap();
    }
}
