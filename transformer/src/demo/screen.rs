//! The demo's live view (pure rendering): a table of the responses per color in the last few
//! seconds against the weights in force, redrawn in place with plain ANSI escapes on a
//! terminal, or printed as one summary line per refresh when the output is not a terminal.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::layout::Weights;
use super::tally::share;

/// Moves the cursor home and clears the screen.
pub const CLEAR: &str = "\x1b[H\x1b[2J";
/// Hides the cursor while the table is redrawn.
pub const HIDE_CURSOR: &str = "\x1b[?25l";
/// Shows it again.
pub const SHOW_CURSOR: &str = "\x1b[?25h";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";
/// Width of the bars in the table.
const BAR: usize = 30;

/// What one refresh shows.
#[derive(Debug, Clone, PartialEq)]
pub struct View<'a> {
    /// `colorgateway -> colorteller.colorapp.local`.
    pub title: &'a str,
    /// The file the user edits.
    pub mesh_document: &'a str,
    /// Weights in force at the gateway's agent.
    pub weights: &'a Weights,
    /// Colors the demo runs a colorteller for (shown even with weight 0).
    pub colors: &'a [String],
    /// Answers per color in the window.
    pub window: &'a BTreeMap<String, u64>,
    /// Failures in the window.
    pub window_errors: u64,
    /// The window's length.
    pub window_length: Duration,
    /// Answers per color since the start.
    pub totals: &'a BTreeMap<String, u64>,
    /// Failures since the start.
    pub total_errors: u64,
    /// Requests per second since the start.
    pub rate: f64,
    /// The mesh document's state (`applied at …`, or why it was rejected).
    pub document_state: &'a str,
    /// The last failure, if any.
    pub last_error: Option<&'a str>,
}

impl View<'_> {
    /// Every color to show: the demo's colorteller colors, then any other target or answer.
    fn rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = self.colors.to_vec();
        let extra = self
            .weights
            .targets
            .iter()
            .map(|(c, _)| c)
            .chain(self.window.keys())
            .chain(self.totals.keys());
        for c in extra {
            if !rows.contains(c) {
                rows.push(c.clone());
            }
        }
        rows
    }
}

fn bar(fraction: f64) -> String {
    let full = ((fraction.clamp(0.0, 1.0) * BAR as f64).round()) as usize;
    format!("{}{}", "█".repeat(full), "·".repeat(BAR - full))
}

/// The full-screen table (starting with [`CLEAR`]).
pub fn render_table(view: &View<'_>) -> String {
    let mut out = String::new();
    let ok: u64 = view.window.values().sum();
    let secs = view.window_length.as_secs();
    let _ = writeln!(out, "{CLEAR}{BOLD}taskmesh demo{RESET}  {}", view.title);
    let _ = writeln!(
        out,
        "Edit {BOLD}{}{RESET} (routes → weightedTargets → weight) and save: the agents pick it up within seconds.",
        view.mesh_document
    );
    let _ = writeln!(out, "{DIM}mesh document: {}{RESET}", view.document_state);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{BOLD}{:<10} {:>6} {:>9} {:>9}  {:<BAR$}  {:>9}{RESET}",
        "color",
        "weight",
        "expected",
        format!("last {secs}s"),
        "measured split",
        "total"
    );
    for color in view.rows() {
        let expected = view.weights.share(&color);
        let n = view.window.get(&color).copied().unwrap_or(0);
        let measured = share(n, ok);
        let _ = writeln!(
            out,
            "{:<10} {:>6} {:>8.1}% {:>8.1}%  {}  {:>9}",
            color,
            view.weights.of(&color),
            expected * 100.0,
            measured * 100.0,
            bar(measured),
            view.totals.get(&color).copied().unwrap_or(0)
        );
    }
    let failed = share(view.window_errors, ok + view.window_errors);
    let (on, off) = if view.window_errors > 0 {
        (RED, RESET)
    } else {
        ("", "")
    };
    let _ = writeln!(
        out,
        "{on}{:<10} {:>6} {:>9} {:>8.1}%  {:<BAR$}  {:>9}{off}",
        "errors",
        "",
        "",
        failed * 100.0,
        "",
        view.total_errors
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "route {}: {:.1} requests/s through colorgateway's agent -> colorgateway -> its agent -> colorteller's agent -> colorteller",
        view.weights.route, view.rate
    );
    if let Some(e) = view.last_error {
        let _ = writeln!(out, "{RED}last error: {e}{RESET}");
    }
    let _ = writeln!(out, "{DIM}Ctrl-C stops the demo.{RESET}");
    out
}

/// One plain line (no escapes) for output that is not a terminal.
pub fn render_line(view: &View<'_>) -> String {
    let ok: u64 = view.window.values().sum();
    let parts: Vec<String> = view
        .rows()
        .iter()
        .map(|c| {
            let n = view.window.get(c).copied().unwrap_or(0);
            format!(
                "{c} {:.1}% (weight {})",
                share(n, ok) * 100.0,
                view.weights.of(c)
            )
        })
        .collect();
    format!(
        "last {}s: {}; errors {}; {:.1} req/s; mesh document: {}",
        view.window_length.as_secs(),
        parts.join(", "),
        view.window_errors,
        view.rate,
        view.document_state
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_weights_against_the_measured_split() {
        let weights = Weights {
            route: "canary".into(),
            targets: vec![("white".into(), 3), ("blue".into(), 1)],
        };
        let window = BTreeMap::from([("white".to_string(), 75), ("blue".to_string(), 25)]);
        let colors = vec!["white".to_string(), "blue".to_string(), "black".to_string()];
        let view = View {
            title: "colorgateway -> colorteller.colorapp.local",
            mesh_document: "/tmp/x/mesh.yaml",
            weights: &weights,
            colors: &colors,
            window: &window,
            window_errors: 0,
            window_length: Duration::from_secs(5),
            totals: &window,
            total_errors: 0,
            rate: 20.0,
            document_state: "applied",
            last_error: None,
        };
        let table = render_table(&view);
        assert!(table.starts_with(CLEAR));
        assert!(table.contains("/tmp/x/mesh.yaml"));
        let white = table.lines().find(|l| l.starts_with("white")).expect("row");
        assert!(
            white.contains("75.0%") && white.contains(&"█".repeat(23)),
            "{white}"
        );
        let black = table.lines().find(|l| l.starts_with("black")).expect("row");
        assert!(black.contains("0.0%"), "{black}");
        let line = render_line(&view);
        assert!(!line.contains('\x1b'));
        assert!(line.contains("white 75.0% (weight 3)"), "{line}");
    }
}
