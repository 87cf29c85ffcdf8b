//! The token-level teacher cache: a language-model teacher's next-token distribution for every
//! token of a token dataset, stored once and read back as the token criteria take it.

mod manifest;
mod reader;
mod teacher;
mod writer;

pub use manifest::{
    IdWidth, StoredHidden, TokenCacheSpec, TokenEncoding, TokenManifest, TOKEN_FORMAT_VERSION, TOKEN_MANIFEST_FILE,
};
pub use reader::{CachedTokens, TokenCache, TokenTeacher};
pub use writer::{TokenCacheWriter, TokenShardWriter, TokenWriteReport};
