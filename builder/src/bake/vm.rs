//! The VM bake: a qcow2 cloud image plus a payload tree in, a qcow2 out, as
//! an ordinary user (no root, loop devices, mounts, NBD, KVM or namespaces).
//!
//! Stages: read the GPT from the base's first MiB and find the root partition
//! by its label (partition name, else the ext4 volume label); `qemu-img
//! convert` the base into two sparse raw files, the sectors before the root
//! partition (`head`) and the root partition itself, so the filesystem starts
//! at offset 0 of its own file (resize2fs truncates a regular file to the
//! filesystem size, ignoring `?offset=`); size the payload in ext4 blocks;
//! grow the partition file and, with `resize2fs`, the filesystem; rewrite the
//! primary GPT in `head` and build the backup GPT as a `tail` file; write the
//! payload with one `debugfs -w` run; pin the timestamps libext2fs stamps from
//! the clock; `e2fsck -fn`; `qemu-img convert` the concatenation head + root +
//! tail to qcow2 and rename it into place. The work directory lives beside the
//! output and is removed on every exit, so a failure leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::ext4::{self, Needs, Superblock};
use super::gpt;
use crate::payload::Tree;

const MIB: u64 = 1 << 20;

/// How to bake.
#[derive(Debug, Clone)]
pub struct VmBakeOptions {
    /// Free space to leave in the root filesystem beyond the payload's estimate.
    pub headroom_bytes: u64,
    /// The root partition's GPT name or ext4 volume label.
    pub root_label: String,
    /// zstd-compressed qcow2 clusters (needs QEMU 5.1+ to read; Proxmox VE 8 has it).
    pub compress: bool,
    /// Refuse to produce a disk larger than this (virtual size).
    pub max_disk_bytes: Option<u64>,
    /// Unix time stamped on the filesystem's last-write time and the inodes
    /// e2fsprogs touches for its own purposes.
    pub timestamp: u64,
    /// The cached base's digest: checked, with every payload blob's, before the
    /// output is published (see [`bake`]).
    pub base_digest: Option<crate::artifact::Digest>,
}

impl Default for VmBakeOptions {
    fn default() -> Self {
        VmBakeOptions {
            headroom_bytes: 256 * MIB,
            root_label: "cloudimg-rootfs".to_string(),
            compress: false,
            max_disk_bytes: None,
            timestamp: crate::payload::default_mtime(),
            base_digest: None,
        }
    }
}

/// Errors a caller may want to tell apart from plain failures.
#[derive(Debug, thiserror::Error)]
pub enum VmBakeError {
    #[error("the payload needs a {needed}-byte disk, more than the maximum of {max} bytes")]
    TooLarge { needed: u64, max: u64 },
}

/// What a bake did and how long each stage took.
#[derive(Debug, Clone)]
pub struct VmBakeStats {
    pub base_virtual_size: u64,
    pub disk_bytes: u64,
    pub root_partition: u32,
    pub root_offset: u64,
    pub fs_blocks_before: u64,
    pub fs_blocks_after: u64,
    pub block_size: u64,
    pub payload: Needs,
    pub payload_bytes: u64,
    pub output_bytes: u64,
    /// `(stage, duration)` in execution order.
    pub stages: Vec<(&'static str, Duration)>,
}

impl VmBakeStats {
    pub fn total(&self) -> Duration {
        self.stages.iter().map(|(_, d)| *d).sum()
    }
}

struct Timer {
    stages: Vec<(&'static str, Duration)>,
    at: Instant,
}

impl Timer {
    fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        let d = now - self.at;
        tracing::info!(stage, secs = d.as_secs_f64(), "vm bake stage done");
        self.stages.push((stage, d));
        self.at = now;
    }
}

fn qemu_img(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running qemu-img to {what} (is qemu-utils installed?)"))?;
    if !out.status.success() {
        bail!(
            "qemu-img failed to {what} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The format and virtual size `qemu-img info` reports.
pub fn image_info(path: &Path) -> Result<(String, u64)> {
    let json = qemu_img(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(path),
        &format!("inspect {}", path.display()),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&json)
        .with_context(|| format!("parsing qemu-img info of {}", path.display()))?;
    let format = v["format"].as_str().unwrap_or_default().to_string();
    let size = v["virtual-size"]
        .as_u64()
        .context("qemu-img info gave no virtual-size")?;
    Ok((format, size))
}

/// A `json:` pseudo-filename that reads `len` bytes at `offset` of a qcow2 file.
fn qcow2_range(base: &Path, offset: u64, len: u64) -> Result<String> {
    let file = base
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", base.display()))?;
    let spec = serde_json::json!({
        "driver": "raw",
        "offset": offset,
        "size": len,
        "file": { "driver": "qcow2", "file": { "driver": "file", "filename": file } },
    });
    Ok(format!("json:{spec}"))
}

/// Copies `len` bytes at `offset` of the qcow2 `base` into a sparse raw file.
fn extract(base: &Path, offset: u64, len: u64, dest: &Path) -> Result<()> {
    qemu_img(
        Command::new("qemu-img")
            .args(["convert", "-q", "-O", "raw"])
            .arg(qcow2_range(base, offset, len)?)
            .arg(dest),
        &format!(
            "copy bytes {offset}..{} of {}",
            offset + len,
            base.display()
        ),
    )?;
    Ok(())
}

/// Finds the root partition: the one whose GPT name is `label`, else the one
/// whose ext4 volume label is `label`. `superblock` reads the filesystem
/// superblock at a byte offset of the disk.
fn find_root(
    table: &gpt::Gpt,
    label: &str,
    mut superblock: impl FnMut(u64) -> Result<Superblock>,
) -> Result<(gpt::Partition, Superblock)> {
    let ss = table.sector_size;
    let by_name: Vec<_> = table
        .partitions
        .iter()
        .filter(|p| p.name == label)
        .collect();
    let part = match by_name.as_slice() {
        [p] => (*p).clone(),
        [] => {
            let by_fs: Vec<_> = table
                .partitions
                .iter()
                .filter(|p| superblock(p.first_lba * ss).is_ok_and(|sb| sb.label == label))
                .collect();
            match by_fs.as_slice() {
                [p] => (*p).clone(),
                [] => bail!(
                    "no partition named or labelled {label:?} (partitions: {})",
                    table
                        .partitions
                        .iter()
                        .map(|p| format!("{} {:?}", p.number, p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => bail!("several filesystems are labelled {label:?}"),
            }
        }
        _ => bail!("several partitions are named {label:?}"),
    };
    let sb = superblock(part.first_lba * ss).with_context(|| {
        format!(
            "partition {} ({label}) does not hold an ext4 filesystem",
            part.number
        )
    })?;
    Ok((part, sb))
}

/// The size plan: how many blocks the filesystem grows to and the disk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub fs_blocks: u64,
    pub disk_bytes: u64,
}

/// Sizes the grown disk so the filesystem gains `needs` plus `headroom_bytes`
/// of free blocks and enough inodes, counting the metadata of added groups.
pub fn plan(
    sb: &Superblock,
    part_first_lba: u64,
    table: &gpt::Gpt,
    needs: Needs,
    headroom_bytes: u64,
) -> Plan {
    let bs = sb.block_size;
    let bpg = u64::from(sb.blocks_per_group);
    let want = needs.blocks + headroom_bytes.div_ceil(bs);
    // Every added group costs bitmaps and an inode table, and maybe a
    // superblock backup plus group descriptors; count them all for every group.
    let per_group = sb.group_overhead_blocks() + 2 + 1024 / (bs / 1024).max(1);
    let mut grow = want + (want.div_ceil(bpg) + 1) * per_group;
    loop {
        let new_blocks = sb.blocks_count + grow;
        let added_groups = sb.groups(new_blocks) - sb.groups(sb.blocks_count);
        let inodes = u64::from(sb.free_inodes) + added_groups * u64::from(sb.inodes_per_group);
        if inodes >= needs.inodes {
            break;
        }
        grow += bpg;
    }
    let ss = table.sector_size;
    let fs_end = part_first_lba * ss + (sb.blocks_count + grow) * bs;
    let tail = (table.entry_sectors() + 1) * ss;
    let disk_bytes = (fs_end + tail).div_ceil(MIB) * MIB;
    // The partition then reaches the new last usable sector; fill it.
    let last_usable_end = disk_bytes - tail;
    let fs_blocks = (last_usable_end - part_first_lba * ss) / bs;
    Plan {
        fs_blocks,
        disk_bytes,
    }
}

/// Bakes `payload` into a copy of `base_qcow2`, writing `out` atomically.
///
/// qemu-img and debugfs read the base and the payload blobs
/// ([`crate::payload::FileSource::Blob`]) themselves, so their digests cannot
/// be checked in our own read path: a thread hashes them alongside the bake
/// (overlapping the qemu-img and e2fsprogs stages, on the page cache they warm)
/// and the output is published only if all match. When the bake fails and a
/// blob does not match, the mismatch is the error reported.
pub fn bake(
    base_qcow2: &Path,
    payload: &Tree,
    out: &Path,
    opts: &VmBakeOptions,
) -> Result<VmBakeStats> {
    let mut blob_check = Some(spawn_blob_check(
        base_qcow2,
        opts.base_digest.as_ref(),
        payload,
    ));
    let result = bake_checked(base_qcow2, payload, out, opts, &mut blob_check);
    if let (Err(_), Some(check)) = (&result, blob_check.take()) {
        if let Ok(Err(corrupt)) = check.join() {
            return Err(corrupt);
        }
    }
    result
}

fn bake_checked(
    base_qcow2: &Path,
    payload: &Tree,
    out: &Path,
    opts: &VmBakeOptions,
    blob_check: &mut Option<std::thread::JoinHandle<Result<()>>>,
) -> Result<VmBakeStats> {
    let mut t = Timer {
        stages: Vec::new(),
        at: Instant::now(),
    };
    let (format, base_virtual_size) = image_info(base_qcow2)?;
    ensure!(
        format == "qcow2",
        "base image {} is {format:?}, not qcow2",
        base_qcow2.display()
    );
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".imgbuild-vm-")
        .tempdir_in(&out_dir)
        .with_context(|| format!("creating a work directory in {}", out_dir.display()))?;
    let w = |name: &str| work.path().join(name);

    // The partition table, from the first MiB.
    let probe = w("probe.raw");
    extract(base_qcow2, 0, base_virtual_size.min(MIB), &probe)?;
    let table = gpt::read(&File::open(&probe)?)
        .with_context(|| format!("reading the GPT of {}", base_qcow2.display()))?;
    let (part, sb) = find_root(&table, &opts.root_label, |at| {
        let f = w(&format!("sb-{at}.raw"));
        extract(
            base_qcow2,
            at,
            4096.min(base_virtual_size.saturating_sub(at)),
            &f,
        )?;
        Superblock::read(&File::open(&f)?, 0)
    })
    .with_context(|| format!("finding the root partition of {}", base_qcow2.display()))?;
    let ss = table.sector_size;
    let offset = part.first_lba * ss;
    let part_bytes = (part.last_lba + 1 - part.first_lba) * ss;
    sb.ensure_clean()
        .with_context(|| format!("checking the root filesystem of {}", base_qcow2.display()))?;
    ensure!(
        sb.blocks_count * sb.block_size <= part_bytes,
        "the root filesystem ({} bytes) is larger than its partition ({part_bytes} bytes)",
        sb.blocks_count * sb.block_size
    );
    ensure!(
        table.header.entries_lba + table.entry_sectors() <= part.first_lba,
        "the GPT entries overlap the root partition"
    );
    let needs = ext4::estimate(payload, sb.block_size);
    let plan = plan(&sb, part.first_lba, &table, needs, opts.headroom_bytes);
    if let Some(max) = opts.max_disk_bytes {
        if plan.disk_bytes > max {
            return Err(VmBakeError::TooLarge {
                needed: plan.disk_bytes,
                max,
            }
            .into());
        }
    }
    let grown = table.grown(plan.disk_bytes / ss, part.number)?;
    t.lap("inspect");

    let (head, root, tail) = (w("head.raw"), w("root.raw"), w("tail.raw"));
    extract(base_qcow2, 0, offset, &head)?;
    extract(base_qcow2, offset, part_bytes, &root)?;
    t.lap("convert_in");

    let new_part_bytes = (grown.partition(part.number).unwrap().last_lba + 1 - part.first_lba) * ss;
    let f = OpenOptions::new().write(true).open(&root)?;
    f.set_len(new_part_bytes)
        .with_context(|| format!("growing {}", root.display()))?;
    drop(f);
    let f = OpenOptions::new().read(true).write(true).open(&head)?;
    gpt::write_primary(&f, &grown)?;
    drop(f);
    std::fs::write(&tail, gpt::backup_tail(&grown))
        .with_context(|| format!("writing {}", tail.display()))?;
    t.lap("grow");

    let fs_time = u32::try_from(
        opts.timestamp
            .max(u64::from(sb.wtime))
            .max(u64::from(sb.mtime)),
    )
    .context("timestamp beyond 2106")?;
    ext4::resize(&root, plan.fs_blocks, fs_time)?;
    // resize2fs truncates the file to the filesystem's size; the partition
    // may end a few sectors past the last whole block.
    let f = OpenOptions::new().write(true).open(&root)?;
    f.set_len(new_part_bytes)
        .with_context(|| format!("resizing {}", root.display()))?;
    drop(f);
    t.lap("resize2fs");

    let staging = w("staging");
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let existing = ext4::list_dirs(&root, 0, &payload_parent_dirs(payload), work.path())?;
    let mut st = ext4::Staging::new(staging);
    let mut script = ext4::write_script(payload, &existing, &mut st)?;
    if sb.has_resize_inode() {
        script.push_str(&ext4::resize_inode_times(fs_time));
    }
    let script_path = w("write.debugfs");
    std::fs::write(&script_path, script)
        .with_context(|| format!("writing {}", script_path.display()))?;
    ext4::debugfs(&root, 0, &script_path, true, fs_time)
        .context("writing the payload into the root filesystem")?;
    let f = OpenOptions::new().read(true).write(true).open(&root)?;
    ext4::set_write_time(&f, 0, fs_time)?;
    drop(f);
    t.lap("debugfs");

    ext4::check(&root, 0).context("the baked root filesystem does not check clean")?;
    t.lap("e2fsck");

    let atomic = crate::fsutil::AtomicFile::create(out, 0o644)?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-q", "-f", "raw", "-O", "qcow2"]);
    if opts.compress {
        cmd.args(["-c", "-o", "compression_type=zstd"]);
    }
    cmd.arg(&head).arg(&root).arg(&tail).arg(atomic.path());
    qemu_img(
        &mut cmd,
        &format!("convert the baked disk to {}", out.display()),
    )?;
    t.lap("convert_out");
    if let Some(check) = blob_check.take() {
        check
            .join()
            .map_err(|_| anyhow::anyhow!("the blob check thread panicked"))??;
    }
    let output_bytes = atomic.commit()?;
    t.lap("publish"); // waits for the blob check, then fsync and rename

    Ok(VmBakeStats {
        base_virtual_size,
        disk_bytes: plan.disk_bytes,
        root_partition: part.number,
        root_offset: offset,
        fs_blocks_before: sb.blocks_count,
        fs_blocks_after: plan.fs_blocks,
        block_size: sb.block_size,
        payload: needs,
        payload_bytes: payload.content_bytes(),
        output_bytes,
        stages: t.stages,
    })
}

/// Hashes the cached base (when its digest is known) and every payload blob on a
/// thread; its result is the first mismatch (see [`crate::fetch::cache::CorruptBlob`]).
fn spawn_blob_check(
    base: &Path,
    base_digest: Option<&crate::artifact::Digest>,
    payload: &Tree,
) -> std::thread::JoinHandle<Result<()>> {
    let mut blobs: Vec<(PathBuf, crate::artifact::Digest)> = Vec::new();
    if let Some(d) = base_digest {
        blobs.push((base.to_path_buf(), d.clone()));
    }
    for (_, node) in payload.iter() {
        if let crate::payload::NodeKind::File(crate::payload::FileSource::Blob {
            path,
            digest,
            ..
        }) = &node.kind
        {
            if !blobs.iter().any(|(p, _)| p == path) {
                blobs.push((path.clone(), digest.clone()));
            }
        }
    }
    std::thread::spawn(move || {
        for (path, digest) in blobs {
            let (mut r, check) = crate::fetch::cache::open_verified(&path, &digest)?;
            let copied = std::io::copy(&mut r, &mut std::io::sink());
            check.finish()?;
            copied.with_context(|| format!("reading cached {}", path.display()))?;
        }
        Ok(())
    })
}

/// Every directory whose contents the payload touches: the parents of all
/// entries plus the payload's own directories.
fn payload_parent_dirs(payload: &Tree) -> std::collections::BTreeSet<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for (path, node) in payload.iter() {
        let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        dirs.insert(if parent.is_empty() {
            "/".to_string()
        } else {
            parent.to_string()
        });
        if matches!(node.kind, crate::payload::NodeKind::Dir) {
            dirs.insert(path.to_string());
        }
    }
    dirs
}
