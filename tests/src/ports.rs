//! Free TCP ports on the loopback interface for servers started by tests.
//!
//! The kernel picks an unused port; ports handed out by this process are remembered so that two
//! tests running in parallel threads never receive the same one.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A TCP port that is free on 127.0.0.1 right now and was not returned before in this process.
///
/// Panics only if the kernel cannot bind an ephemeral port at all.
pub fn free_port() -> u16 {
    let mut seen = handed_out()
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|err| panic!("cannot bind an ephemeral port on 127.0.0.1: {err}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("bound socket has no local address: {err}"))
            .port();
        if seen.insert(port) {
            return port;
        }
    }
    panic!("the kernel returned only already-used ephemeral ports 64 times in a row")
}
