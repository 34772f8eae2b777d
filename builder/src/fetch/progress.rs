//! Download progress on stderr. On a terminal, one line per running download is
//! redrawn in place; in a log (not a terminal), each download prints a plain line
//! at most once per interval (1 s) plus a final line with size, time and rate.
//!
//! [`ProgressReader`] is the `Read` adapter that feeds a [`Meter`] (or anything
//! that implements [`Advance`]) as bytes pass; an upload uses it the same way a
//! download does, with [`Wording::UPLOAD`].

use std::io::{IsTerminal, Read, Write};
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

/// The verbs a meter's lines use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wording {
    /// First plain line: `<label>: <starting> <from>`.
    pub starting: &'static str,
    /// Final line: `<label>: <finished> <size> in <secs> s (<rate>/s) <preposition> <from>`.
    pub finished: &'static str,
    pub preposition: &'static str,
}

impl Wording {
    pub const FETCH: Wording = Wording {
        starting: "fetching",
        finished: "fetched",
        preposition: "from",
    };
    pub const UPLOAD: Wording = Wording {
        starting: "uploading to",
        finished: "uploaded",
        preposition: "to",
    };
}

/// Something told how many more bytes went by.
pub trait Advance {
    fn advance(&mut self, n: u64);
}

impl<T: Advance + ?Sized> Advance for &mut T {
    fn advance(&mut self, n: u64) {
        (**self).advance(n)
    }
}

/// A `Read` adapter that reports each read's byte count to `M` (a [`Meter`], a
/// counter, a closure via [`FnAdvance`]). It does not change the bytes.
pub struct ProgressReader<R, M> {
    inner: R,
    meter: M,
}

impl<R: Read, M: Advance> ProgressReader<R, M> {
    pub fn new(inner: R, meter: M) -> Self {
        ProgressReader { inner, meter }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> (R, M) {
        (self.inner, self.meter)
    }
}

impl<R: Read, M: Advance> Read for ProgressReader<R, M> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.meter.advance(n as u64);
        }
        Ok(n)
    }
}

/// A closure as an [`Advance`].
pub struct FnAdvance<F>(pub F);

impl<F: FnMut(u64)> Advance for FnAdvance<F> {
    fn advance(&mut self, n: u64) {
        (self.0)(n)
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
        self.meter_with(Wording::FETCH, label, from, done, total)
    }

    /// Like [`Progress::meter`], in other words (an upload's).
    pub fn meter_with(
        &self,
        wording: Wording,
        label: &str,
        from: &str,
        done: u64,
        total: Option<u64>,
    ) -> Meter<'_> {
        let id = {
            let mut b = self.board.lock().unwrap_or_else(|e| e.into_inner());
            b.next_id += 1;
            b.next_id
        };
        let now = Instant::now();
        let meter = Meter {
            progress: self,
            wording,
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
                self.permanent(&format!("{label}: {} {from}{resume}", wording.starting));
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
    wording: Wording,
    id: usize,
    label: String,
    from: String,
    started: Instant,
    resumed_at: u64,
    done: u64,
    total: Option<u64>,
    last_line: Instant,
}

impl Advance for Meter<'_> {
    fn advance(&mut self, n: u64) {
        Meter::advance(self, n)
    }
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
            "{}: {} {} in {:.2} s ({}/s) {} {}",
            self.label,
            self.wording.finished,
            size(self.done),
            self.started.elapsed().as_secs_f64(),
            size(self.rate() as u64),
            self.wording.preposition,
            self.from
        );
        self.progress.finish(self.id, &line);
    }

    /// Removes the line without a success message (the caller reports the error).
    pub fn failed(self, why: &str) {
        let line = format!(
            "{}: failed after {} {} {}: {why}",
            self.label,
            size(self.done),
            self.wording.preposition,
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

    #[test]
    fn progress_reader_counts_what_passes() {
        let mut seen = Vec::new();
        let mut r = ProgressReader::new(&b"hello world"[..], FnAdvance(|n| seen.push(n)));
        let mut buf = [0u8; 4];
        let mut out = Vec::new();
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let _ = r.into_inner();
        assert_eq!(out, b"hello world");
        assert_eq!(seen, vec![4, 4, 3]);
    }
}
