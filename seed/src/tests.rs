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

    let e = err("version: 1\nhostname: a\nroles:\n  spark: {}\n");
    assert!(e.contains("master, a worker, or both"), "{e}");

    let e = err("version: 1\nhostname: a\npeers:\n  minio: 999.1.1.1\n");
    assert!(e.contains("peers"), "{e}");
}
