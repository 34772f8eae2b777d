//! MinIO's Prometheus endpoints, v2: `GET /minio/v2/metrics/cluster` and
//! `/minio/v2/metrics/node`, in the text exposition format, with MinIO's
//! metric names for what this stand-in can honestly report: one node, one
//! drive (the first volume: online when its directory is readable), its
//! capacity from statvfs, the bucket count (directories in the volume), the
//! process' start time and uptime. Everything else MinIO reports (S3 request
//! and traffic counters per API, healing, replication, ILM, scanner, IAM,
//! per-bucket usage) is not served: the stand-in does not do those things.
//!
//! Auth follows `MINIO_PROMETHEUS_AUTH_TYPE`: `public` serves anyone; `jwt`
//! (the default) wants `Authorization: Bearer <JWT>` as `mc admin prometheus
//! generate` makes it: HS512, signed with the secret key of the access key in
//! `sub`, `iss` = `prometheus`, `exp` in the future.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

/// What the endpoints need to know about the server.
pub struct Server {
    /// `host:port` of the API listener (MinIO's `server` label).
    pub addr: String,
    /// The drive (first volume).
    pub volume: std::path::PathBuf,
    /// Root credentials (the only user).
    pub user: String,
    pub pass: String,
    /// Unix time the process started.
    pub started: u64,
    /// `MINIO_PROMETHEUS_AUTH_TYPE` is `public`.
    pub public: bool,
}

/// Why a metrics request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No or malformed bearer token.
    Unauthorized(&'static str),
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks the request's Authorization header value (if any).
pub fn authorize(s: &Server, authorization: Option<&str>) -> Result<(), Refused> {
    if s.public {
        return Ok(());
    }
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(Refused::Unauthorized("missing bearer token"))?;
    check_jwt(token, &s.user, &s.pass, now())
}

fn b64(part: &str) -> Option<Vec<u8>> {
    base64_simd::URL_SAFE_NO_PAD
        .decode_to_vec(part.trim_end_matches('='))
        .ok()
}

/// Verifies an HS512 JWT for `user` signed with `secret`, valid at `now`.
pub fn check_jwt(token: &str, user: &str, secret: &str, now: u64) -> Result<(), Refused> {
    let bad = Refused::Unauthorized;
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a JWT"));
    };
    let header: serde_json::Value = serde_json::from_slice(&b64(h).ok_or(bad("bad JWT header"))?)
        .map_err(|_| bad("bad JWT header"))?;
    if header["alg"] != "HS512" {
        return Err(bad("JWT must be HS512"));
    }
    let sig = b64(sig).ok_or(bad("bad JWT signature"))?;
    let mut mac =
        <Hmac<Sha512> as KeyInit>::new_from_slice(secret.as_bytes()).map_err(|_| bad("bad key"))?;
    mac.update(format!("{h}.{c}").as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| bad("JWT signature mismatch"))?;
    let claims: serde_json::Value = serde_json::from_slice(&b64(c).ok_or(bad("bad JWT claims"))?)
        .map_err(|_| bad("bad JWT claims"))?;
    if claims["sub"] != user {
        return Err(bad("JWT subject is not a known access key"));
    }
    if claims["iss"] != "prometheus" {
        return Err(bad("JWT issuer must be prometheus"));
    }
    match claims["exp"].as_u64() {
        Some(exp) if exp > now => Ok(()),
        _ => Err(bad("JWT expired")),
    }
}

/// Signs a token like `mc admin prometheus generate` (for the self-tests).
#[cfg(test)]
pub fn make_jwt(user: &str, secret: &str, exp: u64) -> String {
    let enc = |b: &[u8]| base64_simd::URL_SAFE_NO_PAD.encode_to_string(b);
    let h = enc(br#"{"alg":"HS512","typ":"JWT"}"#);
    let c = enc(format!(r#"{{"exp":{exp},"sub":"{user}","iss":"prometheus"}}"#).as_bytes());
    let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", enc(&mac.finalize().into_bytes()))
}

/// statvfs of `p`: (total, free) bytes, None when the drive is unreadable.
fn capacity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

fn buckets(p: &Path) -> Option<u64> {
    let n = std::fs::read_dir(p)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    Some(n as u64)
}

fn gauge(o: &mut String, name: &str, help: &str, labels: &str, v: impl std::fmt::Display) {
    let _ = writeln!(
        o,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}"
    );
}

/// `/minio/v2/metrics/cluster`.
pub fn cluster(s: &Server) -> String {
    let server = format!("server=\"{}\"", s.addr);
    let cap = capacity(&s.volume);
    let online = u8::from(cap.is_some() && std::fs::read_dir(&s.volume).is_ok());
    let (total, free) = cap.unwrap_or((0, 0));
    let mut o = String::new();
    gauge(
        &mut o,
        "minio_cluster_nodes_online_total",
        "Total number of MinIO nodes online",
        &server,
        1,
    );
    gauge(
        &mut o,
        "minio_cluster_nodes_offline_total",
        "Total number of MinIO nodes offline",
        &server,
        0,
    );
    gauge(
        &mut o,
        "minio_cluster_drive_online_total",
        "Total drives online in the cluster",
        &server,
        online,
    );
    gauge(
        &mut o,
        "minio_cluster_drive_offline_total",
        "Total drives offline in the cluster",
        &server,
        1 - online,
    );
    gauge(
        &mut o,
        "minio_cluster_drive_total",
        "Total drives in the cluster",
        &server,
        1,
    );
    gauge(
        &mut o,
        "minio_cluster_health_status",
        "Get current cluster health status",
        &server,
        online,
    );
    gauge(
        &mut o,
        "minio_cluster_capacity_raw_total_bytes",
        "Total capacity online in the cluster",
        &server,
        total,
    );
    gauge(
        &mut o,
        "minio_cluster_capacity_raw_free_bytes",
        "Total free capacity online in the cluster",
        &server,
        free,
    );
    // One drive, no erasure coding: usable equals raw.
    gauge(
        &mut o,
        "minio_cluster_capacity_usable_total_bytes",
        "Total usable capacity online in the cluster",
        &server,
        total,
    );
    gauge(
        &mut o,
        "minio_cluster_capacity_usable_free_bytes",
        "Total free usable capacity online in the cluster",
        &server,
        free,
    );
    if let Some(n) = buckets(&s.volume) {
        gauge(
            &mut o,
            "minio_cluster_bucket_total",
            "Total number of buckets in the cluster",
            &server,
            n,
        );
    }
    o
}

/// `/minio/v2/metrics/node`.
pub fn node(s: &Server) -> String {
    let drive = format!("drive=\"{}\",server=\"{}\"", s.volume.display(), s.addr);
    let server = format!("server=\"{}\"", s.addr);
    let mut o = String::new();
    if let Some((total, free)) = capacity(&s.volume) {
        gauge(
            &mut o,
            "minio_node_drive_total_bytes",
            "Total storage on a drive",
            &drive,
            total,
        );
        gauge(
            &mut o,
            "minio_node_drive_free_bytes",
            "Total storage available on a drive",
            &drive,
            free,
        );
        gauge(
            &mut o,
            "minio_node_drive_used_bytes",
            "Total storage used on a drive",
            &drive,
            total - free,
        );
    }
    gauge(
        &mut o,
        "minio_node_process_starttime_seconds",
        "Start time for MinIO process per node, time in seconds since Unix epoc",
        &server,
        s.started,
    );
    gauge(
        &mut o,
        "minio_node_process_uptime_seconds",
        "Uptime for MinIO process per node in seconds",
        &server,
        now().saturating_sub(s.started),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_round_trip_and_refusals() {
        let t = make_jwt("labadmin", "correct-horse", 2000);
        assert_eq!(check_jwt(&t, "labadmin", "correct-horse", 1000), Ok(()));
        assert!(
            check_jwt(&t, "labadmin", "correct-horse", 3000).is_err(),
            "expired"
        );
        assert!(check_jwt(&t, "labadmin", "wrong-secret", 1000).is_err());
        assert!(check_jwt(&t, "other", "correct-horse", 1000).is_err());
        assert!(check_jwt("a.b", "labadmin", "correct-horse", 1000).is_err());
    }

    #[test]
    fn endpoints_name_minio_metrics() {
        let d = std::env::temp_dir();
        let s = Server {
            addr: "127.0.0.1:9000".into(),
            volume: d,
            user: "u".into(),
            pass: "p".into(),
            started: 1,
            public: true,
        };
        let c = cluster(&s);
        assert!(
            c.contains("minio_cluster_drive_offline_total{server=\"127.0.0.1:9000\"} 0\n"),
            "{c}"
        );
        assert!(
            c.contains("minio_cluster_nodes_online_total{server=\"127.0.0.1:9000\"} 1\n"),
            "{c}"
        );
        let n = node(&s);
        assert!(
            n.contains("# TYPE minio_node_drive_free_bytes gauge\n"),
            "{n}"
        );
        assert_eq!(authorize(&s, None), Ok(()));
        let private = Server { public: false, ..s };
        assert!(authorize(&private, None).is_err());
        let t = make_jwt("u", "p", now() + 60);
        assert_eq!(authorize(&private, Some(&format!("Bearer {t}"))), Ok(()));
    }
}
