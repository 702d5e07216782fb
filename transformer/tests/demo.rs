//! `taskmesh demo`, run as users run it (the real binary, real loopback sockets, in-process
//! agents): the headless split follows the weights, an edit of the mesh document during a run
//! moves the split without a failed request (and a bad edit is refused while traffic goes on),
//! Ctrl-C stops everything, a bad document is a usage error.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_taskmesh");
const BUNDLED: &str = include_str!("../../templates/colorapp/mesh.yaml");
/// The bundled document's route, as written there.
const BUNDLED_WEIGHTS: &str = "            - {virtualNode: colorteller-white, weight: 8}
            - {virtualNode: colorteller-blue, weight: 1}
            - {virtualNode: colorteller-black, weight: 1}";

/// The bundled document with the weights white, blue, black.
fn with_weights(white: u32, blue: u32, black: u32) -> String {
    assert!(
        BUNDLED.contains(BUNDLED_WEIGHTS),
        "templates/colorapp/mesh.yaml changed its weightedTargets; update this test"
    );
    BUNDLED.replace(
        BUNDLED_WEIGHTS,
        &format!(
            "            - {{virtualNode: colorteller-white, weight: {white}}}
            - {{virtualNode: colorteller-blue, weight: {blue}}}
            - {{virtualNode: colorteller-black, weight: {black}}}"
        ),
    )
}

/// A running `taskmesh demo` with its stderr lines arriving on a channel; killed on drop.
struct Demo {
    child: Child,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn spawn(args: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start taskmesh demo");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` (lines before it are kept in `seen`).
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no stderr line with {needle:?} within {timeout:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the exit (at most `timeout`); returns the exit code and stdout.
    fn finish(mut self, timeout: Duration) -> (i32, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut out = String::new();
                if let Some(mut stdout) = self.child.stdout.take() {
                    stdout.read_to_string(&mut out).expect("read stdout");
                }
                while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return (status.code().unwrap_or(-1), out);
            }
            assert!(
                Instant::now() < deadline,
                "taskmesh demo did not exit within {timeout:?}; stderr:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_doc(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, text).expect("write mesh document");
    path
}

/// Rewrites the document the way an editor does: a new file renamed over the old one.
fn edit_doc(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn report(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{stdout}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

#[test]
fn the_headless_split_follows_the_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = write_doc(dir.path(), BUNDLED);
    let requests = 3000u32;
    let demo = Demo::spawn(&[
        "--requests",
        &requests.to_string(),
        "--json",
        "--mesh-doc",
        doc.to_str().expect("utf-8 path"),
    ]);
    let (code, out) = demo.finish(Duration::from_secs(120));
    assert_eq!(code, 0, "{out}");
    let r = report(&out);
    assert_eq!(r["requests"], requests, "{r:#}");
    assert_eq!(r["errors"], 0, "{r:#}");
    assert_eq!(r["meshDocument"], doc.to_str().expect("utf-8"));
    assert_eq!(
        r["weights"],
        serde_json::json!({"white": 8, "blue": 1, "black": 1})
    );
    let n = f64::from(requests);
    for (color, expected) in [("white", 0.8), ("blue", 0.1), ("black", 0.1)] {
        assert_eq!(f(&r["expected"][color]), expected);
        let measured = f(&r["measured"][color]);
        // Five standard deviations of a binomial share: a false alarm is a one-in-millions event.
        let tolerance = 5.0 * (expected * (1.0 - expected) / n).sqrt();
        assert!(
            (measured - expected).abs() <= tolerance,
            "{color}: measured {measured:.4}, expected {expected} ± {tolerance:.4}\n{r:#}"
        );
    }
}

#[test]
fn editing_the_weights_during_a_run_moves_the_split_without_a_failed_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = write_doc(dir.path(), &with_weights(1, 0, 0));
    let mut demo = Demo::spawn(&[
        "--requests",
        "1000000",
        "--rate",
        "200",
        "--concurrency",
        "4",
        "--json",
        "--mesh-doc",
        doc.to_str().expect("utf-8 path"),
    ]);
    demo.wait_for("taskmesh demo: ready", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));

    edit_doc(&doc, &with_weights(0, 0, 1));
    demo.wait_for("mesh document applied", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(3000));

    // A broken edit is refused; the agents keep routing with the last good weights.
    edit_doc(&doc, "meshName: colorapp\nroutes: [{routeName: broken}]\n");
    let refused = demo.wait_for("mesh document REJECTED", Duration::from_secs(10));
    assert!(refused.contains("routes"), "{refused}");
    std::thread::sleep(Duration::from_millis(1500));

    demo.signal("INT");
    let (code, out) = demo.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    let r = report(&out);
    assert_eq!(
        r["errors"], 0,
        "a request failed while the weights changed:\n{r:#}"
    );
    let phases = r["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2, "one phase per good document:\n{r:#}");
    let (before, after) = (&phases[0], &phases[1]);
    assert_eq!(
        before["weights"],
        serde_json::json!({"white": 1, "blue": 0, "black": 0})
    );
    assert_eq!(
        after["weights"],
        serde_json::json!({"white": 0, "blue": 0, "black": 1})
    );
    // Requests are filed under the document the gateway's agent had when they left, and the
    // split is decided a hop later: the (at most --concurrency = 4) requests on their way at the
    // switch may be filed under one document and routed by the next. Every other request went
    // where its document said.
    let in_flight_at_switch = 4.0;
    assert!(f(&before["requests"]) >= 100.0, "{r:#}");
    assert!(
        f(&before["counts"]["black"]) <= in_flight_at_switch,
        "{r:#}"
    );
    assert!(f(&before["counts"]["blue"]) == 0.0, "{r:#}");
    assert!(f(&after["requests"]) >= 100.0, "{r:#}");
    assert!(f(&after["counts"]["white"]) <= in_flight_at_switch, "{r:#}");
    assert!(f(&after["counts"]["blue"]) == 0.0, "{r:#}");
}

#[test]
fn ctrl_c_stops_every_server_and_removes_the_temporary_copy() {
    let mut demo = Demo::spawn(&[]);
    demo.wait_for("taskmesh demo: ready", Duration::from_secs(60));
    let after = |prefix: &str| -> Vec<String> {
        demo.seen
            .iter()
            .filter_map(|l| l.split(prefix).nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    let copy = PathBuf::from(
        after("edit the weights in ")
            .first()
            .expect("the file to edit"),
    );
    assert_eq!(
        std::fs::read_to_string(&copy).expect("the temporary copy"),
        BUNDLED
    );
    let addr: SocketAddr = after("gateway: curl http://")
        .first()
        .and_then(|a| a.trim_end_matches('/').parse().ok())
        .expect("gateway address");
    let admin: Vec<SocketAddr> = after("admin http://")
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    assert_eq!(
        admin.len(),
        4,
        "one agent per task:\n{}",
        demo.seen.join("\n")
    );
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
    std::thread::sleep(Duration::from_millis(1000));

    demo.signal("INT");
    let (code, out) = demo.finish(Duration::from_secs(20));
    assert_eq!(code, 0);
    assert!(out.contains("white"), "a last summary is printed: {out}");
    for a in std::iter::once(addr).chain(admin) {
        assert!(
            TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_err(),
            "{a} still accepts connections after Ctrl-C"
        );
    }
    assert!(!copy.exists(), "{} was left behind", copy.display());
}

#[test]
fn an_invalid_mesh_document_is_a_usage_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = write_doc(dir.path(), &BUNDLED.replace("colorgateway", "gw"));
    let demo = Demo::spawn(&[
        "--requests",
        "1",
        "--json",
        "--mesh-doc",
        doc.to_str().expect("utf-8"),
    ]);
    let (code, out) = demo.finish(Duration::from_secs(30));
    assert_eq!(code, 2, "{out}");
    let broken = write_doc(dir.path(), "meshName: colorapp\nroutes: [{}]\n");
    let mut demo = Demo::spawn(&[
        "--requests",
        "1",
        "--json",
        "--mesh-doc",
        broken.to_str().expect("utf-8"),
    ]);
    let line = demo.wait_for("error:", Duration::from_secs(30));
    assert!(line.contains(broken.to_str().expect("utf-8")), "{line}");
    let (code, _) = demo.finish(Duration::from_secs(10));
    assert_eq!(code, 2);
}
