//! Text files read into documents.

use std::path::{Path, PathBuf};

use super::DataError;

/// One text: a fortune, an article, a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Where it came from (`/usr/share/games/fortunes/riddles#12`: the file, and the index of the
    /// document in it when a file holds several).
    pub source: String,
    /// The text.
    pub text: String,
}

/// The text files of a fortune directory (`/usr/share/games/fortunes`), sorted by name: every
/// regular file except the `.dat` indexes and the `.u8` links.
///
/// # Errors
/// [`DataError::Io`] when the directory cannot be listed.
pub fn fortune_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, DataError> {
    let dir = dir.as_ref();
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_index = matches!(path.extension().and_then(|e| e.to_str()), Some("dat" | "u8"));
        if !is_index && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads text files into documents: each file whole, or, with a `separator`, split at every line
/// that is exactly the separator (`%` in fortune files). Empty and all-whitespace documents are left
/// out; a trailing newline before a separator is part of the document.
///
/// # Errors
/// [`DataError::Io`] for a file that cannot be read; [`DataError::NotUtf8`] for one that is not UTF-8.
pub fn read_documents(paths: &[impl AsRef<Path>], separator: Option<&str>) -> Result<Vec<Document>, DataError> {
    let mut documents = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let text = String::from_utf8(bytes)
            .map_err(|e| DataError::NotUtf8 { path: path.to_path_buf(), offset: e.utf8_error().valid_up_to() })?;
        let pieces: Vec<String> = match separator {
            None => vec![text],
            Some(separator) => split_at_lines(&text, separator),
        };
        let several = pieces.len() > 1;
        for (index, piece) in pieces.into_iter().enumerate().filter(|(_, p)| !p.trim().is_empty()) {
            let source = if several { format!("{}#{index}", path.display()) } else { path.display().to_string() };
            documents.push(Document { source, text: piece });
        }
    }
    Ok(documents)
}

/// The pieces of `text` between lines that equal `separator` (a final `\r` ignored).
fn split_at_lines(text: &str, separator: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches('\n').trim_end_matches('\r') == separator {
            pieces.push(String::new());
        } else if let Some(last) = pieces.last_mut() {
            last.push_str(line);
        }
    }
    pieces
}
