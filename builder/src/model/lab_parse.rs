//! YAML nodes -> [`Lab`]: the typed conversion (shapes, keys, newtypes,
//! defaults, SSH key files), then the semantic checks in [`super::check`].
//! Every problem found is collected; conversion stops before the semantic
//! checks only when the shape itself was wrong.

use std::net::Ipv4Addr;
use std::path::Path;

use url::Url;

use super::check;
use super::lab::*;
use super::roles_parse::roles;
use super::types::{expand_path, parse_ipv4, Hostname, SecretRef};
use super::yaml::{self, Ctx, Field};
use crate::diag::Diagnostic;

/// Reads and checks a lab file; `Err` holds every diagnostic.
pub(crate) fn load(path: &Path) -> Result<Lab, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            field: "(file)".into(),
            message: format!("cannot read the lab file: {e}"),
        }]
    })?;
    parse(path, &text)
}

/// Converts and checks the text of a lab file read from `path` (which names
/// it in diagnostics and anchors relative SSH key paths).
pub(crate) fn parse(path: &Path, text: &str) -> Result<Lab, Vec<Diagnostic>> {
    let mut ctx = Ctx::new(path);
    let lab = yaml::parse(&mut ctx, text).and_then(|root| convert(&mut ctx, &root, path));
    match lab {
        Some(lab) if !ctx.has_errors() => {
            check::lab(&lab, &mut ctx);
            if ctx.has_errors() {
                Err(ctx.finish())
            } else {
                Ok(lab)
            }
        }
        _ => Err(ctx.finish()),
    }
}

fn base_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn convert(ctx: &mut Ctx, root: &marked_yaml::Node, path: &Path) -> Option<Lab> {
    let base = base_dir(path);
    let top = ctx.map(
        Field::root(root),
        &[
            "proxmox", "network", "ssh", "guests", "backup", "metrics", "updates",
        ],
    )?;
    let proxmox = top
        .req(ctx, "proxmox", "the Proxmox endpoint, token, TLS and nodes")
        .and_then(|f| proxmox(ctx, f, base));
    let network = top
        .req(ctx, "network", "the bridge, cidr, gateway and dns")
        .and_then(|f| network(ctx, f));
    let ssh = top
        .req(ctx, "ssh", "`authorized_keys: [path/to/key.pub]`")
        .and_then(|f| ssh(ctx, f, base));
    let guests = top
        .req(ctx, "guests", "a mapping of guest name to guest")
        .and_then(|f| guests(ctx, f, base));
    let backup = match top.opt("backup") {
        Some(f) => super::backup::parse(ctx, f).map(Some),
        None => Some(None),
    };
    let metrics = match top.opt("metrics") {
        Some(f) => super::metrics::parse(ctx, f).map(Some),
        None => Some(None),
    };
    let updates = match top.opt("updates") {
        Some(f) => super::updates::parse(ctx, f),
        None => Some(super::updates::Updates::default()),
    };
    let (proxmox, guests, mut metrics) = (proxmox?, guests?, metrics?);
    let mut guests = place_guests(ctx, &proxmox, guests);
    if let Some(m) = &mut metrics {
        let placed: Vec<Guest> = guests.iter().flatten().cloned().collect();
        super::metrics::add_monitors(m, &super::monitoring::monitor_addresses(&placed));
    }
    for g in guests.iter_mut().flatten() {
        g.metrics = metrics.clone();
    }
    Some(Lab {
        path: path.to_path_buf(),
        proxmox,
        network: network?,
        ssh: ssh?,
        guests: guests.into_iter().collect::<Option<Vec<_>>>()?,
        backup: backup?,
        metrics,
        updates: updates?,
        spans: ctx.spans.clone(),
    })
}

fn proxmox(ctx: &mut Ctx, f: Field<'_>, base: &Path) -> Option<Proxmox> {
    let m = ctx.map(f, &["endpoint", "token", "tls", "nodes"])?;
    let endpoint = m
        .req(
            ctx,
            "endpoint",
            "the API base URL, e.g. https://192.168.1.2:8006",
        )
        .and_then(|f| ctx.scalar(&f, parse_endpoint));
    let token = m
        .req(
            ctx,
            "token",
            "a secret reference to USER@REALM!TOKENID=SECRET, e.g. `env:PVE_TOKEN`",
        )
        .and_then(|f| secret(ctx, &f, base));
    let tls = m
        .req(ctx, "tls", "`verify` or `{fingerprint: \"AB:CD:...\"}`")
        .and_then(|f| tls(ctx, f, base));
    let nodes = m
        .req(ctx, "nodes", "a list of Proxmox nodes")
        .and_then(|f| {
            let items = ctx.seq(&f)?;
            if items.is_empty() {
                ctx.err(&f.path, "list at least one Proxmox node");
                return None;
            }
            items
                .into_iter()
                .map(|i| node(ctx, i))
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Option<Vec<_>>>()
        });
    Some(Proxmox {
        endpoint: endpoint?,
        token: token?,
        tls: tls?,
        nodes: nodes?,
    })
}

fn parse_endpoint(s: &str) -> Result<Url, String> {
    let u = Url::parse(s)
        .map_err(|e| format!("`{s}` is not a URL ({e}): expected e.g. https://192.168.1.2:8006"))?;
    if u.scheme() != "https" {
        return Err(format!(
            "`{s}`: the Proxmox API is served over https, e.g. https://192.168.1.2:8006"
        ));
    }
    if u.host_str().is_none()
        || u.query().is_some()
        || u.fragment().is_some()
        || !(u.path() == "/" || u.path().is_empty())
    {
        return Err(format!(
            "`{s}`: give only the base URL (scheme, host, port), e.g. https://192.168.1.2:8006"
        ));
    }
    Ok(u)
}

fn tls(ctx: &mut Ctx, f: Field<'_>, base: &Path) -> Option<Tls> {
    if let marked_yaml::Node::Scalar(_) = f.node {
        return ctx.scalar(&f, |s| match s {
            "verify" => Ok(Tls::Verify),
            _ => Err(format!(
                "`{s}`: expected `verify`, `{{fingerprint: \"AB:CD:...\"}}` or `{{ca: FILE}}`"
            )),
        });
    }
    let m = ctx.map(f, &["fingerprint", "ca"])?;
    if let Some(ca) = m.opt("ca") {
        return ctx
            .scalar(&ca, |s| {
                if s.is_empty() {
                    Err("`ca` needs the path of a PEM file of CA certificates".to_string())
                } else {
                    Ok(expand_path(s, base))
                }
            })
            .map(Tls::CaFile);
    }
    let fp = m.req(
        ctx,
        "fingerprint",
        "the certificate's SHA-256 fingerprint, or `ca: FILE`",
    )?;
    ctx.scalar(&fp, parse_fingerprint).map(Tls::Fingerprint)
}

/// 32 bytes of hex, with or without `:` separators; normalized to `AB:CD:...`.
fn parse_fingerprint(s: &str) -> Result<String, String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "`{s}` is not a SHA-256 fingerprint: expected 32 hex bytes like `AB:CD:...` (Proxmox shows it under Certificates)"
        ));
    }
    let up = hex.to_ascii_uppercase();
    Ok(up
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":"))
}

fn node(ctx: &mut Ctx, f: Field<'_>) -> Option<PveNode> {
    let m = ctx.map(f, &["name", "storage"])?;
    let name = m
        .req(ctx, "name", "the node's name as Proxmox shows it")
        .and_then(|f| ctx.scalar(&f, str::parse::<Hostname>));
    let storage = m
        .req(
            ctx,
            "storage",
            "storage ids for images, iso, vztmpl and import",
        )
        .and_then(|f| {
            let s = ctx.map(f, &["images", "iso", "vztmpl", "import"])?;
            let mut get = |k: &str, what: &str| {
                s.req(ctx, k, what)
                    .and_then(|f| ctx.scalar(&f, parse_storage_id))
            };
            let images = get("images", "the storage for guest disks, e.g. local-lvm");
            let iso = get("iso", "the storage for seed ISOs, e.g. local");
            let vztmpl = get("vztmpl", "the storage for container templates, e.g. local");
            let import = get("import", "the storage for imported disk images, e.g. local");
            Some(Storage {
                images: images?,
                iso: iso?,
                vztmpl: vztmpl?,
                import: import?,
            })
        });
    Some(PveNode {
        name: name?,
        storage: storage?,
    })
}

pub(super) fn parse_storage_id(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_lowercase()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c));
    if !ok {
        return Err(format!(
            "`{s}` is not a Proxmox storage id: expected e.g. `local` or `local-lvm`"
        ));
    }
    Ok(s.to_string())
}

fn network(ctx: &mut Ctx, f: Field<'_>) -> Option<Network> {
    let m = ctx.map(f, &["bridge", "cidr", "gateway", "dns"])?;
    let bridge = m.req(ctx, "bridge", "the Linux bridge, e.g. vmbr0").and_then(|f| {
        ctx.scalar(&f, |s| {
            let ok = (1..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            ok.then(|| s.to_string())
                .ok_or_else(|| format!("`{s}` is not a bridge name: 1-15 letters, digits, `_`, `.`, `-`, e.g. vmbr0"))
        })
    });
    let cidr = m
        .req(ctx, "cidr", "the subnet, e.g. 192.168.1.0/24")
        .and_then(|f| ctx.scalar(&f, str::parse));
    let gateway = m
        .req(ctx, "gateway", "the default gateway, e.g. 192.168.1.1")
        .and_then(|f| ctx.scalar(&f, parse_ipv4));
    let dns = m
        .req(ctx, "dns", "a list of DNS servers, e.g. [8.8.8.8]")
        .and_then(|f| {
            let items = ctx.seq(&f)?;
            if items.is_empty() {
                ctx.err(&f.path, "list at least one DNS server, e.g. [8.8.8.8]");
                return None;
            }
            items
                .iter()
                .map(|i| ctx.scalar(i, parse_ipv4))
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Option<Vec<Ipv4Addr>>>()
        });
    Some(Network {
        bridge: bridge?,
        cidr: cidr?,
        gateway: gateway?,
        dns: dns?,
    })
}

fn ssh(ctx: &mut Ctx, f: Field<'_>, base: &Path) -> Option<Ssh> {
    let m = ctx.map(f, &["authorized_keys"])?;
    let keys = m.req(
        ctx,
        "authorized_keys",
        "a list of public key files, e.g. [~/.ssh/id_ed25519.pub]",
    )?;
    let items = ctx.seq(&keys)?;
    if items.is_empty() {
        ctx.err(
            &keys.path,
            "list at least one public key file: guests allow SSH by key only",
        );
        return None;
    }
    let files = items
        .iter()
        .map(|i| ssh_key(ctx, i, base))
        .collect::<Vec<_>>();
    Some(Ssh {
        authorized_keys: files.into_iter().collect::<Option<Vec<_>>>()?,
    })
}

const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn ssh_key(ctx: &mut Ctx, f: &Field<'_>, base: &Path) -> Option<SshKeyFile> {
    let raw = ctx.text(f)?;
    let path = expand_path(raw, base);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (create a key pair with `ssh-keygen -t ed25519`)"
            } else {
                ""
            };
            ctx.err(
                &f.path,
                format!("cannot read public key file {}: {e}{hint}", path.display()),
            );
            return None;
        }
    };
    if text.contains("PRIVATE KEY") {
        ctx.err(
            &f.path,
            format!(
                "{} is a private key: give the public key (the `.pub` file)",
                path.display()
            ),
        );
        return None;
    }
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for l in &lines {
        let mut parts = l.split_whitespace();
        let (t, body) = (parts.next().unwrap_or_default(), parts.next());
        if !KEY_TYPES.contains(&t) || !matches!(body, Some(b) if b.starts_with("AAAA")) {
            ctx.err(
                &f.path,
                format!(
                    "{} does not hold an OpenSSH public key line (`ssh-ed25519 AAAA... comment`)",
                    path.display()
                ),
            );
            return None;
        }
    }
    if lines.is_empty() {
        ctx.err(&f.path, format!("{} holds no public key", path.display()));
        return None;
    }
    Some(SshKeyFile { path, lines })
}

/// Each guest, plus its explicit `node:` (None when omitted).
/// A guest as parsed, before it is placed on a node: its name, a constructor
/// that takes the node, and the `node:` it asked for.
type ParsedGuest = (Option<Unplaced>, Option<Hostname>);

struct Unplaced {
    name: Hostname,
    on: Box<dyn FnOnce(Hostname) -> Guest>,
}

fn guests(ctx: &mut Ctx, f: Field<'_>, base: &Path) -> Option<Vec<ParsedGuest>> {
    let marked_yaml::Node::Mapping(_) = f.node else {
        ctx.err_node(
            f.node,
            &f.path,
            "expected a mapping of guest name to guest, e.g. `minio: {kind: lxc, ...}`",
        );
        return None;
    };
    // Guest names are free-form keys: accept every key here, check them as host names.
    let keys: Vec<String> = match f.node {
        marked_yaml::Node::Mapping(m) => m.keys().map(|k| k.as_str().to_string()).collect(),
        _ => Vec::new(),
    };
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let m = ctx.map(f, &key_refs)?;
    if m.m.is_empty() {
        ctx.err_at(m.pos, &m.path, "define at least one guest");
        return None;
    }
    let mut out = Vec::new();
    for (name, key_pos, gf) in m.entries() {
        let name = match name.parse::<Hostname>() {
            Ok(n) => Some(n),
            Err(e) => {
                ctx.err_at(key_pos, &gf.path, format!("guest name {e}"));
                None
            }
        };
        out.push(guest(ctx, gf, name, base));
    }
    Some(out)
}

fn guest(ctx: &mut Ctx, f: Field<'_>, name: Option<Hostname>, base: &Path) -> ParsedGuest {
    let Some(m) = ctx.map(
        f,
        &[
            "kind",
            "vmid",
            "node",
            "image",
            "resources",
            "address",
            "roles",
        ],
    ) else {
        return (None, None);
    };
    let kind = m.req(ctx, "kind", "`vm` or `lxc`").and_then(|f| {
        ctx.scalar(&f, |s| match s {
            "vm" => Ok(GuestKind::Vm),
            "lxc" => Ok(GuestKind::Lxc),
            _ => Err(format!("`{s}` is not a guest kind: expected `vm` or `lxc`")),
        })
    });
    let vmid = m
        .req(ctx, "vmid", "a Proxmox id, 100..=999999999")
        .and_then(|f| ctx.scalar(&f, str::parse));
    let node = m
        .opt("node")
        .and_then(|f| ctx.scalar(&f, str::parse::<Hostname>));
    let image = m
        .req(
            ctx,
            "image",
            "a recipe name from the images directory, e.g. ubuntu-22.04-vm",
        )
        .and_then(|f| ctx.text(&f).map(String::from));
    let resources = m
        .req(ctx, "resources", "`{cores: N, memory: 4GiB, disk: 20GiB}`")
        .and_then(|f| resources(ctx, f));
    let address = m
        .req(ctx, "address", "a static IPv4 address inside network.cidr")
        .and_then(|f| ctx.scalar(&f, parse_ipv4));
    let roles = match m.opt("roles") {
        Some(f) => roles(ctx, f, base),
        None => Some(Roles::default()),
    };
    // The node is chosen by `place_guests` (or an error is reported there).
    let g = (|| {
        let (name, kind, vmid, image, resources, address, roles) =
            (name?, kind?, vmid?, image?, resources?, address?, roles?);
        Some(Unplaced {
            name: name.clone(),
            on: Box::new(move |node| Guest {
                name,
                kind,
                vmid,
                node,
                image,
                resources,
                address,
                roles,
                metrics: None,
            }),
        })
    })();
    (g, node)
}

fn resources(ctx: &mut Ctx, f: Field<'_>) -> Option<Resources> {
    let m = ctx.map(f, &["cores", "memory", "disk"])?;
    let cores = m
        .req(ctx, "cores", "a core count, e.g. 2")
        .and_then(|f| ctx.scalar(&f, str::parse));
    let memory = m
        .req(ctx, "memory", "a size, e.g. 4GiB")
        .and_then(|f| ctx.scalar(&f, str::parse));
    let disk = m
        .req(ctx, "disk", "a size, e.g. 20GiB")
        .and_then(|f| ctx.scalar(&f, str::parse));
    Some(Resources {
        cores: cores?,
        memory: memory?,
        disk: disk?,
    })
}

pub(super) fn secret(ctx: &mut Ctx, f: &Field<'_>, base: &Path) -> Option<SecretRef> {
    ctx.scalar(f, |s| SecretRef::parse(s, base))
}

/// Places each guest on its `node` (the only node when there is one) and
/// reports missing or unknown placements; a guest not placed is `None`.
fn place_guests(ctx: &mut Ctx, proxmox: &Proxmox, guests: Vec<ParsedGuest>) -> Vec<Option<Guest>> {
    let names: Vec<&str> = proxmox.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut out = Vec::new();
    for (g, node) in guests {
        let Some(g) = g else {
            out.push(None);
            continue;
        };
        let path = format!("guests.{}.node", g.name);
        let placed = match node {
            Some(n) if names.contains(&n.as_str()) => Some(n),
            Some(n) => {
                let mut msg = format!("`{n}` is not a node in proxmox.nodes");
                match yaml::suggest(n.as_str(), &names) {
                    Some(s) => msg.push_str(&format!(": did you mean `{s}`?")),
                    None => msg.push_str(&format!(": expected one of {}", quoted(&names))),
                }
                ctx.err(&path, msg);
                None
            }
            None if names.len() == 1 => Some(proxmox.nodes[0].name.clone()),
            None => {
                ctx.err(
                    &format!("guests.{}", g.name),
                    format!("several Proxmox nodes are defined: say which one runs this guest with `node:` (one of {})", quoted(&names)),
                );
                None
            }
        };
        out.push(placed.map(g.on));
    }
    out
}

pub(crate) fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::types::Size;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn homelab_fixture_loads_with_defaults_filled() {
        let lab = load(&repo().join("tests/fixtures/validate/ok/homelab.yaml")).unwrap();
        assert_eq!(lab.proxmox.endpoint.as_str(), "https://192.168.1.2:8006/");
        assert_eq!(lab.proxmox.token, SecretRef::Env("PVE_TOKEN".into()));
        assert_eq!(lab.proxmox.tls, Tls::Verify);
        assert_eq!(lab.proxmox.nodes[0].storage.images, "local-lvm");
        assert_eq!(lab.network.cidr.to_string(), "192.168.1.0/24");
        assert_eq!(lab.ssh.public_keys().len(), 1);
        assert!(lab.ssh.public_keys()[0].starts_with("ssh-ed25519 AAAA"));

        let minio = lab.guest("minio").unwrap();
        assert_eq!(
            (minio.kind, minio.vmid.get(), minio.node.as_str()),
            (GuestKind::Lxc, 200, "pve")
        );
        assert_eq!(minio.resources.memory.bytes(), 4 * Size::GIB);
        assert_eq!(minio.resources.disk.bytes(), 20 * Size::GIB);
        let o = minio.roles.object_store.as_ref().unwrap();
        assert_eq!(
            (o.api_port.get(), o.console_port.get(), o.drives_per_guest),
            (9000, 9001, 1)
        );
        assert_eq!(o.buckets, ["warehouse", "spark-events"]);
        assert_eq!(lab.object_store_members(minio).len(), 1);

        let devlab = lab.guest("devlab").unwrap();
        let spark = devlab.roles.spark.as_ref().unwrap();
        assert_eq!(spark.master.as_ref().unwrap().ui_port.get(), 8080);
        assert_eq!(spark.worker.as_ref().unwrap().master.as_str(), "devlab");
        // Spark's own S3 user; the object store creates it.
        let topo = crate::resolve::resolve(&lab);
        let link = topo.guest("devlab").unwrap().s3.as_ref().unwrap();
        assert_eq!(
            link.access_key,
            SecretRef::Env("SPARK_S3_ACCESS_KEY".into())
        );
        assert_eq!(
            link.secret_key,
            SecretRef::Env("SPARK_S3_SECRET_KEY".into())
        );
        let users = &topo.guest("minio").unwrap().s3_users;
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].access_key, link.access_key);
        assert_eq!(
            topo.guest("devlab").unwrap().spark_auth,
            Some(SecretRef::Env("SPARK_AUTH_SECRET".into()))
        );
        assert_eq!(lab.spark_workers_of("devlab").len(), 1);
        let ports: Vec<u16> = devlab.open_ports().iter().map(|p| p.port.get()).collect();
        assert_eq!(ports, [22, 7077, 8080, 8081]);
        assert_eq!(lab.images(), ["ubuntu-22.04-lxc", "ubuntu-22.04-vm"]);
    }

    #[test]
    fn many_problems_are_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(repo().join("tests/fixtures/validate/ok/homelab.yaml"))
            .unwrap()
            .replace(
                "../keys/test_ed25519.pub",
                &repo()
                    .join("tests/fixtures/validate/keys/test_ed25519.pub")
                    .display()
                    .to_string(),
            )
            .replace("vmid: 200", "vmid: 20")
            .replace("memory: 8GiB", "memory: 8")
            .replace("tls: verify", "tls: nope");
        let p = dir.path().join("lab.yaml");
        std::fs::write(&p, text).unwrap();
        let diags = load(&p).unwrap_err();
        let fields: Vec<&str> = diags.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "proxmox.tls",
                "guests.minio.vmid",
                "guests.devlab.resources.memory"
            ]
        );
    }
}
