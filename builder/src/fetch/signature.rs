//! Checking upstream signatures with keys pinned in the repository, in pure
//! Rust (no gpg binary at run time): OpenPGP detached signatures (Ubuntu's
//! `SHA256SUMS.gpg`, Apache's `.asc` against a project's `KEYS` file) with the
//! `pgp` crate, minisign signatures (MinIO's `.minisig`) with
//! `minisign-verify`. The data is streamed through the verifier.
//!
//! A signature file may come from a mirror: it cannot be forged without the
//! signer's secret key, which is the point of checking it.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use pgp::composed::{Deserializable, SignedPublicKey, StandaloneSignature};
use pgp::types::PublicKeyTrait;

use crate::artifact::SignatureKind;

/// Largest artifact checked against a legacy (whole-data) minisign signature.
const LEGACY_MAX: u64 = 1 << 30;

/// Verifies `signature` (the signature file's bytes) over everything `data`
/// yields, with the public key(s) in `key_file`. `what` names the signed thing
/// in messages.
pub fn verify(
    kind: SignatureKind,
    key_file: &Path,
    signature: &[u8],
    data: impl Read,
    what: &str,
) -> Result<()> {
    let key_text = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading key file {}", key_file.display()))?;
    match kind {
        SignatureKind::OpenPgp => verify_pgp(&key_text, key_file, signature, data, what),
        SignatureKind::Minisign => verify_minisign(&key_text, key_file, signature, data, what),
    }
}

/// Every public key in an armored key file; Apache's `KEYS` holds many, with
/// `gpg --list-sigs` text between the blocks.
fn pgp_keys(text: &str, key_file: &Path) -> Result<Vec<SignedPublicKey>> {
    const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            bail!(
                "key file {}: a public key block has no end line",
                key_file.display()
            );
        };
        let block = &rest[start..start + len + END.len()];
        match SignedPublicKey::from_armor_single(block.as_bytes()) {
            Ok((key, _)) => keys.push(key),
            // One unreadable key (an old v3 key in a long KEYS file) does not
            // spoil the others.
            Err(e) => tracing::debug!("{}: skipping a key: {e}", key_file.display()),
        }
        rest = &rest[start + len + END.len()..];
    }
    if keys.is_empty() {
        bail!(
            "key file {} holds no usable OpenPGP public key (expected `{BEGIN}` blocks)",
            key_file.display()
        );
    }
    Ok(keys)
}

fn verify_pgp(
    key_text: &str,
    key_file: &Path,
    signature: &[u8],
    data: impl Read,
    what: &str,
) -> Result<()> {
    let keys = pgp_keys(key_text, key_file)?;
    let sig = if signature.trim_ascii_start().starts_with(b"-----BEGIN") {
        StandaloneSignature::from_armor_single(signature).map(|(s, _)| s)
    } else {
        StandaloneSignature::from_bytes(signature)
    }
    .map_err(|e| anyhow!("the signature of {what} is not an OpenPGP signature: {e}"))?
    .signature;
    let issuers: Vec<String> = sig.issuer().iter().map(|k| format!("{k:?}")).collect();
    let fingerprints = sig.issuer_fingerprint();
    // The signing key: the primary key or a signing subkey, named by the
    // signature's issuer key id or fingerprint.
    let matches = |k: &dyn PublicKeyTrait| {
        sig.issuer().iter().any(|id| **id == k.key_id())
            || fingerprints.iter().any(|fp| **fp == k.fingerprint())
    };
    for key in &keys {
        if matches(&key.primary_key) {
            return sig.verify(&key.primary_key, data).map_err(|e| {
                anyhow!(
                    "BAD signature on {what} (key file {}): {e}",
                    key_file.display()
                )
            });
        }
        for sub in &key.public_subkeys {
            if matches(&sub.key) {
                return sig.verify(&sub.key, data).map_err(|e| {
                    anyhow!(
                        "BAD signature on {what} (key file {}): {e}",
                        key_file.display()
                    )
                });
            }
        }
    }
    bail!(
        "the signature on {what} was made by a key that is not in {} (issuer {})",
        key_file.display(),
        if issuers.is_empty() {
            "unknown".to_string()
        } else {
            issuers.join(", ")
        }
    )
}

fn verify_minisign(
    key_text: &str,
    key_file: &Path,
    signature: &[u8],
    mut data: impl Read,
    what: &str,
) -> Result<()> {
    // A key file is `untrusted comment: ...` plus the base64 key, or the key alone.
    let key_line = key_text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or_else(|| anyhow!("key file {} holds no minisign key", key_file.display()))?;
    let key = minisign_verify::PublicKey::from_base64(key_line).map_err(|e| {
        anyhow!(
            "key file {} is not a minisign public key: {e}",
            key_file.display()
        )
    })?;
    let text = std::str::from_utf8(signature)
        .map_err(|_| anyhow!("the signature of {what} is not a minisign signature (not text)"))?;
    let sig = minisign_verify::Signature::decode(text)
        .map_err(|e| anyhow!("the signature of {what} is not a minisign signature: {e}"))?;
    let mut v = match key.verify_stream(&sig) {
        Ok(v) => v,
        // Signatures from minisign before 0.8 sign the data itself, not its hash:
        // the data must be held whole (bounded).
        Err(minisign_verify::Error::UnsupportedLegacyMode) => {
            let mut bytes = Vec::new();
            data.take(LEGACY_MAX + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading {what}"))?;
            if bytes.len() as u64 > LEGACY_MAX {
                bail!("{what}: a legacy (not prehashed) minisign signature over more than 1 GiB");
            }
            return key.verify(&bytes, &sig, true).map_err(|e| {
                anyhow!(
                    "BAD signature on {what} (key file {}): {e}",
                    key_file.display()
                )
            });
        }
        Err(e) => {
            return Err(anyhow!(
                "the signature on {what} was not made with the key in {}: {e}",
                key_file.display()
            ))
        }
    };
    let mut buf = vec![0u8; super::BUF_SIZE];
    loop {
        let n = data
            .read(&mut buf)
            .with_context(|| format!("reading {what}"))?;
        if n == 0 {
            break;
        }
        v.update(&buf[..n]);
    }
    v.finalize().map_err(|e| {
        anyhow!(
            "BAD signature on {what} (key file {}): {e}",
            key_file.display()
        )
    })
}
