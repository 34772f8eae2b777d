//! madmin's payload encryption (madmin-go `EncryptData` / `DecryptData`), as
//! the MinIO server reads admin request bodies and writes some answers:
//! `salt (32) | cipher id (1) | nonce (8) | sio-go stream`.
//!
//! Cipher ids: 0x00 argon2id (t=1, m=64 MiB, p=4, 32-byte key) with
//! AES-256-GCM, 0x01 argon2id with ChaCha20-Poly1305, 0x02 PBKDF2-HMAC-SHA256
//! (8192 rounds) with AES-256-GCM. The sio-go stream (secure-io/sio-go, `BufSize` 16 KiB):
//! fragments of 16 KiB sealed with nonce `nonce | LE32 seq` (seq from 1) and
//! associated data `flag | tag0` (flag 0x80 on the final fragment, else 0x00;
//! tag0 = the AEAD tag over nothing with nonce `nonce | LE32 0`).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;

const BUF: usize = 16 * 1024;
const TAG: usize = 16;
const HEADER: usize = 32 + 1 + 8;

/// Why a body could not be decrypted.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than the header and one tag.
    Short,
    /// A cipher id madmin does not define.
    UnknownCipher(u8),
    /// Wrong password or changed bytes (sio's `NotAuthentic`).
    NotAuthentic,
}

fn argon2id(password: &str, salt: &[u8]) -> [u8; 32] {
    use argon2::{Algorithm, Argon2, Params, Version};
    let mut key = [0u8; 32];
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(64 * 1024, 1, 4, Some(32)).expect("madmin's argon2id parameters are valid"),
    )
    .hash_password_into(password.as_bytes(), salt, &mut key)
    .expect("argon2id with a 32-byte salt");
    key
}

fn pbkdf2(password: &str, salt: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    type H = hmac::Hmac<sha2::Sha256>;
    let mac = <H as hmac::KeyInit>::new_from_slice(password.as_bytes()).expect("any key length");
    let mut m = mac.clone();
    m.update(salt);
    m.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = m.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..8192 {
        let mut m = mac.clone();
        m.update(&u);
        u = m.finalize().into_bytes().into();
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

fn nonce12(nonce: &[u8], seq: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(nonce);
    n[8..].copy_from_slice(&seq.to_le_bytes());
    n
}

fn open<A: Aead>(aead: &A, nonce: &[u8], data: &[u8]) -> Result<Vec<u8>, Error> {
    let tag0 = aead
        .encrypt(
            aes_gcm::aead::Nonce::<A>::from_slice(&nonce12(nonce, 0)),
            Payload { msg: &[], aad: &[] },
        )
        .map_err(|_| Error::NotAuthentic)?;
    let mut ad = [0u8; 1 + TAG];
    ad[1..].copy_from_slice(&tag0);
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    let mut seq = 1u32;
    loop {
        let last = rest.len() <= BUF + TAG;
        let n = rest.len().min(BUF + TAG);
        ad[0] = if last { 0x80 } else { 0x00 };
        let pt = aead
            .decrypt(
                aes_gcm::aead::Nonce::<A>::from_slice(&nonce12(nonce, seq)),
                Payload {
                    msg: &rest[..n],
                    aad: &ad,
                },
            )
            .map_err(|_| Error::NotAuthentic)?;
        out.extend_from_slice(&pt);
        rest = &rest[n..];
        if last {
            return Ok(out);
        }
        seq = seq.checked_add(1).ok_or(Error::NotAuthentic)?;
    }
}

fn seal<A: Aead>(aead: &A, nonce: &[u8], data: &[u8]) -> Vec<u8> {
    let tag0 = aead
        .encrypt(
            aes_gcm::aead::Nonce::<A>::from_slice(&nonce12(nonce, 0)),
            Payload { msg: &[], aad: &[] },
        )
        .expect("seal");
    let mut ad = [0u8; 1 + TAG];
    ad[1..].copy_from_slice(&tag0);
    let mut out = Vec::new();
    let mut rest = data;
    let mut seq = 1u32;
    while rest.len() > BUF {
        out.extend(
            aead.encrypt(
                aes_gcm::aead::Nonce::<A>::from_slice(&nonce12(nonce, seq)),
                Payload {
                    msg: &rest[..BUF],
                    aad: &ad,
                },
            )
            .expect("seal"),
        );
        rest = &rest[BUF..];
        seq += 1;
    }
    ad[0] = 0x80;
    out.extend(
        aead.encrypt(
            aes_gcm::aead::Nonce::<A>::from_slice(&nonce12(nonce, seq)),
            Payload {
                msg: rest,
                aad: &ad,
            },
        )
        .expect("seal"),
    );
    out
}

/// madmin's `DecryptData`.
pub fn decrypt_data(password: &str, data: &[u8]) -> Result<Vec<u8>, Error> {
    if data.len() < HEADER + TAG {
        return Err(Error::Short);
    }
    let (salt, id, nonce, body) = (&data[..32], data[32], &data[33..41], &data[41..]);
    match id {
        0x00 => open(
            &Aes256Gcm::new_from_slice(&argon2id(password, salt)).expect("32-byte key"),
            nonce,
            body,
        ),
        0x01 => open(
            &ChaCha20Poly1305::new_from_slice(&argon2id(password, salt)).expect("32-byte key"),
            nonce,
            body,
        ),
        0x02 => open(
            &Aes256Gcm::new_from_slice(&pbkdf2(password, salt)).expect("32-byte key"),
            nonce,
            body,
        ),
        other => Err(Error::UnknownCipher(other)),
    }
}

/// madmin's `EncryptData` as a server with AES hardware writes it (0x00).
pub fn encrypt_data(password: &str, data: &[u8]) -> Vec<u8> {
    encrypt_with(password, data, 0x00, &random::<32>(), &random::<8>())
}

/// `EncryptData` with a chosen cipher id, salt and nonce (tests).
pub fn encrypt_with(
    password: &str,
    data: &[u8],
    id: u8,
    salt: &[u8; 32],
    nonce: &[u8; 8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len() + TAG);
    out.extend_from_slice(salt);
    out.push(id);
    out.extend_from_slice(nonce);
    let body = match id {
        0x00 => seal(
            &Aes256Gcm::new_from_slice(&argon2id(password, salt)).expect("key"),
            nonce,
            data,
        ),
        0x01 => seal(
            &ChaCha20Poly1305::new_from_slice(&argon2id(password, salt)).expect("key"),
            nonce,
            data,
        ),
        _ => seal(
            &Aes256Gcm::new_from_slice(&pbkdf2(password, salt)).expect("key"),
            nonce,
            data,
        ),
    };
    out.extend(body);
    out
}

fn random<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("/dev/urandom");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// madmin-go's encrypt_test.go (decryptDataTests), written by its EncryptData.
    #[test]
    fn opens_madmin_go_ciphertexts() {
        let empty = unhex("828aa81599df0651c0461adb82283e8b89956baee9f6e719947ef9cddc849028001dc9d3ac0938f66b07bacc9751437e1985f8a9763c240e81");
        assert_eq!(decrypt_data("", &empty).unwrap(), b"");
        let zeros = unhex("b5c016e93b84b473fc8a37af94936563630c36d6df1841d23a86ee51ca161f9e00ac19116b32f643ff6a56a212b265d8c56195bb0d12ce199e13dfdc5272f80c1564da2c6fc2fa18da91d8062de02af5cdafea491c6f3cae1f");
        assert_eq!(
            decrypt_data("xPl.8/rhR\"Q_1xLt", &zeros).unwrap(),
            vec![0u8; 32]
        );
        assert_eq!(decrypt_data("wrong", &zeros), Err(Error::NotAuthentic));
    }

    #[test]
    fn every_cipher_round_trips_and_rejects_changes() {
        let data: Vec<u8> = (0..(BUF * 2 + 5)).map(|i| i as u8).collect();
        for id in [0x00, 0x01, 0x02] {
            let ct = encrypt_with("root-secret", &data, id, &[1; 32], &[2; 8]);
            assert_eq!(decrypt_data("root-secret", &ct).unwrap(), data, "id {id}");
            let mut bad = ct.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert_eq!(decrypt_data("root-secret", &bad), Err(Error::NotAuthentic));
            // Cutting whole fragments off the end is caught too.
            let cut = &ct[..HEADER + BUF + TAG];
            assert_eq!(decrypt_data("root-secret", cut), Err(Error::NotAuthentic));
        }
        let mut other = encrypt_with("x", b"y", 0x02, &[1; 32], &[2; 8]);
        other[32] = 0x07;
        assert_eq!(decrypt_data("x", &other), Err(Error::UnknownCipher(7)));
        assert_eq!(decrypt_data("x", &[0u8; 40]), Err(Error::Short));
    }
}
