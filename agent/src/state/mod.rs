//! The agent's lifecycle state (Envoy's `server_info.state`): INITIALIZING until the first good
//! mesh document, LIVE while serving, DRAINING after SIGTERM, `/drain_listeners` or
//! `/healthcheck/fail` — each with the reason an operator reads on `/server_info`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::watch;

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No good mesh document yet: not ready.
    Initializing,
    /// Serving with a good table.
    Live,
    /// Going away (or health check failed on purpose): not ready, finishing in-flight work.
    Draining,
}

impl State {
    /// Envoy's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initializing => "INITIALIZING",
            State::Live => "LIVE",
            State::Draining => "DRAINING",
        }
    }
}

/// Shared, thread-safe state holder with the reason for the current state.
#[derive(Debug)]
pub struct Lifecycle {
    state: AtomicU8,
    reason: Mutex<String>,
    /// Fires (true) when listeners must stop accepting.
    drain_tx: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new()
    }
}

impl Lifecycle {
    /// Starts INITIALIZING.
    pub fn new() -> Lifecycle {
        let (drain_tx, _) = watch::channel(false);
        Lifecycle {
            state: AtomicU8::new(0),
            reason: Mutex::new("no mesh document loaded yet".into()),
            drain_tx,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Initializing,
            1 => State::Live,
            _ => State::Draining,
        }
    }

    /// Why the agent is in this state (empty when LIVE and healthy).
    pub fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Records why the agent is still INITIALIZING (no effect once LIVE or DRAINING).
    pub fn set_initializing_reason(&self, why: impl Into<String>) {
        if self.state() == State::Initializing
            && let Ok(mut r) = self.reason.lock()
        {
            *r = why.into();
        }
    }

    /// A good table is in place: INITIALIZING -> LIVE (DRAINING stays DRAINING).
    pub fn mark_live(&self) {
        if self
            .state
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && let Ok(mut r) = self.reason.lock()
        {
            r.clear();
        }
    }

    /// -> DRAINING with a reason; listeners are told to stop accepting when `stop_accepting`.
    pub fn drain(&self, why: impl Into<String>, stop_accepting: bool) {
        self.state.store(2, Ordering::Release);
        if let Ok(mut r) = self.reason.lock() {
            *r = why.into();
        }
        if stop_accepting {
            self.drain_tx.send_replace(true);
        }
    }

    /// A receiver that turns true when listeners must stop accepting.
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let l = Lifecycle::new();
        assert_eq!(l.state(), State::Initializing);
        l.set_initializing_reason("source down");
        assert_eq!(l.reason(), "source down");
        l.mark_live();
        assert_eq!(l.state(), State::Live);
        assert_eq!(l.reason(), "");
        l.set_initializing_reason("ignored");
        assert_eq!(l.reason(), "");
        let rx = l.drain_signal();
        l.drain("SIGTERM", true);
        assert_eq!(l.state(), State::Draining);
        assert!(*rx.borrow());
        l.mark_live();
        assert_eq!(l.state(), State::Draining);
    }
}
