//! The NoCloud seed volume for VMs: rendering `meta-data`, `user-data` and
//! `network-config` (pure functions) and writing them, plus
//! `imgbuild/seed.yaml` for firstboot, as an ISO 9660 image labelled
//! `cidata` with both Joliet and Rock Ridge names, so Linux (which prefers
//! Rock Ridge), Windows-style readers (Joliet) and plain ISO readers all see
//! `user-data`, `meta-data` and `network-config` with their dashes and case.
//!
//! The writer ([`iso`]) is a small, fixed-layout ISO 9660 encoder: two
//! directories, four files, no external tool. The same inputs give the same bytes; every
//! date in the image is [`crate::payload::default_mtime`].
//!
//! Root login: `disable_root: false`, so root gets the lab's keys exactly
//! like the default user, and `ssh_pwauth: false` turns password logins off:
//! root is reachable by key only, as in the LXC guests.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

pub mod iso;

/// The files of a `cidata` volume, as bytes ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidataFiles {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: String,
    pub seed_yaml: String,
}

/// The guest's static network settings for `network-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub nameservers: Vec<Ipv4Addr>,
    /// Interface name glob to configure (`e*` matches ens18, eth0, enp0s3).
    /// Only netplan (Ubuntu) honours it: cloud-init's networkd renderer
    /// (Debian's 22.4 at least) writes `[Match] Name=<entry id>` and the NIC
    /// stays down. Give the MAC whenever it is known.
    pub match_name: String,
    /// When set, match the NIC by MAC address instead of by name (cloud-init
    /// looks the current interface name up by it, for every renderer).
    pub mac: Option<String>,
}

impl NetworkSettings {
    pub fn new(
        address: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
        nameservers: Vec<Ipv4Addr>,
    ) -> Self {
        NetworkSettings {
            address,
            prefix,
            gateway,
            nameservers,
            match_name: "e*".into(),
            mac: None,
        }
    }
}

fn yaml<T: Serialize>(v: &T) -> String {
    // Serializing plain structs of strings and lists cannot fail.
    serde_yaml::to_string(v).expect("serializing cloud-init YAML")
}

/// `meta-data`: the instance id (changes whenever the seed does, which makes
/// cloud-init re-run its per-instance modules) and the hostname.
pub fn render_meta_data(seed_hash: &str, hostname: &str) -> String {
    #[derive(Serialize)]
    struct Meta<'a> {
        #[serde(rename = "instance-id")]
        instance_id: String,
        #[serde(rename = "local-hostname")]
        local_hostname: &'a str,
    }
    yaml(&Meta {
        instance_id: format!("iid-imgbuild-{seed_hash}"),
        local_hostname: hostname,
    })
}

/// `user-data` (`#cloud-config`): hostname, the lab's SSH keys for the
/// default user and root, password logins off.
pub fn render_user_data(hostname: &str, ssh_keys: &[String]) -> String {
    #[derive(Serialize)]
    struct UserData<'a> {
        hostname: &'a str,
        preserve_hostname: bool,
        ssh_authorized_keys: &'a [String],
        ssh_pwauth: bool,
        disable_root: bool,
    }
    let body = yaml(&UserData {
        hostname,
        preserve_hostname: false,
        ssh_authorized_keys: ssh_keys,
        ssh_pwauth: false,
        disable_root: false,
    });
    format!("#cloud-config\n{body}")
}

/// `network-config`, version 2: one static IPv4 address, a default route and
/// DNS servers on the matched ethernet interface. The default route is written
/// `to: 0.0.0.0/0`: cloud-init before 23.x (Debian bookworm's 22.4.2) rejects
/// `to: default` ("Address default is not a valid ip address") and then brings
/// up no network at all; every version accepts the CIDR form.
pub fn render_network_config(net: &NetworkSettings) -> String {
    #[derive(Serialize)]
    struct Config {
        version: u8,
        ethernets: std::collections::BTreeMap<&'static str, Ethernet>,
    }
    #[derive(Serialize)]
    struct Ethernet {
        #[serde(rename = "match")]
        matches: std::collections::BTreeMap<&'static str, String>,
        dhcp4: bool,
        dhcp6: bool,
        addresses: Vec<String>,
        routes: Vec<Route>,
        nameservers: Nameservers,
    }
    #[derive(Serialize)]
    struct Route {
        to: &'static str,
        via: String,
    }
    #[derive(Serialize)]
    struct Nameservers {
        addresses: Vec<String>,
    }
    let matches = match &net.mac {
        Some(mac) => [("macaddress", mac.to_ascii_lowercase())].into(),
        None => [("name", net.match_name.clone())].into(),
    };
    let eth = Ethernet {
        matches,
        dhcp4: false,
        dhcp6: false,
        addresses: vec![format!("{}/{}", net.address, net.prefix)],
        routes: vec![Route {
            to: "0.0.0.0/0",
            via: net.gateway.to_string(),
        }],
        nameservers: Nameservers {
            addresses: net.nameservers.iter().map(|a| a.to_string()).collect(),
        },
    };
    yaml(&Config {
        version: 2,
        ethernets: [("lab0", eth)].into(),
    })
}

/// The cidata files of `guest` with its `seed`, its NIC matched by `mac` when
/// given (`imgbuild seed --format cidata` and deploy both use this).
pub fn for_guest(
    lab: &crate::model::lab::Lab,
    guest: &crate::model::lab::Guest,
    seed: &imgbuild_seed::Seed,
    mac: Option<&str>,
) -> CidataFiles {
    let mut net = NetworkSettings::new(
        guest.address,
        lab.network.cidr.prefix(),
        lab.network.gateway,
        lab.network.dns.clone(),
    );
    net.mac = mac.map(str::to_string);
    CidataFiles {
        meta_data: render_meta_data(&seed.instance_id(), guest.name.as_str()),
        user_data: render_user_data(guest.name.as_str(), &lab.ssh.public_keys()),
        network_config: render_network_config(&net),
        seed_yaml: seed.to_yaml(),
    }
}

/// Writes the `cidata` ISO to `out` atomically (temp file beside it, fsync,
/// rename, fsync the directory). The file is private (0600): the seed can
/// carry credentials.
pub fn write_iso(files: &CidataFiles, out: &Path) -> Result<()> {
    let bytes = iso::build(files, crate::payload::default_mtime())?;
    crate::fsutil::write_atomic(out, &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cloud_init_documents() {
        let m = render_meta_data("ab12", "devlab");
        assert_eq!(
            m,
            "instance-id: iid-imgbuild-ab12\nlocal-hostname: devlab\n"
        );
        let u = render_user_data("devlab", &["ssh-ed25519 AAAA lab@home".to_string()]);
        assert!(u.starts_with("#cloud-config\n"), "{u}");
        let v: serde_yaml::Value = serde_yaml::from_str(&u).unwrap();
        assert_eq!(v["hostname"], "devlab");
        assert_eq!(v["ssh_pwauth"], false);
        assert_eq!(v["disable_root"], false);
        assert_eq!(v["ssh_authorized_keys"][0], "ssh-ed25519 AAAA lab@home");
        let net = NetworkSettings::new(
            "192.168.1.100".parse().unwrap(),
            24,
            "192.168.1.1".parse().unwrap(),
            vec!["8.8.8.8".parse().unwrap()],
        );
        let n = render_network_config(&net);
        let v: serde_yaml::Value = serde_yaml::from_str(&n).unwrap();
        assert_eq!(v["version"], 2);
        let e = &v["ethernets"]["lab0"];
        assert_eq!(e["match"]["name"], "e*");
        assert_eq!(e["addresses"][0], "192.168.1.100/24");
        assert_eq!(e["routes"][0]["to"], "0.0.0.0/0");
        assert_eq!(e["routes"][0]["via"], "192.168.1.1");
        assert_eq!(e["nameservers"]["addresses"][0], "8.8.8.8");
        let mac = NetworkSettings {
            mac: Some("BC:24:11:00:00:01".into()),
            ..net
        };
        let v: serde_yaml::Value = serde_yaml::from_str(&render_network_config(&mac)).unwrap();
        assert_eq!(
            v["ethernets"]["lab0"]["match"]["macaddress"],
            "bc:24:11:00:00:01"
        );
    }
}
