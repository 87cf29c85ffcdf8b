//! Reading a spanned TOML document: typed values by key, each error located at the key or value at
//! fault (file, line, column) and named by its dotted key.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{ConfigError, DistillError, Result};
use crate::suggest::closest;

/// A configuration's text and file name: turns byte spans into `file:line:column` errors.
#[derive(Clone, Copy, Debug)]
pub(super) struct Source<'t> {
    pub file: &'t str,
    pub text: &'t str,
}

/// A byte range of the source, and the dotted key it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct At {
    pub key: String,
    pub span: Range<usize>,
}

impl Source<'_> {
    /// A [`ConfigError`] at `at`.
    pub(crate) fn error(&self, at: &At, message: impl Into<String>) -> DistillError {
        self.located(at, message.into(), None)
    }

    /// A [`ConfigError`] at `at` for an error the models (or a constructor) gave.
    pub(crate) fn caused(&self, at: &At, cause: DistillError) -> DistillError {
        self.located(at, cause.to_string(), Some(Box::new(cause)))
    }

    fn located(&self, at: &At, message: String, cause: Option<Box<DistillError>>) -> DistillError {
        let (line, column) = line_column(self.text, at.span.start);
        ConfigError { file: self.file.to_owned(), line, column, key: at.key.clone(), message, cause }.into()
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The message of a TOML syntax error, with the key named where the parser does not name it (a
/// duplicate key: its span is the key).
pub(super) fn syntax_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    if message.starts_with("duplicate key") && !message.contains('`') {
        let key = error.span().and_then(|span| text.get(span)).map(str::trim).filter(|key| !key.is_empty());
        if let Some(key) = key {
            return format!("duplicate key `{key}`: a key is given once per table");
        }
    }
    message.to_owned()
}

/// One table of the document, read key by key. Every key must be one of `known`: an unknown key is
/// an error at the key, with the closest known key as a suggestion.
pub(super) struct Table<'a, 'i> {
    source: Source<'a>,
    key: String,
    table: &'a DeTable<'i>,
}

impl<'a, 'i> Table<'a, 'i> {
    /// The table `table` at dotted key `key` (`""` for the document), checked against `known`.
    pub(crate) fn new(source: Source<'a>, key: String, table: &'a DeTable<'i>, known: &[&str]) -> Result<Self> {
        let this = Table { source, key, table };
        for (name, _) in table.iter() {
            if !known.contains(&name.get_ref().as_ref()) {
                let hint = match closest(name.get_ref(), known.iter().copied()) {
                    Some(known) => format!(" (did you mean `{known}`?)"),
                    None => format!("; the keys here are {}", quoted(known)),
                };
                let at = At { key: this.child_key(name.get_ref()), span: name.span() };
                return Err(source.error(&at, format!("unknown key{hint}")));
            }
        }
        Ok(this)
    }

    /// The dotted key of `name` in this table.
    pub(crate) fn child_key(&self, name: &str) -> String {
        if self.key.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.key)
        }
    }

    /// The source this table was read from.
    pub(crate) fn source(&self) -> Source<'a> {
        self.source
    }

    /// The value of `name`, with where it is.
    pub(crate) fn get(&self, name: &str) -> Option<(&'a DeValue<'i>, At)> {
        let value: &'a Spanned<DeValue<'i>> = self.table.get(name)?;
        Some((value.get_ref(), At { key: self.child_key(name), span: value.span() }))
    }

    /// `name` as a string, if present.
    pub(crate) fn string(&self, name: &str) -> Result<Option<(String, At)>> {
        self.typed(name, "a string", |value| value.as_str().map(str::to_owned))
    }

    /// `name` as a boolean, if present.
    pub(crate) fn bool(&self, name: &str) -> Result<Option<(bool, At)>> {
        self.typed(name, "true or false", DeValue::as_bool)
    }

    /// `name` as a number (a TOML float or integer), if present.
    pub(crate) fn float(&self, name: &str) -> Result<Option<(f64, At)>> {
        self.typed(name, "a number", as_f64)
    }

    /// `name` as an integer, if present.
    pub(crate) fn integer(&self, name: &str) -> Result<Option<(i64, At)>> {
        self.typed(name, "an integer", as_i64)
    }

    /// `name` as a string; an error at the table when it is missing.
    pub(crate) fn required_string(&self, name: &str, at: &At) -> Result<(String, At)> {
        self.string(name)?.ok_or_else(|| self.source.error(at, format!("missing key `{name}`")))
    }

    /// `name` as an integer; an error at the table when it is missing.
    pub(crate) fn required_integer(&self, name: &str, at: &At) -> Result<(i64, At)> {
        self.integer(name)?.ok_or_else(|| self.source.error(at, format!("missing key `{name}`")))
    }

    fn typed<T>(&self, name: &str, what: &str, read: impl Fn(&DeValue<'i>) -> Option<T>) -> Result<Option<(T, At)>> {
        let Some((value, at)) = self.get(name) else { return Ok(None) };
        match read(value) {
            Some(read) => Ok(Some((read, at))),
            None => Err(self.source.error(&at, format!("expected {what}, found {}", describe(value)))),
        }
    }
}

/// The string under `kind` in the inline table at `at` (whose other keys depend on it).
pub(super) fn kind_of(source: Source<'_>, table: &DeTable<'_>, at: &At) -> Result<(String, At)> {
    let value = table.get("kind").ok_or_else(|| source.error(at, "missing key `kind`"))?;
    let kind_at = At { key: format!("{}.kind", at.key), span: value.span() };
    match value.get_ref().as_str() {
        Some(kind) => Ok((kind.to_owned(), kind_at)),
        None => Err(source.error(&kind_at, format!("expected a string, found {}", describe(value.get_ref())))),
    }
}

/// A float, or an integer that a float represents exactly.
fn as_f64(value: &DeValue<'_>) -> Option<f64> {
    match value {
        DeValue::Float(float) => float.as_str().parse().ok(),
        DeValue::Integer(_) => as_i64(value).filter(|int| int.unsigned_abs() <= 1 << 53).map(|int| int as f64),
        _ => None,
    }
}

fn as_i64(value: &DeValue<'_>) -> Option<i64> {
    let integer = value.as_integer()?;
    i64::from_str_radix(integer.as_str(), integer.radix()).ok()
}

/// What a value is, for "expected …, found …".
pub(super) fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(text) => format!("the string {text:?}"),
        DeValue::Integer(int) => format!("the integer {}", int.as_str()),
        DeValue::Float(float) => format!("the number {}", float.as_str()),
        DeValue::Boolean(flag) => format!("`{flag}`"),
        DeValue::Datetime(_) => "a date".to_owned(),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// `` `a`, `b`, `c` ``.
pub(super) fn quoted(names: &[&str]) -> String {
    names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_and_column_count_from_one_in_characters() {
        let text = "a = 1\n\u{e9}t\u{e9} = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // `é` is two bytes: the `=` after `été` is the 5th character of line 2.
        assert_eq!(line_column(text, 6 + 2 + 1 + 2 + 1), (2, 5));
        assert_eq!(line_column(text, 1000), (3, 1));
    }
}
