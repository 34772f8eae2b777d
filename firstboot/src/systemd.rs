//! Control of systemd (and hostnamed) over D-Bus, behind a trait so the
//! engine's logic is unit-tested with an in-memory manager.
//!
//! The real implementation uses zbus's blocking API against
//! `org.freedesktop.systemd1.Manager`. Job results come from the manager's
//! `JobRemoved` signal: a forwarding thread is subscribed before any job is
//! queued, so a job that finishes before `StartUnit` even returns is not missed.

use anyhow::{bail, Context, Result};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use zbus::blocking::{Connection, Proxy};
use zbus::zvariant::OwnedObjectPath;

/// What the engine needs from systemd.
pub trait Systemd {
    /// `systemctl daemon-reload`, returning once the manager has reloaded.
    fn daemon_reload(&mut self) -> Result<()>;
    /// `systemctl enable` (persistent, replacing conflicting links).
    fn enable(&mut self, units: &[&str]) -> Result<()>;
    /// Starts (or restarts) `unit` with mode `replace` and waits up to
    /// `timeout` for the job's result; anything but `done` is an error.
    fn start(&mut self, unit: &str, restart: bool, timeout: Duration) -> Result<()>;
    /// Sets the static and the running host name through hostnamed.
    fn set_hostname(&mut self, name: &str) -> Result<()>;
    /// `systemctl stop` and waits up to `timeout` for the job.
    fn stop(&mut self, unit: &str, timeout: Duration) -> Result<()>;
    /// `systemctl disable` (persistent).
    fn disable(&mut self, units: &[&str]) -> Result<()>;
}

/// The longest a single D-Bus method call may take (a daemon-reload of a
/// busy manager is the slowest).
const METHOD_TIMEOUT: Duration = Duration::from_secs(60);

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// One finished job: object path and result (`done`, `failed`, `timeout`, ...).
type JobRemoved = (OwnedObjectPath, String, String);

/// systemd over the system bus.
pub struct DbusSystemd {
    conn: Connection,
    manager: Proxy<'static>,
    jobs: Receiver<JobRemoved>,
}

impl DbusSystemd {
    /// Connects to the system bus and subscribes to job signals.
    pub fn connect() -> Result<Self> {
        // Every call gets a timeout, so a wedged manager cannot hang the run.
        let conn = zbus::blocking::connection::Builder::system()
            .and_then(|b| b.method_timeout(METHOD_TIMEOUT).build())
            .context("connecting to the D-Bus system bus")?;
        let manager =
            Proxy::new(&conn, DEST, PATH, MANAGER).context("creating the systemd manager proxy")?;
        // Match rule first, then Subscribe, so no JobRemoved can slip through.
        let signals = manager
            .receive_signal("JobRemoved")
            .context("subscribing to JobRemoved")?;
        manager
            .call_method("Subscribe", &())
            .context("calling systemd Manager.Subscribe")?;
        let (tx, jobs) = mpsc::channel();
        std::thread::spawn(move || {
            for msg in signals {
                if let Ok((_id, job, unit, result)) =
                    msg.body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                {
                    if tx.send((job, unit, result)).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(DbusSystemd {
            conn,
            manager,
            jobs,
        })
    }

    fn wait_job(&self, job: &OwnedObjectPath, unit: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.jobs.recv_timeout(left) {
                Ok((path, _, result)) if path == *job => {
                    if result == "done" {
                        return Ok(());
                    }
                    bail!("job for {unit} finished with result `{result}` (see `journalctl -u {unit}`)");
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "job for {unit} did not finish within {}s",
                        timeout.as_secs()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("lost the D-Bus connection while waiting for {unit}")
                }
            }
        }
    }
}

impl Systemd for DbusSystemd {
    fn daemon_reload(&mut self) -> Result<()> {
        self.manager
            .call_method("Reload", &())
            .context("calling systemd Manager.Reload")?;
        Ok(())
    }

    fn enable(&mut self, units: &[&str]) -> Result<()> {
        let _: (bool, Vec<(String, String, String)>) = self
            .manager
            .call("EnableUnitFiles", &(units, false, true))
            .with_context(|| format!("enabling {}", units.join(", ")))?;
        Ok(())
    }

    fn start(&mut self, unit: &str, restart: bool, timeout: Duration) -> Result<()> {
        let method = if restart { "RestartUnit" } else { "StartUnit" };
        let job: OwnedObjectPath = self
            .manager
            .call(method, &(unit, "replace"))
            .with_context(|| format!("calling systemd Manager.{method} for {unit}"))?;
        self.wait_job(&job, unit, timeout)
    }

    fn stop(&mut self, unit: &str, timeout: Duration) -> Result<()> {
        let job: OwnedObjectPath = self
            .manager
            .call("StopUnit", &(unit, "replace"))
            .with_context(|| format!("calling systemd Manager.StopUnit for {unit}"))?;
        self.wait_job(&job, unit, timeout)
    }

    fn disable(&mut self, units: &[&str]) -> Result<()> {
        let _: Vec<(String, String, String)> = self
            .manager
            .call("DisableUnitFiles", &(units, false))
            .with_context(|| format!("disabling {}", units.join(", ")))?;
        Ok(())
    }

    fn set_hostname(&mut self, name: &str) -> Result<()> {
        let hostnamed = Proxy::new(
            &self.conn,
            "org.freedesktop.hostname1",
            "/org/freedesktop/hostname1",
            "org.freedesktop.hostname1",
        )
        .context("creating the hostnamed proxy")?;
        hostnamed
            .call_method("SetStaticHostname", &(name, false))
            .context("calling hostnamed SetStaticHostname")?;
        // The static name alone leaves a transient name set at boot (e.g. by
        // the container manager) in the kernel; make the running name match.
        hostnamed
            .call_method("SetHostname", &(name, false))
            .context("calling hostnamed SetHostname")?;
        Ok(())
    }
}

/// In-memory systemd for unit tests: records calls, fails units on request.
#[cfg(test)]
#[derive(Default)]
pub struct MemSystemd {
    /// Every call, as text (`reload`, `enable a,b`, `start x`, `restart x`).
    pub calls: Vec<String>,
    /// Units whose start job fails.
    pub failing: Vec<String>,
    /// Enabled units.
    pub enabled: std::collections::BTreeSet<String>,
}

#[cfg(test)]
impl Systemd for MemSystemd {
    fn daemon_reload(&mut self) -> Result<()> {
        self.calls.push("reload".into());
        Ok(())
    }
    fn enable(&mut self, units: &[&str]) -> Result<()> {
        self.calls.push(format!("enable {}", units.join(",")));
        self.enabled.extend(units.iter().map(|u| u.to_string()));
        Ok(())
    }
    fn start(&mut self, unit: &str, restart: bool, _timeout: Duration) -> Result<()> {
        self.calls.push(format!(
            "{} {unit}",
            if restart { "restart" } else { "start" }
        ));
        if self.failing.iter().any(|u| u == unit) {
            bail!("job for {unit} finished with result `failed`");
        }
        Ok(())
    }
    fn set_hostname(&mut self, name: &str) -> Result<()> {
        self.calls.push(format!("hostname {name}"));
        Ok(())
    }
    fn stop(&mut self, unit: &str, _timeout: Duration) -> Result<()> {
        self.calls.push(format!("stop {unit}"));
        Ok(())
    }
    fn disable(&mut self, units: &[&str]) -> Result<()> {
        self.calls.push(format!("disable {}", units.join(",")));
        units.iter().for_each(|u| {
            self.enabled.remove(*u);
        });
        Ok(())
    }
}
