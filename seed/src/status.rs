//! The agent's report, `/var/lib/imgbuild/status.json`: written by the agent
//! after every step, read by people, by tests and by whoever waits for a guest.

use serde::{Deserialize, Serialize};

/// The agent's status document.
pub const STATUS_PATH: &str = "/var/lib/imgbuild/status.json";

/// State of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Not started yet.
    Pending,
    /// In progress.
    Running,
    /// Finished successfully.
    Done,
    /// Failed (see `error`).
    Failed,
    /// Not run: `firstboot --root DIR` leaves the host alone (see `error`
    /// for why); the guest runs it when it boots.
    Skipped,
}

/// Overall state.
///
/// A run never ends in `running`: every failure (a bad seed, a step, a
/// deadline, SIGTERM, a panic) is recorded as `failed` with its `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Applying.
    Running,
    /// Every step done and every check passed.
    Ready,
    /// A step failed, or the run was interrupted.
    Failed,
    /// `firstboot --root DIR`: files written under DIR, nothing started.
    Prepared,
}

/// One step's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Step name (`files`, `start:minio.service`, `check:buckets`, ...).
    pub name: String,
    /// Its state.
    pub state: StepState,
    /// Wall time, once finished.
    pub duration_ms: Option<u64>,
    /// The error chain, if it failed.
    pub error: Option<String>,
}

/// The whole status document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Instance id of the seed being applied (null if the seed did not parse).
    pub instance_id: Option<String>,
    /// Where the seed came from.
    pub seed_source: Option<String>,
    /// Overall state.
    pub state: State,
    /// Name of the failed step, if any.
    pub failed_step: Option<String>,
    /// Why the run failed (the failed step's error), e.g. `interrupted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Agent version.
    pub agent_version: String,
    /// The agent's peak resident memory (VmHWM) when the run ended, in KiB.
    #[serde(default)]
    pub peak_rss_kib: Option<u64>,
}
