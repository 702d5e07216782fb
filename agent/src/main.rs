//! `taskmesh-agent`: `run` (default) starts the sidecar; `health` is the container health check
//! (exit 0 iff the local agent's `/server_info` says LIVE), so the image needs no curl or shell;
//! `proxy-init` installs the iptables redirect where ECS does not.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use taskmesh_agent::{Agent, Settings};

#[derive(Parser)]
#[command(name = "taskmesh-agent", version, about = "The taskmesh sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar (the default).
    Run(Box<Settings>),
    /// Exit 0 iff the agent's admin `/server_info` reports LIVE.
    Health(HealthArgs),
    /// Install (or with --clean remove) the iptables redirect to the agent.
    ProxyInit(taskmesh_agent::proxy_init::ProxyInitArgs),
}

#[derive(clap::Args)]
struct HealthArgs {
    /// Admin port to ask.
    #[arg(
        long = "admin-port",
        env = "ENVOY_ADMIN_ACCESS_PORT",
        default_value_t = 9901
    )]
    admin_port: u16,
    /// Admin address (ip or ip:port), as the agent's `TASKMESH_ADMIN_ADDR`.
    #[arg(long = "admin-addr", env = "TASKMESH_ADMIN_ADDR")]
    admin_addr: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 2)]
    timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Health(h)) => health(&h),
        Some(Command::Run(s)) => exit(run(*s)),
        Some(Command::ProxyInit(a)) => {
            init_logs("info");
            exit(taskmesh_agent::proxy_init::run(&a).context("proxy-init"))
        }
        None => exit(run(cli.run)),
    }
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("taskmesh-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stdout)
        .try_init();
}

fn run(settings: Settings) -> anyhow::Result<()> {
    init_logs(&settings.log_level);
    let workers = settings.worker_threads();
    // One worker (a task with at most one vCPU: App Mesh's recommended 512 CPU units for the
    // sidecar) runs every connection on this thread, like one nginx worker: no work-stealing
    // queues, no cross-thread wake-ups. More workers get tokio's multi-threaded scheduler.
    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    rt.block_on(async move {
        let handle = Agent::start(settings).await?;
        tracing::info!(workers, "serving");
        wait_for_signal().await?;
        handle.shutdown().await;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    Ok(())
}

fn health(h: &HealthArgs) -> ExitCode {
    match check_live(h) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("taskmesh-agent health: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check_live(h: &HealthArgs) -> anyhow::Result<bool> {
    let addr: SocketAddr = match h.admin_addr.as_deref().filter(|s| !s.is_empty()) {
        None => SocketAddr::from(([127, 0, 0, 1], h.admin_port)),
        Some(s) => s
            .parse::<SocketAddr>()
            .or_else(|_| {
                s.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, h.admin_port))
            })
            .with_context(|| format!("TASKMESH_ADMIN_ADDR {s:?}"))?,
    };
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let t = Duration::from_secs(h.timeout.max(1));
    let mut s =
        TcpStream::connect_timeout(&addr, t).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(t))?;
    s.set_write_timeout(Some(t))?;
    s.write_all(b"GET /server_info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body);
    let json_start = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    let v: serde_json::Value =
        serde_json::from_str(text[json_start..].trim()).context("the admin answer is not JSON")?;
    Ok(v.get("state").and_then(|s| s.as_str()) == Some("LIVE"))
}
