//! Data integrity: atomic and checksummed checkpoints, a teacher cache that knows what it holds,
//! TorchScript archives read fully and checked, configuration bounds, and libtorch's messages without
//! their C++ backtraces. Each test is a case that went wrong before: a killed save, flipped bytes,
//! hand-edited manifests, long dict keys…

#[path = "../common/mod.rs"]
mod common;

mod cache;
mod checkpoint;
mod checksum;
mod config;
mod errors;
mod jit;
mod metadata;

use std::path::PathBuf;

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-integrity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Flips every bit of `count` bytes of `file` from `from` bytes before its end.
pub fn flip_bytes(file: &std::path::Path, from_end: usize, count: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let start = bytes.len() - from_end;
    for byte in &mut bytes[start..start + count] {
        *byte = !*byte;
    }
    std::fs::write(file, bytes).unwrap();
}
