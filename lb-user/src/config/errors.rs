//! What a broken configuration file looks like to the operator: every
//! error names the file, line, column and field path. The TOML crate gives
//! byte spans; this module turns them into lines and dotted field paths.

use std::{collections::HashMap, fmt, ops::Range};

use serde::Deserialize;
use toml::Spanned;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given (or `<string>`-like origin of the text).
    pub origin: String,
    /// 1-based; 0 when the error is not about a place in the text (the file
    /// could not be read).
    pub line: usize,
    /// 1-based, in characters; 0 when `line` is 0.
    pub column: usize,
    /// Path of the offending field, e.g. `vip[1].backend[0].weight`; empty
    /// for errors about the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if self.line != 0 {
            write!(f, "{}:{}:", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in a configuration file, in file order for
/// semantic errors. Displays one error per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", join_lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

pub(super) fn join_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

// ---------------------------------------------------------------------------
// Positions and field paths of TOML errors.

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// Turns a syntax or type error of the TOML crate into a [`ConfigErrors`].
pub(super) fn toml_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigErrors {
    let span = e.span();
    let (line, column) = line_col(text, span.as_ref().map_or(0, |s| s.start));
    let mut message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace("expected i64", "expected an integer")
        .replace(
            "expected a sequence",
            "expected an array (write [[table]] for an array of tables)",
        );
    // The toml crate has no words for some errors (a control character in
    // a comment): say what is there.
    if message.is_empty() {
        message = match span.as_ref().and_then(|s| text.get(s.clone())) {
            Some(found) if !found.is_empty() => format!("invalid TOML: unexpected {found:?}"),
            _ => "invalid TOML".to_owned(),
        };
    }
    // A datetime reaches serde as a map; say what it really is.
    if let Some(s) = &span
        && text
            .get(s.clone())
            .is_some_and(|v| v.trim().parse::<toml::value::Datetime>().is_ok())
    {
        message = message.replace("invalid type: map,", "invalid type: datetime,");
    }
    // No span: the error is about the document as a whole.
    let mut field = span
        .clone()
        .and_then(|span| field_at(text, &span))
        .unwrap_or_default();
    // serde reports a missing field against the table that lacks it.
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.strip_suffix('`')
    {
        field = join_path(&field, name);
        message = "required field is missing".to_owned();
    }
    // Say what was found when the message does not (std's address parse
    // errors, for one, never name the text).
    if let Some(found) = span
        .as_ref()
        .and_then(|s| text.get(s.clone()))
        .map(str::trim)
        .filter(|f| !f.is_empty() && f.len() <= 80 && !f.contains('\n'))
        && message != "required field is missing"
        && !message.contains(found)
        && !message.contains(found.trim_matches('"'))
    {
        message = format!("{message} (found {found})");
    }
    ConfigError {
        origin: origin.to_owned(),
        line,
        column,
        field,
        message,
    }
    .into()
}

fn join_path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The field path of the innermost key or value whose span holds `span`.
///
/// Uses a span-keeping generic parse of the document when that succeeds
/// (type errors), else a line scan for table headers (syntax errors).
fn field_at(text: &str, span: &Range<usize>) -> Option<String> {
    match toml::from_str::<Node>(text) {
        Ok(root) => {
            let mut index = Vec::new();
            root.index("", &mut index);
            // Innermost = shortest; on a tie (an array of tables and its
            // only element share a span) the later, deeper entry wins.
            let mut best: Option<(usize, String)> = None;
            for (s, path) in index {
                let holds = s.start <= span.start
                    && (span.start < s.end || s == *span)
                    && s.end >= span.end;
                if holds && best.as_ref().is_none_or(|(len, _)| s.len() <= *len) {
                    best = Some((s.len(), path));
                }
            }
            // Held by nothing: the root table (e.g. a missing top-level field).
            Some(best.map(|(_, path)| path).unwrap_or_default())
        }
        Err(_) => scan_field(text, span.start),
    }
}

/// A TOML document reduced to its shape and spans.
enum Node {
    Leaf,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// Appends (span, path) for every key and value below this node.
    fn index(&self, path: &str, out: &mut Vec<(Range<usize>, String)>) {
        match self {
            Node::Leaf => {}
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.push((item.span(), p.clone()));
                    item.get_ref().index(&p, out);
                }
            }
            Node::Map(entries) => {
                for (key, value) in entries {
                    let p = join_path(path, key.get_ref());
                    out.push((key.span(), p.clone()));
                    out.push((value.span(), p.clone()));
                    value.get_ref().index(&p, out);
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                // A datetime arrives as a map with a plain-string key and
                // fails here; the caller then falls back to the line scan.
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Best-effort field path for a syntax error at byte `offset`: the last
/// table header before it (array-of-tables headers counted into indices)
/// plus the key on the error's line, if that line is `key = ...`.
fn scan_field(text: &str, offset: usize) -> Option<String> {
    let (err_line, _) = line_col(text, offset);
    // Count of `[[x]]` tables seen per resolved path (`vip`, `vip[0].backend`).
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut table = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let is_err_line = n + 1 == err_line;
        if let Some(inner) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let (parent, last) = resolve_header(inner, &arrays);
            let key = join_path(&parent, &last);
            let count = arrays.entry(key.clone()).or_insert(0);
            table = format!("{key}[{count}]");
            *count += 1;
        } else if let Some(inner) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            let (parent, last) = resolve_header(inner, &arrays);
            table = join_path(&parent, &last);
        } else if is_err_line && let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
            if !key.is_empty() && !key.contains(char::is_whitespace) {
                return Some(join_path(&table, key));
            }
        }
        if is_err_line {
            break;
        }
    }
    if table.is_empty() { None } else { Some(table) }
}

/// Resolves a dotted header into (parent path with array indices, last key).
fn resolve_header(inner: &str, arrays: &HashMap<String, usize>) -> (String, String) {
    let parts: Vec<&str> = inner
        .split('.')
        .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect();
    let (last, parents) = parts.split_last().unwrap_or((&"", &[]));
    let mut path = String::new();
    for part in parents {
        path = join_path(&path, part);
        if let Some(&count) = arrays.get(&path) {
            path = format!("{path}[{}]", count.saturating_sub(1));
        }
    }
    (path, (*last).to_owned())
}
