//! The object-store role's admin calls against the MinIO stand-in binary
//! from the test mirror (built by `scripts/peers`): the agent creates Spark's
//! S3 user with a policy limited to its buckets, idempotently; a real S3
//! client (boto3) signed as that user reaches those buckets and nothing
//! else, while root reaches everything; tampered or wrongly signed admin
//! calls are refused; the users survive a server restart.

use firstboot::checks::create_bucket;
use firstboot::madmin::{encrypt_data, Admin};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = "standinadmin";
const ROOT_SECRET: &str = "standin-root-secret";

/// The stand-in from `$IMGBUILD_TEST_CACHE/mirror` (fails, saying how to
/// build it, when it is missing).
fn standin() -> PathBuf {
    let cache = std::env::var_os("IMGBUILD_TEST_CACHE").map(PathBuf::from).expect(
        "IMGBUILD_TEST_CACHE is not set: run scripts/peers and export IMGBUILD_TEST_CACHE=~/.cache/imgbuild-test",
    );
    let mirror = cache.join("mirror");
    std::fs::read_dir(&mirror)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/peers)", mirror.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("minio.RELEASE.") && !n.ends_with(".sha256sum")
        })
        .unwrap_or_else(|| {
            panic!(
                "no minio stand-in in {} (run scripts/peers)",
                mirror.display()
            )
        })
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(standin())
        .args([
            "server",
            "--address",
            &addr.to_string(),
            "--console-address",
            "127.0.0.1:0",
        ])
        .arg(data)
        .env("MINIO_ROOT_USER", ROOT)
        .env("MINIO_ROOT_PASSWORD", ROOT_SECRET)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the MinIO stand-in");
    let t = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "stand-in did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Server { child, addr }
}

/// boto3 (botocore's SigV4, path style) as `user`: runs `op` and prints
/// `ok` or the S3 error code.
fn boto3(addr: SocketAddr, user: &str, secret: &str, op: &str, bucket: &str) -> String {
    let script = r#"
import os, sys, boto3
from botocore.config import Config
from botocore.exceptions import ClientError
s3 = boto3.client("s3", endpoint_url=os.environ["EP"], aws_access_key_id=os.environ["AK"],
    aws_secret_access_key=os.environ["SK"], region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
op, b = sys.argv[1], sys.argv[2]
try:
    if op == "put":
        s3.put_object(Bucket=b, Key="dir/obj.txt", Body=b"hello")
    elif op == "get":
        assert s3.get_object(Bucket=b, Key="dir/obj.txt")["Body"].read() == b"hello"
    elif op == "list":
        s3.list_objects_v2(Bucket=b)
    elif op == "delete":
        s3.delete_object(Bucket=b, Key="dir/obj.txt")
    elif op == "create":
        s3.create_bucket(Bucket=b)
    elif op == "delete-bucket":
        s3.delete_bucket(Bucket=b)
    print("ok")
except ClientError as e:
    print(e.response["Error"]["Code"])
"#;
    let o = Command::new("python3")
        .args(["-c", script, op, bucket])
        .env("EP", format!("http://{addr}"))
        .env("AK", user)
        .env("SK", secret)
        .output()
        .expect("python3 with boto3 (Debian: python3-boto3)");
    assert!(
        o.status.success(),
        "boto3 {op} {bucket}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn the_agent_creates_spark_s3_user_limited_to_its_buckets() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let server = start(&data);
    let addr = server.addr;
    for b in ["warehouse", "spark-events", "private"] {
        create_bucket(addr, ROOT, ROOT_SECRET, b).unwrap();
    }
    let admin = Admin {
        addr,
        access_key: ROOT,
        secret_key: ROOT_SECRET,
    };
    let buckets = vec!["warehouse".to_string(), "spark-events".to_string()];
    // Before: the user does not exist.
    assert_eq!(
        boto3(addr, "spark", "spark-secret-1", "put", "warehouse"),
        "InvalidAccessKeyId"
    );
    admin
        .ensure_user("spark", "spark-secret-1", "imgbuild-spark-devlab", &buckets)
        .unwrap();
    // Idempotent: the second run meets "already in effect" and succeeds.
    admin
        .ensure_user("spark", "spark-secret-1", "imgbuild-spark-devlab", &buckets)
        .unwrap();

    let spark = |op: &str, b: &str| boto3(addr, "spark", "spark-secret-1", op, b);
    for b in ["warehouse", "spark-events"] {
        for op in ["put", "get", "list", "delete"] {
            assert_eq!(spark(op, b), "ok", "spark {op} {b}");
        }
    }
    for op in ["put", "list"] {
        assert_eq!(spark(op, "private"), "AccessDenied", "spark {op} private");
    }
    assert_eq!(spark("create", "newbucket"), "AccessDenied");
    assert_eq!(spark("delete-bucket", "warehouse"), "AccessDenied");
    assert!(create_bucket(addr, "spark", "spark-secret-1", "another").is_err());
    // Root can do all.
    assert_eq!(boto3(addr, ROOT, ROOT_SECRET, "put", "private"), "ok");
    assert_eq!(boto3(addr, ROOT, ROOT_SECRET, "get", "private"), "ok");

    // Re-running with a new secret updates it: the old one stops working.
    admin
        .ensure_user("spark", "spark-secret-2", "imgbuild-spark-devlab", &buckets)
        .unwrap();
    assert_eq!(spark("put", "warehouse"), "SignatureDoesNotMatch");
    assert_eq!(
        boto3(addr, "spark", "spark-secret-2", "put", "warehouse"),
        "ok"
    );

    // A body changed in transit fails its MAC; a wrong root secret its signature;
    // Spark's user is no admin.
    let mut enc = encrypt_data(
        ROOT_SECRET,
        br#"{"secretKey":"spark-secret-3","status":"enabled"}"#,
    )
    .unwrap();
    let last = enc.len() - 1;
    enc[last] ^= 1;
    let a = admin
        .call("PUT", "add-user", &[("accessKey", "spark".into())], &enc)
        .unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.body.contains("XMinioAdminConfigBadJSON"), "{a:?}");
    let wrong = Admin {
        addr,
        access_key: ROOT,
        secret_key: "not-the-root-secret",
    };
    let e = format!("{:#}", wrong.add_canned_policy("x", "{}").unwrap_err());
    assert!(
        e.contains("403") && e.contains("SignatureDoesNotMatch"),
        "{e}"
    );
    assert!(!e.contains("not-the-root-secret"), "{e}");
    let as_spark = Admin {
        addr,
        access_key: "spark",
        secret_key: "spark-secret-2",
    };
    assert!(as_spark.add_user("evil", "evil-secret-1").is_err());
    assert_eq!(
        boto3(addr, "spark", "spark-secret-2", "put", "private"),
        "AccessDenied"
    );

    // Users and policies survive a restart, like MinIO's IAM.
    drop(server);
    let server = start(&data);
    assert_eq!(
        boto3(server.addr, "spark", "spark-secret-2", "get", "warehouse"),
        "ok"
    );
    assert_eq!(
        boto3(server.addr, "spark", "spark-secret-2", "list", "private"),
        "AccessDenied"
    );
}

fn user(key: &str, secret: &str, policy: &str) -> imgbuild_seed::S3User {
    imgbuild_seed::S3User {
        access_key: key.parse().unwrap(),
        secret_key: secret.parse().unwrap(),
        policy: policy.parse().unwrap(),
        buckets: vec!["warehouse".parse().unwrap()],
    }
}

/// The role's check as the agent runs it: a user the seed no longer lists
/// (a Spark guest dropped from the lab) is removed with its policy; the
/// record of created users holds no secret.
#[test]
fn users_dropped_from_the_seed_are_removed() {
    use firstboot::checks::{run, S3_USERS_RECORD};
    use firstboot::plan::Check;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/imgbuild")).unwrap();
    let server = start(&d.path().join("data"));
    let addr = server.addr;
    create_bucket(addr, ROOT, ROOT_SECRET, "warehouse").unwrap();
    let check = |users| Check::S3Users {
        port: addr.port(),
        access_key: ROOT.into(),
        secret_key: ROOT_SECRET.parse().unwrap(),
        users,
        deadline: Duration::from_secs(60),
    };
    let end = Instant::now() + Duration::from_secs(120);
    let both = vec![
        user("spark", "spark-secret-1", "imgbuild-spark-devlab"),
        user("oldspark", "old-secret-1", "imgbuild-spark-old"),
    ];
    run(&root, &check(both), end).unwrap();
    assert_eq!(
        boto3(addr, "oldspark", "old-secret-1", "put", "warehouse"),
        "ok"
    );
    let record = root.join(S3_USERS_RECORD.trim_start_matches('/'));
    let text = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        text,
        "spark imgbuild-spark-devlab\noldspark imgbuild-spark-old\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&record).unwrap().permissions().mode() & 0o777,
        0o600
    );

    run(
        &root,
        &check(vec![user(
            "spark",
            "spark-secret-1",
            "imgbuild-spark-devlab",
        )]),
        end,
    )
    .unwrap();
    assert_eq!(
        boto3(addr, "oldspark", "old-secret-1", "put", "warehouse"),
        "InvalidAccessKeyId"
    );
    assert_eq!(
        boto3(addr, "spark", "spark-secret-1", "put", "warehouse"),
        "ok"
    );
    // Its policy is gone too: attaching it again fails.
    let admin = Admin {
        addr,
        access_key: ROOT,
        secret_key: ROOT_SECRET,
    };
    admin.add_user("probe", "probe-secret-1").unwrap();
    let e = format!(
        "{:#}",
        admin
            .attach_policy("probe", "imgbuild-spark-old")
            .unwrap_err()
    );
    assert!(e.contains("NoSuchPolicy"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        "spark imgbuild-spark-devlab\n"
    );

    // No users at all: the last one goes as well; a re-run is a no-op.
    run(&root, &check(vec![]), end).unwrap();
    run(&root, &check(vec![]), end).unwrap();
    assert_eq!(
        boto3(addr, "spark", "spark-secret-1", "put", "warehouse"),
        "InvalidAccessKeyId"
    );
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "");
}
