//! Progress of a batch on stderr: one line rewritten in place on a terminal,
//! a plain line every few seconds otherwise (a log file or CI keeps a
//! readable record instead of carriage returns). Hand-written: a progress
//! crate would bring terminal handling and more dependencies for one line
//! of text.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Terminal,
    Plain,
}

pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    done: u64,
    failed: u64,
    start: Instant,
    last: Instant,
    mode: Mode,
    drawn: bool,
}

/// A terminal is redrawn at most this often; more is flicker, not news.
const TERMINAL_EVERY: Duration = Duration::from_millis(100);
/// A plain line this often: enough to see a job is alive in a log.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(label: &'static str, total: Option<u64>, quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        let now = Instant::now();
        Progress {
            label,
            total,
            done: 0,
            failed: 0,
            start: now,
            last: now,
            mode,
            drawn: false,
        }
    }

    pub fn add(&mut self, done: usize, failed: usize) {
        self.done += done as u64;
        self.failed += failed as u64;
        let every = match self.mode {
            Mode::Off => return,
            Mode::Terminal => TERMINAL_EVERY,
            Mode::Plain => PLAIN_EVERY,
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.draw();
        }
    }

    fn rate(&self) -> f64 {
        let secs = self.start.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }

    fn status(&self) -> String {
        let rate = self.rate();
        let mut s = match self.total {
            Some(total) => format!(
                "{}: {}/{} lines ({:.0}%), {:.1} lines/s",
                self.label,
                self.done,
                total,
                100.0 * self.done as f64 / total.max(1) as f64,
                rate
            ),
            None => format!("{}: {} lines, {:.1} lines/s", self.label, self.done, rate),
        };
        if let Some(total) = self.total {
            if rate > 0.0 && self.done < total {
                let eta = (total - self.done) as f64 / rate;
                s.push_str(&format!(", ETA {}", duration(eta)));
            }
        }
        if self.failed > 0 {
            s.push_str(&format!(", {} failed", self.failed));
        }
        s
    }

    fn draw(&mut self) {
        let status = self.status();
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the batch.
        let _ = match self.mode {
            Mode::Terminal => write!(err, "\r\x1b[K{status}"),
            _ => writeln!(err, "{status}"),
        };
        let _ = err.flush();
        self.drawn = true;
    }

    /// The summary line (unless quiet), and the failed count even if quiet:
    /// a batch that exits 0 must still say when lines failed.
    pub fn finish(&mut self, load: Duration) {
        let mut err = std::io::stderr().lock();
        if self.mode == Mode::Terminal && self.drawn {
            let _ = write!(err, "\r\x1b[K");
        }
        if self.mode != Mode::Off {
            let secs = self.start.elapsed().as_secs_f64();
            let _ = writeln!(
                err,
                "{}: {} lines in {} ({:.1} lines/s; model load {}), {} failed",
                self.label,
                self.done,
                duration(secs),
                self.rate(),
                duration(load.as_secs_f64()),
                self.failed
            );
        } else if self.failed > 0 {
            let _ = writeln!(
                err,
                "{}: {} of {} lines failed (see their `error`)",
                self.label, self.failed, self.done
            );
        }
    }
}

fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let s = secs.round() as u64;
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}
