//! `taskmesh-e2e-app`: the application container of the end-to-end tests' tasks, run inside a
//! task's network namespace as the app user (uid 1000), knowing nothing about the mesh.
//!
//! - `serve PORT NAME` answers every HTTP request with `NAME from <peer ip>` (so a test sees
//!   whether a request came through the task's agent, from 127.0.0.1, or straight from another
//!   task), keeping connections alive (hyper, HTTP/1.1).
//! - `get URL COUNT [INTERVAL_MS]` sends COUNT plain `GET URL` requests (names resolved by the
//!   system resolver, i.e. the task's hosts file) and prints one JSON line per request:
//!   `{"t": <epoch ms when the answer arrived>, "status": 200, "body": "…"}` or
//!   `{"t": …, "error": "…"}`.

use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", port, name] => serve(port, name),
        ["get", url, count] => get(url, count, "0"),
        ["get", url, count, interval] => get(url, count, interval),
        _ => Err("usage: taskmesh-e2e-app serve PORT NAME | get URL COUNT [INTERVAL_MS]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("taskmesh-e2e-app: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(port: &str, name: &str) -> Result<(), String> {
    let port: u16 = port.parse().map_err(|e| format!("port {port:?}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async {
        // Dual-stack: IPv4 and IPv6 on one socket.
        let listener = tokio::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
            .await
            .map_err(|e| format!("binding port {port}: {e}"))?;
        eprintln!("serving {name} on port {port}");
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let peer = match peer.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            let body = Bytes::from(format!("{name} from {peer}"));
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

fn get(url: &str, count: &str, interval: &str) -> Result<(), String> {
    let count: u64 = count.parse().map_err(|e| format!("count {count:?}: {e}"))?;
    let interval: u64 = interval
        .parse()
        .map_err(|e| format!("interval {interval:?}: {e}"))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        if i > 0 && interval > 0 {
            std::thread::sleep(Duration::from_millis(interval));
        }
        let line = match agent.get(url).call() {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let body = response
                    .body_mut()
                    .read_to_string()
                    .unwrap_or_else(|e| format!("<unreadable body: {e}>"));
                serde_json::json!({"t": now_ms(), "status": status, "body": body})
            }
            Err(e) => serde_json::json!({"t": now_ms(), "error": e.to_string()}),
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
