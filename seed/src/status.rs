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
}

/// Overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Applying.
    Running,
    /// Every step done and every check passed.
    Ready,
    /// A step failed.
    Failed,
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
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Agent version.
    pub agent_version: String,
    /// The agent's peak resident memory (VmHWM) when the run ended, in KiB.
    #[serde(default)]
    pub peak_rss_kib: Option<u64>,
}
