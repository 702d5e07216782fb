//! Counting the demo's answers (pure): every response is filed under the weights that were in
//! force at the gateway's agent when the request left ("phases", one per loaded mesh
//! document), and kept for a few seconds in a sliding window for the live view.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::layout::Weights;

/// What one request through the gateway got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The color a colorteller answered.
    Color(String),
    /// Why the request failed (status and body, or the connection error).
    Failed(String),
}

/// The answers received while one set of weights was in force.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Phase {
    /// Version of the gateway agent's document (content hash).
    pub version: String,
    /// The weights of that document.
    pub weights: Weights,
    /// Answers per color.
    pub counts: BTreeMap<String, u64>,
    /// Failed requests.
    pub errors: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

impl Phase {
    /// Successful answers.
    pub fn ok(&self) -> u64 {
        self.counts.values().sum()
    }

    /// All requests.
    pub fn requests(&self) -> u64 {
        self.ok() + self.errors
    }
}

/// Every answer so far.
#[derive(Debug)]
pub struct Tally {
    phases: Vec<Phase>,
    recent: VecDeque<(Instant, Option<String>)>,
    window: Duration,
    started: Instant,
}

impl Tally {
    /// An empty tally whose live window spans `window`.
    pub fn new(window: Duration, now: Instant) -> Tally {
        Tally {
            phases: Vec::new(),
            recent: VecDeque::new(),
            window,
            started: now,
        }
    }

    /// Files `outcome`, received at `now` for a request sent under document `version`, whose
    /// weights `weights` computes (called once per new version).
    pub fn record(
        &mut self,
        now: Instant,
        version: &str,
        weights: impl FnOnce() -> Weights,
        outcome: Outcome,
    ) {
        let index = match self.phases.iter().rposition(|p| p.version == version) {
            Some(i) => i,
            None => {
                self.phases.push(Phase {
                    version: version.to_owned(),
                    weights: weights(),
                    ..Phase::default()
                });
                self.phases.len() - 1
            }
        };
        let phase = &mut self.phases[index];
        let color = match outcome {
            Outcome::Color(c) => {
                *phase.counts.entry(c.clone()).or_default() += 1;
                Some(c)
            }
            Outcome::Failed(why) => {
                phase.errors += 1;
                phase.last_error = Some(why);
                None
            }
        };
        self.recent.push_back((now, color));
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.recent.front() {
            if now.saturating_duration_since(*t) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// The phases, oldest first.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// Answers per color and failures within the window ending at `now`.
    pub fn window(&mut self, now: Instant) -> (BTreeMap<String, u64>, u64) {
        self.expire(now);
        let mut counts = BTreeMap::new();
        let mut errors = 0;
        for (_, c) in &self.recent {
            match c {
                Some(c) => *counts.entry(c.clone()).or_default() += 1,
                None => errors += 1,
            }
        }
        (counts, errors)
    }

    /// The window's length.
    pub fn window_length(&self) -> Duration {
        self.window
    }

    /// Answers per color and failures over every phase.
    pub fn totals(&self) -> (BTreeMap<String, u64>, u64) {
        let mut counts = BTreeMap::new();
        let mut errors = 0;
        for p in &self.phases {
            for (c, n) in &p.counts {
                *counts.entry(c.clone()).or_default() += n;
            }
            errors += p.errors;
        }
        (counts, errors)
    }

    /// Requests answered per second since the tally started.
    pub fn rate(&self, now: Instant) -> f64 {
        let (counts, errors) = self.totals();
        let n = counts.values().sum::<u64>() + errors;
        let secs = now.saturating_duration_since(self.started).as_secs_f64();
        if secs > 0.0 { n as f64 / secs } else { 0.0 }
    }

    /// The headless report: totals, the split measured against the weights of the last phase,
    /// and every phase on its own.
    pub fn report(&self, mesh_document: &str) -> Value {
        let (counts, errors) = self.totals();
        let ok: u64 = counts.values().sum();
        let current = self
            .phases
            .last()
            .map(|p| p.weights.clone())
            .unwrap_or_default();
        let measured: BTreeMap<&String, f64> =
            counts.iter().map(|(c, n)| (c, share(*n, ok))).collect();
        json!({
            "meshDocument": mesh_document,
            "requests": ok + errors,
            "ok": ok,
            "errors": errors,
            "counts": counts,
            "measured": measured,
            "route": current.route,
            "weights": weights_json(&current),
            "expected": expected_json(&current),
            "phases": self.phases.iter().map(|p| json!({
                "version": p.version,
                "route": p.weights.route,
                "weights": weights_json(&p.weights),
                "expected": expected_json(&p.weights),
                "requests": p.requests(),
                "errors": p.errors,
                "lastError": p.last_error,
                "counts": p.counts,
                "measured": p.counts.iter().map(|(c, n)| (c.clone(), json!(share(*n, p.ok())))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// `n / of`, 0 when `of` is 0.
pub fn share(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

fn weights_json(w: &Weights) -> Value {
    Value::Object(
        w.targets
            .iter()
            .map(|(c, n)| (c.clone(), json!(n)))
            .collect(),
    )
}

fn expected_json(w: &Weights) -> Value {
    Value::Object(
        w.targets
            .iter()
            .map(|(c, _)| (c.clone(), json!(w.share(c))))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(targets: &[(&str, u32)]) -> Weights {
        Weights {
            route: "canary".into(),
            targets: targets.iter().map(|(c, w)| ((*c).into(), *w)).collect(),
        }
    }

    #[test]
    fn answers_are_filed_per_phase_and_expire_from_the_window() {
        let t0 = Instant::now();
        let mut tally = Tally::new(Duration::from_secs(5), t0);
        let w1 = || weights(&[("white", 3), ("blue", 1)]);
        tally.record(t0, "v1", w1, Outcome::Color("white".into()));
        tally.record(t0, "v1", w1, Outcome::Color("blue".into()));
        tally.record(t0, "v1", w1, Outcome::Failed("502".into()));
        let later = t0 + Duration::from_secs(6);
        let w2 = || weights(&[("black", 1)]);
        tally.record(later, "v2", w2, Outcome::Color("black".into()));
        assert_eq!(tally.phases().len(), 2);
        assert_eq!(tally.phases()[0].requests(), 3);
        assert_eq!(tally.phases()[0].last_error.as_deref(), Some("502"));
        let (window, errors) = tally.window(later);
        assert_eq!((window.len(), window["black"], errors), (1, 1, 0));
        let (totals, errors) = tally.totals();
        assert_eq!((totals["white"], totals["black"], errors), (1, 1, 1));

        let report = tally.report("/tmp/mesh.yaml");
        assert_eq!(report["requests"], 4);
        assert_eq!(report["errors"], 1);
        assert_eq!(report["weights"], json!({"black": 1}));
        assert_eq!(report["phases"][0]["expected"]["white"], json!(0.75));
        assert_eq!(report["phases"][1]["measured"]["black"], json!(1.0));
    }
}
