//! Unprivileged containers as Proxmox runs them: the container's ids
//! 0..65535 are the host's 100000..165535 (PVE's default `lxc.idmap`), so
//! its root file system and its mount points' data are owned by those
//! shifted ids on the host.
//!
//! - [`UserNs`]: a user namespace with such a map, to run a command in (pct
//!   extracts a template with `lxc-usernsexec -m u:0:100000:65536 ... --
//!   tar`; here a holder process, the map written by us as root, `nsenter
//!   --user`: no `newuidmap`, no extra package). The kernel then stores what
//!   the command writes with the host's ids: owners, ACL entries, and file
//!   capabilities as v3 `security.capability` with root id 100000.
//! - [`conform`]: a data directory written with the other mode's ids (by a
//!   privileged run before, or the reverse) shifted in place, keeping setuid
//!   bits, ACLs and file capabilities (which `chown` drops); the data itself
//!   is never copied or removed.
//! - [`mkdirs`] / [`own`]: what the runner itself writes into a container's
//!   root (pct's network files, SSH keys, mount points) owned by its root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A container's id map: its ids `0..count` are the host's `base..base+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub base: u32,
    pub count: u32,
}

impl IdMap {
    /// Proxmox's map for `unprivileged: 1` (no `lxc.idmap` keys).
    pub const PVE: IdMap = IdMap {
        base: 100_000,
        count: 65_536,
    };

    /// nspawn's `--private-users=` value.
    pub fn nspawn_arg(&self) -> String {
        format!("--private-users={}:{}", self.base, self.count)
    }
}

/// The host id of the container's root: 0 when privileged.
pub fn root_id(map: Option<IdMap>) -> u32 {
    map.map_or(0, |m| m.base)
}

/// Whether a host id belongs to the container's range (`0..65536` when
/// privileged).
fn in_range(id: u32, map: Option<IdMap>) -> bool {
    let m = map.unwrap_or(IdMap {
        base: 0,
        count: IdMap::PVE.count,
    });
    id >= m.base && id - m.base < m.count
}

/// A user namespace with `map` for uids and gids, held open by a process
/// of ours until dropped.
pub struct UserNs {
    holder: Child,
}

impl UserNs {
    pub fn new(map: IdMap) -> Result<UserNs> {
        let holder = Command::new("unshare")
            .args(["--user", "--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `unshare --user` (util-linux)")?;
        let mut ns = UserNs { holder };
        let pid = ns.holder.id();
        let ours = fs::read_link("/proc/self/ns/user").context("reading /proc/self/ns/user")?;
        let end = Instant::now() + Duration::from_secs(30);
        // unshare(2) happens after the fork: wait until the holder is in its own namespace.
        loop {
            match fs::read_link(format!("/proc/{pid}/ns/user")) {
                Ok(l) if l != ours => break,
                _ if Instant::now() >= end => {
                    bail!("`unshare --user` (pid {pid}) did not enter a new user namespace within 30 s")
                }
                _ => {}
            }
            if let Some(st) = ns.holder.try_wait()? {
                bail!("`unshare --user` exited at once ({st}): are user namespaces disabled (user.max_user_namespaces)?");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let line = format!("0 {} {}\n", map.base, map.count);
        for f in ["uid_map", "gid_map"] {
            let p = format!("/proc/{pid}/{f}");
            fs::write(&p, &line).with_context(|| format!("writing `{}` to {p}", line.trim()))?;
        }
        Ok(ns)
    }

    /// `program` run as the namespace's root (its cwd and open files are
    /// ours: paths above them need not be reachable by the shifted ids).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--user=/proc/{}/ns/user", self.holder.id()))
            .args(["--setuid=0", "--setgid=0", "--"])
            .arg(program);
        c
    }
}

impl Drop for UserNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Gives `path` (not following a symlink) to the container's root.
pub fn own(path: &Path, map: Option<IdMap>) -> Result<()> {
    let id = root_id(map);
    std::os::unix::fs::lchown(path, Some(id), Some(id))
        .with_context(|| format!("chown {id}:{id} {}", path.display()))
}

/// Creates `root/rel` and the missing directories above it (mode 0755),
/// each new one owned by the container's root.
pub fn mkdirs(root: &Path, rel: &Path, map: Option<IdMap>) -> Result<()> {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        if matches!(c, std::path::Component::RootDir) {
            continue;
        }
        p.push(c);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
            own(&p, map)?;
        }
    }
    Ok(())
}

/// Whether `dir` (a root or a volume) is owned as a container with `map`
/// would have it: its top's owner in the container's range.
pub fn owned_for(dir: &Path, map: Option<IdMap>) -> Result<bool> {
    let m = fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(in_range(m.uid(), map) && in_range(m.gid(), map))
}

/// What [`conform`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shifted {
    /// Files, directories and links given shifted owners.
    pub entries: u64,
}

/// Shifts the ids in the tree at `top` that belong to the other mode's
/// range (the privileged 0..65535 for an unprivileged `map`, the PVE range
/// for a privileged container) into the container's, in place, without
/// crossing into other file systems. Ids outside that range are left
/// alone, so a run cut short is finished by the next one; `top` is shifted
/// last, so a top already in the container's range means a finished tree
/// (checked first: a started volume costs one `stat`).
pub fn conform(top: &Path, map: Option<IdMap>) -> Result<Shifted> {
    let mut done = Shifted::default();
    if owned_for(top, map)? {
        return Ok(done);
    }
    let (from, to) = match map {
        Some(m) => (
            IdMap {
                base: 0,
                count: m.count,
            },
            m.base,
        ),
        None => (IdMap::PVE, 0),
    };
    let dev = fs::symlink_metadata(top)?.dev();
    walk(top, dev, &mut |p, m| {
        if shift_one(p, m, from, to)? {
            done.entries += 1;
        }
        Ok(())
    })?;
    Ok(done)
}

/// Post-order: a directory after everything in it.
fn walk(p: &Path, dev: u64, f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>) -> Result<()> {
    let m = fs::symlink_metadata(p).with_context(|| format!("reading {}", p.display()))?;
    if m.dev() != dev {
        return Ok(());
    }
    if m.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", p.display()))?;
        entries.sort();
        for e in entries {
            walk(&e, dev, f)?;
        }
    }
    f(p, &m)
}

const CAPS: &str = "security.capability";
const ACLS: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

fn shift_one(p: &Path, m: &fs::Metadata, from: IdMap, to: u32) -> Result<bool> {
    let shift =
        |id: u32| (id >= from.base && id - from.base < from.count).then(|| id - from.base + to);
    let (uid, gid) = (shift(m.uid()), shift(m.gid()));
    if uid.is_none() && gid.is_none() {
        return Ok(false);
    }
    let link = m.file_type().is_symlink();
    // chown drops setuid/setgid bits and file capabilities: read them first.
    let caps = if m.is_file() {
        get_xattr(p, CAPS)?
    } else {
        None
    };
    let mut acls = Vec::new();
    if !link {
        for name in ACLS {
            if let Some(v) = get_xattr(p, name)? {
                acls.push((name, shift_acl(&v, &shift)));
            }
        }
    }
    std::os::unix::fs::lchown(p, uid, gid).with_context(|| format!("chown {}", p.display()))?;
    for (name, v) in acls {
        set_xattr(p, name, &v)?;
    }
    if !link && m.mode() & 0o6000 != 0 {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(m.mode() & 0o7777))
            .with_context(|| format!("chmod {:o} {}", m.mode() & 0o7777, p.display()))?;
    }
    if let Some(c) = caps {
        set_xattr(p, CAPS, &shift_caps(&c, &shift))?;
    }
    Ok(true)
}

/// A POSIX ACL xattr (version 2: 4 bytes, then 8-byte entries `tag u16,
/// perm u16, id u32`, little-endian) with its named users' and groups' ids
/// shifted.
fn shift_acl(v: &[u8], shift: &dyn Fn(u32) -> Option<u32>) -> Vec<u8> {
    const ACL_USER: u16 = 0x02;
    const ACL_GROUP: u16 = 0x08;
    let mut out = v.to_vec();
    if v.len() < 4 {
        return out;
    }
    for e in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        if tag == ACL_USER || tag == ACL_GROUP {
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            if let Some(n) = shift(id) {
                e[4..8].copy_from_slice(&n.to_le_bytes());
            }
        }
    }
    out
}

/// A `security.capability` value with its root id shifted: version 2
/// (20 bytes, root id 0) or 3 (24 bytes, root id last); a root id of 0 is
/// written as version 2, any other as version 3, as the kernel does.
fn shift_caps(v: &[u8], shift: &dyn Fn(u32) -> Option<u32>) -> Vec<u8> {
    const REV_MASK: u32 = 0xff00_0000;
    const REV2: u32 = 0x0200_0000;
    const REV3: u32 = 0x0300_0000;
    if v.len() < 20 {
        return v.to_vec();
    }
    let magic = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
    let rootid = match (magic & REV_MASK, v.len()) {
        (REV2, 20) => 0,
        (REV3, 24) => u32::from_le_bytes([v[20], v[21], v[22], v[23]]),
        _ => return v.to_vec(),
    };
    let new = shift(rootid).unwrap_or(rootid);
    let flags = magic & !REV_MASK;
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&((if new == 0 { REV2 } else { REV3 }) | flags).to_le_bytes());
    out.extend_from_slice(&v[4..20]);
    if new != 0 {
        out.extend_from_slice(&new.to_le_bytes());
    }
    out
}

fn get_xattr(p: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    use rustix::io::Errno;
    let missing = |e: Errno| e == Errno::NODATA || e == Errno::NOTSUP || e == Errno::OPNOTSUPP;
    let len = match rustix::fs::lgetxattr_query(p, name) {
        Ok(n) => n,
        Err(e) if missing(e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {name} of {}", p.display())),
    };
    let mut buf = vec![0u8; len];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..])
        .with_context(|| format!("reading {name} of {}", p.display()))?;
    buf.truncate(n);
    Ok(Some(buf))
}

fn set_xattr(p: &Path, name: &str, v: &[u8]) -> Result<()> {
    rustix::fs::lsetxattr(p, name, v, rustix::fs::XattrFlags::empty())
        .with_context(|| format!("writing {name} of {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn owner(p: &Path) -> (u32, u32) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    }

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    /// cap_net_raw (bit 13) permitted and effective, version 2.
    fn caps_v2() -> Vec<u8> {
        let mut v = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
        v.extend_from_slice(&(1u32 << 13).to_le_bytes());
        v.extend_from_slice(&[0; 12]);
        v
    }

    #[test]
    fn caps_and_acls_shift_their_ids_only() {
        let shift = |id: u32| (id < 65_536).then_some(id + 100_000);
        let v3 = shift_caps(&caps_v2(), &shift);
        assert_eq!(v3.len(), 24);
        assert_eq!(&v3[0..4], &(0x0300_0000u32 | 1).to_le_bytes());
        assert_eq!(&v3[4..20], &caps_v2()[4..20]);
        assert_eq!(&v3[20..], &100_000u32.to_le_bytes());
        let back = |id: u32| (100_000..165_536).contains(&id).then(|| id - 100_000);
        assert_eq!(shift_caps(&v3, &back), caps_v2(), "root id 0 is version 2");
        let a = acl(&[
            (0x01, 6, u32::MAX),
            (0x02, 4, 1000),
            (0x08, 5, 70_000),
            (0x20, 0, u32::MAX),
        ]);
        let b = shift_acl(&a, &shift);
        assert_eq!(
            b,
            acl(&[
                (0x01, 6, u32::MAX),
                (0x02, 4, 101_000),
                (0x08, 5, 70_000),
                (0x20, 0, u32::MAX)
            ]),
            "named user shifted; a group outside the range and the owner entries untouched"
        );
    }

    /// Real chown, xattrs and the kernel's rules (needs root, as `up` does).
    #[test]
    fn conform_shifts_a_tree_in_place_keeping_setuid_caps_acls_and_data() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (as `imgbuild up`)"
        );
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("volume");
        fs::create_dir_all(top.join("bucket/sub")).unwrap();
        let data = top.join("bucket/sub/object");
        fs::write(&data, b"kept").unwrap();
        std::os::unix::fs::lchown(&data, Some(998), Some(997)).unwrap();
        let suid = top.join("tool");
        fs::write(&suid, b"#!/bin/true\n").unwrap();
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
        let capped = top.join("ping");
        fs::write(&capped, b"x").unwrap();
        set_xattr(&capped, CAPS, &caps_v2()).unwrap();
        let acl_v = acl(&[
            (0x01, 6, u32::MAX),
            (0x02, 4, 998),
            (0x04, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ]);
        set_xattr(&top.join("bucket"), ACLS[0], &acl_v).unwrap();
        std::os::unix::fs::symlink("bucket/sub/object", top.join("link")).unwrap();
        // Already the container's: left as it is.
        let shifted_before = top.join("already");
        fs::write(&shifted_before, b"").unwrap();
        std::os::unix::fs::lchown(&shifted_before, Some(100_033), Some(100_033)).unwrap();

        let map = Some(IdMap::PVE);
        assert!(!owned_for(&top, map).unwrap());
        let n = conform(&top, map).unwrap();
        assert_eq!(n.entries, 7, "every entry but the one already shifted");
        assert_eq!(owner(&data), (100_998, 100_997));
        assert_eq!(fs::read(&data).unwrap(), b"kept");
        assert_eq!(
            owner(&top.join("link")),
            (100_000, 100_000),
            "the link itself"
        );
        assert_eq!(owner(&data), (100_998, 100_997), "not through the link");
        assert_eq!(
            fs::metadata(&suid).unwrap().mode() & 0o7777,
            0o4755,
            "setuid kept"
        );
        let c = get_xattr(&capped, CAPS)
            .unwrap()
            .expect("capabilities kept");
        assert_eq!(
            c,
            shift_caps(&caps_v2(), &|i| Some(i + 100_000)),
            "as v3, root id 100000"
        );
        let a = get_xattr(&top.join("bucket"), ACLS[0]).unwrap().unwrap();
        assert_eq!(
            a,
            shift_acl(&acl_v, &|i| (i < 65_536).then_some(i + 100_000))
        );
        assert_eq!(owner(&shifted_before), (100_033, 100_033));
        assert!(owned_for(&top, map).unwrap());
        assert_eq!(
            conform(&top, map).unwrap().entries,
            0,
            "a second run changes nothing"
        );

        // A run cut short (top not yet shifted, some entries done) is finished.
        std::os::unix::fs::lchown(&top, Some(0), Some(0)).unwrap();
        std::os::unix::fs::lchown(&data, Some(998), Some(100_997)).unwrap();
        assert_eq!(conform(&top, map).unwrap().entries, 2);
        assert_eq!(owner(&data), (100_998, 100_997));

        // And back, for a privileged container.
        assert_eq!(conform(&top, None).unwrap().entries, 8);
        assert_eq!(owner(&data), (998, 997));
        assert_eq!(fs::metadata(&suid).unwrap().mode() & 0o7777, 0o4755);
        assert_eq!(get_xattr(&capped, CAPS).unwrap().unwrap(), caps_v2());
        assert_eq!(
            get_xattr(&top.join("bucket"), ACLS[0]).unwrap().unwrap(),
            acl_v
        );
    }

    #[test]
    fn a_user_namespace_stores_the_shifted_ids() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root (as `imgbuild up`)"
        );
        let d = tempfile::tempdir().unwrap();
        // A private parent the shifted ids cannot enter: the command works from its cwd.
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let root = d.path().join("root");
        fs::create_dir(&root).unwrap();
        own(&root, Some(IdMap::PVE)).unwrap();
        let ns = UserNs::new(IdMap::PVE).unwrap();
        let out = ns
            .command("sh")
            .args(["-c", "id -u; mkdir -p etc/x && touch etc/x/f && chown 5:6 etc/x/f && cat /proc/self/uid_map"])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("0\n"), "{text}");
        assert!(text.contains("0     100000      65536"), "{text}");
        assert_eq!(owner(&root.join("etc/x")), (100_000, 100_000));
        assert_eq!(owner(&root.join("etc/x/f")), (100_005, 100_006));
        mkdirs(&root, Path::new("/var/lib/minio"), Some(IdMap::PVE)).unwrap();
        assert_eq!(owner(&root.join("var/lib/minio")), (100_000, 100_000));
        assert_eq!(owner(&root.join("var")), (100_000, 100_000));
    }
}
