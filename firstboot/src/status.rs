//! status.json (rewritten atomically after every step) and the run-once markers.
//!
//! `/var/lib/imgbuild/applied-instance` holds the instance id of the last
//! successful run: it alone decides "nothing to do" (so seed A, then B, then A
//! again re-applies A). `/var/lib/imgbuild/done/<id>` records every id that
//! ever succeeded, for people and for the power-cut tests.

use crate::fsutil::{ensure_dir, under, write_file};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

pub use imgbuild_seed::status::{State, Status, Step, StepState};

/// Directory of the agent's state.
pub const STATE_DIR: &str = "/var/lib/imgbuild";
/// Last successfully applied instance id.
pub const APPLIED_PATH: &str = "/var/lib/imgbuild/applied-instance";
/// One empty marker per successfully applied instance id.
pub const DONE_DIR: &str = "/var/lib/imgbuild/done";

/// The document as last written, shared with the signal and panic handlers
/// so an interrupted run is recorded as failed, never left at `running`.
struct Live {
    path: PathBuf,
    status: Status,
    /// Set once the run's outcome is final; later saves are dropped.
    sealed: bool,
    /// The root and the node exporter's textfile directory, when the run
    /// records its outcome there too (an interrupted run is `failed` there
    /// as well, which the monitoring role alerts on).
    textfile: Option<(PathBuf, String)>,
}

static LIVE: Mutex<Option<Live>> = Mutex::new(None);

fn write_status(path: &Path, status: &Status) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(status).expect("status serializes");
    json.push(b'\n');
    write_file(path, &json, 0o644, 0, 0).map(|_| ())
}

/// Records the run as failed with `reason` (SIGTERM, the run's deadline, a
/// panic) if it is still in progress, and seals it so nothing overwrites
/// that. Returns whether it wrote anything. `wait` false only tries the lock
/// (for a panic, which may happen while it is held).
pub fn interrupt(reason: &str, wait: bool) -> bool {
    let mut guard = match (wait, LIVE.try_lock()) {
        (_, Ok(g)) => g,
        (true, Err(std::sync::TryLockError::WouldBlock)) => match LIVE.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        },
        (_, Err(std::sync::TryLockError::Poisoned(p))) => p.into_inner(),
        (false, Err(_)) => return false,
    };
    let Some(live) = guard.as_mut() else {
        return false;
    };
    if live.sealed || live.status.state != State::Running {
        live.sealed = true;
        return false;
    }
    let st = &mut live.status;
    let step = match st.steps.iter_mut().find(|s| s.state == StepState::Running) {
        Some(s) => s,
        None => {
            st.steps.push(Step {
                name: "interrupted".into(),
                state: StepState::Pending,
                duration_ms: None,
                error: None,
            });
            st.steps.last_mut().expect("just pushed")
        }
    };
    step.state = StepState::Failed;
    step.error = Some(reason.to_string());
    st.failed_step = Some(step.name.clone());
    st.state = State::Failed;
    st.reason = Some(reason.to_string());
    st.peak_rss_kib = peak_rss_kib();
    live.sealed = true;
    if let Some((root, dir)) = &live.textfile {
        if let Err(e) = crate::roles::metrics::record(root, dir, &live.status) {
            tracing::error!("cannot record `{reason}` in the textfile metrics: {e:#}");
        }
    }
    let written = write_status(&live.path, &live.status);
    if let Err(e) = &written {
        tracing::error!("cannot record `{reason}` in status.json: {e:#}");
    }
    written.is_ok()
}

/// Keeps status.json in sync with the run.
pub struct Recorder {
    path: PathBuf,
    root: PathBuf,
    /// The node exporter's textfile directory (metrics role): the run's
    /// outcome is mirrored there for Prometheus.
    pub textfile_dir: Option<String>,
    /// The current document.
    pub status: Status,
}

impl Recorder {
    /// Starts a run with all `steps` pending and writes the file.
    pub fn new(
        root: &Path,
        instance_id: Option<String>,
        source: Option<String>,
        steps: &[String],
    ) -> Result<Self> {
        ensure_dir(&under(root, STATE_DIR), 0o755, 0, 0)?;
        let status = Status {
            instance_id,
            seed_source: source,
            state: State::Running,
            failed_step: None,
            reason: None,
            steps: steps
                .iter()
                .map(|n| Step {
                    name: n.clone(),
                    state: StepState::Pending,
                    duration_ms: None,
                    error: None,
                })
                .collect(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            peak_rss_kib: None,
        };
        let r = Recorder {
            path: under(root, crate::STATUS_PATH),
            root: root.to_path_buf(),
            textfile_dir: None,
            status,
        };
        r.save()?;
        Ok(r)
    }

    /// Writes the document, unless an interruption already sealed the run.
    fn save(&self) -> Result<()> {
        let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        if live
            .as_ref()
            .is_some_and(|l| l.sealed && l.path == self.path)
        {
            return Ok(());
        }
        // The textfile first: whoever sees a state in status.json finds the
        // same state in the exporter's file already (e2e_lxc read it
        // "running" right after status.json said ready).
        if let Some(dir) = &self.textfile_dir {
            if let Err(e) = crate::roles::metrics::record(&self.root, dir, &self.status) {
                tracing::warn!("cannot write the textfile metrics: {e:#}");
            }
        }
        write_status(&self.path, &self.status)?;
        *live = Some(Live {
            path: self.path.clone(),
            status: self.status.clone(),
            sealed: false,
            textfile: self
                .textfile_dir
                .as_ref()
                .map(|d| (self.root.clone(), d.clone())),
        });
        Ok(())
    }

    fn set(
        &mut self,
        name: &str,
        state: StepState,
        ms: Option<u64>,
        error: Option<String>,
    ) -> Result<()> {
        match self.status.steps.iter_mut().find(|s| s.name == name) {
            Some(s) => {
                s.state = state;
                s.duration_ms = ms;
                s.error = error;
            }
            None => self.status.steps.push(Step {
                name: name.into(),
                state,
                duration_ms: ms,
                error,
            }),
        }
        self.save()
    }

    /// Runs `f` as step `name`, recording its state and duration.
    pub fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T, crate::StepFailed> {
        let fail = |e: anyhow::Error| crate::StepFailed {
            step: name.to_string(),
            source: e,
        };
        self.set(name, StepState::Running, None, None)
            .map_err(fail)?;
        tracing::info!(step = name, "starting");
        let t = Instant::now();
        let r = f();
        let elapsed = t.elapsed().as_millis() as u64;
        let ms = Some(elapsed);
        match r {
            Ok(v) => {
                tracing::info!(step = name, ms = elapsed, "done");
                self.set(name, StepState::Done, ms, None).map_err(fail)?;
                Ok(v)
            }
            Err(e) => {
                tracing::error!(step = name, "failed: {e:#}");
                self.status.peak_rss_kib = peak_rss_kib();
                self.status.state = State::Failed;
                self.status.failed_step = Some(name.into());
                self.status.reason = Some(format!("{e:#}"));
                let _ = self.set(name, StepState::Failed, ms, Some(format!("{e:#}")));
                Err(fail(e))
            }
        }
    }

    /// Records step `name` as not run, saying why.
    pub fn skip(&mut self, name: &str, why: &str) -> Result<()> {
        tracing::info!(step = name, "skipped: {why}");
        self.set(name, StepState::Skipped, None, Some(why.into()))
    }

    /// Marks the run failed outside any step (e.g. a bad seed).
    pub fn fail(&mut self, name: &str, error: &anyhow::Error) -> Result<()> {
        self.status.peak_rss_kib = peak_rss_kib();
        self.status.state = State::Failed;
        self.status.failed_step = Some(name.into());
        self.status.reason = Some(format!("{error:#}"));
        self.set(name, StepState::Failed, None, Some(format!("{error:#}")))
    }

    /// Marks the run ready.
    pub fn ready(&mut self) -> Result<()> {
        self.finish(State::Ready)
    }

    /// Marks the run prepared (`--root DIR`: files only).
    pub fn prepared(&mut self) -> Result<()> {
        self.finish(State::Prepared)
    }

    fn finish(&mut self, state: State) -> Result<()> {
        self.status.peak_rss_kib = peak_rss_kib();
        tracing::info!(peak_rss_kib = ?self.status.peak_rss_kib, ?state, "finished");
        self.status.state = state;
        self.save()
    }
}

/// This process's peak resident set size from /proc/self/status (VmHWM), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&text)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The last successfully applied instance id.
pub fn applied_instance(root: &Path) -> Result<Option<String>> {
    let p = under(root, APPLIED_PATH);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Records `id` as successfully applied (done marker first, then the pointer).
pub fn mark_applied(root: &Path, id: &str) -> Result<()> {
    let done = under(root, DONE_DIR);
    ensure_dir(&done, 0o755, 0, 0)?;
    write_file(&done.join(id), b"", 0o644, 0, 0)?;
    write_file(
        &under(root, APPLIED_PATH),
        format!("{id}\n").as_bytes(),
        0o644,
        0,
        0,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let text = "Name:\tfirstboot\nVmPeak:\t  9000 kB\nVmHWM:\t    4321 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vm_hwm(text), Some(4321));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        // The real file of this very process has it.
        assert!(peak_rss_kib().unwrap() > 0);
    }
}
