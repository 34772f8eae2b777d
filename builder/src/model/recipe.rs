//! Image recipes (`images/*.yaml`): which base image to start from and which
//! payload artifacts to put where. The firstboot agent and its unit are not
//! listed: every bake adds them itself.
//!
//! ```yaml
//! name: ubuntu-22.04-lxc          # must match the file name
//! kind: lxc                       # or vm
//! base:
//!   url: http://download.proxmox.com/images/system/ubuntu-22.04-standard_22.04-1_amd64.tar.zst
//!   digest: sha512:cf617c11...    # pinned inline, or:
//!   # checksums: https://.../SHA256SUMS   (algo from the name, or {url, algo})
//!   format: tar.zst               # optional, inferred from the URL
//! vm: {headroom: 1GiB, root_label: cloudimg-rootfs}   # vm only, optional
//! payload:
//!   - name: spark
//!     url: https://archive.apache.org/dist/spark/spark-3.5.9/spark-3.5.9-bin-hadoop3.tgz
//!     checksums: https://archive.apache.org/dist/spark/spark-3.5.9/spark-3.5.9-bin-hadoop3.tgz.sha512
//!     install: {unpack: /opt/spark, strip_components: 1}
//!   - name: minio
//!     url: https://dl.min.io/...
//!     digest: sha256:...
//!     install: {file: /usr/local/bin/minio, mode: "0755"}
//! ```

use std::path::{Path, PathBuf};

use anyhow::Result;
use url::Url;

use super::types::{parse_guest_path, Size};
use super::yaml::{self, Ctx, Field};
use crate::artifact::{
    file_name_of, ArtifactSpec, ChecksumSource, Digest, DigestAlgo, Origin, SignatureKind,
    SignatureSource, Signed,
};
use crate::diag::{BadInput, Diagnostic};

/// A parsed, checked recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Equal to the file name without `.yaml`; lab guests name images by it.
    pub name: String,
    pub kind: ImageKind,
    pub base: BaseImage,
    /// In file order.
    pub payload: Vec<PayloadItem>,
    /// `Some` exactly for VM recipes (defaults filled in).
    pub vm: Option<VmSettings>,
    /// The recipe file.
    pub path: PathBuf,
}

/// What a recipe bakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// A qcow2 disk image for a QEMU VM.
    Vm,
    /// A Proxmox container template (tar.zst).
    Lxc,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Vm => "vm",
            ImageKind::Lxc => "lxc",
        }
    }
}

/// The upstream image the bake starts from.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Named `base`.
    pub artifact: ArtifactSpec,
    pub format: BaseFormat,
}

/// Container format of the base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseFormat {
    Qcow2,
    TarZst,
    TarGz,
    TarXz,
}

impl BaseFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BaseFormat::Qcow2 => "qcow2",
            BaseFormat::TarZst => "tar.zst",
            BaseFormat::TarGz => "tar.gz",
            BaseFormat::TarXz => "tar.xz",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "qcow2" => Ok(BaseFormat::Qcow2),
            "tar.zst" => Ok(BaseFormat::TarZst),
            "tar.gz" => Ok(BaseFormat::TarGz),
            "tar.xz" => Ok(BaseFormat::TarXz),
            _ => Err(format!(
                "`{s}` is not a base format: expected qcow2, tar.zst, tar.gz or tar.xz"
            )),
        }
    }

    /// From the file name: `.img`/`.qcow2` (Ubuntu ships qcow2 as `.img`), `.tar.*`.
    fn infer(file: &str) -> Option<Self> {
        if file.ends_with(".img") || file.ends_with(".qcow2") {
            Some(BaseFormat::Qcow2)
        } else if file.ends_with(".tar.zst") {
            Some(BaseFormat::TarZst)
        } else if file.ends_with(".tar.gz") || file.ends_with(".tgz") {
            Some(BaseFormat::TarGz)
        } else if file.ends_with(".tar.xz") {
            Some(BaseFormat::TarXz)
        } else {
            None
        }
    }
}

/// One artifact and where it goes in the image.
#[derive(Debug, Clone)]
pub struct PayloadItem {
    pub artifact: ArtifactSpec,
    pub install: Install,
}

/// Where a payload artifact goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// Copied as one file at `path` with `mode`.
    File { path: String, mode: u32 },
    /// A tar archive (gz/xz/zst) unpacked into directory `to`, dropping
    /// `strip_components` leading path components (like GNU tar).
    Unpack { to: String, strip_components: u32 },
}

/// VM-only bake settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSettings {
    /// Free space added to the root file system beyond the payload (default 1 GiB).
    pub headroom_bytes: u64,
    /// GPT partition label of the root file system (default `cloudimg-rootfs`).
    pub root_label: String,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            headroom_bytes: Size::GIB,
            root_label: "cloudimg-rootfs".into(),
        }
    }
}

impl Recipe {
    /// Every artifact, base first, then the payload in file order.
    pub fn artifacts(&self) -> Vec<ArtifactSpec> {
        std::iter::once(self.base.artifact.clone())
            .chain(self.payload.iter().map(|p| p.artifact.clone()))
            .collect()
    }
}

/// Paths the bake itself writes; a payload item must not claim them.
const RESERVED: &[&str] = &[
    "/usr/local/sbin/firstboot",
    "/etc/systemd/system/imgbuild-firstboot.service",
    "/etc/systemd/system/multi-user.target.wants/imgbuild-firstboot.service",
    "/etc/imgbuild",
    "/var/lib/imgbuild",
];

/// Reads and checks one recipe. Bad input is a [`BadInput`] with every problem.
pub fn load(path: &Path) -> Result<Recipe> {
    parse_file(path).map_err(|d| BadInput(d).into())
}

/// Reads every `*.yaml` recipe in `dir`, sorted by file name. Problems in all
/// recipes are reported together.
pub fn load_dir(dir: &Path) -> Result<Vec<Recipe>> {
    load_dir_diags(dir).map_err(|d| BadInput(d).into())
}

pub(crate) fn load_dir_diags(dir: &Path) -> Result<Vec<Recipe>, Vec<Diagnostic>> {
    let whole = |msg: String| {
        vec![Diagnostic {
            file: dir.to_path_buf(),
            line: 1,
            column: 1,
            field: "(directory)".into(),
            message: msg,
        }]
    };
    let rd = std::fs::read_dir(dir)
        .map_err(|e| whole(format!("cannot read the images directory: {e}")))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && p.is_file())
        .collect();
    files.sort();
    let mut diags = Vec::new();
    let mut out: Vec<Recipe> = Vec::new();
    for f in files {
        match parse_file(&f) {
            Ok(r) => out.push(r),
            Err(d) => diags.extend(d),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

pub(crate) fn parse_file(path: &Path) -> Result<Recipe, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            field: "(file)".into(),
            message: format!("cannot read the recipe: {e}"),
        }]
    })?;
    let mut ctx = Ctx::new(path);
    let r = yaml::parse(&mut ctx, &text).and_then(|root| convert(&mut ctx, &root, path));
    match r {
        Some(r) if !ctx.has_errors() => Ok(r),
        _ => Err(ctx.finish()),
    }
}

fn convert(ctx: &mut Ctx, root: &marked_yaml::Node, path: &Path) -> Option<Recipe> {
    let top = ctx.map(
        Field::root(root),
        &["name", "kind", "description", "base", "vm", "payload"],
    )?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = top.req(ctx, "name", "the recipe name (the file name without .yaml)").and_then(|f| {
        ctx.scalar(&f, |s| {
            let ok = !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && s.as_bytes()[0].is_ascii_alphanumeric();
            if !ok {
                Err(format!("`{s}` is not a recipe name: lowercase letters, digits, `.`, `_`, `-`"))
            } else if s != stem {
                Err(format!("`{s}` must match the file name `{stem}.yaml` (guests find images by file name)"))
            } else {
                Ok(s.to_string())
            }
        })
    });
    let kind = top.req(ctx, "kind", "`vm` or `lxc`").and_then(|f| {
        ctx.scalar(&f, |s| match s {
            "vm" => Ok(ImageKind::Vm),
            "lxc" => Ok(ImageKind::Lxc),
            _ => Err(format!(
                "`{s}` is not an image kind: expected `vm` or `lxc`"
            )),
        })
    });
    if let Some(f) = top.opt("description") {
        ctx.text(&f);
    }
    let base = top
        .req(
            ctx,
            "base",
            "the base image: url, digest or checksums, format",
        )
        .and_then(|f| base(ctx, f, path, kind));
    let vm = match (kind, top.opt("vm")) {
        (Some(ImageKind::Lxc), Some(f)) => {
            ctx.err_at(
                f.key_pos,
                &f.path,
                "`vm` settings apply only to `kind: vm` recipes: remove them",
            );
            None
        }
        (Some(ImageKind::Vm), Some(f)) => vm(ctx, f).map(Some),
        (Some(ImageKind::Vm), None) => Some(Some(VmSettings::default())),
        (_, _) => Some(None),
    };
    let payload = match top.opt("payload") {
        Some(f) => payload(ctx, f, path),
        None => Some(Vec::new()),
    };
    Some(Recipe {
        name: name?,
        kind: kind?,
        base: base?,
        payload: payload?,
        vm: vm?,
        path: path.to_path_buf(),
    })
}

fn vm(ctx: &mut Ctx, f: Field<'_>) -> Option<VmSettings> {
    let m = ctx.map(f, &["headroom", "root_label"])?;
    let d = VmSettings::default();
    let headroom = match m.opt("headroom") {
        Some(f) => ctx.scalar(&f, |s| s.parse::<Size>().map(Size::bytes)),
        None => Some(d.headroom_bytes),
    };
    let root_label = match m.opt("root_label") {
        Some(f) => ctx.scalar(&f, |s| {
            // GPT names are 36 UTF-16 units; keep to plain ASCII.
            if s.len() <= 36 && s.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(s.to_string())
            } else {
                Err(format!(
                    "`{s}` is not a GPT partition label: up to 36 printable ASCII characters"
                ))
            }
        }),
        None => Some(d.root_label),
    };
    Some(VmSettings {
        headroom_bytes: headroom?,
        root_label: root_label?,
    })
}

fn base(ctx: &mut Ctx, f: Field<'_>, path: &Path, kind: Option<ImageKind>) -> Option<BaseImage> {
    let m = ctx.map(f, &["url", "digest", "checksums", "signature", "format"])?;
    let artifact = artifact(ctx, &m, "base".into(), path)?;
    let format = match m.opt("format") {
        Some(f) => ctx.scalar(&f, BaseFormat::parse)?,
        None => match BaseFormat::infer(&artifact.file_name()) {
            Some(fmt) => fmt,
            None => {
                ctx.err(&yaml::join(&m.path, "url"), format!(
                    "cannot tell the format of `{}` from its name: add `format:` (qcow2, tar.zst, tar.gz or tar.xz)",
                    artifact.file_name()
                ));
                return None;
            }
        },
    };
    let fpath = if m.has("format") {
        yaml::join(&m.path, "format")
    } else {
        yaml::join(&m.path, "url")
    };
    match (kind, format) {
        (Some(ImageKind::Vm), BaseFormat::Qcow2) | (None, _) => {}
        (Some(ImageKind::Vm), f) => {
            ctx.err(
                &fpath,
                format!("a vm recipe needs a qcow2 base, not {}", f.as_str()),
            );
        }
        (Some(ImageKind::Lxc), BaseFormat::Qcow2) => {
            ctx.err(
                &fpath,
                "an lxc recipe needs a container template (tar.zst, tar.gz or tar.xz), not qcow2",
            );
        }
        (Some(ImageKind::Lxc), _) => {}
    }
    Some(BaseImage { artifact, format })
}

/// The `url` + `digest` | `checksums` part shared by the base and payload items.
fn artifact(ctx: &mut Ctx, m: &yaml::Map<'_>, name: String, path: &Path) -> Option<ArtifactSpec> {
    let url_f = m.req(ctx, "url", "the upstream URL (http or https)")?;
    let url = ctx.scalar(&url_f, parse_http_url);
    let pos = ctx.spans.get(&url_f.path);
    let digest = m
        .opt("digest")
        .map(|f| ctx.scalar(&f, |s| s.parse::<Digest>()));
    let checksums = m.opt("checksums").map(|f| checksums(ctx, f));
    let (digest, checksums) = match (digest, checksums) {
        (None, None) => {
            ctx.err_at(
                m.pos,
                &yaml::join(&m.path, "digest"),
                "say where the digest comes from: `digest: sha256:<hex>` (or sha512), or `checksums: <URL of the upstream checksum file>`",
            );
            return None;
        }
        (Some(_), Some(_)) => {
            ctx.err(
                &yaml::join(&m.path, "checksums"),
                "give either `digest` or `checksums`, not both (the lock file records the resolved digest)",
            );
            return None;
        }
        (Some(d), None) => (Some(d?), None),
        (None, Some(c)) => (None, Some(c?)),
    };
    let signature = match m.opt("signature") {
        None => None,
        Some(f) => Some(signature(ctx, f, path, checksums.is_some())?),
    };
    Some(ArtifactSpec {
        name,
        url: url?,
        digest,
        checksums,
        signature,
        origin: Origin {
            file: path.to_path_buf(),
            line: pos.line,
            column: pos.column,
        },
    })
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("`{s}`: expected an http or https URL"));
    }
    if file_name_of(&u).is_empty() {
        return Err(format!(
            "`{s}`: the URL must end in a file name (mirrors serve artifacts by it)"
        ));
    }
    Ok(u)
}

fn infer_algo(url: &Url) -> Option<DigestAlgo> {
    let f = file_name_of(url);
    let l = f.to_ascii_lowercase();
    if l.ends_with(".sha256sum")
        || l.ends_with(".sha256.txt")
        || l.ends_with(".sha256")
        || l == "sha256sums"
    {
        Some(DigestAlgo::Sha256)
    } else if l.ends_with(".sha512")
        || l.ends_with(".sha512sum")
        || l.ends_with(".sha512.txt")
        || l == "sha512sums"
    {
        Some(DigestAlgo::Sha512)
    } else {
        None
    }
}

fn checksums(ctx: &mut Ctx, f: Field<'_>) -> Option<ChecksumSource> {
    if let marked_yaml::Node::Scalar(_) = f.node {
        let url = ctx.scalar(&f, parse_http_url)?;
        let Some(algo) = infer_algo(&url) else {
            ctx.err(&f.path, format!(
                "cannot tell the digest algorithm from `{}`: write `checksums: {{url: ..., algo: sha256}}` (or sha512)",
                file_name_of(&url)
            ));
            return None;
        };
        return Some(ChecksumSource { url, algo });
    }
    let m = ctx.map(f, &["url", "algo"])?;
    let url = m
        .req(ctx, "url", "the checksum file's URL")
        .and_then(|f| ctx.scalar(&f, parse_http_url));
    let algo = m.req(ctx, "algo", "sha256 or sha512").and_then(|f| {
        ctx.scalar(&f, |s| match s {
            "sha256" => Ok(DigestAlgo::Sha256),
            "sha512" => Ok(DigestAlgo::Sha512),
            _ => Err(format!(
                "`{s}` is not a digest algorithm: expected sha256 or sha512"
            )),
        })
    });
    Some(ChecksumSource {
        url: url?,
        algo: algo?,
    })
}

/// `signature: {url: ..., key: FILE, signs: artifact|checksums}`: the key file
/// (pinned in the repository) is relative to the recipe's directory.
fn signature(
    ctx: &mut Ctx,
    f: Field<'_>,
    recipe: &Path,
    has_checksums: bool,
) -> Option<SignatureSource> {
    let m = ctx.map(f, &["url", "key", "signs"])?;
    let url = m
        .req(
            ctx,
            "url",
            "the signature file's URL (.asc, .gpg, .sig or .minisig)",
        )
        .and_then(|f| ctx.scalar(&f, parse_http_url));
    let kind = url.as_ref().and_then(|u| {
        let name = file_name_of(u).to_ascii_lowercase();
        let kind = if name.ends_with(".minisig") {
            Some(SignatureKind::Minisign)
        } else if name.ends_with(".asc") || name.ends_with(".gpg") || name.ends_with(".sig") {
            Some(SignatureKind::OpenPgp)
        } else {
            None
        };
        if kind.is_none() {
            ctx.err(
                &yaml::join(&m.path, "url"),
                format!(
                    "cannot tell the signature format from `{name}`: expected .asc, .gpg or .sig (OpenPGP) or .minisig (minisign)"
                ),
            );
        }
        kind
    });
    let dir = recipe.parent().unwrap_or(Path::new("."));
    let key = m
        .req(ctx, "key", "the signer's public key file, kept in the repository")
        .and_then(|kf| {
            let key = ctx.scalar(&kf, |s| Ok::<_, String>(dir.join(s)))?;
            if !key.is_file() {
                ctx.err(
                    &kf.path,
                    format!(
                        "key file {} does not exist (pin the signer's public key in the repository)",
                        key.display()
                    ),
                );
                return None;
            }
            Some(key)
        });
    let signs = match m.opt("signs") {
        None => Some(Signed::Artifact),
        Some(sf) => {
            let signs = ctx.scalar(&sf, |s| match s {
                "artifact" => Ok(Signed::Artifact),
                "checksums" => Ok(Signed::Checksums),
                _ => Err(format!("`{s}`: expected `artifact` or `checksums`")),
            })?;
            if signs == Signed::Checksums && !has_checksums {
                ctx.err(
                    &sf.path,
                    "`signs: checksums` needs a `checksums:` file to sign",
                );
                return None;
            }
            Some(signs)
        }
    };
    Some(SignatureSource {
        url: url?,
        kind: kind?,
        key: key?,
        signs: signs?,
    })
}

fn payload(ctx: &mut Ctx, f: Field<'_>, path: &Path) -> Option<Vec<PayloadItem>> {
    let items = ctx.seq(&f)?;
    let mut out = Vec::new();
    let mut ok = true;
    let mut names: Vec<(String, String)> = Vec::new();
    let mut targets: Vec<(String, String)> = Vec::new();
    for i in items {
        let ipath = i.path.clone();
        match payload_item(ctx, i, path) {
            Some(item) => {
                let name_path = format!("{ipath}.name");
                if item.artifact.name == "base" {
                    ctx.err(&name_path, "`base` is the base image's name: pick another");
                } else if let Some((_, first)) =
                    names.iter().find(|(n, _)| *n == item.artifact.name)
                {
                    ctx.err(
                        &name_path,
                        format!(
                            "payload name `{}` is already used by {first}",
                            item.artifact.name
                        ),
                    );
                }
                names.push((item.artifact.name.clone(), ipath.clone()));
                let (target, tfield) = match &item.install {
                    Install::File { path, .. } => (path.clone(), format!("{ipath}.install.file")),
                    Install::Unpack { to, .. } => (to.clone(), format!("{ipath}.install.unpack")),
                };
                if let Some(r) = RESERVED.iter().find(|r| overlaps(r, &target)) {
                    ctx.err(&tfield, format!("{target} overlaps {r}, which the bake writes itself (the firstboot agent)"));
                }
                if let Some((t, p)) = targets.iter().find(|(t, _)| overlaps(t, &target)) {
                    ctx.err(&tfield, format!("{target} overlaps {t}, installed by {p}"));
                }
                targets.push((target, ipath));
                out.push(item);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Whether one path is the other or lies inside it.
fn overlaps(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| x == y || x.strip_prefix(y).is_some_and(|r| r.starts_with('/'));
    inside(a, b) || inside(b, a)
}

fn payload_item(ctx: &mut Ctx, f: Field<'_>, path: &Path) -> Option<PayloadItem> {
    let m = ctx.map(
        f,
        &["name", "url", "digest", "checksums", "signature", "install"],
    )?;
    let name = m
        .req(ctx, "name", "a short name, e.g. spark")
        .and_then(|f| {
            ctx.scalar(&f, |s| {
                let ok = s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                }) && s.as_bytes()[0].is_ascii_lowercase();
                ok.then(|| s.to_string()).ok_or_else(|| {
                    format!("`{s}` is not a payload name: lowercase letters, digits, `-`, `_`")
                })
            })
        });
    let artifact = artifact(ctx, &m, name.clone().unwrap_or_default(), path);
    let install = m
        .req(
            ctx,
            "install",
            "`{file: /path, mode: \"0755\"}` or `{unpack: /dir, strip_components: 1}`",
        )
        .and_then(|f| install(ctx, f));
    if let (Some(a), Some(Install::Unpack { .. })) = (&artifact, &install) {
        let n = a.file_name();
        if !(n.ends_with(".tar.gz")
            || n.ends_with(".tgz")
            || n.ends_with(".tar.xz")
            || n.ends_with(".tar.zst"))
        {
            ctx.err(&yaml::join(&m.path, "install.unpack"), format!(
                "`{n}` is not a tar archive (.tar.gz, .tgz, .tar.xz, .tar.zst): use `file:` to install it as one file"
            ));
            return None;
        }
    }
    name?;
    Some(PayloadItem {
        artifact: artifact?,
        install: install?,
    })
}

fn install(ctx: &mut Ctx, f: Field<'_>) -> Option<Install> {
    let at = f.key_pos;
    let path = f.path.clone();
    let m = ctx.map(f, &["file", "mode", "unpack", "strip_components"])?;
    match (m.has("file"), m.has("unpack")) {
        (true, false) => {
            if m.has("strip_components") {
                ctx.err(
                    &yaml::join(&m.path, "strip_components"),
                    "`strip_components` applies only to `unpack`",
                );
            }
            let p = m
                .req(ctx, "file", "an absolute path")
                .and_then(|f| ctx.scalar(&f, parse_guest_path));
            let mode = m
                .req(ctx, "mode", "an octal file mode, e.g. \"0755\"")
                .and_then(|f| {
                    ctx.scalar(&f, |s| {
                        let digits = s.strip_prefix("0o").unwrap_or(s);
                        u32::from_str_radix(digits, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777 && !digits.is_empty())
                            .ok_or_else(|| {
                                format!("`{s}` is not a file mode: expected octal like \"0755\"")
                            })
                    })
                });
            Some(Install::File {
                path: p?,
                mode: mode?,
            })
        }
        (false, true) => {
            if m.has("mode") {
                ctx.err(
                    &yaml::join(&m.path, "mode"),
                    "`mode` applies only to `file`: unpacked entries keep the archive's modes",
                );
            }
            let to = m
                .req(ctx, "unpack", "a directory")
                .and_then(|f| ctx.scalar(&f, parse_guest_path));
            let strip = match m.opt("strip_components") {
                Some(f) => ctx.scalar(&f, |s| {
                    s.parse::<u32>()
                        .ok()
                        .filter(|n| *n <= 16)
                        .ok_or_else(|| format!("`{s}`: expected a whole number 0..=16"))
                }),
                None => Some(0),
            };
            Some(Install::Unpack {
                to: to?,
                strip_components: strip?,
            })
        }
        (true, true) => {
            ctx.err_at(at, &path, "give either `file` or `unpack`, not both");
            None
        }
        (false, false) => {
            ctx.err_at(
                at,
                &path,
                "say how to install: `file: /path` (with `mode`) or `unpack: /dir`",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algo_inference() {
        let a = |u: &str| infer_algo(&Url::parse(u).unwrap());
        assert_eq!(a("https://x/SHA256SUMS"), Some(DigestAlgo::Sha256));
        assert_eq!(
            a("https://x/minio.RELEASE.2025-10-15T17-29-55Z.sha256sum"),
            Some(DigestAlgo::Sha256)
        );
        assert_eq!(a("https://x/a.tar.gz.sha256.txt"), Some(DigestAlgo::Sha256));
        assert_eq!(a("https://x/spark.tgz.sha512"), Some(DigestAlgo::Sha512));
        assert_eq!(a("https://x/sums.txt"), None);
    }

    #[test]
    fn signature_fields_are_checked_where_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/k.asc"), "key").unwrap();
        let recipe = |sig: &str| {
            let p = dir.path().join("t.yaml");
            std::fs::write(
                &p,
                format!(
                    "name: t\nkind: lxc\nbase:\n  url: https://x.example/b.tar.zst\n  digest: sha256:{}\n  signature: {sig}\npayload: []\n",
                    "a".repeat(64)
                ),
            )
            .unwrap();
            load(&p)
        };
        let ok = recipe("{url: https://x.example/b.tar.zst.asc, key: keys/k.asc}").unwrap();
        let sig = ok.base.artifact.signature.unwrap();
        assert_eq!(
            (sig.kind, sig.signs, sig.key),
            (
                SignatureKind::OpenPgp,
                Signed::Artifact,
                dir.path().join("keys/k.asc")
            )
        );
        let m = recipe("{url: https://x.example/b.minisig, key: keys/k.asc}").unwrap();
        assert_eq!(
            m.base.artifact.signature.unwrap().kind,
            SignatureKind::Minisign
        );
        for (sig, want) in [
            (
                "{url: https://x.example/b.txt, key: keys/k.asc}",
                "signature format",
            ),
            (
                "{url: https://x.example/b.asc, key: keys/nope.asc}",
                "does not exist",
            ),
            (
                "{url: https://x.example/b.asc, key: keys/k.asc, signs: checksums}",
                "needs a `checksums:`",
            ),
            ("{url: https://x.example/b.asc}", "key"),
        ] {
            let err = format!(
                "{}",
                recipe(sig).unwrap_err().downcast::<BadInput>().unwrap()
            );
            assert!(
                err.contains(want) && err.contains("t.yaml:6:"),
                "{sig}: {err}"
            );
        }
    }

    #[test]
    fn overlapping_paths() {
        assert!(overlaps("/opt/spark", "/opt/spark/jars"));
        assert!(overlaps("/opt/spark", "/opt/spark"));
        assert!(!overlaps("/opt/spark", "/opt/sparkle"));
    }

    #[test]
    fn shipped_vm_recipe() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/ubuntu-22.04-vm.yaml");
        let r = load(&path).unwrap();
        assert_eq!(
            (r.name.as_str(), r.kind, r.base.format),
            ("ubuntu-22.04-vm", ImageKind::Vm, BaseFormat::Qcow2)
        );
        assert_eq!(r.vm, Some(VmSettings::default()));
        let a = r.artifacts();
        let names: Vec<&str> = a.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["base", "minio", "spark", "java", "node_exporter"]);
        assert_eq!(a[4].checksums.as_ref().unwrap().algo, DigestAlgo::Sha256);
        assert_eq!(a[0].checksums.as_ref().unwrap().algo, DigestAlgo::Sha256);
        assert_eq!(a[2].checksums.as_ref().unwrap().algo, DigestAlgo::Sha512);
        assert_eq!(
            a[3].file_name(),
            "OpenJDK17U-jre_x64_linux_hotspot_17.0.17_10.tar.gz"
        );
        // Origins point at each artifact's `url:` value.
        let text = std::fs::read_to_string(&path).unwrap();
        for art in &a {
            let line = text.lines().nth(art.origin.line - 1).unwrap();
            assert_eq!(
                &line[art.origin.column - 1..],
                art.url.as_str(),
                "{}",
                art.name
            );
        }
        assert_eq!(
            r.payload[0].install,
            Install::File {
                path: "/usr/local/bin/minio".into(),
                mode: 0o755
            }
        );
        assert_eq!(
            r.payload[1].install,
            Install::Unpack {
                to: "/opt/spark".into(),
                strip_components: 1
            }
        );
    }

    #[test]
    fn shipped_lxc_recipe_pins_the_template() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        let all = load_dir(&dir).unwrap();
        let r = all.iter().find(|r| r.kind == ImageKind::Lxc).unwrap();
        assert_eq!(r.base.format, BaseFormat::TarZst);
        assert!(r.vm.is_none());
        assert!(r
            .base
            .artifact
            .digest
            .as_ref()
            .unwrap()
            .hex()
            .starts_with("cf617c11"));
    }

    #[test]
    fn base_format_inference() {
        assert_eq!(
            BaseFormat::infer("ubuntu-22.04-server-cloudimg-amd64.img"),
            Some(BaseFormat::Qcow2)
        );
        assert_eq!(
            BaseFormat::infer("ubuntu-22.04-standard_22.04-1_amd64.tar.zst"),
            Some(BaseFormat::TarZst)
        );
        assert_eq!(BaseFormat::infer("x.iso"), None);
    }
}
