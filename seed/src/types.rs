//! Validated scalar newtypes of the seed document.
//!
//! Every value is checked when it is deserialized (or built with `new`), so an
//! invalid document never reaches the code that renders files from it. The
//! character sets are deliberately narrow: these strings end up in systemd unit
//! files, EnvironmentFiles, shell fragments and Java properties files, and the
//! renderers rely on them needing no quoting beyond plain double quotes.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// A value that failed validation. Secrets never put their value in here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}{}: {reason}", shown.as_ref().map(|s| format!(" {s:?}")).unwrap_or_default())]
pub struct InvalidValue {
    /// What kind of value it was meant to be ("hostname", "port", ...).
    pub what: &'static str,
    /// The offending value, absent for secrets.
    pub shown: Option<String>,
    /// Why it was refused and how to fix it.
    pub reason: String,
}

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> InvalidValue {
    InvalidValue {
        what,
        shown: Some(value.to_string()),
        reason: reason.into(),
    }
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $what:literal, $check:path, debug) => {
        string_newtype!($(#[$m])* $name, $what, $check);
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
    ($(#[$m:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `s`; the error says what is wrong and how to fix it.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidValue> {
                let s = s.into();
                $check(&s)?;
                Ok(Self(s))
            }
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Validating inside the visitor lets the deserializer attach the
                // field path and the value's line and column to the error.
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {}", $what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::new(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                Self::new(s)
            }
        }
        impl TryFrom<&str> for $name {
            type Error = InvalidValue;
            fn try_from(s: &str) -> Result<Self, InvalidValue> {
                Self::new(s)
            }
        }
    };
}

fn check_hostname(s: &str) -> Result<(), InvalidValue> {
    const W: &str = "hostname";
    if s.is_empty() || s.len() > 253 {
        return Err(invalid(W, s, "must be 1 to 253 characters"));
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid(
                W,
                s,
                "each dot-separated label must be 1 to 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                W,
                s,
                "use only letters, digits, '-' and '.' (RFC 1123)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(W, s, "a label may not start or end with '-'"));
        }
    }
    Ok(())
}

string_newtype!(
    /// An RFC 1123 host name (also accepts dotted IPv4 literals, which are valid
    /// names syntactically), e.g. `devlab` or `minio.lab`.
    Hostname, "hostname", check_hostname, debug
);

fn check_timezone(s: &str) -> Result<(), InvalidValue> {
    const W: &str = "timezone";
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if s.is_empty() || s.len() > 64 || !ok_chars {
        return Err(invalid(
            W,
            s,
            "expected an IANA zone name like Etc/UTC or Europe/Berlin",
        ));
    }
    if s.starts_with('/') || s.ends_with('/') || s.split('/').any(|c| c.is_empty() || c == "..") {
        return Err(invalid(
            W,
            s,
            "expected a relative zone name like Europe/Berlin",
        ));
    }
    Ok(())
}

string_newtype!(
    /// An IANA time zone name such as `Etc/UTC` (must exist under
    /// /usr/share/zoneinfo in the guest; checked when applying).
    Timezone, "timezone", check_timezone, debug
);

impl Default for Timezone {
    fn default() -> Self {
        Timezone("Etc/UTC".into())
    }
}

/// Characters allowed in paths and other values that land unquoted in unit files
/// and shell: no whitespace, quotes, `$`, backslash, `%` (systemd specifiers) or
/// control characters.
fn plain_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '$' | '`' | '%' | ';')
}

fn check_abs_path(s: &str) -> Result<(), InvalidValue> {
    const W: &str = "absolute path";
    if !s.starts_with('/') {
        return Err(invalid(W, s, "must start with '/'"));
    }
    if s.len() > 1024 || !s.chars().all(plain_char) {
        return Err(invalid(
            W,
            s,
            "use only printable ASCII without spaces, quotes, '$', '%', ';' or backslashes",
        ));
    }
    if s != "/"
        && (s.ends_with('/')
            || s[1..]
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".."))
    {
        return Err(invalid(
            W,
            s,
            "must be normalized: no '//', '.', '..' or trailing '/'",
        ));
    }
    Ok(())
}

string_newtype!(
    /// A normalized absolute path (`/var/lib/minio`): no `..`, no `//`, no
    /// trailing slash, no characters that would need quoting.
    AbsPath, "absolute path", check_abs_path, debug
);

impl AbsPath {
    /// The path relative to `/`, for joining under an alternative root.
    pub fn relative(&self) -> &str {
        self.0.trim_start_matches('/')
    }
}

/// A character that YAML writes inside one plain or single-quoted line:
/// no control characters, no Unicode line or paragraph separators, nothing
/// YAML calls non-printable (U+FEFF, U+FFFE, U+FFFF).
pub(crate) fn yaml_inline_char(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
        )
}

fn check_single_line(s: &str) -> Result<(), InvalidValue> {
    if s.is_empty() || s.len() > 4096 || !s.chars().all(yaml_inline_char) {
        return Err(invalid(
            "single-line string",
            s,
            "must be 1 to 4096 characters without newlines or control characters",
        ));
    }
    Ok(())
}

string_newtype!(
    /// A non-empty string without newlines or control characters.
    SingleLine, "single-line string", check_single_line, debug
);

fn check_comment(s: &str) -> Result<(), InvalidValue> {
    if s.is_empty() || s.len() > 100 || !s.chars().all(|c| c == ' ' || plain_char(c)) {
        return Err(invalid(
            "comment",
            s,
            "must be 1 to 100 printable ASCII characters without quotes, '$', '%', ';' or backslashes",
        ));
    }
    Ok(())
}

string_newtype!(
    /// A short human comment (firewall rules): printable ASCII and spaces.
    Comment, "comment", check_comment, debug
);

fn check_ssh_key(s: &str) -> Result<(), InvalidValue> {
    const W: &str = "SSH public key";
    check_single_line(s).map_err(|_| invalid(W, s, "must be one line"))?;
    let mut fields = s.split_ascii_whitespace();
    let kind = fields.next().unwrap_or("");
    let known = matches!(kind, "ssh-ed25519" | "ssh-rsa" | "ssh-dss")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-");
    if !known {
        return Err(invalid(
            W,
            s,
            "expected an authorized_keys line like 'ssh-ed25519 AAAA... comment' (no options)",
        ));
    }
    let body = fields.next().unwrap_or("");
    if body.len() < 16
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    {
        return Err(invalid(
            W,
            s,
            "the second field must be the base64 key body",
        ));
    }
    Ok(())
}

string_newtype!(
    /// One OpenSSH public key line: `<type> <base64> [comment]`.
    SshPublicKey, "SSH public key", check_ssh_key, debug
);

fn check_bucket(s: &str) -> Result<(), InvalidValue> {
    const W: &str = "bucket name";
    if s.len() < 3 || s.len() > 63 {
        return Err(invalid(W, s, "must be 3 to 63 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(invalid(
            W,
            s,
            "use only lowercase letters, digits, '.' and '-'",
        ));
    }
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge_ok(s.as_bytes()[0]) || !edge_ok(s.as_bytes()[s.len() - 1]) {
        return Err(invalid(W, s, "must start and end with a letter or digit"));
    }
    if s.contains("..") || s.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(invalid(
            W,
            s,
            "may not contain '..' or look like an IP address",
        ));
    }
    Ok(())
}

string_newtype!(
    /// An S3 bucket name (3-63 of `a-z0-9.-`, alphanumeric at both ends).
    BucketName, "bucket name", check_bucket, debug
);

fn check_access_key(s: &str) -> Result<(), InvalidValue> {
    if s.len() < 3 || s.len() > 128 || !s.chars().all(plain_char) {
        return Err(invalid(
            "access key",
            s,
            "must be 3 to 128 printable ASCII characters without spaces, quotes, '$', '%', ';' or backslashes",
        ));
    }
    Ok(())
}

string_newtype!(
    /// An S3 access key / MinIO root user name (3-128 plain characters; not secret).
    AccessKey, "access key", check_access_key, debug
);

fn check_policy_name(s: &str) -> Result<(), InvalidValue> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(invalid(
            "policy name",
            s,
            "must be 1 to 128 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(())
}

string_newtype!(
    /// The name of an object-store (MinIO canned) policy: `[A-Za-z0-9._-]{1,128}`.
    PolicyName, "policy name", check_policy_name, debug
);

fn check_secret(s: &str) -> Result<(), InvalidValue> {
    if s.len() < 8 || s.len() > 128 || !s.chars().all(plain_char) {
        return Err(InvalidValue {
            what: "secret",
            shown: None,
            reason: "must be 8 to 128 printable ASCII characters without spaces, quotes, '$', '%', ';' or backslashes (MinIO requires at least 8)".into(),
        });
    }
    Ok(())
}

string_newtype!(
    /// A secret (password, S3 secret key). `Debug` prints `***`; the value is
    /// only reachable through [`Secret::expose`], and the seed file that holds it
    /// is 0600 root.
    Secret, "secret", check_secret
);

impl Secret {
    /// The secret itself, for rendering into root-only files and signing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

fn check_memory(s: &str) -> Result<(), InvalidValue> {
    // Split off the last character, not the last byte: `4é` must be an
    // error, not a slice through a UTF-8 sequence.
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) => (&s[..i], c),
        None => ("", ' '),
    };
    let unit_ok = matches!(unit, 'k' | 'm' | 'g' | 't' | 'K' | 'M' | 'G' | 'T');
    if !unit_ok
        || num.is_empty()
        || num.len() > 12
        || !num.bytes().all(|b| b.is_ascii_digit())
        || num.starts_with('0')
    {
        return Err(invalid("memory size", s, "expected a size like 512m or 4g"));
    }
    Ok(())
}

string_newtype!(
    /// A JVM-style memory size such as `4g` or `512m` (Spark worker memory).
    Memory, "memory size", check_memory, debug
);

/// Splits `scheme://host[:port]` (no path) into host and port.
fn split_url<'a>(s: &'a str, scheme: &str) -> Option<(&'a str, Option<u16>)> {
    let rest = s.strip_prefix(scheme)?.strip_prefix("://")?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok().filter(|p| *p != 0)?)),
        None => (rest, None),
    };
    check_hostname(host).ok()?;
    Some((host, port))
}

fn check_http_url(s: &str) -> Result<(), InvalidValue> {
    if split_url(s, "http").is_none() && split_url(s, "https").is_none() {
        return Err(invalid(
            "endpoint URL",
            s,
            "expected http://host:port (no path), e.g. http://minio:9000",
        ));
    }
    Ok(())
}

string_newtype!(
    /// An HTTP(S) endpoint without a path: `http://host[:port]`.
    HttpUrl, "endpoint URL", check_http_url, debug
);

impl HttpUrl {
    /// Host part.
    pub fn host(&self) -> &str {
        split_url(&self.0, self.scheme())
            .map(|(h, _)| h)
            .unwrap_or_default()
    }
    /// Explicit port, or the scheme's default.
    pub fn port(&self) -> u16 {
        let default = if self.scheme() == "https" { 443 } else { 80 };
        split_url(&self.0, self.scheme())
            .and_then(|(_, p)| p)
            .unwrap_or(default)
    }
    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        if self.0.starts_with("https://") {
            "https"
        } else {
            "http"
        }
    }
}

fn check_spark_url(s: &str) -> Result<(), InvalidValue> {
    match split_url(s, "spark") {
        Some((_, Some(_))) => Ok(()),
        _ => Err(invalid(
            "Spark master URL",
            s,
            "expected spark://host:port, e.g. spark://devlab:7077",
        )),
    }
}

string_newtype!(
    /// A Spark standalone master URL: `spark://host:port`.
    SparkUrl, "Spark master URL", check_spark_url, debug
);

/// At most this many endpoints in one volume expression (e.g. 64 servers with
/// 64 drives each); MinIO's ranges multiply, so `{1...100000}` twice would
/// otherwise ask for ten billion.
pub const MAX_VOLUME_ENDPOINTS: u64 = 4096;

/// Checks MinIO's ellipsis syntax (every `{` opens a `{a...b}` range with
/// a <= b) and returns how many endpoints it expands to.
fn count_ellipses(s: &str) -> Option<u64> {
    let mut rest = s;
    let mut count: u64 = 1;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}')?;
        let inner = &rest[open + 1..open + close];
        let (a, b) = inner.split_once("...")?;
        match (a.parse::<u32>(), b.parse::<u32>()) {
            (Ok(a), Ok(b)) if a <= b => {
                count = count.saturating_mul(u64::from(b - a) + 1);
            }
            _ => return None,
        }
        rest = &rest[open + close + 1..];
    }
    (!rest.contains('}')).then_some(count)
}

fn check_volume_expr(s: &str) -> Result<(), InvalidValue> {
    const W: &str = "MinIO volume expression";
    let bare = s.replace(['{', '}'], "");
    let scheme_ok = s.starts_with("http://") || s.starts_with("https://") || s.starts_with('/');
    let count = count_ellipses(s);
    if s.len() > 1024
        || !scheme_ok
        || !bare.chars().all(plain_char)
        || !s.contains('{')
        || count.is_none()
    {
        return Err(invalid(
            W,
            s,
            "expected MinIO's expansion syntax like http://minio{1...4}/data{1...2} or /mnt/disk{1...4}; list plain local directories as a YAML list instead",
        ));
    }
    if let Some(n) = count.filter(|n| *n > MAX_VOLUME_ENDPOINTS) {
        return Err(invalid(
            W,
            s,
            format!("expands to {n} endpoints; at most {MAX_VOLUME_ENDPOINTS} are supported"),
        ));
    }
    Ok(())
}

string_newtype!(
    /// A MinIO distributed-mode expansion such as `http://minio{1...4}/data{1...2}`.
    VolumeExpr, "MinIO volume expression", check_volume_expr, debug
);

impl VolumeExpr {
    /// This node's directories: the path after `scheme://host[:port]`, with
    /// its `{a...b}` ranges expanded (at most [`MAX_VOLUME_ENDPOINTS`]).
    pub fn local_dirs(&self) -> Vec<String> {
        let s = self.as_str();
        let path = match s.split_once("://") {
            Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or(""),
            None => s,
        };
        if path.is_empty() {
            return vec![];
        }
        expand(path)
    }
}

/// Expands validated `{a...b}` ranges (count bounded by validation).
fn expand(s: &str) -> Vec<String> {
    let Some(open) = s.find('{') else {
        return vec![s.to_string()];
    };
    let Some(close) = s[open..].find('}').map(|c| open + c) else {
        return vec![s.to_string()];
    };
    let (a, b) = s[open + 1..close].split_once("...").unwrap_or(("0", "0"));
    let (a, b): (u32, u32) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
    let tails = expand(&s[close + 1..]);
    let mut out = Vec::new();
    for n in a..=b {
        for tail in &tails {
            out.push(format!("{}{n}{tail}", &s[..open]));
        }
    }
    out
}

/// A TCP/UDP port number, 1-65535.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    /// Refuses port 0.
    pub fn new(p: u16) -> Result<Self, InvalidValue> {
        if p == 0 {
            return Err(invalid("port", "0", "must be 1 to 65535"));
        }
        Ok(Port(p))
    }
    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }
    pub(crate) const fn of(p: u16) -> Port {
        Port(p)
    }
}

/// Deserializes an integer in `lo..=hi` inside the visitor, so the parser
/// reports the field path and position of a bad value.
pub(crate) fn deserialize_ranged<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    lo: u64,
    hi: u64,
) -> Result<u64, D::Error> {
    struct V(&'static str, u64, u64);
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a {} from {} to {}", self.0, self.1, self.2)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            if v < self.1 || v > self.2 {
                return Err(E::custom(format!(
                    "invalid {} {v}: must be {} to {}",
                    self.0, self.1, self.2
                )));
            }
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(format!(
                    "invalid {} {v}: must be {} to {}",
                    self.0, self.1, self.2
                ))),
            }
        }
    }
    d.deserialize_u64(V(what, lo, hi))
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Port(deserialize_ranged(d, "port", 1, 65535)? as u16))
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(Hostname::new("devlab").is_ok());
        assert!(Hostname::new("minio-1.lab").is_ok());
        assert!(Hostname::new("-bad").is_err());
        assert!(Hostname::new("has space").is_err());
        assert!(Hostname::new("").is_err());
        assert!(Hostname::new("a..b").is_err());
    }

    #[test]
    fn paths() {
        assert!(AbsPath::new("/var/lib/minio").is_ok());
        assert!(AbsPath::new("/").is_ok());
        for bad in [
            "var/lib", "/a/../b", "/a//b", "/a/", "/a b", "/a$b", "/a\nb",
        ] {
            assert!(AbsPath::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_never_show() {
        let s = Secret::new("supersecret1").unwrap();
        assert_eq!(format!("{s:?}"), "\"***\"");
        let e = Secret::new("short").unwrap_err();
        assert!(!e.to_string().contains("short"), "{e}");
        let e = Secret::new("hunter2 zebra").unwrap_err();
        assert!(!e.to_string().contains("zebra"), "{e}");
    }

    #[test]
    fn urls_and_sizes() {
        let u = HttpUrl::new("http://minio:9000").unwrap();
        assert_eq!((u.host(), u.port(), u.scheme()), ("minio", 9000, "http"));
        assert_eq!(HttpUrl::new("https://s3.lab").unwrap().port(), 443);
        assert!(HttpUrl::new("http://minio:9000/path").is_err());
        assert!(HttpUrl::new("ftp://x").is_err());
        assert!(SparkUrl::new("spark://devlab:7077").is_ok());
        assert!(SparkUrl::new("spark://devlab").is_err());
        assert!(Memory::new("4g").is_ok());
        assert!(Memory::new("512m").is_ok());
        assert!(Memory::new("4").is_err());
        assert!(Memory::new("04g").is_err());
    }

    #[test]
    fn volumes_and_buckets() {
        assert!(VolumeExpr::new("http://minio{1...4}/data{1...2}").is_ok());
        assert!(VolumeExpr::new("/mnt/disk{1...4}").is_ok());
        assert!(VolumeExpr::new("http://minio{4...1}/data").is_err());
        assert!(VolumeExpr::new("http://minio{1..4}/data").is_err());
        assert!(VolumeExpr::new("/plain/dir").is_err());
        assert!(BucketName::new("lake").is_ok());
        assert!(BucketName::new("Lake").is_err());
        assert!(BucketName::new("192.168.1.1").is_err());
        assert!(BucketName::new("ab").is_err());
    }

    #[test]
    fn ssh_keys() {
        assert!(SshPublicKey::new(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyBodyForTests user@host"
        )
        .is_ok());
        assert!(SshPublicKey::new("command=\"x\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA").is_err());
        assert!(SshPublicKey::new("ssh-ed25519").is_err());
    }
}
