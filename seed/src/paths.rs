//! The path policy for service directories (data, logs, work, homes), one
//! rule for the builder's validation and the agent's: a directory a service
//! owns must be its own. The agent creates and chowns these directories as
//! root, so a policy hole would hand a system directory to a service user.
//!
//! A service directory is never `/`, never a system directory or a parent of
//! one, never inside a tree the system or the image owns (`/etc`, `/usr`,
//! `/proc`, `/opt/java`, ...), and never inside or around another service's
//! directory (Spark's home, `/opt/spark`, is the Spark service's).

/// Within one service, directories that may nest: its data directory and
/// its volumes (MinIO's drives live in it), its home and anything else.
fn may_nest(a: &ServiceDir<'_>, b: &ServiceDir<'_>) -> bool {
    let data = |w: &str| w == "data_dir" || w == "volumes";
    a.service == b.service
        && (a.what == b.what
            || a.path == b.path
            || a.what == "home"
            || b.what == "home"
            || (data(a.what) && data(b.what)))
}

/// Trees owned by the system, the image or people (`/home`, hidden from
/// services by `ProtectHome=`): no service directory
/// may be one of these, contain one, or lie inside one.
pub const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/lost+found",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/snap",
    "/sys",
    "/tmp",
    "/usr",
    "/var/tmp",
    "/var/cache",
    "/var/spool",
    "/var/mail",
    "/var/run",
    "/var/lock",
    "/var/backups",
    "/var/lib/dpkg",
    "/var/lib/apt",
    "/var/lib/systemd",
    "/var/lib/imgbuild",
    "/var/log/journal",
    crate::defaults::JAVA_HOME,
];

/// Directories that hold other things' directories: a service directory may
/// sit below them but never be one of them (or contain one).
pub const SHARED_PARENTS: &[&str] = &[
    "/media",
    "/mnt",
    "/opt",
    "/srv",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/opt",
    "/var/local",
];

/// Whether `inner` is `outer` or lies below it (both normalized absolute).
pub fn within(inner: &str, outer: &str) -> bool {
    outer == "/"
        || inner == outer
        || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

/// Whether either path contains the other.
pub fn overlap(a: &str, b: &str) -> bool {
    within(a, b) || within(b, a)
}

/// Why `dir` may not be a service's own directory, if it may not.
pub fn system_dir_problem(dir: &str) -> Option<String> {
    if dir == "/" {
        return Some(
            "`/` cannot be a service's directory: pick one of its own, e.g. /var/lib/minio".into(),
        );
    }
    if SYSTEM_TREES.contains(&dir) {
        return Some(format!(
            "`{dir}` is a directory of the system or the image: pick a directory of the service's own, e.g. /var/lib/<service>"
        ));
    }
    for p in SHARED_PARENTS {
        if within(p, dir) {
            return Some(format!(
                "`{dir}` is (or contains) {p}, a directory shared by the whole system: pick a directory of the service's own below it, e.g. {p}/<service>"
            ));
        }
    }
    for t in SYSTEM_TREES {
        if within(dir, t) {
            return Some(format!(
                "`{dir}` is inside {t}, which belongs to the system or the image: pick a directory of the service's own, e.g. /var/lib/<service>"
            ));
        }
        if within(t, dir) {
            return Some(format!(
                "`{dir}` contains {t}, which belongs to the system or the image: pick a directory of the service's own, e.g. /var/lib/<service>"
            ));
        }
    }
    None
}

/// One service directory of a guest: whose it is and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDir<'a> {
    /// The service (`object store`, `spark`).
    pub service: &'static str,
    /// What the directory is (`data_dir`, `log_dir`, ...), as the field is named.
    pub what: &'static str,
    /// The directory.
    pub path: &'a str,
}

/// Every problem with a guest's service directories, as (index into `dirs`,
/// message): system directories, and directories of different services, or
/// of different purposes, inside one another. Identical paths of the same
/// service and purpose (a volume that is the data directory) are fine.
pub fn problems(dirs: &[ServiceDir<'_>]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        if let Some(p) = system_dir_problem(d.path) {
            out.push((i, p));
            continue;
        }
        for e in &dirs[..i] {
            if may_nest(d, e) || !overlap(d.path, e.path) {
                continue;
            }
            let whose = if e.service == d.service {
                format!("its {}", e.what)
            } else {
                format!("the {}'s {}", e.service, e.what)
            };
            out.push((
                i,
                format!(
                    "`{}` and {whose} `{}` lie inside one another: give each its own directory",
                    d.path, e.path
                ),
            ));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_directories_and_their_parents_are_refused() {
        for bad in [
            "/",
            "/etc",
            "/etc/minio",
            "/usr",
            "/usr/local/minio",
            "/var",
            "/var/lib",
            "/var/log",
            "/root",
            "/root/data",
            "/boot",
            "/proc/x",
            "/tmp/minio",
            "/opt",
            "/opt/java",
            "/opt/java/x",
            "/var/lib/systemd",
            "/home",
            "/home/minio",
            "/srv",
        ] {
            assert!(system_dir_problem(bad).is_some(), "{bad}");
        }
        for ok in [
            "/var/lib/minio",
            "/var/log/minio",
            "/srv/minio",
            "/data",
            "/mnt/disk1",
            "/opt/minio",
            "/var/lib/minio/drive1",
            "/etcetera",
        ] {
            assert_eq!(system_dir_problem(ok), None, "{ok}");
        }
    }

    #[test]
    fn services_keep_out_of_each_other() {
        let d = |service, what, path| ServiceDir {
            service,
            what,
            path,
        };
        let dirs = [
            d("object store", "data_dir", "/var/lib/minio"),
            d("object store", "volumes", "/var/lib/minio"),
            d("object store", "log_dir", "/var/lib/minio/logs"),
            d("spark", "home", "/opt/spark"),
            d("spark", "log_dir", "/opt/spark/logs"),
            d("spark", "work_dir", "/opt/spark/logs/work"),
            d("object store", "volumes", "/var/lib/minio/drive1"),
            d("object store", "volumes", "/opt/spark/minio"),
        ];
        let p = problems(&dirs);
        let idx: Vec<usize> = p.iter().map(|x| x.0).collect();
        assert_eq!(idx, [2, 5, 7], "{p:?}");
        assert!(p[2].1.contains("the spark's home"), "{p:?}");
        assert!(p[0].1.contains("its data_dir"), "{p:?}");
    }
}
