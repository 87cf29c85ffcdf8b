//! What goes wrong when a distillation is read from a configuration file.

use super::text::named_or;
use super::DistillError;

/// A configuration file that is not valid TOML, has a key or a value the configuration does not
/// know, or names something its models do not have. The location is 1-based and names the key at
/// fault; a misspelt path or key comes with the closest existing one.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {}{message}", key_prefix(key))]
#[non_exhaustive]
pub struct ConfigError {
    /// The file (or the name given to text parsed from memory).
    pub file: String,
    /// Line of the offending key or value, from 1.
    pub line: usize,
    /// Column (in characters) of the offending key or value, from 1.
    pub column: usize,
    /// The dotted key at fault (`pair[2].student`); empty for a syntax error.
    pub key: String,
    /// What is wrong; for a path the models do not have, the message of `cause`.
    pub message: String,
    /// The error behind the message, to match on: the one the models gave for the value (an unknown
    /// path with its suggestion, an index out of range, an adapter that cannot be built…), or the
    /// [`DistillError::Io`] of a file that cannot be read; its text is already in `message`.
    #[source]
    pub cause: Option<Box<DistillError>>,
}

/// `` `key`: `` before a configuration message, nothing for a syntax error.
fn key_prefix(key: &str) -> String {
    named_or(key, "", "`", "`: ")
}
