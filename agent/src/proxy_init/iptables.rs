//! Running `iptables-save -t nat` and `iptables-restore --noflush` (or their `ip6tables`
//! twins, found in `PATH`) and turning their failures into [`ProxyInitError`]s that say what to
//! do: a missing tool, a missing privilege, or anything else with the tool's own message.

use std::io::{ErrorKind, Write};
use std::process::{Command, Output, Stdio};

use super::config::Ipv6Mode;
use super::error::ProxyInitError;
use super::plan::Family;

/// Seconds `iptables-restore` waits for the xtables lock (legacy backend) before failing.
const LOCK_WAIT_SECONDS: u32 = 10;

/// The family's nat table as `iptables-save -t nat` prints it.
pub fn save(family: Family) -> Result<String, ProxyInitError> {
    let program = family.save();
    let output = run(
        family,
        program,
        Command::new(program).args(["-t", "nat"]),
        None,
    )?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Applies `batch` with `iptables-restore --noflush`: all of it, or (on error) none of it.
pub fn restore(family: Family, batch: &str) -> Result<(), ProxyInitError> {
    let program = family.restore();
    let wait = format!("--wait={LOCK_WAIT_SECONDS}");
    let mut command = Command::new(program);
    command.args(["--noflush", wait.as_str()]);
    run(family, program, &mut command, Some(batch)).map(drop)
}

/// Whether an explicit IPv6 request should turn a failure into [`ProxyInitError::Ipv6Unavailable`].
pub fn explain_ipv6(err: ProxyInitError, mode: Ipv6Mode) -> ProxyInitError {
    match (mode, err) {
        (
            Ipv6Mode::On,
            ProxyInitError::Command {
                program, detail, ..
            },
        ) => ProxyInitError::Ipv6Unavailable { program, detail },
        (_, err) => err,
    }
}

fn run(
    family: Family,
    program: &'static str,
    command: &mut Command,
    stdin: Option<&str>,
) -> Result<Output, ProxyInitError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| match source.kind() {
        ErrorKind::NotFound => ProxyInitError::MissingTool { program, family },
        ErrorKind::PermissionDenied => ProxyInitError::PermissionDenied {
            program,
            detail: source.to_string(),
        },
        _ => ProxyInitError::Io { program, source },
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early closes the pipe; its exit status then says why.
        if let Err(source) = pipe.write_all(text.as_bytes())
            && source.kind() != ErrorKind::BrokenPipe
        {
            return Err(ProxyInitError::Io { program, source });
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|source| ProxyInitError::Io { program, source })?;
    if output.status.success() {
        return Ok(output);
    }
    let detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let detail = match (detail.is_empty(), stdin) {
        (true, _) => "no message".to_owned(),
        (false, Some(batch)) => format!("{detail}\n--- batch ---\n{batch}"),
        (false, None) => detail,
    };
    if is_permission_error(&detail) {
        return Err(ProxyInitError::PermissionDenied { program, detail });
    }
    Err(ProxyInitError::Command {
        program,
        status: output.status.to_string(),
        detail,
    })
}

/// The messages iptables prints when the caller lacks root or NET_ADMIN.
fn is_permission_error(stderr: &str) -> bool {
    let lower = stderr.to_ascii_lowercase();
    [
        "permission denied",
        "operation not permitted",
        "you must be root",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_messages_of_nft_and_legacy_backends() {
        assert!(is_permission_error(
            "iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: \
             Permission denied (you must be root)"
        ));
        assert!(is_permission_error(
            "iptables-restore v1.8.9 (legacy): iptables-restore: unable to initialize table 'nat'\n\
             Error occurred at line: 1\nOperation not permitted"
        ));
        assert!(!is_permission_error(
            "iptables-restore v1.8.9 (nf_tables): Chain 'NOPE' does not exist"
        ));
    }
}
