//! Request parameters as PVE reads them: an ordered list of `key=value`
//! pairs, percent-encoded so that neither `&` nor `;` (both separators in
//! PVE's form parser) nor `+` survive raw; booleans as `1`/`0`; property
//! strings (`net0`, `scsi0`, `rootfs`, ...) built from typed parts.

use std::fmt::Write as _;

/// Ordered request parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new() -> Params {
        Params(Vec::new())
    }

    pub fn set(mut self, key: &str, value: impl ToString) -> Params {
        self.0.push((key.to_string(), value.to_string()));
        self
    }

    pub fn flag(self, key: &str, on: bool) -> Params {
        self.set(key, if on { "1" } else { "0" })
    }

    pub fn push(&mut self, key: &str, value: impl ToString) {
        self.0.push((key.to_string(), value.to_string()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// `k=v&k=v`, every byte outside RFC 3986's unreserved set percent-encoded
    /// (spaces as %20, never `+`).
    pub fn encode(&self) -> String {
        let mut s = String::new();
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push('&');
            }
            s.push_str(&pct(k));
            s.push('=');
            s.push_str(&pct(v));
        }
        s
    }
}

/// Percent-encodes everything but `A-Za-z0-9-._~`.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A property string: `default,key=value,...` as PVE's `parse_property_string` reads it.
#[derive(Debug, Clone, Default)]
pub struct PropString {
    parts: Vec<String>,
}

impl PropString {
    /// Starts with the value of the format's `default_key` (e.g. a volume for `scsi0`).
    pub fn with_default(value: impl ToString) -> PropString {
        PropString {
            parts: vec![value.to_string()],
        }
    }

    pub fn new() -> PropString {
        PropString::default()
    }

    pub fn kv(mut self, key: &str, value: impl ToString) -> PropString {
        let v = value.to_string();
        debug_assert!(
            !v.contains(','),
            "property string values cannot hold commas"
        );
        self.parts.push(format!("{key}={v}"));
        self
    }

    pub fn flag(self, key: &str, on: bool) -> PropString {
        self.kv(key, if on { 1 } else { 0 })
    }
}

impl std::fmt::Display for PropString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_never_survive_raw() {
        let p = Params::new()
            .set("tags", "imgbuild;lab-homelab")
            .set("description", "a & b + c = d\nnext")
            .flag("onboot", true);
        let e = p.encode();
        assert_eq!(
            e,
            "tags=imgbuild%3Blab-homelab&description=a%20%26%20b%20%2B%20c%20%3D%20d%0Anext&onboot=1"
        );
        assert!(!e.contains(';') && !e.contains('+'));
    }

    #[test]
    fn property_strings() {
        let s = PropString::with_default("local-lvm:0")
            .kv("import-from", "local:import/x.qcow2")
            .flag("discard", true);
        assert_eq!(
            s.to_string(),
            "local-lvm:0,import-from=local:import/x.qcow2,discard=1"
        );
    }
}
