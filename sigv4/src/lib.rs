//! AWS Signature Version 4, the one signer of the workspace: the builder's
//! `verify` signs its S3 round trip with it, the firstboot agent its bucket
//! and MinIO admin calls. Its own tiny crate (sha2 + hmac) so the static agent
//! stays small and both sides sign the same way.
//!
//! Also the UTC calendar arithmetic `x-amz-date` needs ([`utc`]), which the
//! builder reuses for its other UTC stamps (snapshot names, ISO 9660 dates)
//! rather than keep a copy. Checked against AWS's published examples.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of an empty payload, hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The derived signing key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// What to sign. `path` is the already URI-encoded absolute path, `query`
/// the already-encoded `(name, value)` pairs, `headers` lowercase names (must
/// include `host` and `x-amz-date`).
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Encoded path.
    pub path: &'a str,
    /// Encoded query pairs.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign, lowercase names.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body (or `UNSIGNED-PAYLOAD`).
    pub payload_sha256: &'a str,
}

/// Returns the `Authorization` header value for `req`, signed at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`).
pub fn authorization(
    req: &Request<'_>,
    access_key: &str,
    secret_key: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let mut query: Vec<_> = req.query.to_vec();
    query.sort();
    let canonical_query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        canonical_query.join("&"),
        canonical_headers,
        signed,
        req.payload_sha256
    );
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let sig = hex::encode(hmac(
        &signing_key(secret_key, date, region, service),
        to_sign.as_bytes(),
    ));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={sig}"
    )
}

/// An S3 or MinIO admin call signed the way every caller here signs them:
/// the headers `host`, `x-amz-content-sha256` and `x-amz-date` (which the
/// caller sends with these values), region `us-east-1` (MinIO's default),
/// service `s3`. Fields as in [`Request`].
pub struct S3Call<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Encoded path.
    pub path: &'a str,
    /// Encoded query pairs.
    pub query: &'a [(&'a str, &'a str)],
    /// The `Host` header's value.
    pub host: &'a str,
    /// Hex SHA-256 of the body, also sent as `x-amz-content-sha256`.
    pub payload_sha256: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, also sent as `x-amz-date`.
    pub amz_date: &'a str,
}

impl S3Call<'_> {
    /// The `Authorization` header value.
    pub fn authorization(&self, access_key: &str, secret_key: &str) -> String {
        let headers = [
            ("host", self.host),
            ("x-amz-content-sha256", self.payload_sha256),
            ("x-amz-date", self.amz_date),
        ];
        let req = Request {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &headers,
            payload_sha256: self.payload_sha256,
        };
        authorization(
            &req,
            access_key,
            secret_key,
            "us-east-1",
            "s3",
            self.amz_date,
        )
    }
}

/// [`amz_date`] of the current time (the Unix epoch if the clock is before it).
pub fn amz_date_now() -> String {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    amz_date(unix)
}

/// A Unix time's calendar fields in UTC (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// The calendar fields of `unix` (seconds since 1970-01-01T00:00:00Z).
pub fn utc(unix: u64) -> Utc {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    Utc {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: (secs / 60 % 60) as u32,
        second: (secs % 60) as u32,
    }
}

/// Formats a Unix time as `YYYYMMDDTHHMMSSZ` (ISO 8601 basic, UTC).
pub fn amz_date(unix: u64) -> String {
    let t = utc(unix);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_signing_key_from_aws_docs() {
        // "Examples of how to derive a signing key for Signature Version 4".
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn aws_test_suite_get_vanilla() {
        let req = Request {
            method: "GET",
            path: "/",
            query: &[],
            headers: &[
                ("Host", "example.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            payload_sha256: EMPTY_SHA256,
        };
        let auth = authorization(
            &req,
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn s3_docs_get_object_example() {
        // S3 API reference, "Example: GET Object" (header-based auth).
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_sha256: EMPTY_SHA256,
        };
        let auth = authorization(
            &req,
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "s3",
            "20130524T000000Z",
        );
        assert!(
            auth.ends_with(
                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            ),
            "{auth}"
        );
    }

    /// The S3 API reference's header-based examples that sign exactly
    /// [`S3Call`]'s headers: "GET Bucket (List Objects)", whose query must
    /// be sorted, and "GET Bucket Lifecycle", a name without a value.
    #[test]
    fn s3_docs_bucket_examples() {
        let sign = |query| {
            S3Call {
                method: "GET",
                path: "/",
                query,
                host: "examplebucket.s3.amazonaws.com",
                payload_sha256: EMPTY_SHA256,
                amz_date: "20130524T000000Z",
            }
            .authorization(
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            )
        };
        assert_eq!(
            sign(&[("prefix", "J"), ("max-keys", "2")]),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
        assert!(sign(&[("lifecycle", "")]).ends_with(
            "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        ));
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(1_796_004_959), "20261130T021559Z");
        assert_eq!(
            utc(4_107_542_399),
            Utc {
                year: 2100,
                month: 2,
                day: 28,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
    }
}
