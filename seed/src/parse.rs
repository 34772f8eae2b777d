//! Reading a seed document: bounds checked on the raw text, then `marked_yaml`
//! (a maintained, linear-time loader over yaml-rust2 that keeps every node's
//! position), then serde into the validated types.
//!
//! The bounds come first because the text may come from anywhere (a cidata
//! volume, a template): too large, indented or bracketed too deeply, and it
//! is refused before any parser allocates for it.

use crate::{Seed, SeedError, MAX_SEED_BYTES, MAX_SEED_DEPTH, MAX_SEED_INDENT};
use marked_yaml::{LoadError, LoaderOptions, Marker, Node};

fn at(m: &Marker) -> Option<(usize, usize)> {
    Some((m.line(), m.column()))
}

/// Size, indentation and flow-bracket depth of the raw text.
pub(crate) fn check_shape(text: &str) -> Result<(), SeedError> {
    if text.len() > MAX_SEED_BYTES {
        return Err(SeedError::new(
            format!("the seed is larger than {MAX_SEED_BYTES} bytes, the most accepted"),
            None,
        ));
    }
    // Block nesting needs one more column of indentation (or one more `- `
    // or `? ` on the line) per level, so the width of a line's leading
    // indentation and indicators bounds it.
    for (n, line) in text.lines().enumerate() {
        let prefix = line
            .bytes()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'-' | b'?' | b':'))
            .count();
        if prefix > MAX_SEED_INDENT {
            return Err(SeedError::new(
                format!(
                    "nested too deeply: line {} is indented by {prefix} columns (at most {MAX_SEED_INDENT})",
                    n + 1
                ),
                Some((n + 1, prefix + 1)),
            ));
        }
    }
    documents(text)?;
    flow_depth(text)
}

/// One document only: a second one (after `---`) or an end marker (`...`)
/// would otherwise be ignored silently.
fn documents(text: &str) -> Result<(), SeedError> {
    let mut content = false;
    for (n, line) in text.lines().enumerate() {
        let marker = |m: &str| {
            line.strip_prefix(m)
                .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
        };
        if marker("...") || (marker("---") && content) {
            return Err(SeedError::new(
                "a seed is one YAML document: remove `---` and `...` lines",
                Some((n + 1, 1)),
            ));
        }
        let t = line.trim_start();
        if !t.is_empty() && !t.starts_with('#') {
            content = true;
        }
    }
    Ok(())
}

/// Flow collections (`[`, `{`) nest without indentation: count them outside
/// quoted scalars and comments. A quote opens a scalar only where a scalar
/// can start (after an indicator or at the start of a line); inside a plain
/// scalar it is a literal character.
fn flow_depth(text: &str) -> Result<(), SeedError> {
    let (mut line, mut col) = (1usize, 0usize);
    let mut depth = 0usize;
    // Last character, and last one that is not a space, outside quotes.
    let (mut prev, mut prev_sig) = ('\n', '\n');
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
            comment = false;
            if quote.is_none() {
                (prev, prev_sig) = ('\n', '\n');
            }
            continue;
        }
        if comment {
            continue;
        }
        match quote {
            Some('\'') => {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        col += 1;
                    } else {
                        quote = None;
                        (prev, prev_sig) = ('x', 'x');
                    }
                }
                continue;
            }
            Some(_) => {
                if c == '\\' {
                    chars.next();
                    col += 1;
                } else if c == '"' {
                    quote = None;
                    (prev, prev_sig) = ('x', 'x');
                }
                continue;
            }
            None => {}
        }
        match c {
            '#' if matches!(prev, '\n' | ' ' | '\t') => {
                comment = true;
                continue;
            }
            '\'' | '"' if matches!(prev_sig, '\n' | '[' | '{' | ',' | ':' | '?' | '-') => {
                quote = Some(c);
                continue;
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_SEED_DEPTH {
                    return Err(SeedError::new(
                        format!("nested too deeply: more than {MAX_SEED_DEPTH} levels of [ and {{"),
                        Some((line, col)),
                    ));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
        if c != ' ' && c != '\t' {
            prev_sig = c;
        }
    }
    Ok(())
}

/// Parses the text into position-marked nodes: one document, a mapping at
/// the top, no duplicate keys, no anchors, aliases or tags.
pub(crate) fn load(text: &str) -> Result<Node, SeedError> {
    let opts = LoaderOptions::default().error_on_duplicate_keys(true);
    marked_yaml::parse_yaml_with_options(0, text, opts).map_err(|e| match e {
        LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => {
            SeedError::new(
                "a seed is a YAML mapping (`version: 1`, `hostname: ...`)",
                at(&m),
            )
        }
        LoadError::UnexpectedAnchor(m) => SeedError::new(
            "anchors and aliases (`&name`, `*name`) are not allowed in a seed",
            at(&m),
        ),
        LoadError::MappingKeyMustBeScalar(m) => {
            SeedError::new("keys must be plain strings", at(&m))
        }
        LoadError::UnexpectedTag(m) => {
            SeedError::new("YAML tags (`!...`) are not allowed in a seed", at(&m))
        }
        LoadError::ScanError(m, e) => {
            SeedError::new(format!("YAML syntax error: {}", e.info()), at(&m))
        }
        LoadError::DuplicateKey(d) => {
            let first = d
                .prev_key
                .span()
                .start()
                .map(|m| format!(" (first at line {}, column {})", m.line(), m.column()))
                .unwrap_or_default();
            SeedError::new(
                format!("duplicate key `{}`{first}", d.key.as_str()),
                d.key.span().start().and_then(at),
            )
        }
    })
}

/// The parsed tree's depth, checked without recursion.
pub(crate) fn check_depth(root: &Node) -> Result<(), SeedError> {
    let mut stack = vec![(root, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_SEED_DEPTH {
            return Err(SeedError::new(
                format!("nested too deeply: more than {MAX_SEED_DEPTH} levels"),
                node.span().start().and_then(at),
            ));
        }
        if let Some(m) = node.as_mapping() {
            stack.extend(m.values().map(|v| (v, depth + 1)));
        } else if let Some(s) = node.as_sequence() {
            stack.extend(s.iter().map(|v| (v, depth + 1)));
        }
    }
    Ok(())
}

/// Deserializes the validated types; the message starts with the field path.
pub(crate) fn from_node(node: &Node) -> Result<Seed, SeedError> {
    use marked_yaml::Error as E;
    marked_yaml::from_node(node).map_err(|e| {
        let location = e.start_mark().and_then(|m| at(&m));
        let message = match &*e {
            E::UnknownFieldError(field, expected, _) => {
                let list: Vec<String> = expected.iter().map(|f| format!("`{f}`")).collect();
                format!(
                    "unknown field `{field}`, expected one of {}",
                    list.join(", ")
                )
            }
            E::NotBoolean(_) => "expected true or false".to_string(),
            E::IntegerParseFailure(p, _) => format!("expected a whole number ({p})"),
            E::FloatParseFailure(p, _) => format!("expected a number ({p})"),
            E::Other(m, _) => m.clone(),
        };
        let message = match e.path() {
            Some(path) if !message.starts_with(path) => format!("{path}: {message}"),
            _ => message,
        };
        SeedError::new(message, location)
    })
}
