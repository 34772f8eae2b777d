//! Can this machine run the lab? Root, the tools the guests' kinds need (each
//! missing one named with its Debian/Ubuntu package), the kernel features
//! (network namespaces, TUN), and memory: the lab's memory must fit in what
//! the host has available, or be scaled down on request.

use anyhow::{bail, Result};

use super::sys::have;
use crate::model::lab::{GuestKind, Lab};

/// Everything missing, in one error.
pub fn preflight(lab: &Lab) -> Result<()> {
    let mut missing: Vec<String> = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push(
            "root: `imgbuild up` creates a network namespace, bridges and guests (run it with sudo)"
                .into(),
        );
    }
    let mut tools = vec![("ip", "iproute2")];
    let kinds: Vec<GuestKind> = lab.guests.iter().map(|g| g.kind).collect();
    if kinds.contains(&GuestKind::Lxc) {
        tools.extend([
            ("systemd-nspawn", "systemd-container"),
            ("nsenter", "util-linux"),
            ("tar", "tar"),
            ("zstd", "zstd"),
        ]);
    }
    if kinds.contains(&GuestKind::Vm) {
        tools.extend([
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("qemu-img", "qemu-utils"),
        ]);
    }
    for (tool, pkg) in tools {
        if !have(tool) {
            missing.push(format!("{tool}: install the package {pkg}"));
        }
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        missing.push("kernel feature: network namespaces (CONFIG_NET_NS)".into());
    }
    if kinds.contains(&GuestKind::Vm) && !std::path::Path::new("/dev/net/tun").exists() {
        missing.push("kernel feature: /dev/net/tun (module tun: `modprobe tun`)".into());
    }
    if !missing.is_empty() {
        bail!(
            "this machine cannot run the lab yet:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// MemAvailable from /proc/meminfo, in MiB.
pub fn available_mib() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("/proc/meminfo has no MemAvailable"))?;
    Ok(kib / 1024)
}

/// The smallest memory a guest is scaled down to (MiB): below that the
/// JVMs and the object store do not start.
pub const MIN_GUEST_MIB: u64 = 1024;

/// Each guest's memory in MiB: the lab's, or with `scale` scaled to fit 80%
/// of `available` (never below [`MIN_GUEST_MIB`]). Without `scale`, a lab
/// that does not fit is refused with the numbers.
pub fn plan_memory(lab: &Lab, available: u64, scale: bool) -> Result<Vec<(String, u64)>> {
    let want: Vec<(String, u64)> = lab
        .guests
        .iter()
        .map(|g| (g.name.as_str().to_string(), g.resources.memory.mib()))
        .collect();
    let total: u64 = want.iter().map(|(_, m)| m).sum();
    let budget = available * 8 / 10;
    if total <= budget {
        return Ok(want);
    }
    if !scale {
        bail!(
            "the lab wants {total} MiB of memory ({}) but this machine has {available} MiB available \
             (80% = {budget} MiB usable); rerun with --scale-memory to give each guest a share \
             of what is available (at least {MIN_GUEST_MIB} MiB each)",
            want.iter()
                .map(|(n, m)| format!("{n} {m} MiB"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let scaled: Vec<(String, u64)> = want
        .iter()
        .map(|(n, m)| (n.clone(), (m * budget / total).max(MIN_GUEST_MIB)))
        .collect();
    let new_total: u64 = scaled.iter().map(|(_, m)| m).sum();
    if new_total > available {
        bail!(
            "even scaled down to {MIN_GUEST_MIB} MiB per guest the lab needs {new_total} MiB, \
             more than the {available} MiB available"
        );
    }
    Ok(scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Lab {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/seed/lab.yaml");
        crate::model::lab::load(&p).unwrap()
    }

    #[test]
    fn a_lab_that_fits_keeps_its_memory() {
        let m = plan_memory(&lab(), 64 * 1024, false).unwrap();
        assert_eq!(m, vec![("minio".into(), 4096), ("devlab".into(), 8192)]);
    }

    #[test]
    fn a_lab_that_does_not_fit_is_refused_with_numbers_or_scaled() {
        let e = plan_memory(&lab(), 8 * 1024, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("12288 MiB"), "{e}");
        assert!(e.contains("8192 MiB available"), "{e}");
        assert!(e.contains("--scale-memory"), "{e}");
        let m = plan_memory(&lab(), 8 * 1024, true).unwrap();
        // 80% of 8192 = 6553 MiB shared 1:2.
        assert_eq!(m, vec![("minio".into(), 2184), ("devlab".into(), 4368)]);
        assert!(plan_memory(&lab(), 1500, true).is_err());
    }
}
