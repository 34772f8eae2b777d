//! The LXC template bake: a pure stream transform from a base template
//! (.tar.gz/.tar.xz/.tar.zst) plus a payload [`Tree`] to a new `.tar.zst`.
//!
//! Base entries are copied as their raw header blocks and data, so ownership
//! (numbers and names), modes, mtimes, PAX xattrs, hardlinks, symlinks, device
//! nodes and fifos come out exactly as they went in; nothing touches the host
//! filesystem's ownership, so no root is needed. While streaming, each base
//! path is looked up in the payload: a payload file replaces a base file (the
//! base entry is dropped, the payload one written after the base), a directory
//! both have keeps the base entry. Then the payload is written in sorted order.
//!
//! Output layout (all zstd frames, which any zstd decoder concatenates):
//! 1. one frame with every entry;
//! 2. one frame with the end-of-archive blocks;
//! 3. a skippable frame holding an [`Index`], which lets
//!    [`personalize`](super::personalize) copy frame 1 verbatim and write only a
//!    new frame 2 carrying the seed, instead of recompressing the template.
//!
//! Same inputs give byte-identical output: fixed zstd level and parameters,
//! payload in sorted order, no clock reads. Compression runs on zstd's worker
//! threads: zstd's multithreaded output depends only on the parameters (job
//! size), not on how many workers there are, so a 2-core CI runner and a
//! 32-core workstation write the same bytes (a unit test checks 1 vs 3).

mod tarfmt;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::fsutil::AtomicFile;
use crate::payload::archive::open_decompressed;
use crate::payload::{Node, NodeKind, Tree};
use tarfmt::{encode_header, NewEntry, RawReader, RECORD};

/// zstd level of baked templates: level 3 (zstd's default) keeps a bake
/// I/O-bound; higher levels cost several times the CPU for a few percent.
pub const ZSTD_LEVEL: i32 = 3;

/// Guest path of the per-guest seed that [`personalize`](super::personalize) adds.
pub const SEED_PATH: &str = "/etc/imgbuild/seed.yaml";
pub(crate) const SEED_DIR: &str = "/etc/imgbuild";

/// What a bake did, for logs and the manifest.
#[derive(Debug, Clone, Default)]
pub struct BakeStats {
    /// Entries read from the base (extension headers not counted).
    pub base_entries: u64,
    /// Base entries dropped because the payload replaces them.
    pub replaced: u64,
    /// Payload entries written (directories the base already has are not).
    pub payload_entries: u64,
    /// Decompressed bytes of the base tar.
    pub base_tar_bytes: u64,
    /// Bytes of payload file content written.
    pub payload_bytes: u64,
    /// Decompressed bytes of the output tar.
    pub tar_bytes: u64,
    /// Size of the output file.
    pub out_bytes: u64,
    pub elapsed: Duration,
}

impl BakeStats {
    /// Decompressed output megabytes (10^6) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.tar_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Bakes `base` plus `payload` into the template `out` (written atomically,
/// mode 0644). Errors name the offending entry; on error no output is left.
pub fn bake(base: &Path, payload: &Tree, out: &Path) -> Result<BakeStats> {
    bake_with_mode(base, payload, out, 0o644)
}

/// [`bake`] from a cached base whose bytes are checked against `base_digest`
/// as they stream through (no extra pass); payload blobs
/// ([`crate::payload::FileSource::Blob`]) are checked as they are copied. A
/// mismatch fails the bake before the output is published.
pub fn bake_checked(
    base: &Path,
    base_digest: &crate::artifact::Digest,
    payload: &Tree,
    out: &Path,
) -> Result<BakeStats> {
    let (blob, check) = crate::fetch::cache::open_verified(base, base_digest)?;
    bake_from(
        crate::payload::archive::decompress(blob, base)?,
        Some(check),
        base,
        payload,
        out,
        0o644,
    )
}

/// [`bake`] with the output's permission bits.
pub(crate) fn bake_with_mode(
    base: &Path,
    payload: &Tree,
    out: &Path,
    mode: u32,
) -> Result<BakeStats> {
    bake_from(open_decompressed(base)?, None, base, payload, out, mode)
}

fn bake_from(
    decompressed: Box<dyn Read + Send>,
    check: Option<crate::fetch::cache::BlobCheck>,
    base: &Path,
    payload: &Tree,
    out: &Path,
    mode: u32,
) -> Result<BakeStats> {
    let start = Instant::now();
    let mut input = threaded_reader(decompressed);
    let mut atomic = AtomicFile::create(out, mode)?;
    let w = BufWriter::with_capacity(1 << 20, atomic.file());
    let baked = transform(&mut input, payload, w, default_workers()).and_then(|(stats, w)| {
        // Read the base to its end, so all of it is hashed (the tar's end
        // marker may come before the compressed stream's end).
        io::copy(&mut input, &mut io::sink()).context("reading the rest of the base")?;
        Ok((stats, w))
    });
    drop(input);
    // A tampered base may break the tar or the decompressor before its end:
    // its digest is then the reason to report.
    if let Some(check) = check {
        check.finish()?;
    }
    let (mut stats, w) =
        baked.with_context(|| format!("baking {} into {}", base.display(), out.display()))?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", out.display()))?;
    stats.out_bytes = atomic.commit()?;
    stats.elapsed = start.elapsed();
    tracing::info!(
        out = %out.display(),
        base_entries = stats.base_entries,
        replaced = stats.replaced,
        payload_entries = stats.payload_entries,
        mb_per_s = format!("{:.0}", stats.mb_per_s()),
        "baked LXC template"
    );
    Ok(stats)
}

/// What kind of thing a guest path is in the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Symlink,
    /// Regular files, devices, fifos, and hardlinks to them.
    Other,
    /// Dropped for a payload entry; hardlinks to it cannot be kept.
    Replaced,
}

fn kind_of(typeflag: u8) -> Kind {
    match typeflag {
        b'5' | b'D' => Kind::Dir,
        b'2' => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// Maps an archive path to a guest path (`./etc/` -> `/etc`, `./` -> `/`),
/// rejecting absolute paths and `..`. Paths stay raw bytes: to tar and the
/// kernel `a\xff` and `a\xfe` are two files, and a lossy UTF-8 conversion
/// would make them one to these checks (a symlink hidden behind a directory).
fn guest_path(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.starts_with(b"/") {
        bail!("absolute paths are not allowed");
    }
    let mut out = Vec::with_capacity(raw.len() + 1);
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!("`..` components are not allowed"),
            c => {
                out.push(b'/');
                out.extend_from_slice(c);
            }
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// The parent of an absolute guest path (`/` for `/etc` and `/`).
fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/",
        Some(i) => &path[..i],
    }
}

/// An archive path quoted for messages: like `{:?}` when UTF-8, else with its
/// bytes escaped (`"a\xff"`), so two names that differ only there look different.
fn display_path(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("\"{}\"", raw.escape_ascii()),
    }
}

/// Counts bytes written through it.
pub(crate) struct Counting<W> {
    pub inner: W,
    pub count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The decompressed tar being written, tracking its length for record padding.
pub(crate) struct TarOut<W> {
    pub w: W,
    pub pos: u64,
}

impl<W: Write> Write for TarOut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl<W: Write> TarOut<W> {
    /// Writes the payload node at guest `path` (header, then streamed content).
    pub fn write_node(&mut self, dot: bool, path: &str, node: &Node) -> Result<u64> {
        let prefix = if dot { "." } else { "" };
        let rel = if dot {
            path.to_string()
        } else {
            path[1..].to_string()
        };
        let (typeflag, name, link, size) = match &node.kind {
            NodeKind::Dir => (b'5', format!("{prefix}{rel}/"), "", 0),
            NodeKind::File(src) => (b'0', format!("{prefix}{rel}"), "", src.len()),
            NodeKind::Symlink(t) => (b'2', format!("{prefix}{rel}"), t.as_str(), 0),
        };
        let header = encode_header(&NewEntry {
            name: &name,
            typeflag,
            link,
            size,
            mode: node.mode & 0o7777,
            uid: node.uid,
            gid: node.gid,
            mtime: node.mtime,
        });
        self.write_all(&header)?;
        if let NodeKind::File(src) = &node.kind {
            let mut r = src.open()?;
            let mut buf = vec![0u8; size.clamp(1, 1 << 20) as usize];
            let n = tarfmt::copy_n(&mut r, self, size, &mut buf)
                .with_context(|| format!("copying payload {path}"))?;
            // Reading past the end also ends a cached blob's digest check, whose
            // failure must not be mistaken for "no more bytes".
            let longer = r
                .read(&mut buf[..1])
                .with_context(|| format!("reading payload {path}"))?
                > 0;
            if n != size || longer {
                bail!("payload {path}: source does not have the expected {size} bytes (changed during the bake?)");
            }
            let pad = tarfmt::pad(size) - size;
            self.write_all(&vec![0u8; pad as usize])?;
        }
        Ok(size)
    }

    /// Writes the end-of-archive marker, padded to a whole record.
    pub fn finish_archive(&mut self) -> io::Result<()> {
        let end = (self.pos + 2 * tarfmt::BLOCK as u64).div_ceil(RECORD) * RECORD;
        let zeros = vec![0u8; (end - self.pos) as usize];
        self.write_all(&zeros)
    }
}

pub(crate) fn encoder<W: Write>(w: W) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    encoder_with(w, default_workers())
}

fn default_workers() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8) as u32
}

/// `workers` must be at least 1: zero (single-threaded mode) writes other bytes.
fn encoder_with<W: Write>(
    w: W,
    workers: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut e = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
    e.include_checksum(true)?;
    e.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(workers.max(1)))?;
    Ok(e)
}

/// The bake's stream transform over bytes in memory: a decompressed base tar
/// in, the template's bytes out (one zstd worker). The fuzz target's entry
/// point; bakes of files go through [`bake`].
pub fn transform_bytes(base_tar: &[u8], payload: &Tree) -> Result<Vec<u8>> {
    transform(base_tar, payload, Vec::new(), 1).map(|(_, out)| out)
}

/// The bake's core: base tar stream in, template bytes out.
fn transform<R: Read, W: Write>(
    input: R,
    payload: &Tree,
    out: W,
    workers: u32,
) -> Result<(BakeStats, W)> {
    let mut stats = BakeStats::default();
    let mut rdr = RawReader::new(BufReader::with_capacity(1 << 20, input));
    let mut tar = TarOut {
        w: encoder_with(
            Counting {
                inner: out,
                count: 0,
            },
            workers,
        )?,
        pos: 0,
    };
    let mut seen: HashMap<Vec<u8>, Kind> = HashMap::new();
    // Directories both the base and the payload have: the base entry stays.
    let mut kept_dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut dot: Option<bool> = None;

    while let Some(e) = rdr.next_entry()? {
        if matches!(e.typeflag, b'g' | b'V') {
            // Global PAX headers and volume labels: not files, pass through.
            tar.write_all(&e.raw)?;
            rdr.copy_data(e.data_len, &mut tar)?;
            continue;
        }
        stats.base_entries += 1;
        let shown = display_path(&e.path);
        let g = guest_path(&e.path).with_context(|| format!("base entry {shown}"))?;
        dot.get_or_insert(e.path.starts_with(b"./"));
        let mut anc = &g[..];
        while anc != b"/" {
            anc = parent(anc);
            if seen.get(anc) == Some(&Kind::Symlink) {
                bail!(
                    "base entry {shown} lies below symlink {}, extracting it would write through the link",
                    display_path(anc)
                );
            }
        }
        let mut kind = kind_of(e.typeflag);
        if e.typeflag == b'1' {
            let t_shown = display_path(&e.link);
            let t = guest_path(&e.link)
                .with_context(|| format!("base hardlink {shown} -> {t_shown} escapes the root"))?;
            kind = match seen.get(&t) {
                Some(Kind::Replaced) => bail!(
                    "base hardlink {shown} points to {t_shown}, which the payload replaces; replace both or neither"
                ),
                Some(k @ (Kind::Other | Kind::Symlink)) => *k,
                _ => bail!("base hardlink {shown} points to {t_shown}, which is not a file earlier in the archive"),
            };
        }
        // Payload paths are UTF-8: a base name that is not has no payload twin.
        if let Some((p, node)) = std::str::from_utf8(&g)
            .ok()
            .and_then(|p| Some((p, payload.get(p)?)))
        {
            let p_dir = matches!(node.kind, NodeKind::Dir);
            match (kind == Kind::Dir, p_dir) {
                (true, true) => {
                    kept_dirs.insert(g.clone());
                }
                (true, false) => bail!("payload {p} would replace the base directory {shown}"),
                (false, true) => {
                    bail!("payload directory {p} would replace the base non-directory {shown}")
                }
                (false, false) => {
                    rdr.skip_data(e.data_len)?;
                    stats.replaced += 1;
                    seen.insert(g, Kind::Replaced);
                    continue;
                }
            }
        }
        seen.insert(g, kind);
        tar.write_all(&e.raw)?;
        rdr.copy_data(e.data_len, &mut tar)?;
    }
    rdr.drain()?;
    stats.base_tar_bytes = rdr.pos;
    let dot = dot.unwrap_or(true);

    for (path, node) in payload.iter() {
        let is_dir = matches!(node.kind, NodeKind::Dir);
        if is_dir && kept_dirs.contains(path.as_bytes()) {
            continue;
        }
        // A prefix of a UTF-8 path ending before a `/` is UTF-8.
        let par = std::str::from_utf8(parent(path.as_bytes())).unwrap_or("/");
        let ok = par == "/"
            || matches!(payload.get(par).map(|n| &n.kind), Some(NodeKind::Dir))
            || seen.get(par.as_bytes()) == Some(&Kind::Dir);
        if !ok {
            match seen.get(par.as_bytes()) {
                Some(Kind::Symlink) => bail!(
                    "payload {path} lies below the base symlink {par}; use the link's target path"
                ),
                _ => bail!(
                    "payload {path}: its parent {par} is neither a directory in the base nor in the payload"
                ),
            }
        }
        stats.payload_bytes += tar.write_node(dot, path, node)?;
        stats.payload_entries += 1;
    }

    let index = Index {
        main_end: 0,
        main_tar_len: tar.pos,
        seed_ready: seed_ready(&seen, payload),
        has_seed_dir: seen.get(SEED_DIR.as_bytes()) == Some(&Kind::Dir)
            || matches!(payload.get(SEED_DIR).map(|n| &n.kind), Some(NodeKind::Dir)),
        dot,
    };
    let counting = tar.w.finish().context("finishing the zstd frame")?;
    let main_end = counting.count;
    let mut tail = TarOut {
        w: encoder_with(counting, workers)?,
        pos: index.main_tar_len,
    };
    tail.finish_archive()?;
    stats.tar_bytes = tail.pos;
    let mut counting = tail.w.finish().context("finishing the zstd frame")?;
    counting.write_all(&Index { main_end, ..index }.encode())?;
    Ok((stats, counting.inner))
}

/// Whether a seed can be added after the main frame: no seed inside it, `/etc`
/// a directory, `/etc/imgbuild` a directory or absent.
fn seed_ready(seen: &HashMap<Vec<u8>, Kind>, payload: &Tree) -> bool {
    let state = |p: &str| -> Option<Kind> {
        match payload.get(p).map(|n| &n.kind) {
            Some(NodeKind::Dir) => Some(Kind::Dir),
            Some(_) => Some(Kind::Other),
            None => seen
                .get(p.as_bytes())
                .copied()
                .filter(|k| *k != Kind::Replaced),
        }
    };
    state("/etc") == Some(Kind::Dir)
        && matches!(state(SEED_DIR), None | Some(Kind::Dir))
        && state(SEED_PATH).is_none()
        && seen.get(SEED_PATH.as_bytes()).is_none()
}

/// The trailer of a baked template: where its entries end, so a seed can be
/// appended without recompressing them. Stored as a zstd skippable frame,
/// which every zstd decoder skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Index {
    /// Compressed byte offset where the entries frame ends.
    pub main_end: u64,
    /// Decompressed tar bytes in the entries frame.
    pub main_tar_len: u64,
    /// A seed may be appended (see [`seed_ready`]).
    pub seed_ready: bool,
    /// `/etc/imgbuild` is a directory in the entries frame.
    pub has_seed_dir: bool,
    /// Entries are named `./...`.
    pub dot: bool,
}

const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const INDEX_TAG: &[u8; 16] = b"imgbuild-lxc-v1\0";
pub(crate) const INDEX_LEN: usize = 8 + 16 + 8 + 8 + 8;

impl Index {
    pub fn encode(&self) -> [u8; INDEX_LEN] {
        let mut b = [0u8; INDEX_LEN];
        b[0..4].copy_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&((INDEX_LEN - 8) as u32).to_le_bytes());
        b[8..24].copy_from_slice(INDEX_TAG);
        b[24..32].copy_from_slice(&self.main_end.to_le_bytes());
        b[32..40].copy_from_slice(&self.main_tar_len.to_le_bytes());
        let flags =
            self.seed_ready as u64 | (self.has_seed_dir as u64) << 1 | (self.dot as u64) << 2;
        b[40..48].copy_from_slice(&flags.to_le_bytes());
        b
    }

    /// Reads the index at the end of `file`; `None` when it has none (a
    /// template not made by imgbuild) or it does not fit the file.
    pub fn read(file: &fs::File) -> Result<Option<Index>> {
        let len = file.metadata()?.len();
        if len < (INDEX_LEN + 4) as u64 {
            return Ok(None);
        }
        let mut b = [0u8; INDEX_LEN];
        file.read_exact_at(&mut b, len - INDEX_LEN as u64)?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if b[0..4] != SKIPPABLE_MAGIC.to_le_bytes()
            || b[4..8] != ((INDEX_LEN - 8) as u32).to_le_bytes()
            || &b[8..24] != INDEX_TAG
        {
            return Ok(None);
        }
        let main_end = u64_at(24);
        let flags = u64_at(40);
        if main_end == 0 || main_end + 4 > len - INDEX_LEN as u64 {
            return Ok(None);
        }
        // The frame after the entries must start right at main_end.
        let mut magic = [0u8; 4];
        file.read_exact_at(&mut magic, main_end)?;
        if magic != [0x28, 0xb5, 0x2f, 0xfd] {
            return Ok(None);
        }
        Ok(Some(Index {
            main_end,
            main_tar_len: u64_at(32),
            seed_ready: flags & 1 != 0,
            has_seed_dir: flags & 2 != 0,
            dot: flags & 4 != 0,
        }))
    }
}

/// Runs decompression on its own thread, so a bake uses two cores: one
/// inflating the base, one compressing the output.
fn threaded_reader(mut r: Box<dyn Read + Send>) -> impl Read {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        // Fill whole chunks so the consumer sees few, large reads.
        let res = loop {
            match r.read(&mut buf[n..]) {
                Ok(0) => break Ok(()),
                Ok(k) => {
                    n += k;
                    if n == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(n);
        let done = n == 0 || res.is_err();
        let msg = match res {
            Ok(()) => Ok(buf),
            Err(e) => Err(e),
        };
        if (n > 0 || done) && tx.send(msg).is_err() {
            return;
        }
        if done {
            return;
        }
    });
    ChannelReader {
        rx,
        cur: Vec::new(),
        off: 0,
        eof: false,
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    off: usize,
    eof: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.off == self.cur.len() {
            if self.eof {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(b)) if b.is_empty() => self.eof = true,
                Ok(Ok(b)) => {
                    self.cur = b;
                    self.off = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("decompression thread ended unexpectedly")),
            }
        }
        let n = out.len().min(self.cur.len() - self.off);
        out[..n].copy_from_slice(&self.cur[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base big enough for zstd to split into several jobs, mildly
    /// compressible like a real rootfs.
    fn big_base() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..6 {
            let data: Vec<u8> = (0..6 << 20)
                .map(|j: u32| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if j % 3 == 0 {
                        (x >> 56) as u8
                    } else {
                        b'a' + (j % 7) as u8
                    }
                })
                .collect();
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("./f{i}"), &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn output_does_not_depend_on_the_worker_count() {
        let base = big_base();
        let mut payload = Tree::new();
        payload
            .insert("/seed-free", Node::bytes(&b"x"[..], 0o644))
            .unwrap();
        let one = transform(&base[..], &payload, Vec::new(), 1).unwrap().1;
        let three = transform(&base[..], &payload, Vec::new(), 3).unwrap().1;
        assert!(
            one.len() < base.len() * 3 / 4,
            "compressed {} of {}",
            one.len(),
            base.len()
        );
        assert!(one == three, "1 worker and 3 workers wrote different bytes");
    }

    /// A base tar whose names and link targets are written verbatim (any
    /// bytes, no UTF-8 requirement), like an attacker's archive.
    fn raw_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_mut_bytes()[..path.len()].copy_from_slice(path);
            h.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link);
            h.set_entry_type(*ty);
            h.set_mode(0o755);
            h.set_mtime(1_600_000_000);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn names_are_compared_as_raw_bytes() {
        use tar::EntryType as T;
        let bake = |base: &[u8]| transform(base, &Tree::new(), Vec::new(), 1).map(|_| ());
        // `x\xff` and `x\xfe` are two entries to tar; as lossy UTF-8 both are
        // `x\u{FFFD}`, and the directory would hide the symlink from the check.
        let through_link = raw_tar(&[
            (b"./", T::Directory, b""),
            (b"./etc/", T::Directory, b""),
            (b"./x\xff", T::Symlink, b"/etc"),
            (b"./x\xfe/", T::Directory, b""),
            (b"./x\xff/shadow", T::Regular, b""),
        ]);
        let err = bake(&through_link).unwrap_err();
        assert!(
            format!("{err:#}").contains(r#"lies below symlink "/x\xff""#),
            "{err:#}"
        );
        // A hardlink to a name the archive does not have, only its lossy twin.
        let hardlink = raw_tar(&[
            (b"./", T::Directory, b""),
            (b"./a\xff", T::Regular, b""),
            (b"./h", T::Link, b"./a\xfe"),
        ]);
        let err = bake(&hardlink).unwrap_err();
        assert!(
            format!("{err:#}").contains(r#"points to "./a\xfe", which is not a file earlier"#),
            "{err:#}"
        );
        // Names that are not UTF-8 are fine on their own.
        bake(&raw_tar(&[
            (b"./", T::Directory, b""),
            (b"./x\xfe/", T::Directory, b""),
            (b"./x\xfe/f\xff", T::Regular, b""),
            (b"./h", T::Link, b"./x\xfe/f\xff"),
        ]))
        .unwrap();
    }

    #[test]
    fn index_round_trips_and_rejects_foreign_trailers() {
        let idx = Index {
            main_end: 100,
            main_tar_len: 10240,
            seed_ready: true,
            has_seed_dir: false,
            dot: true,
        };
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        let mut bytes = vec![0u8; 100];
        bytes.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
        bytes.extend_from_slice(&idx.encode());
        fs::write(&p, &bytes).unwrap();
        assert_eq!(
            Index::read(&fs::File::open(&p).unwrap()).unwrap(),
            Some(idx)
        );
        // main_end not at a frame start: no index.
        bytes[100] = 0;
        fs::write(&p, &bytes).unwrap();
        assert_eq!(Index::read(&fs::File::open(&p).unwrap()).unwrap(), None);
        fs::write(&p, b"short").unwrap();
        assert_eq!(Index::read(&fs::File::open(&p).unwrap()).unwrap(), None);
    }
}
