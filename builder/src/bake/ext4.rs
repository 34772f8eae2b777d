//! The ext4 side of the VM bake: reading the superblock (pure), sizing a
//! payload in ext4 blocks and inodes (pure), and driving e2fsprogs
//! (`resize2fs`, `debugfs`, `e2fsck`) on a filesystem in a plain file (the
//! VM bake gives the root partition a file of its own) or at a byte offset
//! inside a disk image (`image?offset=N`, the unix I/O manager's option), so
//! nothing is mounted and no privileges are needed.
//!
//! debugfs exits 0 on most failures, so every run's stderr is checked: any
//! line other than its version banner is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

use crate::payload::{NodeKind, Tree};

pub const MAGIC: u16 = 0xEF53;
const SB_OFFSET: u64 = 1024;
const SB_SIZE: usize = 1024;

const COMPAT_RESIZE_INODE: u32 = 0x10;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// CRC-32C (Castagnoli), the checksum of ext4's metadata_csum feature.
/// Returns the raw register (ext4 stores it without the final inversion).
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    let mut crc = seed;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (!(crc & 1)).wrapping_add(1));
        }
    }
    crc
}

/// The superblock fields the bake needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub free_inodes: u32,
    pub first_data_block: u32,
    pub block_size: u64,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub mtime: u32,
    pub wtime: u32,
    pub state: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub backup_bgs: [u32; 2],
    pub label: String,
}

impl Superblock {
    /// Parses the 1024-byte superblock; fails unless it carries the ext2/3/4 magic.
    pub fn parse(sb: &[u8]) -> Result<Superblock> {
        ensure!(sb.len() >= SB_SIZE, "superblock too short");
        let magic = le16(sb, 0x38);
        ensure!(
            magic == MAGIC,
            "not an ext2/3/4 filesystem (superblock magic {magic:#06x})"
        );
        let incompat = le32(sb, 0x60);
        let hi = |at: usize| {
            if incompat & INCOMPAT_64BIT != 0 {
                u64::from(le32(sb, at)) << 32
            } else {
                0
            }
        };
        let log = le32(sb, 0x18);
        ensure!(log <= 6, "ext4 block size exponent {log} is invalid");
        let label_raw = &sb[0x78..0x88];
        let label_end = label_raw.iter().position(|&b| b == 0).unwrap_or(16);
        let s = Superblock {
            inodes_count: le32(sb, 0x00),
            blocks_count: u64::from(le32(sb, 0x04)) | hi(0x150),
            free_blocks: u64::from(le32(sb, 0x0C)) | hi(0x158),
            free_inodes: le32(sb, 0x10),
            first_data_block: le32(sb, 0x14),
            block_size: 1024 << log,
            blocks_per_group: le32(sb, 0x20),
            inodes_per_group: le32(sb, 0x28),
            inode_size: if le32(sb, 0x4C) == 0 {
                128
            } else {
                le16(sb, 0x58)
            },
            mtime: le32(sb, 0x2C),
            wtime: le32(sb, 0x30),
            state: le16(sb, 0x3A),
            feature_compat: le32(sb, 0x5C),
            feature_incompat: incompat,
            feature_ro_compat: le32(sb, 0x64),
            backup_bgs: [le32(sb, 0x24C), le32(sb, 0x250)],
            label: String::from_utf8_lossy(&label_raw[..label_end]).into_owned(),
        };
        ensure!(
            s.blocks_per_group > 0 && s.inodes_per_group > 0,
            "superblock has zero blocks or inodes per group"
        );
        Ok(s)
    }

    /// Reads the primary superblock of the filesystem at byte `offset` of `file`.
    pub fn read(file: &File, offset: u64) -> Result<Superblock> {
        let mut buf = vec![0u8; SB_SIZE];
        file.read_exact_at(&mut buf, offset + SB_OFFSET)
            .context("reading the ext4 superblock")?;
        Superblock::parse(&buf)
    }

    pub fn has_resize_inode(&self) -> bool {
        self.feature_compat & COMPAT_RESIZE_INODE != 0
    }

    /// Fails unless the filesystem is cleanly unmounted and error-free, so an
    /// offline resize is sound without a preceding `e2fsck -f`.
    pub fn ensure_clean(&self) -> Result<()> {
        ensure!(
            self.feature_incompat & INCOMPAT_RECOVER == 0,
            "the ext4 journal needs recovery (the base image was not cleanly unmounted)"
        );
        ensure!(
            self.state & 1 != 0,
            "the ext4 filesystem is not marked clean"
        );
        ensure!(
            self.state & 2 == 0,
            "the ext4 filesystem is marked as having errors"
        );
        Ok(())
    }

    pub fn groups(&self, blocks: u64) -> u64 {
        (blocks - u64::from(self.first_data_block)).div_ceil(u64::from(self.blocks_per_group))
    }

    fn group_has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.feature_compat & COMPAT_SPARSE_SUPER2 != 0 {
            return self.backup_bgs.iter().any(|&b| u64::from(b) == g);
        }
        if self.feature_ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        if g == 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut n = g;
            while n % base == 0 {
                n /= base;
            }
            n == 1
        })
    }

    /// Blocks of per-group metadata (bitmaps, inode table), the cost of
    /// each group a resize adds, not counting superblock backups.
    pub fn group_overhead_blocks(&self) -> u64 {
        2 + (u64::from(self.inodes_per_group) * u64::from(self.inode_size))
            .div_ceil(self.block_size)
    }
}

/// Sets the superblock's last-write time in every copy (primary and backups)
/// and refreshes each copy's checksum. libext2fs stamps `s_wtime` with the
/// wall clock on close (e2fsprogs 1.47.0 ignores E2FSPROGS_FAKE_TIME there), so
/// this is what makes two bakes byte-identical.
pub fn set_write_time(file: &File, offset: u64, wtime: u32) -> Result<()> {
    let primary = Superblock::read(file, offset)?;
    let bs = primary.block_size;
    for g in 0..primary.groups(primary.blocks_count) {
        if !primary.group_has_super(g) {
            continue;
        }
        let at = if g == 0 {
            offset + SB_OFFSET
        } else {
            offset
                + (g * u64::from(primary.blocks_per_group) + u64::from(primary.first_data_block))
                    * bs
        };
        let mut sb = vec![0u8; SB_SIZE];
        file.read_exact_at(&mut sb, at)
            .with_context(|| format!("reading superblock copy in group {g}"))?;
        if le16(&sb, 0x38) != MAGIC {
            // Groups with meta_bg or an unusual layout may hold no copy.
            continue;
        }
        sb[0x30..0x34].copy_from_slice(&wtime.to_le_bytes());
        sb[0x274] = 0; // s_wtime_hi
        if le32(&sb, 0x64) & RO_COMPAT_METADATA_CSUM != 0 {
            let crc = crc32c_raw(!0, &sb[..0x3FC]);
            sb[0x3FC..0x400].copy_from_slice(&crc.to_le_bytes());
        }
        file.write_all_at(&sb, at)
            .with_context(|| format!("writing superblock copy in group {g}"))?;
    }
    Ok(())
}

/// What a payload needs from a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub blocks: u64,
    pub inodes: u64,
}

fn dirent_len(name: &str) -> u64 {
    (8 + name.len() as u64).div_ceil(4) * 4
}

/// A conservative estimate of the blocks and inodes `tree` takes in an ext4
/// filesystem with `block_size` blocks: file data, extent blocks for files
/// that could exceed the four extents an inode holds, symlink targets too
/// long for the inode, directory blocks of new directories, and one spare
/// block for each existing directory that gains entries.
pub fn estimate(tree: &Tree, block_size: u64) -> Needs {
    let mut needs = Needs::default();
    // Directory entries per parent directory.
    let mut dir_bytes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut new_dirs: BTreeSet<&str> = BTreeSet::new();
    for (path, node) in tree.iter() {
        needs.inodes += 1;
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        *dir_bytes
            .entry(if parent.is_empty() { "/" } else { parent })
            .or_default() += dirent_len(name);
        match &node.kind {
            NodeKind::Dir => {
                new_dirs.insert(path);
                *dir_bytes.entry(path).or_default() += 24; // `.` and `..`
            }
            NodeKind::File(src) => {
                let data = src.len().div_ceil(block_size);
                // An extent maps at most 32768 blocks; fragmentation is bounded
                // by assuming one extent block per 340 data blocks beyond the
                // inode's four in-line extents.
                let extent = if data > 4 { 1 + data / 340 } else { 0 };
                needs.blocks += data + extent;
            }
            NodeKind::Symlink(target) => {
                if target.len() >= 60 {
                    needs.blocks += 1;
                }
            }
        }
    }
    // 12 bytes of each directory block go to the checksum tail.
    let usable = block_size - 12;
    for (dir, bytes) in dir_bytes {
        needs.blocks += if new_dirs.contains(dir) {
            bytes.div_ceil(usable).max(1)
        } else {
            // An existing directory may need new blocks for the new entries.
            1 + bytes / usable
        };
    }
    needs
}

/// Runs an e2fsprogs tool, failing with its output when it exits non-zero.
fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what} (is e2fsprogs installed?)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// `image?offset=N`, the unix I/O manager's way to address a filesystem inside a disk image.
pub fn device(image: &Path, offset: u64) -> Result<String> {
    let s = image
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", image.display()))?;
    // libext2fs splits a device name at its first '?' in any case.
    ensure!(!s.contains('?'), "path {s} must not contain '?'");
    Ok(if offset == 0 {
        s.to_string()
    } else {
        format!("{s}?offset={offset}")
    })
}

fn tool(name: &str, fake_time: Option<u32>) -> Command {
    let mut c = Command::new(name);
    // Honoured by newer e2fsprogs for every timestamp it writes; 1.47.0 only
    // uses it in e2fsck, hence `set_write_time`.
    if let Some(t) = fake_time {
        c.env("E2FSPROGS_FAKE_TIME", t.to_string());
    }
    c.env("LC_ALL", "C");
    c
}

/// Grows the filesystem that fills the file `image` to `blocks` blocks.
///
/// The filesystem must start at offset 0 of its file: resize2fs (1.47)
/// truncates a regular-file device to `blocks * block_size` bytes, ignoring an
/// `?offset=`, which would cut off the end of a whole-disk image.
pub fn resize(image: &Path, blocks: u64, fake_time: u32) -> Result<()> {
    // -f: the caller checked the superblock is clean (see `ensure_clean`);
    // without it resize2fs insists on a fresh `e2fsck -f` whenever the last
    // check predates the last mount, as in every image built by mounting.
    run(
        tool("resize2fs", Some(fake_time))
            .arg("-f")
            .arg(device(image, 0)?)
            .arg(blocks.to_string()),
        "resize2fs",
    )?;
    Ok(())
}

/// Checks the filesystem read-only (`e2fsck -fn`); fails on any finding.
pub fn check(image: &Path, offset: u64) -> Result<()> {
    run(
        tool("e2fsck", None).arg("-fn").arg(device(image, offset)?),
        "e2fsck -fn",
    )?;
    Ok(())
}

/// Quotes one debugfs command argument. debugfs splits on whitespace and
/// honours double quotes; names with quotes or control characters are refused.
pub fn quote(arg: &str) -> Result<String> {
    ensure!(
        !arg.chars().any(|c| c == '"' || c.is_control()),
        "path {arg:?} contains a double quote or control character, which debugfs cannot take"
    );
    Ok(format!("\"{arg}\""))
}

/// Runs one debugfs command file; `stdout` is returned. Fails when debugfs
/// reports anything on stderr besides its version banner.
pub fn debugfs(
    image: &Path,
    offset: u64,
    script: &Path,
    write: bool,
    fake_time: u32,
) -> Result<String> {
    let mut cmd = tool("debugfs", Some(fake_time));
    if write {
        cmd.arg("-w");
    }
    cmd.arg("-f").arg(script).arg(device(image, offset)?);
    let out = run(&mut cmd, "debugfs")?;
    let errors: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap_or("(non-UTF-8 output)")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !errors.is_empty() {
        let shown: Vec<&str> = errors.iter().take(20).copied().collect();
        bail!(
            "debugfs reported {} error(s) writing the payload:\n{}",
            errors.len(),
            shown.join("\n")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kind of an entry that already exists in the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Dir,
    Other,
}

/// Lists the given directories with one read-only debugfs run and returns
/// what exists in them, as full paths. Directories that do not exist are
/// simply absent from the result.
pub fn list_dirs(
    image: &Path,
    offset: u64,
    dirs: &BTreeSet<String>,
    work: &Path,
) -> Result<BTreeMap<String, Existing>> {
    let script = work.join("list.debugfs");
    let mut text = String::new();
    for d in dirs {
        text.push_str(&format!("ls -p {}\n", quote(d)?));
    }
    std::fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
    let mut cmd = tool("debugfs", None);
    cmd.arg("-f").arg(&script).arg(device(image, offset)?);
    let out = run(&mut cmd, "debugfs (listing)")?;
    Ok(parse_listing(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses the stdout of a `debugfs -f` run of `ls -p DIR` commands.
pub fn parse_listing(stdout: &str) -> BTreeMap<String, Existing> {
    let mut found = BTreeMap::new();
    let mut dir: Option<String> = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("debugfs: ls -p ") {
            dir = Some(
                rest.trim()
                    .trim_matches('"')
                    .trim_end_matches('/')
                    .to_string(),
            );
            continue;
        }
        let Some(d) = &dir else { continue };
        // `/ino/mode/uid/gid/name/size/`
        let fields: Vec<&str> = line.split('/').collect();
        if fields.len() < 7 || !fields[0].is_empty() {
            continue;
        }
        let (mode, name) = (fields[2], fields[5]);
        if name == "." || name == ".." || name.is_empty() {
            continue;
        }
        let Ok(mode) = u32::from_str_radix(mode, 8) else {
            continue;
        };
        let kind = if mode & 0o170000 == 0o040000 {
            Existing::Dir
        } else {
            Existing::Other
        };
        found.insert(format!("{d}/{name}"), kind);
    }
    found
}

/// Where the bytes of generated files are staged for debugfs to read.
pub struct Staging {
    pub dir: PathBuf,
    next: usize,
}

impl Staging {
    pub fn new(dir: PathBuf) -> Self {
        Staging { dir, next: 0 }
    }

    fn stage(&mut self, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.dir.join(format!("f{}", self.next));
        self.next += 1;
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }
}

/// Renders the debugfs command file that writes `tree` into a filesystem
/// holding `existing` entries: missing directories are made, existing files
/// and symlinks replaced, and every entry gets its mode, owner and times.
pub fn write_script(
    tree: &Tree,
    existing: &BTreeMap<String, Existing>,
    staging: &mut Staging,
) -> Result<String> {
    let mut s = String::new();
    for (path, node) in tree.iter() {
        let p = quote(path)?;
        let here = existing.get(path).copied();
        if here == Some(Existing::Other) && !matches!(node.kind, NodeKind::Dir) {
            // debugfs will not write over an existing name.
            s.push_str(&format!("rm {p}\n"));
        }
        let type_bits = match &node.kind {
            NodeKind::Dir => {
                match here {
                    Some(Existing::Dir) => {}
                    Some(Existing::Other) => {
                        bail!("payload directory {path} exists in the base as a non-directory")
                    }
                    None => s.push_str(&format!("mkdir {p}\n")),
                }
                0o040000
            }
            NodeKind::File(src) => {
                ensure_replaceable(path, here)?;
                let host = match src {
                    // debugfs reads host files itself; the VM bake checks blobs' digests
                    // alongside (vm::bake).
                    crate::payload::FileSource::Host { path, .. }
                    | crate::payload::FileSource::Blob { path, .. } => path.clone(),
                    crate::payload::FileSource::Bytes(b) => staging.stage(b)?,
                };
                let host = host
                    .to_str()
                    .with_context(|| format!("host path {} is not UTF-8", host.display()))?
                    .to_string();
                s.push_str(&format!("write {} {p}\n", quote(&host)?));
                0o100000
            }
            NodeKind::Symlink(target) => {
                ensure_replaceable(path, here)?;
                s.push_str(&format!("symlink {p} {}\n", quote(target)?));
                0o120000
            }
        };
        s.push_str(&format!(
            "sif {p} mode 0{:o}\n",
            type_bits | (node.mode & 0o7777)
        ));
        s.push_str(&format!(
            "sif {p} uid {}\nsif {p} gid {}\n",
            node.uid, node.gid
        ));
        for field in ["atime", "mtime", "ctime", "crtime"] {
            s.push_str(&format!("sif {p} {field} @{}\n", node.mtime));
        }
    }
    Ok(s)
}

fn ensure_replaceable(path: &str, here: Option<Existing>) -> Result<()> {
    if here == Some(Existing::Dir) {
        bail!("payload entry {path} would replace a directory of the base image");
    }
    Ok(())
}

/// Commands that reset the times resize2fs stamps on the resize inode (7).
pub fn resize_inode_times(time: u32) -> String {
    ["atime", "mtime", "ctime", "crtime"]
        .iter()
        .map(|f| format!("sif <7> {f} @{time}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Node;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn parses_listing() {
        let out = "debugfs: ls -p \"/opt\"\n/14/040755/0/0/.//\n/2/040755/0/0/..//\n\
                   /18/040755/0/0/x//\n/19/100644/0/0/f/12/\n\ndebugfs: ls -p \"/nope\"\n";
        let m = parse_listing(out);
        assert_eq!(m.len(), 2);
        assert_eq!(m["/opt/x"], Existing::Dir);
        assert_eq!(m["/opt/f"], Existing::Other);
    }

    #[test]
    fn script_replaces_files_and_keeps_dirs() {
        let mut t = Tree::new();
        t.insert("/opt", Node::dir(0o755)).unwrap();
        t.insert("/opt/a", Node::bytes(&b"x"[..], 0o600)).unwrap();
        t.insert("/opt/l", Node::symlink("a")).unwrap();
        let existing = BTreeMap::from([
            ("/opt".to_string(), Existing::Dir),
            ("/opt/a".to_string(), Existing::Other),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let mut st = Staging::new(dir.path().to_path_buf());
        let s = write_script(&t, &existing, &mut st).unwrap();
        assert!(!s.contains("mkdir"), "{s}");
        let rm = s.find("rm \"/opt/a\"").unwrap();
        let w = s.find("write ").unwrap();
        assert!(rm < w, "{s}");
        assert!(s.contains("sif \"/opt/a\" mode 0100600\n"), "{s}");
        assert!(s.contains("symlink \"/opt/l\" \"a\"\n"), "{s}");
        assert!(s.contains("sif \"/opt/l\" mode 0120777\n"), "{s}");

        let existing = BTreeMap::from([("/opt/l".to_string(), Existing::Dir)]);
        assert!(write_script(&t, &existing, &mut st).is_err());
    }

    #[test]
    fn estimate_counts_data_dirs_and_inodes() {
        let mut t = Tree::new();
        t.insert("/opt/x", Node::dir(0o755)).unwrap();
        t.insert("/opt/x/big", Node::bytes(vec![0u8; 4096 * 100], 0o644))
            .unwrap();
        t.insert("/opt/x/small", Node::bytes(&b"1"[..], 0o644))
            .unwrap();
        let n = estimate(&t, 4096);
        assert_eq!(n.inodes, 3);
        // 100 + 1 extent block + 1 + dir block for /opt/x + spare for /opt.
        assert_eq!(n.blocks, 100 + 1 + 1 + 1 + 1);
    }
}
