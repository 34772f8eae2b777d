//! Long operations: PVE answers with a UPID and runs a task; we poll
//! `/nodes/{node}/tasks/{upid}/status` until it is `stopped` and read its
//! `exitstatus` (`OK`, `WARNINGS: N`, or the error). On failure the task log's
//! last lines become part of the error.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::api::{Api, ApiError};
use super::params::Params;

/// A parsed UPID: `UPID:node:pid:pstart:starttime:type:id:user:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub raw: String,
    pub node: String,
    pub kind: String,
    pub id: String,
}

impl Upid {
    pub fn parse(s: &str) -> Option<Upid> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() < 9 || parts[0] != "UPID" || parts[1].is_empty() {
            return None;
        }
        let hex8 =
            |p: &str| !p.is_empty() && p.len() <= 16 && p.chars().all(|c| c.is_ascii_hexdigit());
        if !(hex8(parts[2]) && hex8(parts[3]) && hex8(parts[4])) {
            return None;
        }
        Some(Upid {
            raw: s.to_string(),
            node: parts[1].to_string(),
            kind: parts[5].to_string(),
            id: parts[6].to_string(),
        })
    }

    /// From an API response's `data`.
    pub fn from_data(v: &Value) -> Option<Upid> {
        v.as_str().and_then(Upid::parse)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {kind} {id} on {node} failed: {exit}{log}")]
    Failed {
        node: String,
        kind: String,
        id: String,
        exit: String,
        log: String,
    },
    #[error("task {kind} {id} on {node} still running after {secs} s")]
    Timeout {
        node: String,
        kind: String,
        id: String,
        secs: u64,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

#[derive(Debug, Deserialize)]
struct Status {
    status: String,
    #[serde(default)]
    exitstatus: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LogLine {
    #[serde(default)]
    t: String,
}

/// Waits for `upid` to stop. `OK` and `WARNINGS: N` are success.
pub async fn wait(api: &Api, upid: &Upid, timeout: Duration) -> Result<(), TaskError> {
    let path = format!("/nodes/{}/tasks/{}/status", upid.node, upid.raw);
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let st: Status = api.get(&path, &Params::new()).await?;
        if st.status == "stopped" {
            let exit = st.exitstatus.unwrap_or_default();
            if exit == "OK" || exit.starts_with("WARNINGS") {
                return Ok(());
            }
            let log = tail_log(api, upid).await;
            return Err(TaskError::Failed {
                node: upid.node.clone(),
                kind: upid.kind.clone(),
                id: upid.id.clone(),
                exit,
                log,
            });
        }
        if start.elapsed() > timeout {
            return Err(TaskError::Timeout {
                node: upid.node.clone(),
                kind: upid.kind.clone(),
                id: upid.id.clone(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn tail_log(api: &Api, upid: &Upid) -> String {
    let path = format!("/nodes/{}/tasks/{}/log", upid.node, upid.raw);
    let lines: Vec<LogLine> = match api
        .get(&path, &Params::new().set("start", 0).set("limit", 500))
        .await
    {
        Ok(l) => l,
        Err(_) => return String::new(),
    };
    let tail: Vec<&str> = lines
        .iter()
        .rev()
        .take(8)
        .map(|l| l.t.as_str())
        .collect::<Vec<_>>();
    if tail.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n    task log (last lines):");
    for l in tail.into_iter().rev() {
        s.push_str("\n    | ");
        s.push_str(l);
    }
    s
}

/// Runs a call that returns a UPID and waits for its task; a call whose
/// `data` is not a UPID (PVE answers some synchronously) is done already.
pub async fn run(api: &Api, data: Value, timeout: Duration) -> Result<(), TaskError> {
    match Upid::from_data(&data) {
        Some(upid) => wait(api, &upid, timeout).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_upids() {
        let u = Upid::parse("UPID:pve:000A1B2C:0001E240:6751A0F3:qmcreate:100:root@pam!imgbuild:")
            .unwrap();
        assert_eq!(u.node, "pve");
        assert_eq!(u.kind, "qmcreate");
        assert_eq!(u.id, "100");
        assert!(Upid::parse("UPID:pve:zz:1:2:qmcreate:100:root@pam:").is_none());
        assert!(Upid::parse("not a upid").is_none());
        assert!(Upid::parse("UPID:pve:1:2:3:x").is_none());
    }
}
