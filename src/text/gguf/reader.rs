//! A bounds-checked little-endian cursor over the mapped bytes: every read either succeeds inside
//! the file or returns an error naming the file and the offset, so that a truncated or hostile file
//! can never cause an out-of-bounds read or a panic.

use std::path::Path;

use super::error::GgufError;

/// Reads GGUF's little-endian scalars and length-prefixed strings from `bytes`, starting at 0.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Reader { bytes, position: 0, path }
    }

    /// The offset of the next byte to read.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// Bytes left after the current position.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    /// A malformed-file error at `offset`.
    pub(crate) fn error_at(&self, offset: usize, reason: impl Into<String>) -> GgufError {
        GgufError::Malformed { path: self.path.to_path_buf(), offset: offset as u64, reason: reason.into() }
    }

    /// The next `n` bytes, or an error saying what was being read when the file ended.
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.error_at(
                self.position,
                format!("the file ends while reading {what}: {n} bytes needed, {} left", self.remaining()),
            ));
        }
        let slice = &self.bytes[self.position..self.position + n];
        self.position += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn i8(&mut self, what: &str) -> Result<i8, GgufError> {
        Ok(i8::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i16(&mut self, what: &str) -> Result<i16, GgufError> {
        Ok(i16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &str) -> Result<i32, GgufError> {
        Ok(i32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, GgufError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn f32(&mut self, what: &str) -> Result<f32, GgufError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn f64(&mut self, what: &str) -> Result<f64, GgufError> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    /// A count (`u64`) of items that take at least `min_item_bytes` each: a count that the rest of
    /// the file cannot hold is an error before anything is allocated for it.
    pub(crate) fn count(&mut self, min_item_bytes: usize, what: &str) -> Result<usize, GgufError> {
        let at = self.position;
        let count = self.u64(what)?;
        let fits = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(min_item_bytes.max(1)))
            .is_some_and(|bytes| bytes <= self.remaining());
        if !fits {
            return Err(self.error_at(
                at,
                format!(
                    "{what} is {count}, more than the {} bytes left in the file can hold ({min_item_bytes} bytes or \
                     more each)",
                    self.remaining()
                ),
            ));
        }
        Ok(count as usize)
    }

    /// A GGUF string: a `u64` byte length, then that many bytes of UTF-8 (not NUL-terminated).
    pub(crate) fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.position;
        let len = self.count(1, &format!("the length of {what}"))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.error_at(at + 8 + e.utf8_error().valid_up_to(), format!("{what} is not valid UTF-8")))
    }
}
