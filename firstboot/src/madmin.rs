//! MinIO's admin API, the calls `mc admin user add`, `mc admin policy
//! create` and `mc admin policy attach` make (madmin-go), for the object
//! store's service users: SigV4-signed requests to 127.0.0.1 with the root
//! credentials, and madmin's payload encryption.
//!
//! madmin's `EncryptData` writes `salt (32) | cipher id (1) | nonce (8) |
//! sio stream`. The stream is secure-io/sio-go's: the plaintext in fragments
//! of 16 KiB, each sealed by the AEAD with the 12-byte nonce `nonce | LE32
//! counter` (counter from 1) and the associated data `flag | tag`, where flag
//! is 0x80 on the final fragment and 0x00 before it, and tag is the AEAD's
//! tag over no plaintext with nonce `nonce | LE32 0` and the caller's
//! associated data (empty here). The final fragment holds 0 to 16 KiB.
//!
//! Cipher ids: 0x00 argon2id + AES-256-GCM, 0x01 argon2id +
//! ChaCha20-Poly1305, 0x02 PBKDF2-HMAC-SHA256 (8192 rounds) + AES-256-GCM
//! (what madmin writes in FIPS mode; every MinIO server decrypts all three).
//! The agent writes 0x02: argon2id's 64 MiB would be the agent's whole
//! memory budget, and these bodies never leave the guest (loopback).

use crate::http::request;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, Mac};
use imgbuild_sigv4 as sigv4;
use sha2::Sha256;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// sio-go's fragment size (`sio.BufSize`).
pub const BUF_SIZE: usize = 16 * 1024;
const TAG: usize = 16;
/// Cipher id: PBKDF2-HMAC-SHA256 + AES-256-GCM.
pub const PBKDF2_AES_GCM: u8 = 0x02;
/// madmin's `pbkdf2Cost`.
pub const PBKDF2_ROUNDS: u32 = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// PBKDF2-HMAC-SHA256 with a 32-byte output (one block).
pub fn pbkdf2_sha256(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(password).expect("HMAC takes any key length");
    let mut u = {
        let mut m = mac.clone();
        m.update(salt);
        m.update(&1u32.to_be_bytes());
        m.finalize().into_bytes()
    };
    let mut out: [u8; 32] = u.into();
    for _ in 1..rounds {
        let mut m = mac.clone();
        m.update(&u);
        u = m.finalize().into_bytes();
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

fn stream_nonce(nonce: &[u8; 8], counter: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(nonce);
    n[8..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// The sio-go stream of `data` (`Stream.EncryptWriter` with the given
/// fragment size and associated data), for any AEAD with a 12-byte nonce.
pub fn sio_seal<A: Aead>(aead: &A, nonce: &[u8; 8], ad: &[u8], data: &[u8], buf: usize) -> Vec<u8> {
    let mut frag_ad = vec![0u8; 1 + TAG];
    let tag = aead
        .encrypt(
            Nonce::from_slice(&stream_nonce(nonce, 0)),
            Payload { msg: &[], aad: ad },
        )
        .expect("sealing an empty message cannot fail");
    frag_ad[1..].copy_from_slice(&tag);
    let mut out = Vec::with_capacity(data.len() + (data.len() / buf + 1) * TAG);
    let mut rest = data;
    let mut seq = 1u32;
    // Like EncWriter: a fragment is sealed as non-final only once more data follows.
    while rest.len() > buf {
        let ct = aead
            .encrypt(
                Nonce::from_slice(&stream_nonce(nonce, seq)),
                Payload {
                    msg: &rest[..buf],
                    aad: &frag_ad,
                },
            )
            .expect("AEAD sealing of a bounded fragment");
        out.extend_from_slice(&ct);
        rest = &rest[buf..];
        seq += 1;
    }
    frag_ad[0] = 0x80;
    let ct = aead
        .encrypt(
            Nonce::from_slice(&stream_nonce(nonce, seq)),
            Payload {
                msg: rest,
                aad: &frag_ad,
            },
        )
        .expect("AEAD sealing of a bounded fragment");
    out.extend_from_slice(&ct);
    out
}

/// Opens a sio-go stream; any change to it (bytes, order, truncation,
/// appended fragments) is an error.
pub fn sio_open<A: Aead>(
    aead: &A,
    nonce: &[u8; 8],
    ad: &[u8],
    data: &[u8],
    buf: usize,
) -> Result<Vec<u8>> {
    let mut frag_ad = vec![0u8; 1 + TAG];
    let tag = aead
        .encrypt(
            Nonce::from_slice(&stream_nonce(nonce, 0)),
            Payload { msg: &[], aad: ad },
        )
        .map_err(|_| anyhow!("sio: cannot derive the stream tag"))?;
    frag_ad[1..].copy_from_slice(&tag);
    let chunk = buf + TAG;
    if data.len() < TAG {
        bail!("sio: data is not authentic (too short)");
    }
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    let mut seq = 1u32;
    loop {
        let last = rest.len() <= chunk;
        let n = rest.len().min(chunk);
        frag_ad[0] = if last { 0x80 } else { 0x00 };
        let pt = aead
            .decrypt(
                Nonce::from_slice(&stream_nonce(nonce, seq)),
                Payload {
                    msg: &rest[..n],
                    aad: &frag_ad,
                },
            )
            .map_err(|_| anyhow!("sio: data is not authentic"))?;
        out.extend_from_slice(&pt);
        rest = &rest[n..];
        if last {
            return Ok(out);
        }
        seq = seq.checked_add(1).context("sio: stream too long")?;
    }
}

/// madmin's `EncryptData` with cipher id 0x02, fresh random salt and nonce.
pub fn encrypt_data(password: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 8];
    getrandom::getrandom(&mut salt).map_err(|e| anyhow!("no randomness for the salt: {e}"))?;
    getrandom::getrandom(&mut nonce).map_err(|e| anyhow!("no randomness for the nonce: {e}"))?;
    Ok(encrypt_with(password, data, &salt, &nonce))
}

/// [`encrypt_data`] with a given salt and nonce.
pub fn encrypt_with(password: &str, data: &[u8], salt: &[u8; 32], nonce: &[u8; 8]) -> Vec<u8> {
    let key = pbkdf2_sha256(password.as_bytes(), salt, PBKDF2_ROUNDS);
    let aead = Aes256Gcm::new_from_slice(&key).expect("32-byte key");
    let mut out = Vec::with_capacity(41 + data.len() + TAG);
    out.extend_from_slice(salt);
    out.push(PBKDF2_AES_GCM);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sio_seal(&aead, nonce, &[], data, BUF_SIZE));
    out
}

/// URI-encodes one query value or path segment as SigV4 wants it
/// (unreserved characters kept, everything else `%XX`).
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The canned policy for a service user: list and locate `buckets`, and
/// read, write and delete objects (multipart uploads included) in them;
/// nothing else (no other bucket, no bucket creation or deletion, no admin).
pub fn policy_document(buckets: &[String]) -> String {
    let arns = |suffix: &str| -> String {
        buckets
            .iter()
            .map(|b| json_str(&format!("arn:aws:s3:::{b}{suffix}")))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{{\"Version\":\"2012-10-17\",\"Statement\":[\
         {{\"Effect\":\"Allow\",\"Action\":[\"s3:GetBucketLocation\",\"s3:ListBucket\",\"s3:ListBucketMultipartUploads\"],\"Resource\":[{}]}},\
         {{\"Effect\":\"Allow\",\"Action\":[\"s3:GetObject\",\"s3:PutObject\",\"s3:DeleteObject\",\"s3:AbortMultipartUpload\",\"s3:ListMultipartUploadParts\"],\"Resource\":[{}]}}]}}",
        arns(""),
        arns("/*")
    )
}

/// An admin client for the server on `addr`, signing as the root user.
pub struct Admin<'a> {
    /// `127.0.0.1:<api port>`.
    pub addr: SocketAddr,
    /// Root access key.
    pub access_key: &'a str,
    /// Root secret key (signs and encrypts).
    pub secret_key: &'a str,
}

/// One answer of the admin API.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body as text (never holds a secret: errors and encrypted bytes only).
    pub body: String,
}

impl Admin<'_> {
    /// One signed call of `/minio/admin/v4/{api}` with `body` as given
    /// (query values are URI-encoded here).
    pub fn call(
        &self,
        method: &str,
        api: &str,
        query: &[(&str, String)],
        body: &[u8],
    ) -> Result<Answer> {
        let host = self.addr.to_string();
        let date = sigv4::amz_date_now();
        let path = format!("/minio/admin/v4/{api}");
        let encoded: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k), uri_encode(v)))
            .collect();
        let pairs: Vec<(&str, &str)> = encoded
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sha = sigv4::sha256_hex(body);
        let auth = sigv4::S3Call {
            method,
            path: &path,
            query: &pairs,
            host: &host,
            payload_sha256: &sha,
            amz_date: &date,
        }
        .authorization(self.access_key, self.secret_key);
        let mut target = path.clone();
        if !pairs.is_empty() {
            target.push('?');
            target.push_str(
                &pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        }
        let r = request(
            self.addr,
            &host,
            method,
            &target,
            &[
                ("Content-Type", "application/octet-stream"),
                ("x-amz-content-sha256", &sha),
                ("x-amz-date", &date),
                ("Authorization", &auth),
            ],
            body,
            REQUEST_TIMEOUT,
        )?;
        Ok(Answer {
            status: r.status,
            body: String::from_utf8_lossy(&r.body).chars().take(300).collect(),
        })
    }

    /// `mc admin policy create`: PUT add-canned-policy (plain JSON body);
    /// replaces a policy of the same name.
    pub fn add_canned_policy(&self, name: &str, policy: &str) -> Result<()> {
        let a = self.call(
            "PUT",
            "add-canned-policy",
            &[("name", name.to_string())],
            policy.as_bytes(),
        )?;
        if a.status != 200 {
            bail!("add-canned-policy {name} answered {}: {}", a.status, a.body);
        }
        Ok(())
    }

    /// `mc admin user add`: PUT add-user with `{"secretKey","status"}`
    /// encrypted by the root secret; creates the user or updates its secret.
    pub fn add_user(&self, access_key: &str, secret_key: &str) -> Result<()> {
        let body = format!(
            "{{\"secretKey\":{},\"status\":\"enabled\"}}",
            json_str(secret_key)
        );
        let enc = encrypt_data(self.secret_key, body.as_bytes())?;
        let a = self.call(
            "PUT",
            "add-user",
            &[("accessKey", access_key.to_string())],
            &enc,
        )?;
        if a.status != 200 {
            bail!("add-user {access_key} answered {}: {}", a.status, a.body);
        }
        Ok(())
    }

    /// `mc admin policy attach`: POST idp/builtin/policy/attach with the
    /// encrypted `{"policies":[..],"user":..}`. "Already in effect" (400
    /// XMinioAdminPolicyChangeAlreadyApplied) counts as done.
    pub fn attach_policy(&self, user: &str, policy: &str) -> Result<()> {
        let body = format!(
            "{{\"policies\":[{}],\"user\":{}}}",
            json_str(policy),
            json_str(user)
        );
        let enc = encrypt_data(self.secret_key, body.as_bytes())?;
        let a = self.call("POST", "idp/builtin/policy/attach", &[], &enc)?;
        match a.status {
            200 | 201 | 204 => Ok(()),
            400 if a.body.contains("PolicyChangeAlreadyApplied") => Ok(()),
            s => bail!(
                "attaching policy {policy} to {user} answered {s}: {}",
                a.body
            ),
        }
    }

    /// `mc admin user rm`: DELETE remove-user; an unknown user is done.
    pub fn remove_user(&self, access_key: &str) -> Result<()> {
        let a = self.call(
            "DELETE",
            "remove-user",
            &[("accessKey", access_key.to_string())],
            b"",
        )?;
        match a.status {
            200 | 204 => Ok(()),
            404 if a.body.contains("NoSuchUser") => Ok(()),
            s => bail!("remove-user {access_key} answered {s}: {}", a.body),
        }
    }

    /// `mc admin policy rm`: DELETE remove-canned-policy; an unknown policy is done.
    pub fn remove_canned_policy(&self, name: &str) -> Result<()> {
        let a = self.call(
            "DELETE",
            "remove-canned-policy",
            &[("name", name.to_string())],
            b"",
        )?;
        match a.status {
            200 | 204 => Ok(()),
            404 if a.body.contains("NoSuchPolicy") => Ok(()),
            s => bail!("remove-canned-policy {name} answered {s}: {}", a.body),
        }
    }

    /// Creates (or updates) `user` with exactly the access `policy` gives
    /// to `buckets`: policy first, then the user, then the attachment.
    pub fn ensure_user(
        &self,
        access_key: &str,
        secret_key: &str,
        policy: &str,
        buckets: &[String],
    ) -> Result<()> {
        self.add_canned_policy(policy, &policy_document(buckets))?;
        self.add_user(access_key, secret_key)?;
        self.attach_policy(access_key, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_rfc7914_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1), first 32 bytes.
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    /// secure-io/sio-go's test_vectors.json (AES-128-GCM rows): the stream
    /// framing is the same for every AEAD.
    #[test]
    fn sio_go_test_vectors() {
        use aes_gcm::Aes128Gcm;
        let rows: [(&str, usize, &str, &str, &str, &str, &str); 4] = [
            (
                "AES-128-GCM",
                16,
                "00000000000000000000000000000000",
                "0000000000000000",
                "",
                "",
                "e0247a864e783cecb1f7996c13cd3f64",
            ),
            (
                "AES-128-GCM",
                16,
                "10000000000000000000000000000000",
                "1000000000000000",
                "00",
                "",
                "2d9ede532b1f5f034e22375d816f76c2",
            ),
            (
                "AES-128-GCM",
                16,
                "10000000000000000000000000000000",
                "1000000000000000",
                "00",
                "00",
                "61ed193d12a2adf6f1c41f31de4ead6c5c",
            ),
            (
                "AES-128-GCM",
                16,
                "00000000000000000000000000000000",
                "0000000000000000",
                "0000000000000000",
                "0000000000000000",
                "4661d681f92680d7a307c7a036700edde4697a1f3ba7e01b",
            ),
        ];
        for (_, buf, key, nonce, ad, pt, ct) in rows {
            let aead = Aes128Gcm::new_from_slice(&hex::decode(key).unwrap()).unwrap();
            let nonce: [u8; 8] = hex::decode(nonce).unwrap().try_into().unwrap();
            let (ad, pt) = (hex::decode(ad).unwrap(), hex::decode(pt).unwrap());
            assert_eq!(hex::encode(sio_seal(&aead, &nonce, &ad, &pt, buf)), ct);
            let ct = hex::decode(ct).unwrap();
            assert_eq!(sio_open(&aead, &nonce, &ad, &ct, buf).unwrap(), pt);
        }
    }

    #[test]
    fn multi_fragment_streams_round_trip_and_resist_tampering() {
        let aead = Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
        let nonce = [1u8; 8];
        for len in [0, 1, BUF_SIZE - 1, BUF_SIZE, BUF_SIZE + 1, 3 * BUF_SIZE] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let ct = sio_seal(&aead, &nonce, &[], &data, BUF_SIZE);
            let frags = len.div_ceil(BUF_SIZE).max(1);
            assert_eq!(ct.len(), len + frags * TAG, "len {len}");
            assert_eq!(sio_open(&aead, &nonce, &[], &ct, BUF_SIZE).unwrap(), data);
            let mut bad = ct.clone();
            bad[0] ^= 1;
            assert!(sio_open(&aead, &nonce, &[], &bad, BUF_SIZE).is_err());
            if len > BUF_SIZE {
                // Dropping the final fragment leaves a non-final one last.
                assert!(sio_open(&aead, &nonce, &[], &ct[..BUF_SIZE + TAG], BUF_SIZE).is_err());
            }
        }
    }

    /// madmin-go's own EncryptData ciphertexts (encrypt_test.go,
    /// decryptDataTests; cipher id 0x00, argon2id + AES-256-GCM) open with
    /// this stream code, so the framing and the key schedule are madmin's.
    #[test]
    fn opens_madmin_go_ciphertexts() {
        use argon2::{Algorithm, Argon2, Params, Version};
        let cases = [
            ("", "828aa81599df0651c0461adb82283e8b89956baee9f6e719947ef9cddc849028001dc9d3ac0938f66b07bacc9751437e1985f8a9763c240e81", 0usize),
            (
                "xPl.8/rhR\"Q_1xLt",
                "b5c016e93b84b473fc8a37af94936563630c36d6df1841d23a86ee51ca161f9e00ac19116b32f643ff6a56a212b265d8c56195bb0d12ce199e13dfdc5272f80c1564da2c6fc2fa18da91d8062de02af5cdafea491c6f3cae1f",
                32,
            ),
        ];
        for (password, data, len) in cases {
            let data = hex::decode(data).unwrap();
            assert_eq!(data[32], 0x00);
            let mut key = [0u8; 32];
            Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(64 * 1024, 1, 4, Some(32)).unwrap(),
            )
            .hash_password_into(password.as_bytes(), &data[..32], &mut key)
            .unwrap();
            let aead = Aes256Gcm::new_from_slice(&key).unwrap();
            let nonce: [u8; 8] = data[33..41].try_into().unwrap();
            let pt = sio_open(&aead, &nonce, &[], &data[41..], BUF_SIZE).unwrap();
            assert_eq!(pt, vec![0u8; len]);
        }
    }

    #[test]
    fn encrypt_data_layout() {
        let ct = encrypt_with("root-secret", b"{\"a\":1}", &[3u8; 32], &[4u8; 8]);
        assert_eq!(&ct[..32], &[3u8; 32]);
        assert_eq!(ct[32], PBKDF2_AES_GCM);
        assert_eq!(&ct[33..41], &[4u8; 8]);
        assert_eq!(ct.len(), 41 + 7 + TAG);
        let key = pbkdf2_sha256(b"root-secret", &[3u8; 32], PBKDF2_ROUNDS);
        let aead = Aes256Gcm::new_from_slice(&key).unwrap();
        assert_eq!(
            sio_open(&aead, &[4u8; 8], &[], &ct[41..], BUF_SIZE).unwrap(),
            b"{\"a\":1}"
        );
        let a = encrypt_data("x", b"y").unwrap();
        let b = encrypt_data("x", b"y").unwrap();
        assert_ne!(a[..32], b[..32], "fresh salt each time");
    }

    #[test]
    fn policy_names_only_the_buckets() {
        let p = policy_document(&["warehouse".into(), "spark-events".into()]);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        let res: Vec<&str> = v["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Resource"].as_array().unwrap())
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(
            res,
            [
                "arn:aws:s3:::warehouse",
                "arn:aws:s3:::spark-events",
                "arn:aws:s3:::warehouse/*",
                "arn:aws:s3:::spark-events/*"
            ]
        );
        assert!(!p.contains("s3:*") && !p.contains("admin:"));
        assert_eq!(uri_encode("a b/c~"), "a%20b%2Fc~");
    }
}
