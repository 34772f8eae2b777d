//! The canonical YAML form of a seed, written without a YAML library.
//!
//! The instance id is the SHA-256 of these bytes, so they must never change
//! for an unchanged seed: the output is byte-identical to what `serde_yaml`
//! 0.9 (libyaml's emitter: block style, indent 2, unlimited width, Unicode
//! kept) wrote before the seed moved off that deprecated crate. A test in
//! `tests.rs` compares both on every fixture and on tricky strings.
//!
//! Only what a valid seed can hold is supported: structs, maps with string
//! keys, sequences, strings without line breaks, integers and booleans.
//! Everything else is a serialization error.

use serde::ser::{self, Serialize};
use std::fmt;

/// A value tree in emission order (struct fields in declaration order).
enum Value {
    Str(String),
    /// Integers and booleans: always plain.
    Plain(String),
    Seq(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

/// Why a value has no canonical form (never happens for a valid seed).
#[derive(Debug)]
pub struct Unsupported(String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no canonical YAML form: {}", self.0)
    }
}
impl std::error::Error for Unsupported {}
impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Unsupported(msg.to_string())
    }
}

/// The canonical YAML text of `v`.
pub fn to_string<T: Serialize>(v: &T) -> Result<String, Unsupported> {
    let tree = v.serialize(ToValue)?;
    let mut out = String::new();
    match &tree {
        Value::Map(m) if !m.is_empty() => write_map(&mut out, m, 0, false),
        _ => return Err(Unsupported("the top level must be a non-empty map".into())),
    }
    Ok(out)
}

fn indent(out: &mut String, n: usize) {
    out.push_str(&" ".repeat(n));
}

/// Writes mapping entries at column `col`; `inline_first` when the first key
/// continues a `- ` already written.
fn write_map(out: &mut String, m: &[(Value, Value)], col: usize, inline_first: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline_first {
            indent(out, col);
        }
        write_leaf(out, k);
        out.push(':');
        match v {
            Value::Map(c) if !c.is_empty() => {
                out.push('\n');
                write_map(out, c, col + 2, false);
            }
            // libyaml does not indent a sequence inside a mapping.
            Value::Seq(c) if !c.is_empty() => {
                out.push('\n');
                write_seq(out, c, col);
            }
            _ => {
                out.push(' ');
                write_leaf(out, v);
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, s: &[Value], col: usize) {
    for v in s {
        indent(out, col);
        out.push_str("- ");
        match v {
            Value::Map(c) if !c.is_empty() => write_map(out, c, col + 2, true),
            Value::Seq(c) if !c.is_empty() => {
                // `- - a`: the inner sequence starts on the same line.
                let mut inner = String::new();
                write_seq(&mut inner, c, col + 2);
                out.push_str(&inner[col + 2..]);
            }
            _ => {
                write_leaf(out, v);
                out.push('\n');
            }
        }
    }
}

fn write_leaf(out: &mut String, v: &Value) {
    match v {
        Value::Str(s) => out.push_str(&scalar(s)),
        Value::Plain(p) => out.push_str(p),
        Value::Seq(_) => out.push_str("[]"),
        Value::Map(_) => out.push_str("{}"),
    }
}

/// A string as libyaml writes it: plain when that reads back as the same
/// string, else single-quoted. (Double quotes are only needed for line breaks
/// and non-printable characters, which no seed value may contain.)
fn scalar(s: &str) -> String {
    if plain_allowed(s) && !resolves_to_non_string(s) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

fn blank_or_end(c: Option<char>) -> bool {
    matches!(c, None | Some(' ' | '\t' | '\r' | '\n'))
}

/// libyaml's `yaml_emitter_analyze_scalar`, block context, no line breaks.
fn plain_allowed(s: &str) -> bool {
    if s.is_empty() || s.starts_with(' ') || s.ends_with(' ') {
        return false;
    }
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(c) {
                return false;
            }
            if matches!(c, '?' | ':' | '-') && blank_or_end(next) {
                return false;
            }
        } else {
            if c == ':' && blank_or_end(next) {
                return false;
            }
            if c == '#' && blank_or_end(Some(chars[i - 1])) {
                return false;
            }
        }
        if !printable(c) {
            return false;
        }
    }
    true
}

/// libyaml's IS_PRINTABLE (with Unicode output enabled).
fn printable(c: char) -> bool {
    matches!(c as u32,
        0x0A | 0x20..=0x7E | 0x85 | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
        && c != '\u{FEFF}'
}

/// Whether a plain scalar would read back as null, a boolean or a number
/// (serde_yaml's resolution rules), or is a zero-padded digit string.
fn resolves_to_non_string(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
        || matches!(v, "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
        || parse_unsigned(v)
        || parse_negative(v)
        || digits_but_not_number(v)
        || parse_f64(v)
}

fn digits_but_not_number(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    s.len() > 1 && s.starts_with('0') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

fn radix_prefixed(unsigned: &str) -> bool {
    for (p, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = unsigned.strip_prefix(p) {
            if rest.starts_with(['+', '-']) {
                return false;
            }
            if u128::from_str_radix(rest, radix).is_ok() {
                return true;
            }
        }
    }
    false
}

fn parse_unsigned(s: &str) -> bool {
    let unpositive = s.strip_prefix('+').unwrap_or(s);
    if let Some(rest) = ["0x", "0o", "0b"]
        .iter()
        .find_map(|p| unpositive.strip_prefix(p))
    {
        if rest.starts_with(['+', '-']) {
            return false;
        }
    }
    if radix_prefixed(unpositive) {
        return true;
    }
    if unpositive.starts_with(['+', '-']) || digits_but_not_number(s) {
        return false;
    }
    unpositive.parse::<u128>().is_ok()
}

fn parse_negative(s: &str) -> bool {
    for (p, radix) in [("-0x", 16), ("-0o", 8), ("-0b", 2)] {
        if let Some(rest) = s.strip_prefix(p) {
            if i128::from_str_radix(&format!("-{rest}"), radix).is_ok() {
                return true;
            }
        }
    }
    !digits_but_not_number(s) && s.parse::<i128>().is_ok()
}

fn parse_f64(s: &str) -> bool {
    let unpositive = match s.strip_prefix('+') {
        Some(u) if u.starts_with(['+', '-']) => return false,
        Some(u) => u,
        None => s,
    };
    matches!(unpositive, ".inf" | ".Inf" | ".INF")
        || matches!(s, "-.inf" | "-.Inf" | "-.INF" | ".nan" | ".NaN" | ".NAN")
        || unpositive.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Serializes into a [`Value`] tree.
struct ToValue;

type R = Result<Value, Unsupported>;

fn unsupported<T>(what: &str) -> Result<T, Unsupported> {
    Err(Unsupported(format!("{what} are not part of a seed")))
}

impl ser::Serializer for ToValue {
    type Ok = Value;
    type Error = Unsupported;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = ser::Impossible<Value, Unsupported>;
    type SerializeTupleStruct = ser::Impossible<Value, Unsupported>;
    type SerializeTupleVariant = ser::Impossible<Value, Unsupported>;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = ser::Impossible<Value, Unsupported>;

    fn serialize_bool(self, v: bool) -> R {
        Ok(Value::Plain(v.to_string()))
    }
    fn serialize_i8(self, v: i8) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> R {
        Ok(Value::Plain(v.to_string()))
    }
    fn serialize_u8(self, v: u8) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> R {
        Ok(Value::Plain(v.to_string()))
    }
    fn serialize_f32(self, _: f32) -> R {
        unsupported("floats")
    }
    fn serialize_f64(self, _: f64) -> R {
        unsupported("floats")
    }
    fn serialize_char(self, v: char) -> R {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> R {
        if v.is_empty() || !v.chars().all(crate::types::yaml_inline_char) {
            return unsupported(
                "empty strings and strings with line breaks or non-printable characters",
            );
        }
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        unsupported("byte strings")
    }
    fn serialize_none(self) -> R {
        unsupported("null values")
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        unsupported("null values")
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        unsupported("null values")
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> R {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> R {
        unsupported("tagged enums")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<SeqBuilder, Unsupported> {
        Ok(SeqBuilder(Vec::new()))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unsupported> {
        unsupported("tuples")
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        unsupported("tuples")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        unsupported("tagged enums")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapBuilder, Unsupported> {
        Ok(MapBuilder::default())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapBuilder, Unsupported> {
        Ok(MapBuilder::default())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        unsupported("tagged enums")
    }
}

struct SeqBuilder(Vec<Value>);

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = Unsupported;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Unsupported> {
        self.0.push(v.serialize(ToValue)?);
        Ok(())
    }
    fn end(self) -> R {
        Ok(Value::Seq(self.0))
    }
}

#[derive(Default)]
struct MapBuilder {
    entries: Vec<(Value, Value)>,
    key: Option<Value>,
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = Unsupported;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, k: &T) -> Result<(), Unsupported> {
        match k.serialize(ToValue)? {
            k @ (Value::Str(_) | Value::Plain(_)) => {
                self.key = Some(k);
                Ok(())
            }
            _ => unsupported("non-scalar keys"),
        }
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), Unsupported> {
        let k = self
            .key
            .take()
            .ok_or_else(|| Unsupported("a map value without a key".into()))?;
        self.entries.push((k, v.serialize(ToValue)?));
        Ok(())
    }
    fn end(self) -> R {
        Ok(Value::Map(self.entries))
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Value;
    type Error = Unsupported;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Unsupported> {
        self.entries
            .push((Value::Str(key.to_string()), v.serialize(ToValue)?));
        Ok(())
    }
    fn end(self) -> R {
        Ok(Value::Map(self.entries))
    }
}
