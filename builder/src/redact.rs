//! Keeping secrets out of messages. Every value read through a secret reference
//! (`env:NAME`, `file:PATH`) is registered here when it is read, and
//! [`scrub`] replaces any registered value (and its quoted/escaped forms, as a
//! validator's `{:?}` would print it) in a message before it is shown. URLs
//! lose their user-info through [`crate::http::redact`].
//!
//! This is the net under every error path (main prints through it), so a
//! validator that quotes the value it rejects cannot leak a secret.

use std::sync::Mutex;

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// What a secret is replaced with.
pub const MASK: &str = "<secret>";

/// Remembers `value` as a secret for [`scrub`].
pub fn register_secret(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut s = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|v| v == value) {
        s.push(value.to_string());
    }
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn scrub(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    // Longest first, so a secret containing another is masked whole.
    let mut forms: Vec<String> = Vec::new();
    for v in secrets.iter() {
        forms.push(v.clone());
        // As Rust's `{:?}` and JSON/YAML quoting print it, without the quotes.
        let debug = format!("{v:?}");
        forms.push(debug[1..debug.len() - 1].to_string());
        if let Ok(json) = serde_json::to_string(v) {
            forms.push(json[1..json.len() - 1].to_string());
        }
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    for f in forms.iter().filter(|f| !f.is_empty()) {
        if out.contains(f.as_str()) {
            out = out.replace(f.as_str(), MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_plain_and_escaped_forms() {
        register_secret("pa\"ss\nword");
        let msg = r#"invalid access key "pa\"ss\nword": must be ..."#;
        assert_eq!(scrub(msg), r#"invalid access key "<secret>": must be ..."#);
        assert_eq!(scrub("x pa\"ss\nword y"), "x <secret> y");
        assert_eq!(scrub("nothing here"), "nothing here");
    }
}
