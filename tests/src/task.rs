//! Running an ECS task from its transformed task definition, inside a network namespace
//! ([`crate::netns`]), the way the ECS agent would on EC2 with `--redirect proxy-init`: the
//! `proxy-init` container runs first, as its `user`, with exactly its `environment`; then the
//! proxy container runs as its `user` (uid 1337) with its `environment`; the app containers
//! run as theirs. The definition is read, never second-guessed: ports, uids and settings all
//! come from it, so a test proves what the transformer wrote.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::HarnessError;
use crate::netns::Netns;
use crate::process::ChildProcess;

/// The docker label inject puts on the containers it adds.
pub const INJECTED_LABEL: &str = "taskmesh.injected";

fn invalid(message: String) -> HarnessError {
    HarnessError::Tool {
        tool: "task definition".to_owned(),
        status: "-".to_owned(),
        message,
        stderr: String::new(),
    }
}

/// One container definition of a task definition (API shape).
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// `name`.
    pub name: String,
    /// `user` (`"1337"`, `"1000:1000"`, `"0"`), if set.
    pub user: Option<String>,
    /// `environment`, in order.
    pub environment: Vec<(String, String)>,
    /// `entryPoint`.
    pub entry_point: Vec<String>,
    /// `command`.
    pub command: Vec<String>,
    /// `dockerLabels`.
    pub labels: Vec<(String, String)>,
    /// `portMappings[].containerPort`.
    pub ports: Vec<u16>,
}

impl Container {
    fn from_json(v: &Value) -> Result<Container, HarnessError> {
        let strings = |key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("a container without a name: {v}")))?
            .to_owned();
        let environment = v
            .get("environment")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some((
                            e.get("name")?.as_str()?.to_owned(),
                            e.get("value")?.as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let labels = v
            .get("dockerLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let ports = v
            .get("portMappings")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("containerPort")?.as_u64())
                    .filter_map(|p| u16::try_from(p).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Container {
            user: v.get("user").and_then(Value::as_str).map(str::to_owned),
            entry_point: strings("entryPoint"),
            command: strings("command"),
            name,
            environment,
            labels,
            ports,
        })
    }

    /// The value of environment variable `name`.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.environment
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether inject added this container.
    pub fn is_injected(&self) -> bool {
        self.labels.iter().any(|(k, _)| k == INJECTED_LABEL)
    }

    /// The uid and gid of `user` (`"1337"` means 1337:1337; unset means root, as in Docker).
    pub fn uid_gid(&self) -> Result<(u32, u32), HarnessError> {
        let user = self.user.as_deref().unwrap_or("0");
        let parse = |s: &str| {
            s.parse::<u32>().map_err(|_| {
                invalid(format!(
                    "container {}: user {user:?} is not numeric (the tests run numeric users only)",
                    self.name
                ))
            })
        };
        match user.split_once(':') {
            Some((u, g)) => Ok((parse(u)?, parse(g)?)),
            None => {
                let u = parse(user)?;
                Ok((u, u))
            }
        }
    }

    /// A numeric environment value, with the variable named in the error.
    pub fn env_port(&self, name: &str) -> Result<u16, HarnessError> {
        let v = self
            .env(name)
            .ok_or_else(|| invalid(format!("container {}: no {name}", self.name)))?;
        v.parse().map_err(|_| {
            invalid(format!(
                "container {}: {name}={v:?} is not a port",
                self.name
            ))
        })
    }
}

/// A transformed task definition (ECS API shape).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    /// `family`.
    pub family: String,
    /// The containers, in order.
    pub containers: Vec<Container>,
}

impl TaskDefinition {
    /// Reads an API-shape task definition.
    pub fn from_json(v: &Value) -> Result<TaskDefinition, HarnessError> {
        let containers = v
            .get("containerDefinitions")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no containerDefinitions".to_owned()))?
            .iter()
            .map(Container::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TaskDefinition {
            family: v
                .get("family")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            containers,
        })
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Result<&Container, HarnessError> {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| invalid(format!("task {}: no container {name}", self.family)))
    }

    /// The injected container whose command is `proxy-init`.
    pub fn proxy_init(&self) -> Result<&Container, HarnessError> {
        self.containers
            .iter()
            .find(|c| {
                c.is_injected() && c.command.first().map(String::as_str) == Some("proxy-init")
            })
            .ok_or_else(|| {
                invalid(format!(
                    "task {}: no injected proxy-init container (inject with --redirect proxy-init)",
                    self.family
                ))
            })
    }

    /// The injected proxy container (the one that says which virtual node it is).
    pub fn proxy(&self) -> Result<&Container, HarnessError> {
        self.containers
            .iter()
            .find(|c| c.is_injected() && c.env("APPMESH_RESOURCE_ARN").is_some())
            .ok_or_else(|| invalid(format!("task {}: no injected proxy container", self.family)))
    }
}

/// `path` itself when any user may execute it (every directory above it searchable by
/// others), else a copy in `<tmp>/taskmesh-e2e-bin/` that is, made once and reused while the
/// original is unchanged. Containers run as uid 1337 or 1000, which cannot execute a binary in
/// a checkout under, say, `/root`.
pub fn executable_by_all(path: &Path) -> Result<PathBuf, HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HarnessError::Io { path, source }
    };
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    let file_ok = mode(path).map_err(io(path))? & 0o005 == 0o005;
    let dirs_ok = path
        .ancestors()
        .skip(1)
        .filter(|d| !d.as_os_str().is_empty())
        .all(|d| mode(d).is_ok_and(|m| m & 0o001 != 0));
    if file_ok && dirs_ok {
        return Ok(path.to_path_buf());
    }
    let dir = std::env::temp_dir().join("taskmesh-e2e-bin");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(io(&dir))?;
    let name = path
        .file_name()
        .ok_or_else(|| invalid(format!("{} has no file name", path.display())))?;
    let copy = dir.join(name);
    let source = std::fs::metadata(path).map_err(io(path))?;
    let fresh = std::fs::metadata(&copy).is_ok_and(|c| {
        c.len() == source.len()
            && matches!((c.modified(), source.modified()), (Ok(c), Ok(s)) if c >= s)
    });
    if !fresh {
        let tmp = dir.join(format!(
            "{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::copy(path, &tmp).map_err(io(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &copy).map_err(io(&copy))?;
    }
    Ok(copy)
}

/// A command for `program` inside `ns` as the container's user, with exactly the container's
/// environment (plus `PATH`, as an image's default environment would give).
pub fn container_command(
    ns: &Netns,
    container: &Container,
    program: impl Into<OsString>,
) -> Result<Command, HarnessError> {
    let (uid, gid) = container.uid_gid()?;
    let program = program.into();
    let mut command = if uid == 0 {
        ns.command(&program)
    } else {
        ns.command_as(uid, gid, &program)
    };
    command.env_clear();
    command.env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
    );
    for (k, v) in &container.environment {
        command.env(k, v);
    }
    Ok(command)
}

/// Runs the task's proxy-init container in `ns`: `agent_binary` (the image's `taskmesh-agent`)
/// with the container's command, as its user, with exactly its environment. Returns the output;
/// a failure carries stderr.
pub fn run_proxy_init(
    ns: &Netns,
    task: &TaskDefinition,
    agent_binary: &Path,
) -> Result<Output, HarnessError> {
    let init = task.proxy_init()?;
    if init.entry_point.first().map(String::as_str) != Some("taskmesh-agent") {
        return Err(invalid(format!(
            "task {}: container {} has entryPoint {:?}, expected [\"taskmesh-agent\"]",
            task.family, init.name, init.entry_point
        )));
    }
    let mut command = container_command(ns, init, agent_binary)?;
    command.args(&init.command).stdin(Stdio::null());
    let output = command.output().map_err(|source| HarnessError::Spawn {
        program: agent_binary.display().to_string(),
        source,
    })?;
    if !output.status.success() {
        return Err(HarnessError::Tool {
            tool: "taskmesh-agent proxy-init".to_owned(),
            status: output.status.to_string(),
            message: format!("task {} in {}", task.family, ns.name()),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(output)
}

/// Starts the task's proxy container in `ns` (`agent_binary` with the container's environment
/// plus `extra_env`, as its user) and waits until its admin port answers `/ready` with 200.
pub fn start_proxy(
    ns: &Netns,
    task: &TaskDefinition,
    agent_binary: &Path,
    extra_env: &[(&str, String)],
) -> Result<ChildProcess, HarnessError> {
    let proxy = task.proxy()?;
    let admin_port = proxy.env_port("ENVOY_ADMIN_ACCESS_PORT")?;
    let mut command = container_command(ns, proxy, agent_binary)?;
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let mut child = ChildProcess::spawn(&format!("{}-agent", task.family), command)?;
    child.wait_until(Duration::from_secs(20), "answer /ready with 200", || {
        matches!(admin_get(ns, admin_port, "/ready"), Ok((200, _)))
    })?;
    Ok(child)
}

/// `GET http://127.0.0.1:<port><path>` from inside `ns` (an agent's admin endpoint); returns
/// the status and body.
pub fn admin_get(ns: &Netns, port: u16, path: &str) -> Result<(u16, String), HarnessError> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let failed = |message: String| HarnessError::Tool {
        tool: "admin".to_owned(),
        status: "-".to_owned(),
        message,
        stderr: String::new(),
    };
    ns.enter(|| {
        // Connect on this thread (inside the namespace) first: ureq connects on the calling
        // thread too, but a refused connection gives a clearer message this way.
        TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_secs(1),
        )
        .map_err(|e| failed(format!("{url} in {}: {e}", ns.name())))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .get(&url)
            .call()
            .map_err(|e| failed(format!("{url} in {}: {e}", ns.name())))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| failed(format!("{url}: body: {e}")))?;
        Ok((status, body))
    })?
}

/// The sum of the Prometheus samples of metric `name` whose labels include every
/// `(label, value)` of `labels` (e.g. `taskmesh_requests_total` with `direction="ingress"`).
pub fn prometheus_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_containers_users_and_environment() {
        let td = TaskDefinition::from_json(&serde_json::json!({
            "family": "gw",
            "containerDefinitions": [
                {"name": "app", "user": "1000", "portMappings": [{"containerPort": 9080}]},
                {"name": "taskmesh-agent", "user": "1337",
                 "environment": [{"name": "APPMESH_RESOURCE_ARN", "value": "mesh/m/virtualNode/gw"},
                                 {"name": "ENVOY_ADMIN_ACCESS_PORT", "value": "9901"}],
                 "dockerLabels": {"taskmesh.injected": "0.1.0"}},
                {"name": "taskmesh-proxy-init", "user": "0", "entryPoint": ["taskmesh-agent"],
                 "command": ["proxy-init"], "dockerLabels": {"taskmesh.injected": "0.1.0"},
                 "environment": [{"name": "TASKMESH_IGNORED_UID", "value": "1337"}]}
            ]
        }))
        .expect("task definition");
        assert_eq!(
            td.container("app").expect("app").uid_gid().expect("uid"),
            (1000, 1000)
        );
        assert_eq!(td.container("app").expect("app").ports, [9080]);
        let proxy = td.proxy().expect("proxy");
        assert_eq!(
            proxy.env_port("ENVOY_ADMIN_ACCESS_PORT").expect("port"),
            9901
        );
        assert_eq!(proxy.uid_gid().expect("uid"), (1337, 1337));
        let init = td.proxy_init().expect("proxy-init");
        assert_eq!(init.env("TASKMESH_IGNORED_UID"), Some("1337"));
        assert_eq!(init.uid_gid().expect("uid"), (0, 0));
        assert!(td.container("nope").is_err());
    }

    #[test]
    fn binaries_others_cannot_reach_are_copied_where_they_can() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let name = format!("e2e-bin-test-{}", std::process::id());
        let hidden = dir.path().join(&name);
        std::fs::write(&hidden, b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let copy = executable_by_all(&hidden).expect("copy");
        assert_ne!(copy, hidden);
        assert_eq!(std::fs::read(&copy).expect("read"), b"#!/bin/sh\n");
        assert_eq!(
            std::fs::metadata(&copy).expect("meta").permissions().mode() & 0o777,
            0o755
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        assert_eq!(executable_by_all(&hidden).expect("as is"), hidden);
        let _ = std::fs::remove_file(copy);
    }

    #[test]
    fn sums_prometheus_samples_by_name_and_labels() {
        let text = "# TYPE taskmesh_requests_total counter\n\
                    taskmesh_requests_total{direction=\"egress\",target=\"a\"} 3\n\
                    taskmesh_requests_total{direction=\"egress\",target=\"b\"} 4\n\
                    taskmesh_requests_total{direction=\"ingress\",target=\"a\"} 5\n\
                    taskmesh_requests_totally 9\n";
        assert_eq!(
            prometheus_sum(text, "taskmesh_requests_total", &[("direction", "egress")]),
            7.0
        );
        assert_eq!(prometheus_sum(text, "taskmesh_requests_total", &[]), 12.0);
    }
}
