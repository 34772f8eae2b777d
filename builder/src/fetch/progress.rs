//! Download progress on stderr. On a terminal, one line per running download is
//! redrawn in place; in a log (not a terminal), each download prints a plain line
//! at most once per interval (1 s) plus a final line with size, time and rate.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// `Terminal` when stderr is a terminal, else `Plain`.
    #[default]
    Auto,
    Terminal,
    Plain,
    /// Nothing on stderr; the source of each artifact is still logged at info level.
    Quiet,
}

impl ProgressMode {
    fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Terminal,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        }
    }
}

const REDRAW: Duration = Duration::from_millis(100);

/// The shared progress display for a fetch run.
pub struct Progress {
    mode: ProgressMode,
    interval: Duration,
    board: Mutex<Board>,
}

#[derive(Default)]
struct Board {
    next_id: usize,
    /// Running downloads' current lines (terminal mode), by id.
    active: Vec<(usize, String)>,
    /// How many lines of the board are on screen below the permanent output.
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Progress {
    pub fn new(mode: ProgressMode, interval: Duration) -> Self {
        Progress {
            mode: mode.resolve(),
            interval,
            board: Mutex::new(Board::default()),
        }
    }

    /// Starts showing a download of `label` from `from`; `done` bytes are already there.
    pub fn meter(&self, label: &str, from: &str, done: u64, total: Option<u64>) -> Meter<'_> {
        let id = {
            let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
            b.next_id += 1;
            b.next_id
        };
        let now = Instant::now();
        let meter = Meter {
            progress: self,
            id,
            label: label.to_string(),
            from: from.to_string(),
            started: now,
            resumed_at: done,
            done,
            total,
            last_line: now,
        };
        match self.mode {
            ProgressMode::Plain => {
                let resume = if done > 0 {
                    format!(" (resuming at {})", size(done))
                } else {
                    String::new()
                };
                self.permanent(&format!("{label}: fetching {from}{resume}"));
            }
            ProgressMode::Terminal => self.update(id, meter.line(), true),
            _ => {}
        }
        meter
    }

    /// Prints a line that stays (above the redrawn board on a terminal).
    pub fn permanent(&self, line: &str) {
        match self.mode {
            ProgressMode::Quiet | ProgressMode::Auto => {}
            ProgressMode::Plain => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            ProgressMode::Terminal => {
                let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
                self.draw(&mut b, Some(line));
            }
        }
    }

    fn update(&self, id: usize, line: String, force: bool) {
        let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
        match b.active.iter_mut().find(|(i, _)| *i == id) {
            Some(slot) => slot.1 = line,
            None => b.active.push((id, line)),
        }
        if force || b.last_draw.map_or(true, |t| t.elapsed() >= REDRAW) {
            self.draw(&mut b, None);
        }
    }

    fn finish(&self, id: usize, line: &str) {
        match self.mode {
            ProgressMode::Terminal => {
                let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
                b.active.retain(|(i, _)| *i != id);
                self.draw(&mut b, Some(line));
            }
            ProgressMode::Plain => self.permanent(line),
            _ => {}
        }
    }

    /// Moves up over the board, prints `permanent` (if any) and the board again.
    fn draw(&self, b: &mut Board, permanent: Option<&str>) {
        let mut out = String::new();
        if b.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", b.drawn));
        }
        for line in permanent
            .into_iter()
            .chain(b.active.iter().map(|(_, l)| l.as_str()))
        {
            out.push_str("\r\x1b[2K");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("\x1b[J");
        b.drawn = b.active.len();
        b.last_draw = Some(Instant::now());
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

/// One download's progress.
pub struct Meter<'a> {
    progress: &'a Progress,
    id: usize,
    label: String,
    from: String,
    started: Instant,
    resumed_at: u64,
    done: u64,
    total: Option<u64>,
    last_line: Instant,
}

impl Meter<'_> {
    /// Records `n` more bytes.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        match self.progress.mode {
            ProgressMode::Terminal => self.progress.update(self.id, self.line(), false),
            ProgressMode::Plain if self.last_line.elapsed() >= self.progress.interval => {
                self.last_line = Instant::now();
                self.progress.permanent(&self.line());
            }
            _ => {}
        }
    }

    /// The source restarted from zero (it ignored our Range request).
    pub fn restart(&mut self, total: Option<u64>) {
        self.done = 0;
        self.resumed_at = 0;
        self.total = total.or(self.total);
    }

    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        (self.done - self.resumed_at.min(self.done)) as f64 / secs
    }

    fn line(&self) -> String {
        let of = match self.total {
            Some(t) if t > 0 => format!(
                " of {} ({:.0}%)",
                size(t),
                (self.done as f64 / t as f64 * 100.0).min(100.0)
            ),
            _ => String::new(),
        };
        format!(
            "{}: {}{of}, {}/s",
            self.label,
            size(self.done),
            size(self.rate() as u64)
        )
    }

    /// The final line: size, time, rate and where it came from.
    pub fn done(self) {
        let line = format!(
            "{}: fetched {} in {:.2} s ({}/s) from {}",
            self.label,
            size(self.done),
            self.started.elapsed().as_secs_f64(),
            size(self.rate() as u64),
            self.from
        );
        self.progress.finish(self.id, &line);
    }

    /// Removes the line without a success message (the caller reports the error).
    pub fn failed(self, why: &str) {
        let line = format!(
            "{}: failed after {} from {}: {why}",
            self.label,
            size(self.done),
            self.from
        );
        self.progress.finish(self.id, &line);
    }
}

/// Human-readable byte count (binary units).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(10), "10 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(300 * 1024 * 1024), "300.0 MiB");
    }
}
