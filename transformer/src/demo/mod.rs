//! `taskmesh demo`: the example application (templates/colorapp/mesh.yaml) running locally,
//! with no AWS and no root, each task behind its own taskmesh agent in explicit mode.
//!
//! What runs, all in this process on real loopback sockets: one agent per virtual node
//! ([`taskmesh_agent::Agent`]) listening on its own address `127.0.77.<n>`, the colorgateway and
//! one colorteller per color ([`apps`]) on `127.0.0.1`, and a load of requests through the
//! gateway. A request goes: the gateway's agent (ingress) -> colorgateway -> the gateway's agent
//! (egress, routed by `Host: colorteller.colorapp.local` and the route's weights) -> the chosen
//! colorteller's agent (ingress) -> colorteller, which answers its color.
//!
//! The user edits a mesh document (a temporary copy of the bundled one, or `--mesh-doc`); the
//! demo renders each good version for the agents ([`meshfile`], [`layout`]), and the agents
//! reload it. The split of answers per color is counted per loaded document ([`tally`]) and
//! shown live against the weights in force ([`screen`]), or printed as JSON
//! (`--requests N --json`). Ctrl-C (or SIGTERM) stops everything the demo started.

pub mod apps;
pub mod layout;
pub mod meshfile;
pub mod screen;
pub mod tally;

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use taskmesh_agent::{Agent, AgentHandle, Settings};
use taskmesh_mesh::MeshDocument;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{Location, TransformError};
use layout::{Application, GATEWAY_NODE, Placement};
use meshfile::{FileState, MeshFile};
use tally::{Outcome, Tally};

/// The example application's mesh document, as bundled from `templates/colorapp/mesh.yaml`.
pub const BUNDLED_MESH_DOCUMENT: &str = include_str!("../../../templates/colorapp/mesh.yaml");
/// The agents listen on `127.0.77.<n>` (the whole 127.0.0.0/8 is loopback on Linux).
const AGENT_NET: [u8; 3] = [127, 0, 77];
/// Requests per second when running until Ctrl-C.
const INTERACTIVE_RATE: f64 = 50.0;
/// The sliding window of the live view.
const WINDOW: Duration = Duration::from_secs(5);
/// How often the user's file is checked for changes.
const FILE_POLL: Duration = Duration::from_millis(250);
/// How long the agents may take to load their first document.
const LIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// `taskmesh demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Send N requests, then stop [default: run until Ctrl-C]
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Print the measured split as JSON when done, instead of the live table
    #[arg(long)]
    pub json: bool,
    /// Mesh document to run and watch for edits [default: a temporary copy of the bundled
    /// templates/colorapp/mesh.yaml]
    #[arg(long, value_name = "PATH")]
    pub mesh_doc: Option<PathBuf>,
    /// Requests per second, 0 for as fast as possible [default: 50, or 0 with --requests]
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Requests in flight at once
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrency: usize,
}

/// Runs the demo; returns the exit code.
pub fn run(args: &DemoArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let code = runtime.block_on(demo(args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

fn usage(path: &Path, message: impl Into<String>) -> anyhow::Error {
    TransformError::Usage {
        location: Location::file(path.display().to_string()),
        message: message.into(),
    }
    .into()
}

/// A task of the demo: its node, where it sits, its agent.
struct Task {
    place: Placement,
    agent: AgentHandle,
}

async fn demo(args: &DemoArgs) -> anyhow::Result<i32> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let rate = args.rate.unwrap_or(if args.requests.is_some() {
        0.0
    } else {
        INTERACTIVE_RATE
    });
    if !rate.is_finite() || rate < 0.0 {
        bail!("--rate must be a number of requests per second (0 for as fast as possible)");
    }
    let state = tempfile::Builder::new()
        .prefix("taskmesh-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let user_doc = match &args.mesh_doc {
        Some(p) => p.clone(),
        None => {
            let p = state.path().join("mesh.yaml");
            std::fs::write(&p, BUNDLED_MESH_DOCUMENT)
                .with_context(|| format!("writing {}", p.display()))?;
            p
        }
    };
    let bytes =
        std::fs::read(&user_doc).with_context(|| format!("reading {}", user_doc.display()))?;
    let doc = MeshDocument::from_slice(&bytes).map_err(|e| usage(&user_doc, e.to_string()))?;
    let app = Application::from_document(&doc).map_err(|e| usage(&user_doc, e.to_string()))?;

    // Each task: its app's listener on 127.0.0.1, its agent on 127.0.77.<n> at the same port.
    let mut placements = Vec::new();
    let mut listeners = Vec::new();
    for (i, node) in app.nodes().into_iter().enumerate() {
        let host = u8::try_from(i + 1)
            .ok()
            .filter(|h| *h < u8::MAX)
            .ok_or_else(|| {
                usage(
                    &user_doc,
                    "too many virtual nodes for the demo (at most 254)",
                )
            })?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding an app port on 127.0.0.1")?;
        let [a, b, c] = AGENT_NET;
        placements.push(Placement {
            node,
            agent_ip: Ipv4Addr::new(a, b, c, host),
            app_port: listener.local_addr()?.port(),
        });
        listeners.push(listener);
    }
    let runtime_doc = state.path().join("agents-mesh.json");
    let mut mesh_file = MeshFile::new(&user_doc, &runtime_doc, state.path(), placements.clone());
    if let Some(FileState::Rejected(why)) = mesh_file.sync() {
        return Err(usage(&user_doc, why));
    }

    let mut tasks = Vec::new();
    for place in &placements {
        let agent = start_agent(&doc, place, &runtime_doc, state.path()).await?;
        tasks.push(Task {
            place: place.clone(),
            agent,
        });
    }
    for t in &tasks {
        if !t.agent.wait_live(LIVE_TIMEOUT).await {
            bail!(
                "the agent of {} did not load {} within {LIVE_TIMEOUT:?}",
                t.place.node,
                runtime_doc.display()
            );
        }
    }
    let gateway = &tasks[0];
    let mut servers: Vec<JoinHandle<()>> = Vec::new();
    let mut listeners = listeners.into_iter();
    if let Some(l) = listeners.next() {
        servers.push(apps::colorgateway(
            l,
            gateway.agent.egress_addr,
            app.backend.clone(),
        ));
    }
    for (teller, l) in app.tellers.iter().zip(listeners) {
        servers.push(apps::colorteller(l, teller.color.clone()));
    }

    introduce(&app, &tasks, &user_doc, state.path(), args);

    let tally = Arc::new(Mutex::new(Tally::new(WINDOW, Instant::now())));
    let file_state = Arc::new(Mutex::new(FileState::Applied(meshfile::time_of_day(
        std::time::SystemTime::now(),
    ))));
    let table_on_terminal = std::io::stdout().is_terminal() && !args.json;
    let watcher = tokio::spawn(watch_file(mesh_file, file_state.clone(), table_on_terminal));
    let entry = SocketAddr::new(IpAddr::V4(gateway.place.agent_ip), gateway.place.app_port);
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(load(
            Load {
                entry,
                backend: app.backend.clone(),
                limit: args.requests,
                interval: (rate > 0.0)
                    .then(|| Duration::from_secs_f64(args.concurrency as f64 / rate)),
            },
            gateway.agent.shared().clone(),
            issued.clone(),
            tally.clone(),
        ));
    }
    let terminal = table_on_terminal;
    let shown = Shown {
        title: format!("{}: {GATEWAY_NODE} -> {}", app.mesh, app.backend),
        mesh_document: user_doc.display().to_string(),
        colors: app.tellers.iter().map(|t| t.color.clone()).collect(),
        initial: layout::weights(&doc, &app.backend).unwrap_or_default(),
    };
    let display = {
        let (tally, file_state, shown) = (tally.clone(), file_state.clone(), shown.clone());
        let json = args.json;
        tokio::spawn(async move {
            if json {
                return;
            }
            let every = if terminal {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            };
            if terminal {
                print!("{}", screen::HIDE_CURSOR);
            }
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let text = shown.render(&tally, &file_state, terminal);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        })
    };

    let done = async { while workers.join_next().await.is_some() {} };
    let stopped_by_signal = tokio::select! {
        _ = done => false,
        r = stop_signal() => { r?; true }
    };
    display.abort();
    let _ = display.await;
    watcher.abort();
    if terminal {
        print!("{}", screen::SHOW_CURSOR);
    }
    if args.json {
        let report = lock(&tally).report(&user_doc.display().to_string());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", shown.render(&tally, &file_state, false));
    }
    if stopped_by_signal {
        eprintln!("taskmesh demo: stopping (signal)");
    }
    for s in &servers {
        s.abort();
    }
    for t in tasks {
        t.agent.shutdown().await;
    }
    for s in servers {
        let _ = s.await;
    }
    eprintln!("taskmesh demo: stopped; removed {}", state.path().display());
    drop(state);
    Ok(0)
}

async fn start_agent(
    doc: &MeshDocument,
    place: &Placement,
    runtime_doc: &Path,
    dir: &Path,
) -> anyhow::Result<AgentHandle> {
    let mut settings = Settings::new(
        layout::node_ref(doc, &place.node),
        format!("file://{}", runtime_doc.display()),
    );
    settings.listen_addr = IpAddr::V4(place.agent_ip);
    settings.ingress_port = place.app_port;
    settings.egress_port = 0;
    settings.admin_addr = Some(format!("{}:0", place.agent_ip));
    settings.poll_seconds = 1;
    settings.drain_seconds = 0;
    settings.cache = dir.join(format!("{}.last-good.json", place.node));
    Agent::start(settings).await.with_context(|| {
        format!(
            "starting the agent of {} on {} (the demo needs the 127.0.0.0/8 loopback range, as on Linux)",
            place.node, place.agent_ip
        )
    })
}

fn introduce(app: &Application, tasks: &[Task], user_doc: &Path, dir: &Path, args: &DemoArgs) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(
        e,
        "taskmesh demo: mesh {} running locally (no AWS, no root), one agent per task:",
        app.mesh
    );
    for t in tasks {
        let a = &t.agent;
        let _ = writeln!(
            e,
            "  {:<20} app 127.0.0.1:{:<5}  agent ingress {}  egress {}  admin http://{}",
            t.place.node, t.place.app_port, a.ingress_addr, a.egress_addr, a.admin_addr
        );
    }
    if let Some(g) = tasks.first() {
        let _ = writeln!(
            e,
            "gateway: curl http://{}/   (through the gateway's agent)",
            g.agent.ingress_addr
        );
    }
    let _ = writeln!(e, "access logs: {}/<node>.access.log", dir.display());
    let _ = writeln!(
        e,
        "edit the weights in {} and save: the agents reload it within seconds{}",
        user_doc.display(),
        if args.mesh_doc.is_none() {
            " (a temporary copy, removed when the demo stops)"
        } else {
            ""
        }
    );
    let _ = writeln!(e, "taskmesh demo: ready");
}

/// Re-reads the user's file every [`FILE_POLL`] and reports changes on stderr, except on the
/// terminal the live table is drawn on (the table shows the state there).
async fn watch_file(mut file: MeshFile, state: Arc<Mutex<FileState>>, table_on_terminal: bool) {
    let mut tick = tokio::time::interval(FILE_POLL);
    loop {
        tick.tick().await;
        if let Some(new) = file.sync() {
            if !(table_on_terminal && std::io::stderr().is_terminal()) {
                eprintln!("taskmesh demo: mesh document {new}");
            }
            *lock(&state) = new;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One load worker's settings.
struct Load {
    entry: SocketAddr,
    backend: String,
    limit: Option<u64>,
    interval: Option<Duration>,
}

/// Sends requests to the gateway (through its agent) until the shared count reaches the limit
/// (or forever), filing each answer under the gateway agent's document version.
async fn load(
    cfg: Load,
    gateway: Arc<taskmesh_agent::agent::Shared>,
    issued: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
) {
    let client = apps::http_client();
    let mut tick = cfg.interval.map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        if let Some(limit) = cfg.limit
            && issued.fetch_add(1, Ordering::Relaxed) >= limit
        {
            return;
        }
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let Some(active) = gateway.config.load_full() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let request = Request::get(format!("http://{}/", cfg.entry))
            .header(header::HOST, GATEWAY_NODE)
            .body(Empty::<Bytes>::new());
        let outcome = match request {
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(request) => match apps::get(&client, request).await {
                Ok((StatusCode::OK, body)) => {
                    Outcome::Color(String::from_utf8_lossy(&body).trim().to_owned())
                }
                Ok((status, body)) => Outcome::Failed(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body).trim()
                )),
                Err(why) => Outcome::Failed(why),
            },
        };
        lock(&tally).record(
            Instant::now(),
            &active.version,
            || layout::weights_in(&active.table, &cfg.backend).unwrap_or_default(),
            outcome,
        );
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// The fixed parts of the live view.
#[derive(Clone)]
struct Shown {
    title: String,
    mesh_document: String,
    colors: Vec<String>,
    /// The weights of the document the demo started with, until the first answer arrives.
    initial: layout::Weights,
}

impl Shown {
    fn render(&self, tally: &Mutex<Tally>, file: &Mutex<FileState>, table: bool) -> String {
        let now = Instant::now();
        let mut t = lock(tally);
        let (window, window_errors) = t.window(now);
        let (totals, total_errors) = t.totals();
        let last = t.phases().last();
        let weights = last.map_or_else(|| self.initial.clone(), |p| p.weights.clone());
        let last_error = t.phases().iter().rev().find_map(|p| p.last_error.clone());
        let document_state = lock(file).to_string();
        let view = screen::View {
            title: &self.title,
            mesh_document: &self.mesh_document,
            weights: &weights,
            colors: &self.colors,
            window: &window,
            window_errors,
            window_length: t.window_length(),
            totals: &totals,
            total_errors,
            rate: t.rate(now),
            document_state: &document_state,
            last_error: last_error.as_deref(),
        };
        if table {
            screen::render_table(&view)
        } else {
            screen::render_line(&view)
        }
    }
}
