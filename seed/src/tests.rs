//! Seed parsing, validation errors and the canonical form.

use super::*;

fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {p}: {e}"))
}

fn err(yaml: &str) -> String {
    let e = Seed::from_yaml(yaml).unwrap_err();
    eprintln!("{e}");
    e.to_string()
}

#[test]
fn fixtures_parse_with_defaults() {
    let s = Seed::from_yaml(&fixture("devlab.yaml")).unwrap();
    assert_eq!(s.hostname.as_str(), "devlab");
    let spark = s.roles.spark.as_ref().unwrap();
    assert_eq!(spark.home.as_str(), "/opt/spark");
    assert_eq!(spark.master.as_ref().unwrap().port.get(), 7077);
    assert_eq!(spark.worker.as_ref().unwrap().ui_port.get(), 8081);
    assert_eq!(spark.expect_workers, 1);
    assert!(spark.s3.as_ref().unwrap().path_style);

    let m = Seed::from_yaml(&fixture("minio.yaml")).unwrap();
    assert_eq!(m.timezone.as_str(), "Etc/UTC");
    let os = m.roles.object_store.as_ref().unwrap();
    assert_eq!(
        os.volumes,
        Volumes::Local(vec![AbsPath::new("/var/lib/minio").unwrap()])
    );
    assert_eq!((os.api_port.get(), os.console_port.get()), (9000, 9001));
}

#[test]
fn canonical_form_round_trips_and_hashes_its_bytes() {
    let s = Seed::from_yaml(&fixture("minio.yaml")).unwrap();
    let canon = s.to_yaml();
    let again = Seed::from_yaml(&canon).unwrap();
    assert_eq!(again, s);
    assert_eq!(again.to_yaml(), canon, "canonical form is a fixed point");
    assert_eq!(
        s.instance_id(),
        hex::encode(Sha256::digest(canon.as_bytes()))
    );
    assert_eq!(s.instance_id().len(), 64);
    // Formatting and comments do not change the id; content does.
    let reformatted =
        fixture("minio.yaml").replace("# An object", "# Some other comment: an object");
    assert_eq!(
        Seed::from_yaml(&reformatted).unwrap().instance_id(),
        s.instance_id()
    );
    let changed = fixture("minio.yaml").replace("[lake, spark-logs]", "[lake]");
    assert_ne!(
        Seed::from_yaml(&changed).unwrap().instance_id(),
        s.instance_id()
    );
}

#[test]
fn secrets_stay_out_of_debug() {
    let s = Seed::from_yaml(&fixture("minio.yaml")).unwrap();
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("change-me-please"), "{dbg}");
    assert!(dbg.contains("***"));
    // ...but the canonical YAML carries it: that file is root-only.
    assert!(s.to_yaml().contains("change-me-please"));
}

#[test]
fn distributed_volumes() {
    let y = fixture("minio.yaml").replace(
        "flavor: minio",
        "flavor: minio\n    volumes: http://minio{1...4}/data{1...2}",
    );
    let s = Seed::from_yaml(&y).unwrap();
    let os = s.roles.object_store.unwrap();
    assert!(
        matches!(os.volumes, Volumes::Distributed(ref v) if v.as_str() == "http://minio{1...4}/data{1...2}")
    );
}

#[test]
fn validation_errors_name_field_and_place() {
    let e = Seed::from_yaml("version: 1\nhostname: bad_name\n").unwrap_err();
    eprintln!("{e} {:?}", e.location());
    assert_eq!(e.location().map(|l| l.0), Some(2));
    assert!(e.to_string().contains("hostname"), "{e}");

    let e = err("version: 2\nhostname: a\n");
    assert!(e.contains("unsupported seed version 2"), "{e}");

    let e = err("version: 1\nhostname: a\nfirewall:\n  open:\n    - { port: 0 }\n");
    assert!(e.contains("port"), "{e}");
    assert!(e.contains("firewall.open[0].port"), "{e}");

    let e = err("version: 1\nhostname: a\nfirewall:\n  open: [{port: 80}, {port: 80}]\n");
    assert!(e.contains("listed twice"), "{e}");

    let e = err("version: 1\nhostname: a\nsurprise: 1\n");
    assert!(e.contains("unknown field `surprise`"), "{e}");
    assert_eq!(
        Seed::from_yaml("version: 1\nhostname: a\nsurprise: 1\n")
            .unwrap_err()
            .location(),
        Some((3, 1))
    );

    let base = fixture("minio.yaml");
    let e = err(&base.replace("change-me-please", "short"));
    assert!(e.contains("roles.object_store"), "{e}");
    assert!(!e.contains("short\""), "secret value leaked: {e}");

    let e = err(&base.replace("[lake, spark-logs]", "[Lake]"));
    assert!(e.contains("bucket name"), "{e}");

    let e = err(&fixture("devlab.yaml").replace("cores: 4", "cores: 0"));
    assert!(e.contains("roles.spark"), "{e}");

    let e = err(&fixture("devlab.yaml").replace("spark://devlab:7077", "devlab:7077"));
    assert!(e.contains("spark://host:port"), "{e}");

    let e = err("version: 1\nhostname: a\nroles:\n  spark: {auth_secret: cluster-secret}\n");
    assert!(e.contains("master, a worker, or both"), "{e}");

    let e = err("version: 1\nhostname: a\npeers:\n  minio: 999.1.1.1\n");
    assert!(e.contains("peers"), "{e}");
}

/// The canonical form must stay byte-identical to what serde_yaml 0.9 wrote,
/// or every guest's instance id would change with the parser.
#[test]
fn canonical_form_is_byte_identical_to_serde_yaml() {
    let mut seeds = vec![
        Seed::from_yaml(&fixture("minio.yaml")).unwrap(),
        Seed::from_yaml(&fixture("devlab.yaml")).unwrap(),
        Seed::from_yaml(&fixture("monitoring.yaml")).unwrap(),
        Seed::from_yaml("version: 1\nhostname: bare\n").unwrap(),
    ];
    // Strings that libyaml writes plain, single-quoted, or that resolve to
    // other types when plain.
    let tricky = [
        "1",
        "0123",
        "1e5",
        "0x1f",
        "true",
        "null",
        "y",
        "-",
        "a:b",
        "a: b",
        "a #b",
        "a#b",
        "#x",
        "!x",
        "&x",
        "*x",
        "|x",
        "?x",
        "? x",
        ":x",
        "-x",
        "- x",
        "%x",
        "@x",
        "`x",
        "[x",
        "x]",
        "{x",
        ",x",
        "x,",
        "---x",
        "...x",
        "x'y",
        "'x",
        "\"x",
        ".inf",
        "-.inf",
        ".nan",
        "+1",
        "-1",
        "1_0",
        "infinity",
        "x y",
        "é",
        "a\u{2603}b",
    ];
    for (i, t) in tricky.iter().enumerate() {
        let mut s = Seed::from_yaml(&fixture("minio.yaml")).unwrap();
        s.firewall.open[0].comment =
            Some(Comment::new(format!("c {t}")).unwrap_or_else(|_| Comment::new("plain").unwrap()));
        if let Ok(h) = Hostname::new(*t) {
            s.peers
                .insert(h, std::net::Ipv4Addr::new(10, 0, 0, i as u8));
        }
        let os = s.roles.object_store.as_mut().unwrap();
        if let Ok(k) = AccessKey::new(format!("{t}{t}{t}")) {
            os.root_user = k;
        }
        if let Ok(p) = Secret::new(format!("{t}-secret-{t}")) {
            os.root_password = p;
        }
        s.ssh.authorized_keys = vec![SshPublicKey::new(format!(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKZ2b0h1c2Vy {t}"
        ))
        .unwrap()];
        seeds.push(s);
    }
    for s in &seeds {
        let old = serde_yaml::to_string(s).unwrap();
        assert_eq!(s.to_yaml(), old);
        assert_eq!(Seed::from_yaml(&old).unwrap(), *s, "{old}");
    }
}

#[test]
fn non_ascii_memory_is_an_error_not_a_panic() {
    let e = err(&fixture("devlab.yaml").replace("memory: 6g", "memory: \"4\u{e9}\""));
    assert!(e.contains("memory size"), "{e}");
    for bad in ["\u{e9}", "4\u{e9}", "\u{e9}g", "99999999999999g"] {
        assert!(Memory::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn volume_expansions_are_bounded() {
    let t = std::time::Instant::now();
    let y = fixture("minio.yaml").replace(
        "flavor: minio",
        "flavor: minio\n    volumes: \"/d{1...100000}/e{1...100000}\"",
    );
    let e = err(&y);
    assert!(e.contains("expands to 10000000000 endpoints"), "{e}");
    assert!(t.elapsed().as_secs() < 1);
    // 64 servers x 64 drives is the most that is accepted.
    assert!(VolumeExpr::new("http://minio{1...64}/data{1...64}").is_ok());
    assert!(VolumeExpr::new("http://minio{1...64}/data{1...65}").is_err());
}

#[test]
fn deep_nesting_is_refused_quickly() {
    for (name, text) in [
        (
            "flow",
            format!("version: 1\nhostname: a\npeers: {}", "[".repeat(60_000)),
        ),
        (
            "flow maps",
            format!("version: 1\nhostname: a\npeers: {}", "{a: ".repeat(10_000)),
        ),
        (
            "block",
            format!("version: 1\nhostname: a\npeers:\n{}x", "- ".repeat(20_000)),
        ),
        (
            "indent",
            format!(
                "version: 1\nhostname: a\n{}",
                (0..300)
                    .map(|i| format!("{}k:\n", " ".repeat(i)))
                    .collect::<String>()
            ),
        ),
    ] {
        let t = std::time::Instant::now();
        let e = Seed::from_yaml(&text).unwrap_err();
        assert!(e.to_string().contains("nested too deeply"), "{name}: {e}");
        assert!(e.location().is_some(), "{name}");
        assert!(t.elapsed().as_millis() < 500, "{name}: {:?}", t.elapsed());
    }
    // The reproduction: 100k nested `[` (refused for its size).
    let t = std::time::Instant::now();
    assert!(Seed::from_yaml(&format!(
        "version: 1\nhostname: a\npeers: {}",
        "[".repeat(100_000)
    ))
    .is_err());
    assert!(t.elapsed().as_millis() < 500);
    // Brackets inside quotes and comments do not count.
    let quoted = format!(
        "version: 1\nhostname: a # [[[[[[[[[[[[[[[[[[[[[[\nfirewall:\n  open: [{{port: 1, comment: \"{}\"}}]\n",
        "[".repeat(40)
    );
    assert!(Seed::from_yaml(&quoted).is_ok());
    // Just past the limit of the tree itself (the parser's view).
    let deep = format!(
        "version: 1\nhostname: a\npeers: {}{}",
        "[".repeat(17),
        "]".repeat(17)
    );
    assert!(err(&deep).contains("nested too deeply"));
}

#[test]
fn size_is_bounded() {
    let big = format!(
        "version: 1\nhostname: a\n# {}\n",
        "x".repeat(MAX_SEED_BYTES)
    );
    assert!(err(&big).contains("larger than 65536 bytes"));
}

#[test]
fn duplicate_keys_are_refused_everywhere() {
    for (text, line) in [
        ("version: 1\nhostname: a\nhostname: b\n", 3),
        (
            "version: 1\nhostname: a\npeers:\n  x: 10.0.0.1\n  x: 10.0.0.2\n",
            5,
        ),
        (
            "version: 1\nhostname: a\nfirewall:\n  open: [{port: 1, port: 2}]\n",
            4,
        ),
        (
            "version: 1\nhostname: a\nroles: {spark: {}, spark: {}}\n",
            3,
        ),
    ] {
        let e = Seed::from_yaml(text).unwrap_err();
        assert!(e.to_string().contains("duplicate key"), "{text}: {e}");
        assert_eq!(e.location().map(|l| l.0), Some(line), "{text}: {e}");
    }
}

#[test]
fn anchors_aliases_tags_and_other_documents_are_refused() {
    for text in [
        "version: 1\nhostname: &h a\npeers: {*h: 10.0.0.1}\n",
        "version: 1\nhostname: !!str a\n",
        "version: 1\nhostname: *nothing\n",
        "- version: 1\n",
        "just a string",
        "version: 1\nhostname: a\n---\nversion: 1\nhostname: b\n",
        "version: 1\nhostname: \"unterminated\n",
        "\u{feff}version: 1\nhostname: a\n\t- x",
    ] {
        assert!(Seed::from_yaml(text).is_err(), "{text:?}");
    }
    assert!(
        Seed::from_yaml("").is_err(),
        "an empty seed lacks version and hostname"
    );
    assert!(
        Seed::from_yaml("# c\n---\nversion: 1\nhostname: a\n").is_ok(),
        "an explicit start is fine"
    );
}

#[test]
fn host_names_fit_the_kernel_and_dns() {
    let long = "a".repeat(63);
    let e = err(&format!("version: 1\nhostname: {long}.{long}\n"));
    assert!(e.contains("at most 64 characters"), "{e}");
    assert!(Seed::from_yaml(&format!("version: 1\nhostname: {long}\n")).is_ok());
    let e = err(&format!("version: 1\nhostname: {long}a\n"));
    assert!(e.contains("1 to 63"), "{e}");
    // Peers may have longer (DNS-valid) names.
    let peers = format!("version: 1\nhostname: a\npeers:\n  {long}.{long}: 10.0.0.1\n");
    assert!(Seed::from_yaml(&peers).is_ok());
    let e = err(&format!(
        "version: 1\nhostname: a\npeers:\n  {long}.{long}.{long}.{long}: 10.0.0.1\n"
    ));
    assert!(e.contains("1 to 253"), "{e}");
}

#[test]
fn unit_timeout_constant_matches_the_unit_file() {
    let line = format!("TimeoutStartSec={}min\n", UNIT_TIMEOUT_START.as_secs() / 60);
    assert!(UNIT_FILE.contains(&line), "{UNIT_FILE}");
}

/// Issue 9 item 5, the agent's side: the same policy as the builder's.
#[test]
fn service_directories_follow_the_path_policy() {
    let minio = fixture("minio.yaml");
    for (dir, want) in [
        ("/etc", "`/etc` is a directory of the system"),
        ("/", "`/` cannot be"),
        ("/var/lib", "shared by the whole system"),
        ("/usr/local/minio", "inside /usr"),
        ("/home/alice", "inside /home"),
    ] {
        let e = err(&minio.replace(
            "flavor: minio",
            &format!("flavor: minio\n    data_dir: {dir}"),
        ));
        assert!(e.contains("roles.object_store.data_dir"), "{dir}: {e}");
        assert!(e.contains(want), "{dir}: {e}");
    }
    let e = err(&minio.replace(
        "flavor: minio",
        "flavor: minio\n    data_dir: /srv/minio\n    log_dir: /srv/minio/log",
    ));
    assert!(
        e.contains("roles.object_store.log_dir") && e.contains("inside one another"),
        "{e}"
    );
    let e = err(&minio.replace("flavor: minio", "flavor: minio\n    volumes: [/var/log]"));
    assert!(e.contains("roles.object_store.volumes"), "{e}");
    let e = err(&minio.replace(
        "flavor: minio",
        "flavor: minio\n    volumes: http://m{1...4}/etc/d{1...2}",
    ));
    assert!(e.contains("inside /etc"), "{e}");
    // An object store inside Spark's home on a guest that runs both.
    let both = fixture("devlab.yaml").replace(
        "roles:\n",
        "roles:\n  object_store:\n    data_dir: /opt/spark/minio\n    root_user: labadmin\n    root_password: change-me-please\n",
    );
    let e = err(&both);
    assert!(e.contains("the spark's home `/opt/spark`"), "{e}");
    let e = err(&fixture("devlab.yaml").replace("  spark:\n", "  spark:\n    log_dir: /var/log\n"));
    assert!(e.contains("roles.spark.log_dir"), "{e}");
    // The defaults pass.
    assert!(Seed::from_yaml(&minio).is_ok());
}

#[test]
fn service_users_and_spark_auth() {
    let minio = Seed::from_yaml(&fixture("minio.yaml")).unwrap();
    let users = &minio.roles.object_store.as_ref().unwrap().users;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].access_key.as_str(), "spark");
    assert_eq!(users[0].policy.as_str(), "imgbuild-spark-devlab");
    assert!(!format!("{users:?}").contains("spark-s3-secret"));
    let devlab = Seed::from_yaml(&fixture("devlab.yaml")).unwrap();
    assert_eq!(
        devlab.roles.spark.as_ref().unwrap().auth_secret.expose(),
        "spark-cluster-secret"
    );

    // Spark authenticates, always.
    let e = err(&fixture("devlab.yaml").replace("    auth_secret: spark-cluster-secret\n", ""));
    assert!(e.contains("missing field `auth_secret`"), "{e}");
    let e =
        err(&fixture("devlab.yaml")
            .replace("auth_secret: spark-cluster-secret", "auth_secret: short"));
    assert!(e.contains("roles.spark.auth_secret"), "{e}");
    assert!(!e.contains("short\""), "{e}");

    // A service user is never root, never twice, never without buckets.
    let e = err(&fixture("minio.yaml").replace("- access_key: spark", "- access_key: labadmin"));
    assert!(e.contains("may not be the root user"), "{e}");
    let twice = fixture("minio.yaml")
        + "      - {access_key: spark, secret_key: other-secret, policy: p2, buckets: [lake]}\n";
    assert!(err(&twice).contains("is listed twice"));
    let e = err(&fixture("minio.yaml").replace(
        "        buckets:\n          - lake\n          - spark-logs\n",
        "        buckets: []\n",
    ));
    assert!(
        e.contains("users[0].buckets: list at least one bucket"),
        "{e}"
    );
    let e = err(&fixture("minio.yaml").replace("policy: imgbuild-spark-devlab", "policy: a,b"));
    assert!(e.contains("policy name"), "{e}");

    // Spark beside the object store still may not use its root user.
    let both = fixture("minio.yaml").replace(
        "roles:\n",
        "roles:\n  spark:\n    master: {host: minio}\n    auth_secret: spark-cluster-secret\n    s3: {endpoint: \"http://minio:9000\", access_key: labadmin, secret_key: change-me-please}\n",
    );
    let e = err(&both);
    assert!(e.contains("never the object store's root user"), "{e}");
}
