//! Child processes for tests: stdout and stderr captured into one log file, a wait until the
//! process listens on a port, and the whole process group killed when the handle is dropped.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::HarnessError;

/// How much of a log is quoted in error messages.
const LOG_TAIL_BYTES: usize = 8 * 1024;

/// A running child process whose output goes to a log file. Dropping it kills the process and
/// every process it started (they share its process group).
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: tempfile::TempPath,
}

impl ChildProcess {
    /// Starts `command` in its own process group with stdin closed and stdout + stderr appended
    /// to a fresh log file. `name` labels the process in messages.
    pub fn spawn(name: &str, mut command: Command) -> Result<ChildProcess, HarnessError> {
        let log_file = tempfile::Builder::new()
            .prefix(&format!("taskmesh-e2e-{}-", sanitize(name)))
            .suffix(".log")
            .tempfile()
            .map_err(|source| HarnessError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let log = log_file.into_temp_path();
        let open = || {
            File::options()
                .append(true)
                .open(&log)
                .map_err(|source| HarnessError::Io {
                    path: log.to_path_buf(),
                    source,
                })
        };
        let (stdout, stderr) = (open()?, open()?);
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = command.spawn().map_err(|source| HarnessError::Spawn {
            program: command.get_program().to_string_lossy().into_owned(),
            source,
        })?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The label given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let mut bytes = Vec::new();
            if file.read_to_end(&mut bytes).is_ok() {
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        text
    }

    /// The last few KiB of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        if log.len() <= LOG_TAIL_BYTES {
            return log;
        }
        let mut start = log.len() - LOG_TAIL_BYTES;
        while !log.is_char_boundary(start) {
            start += 1;
        }
        format!("[…]{}", &log[start..])
    }

    /// `Some(exit description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("cannot query status: {err}")),
        }
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`. Fails early, with
    /// the log, if the process exits first.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<(), HarnessError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        self.wait_until(timeout, &format!("listen on {addr}"), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
    }

    /// Polls `ready` every 50 ms until it returns true. Fails with the log if the process exits
    /// or `timeout` passes; `what` says what was awaited.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(self.not_ready(format!("exited ({status}) before it did {what}")));
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(format!("did not {what} within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn not_ready(&self, reason: String) -> HarnessError {
        HarnessError::NotReady {
            name: self.name.clone(),
            reason,
            log: self.log.to_path_buf(),
            output: self.log_tail(),
        }
    }

    /// Kills the process group (SIGKILL) and reaps the process. Idempotent.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) with a negative pid signals that process group; it has no
                // memory-safety preconditions.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
