//! `distill::text::Tokenizer` gives the ids transformers gives (scripts/gen_text_tokenizer_reference.py):
//! from the tiny GGUF's metadata, from its `tokenizer.json`, and from SmolLM2-135M-Instruct's GGUF when
//! it is provisioned; decoding round-trips.

mod text_model;

use std::path::PathBuf;

use distill::text::gguf::GgufFile;
use distill::text::{Tokenizer, TokenizerError};
use serde_json::Value;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/text").join(name)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(data("tokenizer_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|id| id.as_u64().unwrap() as u32).collect()
}

/// Every reference text encodes to transformers' ids, with and without special tokens, and decodes
/// back to itself.
fn check_texts(tokenizer: &Tokenizer, cases: &Value, label: &str) {
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tokenizer.encode(text, true).unwrap(), ids(&case["ids"]), "{label}: {text:?}");
        let plain = tokenizer.encode(text, false).unwrap();
        assert_eq!(plain, ids(&case["ids_without_special"]), "{label}: {text:?} without special tokens");
        assert_eq!(tokenizer.decode(&plain, false).unwrap(), text, "{label}: {text:?} round trip");
        assert_eq!(case["decoded"].as_str().unwrap(), text, "{label}: transformers round-trips too");
    }
}

#[test]
fn tiny_gguf_tokenizer_equals_transformers() {
    let gguf = GgufFile::open(data("tiny.gguf")).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    check_texts(&tokenizer, &reference()["tiny"], "tiny.gguf");
    assert_eq!(tokenizer.vocab_size(), 384);
    assert_eq!(
        (tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id(), tokenizer.unk_id()),
        (Some(1), Some(2), Some(2), Some(0))
    );
    // add_bos_token is set in tiny.gguf: BOS leads every encoding with special tokens.
    assert_eq!(tokenizer.encode("", true).unwrap(), [1]);
    // Control tokens are special: kept whole, and left out when decoding with skip_special_tokens.
    let chat = tokenizer.encode("<|im_start|>user<|im_end|>", false).unwrap();
    assert_eq!(chat.first(), Some(&1));
    assert_eq!(chat.last(), Some(&2));
    assert_eq!(tokenizer.decode(&chat, true).unwrap(), "user");
    // A user-defined token is kept whole and is not special.
    let think = tokenizer.token_to_id("<think>").unwrap();
    assert_eq!(tokenizer.encode("<think>", false).unwrap(), [think]);
    assert_eq!(tokenizer.decode(&[think], true).unwrap(), "<think>");
}

#[test]
fn tokenizer_json_equals_the_gguf_tokenizer() {
    // transformers' tokenizer for tiny.gguf, saved as tokenizer.json.
    let tokenizer = Tokenizer::from_file(data("tiny_tokenizer.json")).unwrap();
    check_texts(&tokenizer, &reference()["tiny"], "tiny_tokenizer.json");
    assert_eq!(tokenizer.eos_id(), None);
    let tokenizer = tokenizer.with_special_ids(Some(1), Some(2), Some(2)).unwrap();
    assert_eq!(tokenizer.eos_id(), Some(2));

    // Ours, serialised and read back, is the same tokenizer.
    let ours = Tokenizer::from_gguf(&GgufFile::open(data("tiny.gguf")).unwrap()).unwrap();
    let path = std::env::temp_dir().join(format!("distill-tokenizer-{}.json", std::process::id()));
    std::fs::write(&path, ours.to_json().unwrap()).unwrap();
    let reread = Tokenizer::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    check_texts(&reread, &reference()["tiny"], "to_json");
}

#[test]
fn smollm2_tokenizer_equals_transformers() {
    let Some(path) = text_model::smollm2_or_skip("smollm2_tokenizer_equals_transformers") else { return };
    let reference = reference();
    let Some(smollm2) = reference.get("smollm2") else {
        panic!("tests/data/text/tokenizer_reference.json has no SmolLM2 ids: run `scripts/dev text-refs`")
    };
    let gguf = GgufFile::open(&path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap();
    check_texts(&tokenizer, &smollm2["texts"], "SmolLM2");
    assert_eq!(tokenizer.vocab_size(), 49152);
    assert_eq!((tokenizer.bos_id(), tokenizer.eos_id()), (Some(1), Some(2)));
    assert_eq!(tokenizer.token_to_id("<|im_start|>"), Some(1));
}

#[test]
fn errors_name_what_is_unsupported() {
    let bytes = std::fs::read(data("tiny.gguf")).unwrap();
    let replace = |from: &str, to: &str| {
        assert_eq!(from.len(), to.len());
        let mut bytes = bytes.clone();
        let mut needle = (from.len() as u64).to_le_bytes().to_vec();
        needle.extend(from.as_bytes());
        let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).unwrap() + 8;
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        GgufFile::from_bytes("edited.gguf", bytes).unwrap()
    };
    let error = Tokenizer::from_gguf(&replace("smollm", "llama3")).unwrap_err();
    assert!(matches!(&error, TokenizerError::Unsupported { what: "pre-tokenizer", .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "GGUF file `edited.gguf`: pre-tokenizer `llama3` is not supported; supported: default, gpt2, smollm"
    );
    let error = Tokenizer::from_gguf(&replace("gpt2", "bert")).unwrap_err();
    assert_eq!(error.to_string(), "GGUF file `edited.gguf`: tokenizer model `bert` is not supported; supported: gpt2");

    let value_types = GgufFile::open(data("value_types.gguf")).unwrap();
    let error = Tokenizer::from_gguf(&value_types).unwrap_err();
    assert!(error.to_string().contains("has no metadata key `tokenizer.ggml.model`"), "{error}");

    let tokenizer = Tokenizer::from_gguf(&GgufFile::open(data("tiny.gguf")).unwrap()).unwrap();
    let error = tokenizer.decode(&[5, 384], false).unwrap_err();
    assert!(matches!(error, TokenizerError::UnknownId { id: 384, vocab_size: 384 }), "{error:?}");
    let error = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(error.to_string().starts_with("tokenizer file `/nonexistent/tokenizer.json`: "), "{error}");
}
