//! The progress bar of `influx-ha repair`: pieces (series × time range) done, points copied,
//! copy rate and time left. Drawn on stderr only when it is a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of one repair run.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    points: AtomicU64,
    started: Instant,
}

impl Progress {
    /// A bar on stderr (hidden when stderr is not a terminal), or none at all.
    pub fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} pieces, {msg}, {elapsed} elapsed, {eta} left",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Self {
            bar,
            points: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// A copy pass over `pieces` differing pieces begins.
    pub fn start_pass(&self, pass: u32, pieces: u64) {
        self.bar.set_prefix(format!("pass {pass}"));
        self.bar.set_length(pieces);
        self.bar.set_position(0);
        self.bar.reset_eta();
        self.show_points();
    }

    /// One piece is copied.
    pub fn piece_done(&self) {
        self.bar.inc(1);
    }

    /// `n` more points were copied.
    pub fn points(&self, n: u64) {
        self.points.fetch_add(n, Ordering::Relaxed);
        self.show_points();
    }

    fn show_points(&self) {
        let points = self.points.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{points} points copied ({:.0} points/s)",
            points as f64 / secs
        ));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
