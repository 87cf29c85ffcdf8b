//! The bytes of a GGUF file, memory-mapped or held in memory.

use std::ops::Deref;

/// The bytes of the file: mapped, or owned when parsed from memory.
pub(super) enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}
