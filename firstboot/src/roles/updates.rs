//! Part of the common role: unattended security updates, Ubuntu's own way.
//! apt's daily timers (`apt-daily.timer` fetches the lists,
//! `apt-daily-upgrade.timer` runs `unattended-upgrade`) are enabled, and two
//! apt.conf.d files say what they do: the periodic switches, and
//! unattended-upgrades limited to the security pocket with no automatic
//! reboot unless the seed names a time. Nothing runs apt at first boot, so
//! readiness never waits on the network: the first run is the timers'.
//!
//! The files sort after the ones the packages ship (`20auto-upgrades`,
//! `50unattended-upgrades`), so their values win; the origin lists are
//! `#clear`ed first because apt appends list entries across files.

use crate::plan::Plan;
use crate::seed::Seed;
use std::time::Duration;

/// The periodic switches (`APT::Periodic::*`).
pub const PERIODIC: &str = "/etc/apt/apt.conf.d/21imgbuild-auto-upgrades";
/// unattended-upgrades' origins and reboot policy.
pub const POLICY: &str = "/etc/apt/apt.conf.d/52imgbuild-unattended-upgrades";
/// The timers apt ships; enabled and started when updates are on.
pub const TIMERS: &[&str] = &["apt-daily.timer", "apt-daily-upgrade.timer"];

/// apt.conf's comment form of the agent's header.
fn header() -> String {
    format!("// {}", super::HEADER.trim_start_matches("# "))
}

/// Adds the update policy to `plan`.
pub fn plan(seed: &Seed, plan: &mut Plan) {
    let u = &seed.updates;
    let on = if u.security { "1" } else { "0" };
    plan.file(
        PERIODIC,
        0o644,
        format!(
            "{}\n// Security updates unattended: {}.\nAPT::Periodic::Update-Package-Lists \"{on}\";\nAPT::Periodic::Unattended-Upgrade \"{on}\";\n",
            header(),
            if u.security { "on" } else { "off (the lab's `updates.security: false`)" }
        ),
        &[],
    );
    let reboot = match &u.reboot_at {
        None => {
            "// Never reboot by itself (the lab sets `updates.automatic_reboot` to allow it).\n\
                 Unattended-Upgrade::Automatic-Reboot \"false\";\n"
                .to_string()
        }
        Some(t) => format!(
            "// Reboot at {t} when an update needs it (the lab's `updates.automatic_reboot`).\n\
             Unattended-Upgrade::Automatic-Reboot \"true\";\n\
             Unattended-Upgrade::Automatic-Reboot-WithUsers \"true\";\n\
             Unattended-Upgrade::Automatic-Reboot-Time \"{t}\";\n"
        ),
    };
    plan.file(
        POLICY,
        0o644,
        format!(
            "{}\n// The security pocket only (Ubuntu's, and the ESM security pockets where enabled).\n\
             #clear Unattended-Upgrade::Allowed-Origins;\n\
             #clear Unattended-Upgrade::Origins-Pattern;\n\
             Unattended-Upgrade::Allowed-Origins {{\n\
             \t\"${{distro_id}}:${{distro_codename}}-security\";\n\
             \t\"${{distro_id}}ESMApps:${{distro_codename}}-apps-security\";\n\
             \t\"${{distro_id}}ESM:${{distro_codename}}-infra-security\";\n\
             }};\n{reboot}",
            header()
        ),
        &[],
    );
    if u.security {
        for t in TIMERS {
            plan.unit(t, Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(extra: &str) -> Plan {
        let seed = Seed::from_yaml(&format!("version: 1\nhostname: solo\n{extra}")).unwrap();
        let mut p = Plan::default();
        plan(&seed, &mut p);
        p
    }

    fn file<'a>(p: &'a Plan, path: &str) -> &'a str {
        &p.files.iter().find(|f| f.path == path).unwrap().content
    }

    #[test]
    fn security_updates_on_by_default_without_reboot() {
        let p = planned("");
        let periodic = file(&p, PERIODIC);
        assert!(periodic.contains("APT::Periodic::Update-Package-Lists \"1\";\n"));
        assert!(periodic.contains("APT::Periodic::Unattended-Upgrade \"1\";\n"));
        let policy = file(&p, POLICY);
        assert!(policy.contains("Unattended-Upgrade::Automatic-Reboot \"false\";\n"));
        assert!(!policy.contains("Automatic-Reboot-Time"));
        // Only security pockets, after clearing what the package's file listed.
        let origins: Vec<&str> = policy
            .lines()
            .filter(|l| l.starts_with('\t'))
            .map(str::trim)
            .collect();
        assert_eq!(origins.len(), 3, "{policy}");
        assert!(
            origins.iter().all(|o| o.contains("-security\";")),
            "{policy}"
        );
        let clear = policy
            .find("#clear Unattended-Upgrade::Allowed-Origins;")
            .unwrap();
        assert!(clear < policy.find("Allowed-Origins {").unwrap());
        let units: Vec<&str> = p.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(units, TIMERS);
        // Nothing in the plan runs apt or waits on the network.
        assert!(p.checks.is_empty());
        for f in &p.files {
            assert!(f.restarts.is_empty() && f.mode == 0o644 && !f.secret);
        }
    }

    #[test]
    fn reboot_only_when_the_lab_names_a_time_and_off_means_off() {
        let p = planned("updates: {reboot_at: '03:30'}\n");
        let policy = file(&p, POLICY);
        assert!(policy.contains("Unattended-Upgrade::Automatic-Reboot \"true\";\n"));
        assert!(policy.contains("Unattended-Upgrade::Automatic-Reboot-Time \"03:30\";\n"));
        let off = planned("updates: {security: false}\n");
        assert!(file(&off, PERIODIC).contains("APT::Periodic::Unattended-Upgrade \"0\";\n"));
        assert!(file(&off, PERIODIC).contains("APT::Periodic::Update-Package-Lists \"0\";\n"));
        assert!(
            off.units.is_empty(),
            "updates off: the timers are left as the image has them"
        );
    }

    /// apt.conf syntax: every statement ends with `;`, braces balance, and
    /// comments are `//` (a `#` line would be read as a directive).
    #[test]
    fn files_are_apt_conf_statements() {
        for extra in ["", "updates: {reboot_at: '23:59'}\n"] {
            let p = planned(extra);
            for path in [PERIODIC, POLICY] {
                let text = file(&p, path);
                assert_eq!(
                    text.matches('{').count() - text.matches("${").count(),
                    text.matches('}').count() - text.matches("${").count()
                );
                for l in text.lines() {
                    let l = l.trim();
                    assert!(
                        l.is_empty()
                            || l.starts_with("//")
                            || l.starts_with("#clear ")
                            || l.ends_with(';')
                            || l.ends_with('{'),
                        "{path}: {l:?}"
                    );
                }
            }
        }
    }
}
