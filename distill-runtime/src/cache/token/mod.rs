//! The token-level teacher cache: a language-model teacher's next-token distribution for every
//! token of a token dataset, stored once and read back as the token criteria take it.

mod batch;
mod encode;
mod encoding;
mod manifest;
mod reader;
mod teacher;
mod writer;

pub use batch::{CachedTokens, TokenTeacher};
pub(crate) use manifest::TOKEN_MANIFEST_FILE;
pub use manifest::{IdWidth, StoredHidden, TokenCacheSpec, TokenEncoding, TokenManifest};
pub use reader::TokenCache;
pub use writer::{TeacherTokens, TokenCacheWriter, TokenShardWriter, TokenWriteReport};
