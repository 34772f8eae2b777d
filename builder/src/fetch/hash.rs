//! Streaming hashers for the digest algorithms upstreams publish.

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

/// Hashes everything `reader` yields.
pub fn hash_reader(
    algo: DigestAlgo,
    mut reader: impl std::io::Read,
) -> std::io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new(algo);
    let mut buf = vec![0u8; super::BUF_SIZE];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finish(), total))
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
}
