//! Host plumbing for the local target: running the tools it drives (`ip`,
//! `tar`, `qemu-img`, ...) with errors that name the command and its stderr,
//! and telling a process we started from a recycled pid.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Runs `cmd` to success; returns stdout. The error names `what`, the
/// command line and its stderr. Stdin is /dev/null unless the caller set it.
pub fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what}: `{}` failed ({}): {}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `cmd` exits 0 (output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ip -n NETNS ARGS...`.
pub fn ip(netns: &str, args: &[&str]) -> Result<String> {
    run(
        Command::new("ip").args(["-n", netns]).args(args),
        "network setup",
    )
}

/// A process this target started, told apart from a later process that
/// reuses its pid by its start time (field 22 of `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    pub start_time: u64,
}

impl Proc {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: u32) -> Option<Proc> {
        let (start_time, _) = stat(pid)?;
        Some(Proc { pid, start_time })
    }

    /// Still the same process, and not a zombie.
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((t, state)) if t == self.start_time && state != 'Z' && state != 'X')
    }

    /// Sends SIGKILL if it is still the same process.
    pub fn kill(&self) {
        if self.alive() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// Waits until it is gone (or a zombie), at most `limit`.
    pub fn wait_gone(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while self.alive() {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
}

/// (start time, state letter) of `pid`.
fn stat(pid: u32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // After the comm, field 3 (state) is index 0, so field 22 is index 19.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            v.push(child);
        }
    }
    v
}

/// Whether `name` is an executable on PATH.
pub fn have(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| is_executable(&d.join(name)))
        // sbin is often not on a user's PATH, but root runs these tools from it.
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| is_executable(&Path::new(d).join(name)))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Creates `dir` (and parents) with mode 0700: it may hold seeds.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_this_process_and_not_a_recycled_pid() {
        let me = Proc::of(std::process::id()).unwrap();
        assert!(me.alive());
        let other = Proc {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
    }

    #[test]
    fn a_failed_command_names_itself_and_its_stderr() {
        let e = run(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            "testing",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("testing: `sh -c"), "{e}");
        assert!(e.contains("oops"), "{e}");
    }
}
