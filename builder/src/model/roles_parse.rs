//! The `roles:` part of a guest in a lab file: object store and Spark, with
//! their defaults (MinIO ports 9000/9001, /var/lib/minio, Spark 7077/8080/8081),
//! which come from the seed contract so builder and agent cannot disagree.
//! Cross-guest rules (pools, masters, S3 targets) live in [`super::check`].

use std::net::Ipv4Addr;
use std::path::Path;

use imgbuild_seed::defaults;

use super::lab::*;
use super::lab_parse::secret;
use super::types::{parse_guest_path, Hostname, Port, SecretRef};
use super::yaml::{Ctx, Field, Map};

pub(super) fn roles(ctx: &mut Ctx, f: Field<'_>, base: &Path) -> Option<Roles> {
    let m = ctx.map(f, &["object_store", "spark", "monitoring"])?;
    let object_store = m.opt("object_store").map(|f| object_store(ctx, f, base));
    let spark = m.opt("spark").map(|f| spark(ctx, f, base));
    // Like `master:`, a bare `monitoring:` takes every default.
    let monitoring = m
        .has("monitoring")
        .then(|| super::monitoring::parse(ctx, m.opt("monitoring")));
    Some(Roles {
        monitoring: match monitoring {
            Some(o) => Some(o?),
            None => None,
        },
        object_store: match object_store {
            Some(o) => Some(o?),
            None => None,
        },
        spark: match spark {
            Some(s) => Some(s?),
            None => None,
        },
    })
}

fn port_or(ctx: &mut Ctx, m: &Map<'_>, key: &str, default: u16) -> Option<Port> {
    match m.opt(key) {
        Some(f) => ctx.scalar(&f, str::parse),
        None => Some(Port::of(default)),
    }
}

fn path_or(ctx: &mut Ctx, m: &Map<'_>, key: &str, default: &str) -> Option<String> {
    match m.opt(key) {
        Some(f) => ctx.scalar(&f, parse_guest_path),
        None => Some(default.to_string()),
    }
}

fn object_store(ctx: &mut Ctx, f: Field<'_>, base: &Path) -> Option<ObjectStore> {
    let m = ctx.map(
        f,
        &[
            "flavor",
            "pool",
            "drives_per_guest",
            "api_port",
            "console_port",
            "data_dir",
            "log_dir",
            "buckets",
            "root_user",
            "root_password",
            "data_volume",
        ],
    )?;
    let flavor = match m.opt("flavor") {
        Some(f) => ctx.scalar(&f, |s| match s {
            "minio" => Ok(Flavor::Minio),
            _ => Err(format!(
                "`{s}` is not a known object-store flavor: expected `minio`"
            )),
        }),
        None => Some(Flavor::Minio),
    };
    let pool = m.opt("pool").and_then(|f| {
        ctx.scalar(&f, |s| {
            s.parse::<Hostname>()
                .map(|h| h.to_string())
                .map_err(|e| format!("pool name {e}"))
        })
    });
    let pool_ok = m.opt("pool").is_none() || pool.is_some();
    let drives = match m.opt("drives_per_guest") {
        Some(f) => ctx.scalar(&f, |s| match s.parse::<u32>() {
            Ok(n) if (1..=64).contains(&n) => Ok(n),
            _ => Err(format!("`{s}`: expected a whole number of drives 1..=64")),
        }),
        None => Some(1),
    };
    let api_port = port_or(ctx, &m, "api_port", defaults::MINIO_API_PORT);
    let console_port = port_or(ctx, &m, "console_port", defaults::MINIO_CONSOLE_PORT);
    let data_dir = path_or(ctx, &m, "data_dir", defaults::MINIO_DATA_DIR);
    let log_dir = path_or(ctx, &m, "log_dir", defaults::MINIO_LOG_DIR);
    let buckets = match m.opt("buckets") {
        Some(f) => ctx.seq(&f).and_then(|items| {
            items
                .iter()
                .map(|i| ctx.scalar(i, parse_bucket))
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Option<Vec<_>>>()
        }),
        None => Some(Vec::new()),
    };
    let root_user = m
        .req(
            ctx,
            "root_user",
            "a secret reference, e.g. `env:MINIO_ROOT_USER`",
        )
        .and_then(|f| secret(ctx, &f, base));
    let root_password = m
        .req(
            ctx,
            "root_password",
            "a secret reference, e.g. `env:MINIO_ROOT_PASSWORD`",
        )
        .and_then(|f| secret(ctx, &f, base));
    let data_volume = super::volume::parse(ctx, m.opt("data_volume"));
    if !pool_ok {
        return None;
    }
    Some(ObjectStore {
        flavor: flavor?,
        pool,
        drives_per_guest: drives?,
        api_port: api_port?,
        console_port: console_port?,
        data_dir: data_dir?,
        log_dir: log_dir?,
        buckets: buckets?,
        root_user: root_user?,
        root_password: root_password?,
        data_volume: data_volume?,
    })
}

/// S3 bucket naming rules: 3-63 of `a-z0-9.-`, starting and ending with a letter or digit.
fn parse_bucket(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !s.contains("..")
        && s.parse::<Ipv4Addr>().is_err();
    if !ok {
        return Err(format!(
            "`{s}` is not a valid bucket name: 3-63 lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit"
        ));
    }
    Ok(s.to_string())
}

fn spark(ctx: &mut Ctx, f: Field<'_>, base: &Path) -> Option<Spark> {
    let at = f.key_pos;
    let path = f.path.clone();
    let m = ctx.map(f, &["master", "worker", "s3", "auth_secret"])?;
    // `master: {}` takes every default; a bare `master:` is treated the same.
    let master = if m.has("master") {
        Some(match m.opt("master") {
            Some(f) => ctx.map(f, &["port", "ui_port"]).and_then(|mm| {
                let port = port_or(ctx, &mm, "port", defaults::SPARK_MASTER_PORT);
                let ui_port = port_or(ctx, &mm, "ui_port", defaults::SPARK_MASTER_UI_PORT);
                Some(SparkMaster {
                    port: port?,
                    ui_port: ui_port?,
                })
            }),
            None => Some(SparkMaster {
                port: Port::of(defaults::SPARK_MASTER_PORT),
                ui_port: Port::of(defaults::SPARK_MASTER_UI_PORT),
            }),
        })
    } else {
        None
    };
    let worker = m.opt("worker").map(|f| {
        let wm = ctx.map(f, &["master", "cores", "memory", "ui_port"])?;
        let master = wm
            .req(
                ctx,
                "master",
                "the name of the guest running the Spark master",
            )
            .and_then(|f| ctx.scalar(&f, str::parse::<Hostname>));
        let cores = wm
            .req(ctx, "cores", "cores offered to executors, e.g. 2")
            .and_then(|f| ctx.scalar(&f, str::parse));
        let memory = wm
            .req(ctx, "memory", "memory offered to executors, e.g. 4GiB")
            .and_then(|f| ctx.scalar(&f, str::parse));
        let ui_port = port_or(ctx, &wm, "ui_port", defaults::SPARK_WORKER_UI_PORT);
        Some(SparkWorker {
            master: master?,
            cores: cores?,
            memory: memory?,
            ui_port: ui_port?,
        })
    });
    let s3 = m.opt("s3").map(|f| {
        let sm = ctx.map(f, &["object_store", "access_key", "secret_key"])?;
        let target = sm
            .req(
                ctx,
                "object_store",
                "the name of a guest with the object_store role",
            )
            .and_then(|f| ctx.scalar(&f, str::parse::<Hostname>));
        let access = sm
            .req(
                ctx,
                "access_key",
                "Spark's own S3 user, a secret reference such as `env:SPARK_S3_ACCESS_KEY` (the object store creates it; never its root user)",
            )
            .and_then(|f| secret(ctx, &f, base));
        let secret_key = sm
            .req(
                ctx,
                "secret_key",
                "that user's secret key, a secret reference such as `env:SPARK_S3_SECRET_KEY`",
            )
            .and_then(|f| secret(ctx, &f, base));
        Some(S3Raw {
            target: target?,
            access: access?,
            secret: secret_key?,
        })
    });
    let auth_secret = m.opt("auth_secret").map(|f| secret(ctx, &f, base));
    if master.is_none() && worker.is_none() {
        ctx.err_at(at, &path, "configure a Spark `master`, a `worker`, or both");
        return None;
    }
    let master = flatten(master)?;
    let worker = flatten(worker)?;
    let s3 = flatten(s3)?;
    let auth_secret = flatten(auth_secret)?;
    Some(Spark {
        master,
        worker,
        s3: s3.map(|r| SparkS3 {
            object_store: r.target,
            access_key: r.access,
            secret_key: r.secret,
        }),
        auth_secret,
    })
}

struct S3Raw {
    target: Hostname,
    access: SecretRef,
    secret: SecretRef,
}

/// `None` = absent (fine), `Some(None)` = present but invalid.
fn flatten<T>(v: Option<Option<T>>) -> Option<Option<T>> {
    match v {
        None => Some(None),
        Some(Some(t)) => Some(Some(t)),
        Some(None) => None,
    }
}
