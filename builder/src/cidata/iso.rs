//! A small, fixed-layout ISO 9660 encoder for the `cidata` volume: two
//! directories (root and `imgbuild/`), four files, a Joliet tree (UCS-2
//! names) and Rock Ridge entries (`SP`, `CE` to the `ER`, `PX`, `NM`) in the
//! primary tree, whose own names are ISO level 1 (8.3, upper case).

use anyhow::{ensure, Result};
use imgbuild_sigv4::utc;

use super::CidataFiles;

const SECTOR: usize = 2048;
const LABEL: &str = "cidata";

// Fixed layout (sector numbers).
const PVD: usize = 16;
const SVD: usize = 17;
const TERM: usize = 18;
const PATH_L: usize = 19;
const PATH_M: usize = 20;
const JPATH_L: usize = 21;
const JPATH_M: usize = 22;
const ROOT: usize = 23;
const SUB: usize = 24;
const JROOT: usize = 25;
const JSUB: usize = 26;
const CE_AREA: usize = 27;
const DATA: usize = 28;

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DESC: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SRC: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER \
IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// The 7-byte directory record date.
fn record_date(epoch: u64) -> [u8; 7] {
    let t = utc(epoch);
    [
        (t.year - 1900).clamp(0, 255) as u8,
        t.month as u8,
        t.day as u8,
        t.hour as u8,
        t.minute as u8,
        t.second as u8,
        0,
    ]
}

/// The 17-byte volume descriptor date.
fn volume_date(epoch: u64) -> [u8; 17] {
    let t = utc(epoch);
    let text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}00",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(text.as_bytes());
    out
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

/// One directory entry to encode.
struct Rec<'a> {
    /// ISO name bytes (`\0` for `.`, `\x01` for `..`).
    name: Vec<u8>,
    extent: usize,
    size: usize,
    dir: bool,
    /// Rock Ridge system use bytes (primary tree only).
    su: &'a [u8],
}

impl<'a> Rec<'a> {
    /// A directory (one sector) at `extent`.
    fn dir(name: Vec<u8>, extent: usize, su: &'a [u8]) -> Self {
        Rec {
            name,
            extent,
            size: SECTOR,
            dir: true,
            su,
        }
    }

    /// A file of `size` bytes at `extent`.
    fn file(name: Vec<u8>, extent: usize, size: usize, su: &'a [u8]) -> Self {
        Rec {
            name,
            extent,
            size,
            dir: false,
            su,
        }
    }
}

fn dir_record(r: &Rec, date: [u8; 7]) -> Vec<u8> {
    let name_len = r.name.len();
    let pad = usize::from(name_len % 2 == 0);
    let len = 33 + name_len + pad + r.su.len();
    assert!(len <= 255, "directory record too long");
    let mut b = Vec::with_capacity(len);
    b.push(len as u8);
    b.push(0);
    b.extend_from_slice(&both32(r.extent as u32));
    b.extend_from_slice(&both32(r.size as u32));
    b.extend_from_slice(&date);
    b.push(if r.dir { 2 } else { 0 });
    b.push(0);
    b.push(0);
    b.extend_from_slice(&both16(1));
    b.push(name_len as u8);
    b.extend_from_slice(&r.name);
    if pad == 1 {
        b.push(0);
    }
    b.extend_from_slice(r.su);
    b
}

fn su_px(mode: u32, nlink: u32) -> Vec<u8> {
    let mut b = vec![b'P', b'X', 36, 1];
    b.extend_from_slice(&both32(mode));
    b.extend_from_slice(&both32(nlink));
    b.extend_from_slice(&both32(0)); // uid
    b.extend_from_slice(&both32(0)); // gid
    b
}

fn su_nm(name: &str) -> Vec<u8> {
    let mut b = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
    b.extend_from_slice(name.as_bytes());
    b
}

fn er_entry() -> Vec<u8> {
    let mut b = vec![
        b'E',
        b'R',
        (8 + ER_ID.len() + ER_DESC.len() + ER_SRC.len()) as u8,
        1,
        ER_ID.len() as u8,
        ER_DESC.len() as u8,
        ER_SRC.len() as u8,
        1,
    ];
    b.extend_from_slice(ER_ID);
    b.extend_from_slice(ER_DESC);
    b.extend_from_slice(ER_SRC);
    b
}

fn dir_sector(records: &[Rec], date: [u8; 7]) -> Vec<u8> {
    let mut s: Vec<u8> = records.iter().flat_map(|r| dir_record(r, date)).collect();
    assert!(s.len() <= SECTOR, "directory larger than one sector");
    s.resize(SECTOR, 0);
    s
}

fn path_table(root: usize, sub: usize, sub_name: &[u8], big_endian: bool) -> Vec<u8> {
    let mut t = Vec::new();
    let mut entry = |name: &[u8], extent: usize, parent: u16| {
        t.push(name.len() as u8);
        t.push(0);
        if big_endian {
            t.extend_from_slice(&(extent as u32).to_be_bytes());
            t.extend_from_slice(&parent.to_be_bytes());
        } else {
            t.extend_from_slice(&(extent as u32).to_le_bytes());
            t.extend_from_slice(&parent.to_le_bytes());
        }
        t.extend_from_slice(name);
        if name.len() % 2 == 1 {
            t.push(0);
        }
    };
    entry(&[0], root, 1);
    entry(sub_name, sub, 1);
    t
}

fn padded(text: &[u8], len: usize, fill: u8) -> Vec<u8> {
    let mut v = text.to_vec();
    v.resize(len, fill);
    v
}

fn ucs2_padded(text: &str, len: usize) -> Vec<u8> {
    let mut v = ucs2(text);
    while v.len() < len {
        v.extend_from_slice(&[0, 0x20]);
    }
    v.truncate(len);
    v
}

/// Encodes the volume. Layout: descriptors at 16-18, path tables at 19-22,
/// primary directories at 23-24, Joliet directories at 25-26, the Rock Ridge
/// continuation area (the `ER` entry) at 27, file data from 28.
pub fn build(files: &CidataFiles, epoch: u64) -> Result<Vec<u8>> {
    // (ISO 8.3 name, long name, bytes, mode) in the root, sorted by ISO name
    // (which also sorts the long names).
    let root_files: [(&str, &str, &[u8], u32); 3] = [
        (
            "META_DAT.;1",
            "meta-data",
            files.meta_data.as_bytes(),
            0o100444,
        ),
        (
            "NETWORK_.;1",
            "network-config",
            files.network_config.as_bytes(),
            0o100444,
        ),
        (
            "USER_DAT.;1",
            "user-data",
            files.user_data.as_bytes(),
            0o100444,
        ),
    ];
    let seed = (
        "SEED.YAM;1",
        "seed.yaml",
        files.seed_yaml.as_bytes(),
        0o100400u32,
    );

    // Data extents.
    let mut next = DATA;
    let mut place = |len: usize| {
        if len == 0 {
            return 0;
        }
        let at = next;
        next += len.div_ceil(SECTOR);
        at
    };
    let root_extents: Vec<usize> = root_files.iter().map(|f| place(f.2.len())).collect();
    let seed_extent = place(seed.2.len());
    let total = next;
    ensure!(total < u32::MAX as usize / SECTOR, "cidata files too large");

    let date = record_date(epoch);
    let vdate = volume_date(epoch);
    let mut img = vec![0u8; total * SECTOR];
    let mut put = |sector: usize, bytes: &[u8]| {
        img[sector * SECTOR..sector * SECTOR + bytes.len()].copy_from_slice(bytes);
    };

    // Primary tree with Rock Ridge.
    let ce_len = er_entry().len();
    let mut root_dot_su = vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0];
    root_dot_su.extend_from_slice(&[b'C', b'E', 28, 1]);
    root_dot_su.extend_from_slice(&both32(CE_AREA as u32));
    root_dot_su.extend_from_slice(&both32(0));
    root_dot_su.extend_from_slice(&both32(ce_len as u32));
    root_dot_su.extend_from_slice(&su_px(0o040555, 3));
    let dir_px = su_px(0o040555, 3);
    let sub_px = su_px(0o040555, 2);
    let file_su: Vec<Vec<u8>> = root_files
        .iter()
        .map(|f| [su_px(f.3, 1), su_nm(f.1)].concat())
        .collect();
    let sub_su = [sub_px.clone(), su_nm("imgbuild")].concat();
    let seed_su = [su_px(seed.3, 1), su_nm(seed.1)].concat();

    let mut root_recs = vec![
        Rec::dir(vec![0], ROOT, &root_dot_su),
        Rec::dir(vec![1], ROOT, &dir_px),
        Rec::dir(b"IMGBUILD".to_vec(), SUB, &sub_su),
    ];
    for (i, f) in root_files.iter().enumerate() {
        root_recs.push(Rec::file(
            f.0.as_bytes().to_vec(),
            root_extents[i],
            f.2.len(),
            &file_su[i],
        ));
    }
    put(ROOT, &dir_sector(&root_recs, date));
    let sub_recs = [
        Rec::dir(vec![0], SUB, &sub_px),
        Rec::dir(vec![1], ROOT, &dir_px),
        Rec::file(
            seed.0.as_bytes().to_vec(),
            seed_extent,
            seed.2.len(),
            &seed_su,
        ),
    ];
    put(SUB, &dir_sector(&sub_recs, date));
    put(CE_AREA, &er_entry());

    // Joliet tree (UCS-2 big-endian names, no Rock Ridge).
    let mut jroot = vec![
        Rec::dir(vec![0], JROOT, &[]),
        Rec::dir(vec![1], JROOT, &[]),
        Rec::dir(ucs2("imgbuild"), JSUB, &[]),
    ];
    for (i, f) in root_files.iter().enumerate() {
        jroot.push(Rec::file(ucs2(f.1), root_extents[i], f.2.len(), &[]));
    }
    put(JROOT, &dir_sector(&jroot, date));
    let jsub = [
        Rec::dir(vec![0], JSUB, &[]),
        Rec::dir(vec![1], JROOT, &[]),
        Rec::file(ucs2(seed.1), seed_extent, seed.2.len(), &[]),
    ];
    put(JSUB, &dir_sector(&jsub, date));

    // Path tables.
    let pt = path_table(ROOT, SUB, b"IMGBUILD", false);
    put(PATH_L, &pt);
    put(PATH_M, &path_table(ROOT, SUB, b"IMGBUILD", true));
    let jpt = path_table(JROOT, JSUB, &ucs2("imgbuild"), false);
    put(JPATH_L, &jpt);
    put(JPATH_M, &path_table(JROOT, JSUB, &ucs2("imgbuild"), true));

    // File data.
    for (i, f) in root_files.iter().enumerate() {
        if !f.2.is_empty() {
            put(root_extents[i], f.2);
        }
    }
    if !seed.2.is_empty() {
        put(seed_extent, seed.2);
    }

    // Volume descriptors.
    let descriptor = |joliet: bool| -> Vec<u8> {
        let mut d = vec![0u8; SECTOR];
        d[0] = if joliet { 2 } else { 1 };
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        let text = |v: &str, n: usize| {
            if joliet {
                ucs2_padded(v, n)
            } else {
                padded(v.as_bytes(), n, b' ')
            }
        };
        let (pt_len, l, m, root) = if joliet {
            (jpt.len(), JPATH_L, JPATH_M, JROOT)
        } else {
            (pt.len(), PATH_L, PATH_M, ROOT)
        };
        let (sys, vol, app) = (text("", 32), text(LABEL, 32), text("IMGBUILD", 128));
        d[8..40].copy_from_slice(&sys);
        d[40..72].copy_from_slice(&vol);
        d[80..88].copy_from_slice(&both32(total as u32));
        if joliet {
            d[88..91].copy_from_slice(b"%/E");
        }
        d[120..124].copy_from_slice(&both16(1));
        d[124..128].copy_from_slice(&both16(1));
        d[128..132].copy_from_slice(&both16(SECTOR as u16));
        d[132..140].copy_from_slice(&both32(pt_len as u32));
        d[140..144].copy_from_slice(&(l as u32).to_le_bytes());
        d[148..152].copy_from_slice(&(m as u32).to_be_bytes());
        let root_rec = dir_record(&Rec::dir(vec![0], root, &[]), date);
        d[156..190].copy_from_slice(&root_rec);
        d[190..318].copy_from_slice(&text("", 128)); // volume set
        d[318..446].copy_from_slice(&text("", 128)); // publisher
        d[446..574].copy_from_slice(&text("", 128)); // data preparer
        d[574..702].copy_from_slice(&app);
        d[702..739].copy_from_slice(&text("", 37));
        d[739..776].copy_from_slice(&text("", 37));
        d[776..813].copy_from_slice(&text("", 37));
        d[813..830].copy_from_slice(&vdate);
        d[830..847].copy_from_slice(&vdate);
        d[847..863].copy_from_slice(b"0000000000000000");
        d[864..880].copy_from_slice(b"0000000000000000");
        d[881] = 1;
        d
    };
    let pvd = descriptor(false);
    let svd = descriptor(true);
    put(PVD, &pvd);
    put(SVD, &svd);
    let mut term = vec![0u8; SECTOR];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;
    put(TERM, &term);
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(record_date(0), [70, 1, 1, 0, 0, 0, 0]);
        assert_eq!(record_date(951_782_400 + 3661), [100, 2, 29, 1, 1, 1, 0]);
        assert_eq!(&volume_date(1_704_067_200)[..16], b"2024010100000000");
        assert_eq!(&volume_date(951_782_400 + 3661)[..16], b"2000022901010100");
    }

    #[test]
    fn iso_layout_basics() {
        let files = CidataFiles {
            meta_data: "m\n".into(),
            user_data: "u\n".into(),
            network_config: String::new(),
            seed_yaml: "s\n".into(),
        };
        let iso = build(&files, 0).unwrap();
        assert_eq!(&iso[PVD * SECTOR + 1..PVD * SECTOR + 6], b"CD001");
        assert_eq!(&iso[PVD * SECTOR + 40..PVD * SECTOR + 46], b"cidata");
        assert_eq!(iso.len(), (DATA + 3) * SECTOR);
        assert_eq!(build(&files, 0).unwrap(), iso);
    }
}
