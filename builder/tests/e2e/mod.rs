//! Shared helpers for the end-to-end tests (`e2e_lxc.rs`, `e2e_vm.rs`):
//! where the cached test peers live, running `imgbuild` itself, a test recipe
//! and lab with freshly generated secrets, network namespaces, commands with
//! deadlines, and the checks a real client makes against a guest (S3 with
//! boto3, the Spark master's `/json/`, a SparkPi job, SSH key-only login).
//!
//! Every check takes an optional [`Netns`]: with one, the client runs inside
//! it (`ip netns exec`), so every packet stays in the test's own namespace.
//! Secrets reach clients through environment variables or files, never argv.

#![allow(dead_code)]

pub mod up;
pub mod userns;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The repository root (builder/..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ has a parent")
        .to_path_buf()
}

/// The cached test peers built by `scripts/peers` (see COMMON.md's layout).
#[derive(Debug, Clone)]
pub struct Peers {
    /// `$IMGBUILD_TEST_CACHE`, else `$XDG_CACHE_HOME/imgbuild-test`, else `~/.cache/imgbuild-test`.
    pub cache: PathBuf,
    /// The local artifact mirror (upstream file names + checksum files).
    pub mirror: PathBuf,
    /// The Java SparkPi job.
    pub sparkpi_jar: PathBuf,
    /// imgbuild's artifact cache for the tests (reused between runs).
    pub imgbuild_cache: PathBuf,
}

impl Peers {
    /// Finds the peers, or panics saying how to build them.
    pub fn require() -> Peers {
        let cache = match std::env::var_os("IMGBUILD_TEST_CACHE") {
            Some(c) if !c.is_empty() => PathBuf::from(c),
            _ => std::env::var_os("XDG_CACHE_HOME")
                .filter(|x| !x.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .expect("HOME or XDG_CACHE_HOME is set")
                .join("imgbuild-test"),
        };
        let p = Peers {
            mirror: cache.join("mirror"),
            sparkpi_jar: cache.join("sparkpi/sparkpi.jar"),
            imgbuild_cache: cache.join("imgbuild-cache"),
            cache,
        };
        for f in [
            p.mirror
                .join("ubuntu-22.04-standard_22.04-1_amd64.tar.zst.sha512"),
            p.mirror.join("spark-3.5.9-bin-hadoop3.tgz"),
            p.sparkpi_jar.clone(),
        ] {
            assert!(
                f.is_file(),
                "{} is missing: build the test peers with scripts/peers (scripts/test does) \
                 or point IMGBUILD_TEST_CACHE at their cache",
                f.display()
            );
        }
        fs::create_dir_all(&p.imgbuild_cache).expect("creating imgbuild's test cache");
        p
    }

    /// The mirror's Spark tarball.
    pub fn spark_tgz(&self) -> PathBuf {
        self.mirror.join("spark-3.5.9-bin-hadoop3.tgz")
    }
}

/// How long one ssh login into a guest may take (`imgbuild ssh`, verify's
/// checks). Normally a second. Before the local runner gave each container
/// a cgroup of its own (49cbde3), a container's systemd saw other
/// containers' processes in its units' cgroups: stopping root's user
/// manager (user@0.service, 10 s after the last session ended) ran ~2 min
/// into its stop timeouts ("Processes still around after final SIGKILL"),
/// and a login arriving meanwhile waited for it with nothing on stderr (the
/// worker stop in e2e_monitoring, reproduced here twice). Deadlines on
/// logins stay above such a stall, so one slows a test instead of failing it.
pub const SSH_LOGIN: Duration = Duration::from_secs(240);

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs `cmd` (stdin from `input`, or /dev/null) and waits at most `timeout`;
/// on timeout the process is killed and this is an error naming `what`.
pub fn run_timeout(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
    what: &str,
) -> Result<Output, String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    run_stdin_set(cmd, input, timeout, what)
}

/// Like [`run_timeout`] with stdin read from `file`.
pub fn run_file_stdin(
    cmd: &mut Command,
    file: &Path,
    timeout: Duration,
    what: &str,
) -> Result<Output, String> {
    let f = fs::File::open(file).map_err(|e| format!("{what}: {}: {e}", file.display()))?;
    cmd.stdin(f);
    let o = run_stdin_set(cmd, None, timeout, what)?;
    if !o.ok() {
        return Err(format!(
            "{what}: {}\nstderr:\n{}",
            o.status,
            tail(&o.stderr, 60)
        ));
    }
    Ok(o)
}

fn run_stdin_set(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
    what: &str,
) -> Result<Output, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr =
                    String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
                return Err(format!(
                    "{what}: still running after {}s, killed; stderr:\n{}",
                    timeout.as_secs(),
                    tail(&stderr, 40)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{what}: waiting: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned(),
    })
}

/// Like [`run_timeout`], but a non-zero exit is an error too (with stderr).
pub fn run_ok(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
    what: &str,
) -> Result<Output, String> {
    let o = run_timeout(cmd, input, timeout, what)?;
    if !o.ok() {
        return Err(format!(
            "{what}: {}\nstdout:\n{}\nstderr:\n{}",
            o.status,
            tail(&o.stdout, 40),
            tail(&o.stderr, 60)
        ));
    }
    Ok(o)
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Calls `f` until it returns `Ok(Some(_))`, every `every`, for at most
/// `deadline`; `Ok(None)` means "not yet", `Err` gives up at once. The
/// timeout error carries the last "not yet" reason `f` stored in `why`.
pub fn poll<T>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut f: impl FnMut(&mut String) -> Result<Option<T>, String>,
) -> Result<T, String> {
    let end = Instant::now() + deadline;
    let mut why = String::new();
    loop {
        if let Some(v) = f(&mut why)? {
            return Ok(v);
        }
        if Instant::now() >= end {
            return Err(format!(
                "{what}: not within {}s (last: {why})",
                deadline.as_secs()
            ));
        }
        std::thread::sleep(every);
    }
}

/// The `imgbuild` binary under test, with the tests' persistent artifact cache.
pub fn imgbuild(peers: &Peers) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgbuild"));
    c.arg("--cache-dir").arg(&peers.imgbuild_cache);
    c
}

/// Runs `imgbuild ARGS` to success within `timeout`; returns its stdout.
pub fn imgbuild_ok(peers: &Peers, args: &[&str], timeout: Duration) -> String {
    let what = format!("imgbuild {}", args.join(" "));
    match run_ok(imgbuild(peers).args(args), None, timeout, &what) {
        Ok(o) => o.stdout,
        Err(e) => panic!("{e}"),
    }
}

/// Copies `images/<name>.yaml` into `dir/images/` for a test bake. A base
/// pinned inline to the real upstream digest (`digest: sha512:...`, the
/// Proxmox template) is re-pinned to the test base's digest from the
/// mirror's `<file>.sha512`; nothing else changes. Returns the copy's path.
pub fn test_recipe(peers: &Peers, name: &str, dir: &Path) -> PathBuf {
    let src = repo_root().join("images").join(format!("{name}.yaml"));
    let text = fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut out = String::new();
    let mut in_base = false;
    let mut base_url = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_base = line.starts_with("base:");
        }
        let t = line.trim_start();
        if in_base {
            if let Some(u) = t.strip_prefix("url:") {
                base_url = u.trim().to_string();
            }
            if t.starts_with("digest: sha512:") {
                let file = base_url
                    .rsplit('/')
                    .next()
                    .expect("base url has a file name");
                let sidecar = peers.mirror.join(format!("{file}.sha512"));
                let sums = fs::read_to_string(&sidecar)
                    .unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
                let hex = sums.split_whitespace().next().expect("a digest");
                let indent = &line[..line.len() - t.len()];
                out.push_str(&format!("{indent}digest: sha512:{hex}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    let images = dir.join("images");
    fs::create_dir_all(&images).unwrap();
    let dst = images.join(format!("{name}.yaml"));
    fs::write(&dst, out).unwrap();
    dst
}

/// `imgbuild lock --mirror --trust-mirror-checksums` into the recipe's
/// directory (the test mirror stands in for the unreachable upstreams, so its
/// checksum files are trusted by name), then `imgbuild bake --locked`: the
/// product's own pinning path. Returns the image's path.
pub fn lock_and_bake(peers: &Peers, recipe: &Path, out_dir: &Path, timeout: Duration) -> PathBuf {
    let images = recipe.parent().expect("recipe in a directory");
    let mirror = peers.mirror.to_str().unwrap();
    imgbuild_ok(
        peers,
        &[
            "lock",
            "--images",
            images.to_str().unwrap(),
            "--mirror",
            mirror,
            "--trust-mirror-checksums",
            "-q",
        ],
        Duration::from_secs(120),
    );
    let out = imgbuild_ok(
        peers,
        &[
            "bake",
            "--recipe",
            recipe.to_str().unwrap(),
            "--mirror",
            mirror,
            "--locked",
            "--out-dir",
            out_dir.to_str().unwrap(),
            "-q",
        ],
        timeout,
    );
    let path = PathBuf::from(out.trim());
    assert!(path.is_file(), "bake printed {out:?}, which is no file");
    path
}

/// A test lab: the fixture copied into a directory with its secrets (0600)
/// and a fresh SSH key pair generated next to it.
#[derive(Debug, Clone)]
pub struct TestLab {
    /// The lab file.
    pub path: PathBuf,
    /// The private key whose public half the lab authorizes.
    pub ssh_key: PathBuf,
    /// The object store's root user.
    pub s3_user: String,
    /// Its password.
    pub s3_password: String,
    /// Spark's own S3 user, which the object store creates.
    pub spark_s3_user: String,
    /// Its secret key.
    pub spark_s3_password: String,
    /// The Spark cluster's `spark.authenticate.secret`.
    pub spark_auth_secret: String,
}

/// Writes `tests/fixtures/<fixture>` into `dir` as `lab.yaml`, plus the files
/// its `file:` secrets and key reference: `root_user`, `root_password`,
/// `spark_access_key`, `spark_secret_key`, `spark_auth_secret` (all 0600,
/// fresh per run), `id_ed25519{,.pub}`.
pub fn test_lab(fixture: &str, dir: &Path) -> TestLab {
    let src = repo_root().join("tests/fixtures").join(fixture);
    let path = dir.join("lab.yaml");
    fs::copy(&src, &path).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    // A per-run password: nothing secret is committed or reused.
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let s3_user = "e2eadmin".to_string();
    let s3_password = format!("e2e-{:x}-{}", nanos, std::process::id());
    let spark_s3_user = "e2espark".to_string();
    let spark_s3_password = format!("e2e-spark-{:x}-{}", nanos, std::process::id());
    let spark_auth_secret = format!("e2e-auth-{:x}-{}", nanos, std::process::id());
    for (name, value) in [
        ("root_user", &s3_user),
        ("root_password", &s3_password),
        ("spark_access_key", &spark_s3_user),
        ("spark_secret_key", &spark_s3_password),
        ("spark_auth_secret", &spark_auth_secret),
    ] {
        let p = dir.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        writeln!(f, "{value}").unwrap();
    }
    let ssh_key = dir.join("id_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "imgbuild-e2e", "-f"])
            .arg(&ssh_key),
        None,
        Duration::from_secs(30),
        "ssh-keygen",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    TestLab {
        path,
        ssh_key,
        s3_user,
        s3_password,
        spark_s3_user,
        spark_s3_password,
        spark_auth_secret,
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// A network namespace of its own (unique name per test run), deleted on
/// drop; or, from [`Netns::existing`], someone else's (left alone).
pub struct Netns {
    pub name: String,
    owned: bool,
}

static NETNS_SEQ: AtomicU32 = AtomicU32::new(0);

/// Deletes the `ibe2e-*-<pid>-<n>` namespaces of test processes that are
/// gone (a run killed before its drops ran): they never collide with a new
/// one (the pid is in the name), but nothing else would ever remove them.
fn remove_stale_namespaces() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("ibe2e-") else {
            continue;
        };
        let mut fields = rest.rsplit('-');
        let (Some(_seq), Some(pid)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        eprintln!("e2e: removing network namespace {name} left by a run that is gone");
        let _ = run_timeout(
            Command::new("ip").args(["netns", "del", &name]),
            None,
            Duration::from_secs(20),
            "ip netns del (stale)",
        );
    }
}

impl Netns {
    /// Creates `ibe2e-<tag>-<pid>-<n>` with its loopback up (after removing
    /// the namespaces earlier, killed runs left).
    pub fn new(tag: &str) -> Netns {
        remove_stale_namespaces();
        let name = format!(
            "ibe2e-{tag}-{}-{}",
            std::process::id(),
            NETNS_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        run_ok(
            Command::new("ip").args(["netns", "add", &name]),
            None,
            Duration::from_secs(20),
            "ip netns add",
        )
        .unwrap_or_else(|e| panic!("{e} (the end-to-end tests run as root)"));
        let ns = Netns { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"])
            .unwrap_or_else(|e| panic!("{e}"));
        ns
    }

    /// A namespace created by someone else (`imgbuild up`): not deleted on drop.
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
            owned: false,
        }
    }

    /// The namespace's file, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME PROGRAM`: a command inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `nsenter --net=... PROGRAM`: only the network namespace changes. For
    /// systemd-nspawn, which needs the host's /sys (`ip netns exec` remounts
    /// /sys, hiding the cgroup hierarchy nspawn has to inspect).
    pub fn cmd_net_only(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output, String> {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        run_ok(
            &mut c,
            None,
            Duration::from_secs(20),
            &format!("ip {}", args.join(" ")),
        )
    }

    /// Waits until `iface` exists in the namespace, then gives it `cidr` and
    /// brings it up (the host side of a container's veth).
    pub fn configure_iface(
        &self,
        iface: &str,
        cidr: &str,
        deadline: Duration,
    ) -> Result<(), String> {
        configure_iface(&self.name, iface, cidr, deadline)
    }
}

/// [`Netns::configure_iface`] for a namespace known by name.
pub fn configure_iface(
    ns: &str,
    iface: &str,
    cidr: &str,
    deadline: Duration,
) -> Result<(), String> {
    let ip = |args: &[&str]| {
        run_ok(
            Command::new("ip").args(["-n", ns]).args(args),
            None,
            Duration::from_secs(20),
            &format!("ip -n {ns} {}", args.join(" ")),
        )
    };
    poll(
        &format!("interface {iface} in {ns}"),
        deadline,
        Duration::from_millis(100),
        |why| {
            let o = run_timeout(
                Command::new("ip").args(["-n", ns, "link", "show", iface]),
                None,
                Duration::from_secs(10),
                "ip link show",
            )?;
            *why = o.stderr.trim().to_string();
            Ok(o.ok().then_some(()))
        },
    )?;
    let have = ip(&["-o", "addr", "show", "dev", iface])?;
    if !have.stdout.contains(&format!(" {cidr} ")) {
        ip(&["addr", "add", cidr, "dev", iface])?;
    }
    ip(&["link", "set", iface, "up"])?;
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = run_timeout(
            Command::new("ip").args(["netns", "del", &self.name]),
            None,
            Duration::from_secs(20),
            "ip netns del",
        );
    }
}

/// Runs `cmd` inside `ns` when given, else on the host.
fn in_ns(ns: Option<&Netns>, program: &str) -> Command {
    match ns {
        Some(n) => n.cmd(program),
        None => Command::new(program),
    }
}

/// The real S3 client: python3 + boto3 (botocore's SigV4, path-style
/// addressing). Credentials come from the environment. Modes:
/// `check B1,B2`: the listing holds every bucket, and a put/get round trip
/// in the first one returns the same bytes; `put B K` (body on stdin);
/// `get B K` (body on stdout).
const S3_CLIENT: &str = r#"
import os, sys, time
import boto3
from botocore.config import Config
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["E2E_S3_ENDPOINT"],
    aws_access_key_id=os.environ["E2E_S3_USER"],
    aws_secret_access_key=os.environ["E2E_S3_PASSWORD"],
    region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                  retries={"max_attempts": 3, "mode": "standard"},
                  connect_timeout=5, read_timeout=30),
)
mode = sys.argv[1]
if mode == "check":
    want = sys.argv[2].split(",")
    have = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    missing = [b for b in want if b not in have]
    if missing:
        sys.exit("buckets missing: %s (listed: %s)" % (missing, have))
    body = ("imgbuild e2e %f\n" % time.time()).encode()
    s3.put_object(Bucket=want[0], Key="e2e/roundtrip.txt", Body=body)
    got = s3.get_object(Bucket=want[0], Key="e2e/roundtrip.txt")["Body"].read()
    if got != body:
        sys.exit("get returned %r, put %r" % (got, body))
    print("buckets: " + ",".join(have))
elif mode == "put":
    s3.put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=sys.stdin.buffer.read())
elif mode == "get":
    sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[2], Key=sys.argv[3])["Body"].read())
else:
    sys.exit("unknown mode " + mode)
"#;

fn s3_client(ns: Option<&Netns>, addr: &str, user: &str, password: &str) -> Command {
    let mut c = in_ns(ns, "python3");
    c.arg("-c")
        .arg(S3_CLIENT)
        .env("E2E_S3_ENDPOINT", format!("http://{addr}"))
        .env("E2E_S3_USER", user)
        .env("E2E_S3_PASSWORD", password);
    c
}

/// A real S3 client (boto3, SigV4, path style) at `addr` (`host:port`) lists
/// every bucket in `buckets` and round-trips an object through the first.
/// Returns the listed bucket names.
pub fn s3_check(
    ns: Option<&Netns>,
    addr: &str,
    user: &str,
    password: &str,
    buckets: &[&str],
) -> Result<String, String> {
    let o = run_ok(
        s3_client(ns, addr, user, password).args(["check", &buckets.join(",")]),
        None,
        Duration::from_secs(180),
        &format!("S3 check against http://{addr}"),
    )?;
    Ok(o.stdout.trim().to_string())
}

/// PUT `bucket/key` with `body` through boto3.
pub fn s3_put(
    ns: Option<&Netns>,
    addr: &str,
    user: &str,
    password: &str,
    bucket: &str,
    key: &str,
    body: &[u8],
) -> Result<(), String> {
    run_ok(
        s3_client(ns, addr, user, password).args(["put", bucket, key]),
        Some(body),
        Duration::from_secs(180),
        &format!("S3 put {bucket}/{key}"),
    )
    .map(|_| ())
}

/// GET `bucket/key` through boto3.
pub fn s3_get(
    ns: Option<&Netns>,
    addr: &str,
    user: &str,
    password: &str,
    bucket: &str,
    key: &str,
) -> Result<String, String> {
    run_ok(
        s3_client(ns, addr, user, password).args(["get", bucket, key]),
        None,
        Duration::from_secs(180),
        &format!("S3 get {bucket}/{key}"),
    )
    .map(|o| o.stdout)
}

/// GETs `url` with curl (inside `ns` when given). A refused or timed-out
/// connection or a transient HTTP error (5xx, 408, 429) is tried again, 4
/// times in all over at most ~2 minutes: the peers are services that may
/// have just started, on a loaded machine.
pub fn http_get(ns: Option<&Netns>, url: &str) -> Result<String, String> {
    run_ok(
        in_ns(ns, "curl").args([
            "-sS",
            "--fail",
            "--connect-timeout",
            "10",
            "-m",
            "20",
            "--retry",
            "3",
            "--retry-connrefused",
            "--retry-delay",
            "2",
            url,
        ]),
        None,
        Duration::from_secs(150),
        &format!("GET {url}"),
    )
    .map(|o| o.stdout)
}

/// The Spark master's UI at `master_ui_url` (`http://host:8080`) lists at
/// least `expect_workers` workers ALIVE in `/json/`. Returns the JSON.
pub fn spark_check(
    ns: Option<&Netns>,
    master_ui_url: &str,
    expect_workers: usize,
) -> Result<serde_json::Value, String> {
    let url = format!("{}/json/", master_ui_url.trim_end_matches('/'));
    let body = http_get(ns, &url)?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{url} is not JSON ({e}): {body}"))?;
    let alive = v["workers"]
        .as_array()
        .map(|w| w.iter().filter(|w| w["state"] == "ALIVE").count())
        .unwrap_or(0);
    if alive < expect_workers {
        return Err(format!(
            "{url}: {alive} ALIVE workers, want {expect_workers}: {body}"
        ));
    }
    Ok(v)
}

/// An unpacked copy of the mirror's Spark (for spark-submit on the host
/// side), kept under the cache and re-unpacked when the tarball changes.
pub fn host_spark(peers: &Peers) -> PathBuf {
    let tgz = peers.spark_tgz();
    let meta = fs::metadata(&tgz).unwrap();
    let mtime = meta
        .modified()
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dir = peers
        .cache
        .join("e2e")
        .join(format!("spark-{}-{mtime}", meta.len()));
    if dir.join("bin/spark-submit").is_file() {
        return dir;
    }
    let parent = dir.parent().unwrap();
    fs::create_dir_all(parent).unwrap();
    // Older unpacked versions are stale now.
    for e in fs::read_dir(parent).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("spark-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let tmp = tempfile::tempdir_in(parent).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tgz)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(tmp.path()),
        None,
        Duration::from_secs(300),
        "unpacking Spark for spark-submit",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tmp = tmp.keep();
    fs::rename(&tmp, &dir).unwrap();
    dir
}

/// The host's Java home: `$JAVA_HOME`, else the `java` on PATH (symlinks resolved).
pub fn host_java_home() -> PathBuf {
    if let Some(h) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let j = d.join("java");
        if j.is_file() {
            let real = fs::canonicalize(&j).unwrap();
            return real.parent().and_then(Path::parent).unwrap().to_path_buf();
        }
    }
    panic!("no java on PATH and no JAVA_HOME: install openjdk-17-jre-headless");
}

/// Submits SparkPi (the cached Java job, 10 slices) to `master_url`
/// (`spark://host:7077`) from inside `ns`, with the driver bound to
/// `driver_host` (an address the executors can reach). Returns Pi's estimate.
pub fn submit_sparkpi(
    peers: &Peers,
    ns: Option<&Netns>,
    master_url: &str,
    driver_host: &str,
    workdir: &Path,
) -> Result<f64, String> {
    let spark = host_spark(peers);
    let mut c = in_ns(ns, spark.join("bin/spark-submit").to_str().unwrap());
    c.current_dir(workdir)
        .env("JAVA_HOME", host_java_home())
        .env("SPARK_HOME", &spark)
        .env("SPARK_LOCAL_IP", driver_host)
        .args(["--master", master_url])
        .args(["--class", "org.apache.spark.examples.SparkPi"])
        .args(["--conf", &format!("spark.driver.host={driver_host}")])
        .args(["--conf", &format!("spark.driver.bindAddress={driver_host}")])
        .args(["--conf", "spark.executor.memory=512m"])
        .args(["--conf", "spark.ui.enabled=false"])
        .arg(&peers.sparkpi_jar)
        .arg("10");
    let o = run_ok(
        &mut c,
        None,
        Duration::from_secs(600),
        "spark-submit SparkPi",
    )?;
    let line = o
        .stdout
        .lines()
        .find(|l| l.starts_with("Pi is roughly"))
        .ok_or_else(|| {
            format!(
                "SparkPi printed no estimate:\n{}\n{}",
                o.stdout,
                tail(&o.stderr, 40)
            )
        })?;
    let pi: f64 = line
        .trim_start_matches("Pi is roughly")
        .trim()
        .parse()
        .map_err(|e| format!("{line:?}: {e}"))?;
    if !(3.0..3.3).contains(&pi) {
        return Err(format!("SparkPi estimated {pi}"));
    }
    Ok(pi)
}

/// What a TCP connect to `addr:port` meets within 3 s: `open`, `refused`
/// (RST: nothing listens, or a firewall rejects) or `timeout` (dropped: a
/// firewall with policy drop).
pub fn tcp_probe(ns: Option<&Netns>, addr: &str, port: u16) -> Result<String, String> {
    let script = r#"
import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"#;
    let o = run_ok(
        in_ns(ns, "python3")
            .arg("-c")
            .arg(script)
            .arg(addr)
            .arg(port.to_string()),
        None,
        Duration::from_secs(30),
        &format!("TCP probe of {addr}:{port}"),
    )?;
    Ok(o.stdout.trim().to_string())
}

fn ssh_base(ns: Option<&Netns>) -> Command {
    let mut c = in_ns(ns, "ssh");
    c.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=30",
        "-o",
        "LogLevel=ERROR",
    ]);
    c
}

/// SSH at `addr` (port 22) lets root in with `key` and refuses everything
/// else: a password-only attempt fails, and the server offers publickey as
/// its only method (`ssh -v`: "Authentications that can continue").
pub fn ssh_checks(ns: Option<&Netns>, addr: &str, key: &Path) -> Result<(), String> {
    let o = run_ok(
        ssh_base(ns)
            .arg("-i")
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes"])
            .arg(format!("root@{addr}"))
            .arg("id -u"),
        None,
        SSH_LOGIN,
        &format!("ssh -i KEY root@{addr}"),
    )?;
    if o.stdout.trim() != "0" {
        return Err(format!("ssh as root ran `id -u` = {:?}", o.stdout));
    }
    let o = run_timeout(
        ssh_base(ns)
            .args([
                "-v",
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "LogLevel=DEBUG1",
            ])
            .arg(format!("root@{addr}"))
            .arg("true"),
        None,
        SSH_LOGIN,
        "ssh with passwords only",
    )?;
    if o.ok() {
        return Err(format!("ssh without a key logged in to {addr}"));
    }
    let offered: Vec<&str> = o
        .stderr
        .lines()
        .filter_map(|l| l.split("Authentications that can continue: ").nth(1))
        .collect();
    if offered.is_empty() || offered.iter().any(|m| m.trim() != "publickey") {
        return Err(format!(
            "sshd at {addr} offers {offered:?}, want only publickey:\n{}",
            tail(&o.stderr, 30)
        ));
    }
    Ok(())
}

/// Sets `path`'s mode (for files the test writes into a guest root).
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}
