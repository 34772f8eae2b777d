//! The lab's `updates:` section: unattended security updates on every guest
//! (Ubuntu's unattended-upgrades, security pocket only, run by apt's daily
//! timers). On by default and never rebooting by itself unless asked:
//!
//! ```yaml
//! updates:
//!   security: true              # default true; false turns unattended upgrades off
//!   automatic_reboot: "03:30"   # reboot at this time when an update needs it; default false (never)
//! ```

use imgbuild_seed::updates::RebootTime;

use super::yaml::{Ctx, Field};

/// Unattended updates on the lab's guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updates {
    pub security: bool,
    /// None: never reboot automatically.
    pub automatic_reboot: Option<RebootTime>,
}

impl Default for Updates {
    fn default() -> Self {
        Updates {
            security: true,
            automatic_reboot: None,
        }
    }
}

fn boolean(s: &str) -> Result<bool, String> {
    match s {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(format!("`{s}`: expected true or false")),
    }
}

/// Parses the `updates:` mapping, reporting every problem with its location.
pub(crate) fn parse(ctx: &mut Ctx, f: Field<'_>) -> Option<Updates> {
    let m = ctx.map(f, &["security", "automatic_reboot"])?;
    let security = match m.opt("security") {
        None => Some(true),
        Some(f) => ctx.scalar(&f, boolean),
    };
    let reboot_field = m.opt("automatic_reboot").map(|f| f.path.clone());
    let automatic_reboot = match m.opt("automatic_reboot") {
        None => Some(None),
        Some(f) => ctx.scalar(&f, |s| match s {
            "false" | "no" | "off" | "never" => Ok(None),
            _ => RebootTime::new(s).map(Some).map_err(|_| {
                format!(
                    "`{s}`: expected a time of day HH:MM (e.g. \"03:30\") to reboot at when an update needs it, or false to never reboot automatically"
                )
            }),
        }),
    };
    let (security, automatic_reboot) = (security?, automatic_reboot?);
    if let (false, Some(_), Some(field)) = (security, &automatic_reboot, reboot_field) {
        ctx.err(
            &field,
            "an automatic reboot needs the security updates on (`security: true`)",
        );
        return None;
    }
    Some(Updates {
        security,
        automatic_reboot,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The lab's section reaches every guest's seed; without it the seed
    /// has no `updates` at all (defaults), so instance ids stay as they were.
    #[test]
    fn the_section_reaches_every_seed_and_its_absence_changes_nothing() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/seed");
        let d = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&src).unwrap().flatten() {
            std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
        }
        let path = d.path().join("lab.yaml");
        let plain = crate::model::lab::load(&path).unwrap();
        assert_eq!(plain.updates, super::Updates::default());
        let before = crate::seed::for_guest(&plain, "minio").unwrap();
        assert!(!before.to_yaml().contains("updates"));
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("updates:\n  automatic_reboot: \"04:30\"\n");
        std::fs::write(&path, text).unwrap();
        let lab = crate::model::lab::load(&path).unwrap();
        for g in ["minio", "devlab"] {
            let seed = crate::seed::for_guest(&lab, g).unwrap();
            assert!(seed.updates.security);
            assert_eq!(seed.updates.reboot_at.as_ref().unwrap().as_str(), "04:30");
            assert!(
                seed.to_yaml().contains("reboot_at: 04:30")
                    || seed.to_yaml().contains("reboot_at: '04:30'"),
                "{}",
                seed.to_yaml()
            );
        }
    }
}
