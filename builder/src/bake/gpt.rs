//! GUID Partition Table: parsing, finding the root partition, and growing the
//! table when the disk grows (primary header, partition entry, backup header
//! and entry array moved to the new end, protective MBR, every CRC).
//!
//! Everything here is pure over byte slices; [`read`] and [`write_primary`]
//! are the only functions that touch a file (by positioned reads and writes).

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};

const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The sizes of the header we write (revision 1.0 headers are 92 bytes).
const HEADER_SIZE: usize = 92;

/// CRC-32 (IEEE 802.3, reflected), as the UEFI spec uses for GPT.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (!(crc & 1)).wrapping_add(1));
        }
    }
    !crc
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The fields of a GPT header this module uses; the rest is carried in `raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
    /// The header as read (its declared size), for fields we pass through.
    raw: Vec<u8>,
}

impl Header {
    /// Parses and verifies a header sector (signature, size, CRC).
    pub fn parse(sector: &[u8]) -> Result<Header> {
        ensure!(sector.len() >= HEADER_SIZE, "GPT header sector too short");
        if &sector[..8] != SIGNATURE {
            bail!("no GPT header (signature \"EFI PART\" missing)");
        }
        let size = le32(sector, 12) as usize;
        ensure!(
            (HEADER_SIZE..=sector.len()).contains(&size),
            "GPT header size {size} is invalid"
        );
        let mut copy = sector[..size].to_vec();
        let stored = le32(&copy, 16);
        copy[16..20].fill(0);
        let actual = crc32(&copy);
        ensure!(
            stored == actual,
            "GPT header CRC mismatch (stored {stored:#010x}, computed {actual:#010x})"
        );
        let h = Header {
            my_lba: le64(sector, 24),
            alternate_lba: le64(sector, 32),
            first_usable: le64(sector, 40),
            last_usable: le64(sector, 48),
            disk_guid: sector[56..72].try_into().unwrap(),
            entries_lba: le64(sector, 72),
            num_entries: le32(sector, 80),
            entry_size: le32(sector, 84),
            entries_crc: le32(sector, 88),
            raw: sector[..size].to_vec(),
        };
        ensure!(
            h.entry_size >= 128 && h.entry_size % 8 == 0,
            "GPT entry size {} is invalid",
            h.entry_size
        );
        ensure!(
            h.num_entries > 0 && h.num_entries <= 4096,
            "GPT entry count {} is invalid",
            h.num_entries
        );
        Ok(h)
    }

    /// Bytes of the partition entry array.
    pub fn entries_len(&self) -> usize {
        self.num_entries as usize * self.entry_size as usize
    }

    /// Serializes into a full sector with a fresh header CRC.
    pub fn to_sector(&self, sector_size: usize) -> Vec<u8> {
        let mut s = vec![0u8; sector_size];
        s[..self.raw.len()].copy_from_slice(&self.raw);
        s[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        s[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        s[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        s[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        s[56..72].copy_from_slice(&self.disk_guid);
        s[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        s[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        s[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        s[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        s[16..20].fill(0);
        let crc = crc32(&s[..self.raw.len()]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        s
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number (the index in the entry array plus one).
    pub number: u32,
    pub type_guid: [u8; 16],
    pub first_lba: u64,
    pub last_lba: u64,
    /// The partition name (GPT "label"), decoded from UTF-16LE.
    pub name: String,
}

/// A parsed, verified GPT (primary header plus entry array).
#[derive(Debug, Clone)]
pub struct Gpt {
    pub sector_size: u64,
    pub header: Header,
    pub entries: Vec<u8>,
    pub partitions: Vec<Partition>,
}

impl Gpt {
    /// Parses a table given the primary header sector and the entry array.
    pub fn parse(sector_size: u64, header_sector: &[u8], entries: &[u8]) -> Result<Gpt> {
        let header = Header::parse(header_sector)?;
        ensure!(
            header.my_lba == 1,
            "primary GPT header claims to be at LBA {}",
            header.my_lba
        );
        ensure!(
            entries.len() == header.entries_len(),
            "GPT entry array has the wrong size"
        );
        let actual = crc32(entries);
        ensure!(
            actual == header.entries_crc,
            "GPT partition entry array CRC mismatch (stored {:#010x}, computed {actual:#010x})",
            header.entries_crc
        );
        let mut partitions = Vec::new();
        for (i, e) in entries.chunks(header.entry_size as usize).enumerate() {
            let type_guid: [u8; 16] = e[..16].try_into().unwrap();
            if type_guid == [0; 16] {
                continue;
            }
            let units: Vec<u16> = (0..36)
                .map(|k| le16(e, 56 + 2 * k))
                .take_while(|&u| u != 0)
                .collect();
            partitions.push(Partition {
                number: i as u32 + 1,
                type_guid,
                first_lba: le64(e, 32),
                last_lba: le64(e, 40),
                name: String::from_utf16_lossy(&units),
            });
        }
        Ok(Gpt {
            sector_size,
            header,
            entries: entries.to_vec(),
            partitions,
        })
    }

    pub fn partition(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    /// Sectors the entry array occupies.
    pub fn entry_sectors(&self) -> u64 {
        (self.header.entries_len() as u64).div_ceil(self.sector_size)
    }

    /// The table for a disk of `new_sectors` sectors, with partition `number`
    /// extended to the new last usable sector. The partition must be the last
    /// one by position; the disk may only grow.
    pub fn grown(&self, new_sectors: u64, number: u32) -> Result<Gpt> {
        let part = self
            .partition(number)
            .with_context(|| format!("no partition number {number}"))?;
        if let Some(after) = self.partitions.iter().find(|p| p.first_lba > part.last_lba) {
            bail!(
                "partition {} ({:?}) follows the root partition {} on disk, so the root \
                 partition cannot grow into new space at the end",
                after.number,
                after.name,
                number
            );
        }
        let backup_lba = new_sectors - 1;
        let backup_entries_lba = backup_lba - self.entry_sectors();
        let last_usable = backup_entries_lba - 1;
        ensure!(
            last_usable >= self.header.last_usable,
            "the disk would shrink (last usable sector {last_usable} < {})",
            self.header.last_usable
        );
        let mut entries = self.entries.clone();
        let off = (number as usize - 1) * self.header.entry_size as usize;
        entries[off + 40..off + 48].copy_from_slice(&last_usable.to_le_bytes());
        let mut header = self.header.clone();
        header.alternate_lba = backup_lba;
        header.last_usable = last_usable;
        header.entries_crc = crc32(&entries);
        Gpt::parse(
            self.sector_size,
            &header.to_sector(self.sector_size as usize),
            &entries,
        )
    }

    /// The primary header sector.
    pub fn primary_sector(&self) -> Vec<u8> {
        self.header.to_sector(self.sector_size as usize)
    }

    /// The backup header sector (at `alternate_lba`, pointing at its own
    /// entry array just before it).
    pub fn backup_sector(&self) -> Vec<u8> {
        let mut h = self.header.clone();
        h.my_lba = self.header.alternate_lba;
        h.alternate_lba = self.header.my_lba;
        h.entries_lba = self.backup_entries_lba();
        h.to_sector(self.sector_size as usize)
    }

    pub fn backup_entries_lba(&self) -> u64 {
        self.header.alternate_lba - self.entry_sectors()
    }
}

/// Reads and verifies the primary GPT of a raw disk image. Detects 512- and
/// 4096-byte logical sectors by where the header signature is.
pub fn read(file: &File) -> Result<Gpt> {
    let mut buf = vec![0u8; 8192];
    let n = file
        .read_at(&mut buf, 0)
        .context("reading the partition table")?;
    buf.truncate(n);
    let sector_size = [512u64, 4096]
        .into_iter()
        .find(|&ss| buf.len() >= 2 * ss as usize && &buf[ss as usize..ss as usize + 8] == SIGNATURE)
        .context("no GPT partition table (no \"EFI PART\" header at LBA 1)")?;
    let hs = &buf[sector_size as usize..2 * sector_size as usize];
    let header = Header::parse(hs)?;
    let mut entries = vec![0u8; header.entries_len()];
    file.read_exact_at(&mut entries, header.entries_lba * sector_size)
        .context("reading the GPT partition entries")?;
    Gpt::parse(sector_size, hs, &entries)
}

/// Writes the primary half of table `new` (protective MBR size, entry array,
/// header) into `head`, a file holding the disk's first sectors.
pub fn write_primary(head: &File, new: &Gpt) -> Result<()> {
    let ss = new.sector_size;
    head.write_all_at(&new.entries, new.header.entries_lba * ss)
        .context("writing the primary GPT entries")?;
    head.write_all_at(&new.primary_sector(), ss)
        .context("writing the primary GPT header")?;

    // Protective MBR: the 0xEE entry covers the whole disk (capped at 2^32-1).
    let mut mbr = [0u8; 512];
    head.read_exact_at(&mut mbr, 0)
        .context("reading the protective MBR")?;
    if mbr[510..512] == [0x55, 0xAA] {
        for i in 0..4 {
            let e = 446 + 16 * i;
            if mbr[e + 4] == 0xEE && le32(&mbr, e + 8) == 1 {
                let size = new.header.alternate_lba.min(u64::from(u32::MAX)) as u32;
                mbr[e + 12..e + 16].copy_from_slice(&size.to_le_bytes());
            }
        }
        head.write_all_at(&mbr, 0)
            .context("writing the protective MBR")?;
    }
    Ok(())
}

/// The disk's last sectors under table `new`: the backup entry array followed
/// by the backup header.
pub fn backup_tail(new: &Gpt) -> Vec<u8> {
    let ss = new.sector_size as usize;
    let mut tail = vec![0u8; (new.entry_sectors() as usize + 1) * ss];
    tail[..new.entries.len()].copy_from_slice(&new.entries);
    let at = tail.len() - ss;
    tail[at..].copy_from_slice(&new.backup_sector());
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    fn sample() -> (Vec<u8>, Vec<u8>) {
        // 128 entries of 128 bytes; p1 after p14 and p15 by position.
        let mut entries = vec![0u8; 128 * 128];
        let mut put = |n: usize, first: u64, last: u64, name: &str| {
            let e = &mut entries[(n - 1) * 128..n * 128];
            e[0] = n as u8; // any non-zero type GUID
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (k, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * k..58 + 2 * k].copy_from_slice(&u.to_le_bytes());
            }
        };
        put(14, 2048, 10239, "");
        put(15, 10240, 26623, "UEFI");
        put(1, 26624, 131038, "cloudimg-rootfs");
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&131071u64.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&131038u64.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        (h, entries)
    }

    #[test]
    fn parses_and_grows() {
        let (h, e) = sample();
        let gpt = Gpt::parse(512, &h, &e).unwrap();
        assert_eq!(gpt.partitions.len(), 3);
        let root = gpt
            .partitions
            .iter()
            .find(|p| p.name == "cloudimg-rootfs")
            .unwrap();
        assert_eq!(root.number, 1);
        let grown = gpt.grown(262144, 1).unwrap();
        assert_eq!(grown.header.alternate_lba, 262143);
        assert_eq!(grown.header.last_usable, 262143 - 32 - 1);
        assert_eq!(grown.partition(1).unwrap().last_lba, 262110);
        assert_eq!(grown.partition(15).unwrap(), gpt.partition(15).unwrap());
        // Both headers verify.
        Header::parse(&grown.primary_sector()).unwrap();
        let tail = backup_tail(&grown);
        assert_eq!(tail.len(), 33 * 512);
        assert_eq!(&tail[..grown.entries.len()], &grown.entries[..]);
        let b = Header::parse(&tail[32 * 512..]).unwrap();
        assert_eq!(
            (b.my_lba, b.alternate_lba, b.entries_lba),
            (262143, 1, 262111)
        );
    }

    #[test]
    fn rejects_bad_crc_and_following_partition() {
        let (mut h, e) = sample();
        let gpt = Gpt::parse(512, &h, &e).unwrap();
        let err = gpt.grown(262144, 15).unwrap_err().to_string();
        assert!(err.contains("follows"), "{err}");
        h[40] ^= 1;
        let err = Gpt::parse(512, &h, &e).unwrap_err().to_string();
        assert!(err.contains("CRC"), "{err}");
        let (h, mut e) = sample();
        e[0] ^= 0xff;
        let err = Gpt::parse(512, &h, &e).unwrap_err().to_string();
        assert!(err.contains("entry array CRC"), "{err}");
    }
}
