//! Checks that a container runs unprivileged as Proxmox runs it
//! (`unprivileged: 1`: the container's ids 0..65535 are the host's
//! 100000..165535), seen from the host.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub const BASE: u32 = 100_000;
pub const COUNT: u32 = 65_536;

/// The container's init: the first child of the nspawn process `nspawn`.
pub fn leader(nspawn: u32) -> Option<u32> {
    procs()
        .into_iter()
        .find(|(_, ppid)| *ppid == nspawn)
        .map(|(p, _)| p)
}

fn procs() -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        {
            v.push((pid, ppid));
        }
    }
    v
}

/// `Uid:` of /proc/PID/status: real, effective, saved, fs.
pub fn uids(pid: u32) -> Option<Vec<u32>> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("Uid:"))?;
    l[4..].split_whitespace().map(|u| u.parse().ok()).collect()
}

/// Every process in the container (its init's PID namespace) as
/// (pid, command, uids), read from the host.
pub fn container_processes(leader: u32) -> Vec<(u32, String, Vec<u32>)> {
    let ns = |p: u32| fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(want) = ns(leader) else {
        return Vec::new();
    };
    procs()
        .into_iter()
        .filter(|(p, _)| ns(*p).as_ref() == Some(&want))
        .filter_map(|(p, _)| {
            let comm = fs::read_to_string(format!("/proc/{p}/comm")).ok()?;
            Some((p, comm.trim().to_string(), uids(p)?))
        })
        .collect()
}

/// The host uid of a guest account, from the guest's /etc/passwd.
pub fn host_uid(rootfs: &Path, user: &str) -> u32 {
    host_id(rootfs, "etc/passwd", user)
}

/// The host gid of a guest group, from the guest's /etc/group.
pub fn host_gid(rootfs: &Path, group: &str) -> u32 {
    host_id(rootfs, "etc/group", group)
}

fn host_id(rootfs: &Path, file: &str, name: &str) -> u32 {
    let text = fs::read_to_string(rootfs.join(file)).unwrap();
    let id: u32 = text
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == name).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in {}/{file}", rootfs.display()));
    BASE + id
}

/// The container runs with shifted ids: its init is the host's uid 100000,
/// every process of it a uid in 100000..165535 (and a process runs as each
/// of `users`, guest accounts, shifted); its root is owned by 100000 on the
/// host. Returns a line for the test's log.
pub fn assert_unprivileged(leader: u32, rootfs: &Path, users: &[&str]) -> String {
    let ps = container_processes(leader);
    assert!(ps.len() > 3, "too few processes in the container: {ps:?}");
    let init = ps.iter().find(|p| p.0 == leader).expect("the init");
    assert_eq!(
        init.2,
        vec![BASE; 4],
        "the container's init (systemd) on the host: {init:?}"
    );
    let outside: Vec<_> = ps
        .iter()
        .filter(|(_, _, u)| u.iter().any(|u| !(BASE..BASE + COUNT).contains(u)))
        .collect();
    assert!(
        outside.is_empty(),
        "container processes with host uids outside {BASE}..{}: {outside:?}",
        BASE + COUNT
    );
    for user in users {
        let uid = host_uid(rootfs, user);
        assert!(
            ps.iter().any(|p| p.2[0] == uid),
            "no process of {user} (host uid {uid}) in the container: {ps:?}"
        );
    }
    for rel in ["", "etc/passwd", "usr/bin/passwd", "etc/imgbuild/seed.yaml"] {
        let m = fs::symlink_metadata(rootfs.join(rel)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (BASE, BASE),
            "{}/{rel} on the host",
            rootfs.display()
        );
    }
    let passwd = fs::metadata(rootfs.join("usr/bin/passwd")).unwrap();
    assert_eq!(
        passwd.mode() & 0o4000,
        0o4000,
        "usr/bin/passwd keeps its setuid bit"
    );
    format!(
        "unprivileged: {} container processes, all host uids {BASE}..{}; init uid {BASE}",
        ps.len(),
        BASE + COUNT - 1
    )
}

/// The first container process running as guest account `user`.
pub fn process_of(leader: u32, rootfs: &Path, user: &str) -> u32 {
    let uid = host_uid(rootfs, user);
    let ps = container_processes(leader);
    ps.iter()
        .find(|p| p.2[0] == uid)
        .unwrap_or_else(|| panic!("no process of {user} (host uid {uid}): {ps:?}"))
        .0
}

/// systemd's sandbox of a service is in effect inside the user namespace
/// (seen from the host): a mount namespace of its own with `/` read-only
/// (ProtectSystem=strict), no new privileges, no effective capabilities.
pub fn assert_sandboxed(pid: u32, leader: u32, what: &str) {
    let ns = |p: u32| fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(ns(pid), ns(leader), "{what}: no mount namespace of its own");
    let mi = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mi
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("{what}: no / in its mountinfo:\n{mi}"));
    assert!(
        root.split(' ')
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "{what}: / is not read-only: {root}"
    );
    let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("NoNewPrivs:"), "1", "{what}: NoNewPrivileges");
    assert_eq!(field("CapEff:"), "0000000000000000", "{what}: capabilities");
}

/// Every entry of the tree at `top` is owned by shifted ids on the host.
pub fn assert_tree_shifted(top: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        assert!(
            (BASE..BASE + COUNT).contains(&m.uid()) && (BASE..BASE + COUNT).contains(&m.gid()),
            "{} is owned by {}:{} on the host, not by the container's shifted ids",
            p.display(),
            m.uid(),
            m.gid()
        );
        n += 1;
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    n
}

/// What a privileged run (before unprivileged containers) left: the tree's
/// ids unshifted. Returns the number of entries.
pub fn unshift_tree(top: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let back = |id: u32| id.checked_sub(BASE).filter(|i| *i < COUNT);
        std::os::unix::fs::lchown(&p, back(m.uid()), back(m.gid())).unwrap();
        n += 1;
        if m.is_dir() {
            stack.extend(fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    n
}

/// The cgroups the runner made for `machine` (prefix) are gone.
pub fn assert_no_cgroups(machine_tag: &str) {
    for h in ["systemd", "unified", ""] {
        let d = Path::new("/sys/fs/cgroup").join(h).join("imgbuild");
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                assert!(
                    !e.file_name().to_string_lossy().contains(machine_tag),
                    "cgroup {} is left",
                    e.path().display()
                );
            }
        }
    }
}
