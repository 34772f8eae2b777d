//! `minio`: a test-only stand-in for the MinIO server, for imgbuild's end-to-end tests.
//!
//! The real MinIO binary cannot be downloaded on the machines these tests run on, so
//! this binary follows the parts of MinIO's interface that imgbuild relies on and serves
//! a real S3 API from the s3s-fs crate (SigV4-authenticated, path-style):
//!
//! - `minio server [--address ADDR] [--console-address ADDR] VOLUME...`
//!   (`ADDR` is `:PORT` or `HOST:PORT`; volumes may also come from `MINIO_VOLUMES`,
//!   split on whitespace, as upstream's unit passes `$MINIO_OPTS $MINIO_VOLUMES`);
//!   objects are stored under the first volume directory.
//! - `MINIO_ROOT_USER` / `MINIO_ROOT_PASSWORD` (legacy `MINIO_ACCESS_KEY` /
//!   `MINIO_SECRET_KEY`) are the root credentials; unset means
//!   `minioadmin:minioadmin` with a warning, like upstream.
//! - users and canned policies through MinIO's admin API (`add-user`,
//!   `add-canned-policy`, `idp/builtin/policy/attach`: SigV4 by root, madmin-
//!   encrypted bodies; see `admin.rs`), enforced on every S3 request: root may
//!   do anything, another user only what its policies allow (`iam.rs`).
//! - `GET|HEAD /minio/health/live`, `/minio/health/ready`, `/minio/health/cluster`
//!   answer 200 without authentication.
//! - `GET /minio/v2/metrics/cluster` and `/minio/v2/metrics/node`: the MinIO
//!   metrics it can honestly report, public or behind a bearer JWT as
//!   `MINIO_PROMETHEUS_AUTH_TYPE` says (see `metrics.rs`).
//! - the console address answers `GET /` (and any path) with a small HTML page.
//! - `READY=1` is sent to `$NOTIFY_SOCKET` once both listeners are bound
//!   (upstream's minio.service is `Type=notify`); SIGTERM/SIGINT stop it cleanly.
//! - `minio --version` prints a MinIO-like version line that says it is a stand-in.
//!
//! Distributed volumes (`http://host{1...n}/path`) are not supported: it exits 1 saying so.

mod admin;
mod iam;
mod madmin;
mod metrics;

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::Body;
use tokio::net::TcpListener;

const RELEASE: &str = "RELEASE.2025-10-15T17-29-55Z";

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct ServerArgs {
    address: String,
    console_address: Option<String>,
    volumes: Vec<String>,
}

fn usage() -> &'static str {
    "usage: minio server [--address ADDR] [--console-address ADDR] VOLUME...\n       minio --version\n\
     (imgbuild test stand-in for MinIO; see tests/minio-standin)"
}

fn version_text() -> String {
    format!(
        "minio version {RELEASE} (commit-id=imgbuild-test-standin)\n\
         Runtime: rust, s3s-fs 0.14.1 linux/amd64\n\
         Note: this is imgbuild's test stand-in for MinIO, not MinIO itself.\n"
    )
}

/// Parses `server` arguments. Errors are usage errors (exit 2).
fn parse_server_args(args: &[String]) -> Result<ServerArgs, String> {
    let mut address = ":9000".to_string();
    let mut console_address = None;
    let mut volumes = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag {
            "--address" => address = value("--address")?,
            "--console-address" => console_address = Some(value("--console-address")?),
            // Accepted and ignored, so MINIO_OPTS written for the real server works.
            "--certs-dir" | "-S" | "--ftp" | "--sftp" => {
                value(flag)?;
            }
            "--quiet" | "--anonymous" | "--json" => {}
            f if f.starts_with('-') => return Err(format!("unknown flag {f}")),
            _ => volumes.push(a.clone()),
        }
    }
    if volumes.is_empty() {
        if let Ok(v) = std::env::var("MINIO_VOLUMES") {
            volumes = v.split_whitespace().map(str::to_string).collect();
        }
    }
    if volumes.is_empty() {
        return Err("no VOLUME given (and MINIO_VOLUMES is empty)".into());
    }
    Ok(ServerArgs {
        address,
        console_address,
        volumes,
    })
}

/// `:9000` -> 0.0.0.0:9000 (upstream listens on every interface), `host:port` as given.
fn listen_addr(addr: &str) -> Result<String, String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr:?} is not HOST:PORT or :PORT"))?;
    port.parse::<u16>()
        .map_err(|_| format!("address {addr:?} has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(if host.is_empty() {
        format!("0.0.0.0:{port}")
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

fn credentials() -> Result<(String, String), String> {
    let user = std::env::var("MINIO_ROOT_USER")
        .or_else(|_| std::env::var("MINIO_ACCESS_KEY"))
        .ok();
    let pass = std::env::var("MINIO_ROOT_PASSWORD")
        .or_else(|_| std::env::var("MINIO_SECRET_KEY"))
        .ok();
    match (user, pass) {
        (None, None) => {
            eprintln!(
                "WARNING: Detected default credentials 'minioadmin:minioadmin', \
                 we recommend that you change these values with 'MINIO_ROOT_USER' and 'MINIO_ROOT_PASSWORD'"
            );
            Ok(("minioadmin".into(), "minioadmin".into()))
        }
        (Some(u), Some(p)) => {
            if u.len() < 3 {
                return Err(
                    "Invalid credentials: MINIO_ROOT_USER length should be at least 3".into(),
                );
            }
            if p.len() < 8 {
                return Err(
                    "Invalid credentials: MINIO_ROOT_PASSWORD length should be at least 8".into(),
                );
            }
            Ok((u, p))
        }
        _ => Err("MINIO_ROOT_USER and MINIO_ROOT_PASSWORD must be set together".into()),
    }
}

/// Sends `msg` to systemd's notification socket when `$NOTIFY_SOCKET` is set.
fn sd_notify(msg: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(msg.as_bytes(), &addr)?;
    } else {
        sock.send_to(msg.as_bytes(), PathBuf::from(path))?;
    }
    Ok(())
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        content_type.parse().expect("static header"),
    );
    r.headers_mut().insert(
        hyper::header::SERVER,
        "MinIO".parse().expect("static header"),
    );
    r
}

async fn api(
    s3: Arc<S3Service>,
    m: Arc<metrics::Server>,
    iam: iam::Iam,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxErr> {
    let path = req.uri().path();
    if path.starts_with(admin::PREFIX) {
        return Ok(admin::handle(&iam, req.map(Body::from)).await);
    }
    if req.method() == Method::GET
        && matches!(path, "/minio/v2/metrics/cluster" | "/minio/v2/metrics/node")
    {
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(metrics::Refused::Unauthorized(why)) = metrics::authorize(&m, auth) {
            return Ok(text(
                StatusCode::FORBIDDEN,
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                     <Message>Access Denied: {why}</Message><Resource>{path}</Resource></Error>"
                ),
            ));
        }
        let body = if path.ends_with("/cluster") {
            metrics::cluster(&m)
        } else {
            metrics::node(&m)
        };
        return Ok(text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            body,
        ));
    }
    if (req.method() == Method::GET || req.method() == Method::HEAD)
        && matches!(
            path,
            "/minio/health/live" | "/minio/health/ready" | "/minio/health/cluster"
        )
    {
        return Ok(text(StatusCode::OK, "text/plain", String::new()));
    }
    // MinIO has a single owner, so re-creating a bucket answers BucketAlreadyOwnedByYou
    // (s3s-fs says BucketAlreadyExists); clients treat the two differently.
    let create_bucket = req.method() == Method::PUT
        && req.uri().query().is_none_or(str::is_empty)
        && path.len() > 1
        && !path[1..].trim_end_matches('/').contains('/');
    let bucket = path[1..].trim_end_matches('/').to_string();
    let req = req.map(Body::from);
    match s3.call(req).await {
        Ok(resp) if create_bucket && resp.status() == StatusCode::CONFLICT => Ok(text(
            StatusCode::CONFLICT,
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>BucketAlreadyOwnedByYou</Code>\
                 <Message>Your previous request to create the named bucket succeeded and you already own it.</Message>\
                 <BucketName>{bucket}</BucketName><Resource>/{bucket}</Resource></Error>"
            ),
        )),
        Ok(resp) => Ok(resp),
        Err(e) => Err(format!("s3: {e:?}").into()),
    }
}

async fn console(_req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(text(
        StatusCode::OK,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html><head><title>MinIO Console</title></head><body>\
             <h1>MinIO Console</h1><p>imgbuild test stand-in for MinIO {RELEASE}: \
             the S3 API is on the --address port.</p></body></html>\n"
        ),
    ))
}

async fn run(args: ServerArgs) -> Result<(), BoxErr> {
    let (user, pass) = credentials().map_err(|e| -> BoxErr { e.into() })?;
    let first = &args.volumes[0];
    if first.starts_with("http://") || first.starts_with("https://") || first.contains("{") {
        return Err(format!(
            "volume {first:?}: distributed/expanded volumes are not supported by the imgbuild test stand-in"
        )
        .into());
    }
    let root = PathBuf::from(first);
    std::fs::create_dir_all(&root)
        .map_err(|e| format!("create volume directory {}: {e}", root.display()))?;
    let fs = s3s_fs::FileSystem::new(&root)
        .map_err(|e| format!("open volume {}: {e:?}", root.display()))?;
    let iam = iam::Iam::open(&user, &pass, Some(&root))?;
    let s3 = {
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(iam.clone());
        b.set_access(iam.clone());
        Arc::new(b.build())
    };

    let api_addr = listen_addr(&args.address)?;
    let api_listener = TcpListener::bind(&api_addr)
        .await
        .map_err(|e| format!("listen on {api_addr}: {e}"))?;
    let console_addr = listen_addr(args.console_address.as_deref().unwrap_or(":0"))?;
    let console_listener = TcpListener::bind(&console_addr)
        .await
        .map_err(|e| format!("listen on {console_addr}: {e}"))?;
    let api_local = api_listener.local_addr()?;
    let m = Arc::new(metrics::Server {
        addr: api_local.to_string(),
        volume: root.clone(),
        user: user.clone(),
        pass: pass.clone(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        public: std::env::var("MINIO_PROMETHEUS_AUTH_TYPE").as_deref() == Ok("public"),
    });
    let console_local = console_listener.local_addr()?;
    if args.console_address.is_none() {
        eprintln!(
            "WARNING: Console endpoint is listening on a dynamic port ({}), please use --console-address \":PORT\" to choose a static port.",
            console_local.port()
        );
    }
    println!("MinIO Object Storage Server (imgbuild test stand-in)");
    println!("Version: {RELEASE} (s3s-fs 0.14.1)");
    println!("API: http://{api_local}");
    println!("WebUI: http://{console_local}");
    println!("Storage: {}", root.display());

    let graceful = Arc::new(GracefulShutdown::new());
    let conn_builder = Arc::new(ConnBuilder::new(TokioExecutor::new()));

    if let Err(e) = sd_notify(&format!("READY=1\nSTATUS=serving S3 on {api_local}\n")) {
        eprintln!("WARNING: cannot notify systemd: {e}");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let (sock, is_api): (tokio::net::TcpStream, bool) = tokio::select! {
            r = api_listener.accept() => match r { Ok((s, _)) => (s, true), Err(e) => { eprintln!("accept: {e}"); continue } },
            r = console_listener.accept() => match r { Ok((s, _)) => (s, false), Err(e) => { eprintln!("accept: {e}"); continue } },
            _ = term.recv() => break,
            _ = ctrl_c.as_mut() => break,
        };
        let io = TokioIo::new(sock);
        if is_api {
            let s3 = s3.clone();
            let m = m.clone();
            let iam = iam.clone();
            let svc = service_fn(move |req| api(s3.clone(), m.clone(), iam.clone(), req));
            let conn = conn_builder.serve_connection(io, svc).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        } else {
            let conn = conn_builder
                .serve_connection(io, service_fn(console))
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    }
    let _ = sd_notify("STOPPING=1\n");
    eprintln!("Exiting on signal");
    let graceful =
        Arc::try_unwrap(graceful).map_err(|_| "graceful shutdown handle still shared")?;
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {},
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-v") | Some("version") => {
            print!("{}", version_text());
            return ExitCode::SUCCESS;
        }
        Some("server") => {}
        Some("-h") | Some("--help") | None => {
            eprintln!("{}", usage());
            return if args.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Some(other) => {
            eprintln!("minio: unknown command {other:?}\n{}", usage());
            return ExitCode::from(2);
        }
    }
    // MINIO_OPTS is normally expanded by the unit's ExecStart; accept the
    // env-only form too when nothing else was passed.
    let mut server_args: Vec<String> = args[1..].to_vec();
    if server_args.is_empty() {
        if let Ok(opts) = std::env::var("MINIO_OPTS") {
            server_args = opts.split_whitespace().map(str::to_string).collect();
        }
    }
    let parsed = match parse_server_args(&server_args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("minio: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MINIO_STANDIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("minio: start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(parsed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR Unable to start the server: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_style_arguments() {
        let a: Vec<String> = [
            "--address",
            ":9000",
            "--console-address=:9001",
            "/var/lib/minio",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = parse_server_args(&a).unwrap();
        assert_eq!(p.address, ":9000");
        assert_eq!(p.console_address.as_deref(), Some(":9001"));
        assert_eq!(p.volumes, vec!["/var/lib/minio"]);
        assert_eq!(listen_addr(":9000").unwrap(), "0.0.0.0:9000");
        assert_eq!(listen_addr("127.0.0.1:9").unwrap(), "127.0.0.1:9");
        assert!(parse_server_args(&["--bogus".to_string()]).is_err());
    }
}
