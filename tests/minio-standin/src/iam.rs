//! Users and canned policies, as MinIO's built-in IAM keeps them: the root
//! user may do anything; any other user only what its attached policies
//! allow (explicit `Deny` wins, no policy means no access). Persisted under
//! the first volume in `.minio.sys/config/iam/` (a name no bucket can have),
//! so users survive restarts like MinIO's.
//!
//! Policy documents are IAM JSON: `Statement` entries with `Effect`,
//! `Action` and `Resource` (strings or lists, `*` and `?` wildcards).
//! `Condition`, `NotAction`, `NotResource` and `Principal` are refused when
//! the policy is added: the stand-in would not enforce them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};
use serde_json::{json, Value};

/// One IAM statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub allow: bool,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// A user other than root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub secret: String,
    pub enabled: bool,
    pub policies: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, User>,
    /// Name -> (document as sent, parsed statements).
    policies: BTreeMap<String, (Value, Vec<Statement>)>,
}

/// The IAM store, shared by the S3 service and the admin API.
#[derive(Debug, Clone)]
pub struct Iam {
    root_user: String,
    root_secret: String,
    file: Option<PathBuf>,
    state: Arc<RwLock<State>>,
}

fn strings(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or(format!("{what} entries must be strings"))
            })
            .collect(),
        _ => Err(format!("every statement needs {what}")),
    }
}

/// Parses an IAM policy document (what `mc admin policy create` sends).
pub fn parse_policy(doc: &Value) -> Result<Vec<Statement>, String> {
    let stmts = match doc.get("Statement") {
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => return Err("policy has no Statement".into()),
    };
    let mut out = Vec::new();
    for s in &stmts {
        let Some(obj) = s.as_object() else {
            return Err("a statement is not an object".into());
        };
        for k in obj.keys() {
            if !matches!(k.as_str(), "Effect" | "Action" | "Resource" | "Sid") {
                return Err(format!(
                    "statement key {k:?} is not supported by this stand-in"
                ));
            }
        }
        let allow = match obj.get("Effect").and_then(Value::as_str) {
            Some("Allow") => true,
            Some("Deny") => false,
            _ => return Err("Effect must be Allow or Deny".into()),
        };
        out.push(Statement {
            allow,
            actions: strings(obj.get("Action"), "Action")?,
            resources: strings(obj.get("Resource"), "Resource")?,
        });
    }
    Ok(out)
}

/// `*` (any run) and `?` (any one character) glob, as IAM matches.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `stmts` allow `action` on `resource` (an explicit Deny wins).
pub fn allowed(stmts: &[&Statement], action: &str, resource: &str) -> bool {
    let hits = |s: &&&Statement| {
        s.actions.iter().any(|a| glob(a, action)) && s.resources.iter().any(|r| glob(r, resource))
    };
    !stmts.iter().filter(|s| !s.allow).any(|s| hits(&s))
        && stmts.iter().filter(|s| s.allow).any(|s| hits(&s))
}

/// The IAM action and resource of an S3 operation, as MinIO names them.
pub fn action_of(op: &str, path: &S3Path) -> (String, String) {
    let (bucket, key) = match path {
        S3Path::Root => return ("s3:ListAllMyBuckets".into(), "arn:aws:s3:::*".into()),
        S3Path::Bucket { bucket } => (bucket.to_string(), None),
        S3Path::Object { bucket, key } => (bucket.to_string(), Some(key.to_string())),
    };
    let action = match op {
        "HeadBucket" | "ListObjects" | "ListObjectsV2" | "ListObjectVersions" => "s3:ListBucket",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "GetObject" | "HeadObject" | "GetObjectAttributes" => "s3:GetObject",
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "s3:PutObject",
        "DeleteObject" | "DeleteObjects" => "s3:DeleteObject",
        "ListParts" => "s3:ListMultipartUploadParts",
        other => return (format!("s3:{other}"), arn(&bucket, key.as_deref())),
    };
    // DeleteObjects names its keys in the body: MinIO checks each; here the
    // bucket's objects as a whole.
    let key = if op == "DeleteObjects" {
        Some("*".to_string())
    } else {
        key
    };
    (action.into(), arn(&bucket, key.as_deref()))
}

fn arn(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

impl Iam {
    /// The store for `root`, persisted under `volume` (loaded if present).
    pub fn open(root_user: &str, root_secret: &str, volume: Option<&Path>) -> Result<Iam, String> {
        let file = volume.map(|v| v.join(".minio.sys/config/iam/standin-iam.json"));
        let iam = Iam {
            root_user: root_user.into(),
            root_secret: root_secret.into(),
            file,
            state: Arc::default(),
        };
        if let Some(f) = &iam.file {
            if let Ok(text) = std::fs::read_to_string(f) {
                iam.load(&text)
                    .map_err(|e| format!("{}: {e}", f.display()))?;
            }
        }
        Ok(iam)
    }

    fn load(&self, text: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut st = self.state.write().expect("iam lock");
        for (name, doc) in v["policies"].as_object().into_iter().flatten() {
            st.policies
                .insert(name.clone(), (doc.clone(), parse_policy(doc)?));
        }
        for (name, u) in v["users"].as_object().into_iter().flatten() {
            st.users.insert(
                name.clone(),
                User {
                    secret: u["secretKey"].as_str().unwrap_or_default().into(),
                    enabled: u["status"] == "enabled",
                    policies: u["policies"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect(),
                },
            );
        }
        Ok(())
    }

    fn save(&self, st: &State) -> Result<(), String> {
        let Some(f) = &self.file else { return Ok(()) };
        let users: serde_json::Map<String, Value> = st
            .users
            .iter()
            .map(|(k, u)| {
                (
                    k.clone(),
                    json!({"secretKey": u.secret, "status": if u.enabled {"enabled"} else {"disabled"}, "policies": u.policies}),
                )
            })
            .collect();
        let policies: serde_json::Map<String, Value> = st
            .policies
            .iter()
            .map(|(k, (d, _))| (k.clone(), d.clone()))
            .collect();
        let text = json!({"users": users, "policies": policies}).to_string();
        let dir = f.parent().expect("file under a directory");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let tmp = f.with_extension("tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut o = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            o.write_all(text.as_bytes())
                .and_then(|()| o.sync_all())
                .map_err(|e| e.to_string())?;
        }
        std::fs::rename(&tmp, f).map_err(|e| format!("{}: {e}", f.display()))
    }

    /// The root user's access key.
    pub fn root_user(&self) -> &str {
        &self.root_user
    }

    /// The root user's secret key.
    pub fn root_secret(&self) -> &str {
        &self.root_secret
    }

    /// Adds or replaces a canned policy.
    pub fn add_policy(&self, name: &str, doc: Value) -> Result<(), String> {
        if name.is_empty() || name.contains(',') || name.contains(char::is_whitespace) {
            return Err(format!("invalid policy name {name:?}"));
        }
        let stmts = parse_policy(&doc)?;
        let mut st = self.state.write().expect("iam lock");
        st.policies.insert(name.into(), (doc, stmts));
        self.save(&st)
    }

    /// Creates a user or updates its secret and status (policies stay).
    pub fn set_user(&self, access_key: &str, secret: &str, enabled: bool) -> Result<(), String> {
        if access_key == self.root_user {
            return Err("the root user cannot be changed".into());
        }
        let mut st = self.state.write().expect("iam lock");
        let u = st.users.entry(access_key.into()).or_insert(User {
            secret: String::new(),
            enabled,
            policies: BTreeSet::new(),
        });
        u.secret = secret.into();
        u.enabled = enabled;
        self.save(&st)
    }

    /// Attaches policies; `Ok(false)` when all were attached already.
    pub fn attach(&self, user: &str, policies: &[String]) -> Result<bool, AttachError> {
        let mut st = self.state.write().expect("iam lock");
        if let Some(p) = policies.iter().find(|p| !st.policies.contains_key(*p)) {
            return Err(AttachError::NoSuchPolicy(p.clone()));
        }
        let Some(u) = st.users.get_mut(user) else {
            return Err(AttachError::NoSuchUser);
        };
        let before = u.policies.len();
        u.policies.extend(policies.iter().cloned());
        if u.policies.len() == before {
            return Ok(false);
        }
        self.save(&st).map_err(AttachError::Store)?;
        Ok(true)
    }

    /// Removes a user; `Ok(false)` when there was none.
    pub fn remove_user(&self, access_key: &str) -> Result<bool, String> {
        let mut st = self.state.write().expect("iam lock");
        if st.users.remove(access_key).is_none() {
            return Ok(false);
        }
        self.save(&st).map(|()| true)
    }

    /// Removes a canned policy; `Ok(false)` when there was none. A policy
    /// still attached to a user is refused (the user goes first).
    pub fn remove_policy(&self, name: &str) -> Result<bool, String> {
        let mut st = self.state.write().expect("iam lock");
        if let Some((u, _)) = st.users.iter().find(|(_, u)| u.policies.contains(name)) {
            return Err(format!("policy {name} is attached to user {u}"));
        }
        if st.policies.remove(name).is_none() {
            return Ok(false);
        }
        self.save(&st).map(|()| true)
    }

    /// A user, if it exists.
    pub fn user(&self, access_key: &str) -> Option<User> {
        self.state
            .read()
            .expect("iam lock")
            .users
            .get(access_key)
            .cloned()
    }

    /// Whether `access_key` may do `action` on `resource`.
    pub fn may(&self, access_key: &str, action: &str, resource: &str) -> bool {
        if access_key == self.root_user {
            return true;
        }
        let st = self.state.read().expect("iam lock");
        let Some(u) = st.users.get(access_key).filter(|u| u.enabled) else {
            return false;
        };
        let stmts: Vec<&Statement> = u
            .policies
            .iter()
            .filter_map(|p| st.policies.get(p))
            .flat_map(|(_, s)| s.iter())
            .collect();
        allowed(&stmts, action, resource)
    }
}

/// Why an attach failed.
#[derive(Debug, PartialEq, Eq)]
pub enum AttachError {
    NoSuchUser,
    NoSuchPolicy(String),
    Store(String),
}

#[async_trait::async_trait]
impl S3Auth for Iam {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.root_user {
            return Ok(SecretKey::from(self.root_secret.as_str()));
        }
        match self.user(access_key) {
            Some(u) if u.enabled => Ok(SecretKey::from(u.secret)),
            _ => Err(s3_error!(
                InvalidAccessKeyId,
                "The Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Iam {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(c) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Access Denied."));
        };
        let (action, resource) = action_of(cx.s3_op().name(), cx.s3_path());
        if self.may(&c.access_key, &action, &resource) {
            Ok(())
        } else {
            Err(s3_error!(AccessDenied, "Access Denied."))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spark_policy() -> Value {
        json!({"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["s3:GetBucketLocation","s3:ListBucket"],"Resource":["arn:aws:s3:::warehouse"]},
            {"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:DeleteObject"],"Resource":["arn:aws:s3:::warehouse/*"]}]})
    }

    #[test]
    fn globs() {
        assert!(glob(
            "arn:aws:s3:::warehouse/*",
            "arn:aws:s3:::warehouse/a/b"
        ));
        assert!(!glob(
            "arn:aws:s3:::warehouse/*",
            "arn:aws:s3:::warehouse2/a"
        ));
        assert!(!glob("arn:aws:s3:::warehouse", "arn:aws:s3:::warehouse2"));
        assert!(glob("s3:*", "s3:PutObject") && glob("s3:Get?bject", "s3:GetObject"));
        assert!(glob("*", "") && !glob("a", ""));
    }

    #[test]
    fn users_get_only_their_policies_and_root_everything() {
        let d = tempfile::tempdir().unwrap();
        let iam = Iam::open("admin", "admin-secret", Some(d.path())).unwrap();
        iam.add_policy("p", spark_policy()).unwrap();
        iam.set_user("spark", "spark-secret", true).unwrap();
        assert!(
            !iam.may("spark", "s3:GetObject", "arn:aws:s3:::warehouse/x"),
            "no policy yet"
        );
        assert_eq!(iam.attach("spark", &["p".into()]), Ok(true));
        assert_eq!(
            iam.attach("spark", &["p".into()]),
            Ok(false),
            "already applied"
        );
        assert_eq!(
            iam.attach("nobody", &["p".into()]),
            Err(AttachError::NoSuchUser)
        );
        assert_eq!(
            iam.attach("spark", &["q".into()]),
            Err(AttachError::NoSuchPolicy("q".into()))
        );
        assert!(iam.may("spark", "s3:PutObject", "arn:aws:s3:::warehouse/a/b"));
        assert!(iam.may("spark", "s3:ListBucket", "arn:aws:s3:::warehouse"));
        assert!(!iam.may("spark", "s3:PutObject", "arn:aws:s3:::private/a"));
        assert!(!iam.may("spark", "s3:CreateBucket", "arn:aws:s3:::new"));
        assert!(!iam.may("spark", "s3:DeleteBucket", "arn:aws:s3:::warehouse"));
        assert!(iam.may("admin", "s3:DeleteBucket", "arn:aws:s3:::warehouse"));
        assert!(!iam.may("stranger", "s3:GetObject", "arn:aws:s3:::warehouse/x"));
        assert!(iam.set_user("admin", "x", true).is_err());

        // Deny wins.
        iam.add_policy("deny", json!({"Statement":[{"Effect":"Deny","Action":"s3:DeleteObject","Resource":"arn:aws:s3:::*"}]})).unwrap();
        iam.attach("spark", &["deny".into()]).unwrap();
        assert!(!iam.may("spark", "s3:DeleteObject", "arn:aws:s3:::warehouse/x"));

        // A restart keeps users, secrets and policies; the file is 0600.
        let again = Iam::open("admin", "admin-secret", Some(d.path())).unwrap();
        assert!(again.may("spark", "s3:PutObject", "arn:aws:s3:::warehouse/a"));
        assert_eq!(again.user("spark").unwrap().secret, "spark-secret");
        let f = d.path().join(".minio.sys/config/iam/standin-iam.json");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // Removal: a policy in use stays; the user goes, then the policy.
        assert!(again.remove_policy("p").is_err());
        assert_eq!(again.remove_user("spark"), Ok(true));
        assert_eq!(again.remove_user("spark"), Ok(false));
        assert!(!again.may("spark", "s3:PutObject", "arn:aws:s3:::warehouse/a"));
        assert_eq!(again.remove_policy("p"), Ok(true));
        assert_eq!(again.remove_policy("p"), Ok(false));
        again.set_user("spark", "spark-secret", true).unwrap();
        assert_eq!(
            again.attach("spark", &["p".into()]),
            Err(AttachError::NoSuchPolicy("p".into()))
        );

        // A disabled user may do nothing.
        again.set_user("spark", "spark-secret", false).unwrap();
        assert!(!again.may("spark", "s3:PutObject", "arn:aws:s3:::warehouse/a"));
    }

    #[test]
    fn unsupported_policy_features_are_refused() {
        let iam = Iam::open("admin", "admin-secret", None).unwrap();
        let cond = json!({"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]});
        assert!(iam.add_policy("c", cond).unwrap_err().contains("Condition"));
        assert!(iam.add_policy("e", json!({"Statement":[]})).is_err());
        assert!(iam.add_policy("a,b", spark_policy()).is_err());
    }

    #[test]
    fn operations_map_to_minio_actions() {
        let obj = S3Path::Object {
            bucket: "b".into(),
            key: "k/1".into(),
        };
        let bucket = S3Path::Bucket { bucket: "b".into() };
        assert_eq!(
            action_of("PutObject", &obj),
            ("s3:PutObject".into(), "arn:aws:s3:::b/k/1".into())
        );
        assert_eq!(action_of("HeadObject", &obj).0, "s3:GetObject");
        assert_eq!(
            action_of("ListObjectsV2", &bucket),
            ("s3:ListBucket".into(), "arn:aws:s3:::b".into())
        );
        assert_eq!(action_of("CreateBucket", &bucket).0, "s3:CreateBucket");
        assert_eq!(action_of("DeleteObjects", &bucket).1, "arn:aws:s3:::b/*");
        assert_eq!(
            action_of("ListBuckets", &S3Path::Root).0,
            "s3:ListAllMyBuckets"
        );
    }
}
