//! The part of MinIO's admin API (`/minio/admin/v4/`) that `mc admin user
//! add`, `mc admin policy create` and `mc admin policy attach` use, as
//! madmin-go calls it:
//!
//! - `PUT add-canned-policy?name=N`, body: the policy JSON (plain);
//! - `PUT add-user?accessKey=K`, body: `{"secretKey":…,"status":"enabled"}`
//!   encrypted with the root secret key (madmin `EncryptData`);
//! - `POST idp/builtin/policy/attach`, body: `{"policies":[…],"user":…}`
//!   encrypted; answers 200 with an encrypted `{"policiesAttached":[…]}`,
//!   or 400 `XMinioAdminPolicyChangeAlreadyApplied` when nothing changes;
//! - `DELETE remove-user?accessKey=K`, `DELETE remove-canned-policy?name=N`
//!   (404 `XMinioAdminNoSuchUser` / `XMinioAdminNoSuchPolicy` when absent).
//!
//! Every request must carry a valid SigV4 signature (service `s3`, any
//! region, date within 15 minutes, `x-amz-content-sha256` matching the body)
//! by the root user; errors are MinIO's JSON error documents.

use hmac::Mac;
use hyper::{HeaderMap, Method, Response, StatusCode};
use s3s::Body;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::iam::{AttachError, Iam};
use crate::madmin;

pub const PREFIX: &str = "/minio/admin/v4/";
/// The largest admin body read.
const MAX_BODY: usize = 1 << 20;

type HmacSha256 = hmac::Hmac<Sha256>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <HmacSha256 as hmac::KeyInit>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// SigV4's URI encoding of one query name or value.
fn encode(s: &[u8]) -> String {
    let mut o = String::new();
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    out
}

/// Query pairs, decoded.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&decode(k)).into_owned(),
                String::from_utf8_lossy(&decode(v)).into_owned(),
            )
        })
        .collect()
}

/// Why a request's signature was refused (MinIO's error codes).
#[derive(Debug, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Malformed(&'static str),
    NotRoot,
    ContentSha,
    Skewed,
    Mismatch,
}

/// Verifies a header-signed SigV4 request against `iam`'s root user;
/// `path` is the raw (encoded) path, `query` the raw query string.
pub fn verify(
    iam: &Iam,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: u64,
) -> Result<(), SigError> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let auth = h("authorization").ok_or(SigError::Missing)?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(SigError::Malformed("not AWS4-HMAC-SHA256"))?;
    let mut cred = None;
    let mut signed = None;
    let mut sig = None;
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SigError::Malformed("bad Authorization"))?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return Err(SigError::Malformed("bad Authorization")),
        }
    }
    let (cred, signed, sig) = match (cred, signed, sig) {
        (Some(c), Some(s), Some(g)) => (c, s, g),
        _ => return Err(SigError::Malformed("incomplete Authorization")),
    };
    let c: Vec<&str> = cred.split('/').collect();
    if c.len() != 5 || c[3] != "s3" || c[4] != "aws4_request" {
        return Err(SigError::Malformed("bad Credential scope"));
    }
    if c[0] != iam.root_user() {
        return Err(SigError::NotRoot);
    }
    let sha = h("x-amz-content-sha256").ok_or(SigError::ContentSha)?;
    if sha != hex(&Sha256::digest(body)) {
        return Err(SigError::ContentSha);
    }
    let date = h("x-amz-date").ok_or(SigError::Malformed("no X-Amz-Date"))?;
    if date.len() != 16 || &date[..8] != c[1] {
        return Err(SigError::Malformed("X-Amz-Date does not match the scope"));
    }
    let when = parse_amz_date(date).ok_or(SigError::Malformed("bad X-Amz-Date"))?;
    if when.abs_diff(now_unix) > 15 * 60 {
        return Err(SigError::Skewed);
    }
    let names: Vec<&str> = signed.split(';').collect();
    if !names.contains(&"host") {
        return Err(SigError::Malformed("host is not signed"));
    }
    let mut canon_headers = String::new();
    for n in &names {
        let vals: Vec<String> = headers
            .get_all(*n)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if vals.is_empty() {
            return Err(SigError::Malformed("a signed header is missing"));
        }
        canon_headers.push_str(&format!("{n}:{}\n", vals.join(",")));
    }
    let mut q: Vec<(String, String)> = query_pairs(query)
        .into_iter()
        .map(|(k, v)| (encode(k.as_bytes()), encode(v.as_bytes())))
        .collect();
    q.sort();
    let canon_query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical = format!(
        "{method}\n{path}\n{}\n{canon_headers}\n{signed}\n{sha}",
        canon_query.join("&")
    );
    let scope = format!("{}/{}/{}/{}", c[1], c[2], c[3], c[4]);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut k = hmac(
        format!("AWS4{}", iam.root_secret()).as_bytes(),
        c[1].as_bytes(),
    );
    for part in [c[2], c[3], c[4]] {
        k = hmac(&k, part.as_bytes());
    }
    let want = hex(&hmac(&k, to_sign.as_bytes()));
    // Constant time: compare every byte.
    let same = want.len() == sig.len()
        && want
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(SigError::Mismatch)
    }
}

/// `YYYYMMDDTHHMMSSZ` to Unix seconds.
fn parse_amz_date(s: &str) -> Option<u64> {
    let n = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    if s.as_bytes().get(8) != Some(&b'T') || !s.ends_with('Z') {
        return None;
    }
    let (y, m, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hh, mm, ss) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86400 + hh * 3600 + mm * 60 + ss).ok()
}

fn json_error(status: StatusCode, code: &str, message: &str, path: &str) -> Response<Body> {
    let body =
        json!({"Code": code, "Message": message, "Resource": path, "RequestId": "", "HostId": ""});
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().expect("static"),
    );
    r
}

fn ok(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::OK;
    r
}

/// Answers one admin API request.
pub async fn handle(iam: &Iam, req: hyper::Request<Body>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let bytes = match body.store_all_limited(MAX_BODY).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed object size.",
                &path,
            )
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Err(e) = verify(
        iam,
        parts.method.as_str(),
        &path,
        &query,
        &parts.headers,
        &bytes,
        now,
    ) {
        let (status, code) = match e {
            SigError::Missing => (StatusCode::FORBIDDEN, "AccessDenied"),
            SigError::NotRoot => (StatusCode::FORBIDDEN, "AccessDenied"),
            SigError::ContentSha => (StatusCode::BAD_REQUEST, "XAmzContentSHA256Mismatch"),
            SigError::Skewed => (StatusCode::FORBIDDEN, "RequestTimeTooSkewed"),
            SigError::Mismatch => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
            SigError::Malformed(_) => (StatusCode::BAD_REQUEST, "AuthorizationHeaderMalformed"),
        };
        return json_error(status, code, &format!("{e:?}"), &path);
    }
    let api = &path[PREFIX.len()..];
    let q = query_pairs(&query);
    let arg = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let bad_json = || {
        json_error(
            StatusCode::BAD_REQUEST,
            "XMinioAdminConfigBadJSON",
            "JSON configuration provided is of incorrect format",
            &path,
        )
    };
    match (&parts.method, api) {
        (&Method::PUT, "add-canned-policy") => {
            let Some(name) = arg("name").filter(|n| !n.is_empty()) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "XMinioAdminInvalidArgument",
                    "Invalid arguments specified.",
                    &path,
                );
            };
            let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "XMinioMalformedJSON",
                    "The JSON you provided was not well-formed",
                    &path,
                );
            };
            match iam.add_policy(&name, doc) {
                Ok(()) => ok(vec![]),
                Err(e) => json_error(StatusCode::BAD_REQUEST, "XMinioMalformedPolicy", &e, &path),
            }
        }
        (&Method::PUT, "add-user") => {
            let Some(access_key) = arg("accessKey").filter(|k| k.len() >= 3) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "XMinioAdminInvalidAccessKey",
                    "The access key is invalid.",
                    &path,
                );
            };
            let Ok(plain) = madmin::decrypt_data(iam.root_secret(), &bytes) else {
                return bad_json();
            };
            let Ok(v) = serde_json::from_slice::<Value>(&plain) else {
                return bad_json();
            };
            let secret = v["secretKey"].as_str().unwrap_or_default();
            if secret.len() < 8 {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "XMinioAdminInvalidSecretKey",
                    "The secret key is invalid.",
                    &path,
                );
            }
            let enabled = match v["status"].as_str() {
                Some("enabled") | None => true,
                Some("disabled") => false,
                Some(_) => return bad_json(),
            };
            match iam.set_user(&access_key, secret, enabled) {
                Ok(()) => ok(vec![]),
                Err(e) => json_error(
                    StatusCode::BAD_REQUEST,
                    "XMinioAdminInvalidArgument",
                    &e,
                    &path,
                ),
            }
        }
        (&Method::POST, "idp/builtin/policy/attach") => {
            let Ok(plain) = madmin::decrypt_data(iam.root_secret(), &bytes) else {
                return bad_json();
            };
            let Ok(v) = serde_json::from_slice::<Value>(&plain) else {
                return bad_json();
            };
            let policies: Vec<String> = v["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect();
            let Some(user) = v["user"]
                .as_str()
                .filter(|u| !u.is_empty() && !policies.is_empty())
            else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "XMinioAdminInvalidArgument",
                    "Invalid arguments specified.",
                    &path,
                );
            };
            match iam.attach(user, &policies) {
                Ok(true) => {
                    let resp = json!({"updatedAt": "", "policiesAttached": policies});
                    ok(madmin::encrypt_data(
                        iam.root_secret(),
                        resp.to_string().as_bytes(),
                    ))
                }
                Ok(false) => json_error(
                    StatusCode::BAD_REQUEST,
                    "XMinioAdminPolicyChangeAlreadyApplied",
                    "The specified policy change is already in effect.",
                    &path,
                ),
                Err(AttachError::NoSuchUser) => json_error(
                    StatusCode::NOT_FOUND,
                    "XMinioAdminNoSuchUser",
                    "The specified user does not exist.",
                    &path,
                ),
                Err(AttachError::NoSuchPolicy(_)) => json_error(
                    StatusCode::NOT_FOUND,
                    "XMinioAdminNoSuchPolicy",
                    "The canned policy does not exist.",
                    &path,
                ),
                Err(AttachError::Store(e)) => json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &e,
                    &path,
                ),
            }
        }
        (&Method::DELETE, "remove-user") => {
            match iam.remove_user(&arg("accessKey").unwrap_or_default()) {
                Ok(true) => ok(vec![]),
                Ok(false) => json_error(
                    StatusCode::NOT_FOUND,
                    "XMinioAdminNoSuchUser",
                    "The specified user does not exist.",
                    &path,
                ),
                Err(e) => json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    &e,
                    &path,
                ),
            }
        }
        (&Method::DELETE, "remove-canned-policy") => {
            match iam.remove_policy(&arg("name").unwrap_or_default()) {
                Ok(true) => ok(vec![]),
                Ok(false) => json_error(
                    StatusCode::NOT_FOUND,
                    "XMinioAdminNoSuchPolicy",
                    "The canned policy does not exist.",
                    &path,
                ),
                Err(e) => json_error(StatusCode::BAD_REQUEST, "XMinioAdminPolicyInUse", &e, &path),
            }
        }
        _ => json_error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "This admin call is not implemented by the imgbuild MinIO stand-in.",
            &path,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("20000229T000000Z"), Some(951_782_400));
        assert_eq!(parse_amz_date("2000-02-29"), None);
    }

    /// The AWS SigV4 test suite's get-vanilla-query-order-key-case, signed
    /// for service s3 by the example key, checked through `verify`.
    #[test]
    fn verifies_signatures_and_refuses_changes() {
        let iam = Iam::open(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        )
        .unwrap();
        let body = b"{}";
        let sha = hex(&Sha256::digest(body));
        let date = "20150830T123600Z";
        let now = 1_440_938_160;
        let sign = |method: &str, path: &str, query: &str, body_sha: &str| -> String {
            let canonical = format!(
                "{method}\n{path}\n{query}\nhost:example.amazonaws.com\nx-amz-content-sha256:{body_sha}\nx-amz-date:{date}\n\nhost;x-amz-content-sha256;x-amz-date\n{body_sha}"
            );
            let scope = "20150830/us-east-1/s3/aws4_request";
            let to_sign = format!(
                "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
                hex(&Sha256::digest(canonical.as_bytes()))
            );
            let mut k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20150830");
            for p in ["us-east-1", "s3", "aws4_request"] {
                k = hmac(&k, p.as_bytes());
            }
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
                hex(&hmac(&k, to_sign.as_bytes()))
            )
        };
        let headers = |auth: &str| {
            let mut h = HeaderMap::new();
            h.insert("host", "example.amazonaws.com".parse().unwrap());
            h.insert("x-amz-content-sha256", sha.parse().unwrap());
            h.insert("x-amz-date", date.parse().unwrap());
            h.insert("authorization", auth.parse().unwrap());
            h
        };
        let p = "/minio/admin/v4/add-user";
        let auth = sign("PUT", p, "accessKey=spark%20x", &sha);
        let h = headers(&auth);
        assert_eq!(
            verify(&iam, "PUT", p, "accessKey=spark%20x", &h, body, now),
            Ok(())
        );
        assert_eq!(
            verify(&iam, "PUT", p, "accessKey=spark%20y", &h, body, now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(&iam, "POST", p, "accessKey=spark%20x", &h, body, now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(&iam, "PUT", p, "accessKey=spark%20x", &h, b"{ }", now),
            Err(SigError::ContentSha)
        );
        assert_eq!(
            verify(&iam, "PUT", p, "accessKey=spark%20x", &h, body, now + 3600),
            Err(SigError::Skewed)
        );
        assert_eq!(
            verify(
                &iam,
                "PUT",
                p,
                "accessKey=spark%20x",
                &HeaderMap::new(),
                body,
                now
            ),
            Err(SigError::Missing)
        );
        let other = Iam::open("someone", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None).unwrap();
        assert_eq!(
            verify(&other, "PUT", p, "accessKey=spark%20x", &h, body, now),
            Err(SigError::NotRoot)
        );
    }

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs("accessKey=a%2Fb&name=x&flag"),
            vec![
                ("accessKey".into(), "a/b".into()),
                ("name".into(), "x".into()),
                ("flag".into(), "".into())
            ]
        );
    }
}
