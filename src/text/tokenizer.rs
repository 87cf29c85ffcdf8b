//! The tokenizer of a language model: Hugging Face's `tokenizers`, built from a GGUF file's
//! `tokenizer.ggml.*` metadata as `transformers` builds it, or read from a `tokenizer.json`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

use super::gguf::{GgufError, GgufFile};

/// The `tokenizer.ggml.model` values this builder reads.
const SUPPORTED_MODELS: &[&str] = &["gpt2"];

/// The `tokenizer.ggml.pre` values whose pre-tokenizer is GPT-2's byte-level regex, which is what
/// `transformers` gives them (SmolLM's among them). Files naming another split (`llama3`, `qwen2`…)
/// are refused rather than tokenized differently from `transformers`.
const GPT2_REGEX_PRE_TOKENIZERS: &[&str] = &["default", "gpt2", "smollm"];

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// What went wrong while building a tokenizer or encoding and decoding with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The GGUF metadata the tokenizer is built from is missing or of the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The GGUF file describes a tokenizer this builder does not build.
    #[error("GGUF file `{}`: {what} `{value}` is not supported; supported: {}", path.display(), supported.join(", "))]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// `tokenizer model` (`tokenizer.ggml.model`) or `pre-tokenizer` (`tokenizer.ggml.pre`).
        what: &'static str,
        /// The value in the file.
        value: String,
        /// The values that are supported.
        supported: Vec<&'static str>,
    },
    /// The metadata is inconsistent (a merge that is not two tokens, a special token id past the
    /// vocabulary…).
    #[error("GGUF file `{}`: {reason}", path.display())]
    InvalidMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A token id past the end of the vocabulary (given to `decode`).
    #[error("token id {id} is not in the vocabulary ({vocab_size} tokens)")]
    UnknownId {
        /// The id.
        id: u32,
        /// How many tokens the vocabulary has, added tokens included.
        vocab_size: usize,
    },
    /// The `tokenizers` library failed: a `tokenizer.json` that cannot be read or parsed, or a
    /// failure while building, encoding or decoding.
    #[error("{context}: {source}")]
    Tokenizers {
        /// What was being done (`reading tokenizer file `…``, `encoding`…).
        context: String,
        /// The library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<TokenizerError> for crate::DistillError {
    fn from(error: TokenizerError) -> Self {
        crate::DistillError::Text(Box::new(error))
    }
}

fn library(context: impl Into<String>) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> TokenizerError {
    let context = context.into();
    move |source| TokenizerError::Tokenizers { context, source }
}

/// A language model's tokenizer: text to token ids and back.
///
/// ```no_run
/// # fn main() -> Result<(), distill::DistillError> {
/// use distill::text::{GgufFile, Tokenizer};
/// let gguf = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let tokenizer = Tokenizer::from_gguf(&gguf)?;
/// let ids = tokenizer.encode("Hello  world! 12345", true)?;
/// assert_eq!(tokenizer.decode(&ids, false)?, "Hello  world! 12345");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    unk: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("unk", &self.unk)
            .finish()
    }
}

/// GPT-2's byte-to-character table (`bytes_to_unicode`): printable bytes stand for themselves, the
/// others for the characters from U+0100 on, in byte order.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        table[byte as usize] = if printable {
            char::from(byte)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    table
}

impl Tokenizer {
    /// Builds the tokenizer that a GGUF file's `tokenizer.ggml.*` metadata describes, as
    /// `transformers` builds it (`AutoTokenizer.from_pretrained(dir, gguf_file=…)`), so that the ids
    /// are the same:
    ///
    /// - `tokenizer.ggml.model` `gpt2`: a byte-level BPE over `tokenizer.ggml.tokens` and
    ///   `tokenizer.ggml.merges`, tokens outside the byte alphabet respelt byte by byte; GPT-2's
    ///   pre-tokenizer regex (for `tokenizer.ggml.pre` `smollm`, `gpt2`, `default` or absent);
    /// - tokens of type control (3) are special tokens, matched whole and skipped by
    ///   `decode(…, true)` (except one with a character outside the byte alphabet, a llama.cpp
    ///   mislabel); user-defined ones (4) are matched whole too; the BOS, EOS, unknown and padding
    ///   tokens are special;
    /// - `tokenizer.ggml.add_bos_token` / `add_eos_token` (false when absent) put BOS before and EOS
    ///   after each sequence when encoding with special tokens.
    ///
    /// # Errors
    /// [`TokenizerError::Gguf`] for a missing or mistyped key; [`TokenizerError::Unsupported`] for
    /// another tokenizer model or pre-tokenizer; [`TokenizerError::InvalidMetadata`] for a merge that
    /// is not two tokens or a special token id past the vocabulary.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let path = gguf.path().to_path_buf();
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if !SUPPORTED_MODELS.contains(&model) {
            return Err(TokenizerError::Unsupported {
                path,
                what: "tokenizer model",
                value: model.to_owned(),
                supported: SUPPORTED_MODELS.to_vec(),
            });
        }
        let pre = match gguf.metadata("tokenizer.ggml.pre") {
            Some(_) => gguf.get_str("tokenizer.ggml.pre")?,
            None => "default",
        };
        if !GPT2_REGEX_PRE_TOKENIZERS.contains(&pre) {
            return Err(TokenizerError::Unsupported {
                path,
                what: "pre-tokenizer",
                value: pre.to_owned(),
                supported: GPT2_REGEX_PRE_TOKENIZERS.to_vec(),
            });
        }
        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        let types = match gguf.metadata("tokenizer.ggml.token_type") {
            Some(_) => gguf.get_i64_array("tokenizer.ggml.token_type")?,
            None => Vec::new(),
        };
        let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
        let optional_id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match gguf.metadata(key) {
                None => Ok(None),
                Some(_) => {
                    let id = gguf.get_u32(key)?;
                    if id as usize >= tokens.len() {
                        return Err(TokenizerError::InvalidMetadata {
                            path: gguf.path().to_path_buf(),
                            reason: format!("`{key}` is {id}, past the vocabulary's {} tokens", tokens.len()),
                        });
                    }
                    Ok(Some(id))
                }
            }
        };
        let bos = optional_id("tokenizer.ggml.bos_token_id")?;
        let eos = optional_id("tokenizer.ggml.eos_token_id")?;
        let unk = optional_id("tokenizer.ggml.unknown_token_id")?;
        let pad = optional_id("tokenizer.ggml.padding_token_id")?;
        let flag = |key: &str| -> Result<bool, GgufError> {
            match gguf.metadata(key) {
                None => Ok(false),
                Some(_) => gguf.get_bool(key),
            }
        };
        let add_bos = flag("tokenizer.ggml.add_bos_token")? && bos.is_some();
        let add_eos = flag("tokenizer.ggml.add_eos_token")? && eos.is_some();

        // The vocabulary in the byte alphabet: a token with another character is respelt from its
        // UTF-8 bytes. A later duplicate replaces an earlier one, as in a Python dict.
        let table = byte_to_char();
        let alphabet: HashSet<char> = table.iter().copied().collect();
        let in_alphabet = |token: &str| token.chars().all(|c| alphabet.contains(&c));
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| {
                let spelt =
                    if in_alphabet(token) { token.clone() } else { token.bytes().map(|b| table[b as usize]).collect() };
                (spelt, id as u32)
            })
            .collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(index, merge)| match merge.split(' ').collect::<Vec<_>>().as_slice() {
                [left, right] => Ok(((*left).to_owned(), (*right).to_owned())),
                _ => Err(TokenizerError::InvalidMetadata {
                    path: path.clone(),
                    reason: format!("merge {index} (`{merge}`) is not two tokens separated by one space"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .fuse_unk(false)
            .build()
            .map_err(library(format!("GGUF file `{}`: building the BPE model", path.display())))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let typed = |wanted: i64| {
            tokens.iter().zip(&types).filter(move |(_, &ty)| ty == wanted).map(|(token, _)| token.as_str())
        };
        let control: Vec<AddedToken> = typed(TOKEN_TYPE_CONTROL)
            .filter(|token| in_alphabet(token))
            .map(|token| AddedToken::from(token, true).normalized(false))
            .collect();
        let building = || format!("GGUF file `{}`: adding the special tokens", path.display());
        inner.add_special_tokens(control).map_err(library(building()))?;
        let user_defined: Vec<AddedToken> = typed(TOKEN_TYPE_USER_DEFINED)
            .filter(|token| inner.token_to_id(token).is_some())
            .map(|token| AddedToken::from(token, false).normalized(false))
            .collect();
        inner.add_tokens(user_defined).map_err(library(building()))?;
        // The named special tokens, when the token types did not already make them special.
        let named: Vec<AddedToken> = [bos, eos, unk, pad]
            .into_iter()
            .flatten()
            .map(|id| tokens[id as usize].as_str())
            .filter(|token| !inner.get_added_vocabulary().get_vocab().contains_key(*token))
            .map(|token| AddedToken::from(token, true).normalized(false))
            .collect();
        inner.add_special_tokens(named).map_err(library(building()))?;

        let post = post_processor(
            add_bos.then(|| token_of(tokens, bos)).flatten(),
            add_eos.then(|| token_of(tokens, eos)).flatten(),
        )
        .map_err(library(format!("GGUF file `{}`: building the post-processor", path.display())))?;
        inner.with_post_processor(Some(post));
        Ok(Tokenizer { inner, bos, eos, pad, unk })
    }

    /// Reads a Hugging Face `tokenizer.json`. It names no BOS, EOS, padding or unknown token: set
    /// them with [`Tokenizer::with_special_ids`] where a dataset or generation needs them.
    ///
    /// # Errors
    /// [`TokenizerError::Tokenizers`] naming the file when it cannot be read or parsed.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let path = path.as_ref();
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(library(format!("tokenizer file `{}`", path.display())))?;
        Ok(Tokenizer { inner, bos: None, eos: None, pad: None, unk: None })
    }

    /// The same tokenizer with these BOS, EOS and padding ids.
    ///
    /// # Errors
    /// [`TokenizerError::UnknownId`] for an id past the vocabulary.
    pub fn with_special_ids(
        mut self,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: Option<u32>,
    ) -> Result<Self, TokenizerError> {
        for id in [bos, eos, pad].into_iter().flatten() {
            self.check_id(id)?;
        }
        self.bos = bos;
        self.eos = eos;
        self.pad = pad;
        Ok(self)
    }

    fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        let vocab_size = self.vocab_size();
        if id as usize >= vocab_size || self.inner.id_to_token(id).is_none() {
            return Err(TokenizerError::UnknownId { id, vocab_size });
        }
        Ok(())
    }

    /// The ids of `text`; with `add_special_tokens`, the post-processor's BOS/EOS are added (for
    /// SmolLM2 none are). Special tokens written in the text (`<|im_start|>`) are always matched whole.
    ///
    /// # Errors
    /// [`TokenizerError::Tokenizers`] if the library fails.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.inner.encode(text, add_special_tokens).map_err(library("encoding"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; with `skip_special_tokens`, special tokens are left out.
    ///
    /// # Errors
    /// [`TokenizerError::UnknownId`] for an id past the vocabulary; [`TokenizerError::Tokenizers`]
    /// if the library fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        for &id in ids {
            self.check_id(id)?;
        }
        self.inner.decode(ids, skip_special_tokens).map_err(library("decoding"))
    }

    /// How many tokens the vocabulary has, added tokens included: the size of a model's
    /// embedding is at least this.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token (as the vocabulary spells it: `Ġthe` for " the" in a byte-level BPE).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token of an id, as the vocabulary spells it.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The beginning-of-sequence id, if known.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence id, if known.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The padding id, if known.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// The unknown-token id, if known.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// The tokenizer as a `tokenizer.json` document: saved with `std::fs::write`, it reads back
    /// with [`Tokenizer::from_file`]; its bytes identify the tokenizer (what a cache can hash).
    ///
    /// # Errors
    /// [`TokenizerError::Tokenizers`] if the library fails to serialise it.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner.to_string(false).map_err(library("serialising the tokenizer"))
    }

    /// The `tokenizers` library's tokenizer, for what this type does not offer (offsets, batches…).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn token_of(tokens: &[String], id: Option<u32>) -> Option<(String, u32)> {
    let id = id?;
    Some((tokens.get(id as usize)?.clone(), id))
}

/// `transformers`' post-processor: `[BOS] $A [EOS]` for one sequence, `[BOS] $A [EOS] [BOS] $B [EOS]`
/// (type id 1 for the second) for a pair, with BOS and EOS where the file asks for them.
fn post_processor(
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
) -> Result<TemplateProcessing, Box<dyn std::error::Error + Send + Sync>> {
    let around = |sequence: &str, type_id: u8| {
        let mut parts = Vec::new();
        if let Some((token, _)) = &bos {
            parts.push(format!("{token}:{type_id}"));
        }
        parts.push(format!("{sequence}:{type_id}"));
        if let Some((token, _)) = &eos {
            parts.push(format!("{token}:{type_id}"));
        }
        parts.join(" ")
    };
    let single = around("$A", 0);
    let pair = format!("{single} {}", around("$B", 1));
    let special: Vec<(String, u32)> = bos.iter().chain(eos.iter()).cloned().collect();
    Ok(TemplateProcessing::builder()
        .try_single(single)
        .map_err(|e| format!("single template: {e}"))?
        .try_pair(pair)
        .map_err(|e| format!("pair template: {e}"))?
        .special_tokens(special)
        .build()?)
}
