//! Fetcher tests against a real HTTP/1.1 server on 127.0.0.1 (tests/support/
//! http_server.rs) with faults, a real mirror directory, and the real `imgbuild`
//! binary for the command-line cases.

#[path = "support/http_server.rs"]
mod http_server;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_server::{Reply, Server};
use imgbuild::artifact::{ArtifactSpec, ChecksumSource, Digest, DigestAlgo, Origin};
use imgbuild::fetch::{
    fetch_error, FetchError, FetchOptions, Fetcher, Mirror, ProgressMode, Served,
};
use imgbuild::lock::{DigestSource, Lock, Pinned};
use url::Url;

fn body(n: usize, seed: u8) -> Vec<u8> {
    // Deterministic, not compressible-looking bytes.
    let mut x = 0x9e37_79b9u32 ^ u32::from(seed);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> Digest {
    imgbuild::fetch::hash::hash_reader(DigestAlgo::Sha256, bytes)
        .unwrap()
        .0
}

fn sha512(bytes: &[u8]) -> Digest {
    imgbuild::fetch::hash::hash_reader(DigestAlgo::Sha512, bytes)
        .unwrap()
        .0
}

fn spec(name: &str, url: &str, digest: Option<Digest>) -> ArtifactSpec {
    ArtifactSpec {
        name: name.into(),
        url: Url::parse(url).unwrap(),
        digest,
        checksums: None,
        signature: None,
        origin: Origin {
            file: PathBuf::from("images/test.yaml"),
            line: 12,
            column: 5,
        },
    }
}

fn pinned(name: &str, url: &str, bytes: &[u8]) -> Pinned {
    let digest = sha256(bytes);
    Pinned::from_recipe(spec(name, url, Some(digest.clone())), digest)
}

fn opts() -> FetchOptions {
    FetchOptions {
        retries: 3,
        retry_delay: Duration::from_millis(2),
        retry_max_delay: Duration::from_millis(10),
        progress: ProgressMode::Quiet,
        read_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..FetchOptions::default()
    }
}

fn fetcher(cache: &Path, opts: FetchOptions) -> Fetcher {
    Fetcher::new(cache, opts).unwrap()
}

/// Every regular file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                for f in files(&p) {
                    out.push(format!("{}/{f}", e.file_name().to_string_lossy()));
                }
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fetches_verifies_and_then_hits_the_cache() {
    let srv = Server::start();
    let data = body(300_000, 1);
    srv.route("/a/spark.tgz", vec![Reply::Body(data.clone())]);
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), opts());
    let p = pinned("spark", &srv.url("/a/spark.tgz"), &data);
    let got = f.fetch_all(std::slice::from_ref(&p)).unwrap();
    assert_eq!(
        got[0].path,
        cache.path().join("blobs/sha256").join(p.digest.hex())
    );
    assert_eq!(fs::read(&got[0].path).unwrap(), data);
    assert_eq!(got[0].served, Served::Upstream(srv.url("/a/spark.tgz")));
    assert_eq!(files(&cache.path().join("partial")), Vec::<String>::new());
    let again = f.fetch(&p).unwrap();
    assert_eq!(again.served, Served::Cache);
    assert_eq!(srv.requests().len(), 1, "a cache hit makes no request");
}

#[test]
fn sha512_digests_are_checked_too() {
    let srv = Server::start();
    let data = body(5000, 2);
    srv.route("/lxc.tar.zst", vec![Reply::Body(data.clone())]);
    let cache = tempfile::tempdir().unwrap();
    let digest = sha512(&data);
    let p = Pinned::from_recipe(
        spec("base", &srv.url("/lxc.tar.zst"), Some(digest.clone())),
        digest,
    );
    let got = fetcher(cache.path(), opts()).fetch(&p).unwrap();
    assert!(got.path.starts_with(cache.path().join("blobs/sha512")));
}

#[test]
fn wrong_digest_is_never_published() {
    let srv = Server::start();
    let served = body(10_000, 3);
    srv.route("/java.tar.gz", vec![Reply::Body(served.clone())]);
    let cache = tempfile::tempdir().unwrap();
    let expected = body(10_000, 4);
    let p = pinned("java", &srv.url("/java.tar.gz"), &expected);
    let err = fetcher(cache.path(), opts()).fetch(&p).unwrap_err();
    let msg = format!("{err:#}");
    match fetch_error(&err) {
        Some(FetchError::DigestMismatch {
            expected: e,
            actual,
            url,
        }) => {
            assert_eq!(e, &sha256(&expected));
            assert_eq!(actual, &sha256(&served));
            assert_eq!(url, &srv.url("/java.tar.gz"));
        }
        other => panic!("expected a digest mismatch, got {other:?}: {msg}"),
    }
    assert!(
        msg.contains(&sha256(&expected).to_string()) && msg.contains(&sha256(&served).to_string()),
        "{msg}"
    );
    assert!(
        msg.contains("artifact `java`") && msg.contains("images/test.yaml:12:5"),
        "{msg}"
    );
    assert_eq!(srv.requests().len(), 1, "a mismatch is not retried");
    assert_eq!(
        files(cache.path()),
        Vec::<String>::new(),
        "no blob and no leftover temp"
    );
}

#[test]
fn server_errors_are_retried_until_success() {
    let srv = Server::start();
    let data = body(20_000, 5);
    srv.route(
        "/minio",
        vec![
            Reply::Status(500),
            Reply::Status(503),
            Reply::Status(429),
            Reply::Body(data.clone()),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let got = fetcher(cache.path(), opts())
        .fetch(&pinned("minio", &srv.url("/minio"), &data))
        .unwrap();
    assert_eq!(fs::read(got.path).unwrap(), data);
    assert_eq!(srv.requests().len(), 4);
}

#[test]
fn retries_are_bounded_and_other_statuses_are_not_retried() {
    let srv = Server::start();
    srv.route("/down", vec![Reply::Status(502)]);
    srv.route("/forbidden", vec![Reply::Status(403)]);
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(
        cache.path(),
        FetchOptions {
            retries: 2,
            ..opts()
        },
    );
    let err = f.fetch(&pinned("a", &srv.url("/down"), b"x")).unwrap_err();
    assert!(
        matches!(
            fetch_error(&err),
            Some(FetchError::Status { status: 502, .. })
        ),
        "{err:#}"
    );
    assert_eq!(
        srv.requests_for("/down").len(),
        3,
        "first attempt + 2 retries"
    );
    let err = f
        .fetch(&pinned("b", &srv.url("/forbidden"), b"x"))
        .unwrap_err();
    assert!(format!("{err:#}").contains("HTTP 403"), "{err:#}");
    assert_eq!(srv.requests_for("/forbidden").len(), 1);
    assert_eq!(files(cache.path()), Vec::<String>::new());
}

#[test]
fn cut_transfer_resumes_with_range() {
    let srv = Server::start();
    let data = body(100_000, 6);
    srv.route(
        "/spark.tgz",
        vec![
            Reply::CutAt {
                body: data.clone(),
                cut_at: 30_000,
            },
            Reply::Body(data.clone()),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let got = fetcher(cache.path(), opts())
        .fetch(&pinned("spark", &srv.url("/spark.tgz"), &data))
        .unwrap();
    assert_eq!(fs::read(got.path).unwrap(), data);
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("Range"), None);
    assert_eq!(reqs[1].header("Range"), Some("bytes=30000-"));
}

#[test]
fn truncated_body_keeps_the_partial_and_the_next_run_resumes_it() {
    let srv = Server::start();
    let data = body(50_000, 7);
    srv.route(
        "/img",
        vec![
            Reply::CutAt {
                body: data.clone(),
                cut_at: 12_345,
            },
            Reply::Body(data.clone()),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let p = pinned("base", &srv.url("/img"), &data);
    let err = fetcher(
        cache.path(),
        FetchOptions {
            retries: 0,
            ..opts()
        },
    )
    .fetch(&p)
    .unwrap_err();
    assert!(
        matches!(fetch_error(&err), Some(FetchError::Transport { .. })),
        "{err:#}"
    );
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&srv.url("/img")) && msg.contains("artifact `base`"),
        "{msg}"
    );
    let partial = cache
        .path()
        .join("partial")
        .join(format!("sha256-{}", p.digest.hex()));
    assert_eq!(fs::metadata(&partial).unwrap().len(), 12_345);
    assert!(!cache
        .path()
        .join("blobs/sha256")
        .join(p.digest.hex())
        .exists());

    let got = fetcher(cache.path(), opts()).fetch(&p).unwrap();
    assert_eq!(fs::read(got.path).unwrap(), data);
    assert_eq!(srv.requests()[1].header("Range"), Some("bytes=12345-"));
    assert!(!partial.exists());
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let srv = Server::start();
    let data = body(40_000, 8);
    srv.route(
        "/j",
        vec![
            Reply::CutAt {
                body: data.clone(),
                cut_at: 10_000,
            },
            Reply::IgnoreRange(data.clone()),
        ],
    );
    let cache = tempfile::tempdir().unwrap();
    let got = fetcher(cache.path(), opts())
        .fetch(&pinned("java", &srv.url("/j"), &data))
        .unwrap();
    assert_eq!(fs::read(got.path).unwrap(), data);
    assert_eq!(srv.requests()[1].header("Range"), Some("bytes=10000-"));
}

#[test]
fn complete_partial_gets_416_and_is_published() {
    let srv = Server::start();
    let data = body(8_000, 9);
    srv.route("/m", vec![Reply::Body(data.clone())]);
    let cache = tempfile::tempdir().unwrap();
    let p = pinned("minio", &srv.url("/m"), &data);
    // A run that was killed after the last byte but before the rename.
    fs::create_dir_all(cache.path().join("partial")).unwrap();
    fs::write(
        cache
            .path()
            .join("partial")
            .join(format!("sha256-{}", p.digest.hex())),
        &data,
    )
    .unwrap();
    let got = fetcher(cache.path(), opts()).fetch(&p).unwrap();
    assert_eq!(fs::read(got.path).unwrap(), data);
    assert_eq!(srv.requests()[0].header("Range"), Some("bytes=8000-"));
    assert_eq!(srv.requests().len(), 1);
}

#[test]
fn corrupt_partial_prefix_is_discarded_once() {
    let srv = Server::start();
    let data = body(9_000, 10);
    srv.route("/s", vec![Reply::Body(data.clone())]);
    let cache = tempfile::tempdir().unwrap();
    let p = pinned("spark", &srv.url("/s"), &data);
    fs::create_dir_all(cache.path().join("partial")).unwrap();
    fs::write(
        cache
            .path()
            .join("partial")
            .join(format!("sha256-{}", p.digest.hex())),
        vec![0u8; 500],
    )
    .unwrap();
    let got = fetcher(cache.path(), opts()).fetch(&p).unwrap();
    assert_eq!(fs::read(got.path).unwrap(), data);
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("Range"), Some("bytes=500-"));
    assert_eq!(reqs[1].header("Range"), None);
}

#[test]
fn not_found_names_url_artifact_and_recipe_location() {
    let srv = Server::start();
    let cache = tempfile::tempdir().unwrap();
    let err = fetcher(cache.path(), opts())
        .fetch(&pinned(
            "spark",
            &srv.url("/dist/spark-3.5.9-bin-hadoop3.tgz"),
            b"x",
        ))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&srv.url("/dist/spark-3.5.9-bin-hadoop3.tgz")),
        "{msg}"
    );
    assert!(
        msg.contains("HTTP 404") && msg.contains("artifact `spark`"),
        "{msg}"
    );
    assert!(msg.contains("images/test.yaml:12:5"), "{msg}");
    assert_eq!(srv.requests().len(), 1, "404 is final");
}

#[test]
fn mirror_directory_serves_without_any_request() {
    let srv = Server::start();
    let data = body(70_000, 11);
    let mirror = tempfile::tempdir().unwrap();
    // The URL-encoded `+` is decoded in the mirror's file name.
    fs::write(mirror.path().join("jre+10.tar.gz"), &data).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(
        cache.path(),
        FetchOptions {
            mirror: Some(Mirror::Dir(mirror.path().into())),
            ..opts()
        },
    );
    let got = f
        .fetch(&pinned("java", &srv.url("/dl/jre%2B10.tar.gz"), &data))
        .unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), data);
    assert_eq!(
        got.served,
        Served::Mirror(mirror.path().join("jre+10.tar.gz").display().to_string())
    );
    assert!(
        srv.requests().is_empty(),
        "upstream was contacted: {:?}",
        srv.requests()
    );
}

#[test]
fn mirror_directory_miss_falls_back_to_upstream() {
    let srv = Server::start();
    let data = body(1_000, 12);
    srv.route("/x/minio", vec![Reply::Body(data.clone())]);
    let mirror = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(
        cache.path(),
        FetchOptions {
            mirror: Some(Mirror::Dir(mirror.path().into())),
            ..opts()
        },
    );
    let got = f
        .fetch(&pinned("minio", &srv.url("/x/minio"), &data))
        .unwrap();
    assert_eq!(got.served, Served::Upstream(srv.url("/x/minio")));
}

#[test]
fn mirror_directory_with_wrong_bytes_is_a_mismatch_not_a_fallback() {
    let srv = Server::start();
    let data = body(1_000, 13);
    srv.route("/x/minio", vec![Reply::Body(data.clone())]);
    let mirror = tempfile::tempdir().unwrap();
    fs::write(mirror.path().join("minio"), b"not the binary").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(
        cache.path(),
        FetchOptions {
            mirror: Some(Mirror::Dir(mirror.path().into())),
            ..opts()
        },
    );
    let err = f
        .fetch(&pinned("minio", &srv.url("/x/minio"), &data))
        .unwrap_err();
    assert!(
        matches!(fetch_error(&err), Some(FetchError::DigestMismatch { .. })),
        "{err:#}"
    );
    assert!(srv.requests().is_empty());
    assert_eq!(files(cache.path()), Vec::<String>::new());
}

#[test]
fn mirror_url_serves_first_and_misses_fall_back() {
    let upstream = Server::start();
    let mirror = Server::start();
    let a = body(2_000, 14);
    let b = body(3_000, 15);
    mirror.route("/m/a.tgz", vec![Reply::Body(a.clone())]);
    upstream.route("/dist/b.tgz", vec![Reply::Body(b.clone())]);
    let cache = tempfile::tempdir().unwrap();
    let m = Mirror::Url(Url::parse(&mirror.url("/m/")).unwrap());
    let f = fetcher(
        cache.path(),
        FetchOptions {
            mirror: Some(m),
            ..opts()
        },
    );
    let got = f
        .fetch_all(&[
            pinned("a", &upstream.url("/dist/a.tgz"), &a),
            pinned("b", &upstream.url("/dist/b.tgz"), &b),
        ])
        .unwrap();
    assert_eq!(got[0].served, Served::Mirror(mirror.url("/m/a.tgz")));
    assert_eq!(got[1].served, Served::Upstream(upstream.url("/dist/b.tgz")));
    assert_eq!(upstream.requests_for("/dist/a.tgz").len(), 0);
    assert_eq!(mirror.requests_for("/m/b.tgz").len(), 1);
}

#[test]
fn parallel_fetch_reports_every_failure() {
    let srv = Server::start();
    let mut pins = Vec::new();
    for i in 0..6u8 {
        let data = body(4_000 + usize::from(i), 20 + i);
        let path = format!("/p/{i}");
        srv.route(
            &path,
            vec![Reply::Drip {
                body: data.clone(),
                chunk: 1000,
                delay: Duration::from_millis(5),
            }],
        );
        pins.push(pinned(&format!("art{i}"), &srv.url(&path), &data));
    }
    pins.push(pinned("gone1", &srv.url("/missing1"), b"x"));
    pins.push(pinned("gone2", &srv.url("/missing2"), b"y"));
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), opts());
    let err = f.fetch_all(&pins).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("2 artifacts failed")
            && msg.contains("/missing1")
            && msg.contains("/missing2"),
        "{msg}"
    );
    let got = f.fetch_all(&pins[..6]).unwrap();
    assert!(
        got.iter().all(|g| g.served == Served::Cache),
        "the good ones were fetched by the first run"
    );
}

#[test]
fn unpinned_digest_is_learned_from_the_mirror_checksum_file_only_when_trusted() {
    let srv = Server::start();
    let data = body(6_000, 30);
    let name = "spark-3.5.9-bin-hadoop3.tgz";
    let mirror = tempfile::tempdir().unwrap();
    fs::write(mirror.path().join(name), &data).unwrap();
    // The old gpg --print-md SHA512 form.
    let hex = sha512(&data).hex().to_uppercase();
    let groups: Vec<&str> = (0..16).map(|i| &hex[i * 8..i * 8 + 8]).collect();
    let pad = " ".repeat(name.len() + 2);
    let text = format!(
        "{name}: {}\n{pad}{}\n{pad}{}\n{pad}{}\n",
        groups[0..5].join(" "),
        groups[5..10].join(" "),
        groups[10..15].join(" "),
        groups[15..].join(" ")
    );
    fs::write(mirror.path().join(format!("{name}.sha512")), text).unwrap();
    let url = srv.url(&format!("/dist/{name}"));
    let mut s = spec("spark", &url, None);
    s.checksums = Some(ChecksumSource {
        url: Url::parse(&format!("{url}.sha512")).unwrap(),
        algo: DigestAlgo::Sha512,
    });
    let cache = tempfile::tempdir().unwrap();
    // By default the checksum file comes from upstream only (here: 404).
    let f = fetcher(
        cache.path(),
        FetchOptions {
            mirror: Some(Mirror::Dir(mirror.path().into())),
            ..opts()
        },
    );
    let err = f
        .pin(std::slice::from_ref(&s), &Lock::default(), false)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("HTTP 404") && msg.contains("--trust-mirror-checksums"),
        "{msg}"
    );
    assert_eq!(
        srv.requests().len(),
        1,
        "upstream's checksum file was asked"
    );
    let f = fetcher(
        cache.path(),
        FetchOptions {
            mirror: Some(Mirror::Dir(mirror.path().into())),
            trust_mirror_checksums: true,
            ..opts()
        },
    );
    let pins = f
        .pin(std::slice::from_ref(&s), &Lock::default(), false)
        .unwrap();
    assert_eq!(pins[0].digest, sha512(&data));
    assert_eq!(pins[0].source, DigestSource::MirrorChecksumFile);
    assert_eq!(
        pins[0].mirror.as_deref(),
        Some(
            mirror
                .path()
                .join(format!("{name}.sha512"))
                .to_str()
                .unwrap()
        )
    );
    let err = f.pin(&[s], &Lock::default(), true).unwrap_err();
    assert!(format!("{err:#}").contains("not pinned"), "{err:#}");
    f.fetch_all(&pins).unwrap();
    assert_eq!(srv.requests().len(), 1, "the artifact came from the mirror");
}

// ---- the real `imgbuild` binary ----------------------------------------------

/// A recipe directory with one LXC recipe whose artifacts live on `srv`.
struct RecipeDir {
    dir: tempfile::TempDir,
    recipe: PathBuf,
    text: String,
}

impl RecipeDir {
    /// `items`: (name, URL path on the server, `digest: ...` or `checksums: ...` line).
    fn new(srv: &Server, base: (&str, &str), payload: &[(&str, &str, String)]) -> RecipeDir {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "name: test-lxc\nkind: lxc\nbase:\n  url: {}\n  {}\n  format: tar.zst\npayload:\n",
            srv.url(base.0),
            base.1
        );
        for (i, (name, path, pin)) in payload.iter().enumerate() {
            text.push_str(&format!(
                "  - name: {name}\n    url: {}\n    {pin}\n    install: {{file: /usr/local/bin/tool{i}, mode: \"0755\"}}\n",
                srv.url(path)
            ));
        }
        let recipe = dir.path().join("test-lxc.yaml");
        fs::write(&recipe, &text).unwrap();
        RecipeDir { dir, recipe, text }
    }

    /// The 1-based line on which `needle` appears in the recipe.
    fn line_of(&self, needle: &str) -> usize {
        self.text
            .lines()
            .position(|l| l.contains(needle))
            .expect("needle in recipe")
            + 1
    }
}

fn imgbuild(cache: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("IMGBUILD_MIRROR")
        .env_remove("RUST_LOG")
        .output()
        .expect("run imgbuild")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn binary_fetch_prints_cache_paths_and_json() {
    let srv = Server::start();
    let base = body(40_000, 40);
    let tool = body(20_000, 41);
    srv.route("/img/base.tar.zst", vec![Reply::Body(base.clone())]);
    srv.route(
        "/dl/tool",
        vec![Reply::Status(503), Reply::Body(tool.clone())],
    );
    let r = RecipeDir::new(
        &srv,
        ("/img/base.tar.zst", &format!("digest: {}", sha512(&base))),
        &[("tool", "/dl/tool", format!("digest: {}", sha256(&tool)))],
    );
    let cache = tempfile::tempdir().unwrap();
    let recipe = r.recipe.to_str().unwrap();
    let out = imgbuild(
        cache.path(),
        &[
            "fetch",
            "--recipe",
            recipe,
            "--json",
            "--retry-delay-ms",
            "5",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arts = v["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 2);
    assert_eq!(arts[0]["name"], "base");
    assert_eq!(arts[0]["digest"], sha512(&base).to_string());
    assert_eq!(fs::read(arts[0]["path"].as_str().unwrap()).unwrap(), base);
    assert_eq!(fs::read(arts[1]["path"].as_str().unwrap()).unwrap(), tool);
    assert!(
        arts[1]["source"]
            .as_str()
            .unwrap()
            .starts_with("upstream http://127.0.0.1"),
        "{v}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("tool: fetched 19.5 KiB"),
        "final line with size, time and rate: {err}"
    );
    assert!(err.contains("retrying"), "the 503 was retried: {err}");

    // Second run: served from the cache, plain output is `name<TAB>path`.
    let out = imgbuild(cache.path(), &["fetch", "--recipe", recipe, "-q"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        lines[1],
        format!("tool\t{}", arts[1]["path"].as_str().unwrap())
    );
    assert_eq!(srv.requests().len(), 3);
}

#[test]
fn binary_404_names_url_artifact_and_recipe_line() {
    let srv = Server::start();
    let tool = body(1_000, 42);
    srv.route("/dl/tool", vec![Reply::Body(tool.clone())]);
    let r = RecipeDir::new(
        &srv,
        (
            "/img/missing-base.tar.zst",
            &format!("digest: {}", sha256(b"nothing")),
        ),
        &[("tool", "/dl/tool", format!("digest: {}", sha256(&tool)))],
    );
    let cache = tempfile::tempdir().unwrap();
    let out = imgbuild(
        cache.path(),
        &["fetch", "--recipe", r.recipe.to_str().unwrap(), "-q"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&srv.url("/img/missing-base.tar.zst")) && err.contains("HTTP 404"),
        "{err}"
    );
    assert!(err.contains("artifact `base`"), "{err}");
    let at = format!("{}:{}:", r.recipe.display(), r.line_of("missing-base"));
    assert!(err.contains(&at), "expected {at} in: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn binary_slow_drip_completes_with_progress_lines() {
    let srv = Server::start();
    let base = body(26_000, 43);
    srv.route(
        "/img/base.tar.zst",
        vec![Reply::Drip {
            body: base.clone(),
            chunk: 2_000,
            delay: Duration::from_millis(100),
        }],
    );
    let r = RecipeDir::new(
        &srv,
        ("/img/base.tar.zst", &format!("digest: {}", sha256(&base))),
        &[],
    );
    let cache = tempfile::tempdir().unwrap();
    let out = imgbuild(
        cache.path(),
        &["fetch", "--recipe", r.recipe.to_str().unwrap()],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    // stderr is a pipe here, so progress is plain lines: start, at least one
    // in-between line (the drip takes ~1.3 s, lines come at most once a second), end.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("base: ")).collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("fetching upstream")),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.contains(" of 25.4 KiB (")),
        "no progress line: {err}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("fetched 25.4 KiB in")),
        "{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "no terminal escapes in a log: {err:?}"
    );
}

#[test]
fn binary_locked_refuses_until_imgbuild_lock_pins_from_the_mirror() {
    let srv = Server::start();
    let base = body(3_000, 44);
    let spark = body(5_000, 45);
    let spark_name = "spark-3.5.9-bin-hadoop3.tgz";
    srv.route("/img/base.tar.zst", vec![Reply::Body(base.clone())]);
    let mirror = tempfile::tempdir().unwrap();
    fs::write(mirror.path().join(spark_name), &spark).unwrap();
    fs::write(
        mirror.path().join("SHA512SUMS"),
        format!("{}  {spark_name}\n", sha512(&spark).hex()),
    )
    .unwrap();
    let r = RecipeDir::new(
        &srv,
        ("/img/base.tar.zst", &format!("digest: {}", sha256(&base))),
        &[(
            "spark",
            "/dist/spark-3.5.9-bin-hadoop3.tgz",
            format!("checksums: {}", srv.url("/dist/SHA512SUMS")),
        )],
    );
    let cache = tempfile::tempdir().unwrap();
    let recipe = r.recipe.to_str().unwrap();
    let m = mirror.path().to_str().unwrap();
    let out = imgbuild(
        cache.path(),
        &["fetch", "--recipe", recipe, "--locked", "--mirror", m, "-q"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("artifact `spark`") && err.contains("not pinned"),
        "{err}"
    );
    assert!(
        err.contains("artifact `base`"),
        "inline digests need the lock too under --locked: {err}"
    );
    assert!(err.contains("imgbuild lock"), "{err}");
    assert!(srv.requests().is_empty() && fs::read_dir(cache.path().join("blobs")).is_err());

    let images = r.dir.path().to_str().unwrap();
    // The mirror has the checksum file but upstream does not answer for it: a
    // mirror's checksum files are not trusted unless asked for by name.
    let out = imgbuild(
        cache.path(),
        &["lock", "--images", images, "--mirror", m, "-q"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&srv.url("/dist/SHA512SUMS")) && err.contains("--trust-mirror-checksums"),
        "{err}"
    );
    assert!(!r.dir.path().join("imgbuild.lock").exists());
    let trusting = [
        "lock",
        "--images",
        images,
        "--mirror",
        m,
        "--trust-mirror-checksums",
    ];
    let out = imgbuild(cache.path(), &[&trusting[..], &["-q"]].concat());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("pinned from the mirror's checksum file"),
        "said even with -q: {err}"
    );
    let lock_text = fs::read_to_string(r.dir.path().join("imgbuild.lock")).unwrap();
    assert!(
        lock_text.starts_with("# Generated by `imgbuild lock`"),
        "{lock_text}"
    );
    let mirror_sums = mirror.path().join("SHA512SUMS");
    assert!(
        lock_text.contains(&sha512(&spark).to_string())
            && lock_text.contains("source: mirror-checksum-file")
            && lock_text.contains(&format!("mirror: {}", mirror_sums.display())),
        "{lock_text}"
    );
    assert!(
        lock_text.contains(&sha256(&base).to_string()) && lock_text.contains("source: recipe"),
        "{lock_text}"
    );
    let out = imgbuild(cache.path(), &[&trusting[..], &["--check"]].concat());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));

    let out = imgbuild(
        cache.path(),
        &[
            "fetch", "--recipe", recipe, "--locked", "--mirror", m, "-q", "--json",
        ],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("artifact `spark`: its digest was pinned from the mirror's checksum file")
            && !err.contains("artifact `base`: its digest"),
        "--locked says which pins a mirror vouched for: {err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["artifacts"][1]["pinned_by"], "mirror-checksum-file",
        "{v}"
    );
    assert_eq!(v["artifacts"][0]["pinned_by"], "recipe", "{v}");
    assert!(
        srv.requests_for("/dist/spark-3.5.9-bin-hadoop3.tgz")
            .is_empty(),
        "spark came from the mirror"
    );

    // A recipe digest that disagrees with the lock is refused under --locked.
    let other = body(3_000, 46);
    fs::write(
        &r.recipe,
        r.text
            .replace(&sha256(&base).to_string(), &sha256(&other).to_string()),
    )
    .unwrap();
    let out = imgbuild(
        cache.path(),
        &["fetch", "--recipe", recipe, "--locked", "-q"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&sha256(&other).to_string()) && err.contains(&sha256(&base).to_string()),
        "{err}"
    );
}

#[test]
fn binary_a_mirror_cannot_vouch_for_its_own_substitute() {
    // Upstream publishes the real binary's checksum; the mirror serves another
    // binary together with a checksum file that matches it.
    let srv = Server::start();
    let base = body(2_000, 50);
    let real = body(4_000, 51);
    let evil = body(4_000, 52);
    srv.route("/img/base.tar.zst", vec![Reply::Body(base.clone())]);
    srv.route(
        "/dl/minio.sha256sum",
        vec![Reply::Body(
            format!("{}  minio\n", sha256(&real).hex()).into_bytes(),
        )],
    );
    let mirror = tempfile::tempdir().unwrap();
    fs::write(mirror.path().join("minio"), &evil).unwrap();
    fs::write(
        mirror.path().join("minio.sha256sum"),
        format!("{}  minio\n", sha256(&evil).hex()),
    )
    .unwrap();
    let r = RecipeDir::new(
        &srv,
        ("/img/base.tar.zst", &format!("digest: {}", sha256(&base))),
        &[(
            "minio",
            "/dl/minio",
            format!("checksums: {}", srv.url("/dl/minio.sha256sum")),
        )],
    );
    let cache = tempfile::tempdir().unwrap();
    let m = mirror.path().to_str().unwrap();
    let images = r.dir.path().to_str().unwrap();
    let out = imgbuild(
        cache.path(),
        &["lock", "--images", images, "--mirror", m, "-q"],
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let lock_text = fs::read_to_string(r.dir.path().join("imgbuild.lock")).unwrap();
    assert!(
        lock_text.contains(&sha256(&real).to_string()) && !lock_text.contains("mirror"),
        "pinned from upstream's checksum file: {lock_text}"
    );
    assert_eq!(srv.requests_for("/dl/minio.sha256sum").len(), 1);
    for locked in [true, false] {
        let recipe = r.recipe.to_str().unwrap();
        let mut args = vec!["fetch", "--recipe", recipe, "--mirror", m, "-q"];
        if locked {
            args.push("--locked");
        }
        let out = imgbuild(cache.path(), &args);
        assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("digest mismatch") && err.contains(&sha256(&evil).to_string()),
            "{err}"
        );
        assert!(
            !cache
                .path()
                .join("blobs/sha256")
                .join(sha256(&evil).hex())
                .exists()
                && !cache
                    .path()
                    .join("blobs/sha256")
                    .join(sha256(&real).hex())
                    .exists()
        );
    }
}

#[test]
fn concurrent_fetches_of_one_digest_download_once() {
    let srv = Server::start();
    let data = body(12_000, 47);
    srv.route(
        "/same",
        vec![Reply::Drip {
            body: data.clone(),
            chunk: 3_000,
            delay: Duration::from_millis(30),
        }],
    );
    let cache = tempfile::tempdir().unwrap();
    let p = pinned("same", &srv.url("/same"), &data);
    // Two fetchers (as two imgbuild processes would be) on one cache.
    let a = fetcher(cache.path(), opts());
    let b = fetcher(cache.path(), opts());
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.fetch(&p));
        std::thread::sleep(Duration::from_millis(20));
        let tb = s.spawn(|| b.fetch(&p));
        (ta.join().unwrap().unwrap(), tb.join().unwrap().unwrap())
    });
    assert_eq!(ra.path, rb.path);
    assert_eq!(fs::read(&ra.path).unwrap(), data);
    assert_eq!(
        srv.requests().len(),
        1,
        "the second waited for the first's lock"
    );
    assert!([&ra.served, &rb.served].contains(&&Served::Cache));
}

#[test]
fn binary_on_a_terminal_redraws_lines_in_place() {
    let srv = Server::start();
    let base = body(30_000, 48);
    let tool = body(30_000, 49);
    for (path, data) in [("/img/base.tar.zst", &base), ("/dl/tool", &tool)] {
        srv.route(
            path,
            vec![Reply::Drip {
                body: data.clone(),
                chunk: 3_000,
                delay: Duration::from_millis(40),
            }],
        );
    }
    let r = RecipeDir::new(
        &srv,
        ("/img/base.tar.zst", &format!("digest: {}", sha256(&base))),
        &[("tool", "/dl/tool", format!("digest: {}", sha256(&tool)))],
    );
    let cache = tempfile::tempdir().unwrap();
    // util-linux `script` (bsdutils, Essential on Debian) runs the binary on a real
    // pseudo-terminal and copies what it writes to our pipe.
    let cmd = format!(
        "'{}' --cache-dir '{}' fetch --recipe '{}'",
        env!("CARGO_BIN_EXE_imgbuild"),
        cache.path().display(),
        r.recipe.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("IMGBUILD_MIRROR")
        .env_remove("RUST_LOG")
        .output()
        .expect("run script(1)");
    let tty = text(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("\r\x1b[2K"),
        "lines are redrawn in place: {tty:?}"
    );
    assert!(
        tty.contains("\x1b[2A"),
        "two running downloads, two lines redrawn: {tty:?}"
    );
    assert!(tty.contains("base: fetched 29.3 KiB in"), "{tty:?}");
    assert!(tty.contains("tool: fetched 29.3 KiB in"), "{tty:?}");
}

// ---- the shared HTTP configuration (crate::http) --------------------------------

/// `openssl s_server -WWW` serving `root` over TLS with a certificate for
/// 127.0.0.1 signed by a CA made for the test. Returns the server process, its
/// port and the CA file.
struct TlsServer {
    child: std::process::Child,
    port: u16,
    ca: PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl(1) is needed for the TLS tests: apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

fn tls_server(root: &Path, keys: &Path) -> TlsServer {
    openssl(
        keys,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=imgbuild test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        keys,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    fs::write(keys.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        keys,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "leaf.pem",
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("openssl")
        .current_dir(root)
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(keys.join("leaf.pem"))
        .arg("-key")
        .arg(keys.join("leaf.key"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    // Until it listens (seconds on a loaded machine): a fetch before that
    // would be refused, which is retried and would muddle what is tested.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < end,
            "openssl s_server did not listen on 127.0.0.1:{port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsServer {
        child,
        port,
        ca: keys.join("ca.pem"),
    }
}

#[test]
fn binary_https_needs_the_ca_and_trusts_an_extra_ca_file() {
    let root = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let data = body(20_000, 60);
    fs::write(root.path().join("base.tar.zst"), &data).unwrap();
    let tls = tls_server(root.path(), keys.path());
    let url = format!("https://127.0.0.1:{}/base.tar.zst", tls.port);
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("t.yaml");
    fs::write(
        &recipe,
        format!(
            "name: t\nkind: lxc\nbase:\n  url: {url}\n  digest: {}\n  format: tar.zst\npayload: []\n",
            sha256(&data)
        ),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let recipe = recipe.to_str().unwrap();
    // Not in the system's roots: refused, and not retried (it would not
    // change): every retry logs "retrying" at the default level (the helper
    // clears RUST_LOG), so no clock is needed to tell.
    let out = imgbuild(cache.path(), &["fetch", "--recipe", recipe, "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&url) && err.contains("certificate"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
    let ca = tls.ca.to_str().unwrap();
    let out = imgbuild(
        cache.path(),
        &["fetch", "--recipe", recipe, "-q", "--ca-file", ca],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = text(&out.stdout)
        .trim()
        .split('\t')
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(fs::read(path).unwrap(), data);
}

#[test]
fn binary_honours_http_proxy_and_no_proxy() {
    let proxy = Server::start();
    let data = body(5_000, 61);
    // A forward proxy receives the absolute URL as the request target.
    let upstream = "http://artifacts.example.invalid/dl/tool";
    proxy.route(upstream, vec![Reply::Body(data.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("t.yaml");
    fs::write(
        &recipe,
        format!(
            "name: t\nkind: lxc\nbase:\n  url: {upstream}\n  digest: {}\n  format: tar.zst\npayload: []\n",
            sha256(&data)
        ),
    )
    .unwrap();
    let run = |cache: &Path, no_proxy: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"))
            .arg("--cache-dir")
            .arg(cache)
            .args(["fetch", "--recipe", recipe.to_str().unwrap(), "-q"])
            .args(["--retries", "0"])
            .env_remove("IMGBUILD_MIRROR")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("NO_PROXY")
            .env("http_proxy", proxy.url(""))
            .env("HTTP_PROXY", proxy.url(""))
            .env("no_proxy", no_proxy)
            .output()
            .unwrap()
    };
    let cache = tempfile::tempdir().unwrap();
    let out = run(cache.path(), "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(proxy.requests_for(upstream).len(), 1);
    // NO_PROXY: the client goes direct (and the made-up host does not resolve).
    let cache = tempfile::tempdir().unwrap();
    let out = run(cache.path(), "example.invalid");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        proxy.requests_for(upstream).len(),
        1,
        "NO_PROXY was ignored"
    );
}

#[test]
fn binary_plan_shows_artifacts_pinned_from_a_mirror() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fs::create_dir(&images).unwrap();
    for r in ["ubuntu-22.04-lxc.yaml", "ubuntu-22.04-vm.yaml"] {
        fs::copy(repo.join("images").join(r), images.join(r)).unwrap();
    }
    for f in ["lab.yaml", "admin.pub"] {
        fs::copy(repo.join("tests/fixtures/seed").join(f), dir.path().join(f)).unwrap();
    }
    let spark = "https://archive.apache.org/dist/spark/spark-3.5.9/spark-3.5.9-bin-hadoop3.tgz";
    let minio =
        "https://dl.min.io/server/minio/release/linux-amd64/archive/minio.RELEASE.2025-10-15T17-29-55Z";
    fs::write(
        images.join("imgbuild.lock"),
        format!(
            "version: 1\nartifacts:\n  {minio}:\n    digest: {}\n    source: checksum-file\n    recipes: [ubuntu-22.04-lxc.yaml]\n  {spark}:\n    digest: {}\n    source: mirror-checksum-file\n    mirror: /srv/mirror/spark-3.5.9-bin-hadoop3.tgz.sha512\n    recipes: [ubuntu-22.04-lxc.yaml, ubuntu-22.04-vm.yaml]\n",
            sha256(b"minio"),
            sha512(b"spark"),
        ),
    )
    .unwrap();
    let lab = dir.path().join("lab.yaml");
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"));
        cmd.args(["plan", "--lab", lab.to_str().unwrap()])
            .args(["--images", images.to_str().unwrap()]);
        if json {
            cmd.arg("--json");
        }
        cmd.env(
            "PVE_TOKEN",
            "root@pam!t=00000000-0000-0000-0000-000000000000",
        )
        .output()
        .unwrap()
    };
    let out = run(false);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains(&format!("warning: {spark} (used by ubuntu-22.04-lxc, ubuntu-22.04-vm) is pinned from the mirror's checksum file /srv/mirror/spark-3.5.9-bin-hadoop3.tgz.sha512")),
        "{table}"
    );
    assert!(!table.contains(&format!("warning: {minio}")), "{table}");
    let out = run(true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pins = v["mirror_pinned_artifacts"].as_array().unwrap();
    assert_eq!(pins.len(), 1, "{v}");
    assert_eq!(pins[0]["url"], spark);
}

#[test]
fn binary_mirror_credentials_are_sent_but_never_shown() {
    let mirror = Server::start();
    let upstream = Server::start();
    let data = body(3_000, 70);
    mirror.route(
        "/m/tool",
        vec![Reply::Status(503), Reply::Body(data.clone())],
    );
    let r = RecipeDir::new(
        &upstream,
        ("/img/base.tar.zst", &format!("digest: {}", sha256(b"gone"))),
        &[("tool", "/dl/tool", format!("digest: {}", sha256(&data)))],
    );
    let secret_url = mirror
        .url("/m/")
        .replace("http://", "http://alice:hunter2pass@");
    let cache = tempfile::tempdir().unwrap();
    let recipe = r.recipe.to_str().unwrap();
    // The base is in neither place: a 404 from the mirror, then from upstream.
    let out = imgbuild(
        cache.path(),
        &[
            "-vv",
            "fetch",
            "--recipe",
            recipe,
            "--mirror",
            &secret_url,
            "--retry-delay-ms",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !all.contains("hunter2pass") && !all.contains("alice"),
        "{all}"
    );
    assert!(all.contains("http://***@127.0.0.1"), "{all}");
    assert!(all.contains("retrying"), "the 503 was retried: {all}");
    let sent = mirror.requests_for("/m/tool");
    assert!(
        sent.iter()
            .all(|q| q.header("Authorization") == Some("Basic YWxpY2U6aHVudGVyMnBhc3M=")),
        "the credentials are sent: {sent:?}"
    );
    // A URL that does not parse, from the flag or the environment, is not echoed.
    let bad = "http://alice:hunter2pass@[::1";
    let out = imgbuild(
        cache.path(),
        &["fetch", "--recipe", recipe, "--mirror", bad],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("--mirror") && !err.contains("hunter2pass"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["fetch", "--help"])
        .env("IMGBUILD_MIRROR", &secret_url)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !text(&out.stdout).contains("hunter2pass"),
        "{}",
        text(&out.stdout)
    );
}

// ---- bake re-checks cached blobs as it reads them ----------------------------

/// A small Proxmox-shaped LXC base: the directories a bake writes into, and
/// one file whose content tells bases apart.
fn lxc_base(marker: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in [
        "./",
        "./etc/",
        "./etc/systemd/",
        "./etc/systemd/system/",
        "./etc/systemd/system/multi-user.target.wants/",
        "./usr/",
        "./usr/local/",
        "./usr/local/bin/",
        "./usr/local/sbin/",
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(marker.len() as u64);
    b.append_data(&mut h, "./etc/marker", marker.as_bytes())
        .unwrap();
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

#[test]
fn binary_bake_catches_a_tampered_cache_while_reading_it() {
    let srv = Server::start();
    let base = lxc_base("the real base");
    let tool = body(30_000, 80);
    srv.route("/img/base.tar.zst", vec![Reply::Body(base.clone())]);
    srv.route("/dl/tool", vec![Reply::Body(tool.clone())]);
    let r = RecipeDir::new(
        &srv,
        ("/img/base.tar.zst", &format!("digest: {}", sha256(&base))),
        &[("tool", "/dl/tool", format!("digest: {}", sha256(&tool)))],
    );
    let cache = tempfile::tempdir().unwrap();
    let dist = tempfile::tempdir().unwrap();
    let recipe = r.recipe.to_str().unwrap();
    let out_dir = dist.path().to_str().unwrap();
    // Any static x86-64 executable will do as the agent here; glibc's ldconfig is one.
    let bake = || {
        imgbuild(
            cache.path(),
            &[
                "bake",
                "--recipe",
                recipe,
                "--agent",
                "/sbin/ldconfig",
                "--out-dir",
                out_dir,
                "-q",
            ],
        )
    };
    let out = imgbuild(cache.path(), &["fetch", "--recipe", recipe, "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let blob = |d: &Digest| cache.path().join("blobs/sha256").join(d.hex());
    let template = dist.path().join("test-lxc.tar.zst");

    // A payload blob swapped for other bytes (same size) in the cache.
    let mut evil = tool.clone();
    evil[12_345] ^= 0xff;
    fs::remove_file(blob(&sha256(&tool))).unwrap();
    fs::write(blob(&sha256(&tool)), &evil).unwrap();
    let out = bake();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("is corrupt") && err.contains(&sha256(&evil).to_string()),
        "{err}"
    );
    assert!(!template.exists(), "nothing published");
    assert!(
        !blob(&sha256(&tool)).exists(),
        "the corrupt blob was removed"
    );
    assert_eq!(
        fs::read_dir(dist.path()).unwrap().count(),
        0,
        "no temporary file left"
    );

    // The base swapped for another valid template: it would bake fine, but it
    // is not the pinned one.
    let other = lxc_base("a substituted base");
    fs::remove_file(blob(&sha256(&base))).unwrap();
    fs::write(blob(&sha256(&base)), &other).unwrap();
    let out = bake();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("is corrupt") && err.contains(&sha256(&other).to_string()),
        "{err}"
    );
    assert!(!template.exists());

    // Each removed blob was fetched again by the next run, which then bakes.
    let out = bake();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(srv.requests_for("/dl/tool").len(), 2);
    assert_eq!(srv.requests_for("/img/base.tar.zst").len(), 2);
    assert!(template.exists());
}

// ---- upstream signatures, checked with keys pinned beside the recipes ---------

/// A GnuPG home with one ed25519 signing key, made for the test (gpg is the
/// peer that signs; imgbuild verifies in pure Rust).
struct Gpg {
    home: tempfile::TempDir,
    uid: String,
}

impl Gpg {
    fn new(uid: &str) -> Gpg {
        // A short name: gpg-agent's socket path must stay under ~100 bytes.
        let home = tempfile::Builder::new().prefix("g").tempdir().unwrap();
        let g = Gpg {
            home,
            uid: uid.to_string(),
        };
        g.run(&["--quick-gen-key", uid, "ed25519", "sign", "never"]);
        g
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .expect("gpg is needed for the signature tests: apt-get install gnupg");
        assert!(out.status.success(), "gpg {args:?}: {}", text(&out.stderr));
        out.stdout
    }

    fn public_key(&self) -> String {
        text(&self.run(&["--armor", "--export", &self.uid]))
    }

    fn sign(&self, data: &[u8], armor: bool) -> Vec<u8> {
        let f = self.home.path().join("data");
        fs::write(&f, data).unwrap();
        let mut args = vec!["--detach-sign", "-o", "-"];
        if armor {
            args.insert(0, "--armor");
        }
        args.push(f.to_str().unwrap());
        self.run(&args)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = std::process::Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// A minisign key pair made for the test with the minisign tool.
struct Minisign {
    dir: tempfile::TempDir,
}

impl Minisign {
    fn new() -> Minisign {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("minisign")
            .current_dir(dir.path())
            .args(["-G", "-W", "-p", "key.pub", "-s", "key.sec"])
            .output()
            .expect("minisign is needed for the signature tests: apt-get install minisign");
        assert!(out.status.success(), "{}", text(&out.stderr));
        Minisign { dir }
    }

    fn public_key(&self) -> String {
        fs::read_to_string(self.dir.path().join("key.pub")).unwrap()
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        fs::write(self.dir.path().join("data"), data).unwrap();
        let out = std::process::Command::new("minisign")
            .current_dir(self.dir.path())
            .args(["-S", "-s", "key.sec", "-m", "data", "-x", "data.minisig"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        fs::read(self.dir.path().join("data.minisig")).unwrap()
    }
}

#[test]
fn binary_lock_checks_the_signature_of_a_signed_checksum_file() {
    // Ubuntu's way: SHA256SUMS plus SHA256SUMS.gpg, signed by a key pinned in the repo.
    let srv = Server::start();
    let signer = Gpg::new("Cloud Image Builder <test@example.invalid>");
    let stranger = Gpg::new("Someone Else <other@example.invalid>");
    let base = lxc_base("ubuntu");
    let sums = format!("{} *base.img\n", sha256(&base).hex());
    srv.route("/rel/base.img", vec![Reply::Body(base.clone())]);
    srv.route(
        "/rel/SHA256SUMS",
        vec![Reply::Body(sums.clone().into_bytes())],
    );
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("keys")).unwrap();
    fs::write(dir.path().join("keys/cloud.asc"), signer.public_key()).unwrap();
    let recipe = format!(
        "name: test-vm\nkind: vm\nbase:\n  url: {}\n  checksums: {}\n  signature: {{url: {}, key: keys/cloud.asc, signs: checksums}}\npayload: []\n",
        srv.url("/rel/base.img"),
        srv.url("/rel/SHA256SUMS"),
        srv.url("/rel/SHA256SUMS.gpg"),
    );
    fs::write(dir.path().join("test-vm.yaml"), recipe).unwrap();
    let images = dir.path().to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let lock = || imgbuild(cache.path(), &["lock", "--images", images, "-q"]);
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("missing", None, "the signature is missing"),
        (
            "not a signature",
            Some(b"garbage".to_vec()),
            "not an OpenPGP signature",
        ),
        (
            "a good signature over other bytes",
            Some(signer.sign(b"other bytes", true)),
            "BAD signature",
        ),
        (
            "another key's signature",
            Some(stranger.sign(sums.as_bytes(), true)),
            "not in",
        ),
    ];
    for (what, sig, expect) in cases {
        match sig {
            Some(s) => srv.route("/rel/SHA256SUMS.gpg", vec![Reply::Body(s)]),
            None => srv.route("/rel/SHA256SUMS.gpg", vec![Reply::Status(404)]),
        }
        let out = lock();
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(expect), "{what}: want {expect:?} in {err}");
        assert!(!dir.path().join("imgbuild.lock").exists(), "{what}");
    }
    // The real thing, binary (not armored) like Ubuntu's .gpg.
    srv.route(
        "/rel/SHA256SUMS.gpg",
        vec![Reply::Body(signer.sign(sums.as_bytes(), false))],
    );
    let out = lock();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lock_text = fs::read_to_string(dir.path().join("imgbuild.lock")).unwrap();
    assert!(
        lock_text.contains(&sha256(&base).to_string())
            && lock_text.contains("source: checksum-file"),
        "{lock_text}"
    );
    // A signed checksum file may come from a mirror (its signature is checked).
    fs::remove_file(dir.path().join("imgbuild.lock")).unwrap();
    let mirror = tempfile::tempdir().unwrap();
    let evil = format!("{} *base.img\n", sha256(b"evil").hex());
    fs::write(mirror.path().join("SHA256SUMS"), &evil).unwrap();
    let m = mirror.path().to_str().unwrap();
    let out = imgbuild(
        cache.path(),
        &["lock", "--images", images, "--mirror", m, "-q"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("BAD signature"),
        "{}",
        text(&out.stderr)
    );
    fs::write(mirror.path().join("SHA256SUMS"), &sums).unwrap();
    let out = imgbuild(
        cache.path(),
        &["lock", "--images", images, "--mirror", m, "-q"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn binary_fetch_checks_artifact_signatures_before_publishing() {
    // Apache's way (.asc against the project's KEYS, which holds several keys
    // with text between them) and MinIO's (.minisig).
    let srv = Server::start();
    let apache = Gpg::new("Release Manager <rm@example.invalid>");
    let other = Gpg::new("Earlier Manager <em@example.invalid>");
    let mini = Minisign::new();
    let spark = body(40_000, 90);
    let minio = body(30_000, 91);
    srv.route("/dist/spark.tgz", vec![Reply::Body(spark.clone())]);
    srv.route("/dl/minio", vec![Reply::Body(minio.clone())]);
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("keys")).unwrap();
    fs::write(
        dir.path().join("keys/KEYS"),
        format!(
            "This file contains the PGP keys of developers.\n\npub   ed25519 2024-01-01\n{}\npub   ed25519 2025-01-01\n{}",
            other.public_key(),
            apache.public_key()
        ),
    )
    .unwrap();
    fs::write(dir.path().join("keys/minio.pub"), mini.public_key()).unwrap();
    let base = lxc_base("b");
    srv.route("/img/base.tar.zst", vec![Reply::Body(base.clone())]);
    let recipe = format!(
        "name: test-lxc\nkind: lxc\nbase:\n  url: {}\n  digest: {}\npayload:\n  - name: spark\n    url: {}\n    digest: {}\n    signature: {{url: {}, key: keys/KEYS}}\n    install: {{file: /opt/spark.tgz, mode: \"0644\"}}\n  - name: minio\n    url: {}\n    digest: {}\n    signature: {{url: {}, key: keys/minio.pub}}\n    install: {{file: /usr/local/bin/minio, mode: \"0755\"}}\n",
        srv.url("/img/base.tar.zst"),
        sha256(&base),
        srv.url("/dist/spark.tgz"),
        sha256(&spark),
        srv.url("/dist/spark.tgz.asc"),
        srv.url("/dl/minio"),
        sha256(&minio),
        srv.url("/dl/minio.minisig"),
    );
    let recipe_path = dir.path().join("test-lxc.yaml");
    fs::write(&recipe_path, recipe).unwrap();
    let recipe = recipe_path.to_str().unwrap();
    let blob = |cache: &Path, d: &Digest| cache.join("blobs/sha256").join(d.hex());
    type Case = (&'static str, Option<Vec<u8>>, Option<Vec<u8>>, &'static str);
    let cases: Vec<Case> = vec![
        ("missing .asc", None, Some(mini.sign(&minio)), "spark"),
        (
            "missing .minisig",
            Some(apache.sign(&spark, true)),
            None,
            "minio",
        ),
        (
            ".asc over other bytes",
            Some(apache.sign(b"x", true)),
            Some(mini.sign(&minio)),
            "BAD signature on artifact `spark`",
        ),
        (
            ".minisig over other bytes",
            Some(apache.sign(&spark, true)),
            Some(mini.sign(b"x")),
            "BAD signature on artifact `minio`",
        ),
        (
            "garbage .minisig",
            Some(apache.sign(&spark, true)),
            Some(b"untrusted comment: x\nnot base64\n".to_vec()),
            "not a minisign signature",
        ),
        (
            ".asc by a key not in KEYS",
            Some(Gpg::new("Mallory <m@example.invalid>").sign(&spark, true)),
            Some(mini.sign(&minio)),
            "not in",
        ),
    ];
    let serve = |path: &str, sig: Option<Vec<u8>>| match sig {
        Some(s) => srv.route(path, vec![Reply::Body(s)]),
        None => srv.route(path, vec![Reply::Status(404)]),
    };
    for (what, asc, minisig, expect) in cases {
        serve("/dist/spark.tgz.asc", asc);
        serve("/dl/minio.minisig", minisig);
        let cache = tempfile::tempdir().unwrap();
        let out = imgbuild(cache.path(), &["fetch", "--recipe", recipe, "-q"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(expect), "{what}: want {expect:?} in {err}");
        if what.starts_with("missing") {
            assert!(err.contains("the signature is missing"), "{what}: {err}");
        }
        if !what.starts_with("missing") {
            let bad = if what.contains(".asc") {
                sha256(&spark)
            } else {
                sha256(&minio)
            };
            assert!(!blob(cache.path(), &bad).exists(), "{what}: published");
            assert_eq!(files(&cache.path().join("partial")), Vec::<String>::new());
        }
    }
    serve("/dist/spark.tgz.asc", Some(apache.sign(&spark, true)));
    serve("/dl/minio.minisig", Some(mini.sign(&minio)));
    let cache = tempfile::tempdir().unwrap();
    let out = imgbuild(cache.path(), &["fetch", "--recipe", recipe, "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read(blob(cache.path(), &sha256(&spark))).unwrap(),
        spark
    );
    assert_eq!(
        fs::read(blob(cache.path(), &sha256(&minio))).unwrap(),
        minio
    );
}
