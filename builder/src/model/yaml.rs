//! Span-aware YAML reading: parse a document into `marked_yaml` nodes (every
//! node knows its line and column), then walk them with a [`Ctx`] that collects
//! [`Diagnostic`]s instead of stopping at the first problem.
//!
//! Typed conversion stays in the lab and recipe modules; this module only
//! offers the small vocabulary they share: "this must be a mapping with these
//! keys", "this key is required", "this scalar parses with that function".
//! Unknown keys get a "did you mean" suggestion; duplicate keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{LoadError, LoaderOptions, Node};

use crate::diag::Diagnostic;

/// A 1-based line and column in the input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Where each field of a parsed document was written, keyed by dotted field
/// path (`guests.minio.resources.memory`). Scalars map to the value's
/// position, mappings and sequences to the position of the key that holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans(BTreeMap<String, Pos>);

impl Spans {
    /// The position of `path`, or of its nearest recorded ancestor.
    pub fn get(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.0.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return Pos { line: 1, column: 1 },
            }
        }
    }

    fn insert(&mut self, path: &str, pos: Pos) {
        self.0.entry(path.to_string()).or_insert(pos);
    }
}

/// Collects diagnostics and field positions while converting one file.
#[derive(Debug)]
pub struct Ctx {
    pub file: PathBuf,
    pub diags: Vec<Diagnostic>,
    pub spans: Spans,
}

impl Ctx {
    pub fn new(file: &Path) -> Self {
        Ctx {
            file: file.to_path_buf(),
            diags: Vec::new(),
            spans: Spans::default(),
        }
    }

    /// Records a problem at an explicit position.
    pub fn err_at(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// Records a problem at the recorded position of `field`.
    pub fn err(&mut self, field: &str, message: impl Into<String>) {
        let pos = self.spans.get(field);
        self.err_at(pos, field, message);
    }

    /// Records a problem about a node.
    pub fn err_node(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        self.err_at(pos_of(node), field, message);
    }

    /// The diagnostics in file order.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.diags.sort_by_key(|d| (d.line, d.column));
        self.diags
    }

    pub fn has_errors(&self) -> bool {
        !self.diags.is_empty()
    }

    /// Expects a mapping; checks its keys against `allowed` (unknown keys are
    /// reported with a suggestion) and records its position.
    pub fn map<'n>(&mut self, f: Field<'n>, allowed: &[&str]) -> Option<Map<'n>> {
        let Node::Mapping(m) = f.node else {
            self.err_node(
                f.node,
                &f.path,
                format!("expected a mapping, got {}", describe(f.node)),
            );
            return None;
        };
        self.spans.insert(&f.path, f.key_pos);
        for (k, _) in m.iter() {
            if !allowed.contains(&k.as_str()) {
                let path = join(&f.path, k.as_str());
                let msg = unknown_key_message(k.as_str(), allowed);
                self.err_at(pos_of_scalar(k), &path, msg);
            }
        }
        Some(Map {
            m,
            path: f.path,
            pos: f.key_pos,
        })
    }

    /// Expects a sequence and returns its items as fields `path[i]`.
    pub fn seq<'n>(&mut self, f: &Field<'n>) -> Option<Vec<Field<'n>>> {
        let Node::Sequence(s) = f.node else {
            self.err_node(
                f.node,
                &f.path,
                format!("expected a list, got {}", describe(f.node)),
            );
            return None;
        };
        self.spans.insert(&f.path, f.key_pos);
        Some(seq_items(s, &f.path))
    }

    /// Expects a non-empty scalar and parses it; the parser's error message
    /// becomes the diagnostic.
    pub fn scalar<T>(
        &mut self,
        f: &Field<'_>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.text(f)?;
        match parse(s) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.err_node(f.node, &f.path, msg);
                None
            }
        }
    }

    /// Expects a non-empty scalar and returns its text.
    pub fn text<'n>(&mut self, f: &Field<'n>) -> Option<&'n str> {
        let Node::Scalar(s) = f.node else {
            self.err_node(
                f.node,
                &f.path,
                format!("expected a single value, got {}", describe(f.node)),
            );
            return None;
        };
        self.spans.insert(&f.path, pos_of_scalar(s));
        if is_null(s) {
            self.err_node(f.node, &f.path, "expected a value, got nothing");
            return None;
        }
        Some(s.as_str())
    }
}

/// One value in the document with its dotted path and the position of the
/// key that holds it (or of the value itself for list items and the root).
#[derive(Debug, Clone)]
pub struct Field<'n> {
    pub node: &'n Node,
    pub path: String,
    pub key_pos: Pos,
}

impl<'n> Field<'n> {
    /// The whole document.
    pub fn root(node: &'n Node) -> Self {
        Field {
            node,
            path: String::new(),
            key_pos: pos_of(node),
        }
    }
}

/// A mapping being read; its keys were already checked.
#[derive(Debug, Clone)]
pub struct Map<'n> {
    pub m: &'n MarkedMappingNode,
    pub path: String,
    /// Where the mapping was introduced (its key), for "missing field" errors.
    pub pos: Pos,
}

impl<'n> Map<'n> {
    /// The value at `key`, if present and not null.
    pub fn opt(&self, key: &str) -> Option<Field<'n>> {
        let (k, v) = self.m.iter().find(|(k, _)| k.as_str() == key)?;
        if let Node::Scalar(s) = v {
            if is_null(s) {
                return None;
            }
        }
        Some(Field {
            node: v,
            path: join(&self.path, key),
            key_pos: pos_of_scalar(k),
        })
    }

    /// The value at `key`; reports a missing-field error when absent.
    pub fn req(&self, ctx: &mut Ctx, key: &str, what: &str) -> Option<Field<'n>> {
        let f = self.opt(key);
        if f.is_none() {
            let path = join(&self.path, key);
            let msg = format!("missing field `{key}`: expected {what}");
            ctx.err_at(self.pos, &path, msg);
        }
        f
    }

    /// Whether `key` is present (even with an empty value).
    pub fn has(&self, key: &str) -> bool {
        self.m.iter().any(|(k, _)| k.as_str() == key)
    }

    /// All entries, as (key text, key position, field).
    pub fn entries(&self) -> Vec<(&'n str, Pos, Field<'n>)> {
        self.m
            .iter()
            .map(|(k, v)| {
                let key_pos = pos_of_scalar(k);
                (
                    k.as_str(),
                    key_pos,
                    Field {
                        node: v,
                        path: join(&self.path, k.as_str()),
                        key_pos,
                    },
                )
            })
            .collect()
    }
}

fn seq_items<'n>(s: &'n MarkedSequenceNode, path: &str) -> Vec<Field<'n>> {
    s.iter()
        .enumerate()
        .map(|(i, n)| Field {
            node: n,
            path: format!("{path}[{i}]"),
            key_pos: pos_of(n),
        })
        .collect()
}

/// `parent.key`, or `key` at the root.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// Position of a node's first character. A block mapping's own mark sits
/// after its first key, so the first key's position wins when it is earlier.
pub fn pos_of(node: &Node) -> Pos {
    let own = node
        .span()
        .start()
        .map(|m| Pos {
            line: m.line(),
            column: m.column(),
        })
        .unwrap_or(Pos { line: 1, column: 1 });
    match node {
        Node::Mapping(m) => m
            .keys()
            .next()
            .map(pos_of_scalar)
            .map_or(own, |k| k.min(own)),
        _ => own,
    }
}

fn pos_of_scalar(s: &MarkedScalarNode) -> Pos {
    s.span()
        .start()
        .map(|m| Pos {
            line: m.line(),
            column: m.column(),
        })
        .unwrap_or(Pos { line: 1, column: 1 })
}

fn describe(node: &Node) -> String {
    match node {
        Node::Scalar(s) if is_null(s) => "nothing".into(),
        Node::Scalar(s) => format!("`{}`", s.as_str()),
        Node::Mapping(_) => "a mapping".into(),
        Node::Sequence(_) => "a list".into(),
    }
}

fn unknown_key_message(key: &str, allowed: &[&str]) -> String {
    let mut msg = format!("unknown field `{key}`");
    if let Some(s) = suggest(key, allowed) {
        msg.push_str(&format!(": did you mean `{s}`?"));
    } else if !allowed.is_empty() {
        let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
        msg.push_str(&format!(": expected one of {}", list.join(", ")));
    }
    msg
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over chars counting insertions, deletions, substitutions and
/// adjacent transpositions (optimal string alignment), so `vmdi` is 1 from `vmid`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Parses YAML text into a node tree. Syntax errors and duplicate keys become
/// diagnostics in `ctx` (and `None`).
pub fn parse(ctx: &mut Ctx, text: &str) -> Option<Node> {
    let strict = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .toplevel_mapping();
    match marked_yaml::parse_yaml_with_options(0, text, strict) {
        Ok(n) => Some(n),
        Err(LoadError::DuplicateKey(inner)) => {
            let first = inner
                .prev_key
                .span()
                .start()
                .map(|m| (m.line(), m.column()));
            let second = inner.key.span().start().map(|m| Pos {
                line: m.line(),
                column: m.column(),
            });
            // Re-read leniently only to name the field path of the duplicate.
            let path = marked_yaml::parse_yaml(0, text)
                .ok()
                .and_then(|root| {
                    let again = second.map(|p| (p.line, p.column));
                    path_of_key(&root, "", first).or_else(|| path_of_key(&root, "", again))
                })
                .unwrap_or_else(|| inner.key.as_str().to_string());
            let where_first =
                first.map(|(l, c)| format!(" (first written at line {l}, column {c})"));
            ctx.err_at(
                second.unwrap_or_default(),
                &path,
                format!(
                    "duplicate key `{}`{}: each key may appear only once in a mapping",
                    inner.key.as_str(),
                    where_first.unwrap_or_default()
                ),
            );
            None
        }
        Err(e) => {
            let (pos, msg) = load_error(&e);
            ctx.err_at(pos, "yaml", msg);
            None
        }
    }
}

fn load_error(e: &LoadError) -> (Pos, String) {
    let at = |m: &marked_yaml::Marker| Pos {
        line: m.line(),
        column: m.column(),
    };
    match e {
        LoadError::TopLevelMustBeMapping(m) => {
            (at(m), "the document must be a mapping of fields".into())
        }
        LoadError::TopLevelMustBeSequence(m) => (at(m), "the document must be a list".into()),
        LoadError::UnexpectedAnchor(m) => (
            at(m),
            "YAML anchors and aliases are not supported: write values out".into(),
        ),
        LoadError::MappingKeyMustBeScalar(m) => (at(m), "mapping keys must be plain names".into()),
        LoadError::UnexpectedTag(m) => (at(m), "YAML tags (`!name`) are not supported".into()),
        LoadError::ScanError(m, se) => {
            #[allow(deprecated)]
            let info = std::error::Error::description(se).to_string();
            (at(m), format!("invalid YAML: {info}"))
        }
        LoadError::DuplicateKey(inner) => (
            inner.key.span().start().map(at).unwrap_or_default(),
            format!("duplicate key `{}`", inner.key.as_str()),
        ),
    }
}

fn path_of_key(node: &Node, path: &str, at: Option<(usize, usize)>) -> Option<String> {
    let at = at?;
    match node {
        Node::Mapping(m) => m.iter().find_map(|(k, v)| {
            let here = join(path, k.as_str());
            let kp = k.span().start().map(|m| (m.line(), m.column()));
            if kp == Some(at) {
                Some(here)
            } else {
                path_of_key(v, &here, Some(at))
            }
        }),
        Node::Sequence(s) => s
            .iter()
            .enumerate()
            .find_map(|(i, v)| path_of_key(v, &format!("{path}[{i}]"), Some(at))),
        Node::Scalar(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("memroy", "memory"), 1);
        assert_eq!(edit_distance("vmdi", "vmid"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            suggest("memroy", &["cores", "memory", "disk"]),
            Some("memory")
        );
        assert_eq!(suggest("Cores", &["cores", "memory"]), Some("cores"));
        assert_eq!(suggest("zzz", &["cores", "memory"]), None);
    }

    #[test]
    fn unknown_keys_missing_fields_and_positions() {
        let text = "a:\n  b: 1\n  cc: x\n";
        let mut ctx = Ctx::new(Path::new("t.yaml"));
        let root = parse(&mut ctx, text).unwrap();
        let top = ctx.map(Field::root(&root), &["a"]).unwrap();
        let af = top.req(&mut ctx, "a", "a mapping").unwrap();
        let a = ctx.map(af, &["b", "c"]).unwrap();
        let bf = a.req(&mut ctx, "b", "n").unwrap();
        let b = ctx.scalar(&bf, |s| s.parse::<u32>().map_err(|e| e.to_string()));
        assert_eq!(b, Some(1));
        assert!(a.req(&mut ctx, "d", "a d").is_none());
        let msgs: Vec<String> = ctx.diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs[0],
            "t.yaml:3:3: a.cc: unknown field `cc`: did you mean `c`?"
        );
        assert_eq!(msgs[1], "t.yaml:1:1: a.d: missing field `d`: expected a d");
        assert_eq!(ctx.spans.get("a.b"), Pos { line: 2, column: 6 });
        assert_eq!(ctx.spans.get("a.b.zz"), Pos { line: 2, column: 6 });
    }

    #[test]
    fn duplicate_keys_name_their_path() {
        let mut ctx = Ctx::new(Path::new("t.yaml"));
        assert!(parse(&mut ctx, "x:\n  y: 1\n  z: 2\n  y: 3\n").is_none());
        let d = &ctx.diags[0];
        assert_eq!((d.line, d.column, d.field.as_str()), (4, 3, "x.y"));
        assert!(
            d.message.contains("first written at line 2, column 3"),
            "{}",
            d.message
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let mut ctx = Ctx::new(Path::new("t.yaml"));
        assert!(parse(&mut ctx, "a: [1, 2\nb: 3\n").is_none());
        assert!(ctx.diags[0].message.starts_with("invalid YAML"));
        let mut ctx = Ctx::new(Path::new("t.yaml"));
        assert!(parse(&mut ctx, "- 1\n- 2\n").is_none());
        assert!(ctx.diags[0].message.contains("mapping"));
    }
}
