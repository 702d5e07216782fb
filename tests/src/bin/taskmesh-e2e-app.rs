//! `taskmesh-e2e-app`: the application container of the end-to-end tests' tasks, run inside a
//! task's network namespace as the app user (uid 1000), knowing nothing about the mesh.
//!
//! - `serve PORT NAME` answers every HTTP request with `NAME from <peer ip>` (so a test sees
//!   whether a request came through the task's agent, from 127.0.0.1, or straight from another
//!   task), keeping connections alive.
//! - `get URL COUNT [INTERVAL_MS]` sends COUNT plain `GET URL` requests (names resolved by the
//!   system resolver, i.e. the task's hosts file) and prints one JSON line per request:
//!   `{"t": <epoch ms when the answer arrived>, "status": 200, "body": "…"}` or
//!   `{"t": …, "error": "…"}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    // Dual-stack: IPv4 and IPv6 on one socket.
    let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
        .map_err(|e| format!("binding port {port}: {e}"))?;
    eprintln!("serving {name} on port {port}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let name = name.to_owned();
        std::thread::spawn(move || {
            let _ = answer(stream, &name);
        });
    }
    Ok(())
}

/// Answers the requests of one keep-alive connection until the peer closes it.
fn answer(stream: TcpStream, name: &str) -> std::io::Result<()> {
    let peer = match stream.peer_addr()?.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    };
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut content_length = 0usize;
        let mut close = false;
        let mut first = true;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        std::io::copy(
            &mut (&mut reader).take(content_length as u64),
            &mut std::io::sink(),
        )?;
        let body = format!("{name} from {peer}");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
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
