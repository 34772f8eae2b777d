//! Unattended security updates (the common role): Ubuntu's own mechanism,
//! `unattended-upgrades` run by apt's daily timers, from the security pocket
//! only. On unless the lab turns it off; a reboot an update asks for happens
//! only when the lab names a time for it. Absent from a seed = the defaults,
//! and then not written at all (so seeds from before this field keep their
//! instance id).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The `updates` section of a seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Updates {
    /// Install security updates unattended (default true).
    #[serde(default = "yes")]
    pub security: bool,
    /// Reboot by itself at this time of day (guest time zone) when an
    /// update needs it; absent = never reboot automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_at: Option<RebootTime>,
}

fn yes() -> bool {
    true
}

impl Default for Updates {
    fn default() -> Self {
        Updates {
            security: true,
            reboot_at: None,
        }
    }
}

impl Updates {
    /// Whether these are the defaults (then the seed leaves the section out).
    pub fn is_default(&self) -> bool {
        *self == Updates::default()
    }
}

/// A time of day `HH:MM` (24 h), as `Unattended-Upgrade::Automatic-Reboot-Time` takes it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RebootTime(String);

impl RebootTime {
    /// Validates `HH:MM`.
    pub fn new(s: &str) -> Result<Self, String> {
        let ok = s.len() == 5
            && s.as_bytes()[2] == b':'
            && s[..2].parse::<u8>().is_ok_and(|h| h < 24)
            && s[3..].parse::<u8>().is_ok_and(|m| m < 60)
            && s.bytes()
                .enumerate()
                .all(|(i, b)| i == 2 || b.is_ascii_digit());
        if ok {
            Ok(RebootTime(s.to_string()))
        } else {
            Err(format!(
                "invalid reboot time {s:?}: expected HH:MM on a 24-hour clock, e.g. 03:30"
            ))
        }
    }

    /// The `HH:MM` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RebootTime {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RebootTime::new(&s)
    }
}

impl From<RebootTime> for String {
    fn from(t: RebootTime) -> String {
        t.0
    }
}

impl fmt::Debug for RebootTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RebootTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_times_are_hh_mm() {
        for ok in ["00:00", "03:30", "23:59"] {
            assert_eq!(RebootTime::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "24:00", "3:30", "03:60", "03-30", "", "+3:30", "03:3x", "003:0",
        ] {
            assert!(RebootTime::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_left_out_of_a_seed() {
        let base = "version: 1\nhostname: solo\n";
        let s = crate::Seed::from_yaml(base).unwrap();
        assert!(s.updates.security && s.updates.reboot_at.is_none());
        assert!(
            !s.to_yaml().contains("updates"),
            "a default section changes every instance id:\n{}",
            s.to_yaml()
        );
        let s = crate::Seed::from_yaml(&format!(
            "{base}updates: {{security: true, reboot_at: '04:15'}}\n"
        ))
        .unwrap();
        assert_eq!(s.updates.reboot_at.as_ref().unwrap().as_str(), "04:15");
        let again = crate::Seed::from_yaml(&s.to_yaml()).unwrap();
        assert_eq!(again, s);
        let e = crate::Seed::from_yaml(&format!("{base}updates: {{reboot_at: '25:00'}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("updates") && e.contains("HH:MM"), "{e}");
        assert!(crate::Seed::from_yaml(&format!("{base}updates: {{reboot: yes}}\n")).is_err());
    }
}
