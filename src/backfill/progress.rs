//! Progress of a backfill run: a bar per walk on a terminal, a log line every few seconds otherwise, and the
//! summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::{walk_name, Progress, Summary, Tally, Walked, WALKS};
use crate::store::Kind;

/// A progress sink the CLI can close.
pub trait Reporter: Progress {
    fn finish(&mut self);
}

/// A bar on a terminal (stderr), else a log line every five seconds.
pub fn for_terminal(dry_run: bool) -> Box<dyn Reporter> {
    let label = if dry_run { "backfill (dry run)" } else { "backfill" };
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len}, {per_sec}, about {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label);
        bar.enable_steady_tick(Duration::from_millis(200));
        Box::new(Bar { bar, label })
    } else {
        Box::new(Lines {
            started: Instant::now(),
            last: Instant::now(),
            total: None,
        })
    }
}

struct Bar {
    bar: indicatif::ProgressBar,
    label: &'static str,
}

impl Progress for Bar {
    fn start(&mut self, kind: Kind, total: Option<u64>) {
        // One bar, reset for each walk: its rate and time left are that walk's.
        self.bar.reset();
        self.bar.set_message(format!("{} {}", self.label, walk_name(kind)));
        match total {
            Some(total) => self.bar.set_length(total),
            None => self.bar.unset_length(),
        }
    }

    fn page(&mut self, _kind: Kind, tally: &Tally) {
        // A resumed walk starts at its checkpoint; the length is Clerk's total (an estimate for memberships).
        if self.bar.length().is_some_and(|len| tally.scanned > len) {
            self.bar.set_length(tally.scanned);
        }
        self.bar.set_position(tally.scanned);
    }
}

impl Reporter for Bar {
    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

struct Lines {
    started: Instant,
    last: Instant,
    total: Option<u64>,
}

impl Progress for Lines {
    fn start(&mut self, kind: Kind, total: Option<u64>) {
        self.started = Instant::now();
        self.last = Instant::now();
        self.total = total;
        tracing::info!(
            walk = walk_name(kind),
            total,
            "backfill: walking Clerk's {}",
            walk_name(kind)
        );
    }

    fn page(&mut self, kind: Kind, tally: &Tally) {
        if self.last.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last = Instant::now();
        let rate = tally.scanned as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let left = self
            .total
            .filter(|t| *t > tally.scanned)
            .map(|t| (t - tally.scanned) as f64 / rate.max(1.0))
            .map(|s| format!(", about {s:.0} s left"))
            .unwrap_or_default();
        tracing::info!(
            walk = walk_name(kind),
            scanned = tally.scanned,
            total = self.total,
            created = tally.created,
            updated = tally.updated,
            "backfill: {:.0} {}/s{left}",
            rate,
            walk_name(kind)
        );
    }
}

impl Reporter for Lines {
    fn finish(&mut self) {}
}

/// The closing summary: a heading, then one line per walk the run was asked for.
pub fn describe(s: &Summary, dry_run: bool) -> String {
    let mut text = format!(
        "backfill{}: {:.1} s",
        if dry_run {
            " (dry run, nothing written: what would change)"
        } else {
            ""
        },
        s.duration.as_secs_f64()
    );
    for kind in WALKS {
        let t = s.of(kind);
        let line = match t.walked {
            Walked::No => continue,
            Walked::Earlier => "completed by the interrupted run this one continued".to_owned(),
            Walked::NotEnabled => "skipped: organizations are not enabled on this Clerk instance".to_owned(),
            Walked::Fresh | Walked::Resumed => format!(
                "{}{} scanned; {} created, {} updated, {} unchanged, {} tombstoned by prune, {} skipped because \
                 tombstoned, {} failed",
                if t.resumed() { "resumed, " } else { "" },
                t.scanned,
                t.created,
                t.updated,
                t.unchanged,
                t.pruned,
                t.skipped_tombstoned,
                t.failed
            ),
        };
        text.push_str(&format!("\n  {}: {line}", walk_name(kind)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_has_a_line_per_walk_asked_for() {
        let summary = Summary {
            users: Tally {
                walked: Walked::Earlier,
                ..Tally::default()
            },
            organizations: Tally {
                walked: Walked::Resumed,
                scanned: 600,
                created: 100,
                unchanged: 500,
                pruned: 1,
                ..Tally::default()
            },
            duration: Duration::from_millis(1500),
            ..Summary::default()
        };
        assert_eq!(
            describe(&summary, false),
            "backfill: 1.5 s\n  users: completed by the interrupted run this one continued\n  organizations: \
             resumed, 600 scanned; 100 created, 0 updated, 500 unchanged, 1 tombstoned by prune, 0 skipped because \
             tombstoned, 0 failed"
        );
    }
}
