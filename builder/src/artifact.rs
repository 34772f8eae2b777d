//! What an artifact is, independent of where it came from: its upstream URL,
//! the file name a mirror serves it under, and the digest it must have.
//! Recipes produce `ArtifactSpec`s; the lock file pins them; the fetcher consumes them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use url::Url;

/// Digest algorithms upstreams publish for our artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgo {
    Sha256,
    Sha512,
}

impl DigestAlgo {
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgo::Sha256 => "sha256",
            DigestAlgo::Sha512 => "sha512",
        }
    }

    /// Length of the digest in lowercase hex characters.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgo::Sha256 => 64,
            DigestAlgo::Sha512 => 128,
        }
    }
}

/// A content digest, written `sha256:<hex>` or `sha512:<hex>` (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    pub algo: DigestAlgo,
    hex: String,
}

impl Digest {
    /// Builds a digest from hex, accepting upper case; rejects wrong lengths.
    pub fn new(algo: DigestAlgo, hex: &str) -> Result<Self, String> {
        let hex = hex.to_ascii_lowercase();
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "expected {} lowercase hex digits for {}, got {:?}",
                algo.hex_len(),
                algo.name(),
                hex
            ));
        }
        Ok(Digest { algo, hex })
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("expected `sha256:<hex>` or `sha512:<hex>`, got {s:?}"))?;
        let algo = match algo {
            "sha256" => DigestAlgo::Sha256,
            "sha512" => DigestAlgo::Sha512,
            other => {
                return Err(format!(
                    "unknown digest algorithm {other:?}: expected sha256 or sha512"
                ))
            }
        };
        Digest::new(algo, hex)
    }
}

/// Where in an input file something was written, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An upstream checksum file that `imgbuild lock` reads to learn an artifact's digest.
/// The format (sha256sum/sha512sum lines, or Spark's old `gpg --print-md` blocks)
/// is detected from the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumSource {
    pub url: Url,
    pub algo: DigestAlgo,
}

/// The signature format, from the signature file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    /// OpenPGP detached signature (`.asc`, `.gpg`, `.sig`; armored or binary),
    /// checked against a key file of one or more public keys (Apache's `KEYS`).
    OpenPgp,
    /// minisign (`.minisig`), checked against a minisign public key file.
    Minisign,
}

/// What a signature is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// The artifact's own bytes (Apache `.asc`, MinIO `.minisig`).
    Artifact,
    /// The checksum file the digest is read from (Ubuntu `SHA256SUMS.gpg`).
    Checksums,
}

/// An upstream signature and the key (pinned in the repository) it must verify with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSource {
    pub url: Url,
    pub kind: SignatureKind,
    /// The public key file, resolved against the recipe's directory.
    pub key: PathBuf,
    pub signs: Signed,
}

/// One artifact a recipe needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// The recipe's name for it, e.g. `base`, `spark`, `java`, `minio`.
    pub name: String,
    pub url: Url,
    /// Pinned in the recipe itself, or `None` when only the lock file knows it.
    pub digest: Option<Digest>,
    /// Where `imgbuild lock` learns the digest.
    pub checksums: Option<ChecksumSource>,
    /// The upstream signature that vouches for the artifact or its checksum file.
    pub signature: Option<SignatureSource>,
    /// Where the recipe declared this artifact.
    pub origin: Origin,
}

impl ArtifactSpec {
    /// The name a mirror serves this artifact under: the URL's last path segment,
    /// percent-decoded (`jdk-17.0.17%2B10` becomes `jdk-17.0.17+10`).
    pub fn file_name(&self) -> String {
        file_name_of(&self.url)
    }
}

/// The last path segment of a URL, percent-decoded.
pub fn file_name_of(url: &Url) -> String {
    let seg = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    percent_decode(seg)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trip_and_errors() {
        let d: Digest = format!("sha256:{}", "AB".repeat(32)).parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{}", "ab".repeat(32)));
        assert!("sha256:abc".parse::<Digest>().unwrap_err().contains("64"));
        assert!("md5:00".parse::<Digest>().unwrap_err().contains("md5"));
        assert!("nocolon".parse::<Digest>().is_err());
    }

    #[test]
    fn file_name_is_decoded_last_segment() {
        let u = Url::parse("https://github.com/adoptium/temurin17-binaries/releases/download/jdk-17.0.17%2B10/OpenJDK17U-jre_x64_linux_hotspot_17.0.17_10.tar.gz").unwrap();
        assert_eq!(
            file_name_of(&u),
            "OpenJDK17U-jre_x64_linux_hotspot_17.0.17_10.tar.gz"
        );
        let u = Url::parse("https://x.example/a/b%2Bc").unwrap();
        assert_eq!(file_name_of(&u), "b+c");
    }
}
