//! A minimal read-only ISO 9660 reader: volume label and one file by path.
//!
//! Enough to read `imgbuild/seed.yaml` off a NoCloud `cidata` volume without
//! mounting it or needing cloud-init. Names are looked up, in order, in the
//! Joliet tree (UCS-2 names, the usual `-J`), then in the primary tree using
//! Rock Ridge `NM` names (`-r`), then in the primary tree by plain ISO name
//! compared case-insensitively with the `;1` version suffix dropped (so an
//! ISO-level-1 writer that uppercases `IMGBUILD` still works, as long as the
//! 8.3 rule did not truncate the file name). Rock Ridge continuation areas
//! (`CE`) are not followed; short names never need them.

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom};

const SECTOR: u64 = 2048;
/// Files larger than this are refused (a seed is a few KiB).
const MAX_FILE: u32 = 16 << 20;

struct DirRecord {
    extent: u32,
    size: u32,
    is_dir: bool,
    name: String,
    /// The name came from a Rock Ridge `NM` entry.
    rock_ridge: bool,
}

fn read_at<R: Read + Seek>(r: &mut R, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; len];
    r.seek(SeekFrom::Start(off))?;
    r.read_exact(&mut buf)
        .with_context(|| format!("reading {len} bytes at offset {off}"))?;
    Ok(buf)
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The primary volume label (volume identifier, trailing spaces trimmed),
/// or `None` when `r` is not an ISO 9660 image.
pub fn volume_label<R: Read + Seek>(r: &mut R) -> Result<Option<String>> {
    let pvd = match read_at(r, 16 * SECTOR, SECTOR as usize) {
        Ok(b) => b,
        Err(_) => return Ok(None),
    };
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&pvd[40..72]).trim_end().to_string(),
    ))
}

/// Reads the file at `path` (components separated by `/`), `None` if absent.
///
/// Linux mounts show the Rock Ridge tree when there is one, so on a volume
/// with Rock Ridge and Joliet both trees must agree about the file (both
/// without it, or both with the same bytes): a volume that shows one seed to
/// a person looking at the mounted disk and another to the agent is refused.
pub fn read_file<R: Read + Seek>(r: &mut R, path: &str) -> Result<Option<Vec<u8>>> {
    let mut primary_root = None;
    let mut joliet_root = None;
    for n in 16..64u64 {
        let vd = read_at(r, n * SECTOR, SECTOR as usize)?;
        if &vd[1..6] != b"CD001" {
            bail!("not an ISO 9660 volume (no CD001 at sector {n})");
        }
        match vd[0] {
            1 => primary_root = Some(parse_record(&vd[156..190], false)?),
            2 if matches!(&vd[88..91], b"%/@" | b"%/C" | b"%/E") => {
                joliet_root = Some(parse_record(&vd[156..190], true)?)
            }
            255 => break,
            _ => {}
        }
    }
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let root = primary_root.context("ISO 9660 volume without a primary volume descriptor")?;
    let copy = |d: &DirRecord| DirRecord {
        extent: d.extent,
        size: d.size,
        is_dir: true,
        name: String::new(),
        rock_ridge: false,
    };
    let rock_ridge = read_dir(r, &root, false)?.iter().any(|e| e.rock_ridge);
    let joliet = match joliet_root {
        Some(j) => Some(lookup(r, j, &components, true, false)?),
        None => None,
    };
    if rock_ridge {
        let rr = lookup(r, copy(&root), &components, false, false)?;
        if let Some(j) = &joliet {
            if *j != rr {
                let what = match (j.is_some(), rr.is_some()) {
                    (true, true) => "hold different bytes",
                    (true, false) => "disagree: only the Joliet tree has it",
                    _ => "disagree: only the Rock Ridge tree has it",
                };
                bail!(
                    "the volume's Joliet and Rock Ridge trees {what} for {path} (a Linux mount shows Rock Ridge): refusing a volume that shows two different seeds"
                );
            }
        }
        return Ok(rr);
    }
    if let Some(Some(found)) = joliet {
        return Ok(Some(found));
    }
    if let Some(found) = lookup(r, copy(&root), &components, false, false)? {
        return Ok(Some(found));
    }
    lookup(r, root, &components, false, true)
}

fn lookup<R: Read + Seek>(
    r: &mut R,
    mut dir: DirRecord,
    components: &[&str],
    joliet: bool,
    plain: bool,
) -> Result<Option<Vec<u8>>> {
    for (i, want) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let entries = read_dir(r, &dir, joliet)?;
        let hit = entries.into_iter().find(|e| {
            let name = if plain {
                e.name
                    .trim_end_matches(";1")
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(want)
            } else {
                e.name == *want
            };
            name && e.is_dir != last
        });
        match hit {
            Some(e) if last => {
                if e.size > MAX_FILE {
                    bail!("{want} is {} bytes, larger than a seed can be", e.size);
                }
                return Ok(Some(read_at(
                    r,
                    u64::from(e.extent) * SECTOR,
                    e.size as usize,
                )?));
            }
            Some(e) => dir = e,
            None => return Ok(None),
        }
    }
    Ok(None)
}

fn read_dir<R: Read + Seek>(r: &mut R, dir: &DirRecord, joliet: bool) -> Result<Vec<DirRecord>> {
    if dir.size > MAX_FILE {
        bail!("directory extent of {} bytes is implausible", dir.size);
    }
    let data = read_at(r, u64::from(dir.extent) * SECTOR, dir.size as usize)?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let len = data[pos] as usize;
        if len == 0 {
            // Records never cross a sector boundary: skip the padding.
            pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
            continue;
        }
        if pos + len > data.len() || len < 34 {
            bail!("corrupt directory record at offset {pos}");
        }
        let rec = parse_record(&data[pos..pos + len], joliet)?;
        if !rec.name.is_empty() {
            out.push(rec);
        }
        pos += len;
    }
    Ok(out)
}

/// Parses one directory record; `.` and `..` come back with an empty name.
fn parse_record(b: &[u8], joliet: bool) -> Result<DirRecord> {
    let name_len = b[32] as usize;
    if 33 + name_len > b.len() {
        bail!("corrupt directory record name");
    }
    let raw = &b[33..33 + name_len];
    let is_dir = b[25] & 2 != 0;
    let special = name_len == 1 && (raw[0] == 0 || raw[0] == 1);
    let mut rock_ridge = false;
    let name = if special {
        String::new()
    } else if joliet {
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
            .trim_end_matches(";1")
            .to_string()
    } else {
        // System use area (Rock Ridge) follows the name, padded to even.
        let su_start = 33 + name_len + (1 - name_len % 2);
        match rock_ridge_name(b.get(su_start..).unwrap_or_default()) {
            Some(n) => {
                rock_ridge = true;
                n
            }
            None => String::from_utf8_lossy(raw).to_string(),
        }
    };
    Ok(DirRecord {
        extent: u32le(b, 2),
        size: u32le(b, 10),
        is_dir,
        name,
        rock_ridge,
    })
}

fn rock_ridge_name(mut su: &[u8]) -> Option<String> {
    let mut name = Vec::new();
    while su.len() >= 4 {
        let len = su[2] as usize;
        if len < 4 || len > su.len() {
            break;
        }
        if &su[..2] == b"NM" && len >= 5 {
            name.extend_from_slice(&su[5..len]);
            if su[4] & 1 == 0 {
                break; // no CONTINUE flag: name complete
            }
        }
        su = &su[len..];
    }
    (!name.is_empty()).then(|| String::from_utf8_lossy(&name).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Builds an ISO with xorriso from a tree and returns its bytes.
    fn make_iso(args: &[&str]) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("imgbuild")).unwrap();
        std::fs::write(
            tree.join("imgbuild/seed.yaml"),
            b"version: 1\nhostname: t\n",
        )
        .unwrap();
        std::fs::write(tree.join("user-data"), b"#cloud-config\n").unwrap();
        std::fs::write(tree.join("meta-data"), b"instance-id: x\n").unwrap();
        let iso = d.path().join("seed.iso");
        let mut cmd = Command::new("xorriso");
        cmd.args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&iso)
            .args(args)
            .arg(&tree);
        let out = cmd
            .output()
            .expect("xorriso must be installed (apt-get install xorriso)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(iso).unwrap()
    }

    #[test]
    fn reads_seed_from_joliet_rock_ridge_iso() {
        let iso = make_iso(&["-V", "cidata", "-J", "-r"]);
        let mut c = std::io::Cursor::new(iso);
        assert_eq!(volume_label(&mut c).unwrap().as_deref(), Some("cidata"));
        let seed = read_file(&mut c, "imgbuild/seed.yaml").unwrap().unwrap();
        assert_eq!(seed, b"version: 1\nhostname: t\n");
        assert_eq!(
            read_file(&mut c, "meta-data").unwrap().unwrap(),
            b"instance-id: x\n"
        );
        assert!(read_file(&mut c, "imgbuild/missing.yaml")
            .unwrap()
            .is_none());
        assert!(read_file(&mut c, "nope/seed.yaml").unwrap().is_none());
    }

    #[test]
    fn reads_rock_ridge_only_and_joliet_only() {
        for args in [&["-V", "cidata", "-r"][..], &["-V", "cidata", "-J"][..]] {
            let mut c = std::io::Cursor::new(make_iso(args));
            let seed = read_file(&mut c, "imgbuild/seed.yaml").unwrap();
            assert_eq!(
                seed.as_deref(),
                Some(&b"version: 1\nhostname: t\n"[..]),
                "{args:?}"
            );
        }
    }

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
    }

    fn swap_all(data: &mut [u8], a: &[u8], b: &[u8]) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i + a.len() <= data.len() {
            if &data[i..i + a.len()] == a {
                data[i..i + a.len()].copy_from_slice(b);
                n += 1;
                i += a.len();
            } else if &data[i..i + b.len()] == b {
                data[i..i + b.len()].copy_from_slice(a);
                n += 1;
                i += b.len();
            } else {
                i += 1;
            }
        }
        n
    }

    /// Issue 9 item 14: a volume whose Joliet tree names another file
    /// `seed.yaml` than its Rock Ridge tree does is refused.
    #[test]
    fn joliet_and_rock_ridge_must_agree() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("imgbuild")).unwrap();
        std::fs::write(
            tree.join("imgbuild/seed.yaml"),
            b"version: 1\nhostname: a\n",
        )
        .unwrap();
        std::fs::write(
            tree.join("imgbuild/seee.yaml"),
            b"version: 1\nhostname: b\n",
        )
        .unwrap();
        let iso = d.path().join("x.iso");
        let out = Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o"])
            .arg(&iso)
            .arg(&tree)
            .output()
            .expect("xorriso must be installed (apt-get install xorriso)");
        assert!(out.status.success());
        let mut data = std::fs::read(&iso).unwrap();
        let mut c = std::io::Cursor::new(data.clone());
        assert_eq!(
            read_file(&mut c, "imgbuild/seed.yaml").unwrap().unwrap(),
            b"version: 1\nhostname: a\n"
        );
        // Swap the two names in the Joliet tree only (UTF-16; Rock Ridge
        // names are bytes): Joliet's seed.yaml is now the other file.
        assert_eq!(
            swap_all(&mut data, &utf16("seed.yaml"), &utf16("seee.yaml")),
            2
        );
        let mut c = std::io::Cursor::new(data.clone());
        let e = read_file(&mut c, "imgbuild/seed.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hold different bytes"), "{e}");
        // Only in Joliet: rename Rock Ridge's entries away.
        assert_eq!(
            swap_all(
                &mut data,
                b"NM\x0e\x01\x00seed.yaml",
                b"NM\x0e\x01\x00sexd.yaml"
            ),
            1
        );
        let mut c = std::io::Cursor::new(data);
        let e = read_file(&mut c, "imgbuild/seed.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only the Joliet tree"), "{e}");
    }

    #[test]
    fn not_an_iso() {
        let mut c = std::io::Cursor::new(vec![0u8; 40 * 2048]);
        assert_eq!(volume_label(&mut c).unwrap(), None);
        assert!(read_file(&mut c, "imgbuild/seed.yaml").is_err());
        let mut short = std::io::Cursor::new(vec![0u8; 100]);
        assert_eq!(volume_label(&mut short).unwrap(), None);
    }
}
