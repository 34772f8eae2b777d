//! Parsing upstream checksum files. Pure functions over the file's text; the
//! fetcher and `imgbuild lock` acquire the text.
//!
//! Formats, detected per line:
//! - GNU `sha256sum`/`sha512sum`: `<hex>  <name>` or `<hex> *<name>` (binary mode),
//!   one or many lines; the entry for our file name is picked.
//! - BSD/`--tag`: `SHA512 (<name>) = <hex>`.
//! - `gpg --print-md SHA512` (older Apache releases, e.g. Spark):
//!   `<name>: 8883C67E 0A138069 ...` in upper-case groups wrapped over several
//!   indented lines (or starting on the line after `<name>:` when the name is long).
//! - A file holding only the hex digest.

use anyhow::{bail, Result};

use crate::artifact::{Digest, DigestAlgo};

/// One digest found in a checksum file; `name` is `None` for a bare digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Option<String>,
    pub digest: Digest,
}

/// Finds the `algo` digest of `file_name` in the text of a checksum file.
pub fn find_digest(text: &str, file_name: &str, algo: DigestAlgo) -> Result<Digest> {
    let entries = parse(text, algo);
    if entries.is_empty() {
        bail!(
            "no {} digest in the checksum file (expected `<hex>  <name>` lines, \
             `<name>: XXXXXXXX XXXXXXXX ...` gpg blocks or a bare hex digest)",
            algo.name()
        );
    }
    let matching: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.name.as_deref().is_some_and(|n| base_name(n) == file_name))
        .collect();
    let chosen: Vec<&Entry> = if matching.is_empty() {
        entries.iter().filter(|e| e.name.is_none()).collect()
    } else {
        matching
    };
    match chosen.as_slice() {
        [] => {
            let names: Vec<&str> = entries.iter().filter_map(|e| e.name.as_deref()).collect();
            bail!(
                "no entry for `{file_name}` in the checksum file (it lists: {})",
                names.join(", ")
            )
        }
        [first, rest @ ..] => {
            if let Some(other) = rest.iter().find(|e| e.digest != first.digest) {
                bail!(
                    "the checksum file lists `{file_name}` twice with different digests: {} and {}",
                    first.digest,
                    other.digest
                );
            }
            Ok(first.digest.clone())
        }
    }
}

/// Every `algo` digest the text holds, in order.
pub fn parse(text: &str, algo: DigestAlgo) -> Vec<Entry> {
    let mut entries = Vec::new();
    // An open gpg block: its name and the hex gathered so far.
    let mut block: Option<(String, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some((name, hex)) = &mut block {
            if !trimmed.is_empty() && hex.len() < algo.hex_len() && is_hex_groups(trimmed) {
                hex.extend(trimmed.split_whitespace());
                if hex.len() >= algo.hex_len() {
                    push(&mut entries, algo, Some(std::mem::take(name)), hex);
                    block = None;
                }
                continue;
            }
            block = None;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(entry) = sum_line(trimmed, algo).or_else(|| bsd_line(trimmed, algo)) {
            entries.push(entry);
            continue;
        }
        if trimmed.len() == algo.hex_len() && is_hex(trimmed) {
            push(&mut entries, algo, None, trimmed);
            continue;
        }
        // gpg --print-md: `<name>: GROUPS...`; hex never contains ':', so split at the last one.
        if let Some((name, rest)) = trimmed.rsplit_once(':') {
            let rest = rest.trim();
            if !name.is_empty() && (rest.is_empty() || is_hex_groups(rest)) {
                let hex: String = rest.split_whitespace().collect();
                if hex.len() >= algo.hex_len() {
                    push(&mut entries, algo, Some(name.trim().to_string()), &hex);
                } else {
                    block = Some((name.trim().to_string(), hex));
                }
            }
        }
    }
    entries
}

fn push(entries: &mut Vec<Entry>, algo: DigestAlgo, name: Option<String>, hex: &str) {
    if let Ok(digest) = Digest::new(algo, hex) {
        entries.push(Entry { name, digest });
    }
}

/// `<hex>  <name>` or `<hex> *<name>`.
fn sum_line(line: &str, algo: DigestAlgo) -> Option<Entry> {
    let (hex, rest) = line.split_once(char::is_whitespace)?;
    if hex.len() != algo.hex_len() || !is_hex(hex) {
        return None;
    }
    let name = rest.trim_start();
    let name = name.strip_prefix('*').unwrap_or(name).trim_end();
    if name.is_empty() {
        return None;
    }
    Some(Entry {
        name: Some(name.to_string()),
        digest: Digest::new(algo, hex).ok()?,
    })
}

/// `SHA256 (<name>) = <hex>`.
fn bsd_line(line: &str, algo: DigestAlgo) -> Option<Entry> {
    let rest = line
        .strip_prefix(&algo.name().to_ascii_uppercase())?
        .trim_start();
    let rest = rest.strip_prefix('(')?;
    let (name, hex) = rest.rsplit_once(") = ")?;
    let hex = hex.trim();
    if hex.len() != algo.hex_len() {
        return None;
    }
    Some(Entry {
        name: Some(name.to_string()),
        digest: Digest::new(algo, hex).ok()?,
    })
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_hex_groups(s: &str) -> bool {
    s.split_whitespace().all(is_hex)
}

/// Checksum files sometimes name files with a directory or `./` in front.
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPARK: &str = "spark-3.5.9-bin-hadoop3.tgz";

    fn hex_of(byte: &str, algo: DigestAlgo) -> String {
        byte.repeat(algo.hex_len() / byte.len())
    }

    #[test]
    fn gnu_sum_lines_pick_our_file() {
        // Ubuntu's SHA256SUMS: several binary-mode lines.
        let a = hex_of("a1", DigestAlgo::Sha256);
        let b = hex_of("b2", DigestAlgo::Sha256);
        let text = format!(
            "{a} *ubuntu-22.04-server-cloudimg-amd64-disk-kvm.img\n\
             {b} *ubuntu-22.04-server-cloudimg-amd64.img\n\
             {a} *ubuntu-22.04-server-cloudimg-amd64.tar.gz\n"
        );
        let d = find_digest(
            &text,
            "ubuntu-22.04-server-cloudimg-amd64.img",
            DigestAlgo::Sha256,
        )
        .unwrap();
        assert_eq!(d.hex(), b);
        // MinIO's .sha256sum: text mode, one line.
        let text = format!("{b}  minio.RELEASE.2025-10-15T17-29-55Z\n");
        let d = find_digest(
            &text,
            "minio.RELEASE.2025-10-15T17-29-55Z",
            DigestAlgo::Sha256,
        )
        .unwrap();
        assert_eq!(d.hex(), b);
        // Upper case hex and a ./ prefix.
        let text = format!("{}  ./{SPARK}\n", b.to_uppercase());
        assert_eq!(
            find_digest(&text, SPARK, DigestAlgo::Sha256).unwrap().hex(),
            b
        );
    }

    #[test]
    fn sha512sum_line() {
        // Spark 3.5.x publishes `sha512sum` output (the digest here is a sample).
        let text = "8883c67e0a138069e597f3e7d4edbbd5c3a565d50b28644aad02856a1ec1da7cb92b8f80454ca427118f69459ea326eaa073cf7b1a860c3b796f4b07c2101319  spark-3.5.1-bin-hadoop3.tgz\n";
        let d = find_digest(text, "spark-3.5.1-bin-hadoop3.tgz", DigestAlgo::Sha512).unwrap();
        assert!(d.hex().starts_with("8883c67e0a138069"));
    }

    #[test]
    fn gpg_print_md_indented_groups() {
        // The form scripts/mirror writes and archive.apache.org serves for older releases.
        let text = "spark-3.5.9-bin-hadoop3.tgz: 622DE30F D1CD688C 74459754 460C8978 728C0E0E\n                             1FF5FE9A 10E09722 82330834 334B3013 9CA6D2C1\n                             A7E183AA DF7078DF 6FB28C3D 799DDB2E FE40F229\n                             08D9E96C\n";
        let d = find_digest(text, SPARK, DigestAlgo::Sha512).unwrap();
        assert_eq!(
            d.hex(),
            "622de30fd1cd688c74459754460c8978728c0e0e1ff5fe9a10e0972282330834334b30139ca6d2c1a7e183aadf7078df6fb28c3d799ddb2efe40f22908d9e96c"
        );
    }

    #[test]
    fn gpg_print_md_name_on_its_own_line() {
        // gpg puts the groups on the next line when the name is long.
        let name = "a-rather-long-artifact-name-for-gpg-wrapping-1.0.0-bin.tgz";
        let text = format!(
            "{name}:\n8883C67E 0A138069 E597F3E7 D4EDBBD5 C3A565D5 0B28644A AD02856A 1EC1DA7C\nB92B8F80 454CA427 118F6945 9EA326EA A073CF7B 1A860C3B 796F4B07 C2101319\n"
        );
        let d = find_digest(&text, name, DigestAlgo::Sha512).unwrap();
        assert!(d.hex().ends_with("c2101319"));
        assert_eq!(d.hex().len(), 128);
    }

    #[test]
    fn bare_hex_and_bsd_tag() {
        let h = hex_of("c3", DigestAlgo::Sha256);
        assert_eq!(
            find_digest(&format!("{h}\n"), "whatever.tar.gz", DigestAlgo::Sha256)
                .unwrap()
                .hex(),
            h
        );
        let text = format!("SHA256 (OpenJDK17U-jre.tar.gz) = {h}\n");
        assert_eq!(
            find_digest(&text, "OpenJDK17U-jre.tar.gz", DigestAlgo::Sha256)
                .unwrap()
                .hex(),
            h
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let h = hex_of("d4", DigestAlgo::Sha256);
        let err = find_digest(&format!("{h}  other.tgz\n"), SPARK, DigestAlgo::Sha256).unwrap_err();
        assert!(
            err.to_string()
                .contains("no entry for `spark-3.5.9-bin-hadoop3.tgz`"),
            "{err}"
        );
        assert!(err.to_string().contains("other.tgz"), "{err}");
        let err = find_digest("<html>not found</html>\n", SPARK, DigestAlgo::Sha512).unwrap_err();
        assert!(err.to_string().contains("no sha512 digest"), "{err}");
        // A sha256 line does not satisfy a sha512 lookup.
        let err = find_digest(&format!("{h}  {SPARK}\n"), SPARK, DigestAlgo::Sha512).unwrap_err();
        assert!(err.to_string().contains("no sha512 digest"), "{err}");
        let e = hex_of("e5", DigestAlgo::Sha256);
        let err = find_digest(
            &format!("{h}  {SPARK}\n{e}  {SPARK}\n"),
            SPARK,
            DigestAlgo::Sha256,
        )
        .unwrap_err();
        assert!(err.to_string().contains("different digests"), "{err}");
    }
}
