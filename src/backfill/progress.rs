//! Progress of a backfill run: a bar on a terminal, a log line every few seconds otherwise, and the summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::{Progress, Summary};

/// A progress sink the CLI can close.
pub trait Reporter: Progress {
    fn finish(&mut self);
}

/// A bar on a terminal (stderr), else a log line every five seconds.
pub fn for_terminal(dry_run: bool) -> Box<dyn Reporter> {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} users, {per_sec}, about {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(if dry_run { "backfill (dry run)" } else { "backfill" });
        bar.enable_steady_tick(Duration::from_millis(200));
        Box::new(Bar(bar))
    } else {
        Box::new(Lines {
            started: Instant::now(),
            last: Instant::now(),
            total: None,
        })
    }
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn total(&mut self, total: u64) {
        self.0.set_length(total);
    }

    fn page(&mut self, summary: &Summary) {
        self.0.set_position(summary.scanned);
    }
}

impl Reporter for Bar {
    fn finish(&mut self) {
        self.0.finish_and_clear();
    }
}

struct Lines {
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl Progress for Lines {
    fn total(&mut self, total: u64) {
        self.total = Some(total);
    }

    fn page(&mut self, summary: &Summary) {
        if self.last.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last = Instant::now();
        let rate = summary.scanned as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let left = self
            .total
            .map(|t| t.saturating_sub(summary.scanned) as f64 / rate.max(1.0))
            .map(|s| format!(", about {s:.0} s left"))
            .unwrap_or_default();
        tracing::info!(
            scanned = summary.scanned,
            total = self.total,
            created = summary.created,
            updated = summary.updated,
            "backfill: {:.0} users/s{left}",
            rate
        );
    }
}

impl Reporter for Lines {
    fn finish(&mut self) {}
}

/// The closing summary, one line.
pub fn describe(s: &Summary, dry_run: bool) -> String {
    format!(
        "backfill{}{}: {} scanned; {} created, {} updated, {} unchanged, {} tombstoned by prune, {} skipped because \
         tombstoned, {} failed; {:.1} s",
        if dry_run {
            " (dry run, nothing written: what would change)"
        } else {
            ""
        },
        if s.resumed { ", resumed" } else { "" },
        s.scanned,
        s.created,
        s.updated,
        s.unchanged,
        s.pruned,
        s.skipped_tombstoned,
        s.failed,
        s.duration.as_secs_f64()
    )
}
