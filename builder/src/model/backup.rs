//! The lab's `backup:` section: a scheduled Proxmox backup job (vzdump) over
//! exactly the lab's guests, with its retention. Deploy turns it into a
//! `/cluster/backup` job; destroy removes that job.
//!
//! ```yaml
//! backup:
//!   schedule: "02:00"     # a Proxmox calendar event: "02:00", "sat 03:00", "daily", "mon..fri 22:30"
//!   storage: local        # carries `backup` content; may be a Proxmox Backup Server storage
//!   mode: snapshot        # snapshot (default) | suspend | stop
//!   retention:            # at least one; becomes prune-backups keep-daily=7,...
//!     keep_daily: 7
//!     keep_weekly: 4
//!     keep_monthly: 6
//! ```

use super::yaml::{Ctx, Field};

/// A scheduled backup of every guest of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// A Proxmox calendar event (systemd-like), e.g. `02:00`.
    pub schedule: String,
    /// The storage the backups go to.
    pub storage: String,
    pub mode: BackupMode,
    pub retention: Retention,
}

/// vzdump's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupMode {
    Snapshot,
    Suspend,
    Stop,
}

impl BackupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMode::Snapshot => "snapshot",
            BackupMode::Suspend => "suspend",
            BackupMode::Stop => "stop",
        }
    }
}

/// How many backups to keep per period (None = that period is not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

impl Retention {
    /// `keep-daily=7,keep-weekly=4` as PVE's `prune-backups` property string
    /// writes it (keys in its canonical order).
    pub fn prune_backups(&self) -> String {
        [
            ("keep-daily", self.keep_daily),
            ("keep-last", self.keep_last),
            ("keep-monthly", self.keep_monthly),
            ("keep-weekly", self.keep_weekly),
            ("keep-yearly", self.keep_yearly),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|n| format!("{k}={n}")))
        .collect::<Vec<_>>()
        .join(",")
    }
}

const RETENTION_KEYS: &[&str] = &[
    "keep_last",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
];

/// Parses the `backup:` mapping, reporting every problem with its location.
pub(crate) fn parse(ctx: &mut Ctx, f: Field<'_>) -> Option<Backup> {
    let m = ctx.map(f, &["schedule", "storage", "mode", "retention"])?;
    let schedule = m
        .req(
            ctx,
            "schedule",
            "a Proxmox calendar event, e.g. \"02:00\" (daily at 02:00) or \"sat 03:00\"",
        )
        .and_then(|f| ctx.scalar(&f, parse_schedule));
    let storage = m
        .req(
            ctx,
            "storage",
            "a storage id with `backup` content, e.g. local or a Proxmox Backup Server storage",
        )
        .and_then(|f| ctx.scalar(&f, super::lab_parse::parse_storage_id));
    let mode = match m.opt("mode") {
        None => Some(BackupMode::Snapshot),
        Some(f) => ctx.scalar(&f, |s| match s {
            "snapshot" => Ok(BackupMode::Snapshot),
            "suspend" => Ok(BackupMode::Suspend),
            "stop" => Ok(BackupMode::Stop),
            _ => Err(format!(
                "`{s}` is not a backup mode: expected `snapshot`, `suspend` or `stop`"
            )),
        }),
    };
    let retention = m
        .req(
            ctx,
            "retention",
            "how many backups to keep, e.g. `{keep_daily: 7, keep_weekly: 4}`",
        )
        .and_then(|f| retention(ctx, f));
    Some(Backup {
        schedule: schedule?,
        storage: storage?,
        mode: mode?,
        retention: retention?,
    })
}

fn retention(ctx: &mut Ctx, f: Field<'_>) -> Option<Retention> {
    let path = f.path.clone();
    let m = ctx.map(f, RETENTION_KEYS)?;
    let mut r = Retention::default();
    let mut ok = true;
    for key in RETENTION_KEYS {
        let Some(f) = m.opt(key) else { continue };
        let v = ctx.scalar(&f, |s| match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "`{s}`: expected how many backups to keep, a whole number of at least 1"
            )),
        });
        ok &= v.is_some();
        match *key {
            "keep_last" => r.keep_last = v,
            "keep_daily" => r.keep_daily = v,
            "keep_weekly" => r.keep_weekly = v,
            "keep_monthly" => r.keep_monthly = v,
            _ => r.keep_yearly = v,
        }
    }
    if ok && r == Retention::default() {
        ctx.err_at(
            m.pos,
            &path,
            "keep at least one period, e.g. `keep_daily: 7` (without retention every backup is kept forever)",
        );
        return None;
    }
    ok.then_some(r)
}

/// A calendar event as PVE's `pve-calendar-event` reads it, checked for its
/// alphabet and length (PVE parses the rest when the job is saved).
fn parse_schedule(s: &str) -> Result<String, String> {
    let ok = !s.trim().is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " :,*./~-".contains(c));
    if !ok {
        return Err(format!(
            "`{s}` is not a Proxmox calendar event: expected e.g. \"02:00\", \"daily\", \"sat 03:00\" or \"mon..fri 22:30\" (at most 128 characters)"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_backups_string() {
        let r = Retention {
            keep_daily: Some(7),
            keep_monthly: Some(6),
            keep_weekly: Some(4),
            ..Default::default()
        };
        assert_eq!(
            r.prune_backups(),
            "keep-daily=7,keep-monthly=6,keep-weekly=4"
        );
    }

    #[test]
    fn schedules() {
        assert!(parse_schedule("02:00").is_ok());
        assert!(parse_schedule("mon..fri 22:30").is_ok());
        assert!(parse_schedule("*-*-* 02:00").is_ok());
        assert!(parse_schedule("02:00; rm -rf /").is_err());
        assert!(parse_schedule(" ").is_err());
    }
}
