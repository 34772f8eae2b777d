//! The tar format at the level the LXC bake needs: reading a base archive as raw
//! header blocks (so base entries are copied byte for byte, with whatever PAX,
//! GNU long-name or sparse extensions they carry), and encoding headers for
//! payload entries (ustar, plus a PAX extended header where a field overflows).

use std::io::{self, Read, Write};

use anyhow::{bail, Context, Result};

pub const BLOCK: usize = 512;
/// GNU tar's default record size (blocking factor 20); archives end on a record.
pub const RECORD: u64 = 10240;

/// One logical base entry: its raw header blocks and what they mean.
#[derive(Debug)]
pub struct RawEntry {
    /// Every block before the entry's data: extension headers with their data
    /// (PAX `x`, GNU `L`/`K`), the main header, GNU sparse extension blocks.
    pub raw: Vec<u8>,
    /// Effective path (PAX `path` > GNU long name > ustar prefix/name).
    pub path: Vec<u8>,
    /// Effective link target (PAX `linkpath` > GNU long link > linkname).
    pub link: Vec<u8>,
    pub typeflag: u8,
    /// Bytes of data after `raw` (padded to a block in the stream).
    pub data_len: u64,
}

/// Reads a tar stream as [`RawEntry`]s; the caller must consume each entry's
/// data with [`RawReader::copy_data`] or [`RawReader::skip_data`].
pub struct RawReader<R> {
    r: R,
    buf: Vec<u8>,
    /// Decompressed bytes consumed so far.
    pub pos: u64,
}

impl<R: Read> RawReader<R> {
    pub fn new(r: R) -> Self {
        RawReader {
            r,
            buf: vec![0; 256 << 10],
            pos: 0,
        }
    }

    fn read_block(&mut self, what: &str) -> Result<[u8; BLOCK]> {
        let mut b = [0u8; BLOCK];
        self.r.read_exact(&mut b).with_context(|| {
            format!(
                "unexpected end of archive reading {what} at byte {}",
                self.pos
            )
        })?;
        self.pos += BLOCK as u64;
        Ok(b)
    }

    fn read_padded(&mut self, len: u64, what: &str) -> Result<Vec<u8>> {
        if len > 1 << 24 {
            bail!(
                "{what} of {len} bytes at byte {} is implausibly large",
                self.pos
            );
        }
        let padded = pad(len);
        let mut v = vec![0u8; padded as usize];
        self.r.read_exact(&mut v).with_context(|| {
            format!(
                "unexpected end of archive reading {what} at byte {}",
                self.pos
            )
        })?;
        self.pos += padded;
        Ok(v)
    }

    /// The next entry, or `None` at the end-of-archive marker.
    pub fn next_entry(&mut self) -> Result<Option<RawEntry>> {
        let mut raw = Vec::new();
        let mut pax_path = None;
        let mut pax_link = None;
        let mut pax_size = None;
        let mut gnu_path = None;
        let mut gnu_link = None;
        loop {
            let at = self.pos;
            let block = self.read_block("a header")?;
            if block.iter().all(|&b| b == 0) {
                if !raw.is_empty() {
                    bail!("archive ends right after an extension header at byte {at}");
                }
                return Ok(None);
            }
            check_checksum(&block).with_context(|| format!("header at byte {at}"))?;
            let typeflag = block[156];
            let size = parse_num(&block[124..136])
                .with_context(|| format!("size of header at byte {at}"))?;
            match typeflag {
                b'x' | b'L' | b'K' => {
                    raw.extend_from_slice(&block);
                    let data = self.read_padded(size, "an extension header")?;
                    let body = &data[..size as usize];
                    match typeflag {
                        b'x' => {
                            for (k, v) in parse_pax(body)
                                .with_context(|| format!("PAX header at byte {at}"))?
                            {
                                match k {
                                    b"path" | b"GNU.sparse.name" => pax_path = Some(v.to_vec()),
                                    b"linkpath" => pax_link = Some(v.to_vec()),
                                    b"size" => {
                                        let s = std::str::from_utf8(v)
                                            .ok()
                                            .and_then(|s| s.parse().ok());
                                        pax_size =
                                            Some(s.with_context(|| {
                                                format!("PAX size at byte {at}")
                                            })?);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        b'L' => gnu_path = Some(cstr(body).to_vec()),
                        _ => gnu_link = Some(cstr(body).to_vec()),
                    }
                    raw.extend_from_slice(&data);
                }
                _ => {
                    raw.extend_from_slice(&block);
                    if typeflag == b'S' && block[482] != 0 {
                        // Old GNU sparse: more sparse-map blocks follow the header.
                        loop {
                            let ext = self.read_block("a GNU sparse map")?;
                            raw.extend_from_slice(&ext);
                            if ext[504] == 0 {
                                break;
                            }
                        }
                    }
                    let path = pax_path.or(gnu_path).unwrap_or_else(|| ustar_path(&block));
                    let link = pax_link
                        .or(gnu_link)
                        .unwrap_or_else(|| cstr(&block[157..257]).to_vec());
                    return Ok(Some(RawEntry {
                        raw,
                        path,
                        link,
                        typeflag,
                        data_len: pax_size.unwrap_or(size),
                    }));
                }
            }
        }
    }

    /// Copies `len` data bytes plus padding to `w` unchanged.
    pub fn copy_data(&mut self, len: u64, w: &mut impl Write) -> Result<()> {
        let padded = pad(len);
        let n = copy_n(&mut self.r, w, padded, &mut self.buf).context("copying entry data")?;
        self.pos += n;
        if n != padded {
            bail!(
                "unexpected end of archive inside an entry's data at byte {}",
                self.pos
            );
        }
        Ok(())
    }

    pub fn skip_data(&mut self, len: u64) -> Result<()> {
        self.copy_data(len, &mut io::sink())
    }

    /// Reads whatever follows the end-of-archive marker (record padding), so a
    /// compressed input is read to its end and its checksum verified.
    pub fn drain(&mut self) -> Result<()> {
        io::copy(&mut self.r, &mut io::sink()).context("reading the end of the archive")?;
        Ok(())
    }
}

/// Copies up to `n` bytes in `buf`-sized chunks (std's copy uses 8 KiB,
/// which costs a compressor call per 8 KiB); returns how many were copied.
pub fn copy_n(r: &mut impl Read, w: &mut impl Write, n: u64, buf: &mut [u8]) -> io::Result<u64> {
    let mut done = 0u64;
    while done < n {
        let want = (n - done).min(buf.len() as u64) as usize;
        let got = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..got])?;
        done += got as u64;
    }
    Ok(done)
}

/// Rounds up to whole blocks.
pub fn pad(len: u64) -> u64 {
    len.div_ceil(BLOCK as u64) * BLOCK as u64
}

fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

fn ustar_path(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = cstr(&block[0..100]);
    // Only POSIX ustar has a prefix field; GNU's "ustar  " keeps other data there.
    if &block[257..263] == b"ustar\0" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            return p;
        }
    }
    name.to_vec()
}

fn check_checksum(block: &[u8; BLOCK]) -> Result<()> {
    let stored = parse_num(&block[148..156]).context("bad checksum field")?;
    let unsigned: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    // Some old archivers summed signed bytes.
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as i8 as i64
            }
        })
        .sum();
    if stored != unsigned && stored as i64 != signed {
        bail!("header checksum mismatch (not a tar archive, or corrupt)");
    }
    Ok(())
}

/// Parses a numeric header field: octal digits (NUL/space padded) or GNU base-256.
pub fn parse_num(f: &[u8]) -> Result<u64> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for &b in &f[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .context("base-256 number overflows")?;
        }
        return Ok(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&s).context("non-ASCII number")?;
    u64::from_str_radix(s, 8).with_context(|| format!("bad octal number {s:?}"))
}

/// PAX records `"<len> <key>=<value>\n"`.
fn parse_pax(mut body: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    while !body.is_empty() && body[0] != 0 {
        let sp = body
            .iter()
            .position(|&b| b == b' ')
            .context("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&body[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("bad PAX record length")?;
        if len <= sp + 1 || len > body.len() || body[len - 1] != b'\n' {
            bail!("bad PAX record");
        }
        let rec = &body[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("PAX record without `=`")?;
        out.push((&rec[..eq], &rec[eq + 1..]));
        body = &body[len..];
    }
    Ok(out)
}

/// Appends a PAX record to `out`.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3; // space, `=`, newline
    let mut len = base + 1;
    loop {
        let total = base + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Largest value an octal field of `width` bytes holds (digits plus NUL).
fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width - 1))) - 1
}

fn put_num(f: &mut [u8], v: u64) {
    let w = f.len();
    if v <= octal_max(w) {
        let s = format!("{v:0width$o}", width = w - 1);
        f[..w - 1].copy_from_slice(s.as_bytes());
        f[w - 1] = 0;
    } else {
        // GNU base-256; readers that know PAX use the record instead.
        f.fill(0);
        let bytes = v.to_be_bytes();
        f[w - 8..].copy_from_slice(&bytes);
        f[0] |= 0x80;
    }
}

fn put_str(f: &mut [u8], s: &[u8]) {
    let n = s.len().min(f.len());
    f[..n].copy_from_slice(&s[..n]);
}

/// Longest prefix of `s` of at most `max` bytes ending on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut n = max;
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// What a new header describes.
pub struct NewEntry<'a> {
    pub name: &'a str,
    pub typeflag: u8,
    pub link: &'a str,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

fn ustar_block(e: &NewEntry, name: &str, link: &str) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put_str(&mut b[0..100], truncate(name, 100).as_bytes());
    put_num(&mut b[100..108], e.mode as u64);
    put_num(&mut b[108..116], e.uid as u64);
    put_num(&mut b[116..124], e.gid as u64);
    put_num(&mut b[124..136], e.size);
    put_num(&mut b[136..148], e.mtime);
    b[156] = e.typeflag;
    put_str(&mut b[157..257], truncate(link, 100).as_bytes());
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if e.uid == 0 {
        put_str(&mut b[265..297], b"root");
    }
    if e.gid == 0 {
        put_str(&mut b[297..329], b"root");
    }
    put_num(&mut b[329..337], 0);
    put_num(&mut b[337..345], 0);
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&c| c as u64).sum();
    let s = format!("{sum:06o}");
    b[148..154].copy_from_slice(s.as_bytes());
    b[154] = 0;
    b[155] = b' ';
    b
}

/// Encodes the header blocks of a new entry: a PAX extended header first when
/// a name, link or number does not fit ustar, then the ustar header. The
/// extended header is named `<dir>/PaxHeaders/<base>` like GNU tar's and
/// mmdebstrap's deterministic setting (no process id in it).
pub fn encode_header(e: &NewEntry) -> Vec<u8> {
    let mut pax = Vec::new();
    if e.name.len() > 100 {
        pax_record(&mut pax, "path", e.name.as_bytes());
    }
    if e.link.len() > 100 {
        pax_record(&mut pax, "linkpath", e.link.as_bytes());
    }
    if e.size > octal_max(12) {
        pax_record(&mut pax, "size", e.size.to_string().as_bytes());
    }
    if e.uid as u64 > octal_max(8) {
        pax_record(&mut pax, "uid", e.uid.to_string().as_bytes());
    }
    if e.gid as u64 > octal_max(8) {
        pax_record(&mut pax, "gid", e.gid.to_string().as_bytes());
    }
    if e.mtime > octal_max(12) {
        pax_record(&mut pax, "mtime", e.mtime.to_string().as_bytes());
    }
    let mut out = Vec::with_capacity(3 * BLOCK + pax.len());
    if !pax.is_empty() {
        let trimmed = e.name.trim_end_matches('/');
        let (dir, base) = trimmed.rsplit_once('/').unwrap_or((".", trimmed));
        let xname = format!("{dir}/PaxHeaders/{base}");
        let x = NewEntry {
            name: &xname,
            typeflag: b'x',
            link: "",
            size: pax.len() as u64,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: e.mtime,
        };
        out.extend_from_slice(&ustar_block(&x, &xname, ""));
        let padded = pad(pax.len() as u64) as usize;
        pax.resize(padded, 0);
        out.extend_from_slice(&pax);
    }
    out.extend_from_slice(&ustar_block(e, e.name, e.link));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_are_self_consistent() {
        for n in [0usize, 1, 80, 89, 90, 91, 95, 96, 97, 990, 995, 996, 997] {
            let v = "a".repeat(n);
            let mut out = Vec::new();
            pax_record(&mut out, "path", v.as_bytes());
            let parsed = parse_pax(&out).unwrap();
            assert_eq!(parsed, vec![(&b"path"[..], v.as_bytes())], "n={n}");
        }
    }

    #[test]
    fn numbers_round_trip_octal_and_base256() {
        for v in [0u64, 7, 0o7777777, 0o77777777777, 1 << 40] {
            let mut f = [0u8; 12];
            put_num(&mut f, v);
            assert_eq!(parse_num(&f).unwrap(), v);
        }
        assert_eq!(parse_num(b"  644 \0\0").unwrap(), 0o644);
    }

    #[test]
    fn encoded_header_reads_back() {
        let long = format!("./opt/{}", "x".repeat(150));
        let e = NewEntry {
            name: &long,
            typeflag: b'0',
            link: "",
            size: 3,
            mode: 0o4755,
            uid: 0,
            gid: 0,
            mtime: 1_704_067_200,
        };
        let mut bytes = encode_header(&e);
        bytes.extend_from_slice(&[b'a'; BLOCK]);
        bytes.extend_from_slice(&[0; 2 * BLOCK]);
        let mut r = RawReader::new(&bytes[..]);
        let got = r.next_entry().unwrap().unwrap();
        assert_eq!(got.path, long.as_bytes());
        assert_eq!(got.typeflag, b'0');
        assert_eq!(got.data_len, 3);
        assert_eq!(&got.raw[..13], b"./opt/PaxHead");
        r.skip_data(3).unwrap();
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn corrupt_header_is_rejected() {
        let e = NewEntry {
            name: "./a",
            typeflag: b'0',
            link: "",
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut bytes = encode_header(&e);
        bytes[0] = b'b';
        let err = RawReader::new(&bytes[..]).next_entry().unwrap_err();
        assert!(format!("{err:#}").contains("checksum"), "{err:#}");
    }
}
