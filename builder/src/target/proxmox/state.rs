//! Proxmox itself is the state: guests carry imgbuild's tags (the lab, the
//! seed's and the image's digests) and a human-readable description; seed
//! media and uploaded images carry the lab's name and the digest of what they
//! hold in their volume names. Nothing is stored on the deploy host.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::model::lab::GuestKind;

/// The tag every guest imgbuild manages carries.
pub const MANAGED_TAG: &str = "imgbuild";

/// `lab-homelab`
pub fn lab_tag(lab: &str) -> String {
    format!("lab-{lab}")
}

/// Short digest used in tags and file names (48 bits: collisions between a
/// lab's own successive images or seeds are not a practical concern).
pub fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// The tags of a guest: managed, lab, seed and image digests, sorted (PVE may
/// reorder tags; we compare them as a set).
pub fn guest_tags(lab: &str, seed_hash: &str, image_sha: &str) -> Vec<String> {
    let mut v = vec![
        MANAGED_TAG.to_string(),
        lab_tag(lab),
        format!("seed-{}", short(seed_hash)),
        format!("image-{}", short(image_sha)),
    ];
    v.sort();
    v
}

/// The description shown in the Proxmox GUI.
pub fn description(lab: &str, guest: &str, seed_hash: &str, image_sha: &str) -> String {
    format!(
        "Managed by imgbuild: guest {guest} of lab {lab}.\n\
         seed sha256:{seed_hash}\nimage sha256:{image_sha}\n\
         Change it in the lab file and run `imgbuild deploy`; edits here are overwritten."
    )
}

/// Volume name of a VM image uploaded for import.
pub fn import_name(lab: &str, image: &str, sha: &str) -> String {
    format!("imgbuild-{lab}-{image}-{}.qcow2", short(sha))
}

/// Volume name of a VM's seed ISO.
pub fn iso_name(lab: &str, guest: &str, seed_hash: &str) -> String {
    format!("imgbuild-{lab}-{guest}-seed-{}.iso", short(seed_hash))
}

/// Volume name of a container's personalized template.
pub fn template_name(lab: &str, guest: &str, seed_hash: &str) -> String {
    format!("imgbuild-{lab}-{guest}-seed-{}.tar.zst", short(seed_hash))
}

/// The prefix of every volume this lab uploads.
pub fn volume_prefix(lab: &str) -> String {
    format!("imgbuild-{lab}-")
}

/// One guest as `/cluster/resources?type=vm` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    pub vmid: u32,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub maxcpu: Option<f64>,
    #[serde(default)]
    pub maxmem: Option<u64>,
    #[serde(default)]
    pub maxdisk: Option<u64>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub template: Option<u8>,
}

impl Resource {
    pub fn tag_set(&self) -> BTreeSet<String> {
        self.tags
            .as_deref()
            .unwrap_or("")
            .split([';', ',', ' '])
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn kind(&self) -> Option<GuestKind> {
        match self.kind.as_str() {
            "qemu" => Some(GuestKind::Vm),
            "lxc" => Some(GuestKind::Lxc),
            _ => None,
        }
    }

    /// Managed by imgbuild for `lab`.
    pub fn is_ours(&self, lab: &str) -> bool {
        let t = self.tag_set();
        t.contains(MANAGED_TAG) && t.contains(&lab_tag(lab))
    }

    /// The 12-hex digest after `prefix-` in the tags.
    pub fn tag_value(&self, prefix: &str) -> Option<String> {
        let p = format!("{prefix}-");
        self.tag_set()
            .into_iter()
            .find_map(|t| t.strip_prefix(&p).map(str::to_string))
    }

    pub fn running(&self) -> bool {
        self.status.as_deref() == Some("running")
    }
}

/// The API path of a guest: `/nodes/pve/qemu/100`.
pub fn guest_path(node: &str, kind: GuestKind, vmid: u32) -> String {
    format!("/nodes/{node}/{}/{vmid}", api_kind(kind))
}

pub fn api_kind(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Vm => "qemu",
        GuestKind::Lxc => "lxc",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_identify_the_lab_and_digests() {
        let tags = guest_tags("homelab", "abcdef0123456789", "0011223344556677");
        let r = Resource {
            vmid: 100,
            node: "pve".into(),
            kind: "qemu".into(),
            name: Some("devlab".into()),
            status: Some("running".into()),
            tags: Some(tags.join(";")),
            maxcpu: None,
            maxmem: None,
            maxdisk: None,
            lock: None,
            template: None,
        };
        assert!(r.is_ours("homelab"));
        assert!(!r.is_ours("other"));
        assert_eq!(r.tag_value("seed").as_deref(), Some("abcdef012345"));
        assert_eq!(r.tag_value("image").as_deref(), Some("001122334455"));
        // Tag syntax PVE accepts: [a-z0-9_][a-z0-9_\-+.]*
        for t in tags {
            assert!(t
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_+.".contains(c)));
        }
    }
}
