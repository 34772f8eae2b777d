//! The common role: host name, /etc/hosts peers, time zone, SSH hardening and
//! root's keys, an nftables firewall allowing exactly the seed's ports, and
//! unattended security updates ([`super::updates`]).

use super::HEADER;
use crate::plan::Plan;
use crate::seed::{Proto, Seed};
use std::fmt::Write as _;
use std::time::Duration;

const HOSTS_BEGIN: &str = "# --- BEGIN imgbuild (firstboot, from the seed) ---";
const HOSTS_END: &str = "# --- END imgbuild ---";

/// Adds the common role to `plan`.
pub fn plan(seed: &Seed, current_hosts: &str, plan: &mut Plan) {
    let host = seed.hostname.as_str();
    plan.file("/etc/hostname", 0o644, format!("{host}\n"), &[]);
    plan.hostname = Some(host.to_string());
    plan.file("/etc/hosts", 0o644, hosts(seed, current_hosts), &[]);

    let tz = seed.timezone.as_str();
    plan.timezone = Some(tz.to_string());
    plan.file("/etc/timezone", 0o644, format!("{tz}\n"), &[]);
    plan.links.push(crate::plan::Link {
        path: "/etc/localtime".into(),
        target: format!("/usr/share/zoneinfo/{tz}"),
        restarts: vec![],
    });

    plan.dir("/etc/ssh/sshd_config.d", 0o755, "root", "root");
    plan.file(
        "/etc/ssh/sshd_config.d/10-imgbuild.conf",
        0o644,
        format!(
            "{HEADER}\n# sshd uses the first value it reads, and Debian/Ubuntu include this directory first.\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        ),
        &["ssh.service"],
    );
    plan.dir("/root/.ssh", 0o700, "root", "root");
    let mut keys = String::new();
    for k in &seed.ssh.authorized_keys {
        keys.push_str(k.as_str());
        keys.push('\n');
    }
    plan.file("/root/.ssh/authorized_keys", 0o600, keys, &[]);
    plan.ssh_host_keys = true;

    plan.file(
        "/etc/nftables.conf",
        0o755,
        nftables(seed),
        &["nftables.service"],
    );
    plan.unit("nftables.service", Duration::from_secs(60));
    plan.unit("ssh.service", Duration::from_secs(60));

    super::updates::plan(seed, plan);
}

/// /etc/hosts with imgbuild's block first (first match wins in glibc), so the
/// host name resolves to its lab address when the seed lists it as a peer.
fn hosts(seed: &Seed, current: &str) -> String {
    let mut block = format!("{HOSTS_BEGIN}\n");
    if !seed.peers.contains_key(&seed.hostname) {
        let _ = writeln!(block, "127.0.1.1\t{}", seed.hostname);
    }
    for (name, ip) in &seed.peers {
        let _ = writeln!(block, "{ip}\t{name}");
    }
    block.push_str(HOSTS_END);
    block.push('\n');
    let mut rest = String::new();
    let mut inside = false;
    for line in current.lines() {
        match line {
            HOSTS_BEGIN => inside = true,
            HOSTS_END => inside = false,
            _ if inside => {}
            _ => {
                rest.push_str(line);
                rest.push('\n');
            }
        }
    }
    if !rest
        .lines()
        .any(|l| l.split_whitespace().skip(1).any(|n| n == "localhost"))
    {
        rest.insert_str(
            0,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
    }
    block + &rest
}

/// The whole ruleset: input policy drop; loopback, established, ICMP, SSH and
/// exactly the seed's ports accepted. Forwarding is dropped (guests are no routers).
/// ICMP is matched by protocol number: nft resolves names through
/// /etc/protocols, which minimal bases (no netbase) do not have.
fn nftables(seed: &Seed) -> String {
    let mut rules = String::from("\t\ttcp dport 22 accept comment \"ssh\"\n");
    for p in &seed.firewall.open {
        if p.port.get() == 22 && p.proto == Proto::Tcp {
            continue;
        }
        rules.push_str("\t\t");
        if !p.from.is_empty() {
            // Only the listed sources (metrics ports: the lab's monitoring addresses).
            let from: Vec<String> = p.from.iter().map(|a| a.to_string()).collect();
            let _ = write!(rules, "ip saddr {{ {} }} ", from.join(", "));
        }
        let _ = write!(rules, "{} dport {} accept", p.proto.as_str(), p.port);
        if let Some(c) = &p.comment {
            let _ = write!(rules, " comment \"{c}\"");
        }
        rules.push('\n');
    }
    format!(
        "#!/usr/sbin/nft -f\n{HEADER}\n\nflush ruleset\n\ntable inet filter {{\n\
         \tchain input {{\n\t\ttype filter hook input priority filter; policy drop;\n\
         \t\tiif \"lo\" accept\n\t\tct state established,related accept\n\t\tct state invalid drop\n\
         \t\tmeta l4proto {{ 1, 58 }} accept comment \"icmp, ipv6-icmp\"\n{rules}\t}}\n\
         \tchain forward {{\n\t\ttype filter hook forward priority filter; policy drop;\n\t}}\n\
         \tchain output {{\n\t\ttype filter hook output priority filter; policy accept;\n\t}}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_block_is_replaced_not_duplicated() {
        let seed = Seed::from_yaml(
            "version: 1\nhostname: devlab\npeers: {minio: 10.0.0.2, devlab: 10.0.0.1}\n",
        )
        .unwrap();
        let first = hosts(&seed, "127.0.0.1 localhost\n10.9.9.9 other\n");
        assert!(first.starts_with(HOSTS_BEGIN), "{first}");
        assert!(
            first.contains("10.0.0.1\tdevlab\n") && !first.contains("127.0.1.1"),
            "{first}"
        );
        assert!(first.contains("10.9.9.9 other"));
        assert_eq!(hosts(&seed, &first), first, "a fixed point");
        let alone = Seed::from_yaml("version: 1\nhostname: solo\n").unwrap();
        let h = hosts(&alone, "");
        assert!(
            h.contains("127.0.1.1\tsolo") && h.contains("127.0.0.1\tlocalhost"),
            "{h}"
        );
    }

    #[test]
    fn nft_accepts_exactly_the_seed_ports() {
        let seed = Seed::from_yaml(
            "version: 1\nhostname: a\nfirewall:\n  open:\n    - {port: 22}\n    - {port: 9000, comment: s3 api}\n    - {port: 53, proto: udp}\n",
        )
        .unwrap();
        let n = nftables(&seed);
        assert_eq!(n.matches("dport 22 ").count(), 1, "{n}");
        assert!(n.contains("tcp dport 9000 accept comment \"s3 api\""));
        assert!(n.contains("udp dport 53 accept\n"));
        let rules = n
            .lines()
            .filter(|l| l.contains(" accept") && !l.contains("policy"))
            .count();
        assert_eq!(rules, 6, "lo, established, icmp, 22, 9000, 53:\n{n}");
    }

    #[test]
    fn nft_limits_a_port_to_its_sources() {
        let seed = Seed::from_yaml(
            "version: 1\nhostname: a\nfirewall:\n  open:\n    - {port: 9100, comment: node exporter, from: [10.0.0.5, 10.0.0.6]}\n",
        )
        .unwrap();
        let n = nftables(&seed);
        assert!(
            n.contains("\t\tip saddr { 10.0.0.5, 10.0.0.6 } tcp dport 9100 accept comment \"node exporter\"\n"),
            "{n}"
        );
        assert_eq!(n.matches("dport 9100").count(), 1, "{n}");
        nft_check(&n);
    }

    /// `nft -c` parses and checks the ruleset without loading it. It needs
    /// CAP_NET_ADMIN for the netlink cache, which tests have as root.
    fn nft_check(ruleset: &str) {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("nft.conf");
        std::fs::write(&f, ruleset).unwrap();
        let out = std::process::Command::new("nft")
            .arg("-c")
            .arg("-f")
            .arg(&f)
            .output()
            .expect("nft installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn nft_syntax_is_accepted_by_nft() {
        let seed = Seed::from_yaml("version: 1\nhostname: a\nfirewall:\n  open: [{port: 9000, comment: s3 api}, {port: 53, proto: udp}]\n").unwrap();
        nft_check(&nftables(&seed));
    }
}
