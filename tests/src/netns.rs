//! Network namespaces standing in for ECS tasks (`awsvpc` mode gives each task its own
//! namespace), joined by a bridge so tasks can reach each other, each with its own
//! `/etc/netns/<ns>/hosts` for the mesh's DNS names.
//!
//! Everything lives inside namespaces this module creates: the bridge sits in a "hub"
//! namespace, each task gets a veth pair from the hub, and the addresses (a /24 of 10.0.0.0/8
//! and a /64 of fd74:6d65:7368::/48, picked per test run from the process id and a counter)
//! exist only there, so the machine's own network is never touched.
//!
//! Names are `<prefix>-<pid>-<counter>`: unique across parallel tests and test runs. Dropping
//! a [`Netns`] (also while a test panics) kills what runs inside, deletes the namespace and its
//! `/etc/netns` directory; a [`Lan`] deletes its hub (and with it the bridge). Namespaces left
//! behind by a crashed run (their pid is gone) are swept the first time this process uses the
//! same prefix. All of this needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); without it every call
//! fails with a message saying so.
//!
//! ```no_run
//! use std::net::IpAddr;
//! use taskmesh_e2e::netns::Lan;
//! use taskmesh_e2e::process::ChildProcess;
//!
//! let lan = Lan::create("tmx-demo")?;
//! let gateway = lan.join("tmx-demo")?;
//! let teller = lan.join("tmx-demo")?;
//! if let Some(ip) = teller.ipv4() {
//!     gateway.add_host(IpAddr::V4(ip), &["colorteller.colorapp.local"])?;
//! }
//! // The agent as uid 1337 inside the gateway task; the app would run as 1000.
//! let mut agent = gateway.command_as(1337, 1337, "taskmesh-agent");
//! agent.env("TASKMESH_CONFIG", "file:///tmp/mesh.yaml");
//! let _agent = ChildProcess::spawn("gateway-agent", agent)?;
//! // Sockets of the test itself, inside a task:
//! let listener = teller.enter(|| std::net::TcpListener::bind("0.0.0.0:9080"))?;
//! # drop(listener);
//! # Ok::<(), taskmesh_e2e::HarnessError>(())
//! ```

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::HarnessError;

/// Where `ip netns` keeps the namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Where `ip netns exec` finds per-namespace files to bind over `/etc`.
const NETNS_ETC_DIR: &str = "/etc/netns";
/// Name of the bridge inside a [`Lan`]'s hub namespace.
const BRIDGE: &str = "br0";
/// Name of a task's interface on the [`Lan`].
const TASK_INTERFACE: &str = "eth0";
/// The first 48 bits of every [`Lan`]'s IPv6 /64 (a unique-local prefix).
const IPV6_PREFIX: [u16; 3] = [0xfd74, 0x6d65, 0x7368];

/// Counter that makes names (and subnets) unique within this process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `ip netns add` / `del` change the shared `/run/netns` mount: one at a time per process.
fn netns_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A network namespace created for a test; deleted, with everything running in it, on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
}

impl Netns {
    /// Creates `<prefix>-<pid>-<counter>` with loopback up and an `/etc/netns/<ns>/hosts`
    /// holding the localhost entries. The first call per prefix also sweeps namespaces of
    /// that prefix whose process is gone. `prefix` is ASCII letters, digits and `-`.
    pub fn create(prefix: &str) -> Result<Netns, HarnessError> {
        check_prefix(prefix)?;
        require_root()?;
        sweep_once(prefix);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        {
            let _lock = netns_lock();
            run_ip(&["netns", "add", &name])?;
        }
        // From here on, Drop cleans up whatever the rest of the setup did.
        let netns = Netns {
            name,
            ipv4: None,
            ipv6: None,
        };
        let dir = netns.etc_dir();
        fs::create_dir_all(&dir).map_err(|source| HarnessError::Io {
            path: dir.clone(),
            source,
        })?;
        write_file(
            &netns.hosts_path(),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        )?;
        netns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: the handle `setns(2)` and `nsenter --net=` take.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// `/etc/netns/<name>/hosts`: what `/etc/hosts` is for commands run through [`Netns::command`].
    pub fn hosts_path(&self) -> PathBuf {
        self.etc_dir().join("hosts")
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new(NETNS_ETC_DIR).join(&self.name)
    }

    /// The IPv4 address on the [`Lan`] this namespace joined.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4
    }

    /// The IPv6 address on the [`Lan`] this namespace joined.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6
    }

    /// Adds a hosts entry: `names` resolve to `ip` for commands run in this namespace.
    pub fn add_host(&self, ip: IpAddr, names: &[&str]) -> Result<(), HarnessError> {
        let path = self.hosts_path();
        let mut file =
            File::options()
                .append(true)
                .open(&path)
                .map_err(|source| HarnessError::Io {
                    path: path.clone(),
                    source,
                })?;
        writeln!(file, "{ip}\t{}", names.join(" "))
            .map_err(|source| HarnessError::Io { path, source })
    }

    /// `ip netns exec <ns> <program>`: a command that runs inside the namespace, as root, with
    /// `/etc/netns/<ns>/hosts` as its `/etc/hosts`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Like [`Netns::command`], but the program runs as `uid`:`gid` with no supplementary
    /// groups (through `setpriv` from util-linux).
    pub fn command_as(&self, uid: u32, gid: u32, program: impl AsRef<OsStr>) -> Command {
        let mut command = self.command("setpriv");
        command
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--"])
            .arg(program);
        command
    }

    /// Runs `args` inside the namespace as root and returns its stdout; a non-zero exit is an
    /// error carrying stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String, HarnessError> {
        let (program, rest) = split_program(args)?;
        let mut command = self.command(program);
        command.args(rest);
        stdout_of(&mut command, &args.join(" "))
    }

    /// Like [`Netns::exec`], as `uid`:`gid`.
    pub fn exec_as(&self, uid: u32, gid: u32, args: &[&str]) -> Result<String, HarnessError> {
        let (program, rest) = split_program(args)?;
        let mut command = self.command_as(uid, gid, program);
        command.args(rest);
        stdout_of(&mut command, &args.join(" "))
    }

    /// Runs `f` on a fresh thread that has joined this namespace (only that thread: the test
    /// process stays where it is). Sockets `f` creates belong to the namespace and can be
    /// used from any thread afterwards. A panic in `f` is resumed on the caller's thread.
    pub fn enter<F, R>(&self, f: F) -> Result<R, HarnessError>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        let handle = File::open(&path).map_err(|source| HarnessError::Io {
            path: path.clone(),
            source,
        })?;
        let joined = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns(2) with a valid namespace fd; it changes the network
                    // namespace of this thread only, and this thread ends with the scope.
                    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
        });
        match joined {
            Ok(result) => result.map_err(|source| HarnessError::Io { path, source }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Pids of the processes whose network namespace this is.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The kernel frees a deleted namespace's devices later, in the background; deleting
        // the LAN interface now takes its bridge port in the hub down with it at once.
        if self.ipv4.is_some() {
            let _ = self.exec(&["ip", "link", "del", TASK_INTERFACE]);
        }
        delete_namespace(&self.name);
    }
}

/// A bridge joining task namespaces, like the VPC subnet their ENIs sit on. The bridge lives
/// in a hub namespace of its own; dropping the `Lan` deletes it.
#[derive(Debug)]
pub struct Lan {
    hub: Netns,
    subnet: u16,
    next_host: Mutex<u8>,
}

impl Lan {
    /// Creates the hub namespace `<prefix>-<pid>-<counter>` with a bridge, and picks this
    /// LAN's subnets: `10.<a>.<b>.0/24` and `fd74:6d65:7368:<ab>::/64`, with `<ab>` derived
    /// from the process id and a counter so concurrent runs use different ones.
    pub fn create(prefix: &str) -> Result<Lan, HarnessError> {
        let hub = Netns::create(prefix)?;
        hub.exec(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        hub.exec(&["ip", "link", "set", BRIDGE, "up"])?;
        let seed = std::process::id()
            .wrapping_mul(2_654_435_761)
            .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(40_503));
        let subnet = u16::try_from((seed >> 8) & 0xffff).unwrap_or(0);
        Ok(Lan {
            hub,
            subnet,
            next_host: Mutex::new(1),
        })
    }

    /// The hub namespace holding the bridge.
    pub fn hub(&self) -> &Netns {
        &self.hub
    }

    /// The LAN's IPv4 subnet as (network address, prefix length).
    pub fn ipv4_subnet(&self) -> (Ipv4Addr, u8) {
        (self.ipv4_host(0), 24)
    }

    /// The LAN's IPv6 subnet as (network address, prefix length).
    pub fn ipv6_subnet(&self) -> (Ipv6Addr, u8) {
        (self.ipv6_host(0), 64)
    }

    /// The IPv4 address of host number `host` in this LAN's subnet.
    pub fn ipv4_host(&self, host: u8) -> Ipv4Addr {
        let [a, b] = self.subnet.to_be_bytes();
        Ipv4Addr::new(10, a, b, host)
    }

    /// The IPv6 address of host number `host` in this LAN's subnet.
    pub fn ipv6_host(&self, host: u8) -> Ipv6Addr {
        let [p0, p1, p2] = IPV6_PREFIX;
        Ipv6Addr::new(p0, p1, p2, self.subnet, 0, 0, 0, u16::from(host))
    }

    /// Creates a task namespace (see [`Netns::create`]) plugged into the bridge: interface
    /// `eth0` with the next free IPv4 and IPv6 address of the LAN, and default routes through
    /// it, so any address off the LAN is "somewhere out there" as in a VPC.
    pub fn join(&self, prefix: &str) -> Result<Netns, HarnessError> {
        let host = {
            let mut next = self
                .next_host
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let host = *next;
            if host == u8::MAX {
                return Err(HarnessError::Tool {
                    tool: "netns".to_owned(),
                    status: "-".to_owned(),
                    message: format!("LAN in {} is full (254 tasks)", self.hub.name),
                    stderr: String::new(),
                });
            }
            *next += 1;
            host
        };
        let mut task = Netns::create(prefix)?;
        let hub_port = format!("p{host}");
        self.hub.exec(&[
            "ip",
            "link",
            "add",
            &hub_port,
            "type",
            "veth",
            "peer",
            "name",
            TASK_INTERFACE,
            "netns",
            &task.name,
        ])?;
        self.hub
            .exec(&["ip", "link", "set", &hub_port, "master", BRIDGE, "up"])?;
        let (ipv4, ipv6) = (self.ipv4_host(host), self.ipv6_host(host));
        let ipv4_cidr = format!("{ipv4}/24");
        let ipv6_cidr = format!("{ipv6}/64");
        task.exec(&["ip", "addr", "add", &ipv4_cidr, "dev", TASK_INTERFACE])?;
        task.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &ipv6_cidr,
            "dev",
            TASK_INTERFACE,
            "nodad",
        ])?;
        task.exec(&["ip", "link", "set", TASK_INTERFACE, "up"])?;
        task.exec(&["ip", "route", "add", "default", "dev", TASK_INTERFACE])?;
        task.exec(&["ip", "-6", "route", "add", "default", "dev", TASK_INTERFACE])?;
        task.ipv4 = Some(ipv4);
        task.ipv6 = Some(ipv6);
        Ok(task)
    }
}

/// Deletes namespaces named `<prefix>-<pid>-<n>` whose process `<pid>` no longer exists (left
/// by a crashed or killed run), with their `/etc/netns` directories. Returns the names removed.
pub fn sweep_stale(prefix: &str) -> Vec<String> {
    let own_pid = std::process::id();
    let mut names: HashSet<String> = HashSet::new();
    for dir in [NETNS_RUN_DIR, NETNS_ETC_DIR] {
        if let Ok(entries) = fs::read_dir(dir) {
            names.extend(
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| entry.file_name().into_string().ok()),
            );
        }
    }
    let mut removed: Vec<String> = names
        .into_iter()
        .filter(|name| {
            owner_pid(prefix, name)
                .is_some_and(|pid| pid != own_pid && !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    removed.sort();
    for name in &removed {
        delete_namespace(name);
    }
    removed
}

/// The `<pid>` of a name `<prefix>-<pid>-<n>`, if `name` has that shape.
fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, counter) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(counter)).then(|| pid.parse().ok())?
}

fn sweep_once(prefix: &str) {
    static SWEPT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut swept = SWEPT
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    if swept.insert(prefix.to_owned()) {
        for name in sweep_stale(prefix) {
            eprintln!("netns: removed stale namespace {name} left by an earlier run");
        }
    }
}

/// Kills every process in the namespace, deletes it and its `/etc/netns` directory. Never
/// panics (it runs in Drop); failures are reported on stderr.
fn delete_namespace(name: &str) {
    let own_pid = std::process::id();
    for pid in pids_in(name) {
        if pid == own_pid {
            continue;
        }
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    if Path::new(NETNS_RUN_DIR).join(name).exists() {
        let _lock = netns_lock();
        if let Err(err) = run_ip(&["netns", "del", name]) {
            eprintln!("netns: could not delete namespace {name}: {err}");
        }
    }
    let etc = Path::new(NETNS_ETC_DIR).join(name);
    if etc.exists()
        && let Err(err) = fs::remove_dir_all(&etc)
    {
        eprintln!("netns: could not remove {}: {err}", etc.display());
    }
}

fn pids_in(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn check_prefix(prefix: &str) -> Result<(), HarnessError> {
    let valid = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(HarnessError::Tool {
            tool: "netns".to_owned(),
            status: "-".to_owned(),
            message: format!(
                "invalid namespace prefix {prefix:?}: use 1-32 ASCII letters, digits or '-'"
            ),
            stderr: String::new(),
        })
    }
}

fn require_root() -> Result<(), HarnessError> {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return Ok(());
    }
    Err(HarnessError::Tool {
        tool: "netns".to_owned(),
        status: format!("euid {euid}"),
        message: "network-namespace tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run the \
                  test suite as root, as CI does (scripts/test.sh)"
            .to_owned(),
        stderr: String::new(),
    })
}

fn split_program<'a>(args: &'a [&'a str]) -> Result<(&'a str, &'a [&'a str]), HarnessError> {
    args.split_first()
        .map(|(program, rest)| (*program, rest))
        .ok_or_else(|| HarnessError::Tool {
            tool: "netns".to_owned(),
            status: "-".to_owned(),
            message: "exec needs a program to run".to_owned(),
            stderr: String::new(),
        })
}

fn run_ip(args: &[&str]) -> Result<String, HarnessError> {
    let mut command = Command::new("ip");
    command.args(args);
    stdout_of(&mut command, &format!("ip {}", args.join(" ")))
}

/// Runs `command` to completion; stdout on success, else an error with `what` and stderr.
fn stdout_of(command: &mut Command, what: &str) -> Result<String, HarnessError> {
    let output: Output =
        command
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Spawn {
                program: format!(
                    "{} (from iproute2 / util-linux; scripts/setup-test-env.sh installs them)",
                    command.get_program().to_string_lossy()
                ),
                source,
            })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(HarnessError::Tool {
        tool: command.get_program().to_string_lossy().into_owned(),
        status: output.status.to_string(),
        message: format!("`{what}` failed"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), HarnessError> {
    fs::write(path, text).map_err(|source| HarnessError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_our_name_shape() {
        assert_eq!(owner_pid("tmx", "tmx-123-4"), Some(123));
        assert_eq!(owner_pid("tmx-pi", "tmx-pi-77-0"), Some(77));
        assert_eq!(owner_pid("tmx", "tmx-pi-77-0"), None);
        assert_eq!(owner_pid("tmx", "tmx-123"), None);
        assert_eq!(owner_pid("tmx", "tmx-123-4-5"), None);
        assert_eq!(owner_pid("tmx", "tmxx-123-4"), None);
        assert_eq!(owner_pid("tmx", "other-123-4"), None);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("tmx-proxy-init").is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(33)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
