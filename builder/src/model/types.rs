//! Newtypes for the values a lab file holds. Each one validates in `FromStr`
//! (the error says what is expected), so a parsed model never holds a bad
//! host name, vmid, CIDR, size, port or secret reference.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// A host name label (RFC 1123): 1-63 of `a-z`, `0-9`, `-`, not starting or
/// ending with `-`. Guest names are host names; they end up in /etc/hosts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if !ok {
            return Err(format!(
                "`{s}` is not a valid host name: use 1-63 lowercase letters, digits and `-` (not at either end)"
            ));
        }
        Ok(Hostname(s.to_string()))
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Proxmox guest id, 100..=999999999 (the `pve-vmid` format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmId(u32);

impl VmId {
    pub const MIN: u32 = 100;
    pub const MAX: u32 = 999_999_999;
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for VmId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<u64>() {
            Ok(n) if (Self::MIN as u64..=Self::MAX as u64).contains(&n) => Ok(VmId(n as u32)),
            _ => Err(format!(
                "`{s}` is not a valid vmid: Proxmox accepts whole numbers {}..={}",
                Self::MIN,
                Self::MAX
            )),
        }
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An IPv4 network written `a.b.c.d/prefix` with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn network(self) -> Ipv4Addr {
        self.network
    }
    pub fn prefix(self) -> u8 {
        self.prefix
    }
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    /// The all-ones host address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }
    /// Whether `ip` can be given to a host: inside, and neither the network nor
    /// the broadcast address (both are usable in /31 and /32 networks).
    pub fn is_host(self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && (self.prefix >= 31 || (ip != self.network && ip != self.broadcast()))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not an IPv4 network: expected `a.b.c.d/prefix`, e.g. 192.168.1.0/24")
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
        let c = Ipv4Cidr {
            network: addr,
            prefix,
        };
        let net = Ipv4Addr::from(u32::from(addr) & c.mask());
        if net != addr {
            return Err(format!(
                "`{s}` has host bits set: did you mean `{net}/{prefix}`?"
            ));
        }
        Ok(c)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A plain IPv4 address (the prefix comes from the lab's network).
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    if s.contains('/') {
        return Err(format!(
            "`{s}`: write the address without a prefix; the prefix comes from `network.cidr`"
        ));
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address: expected e.g. 192.168.1.100"))
}

/// A size in bytes, written with a binary unit: `512MiB`, `4GiB`, `1TiB`
/// (also `B`, `KiB`). Whole numbers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Size(u64);

impl Size {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;
    pub const TIB: u64 = 1024 * Self::GIB;

    pub fn from_bytes(b: u64) -> Self {
        Size(b)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
    /// Whole MiB (rounded down), as Proxmox's `memory` wants it.
    pub fn mib(self) -> u64 {
        self.0 / Self::MIB
    }
    /// Whole GiB (rounded down), as Proxmox's disk sizes want it.
    pub fn gib(self) -> u64 {
        self.0 / Self::GIB
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let mult = match unit {
            "B" => 1,
            "KiB" => Self::KIB,
            "MiB" => Self::MIB,
            "GiB" => Self::GIB,
            "TiB" => Self::TIB,
            "KB" | "kB" | "MB" | "GB" | "TB" | "K" | "M" | "G" | "T" | "k" | "m" | "g" | "t" => {
                return Err(format!(
                    "`{s}`: write binary units explicitly, e.g. `{num}{}iB`",
                    unit.chars().next().unwrap_or('G').to_ascii_uppercase()
                ))
            }
            "" => return Err(format!("`{s}` has no unit: write e.g. `4GiB` or `512MiB`")),
            _ if unit.starts_with('.') => {
                return Err(format!("`{s}`: whole numbers only, use a smaller unit (e.g. `1536MiB`)"))
            }
            _ => return Err(format!("`{s}` is not a size: expected a whole number and B, KiB, MiB, GiB or TiB, e.g. `4GiB`")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size: expected e.g. `4GiB`"))?;
        let bytes = n
            .checked_mul(mult)
            .ok_or_else(|| format!("`{s}` is too large"))?;
        if bytes == 0 {
            return Err(format!("`{s}`: a size must be positive"));
        }
        Ok(Size(bytes))
    }
}

impl fmt::Display for Size {
    /// The largest binary unit that divides the size exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, m) in [
            ("TiB", Self::TIB),
            ("GiB", Self::GIB),
            ("MiB", Self::MIB),
            ("KiB", Self::KIB),
        ] {
            if self.0 >= m && self.0 % m == 0 {
                return write!(f, "{}{unit}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A TCP port, 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(u16);

impl Port {
    /// A known-good constant port.
    pub const fn of(p: u16) -> Port {
        assert!(p != 0);
        Port(p)
    }
    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for Port {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(Port(n as u16)),
            _ => Err(format!(
                "`{s}` is not a port: expected a whole number 1..=65535"
            )),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A CPU core count, 1..=8192 (Proxmox's limit for containers; we apply it to VMs too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cores(u32);

impl Cores {
    pub const MAX: u32 = 8192;
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for Cores {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<u32>() {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Cores(n)),
            _ => Err(format!(
                "`{s}` is not a core count: expected a whole number 1..={}",
                Self::MAX
            )),
        }
    }
}

impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a secret comes from; the lab file never holds the value itself.
/// `env:NAME` reads an environment variable, `file:PATH` a file (`~/` is the
/// home directory, a relative path is relative to the lab file).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({self})")
    }
}

impl fmt::Display for SecretRef {
    /// The reference, never the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`; `base` is the lab file's directory.
    pub fn parse(s: &str, base: &Path) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:") {
            let ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err(format!(
                    "`env:{name}`: an environment variable name is letters, digits and `_`, not starting with a digit"
                ));
            }
            return Ok(SecretRef::Env(name.to_string()));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(
                    "`file:` needs a path, e.g. `file:~/.config/imgbuild/pve-token`".into(),
                );
            }
            return Ok(SecretRef::File(expand_path(path, base)));
        }
        // Never echo the value: it may be the secret itself.
        Err("secrets are given by reference, never inline: write `env:NAME` or `file:PATH`".into())
    }

    /// Reads the secret: the variable's value, or the file's content without
    /// its trailing newline. Errors name the variable or path, never the value.
    pub fn resolve(&self) -> Result<String> {
        let v = match self {
            // VarError's text quotes a non-UTF-8 value: say what is wrong without it.
            SecretRef::Env(n) => match std::env::var(n) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => {
                    bail!("reading secret from environment variable {n}: it is not set")
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    bail!("reading secret from environment variable {n}: it is not valid UTF-8")
                }
            },
            SecretRef::File(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading secret from {}", p.display()))?,
        };
        crate::redact::register_secret(&v);
        let v = v
            .strip_suffix('\n')
            .map(|v| v.strip_suffix('\r').unwrap_or(v))
            .unwrap_or(&v)
            .to_string();
        if v.is_empty() {
            bail!("secret {self} is empty");
        }
        Ok(v)
    }
}

/// Expands `~/` to $HOME and makes relative paths relative to `base`.
pub fn expand_path(p: &str, base: &Path) -> PathBuf {
    if p == "~" || p.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(p.trim_start_matches('~').trim_start_matches('/'));
        }
    }
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// An absolute path inside a guest: starts with `/`, no `.`/`..` segments,
/// no empty segments, printable characters only.
pub fn parse_guest_path(s: &str) -> Result<String, String> {
    let ok = s.starts_with('/')
        && s.len() > 1
        && !s.ends_with('/')
        && s[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && s.chars().all(|c| !c.is_control() && c != ' ');
    if !ok {
        return Err(format!(
            "`{s}` is not a clean absolute path: expected e.g. /var/lib/minio"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!("minio".parse::<Hostname>().is_ok());
        assert!("spark-worker-1".parse::<Hostname>().is_ok());
        for bad in ["", "-a", "a-", "Minio", "a_b", "a.b", &"x".repeat(64)] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad}");
        }
    }

    #[test]
    fn vmids() {
        assert_eq!("100".parse::<VmId>().unwrap().get(), 100);
        assert_eq!("999999999".parse::<VmId>().unwrap().get(), 999_999_999);
        for bad in ["99", "1000000000", "-1", "abc", "1e3"] {
            assert!(
                bad.parse::<VmId>().unwrap_err().contains("100..=999999999"),
                "{bad}"
            );
        }
    }

    #[test]
    fn cidrs() {
        let c: Ipv4Cidr = "192.168.1.0/24".parse().unwrap();
        assert!(c.contains("192.168.1.200".parse().unwrap()));
        assert!(!c.contains("192.168.2.1".parse().unwrap()));
        assert_eq!(c.broadcast().to_string(), "192.168.1.255");
        assert!(!c.is_host("192.168.1.0".parse().unwrap()));
        assert!(!c.is_host("192.168.1.255".parse().unwrap()));
        assert!(c.is_host("192.168.1.1".parse().unwrap()));
        assert!("192.168.1.5/24"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("192.168.1.0/24"));
        assert!("192.168.1.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("192.168.1.0".parse::<Ipv4Cidr>().is_err());
        assert!("0.0.0.0/0"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(parse_ipv4("10.0.0.1/24")
            .unwrap_err()
            .contains("without a prefix"));
    }

    #[test]
    fn sizes() {
        assert_eq!("4GiB".parse::<Size>().unwrap().bytes(), 4 << 30);
        assert_eq!("512MiB".parse::<Size>().unwrap().mib(), 512);
        assert_eq!("1TiB".parse::<Size>().unwrap().gib(), 1024);
        assert_eq!("1536MiB".parse::<Size>().unwrap().to_string(), "1536MiB");
        assert_eq!("2048MiB".parse::<Size>().unwrap().to_string(), "2GiB");
        assert!("4GB".parse::<Size>().unwrap_err().contains("4GiB"));
        assert!("4".parse::<Size>().unwrap_err().contains("no unit"));
        assert!("0GiB".parse::<Size>().unwrap_err().contains("positive"));
        assert!("1.5GiB".parse::<Size>().unwrap_err().contains("whole"));
        assert!("99999999999TiB"
            .parse::<Size>()
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn ports_and_cores() {
        assert_eq!("9000".parse::<Port>().unwrap().get(), 9000);
        assert!("0".parse::<Port>().is_err());
        assert!("65536".parse::<Port>().is_err());
        assert!("0".parse::<Cores>().is_err());
        assert!("8193".parse::<Cores>().is_err());
    }

    #[test]
    fn secret_refs_parse_and_resolve() {
        let base = Path::new("/lab");
        assert_eq!(
            SecretRef::parse("env:PVE_TOKEN", base).unwrap(),
            SecretRef::Env("PVE_TOKEN".into())
        );
        assert_eq!(
            SecretRef::parse("file:secrets/x", base).unwrap(),
            SecretRef::File(PathBuf::from("/lab/secrets/x"))
        );
        let e = SecretRef::parse("hunter2", base).unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("env:NAME"));
        assert!(SecretRef::parse("env:1X", base).is_err());
        assert!(SecretRef::parse("file:", base).is_err());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "s3cret\n").unwrap();
        let r = SecretRef::parse("file:s", dir.path()).unwrap();
        assert_eq!(r.resolve().unwrap(), "s3cret");
        assert!(!format!("{r:?}").contains("s3cret"));
        let missing = SecretRef::Env("IMGBUILD_TEST_SURELY_UNSET_VAR".into());
        assert!(format!("{:#}", missing.resolve().unwrap_err())
            .contains("IMGBUILD_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn guest_paths() {
        assert!(parse_guest_path("/var/lib/minio").is_ok());
        for bad in ["var/lib", "/", "/a/../b", "/a//b", "/a/", "/a b"] {
            assert!(parse_guest_path(bad).is_err(), "{bad}");
        }
    }
}
