//! Streaming hashers for the digest algorithms upstreams publish, and
//! [`HashingReader`], a `Read` adapter that hashes what passes through it
//! (downloads here, uploads in deploy, cached blobs read by bake).

use std::io::Read;

use sha2::Digest as _;

use crate::artifact::{Digest, DigestAlgo};

/// Hashes bytes as they stream by, for whichever algorithm the expected digest uses.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: DigestAlgo) -> Self {
        match algo {
            DigestAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            DigestAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algo(&self) -> DigestAlgo {
        match self {
            Hasher::Sha256(_) => DigestAlgo::Sha256,
            Hasher::Sha512(_) => DigestAlgo::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algo, hex) = match self {
            Hasher::Sha256(h) => (DigestAlgo::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (DigestAlgo::Sha512, hex::encode(h.finalize())),
        };
        Digest::new(algo, &hex).expect("a hasher's output has the algorithm's length")
    }
}

/// A `Read` adapter that hashes every byte read through it. It has no other
/// effect on the stream: stack it with decompression, progress or a file copy.
///
/// ```
/// use std::io::Read;
/// use imgbuild::artifact::DigestAlgo;
/// use imgbuild::fetch::hash::HashingReader;
/// let mut r = HashingReader::new(&b"abc"[..], DigestAlgo::Sha256);
/// std::io::copy(&mut r, &mut std::io::sink()).unwrap();
/// assert_eq!(r.len(), 3);
/// assert!(r.digest().hex().starts_with("ba7816bf"));
/// ```
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algo: DigestAlgo) -> Self {
        Self::with_hasher(inner, Hasher::new(algo), 0)
    }

    /// Continues a hash that already covers `len` earlier bytes (a resumed download).
    pub fn with_hasher(inner: R, hasher: Hasher, len: u64) -> Self {
        HashingReader { inner, hasher, len }
    }

    /// Bytes hashed so far (including the `len` given to [`Self::with_hasher`]).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of the bytes read so far; reading may go on.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The reader, the hasher and the byte count, to continue later.
    pub fn into_parts(self) -> (R, Hasher, u64) {
        (self.inner, self.hasher, self.len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Hashes everything `reader` yields.
pub fn hash_reader(algo: DigestAlgo, mut reader: impl Read) -> std::io::Result<(Digest, u64)> {
    let mut r = HashingReader::new(&mut reader, algo);
    let mut buf = vec![0u8; super::BUF_SIZE];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((r.digest(), r.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let (d, n) = hash_reader(DigestAlgo::Sha256, &b"abc"[..]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (d, _) = hash_reader(DigestAlgo::Sha512, &b""[..]).unwrap();
        assert!(d.hex().starts_with("cf83e1357eefb8bdf1542850d66d8007"));
    }

    #[test]
    fn hashing_reader_continues_a_prefix() {
        let mut first = HashingReader::new(&b"ab"[..], DigestAlgo::Sha256);
        std::io::copy(&mut first, &mut std::io::sink()).unwrap();
        let (_, hasher, len) = first.into_parts();
        let mut rest = HashingReader::with_hasher(&b"c"[..], hasher, len);
        let mut out = Vec::new();
        rest.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"c");
        assert_eq!(rest.len(), 3);
        assert_eq!(
            rest.digest(),
            hash_reader(DigestAlgo::Sha256, &b"abc"[..]).unwrap().0
        );
    }
}
