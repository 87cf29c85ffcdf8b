//! `checksum::verify` checks every file this library writes with a checksum, whatever the dtypes
//! of its tensors.

use distill::cache::{IdWidth, TeacherHash, TokenCacheSpec, TokenCacheWriter, TokenEncoding};
use distill::{checksum, DistillError};
use tch::{Device, Kind, Tensor};

use crate::{flip_bytes, temp_dir};

#[test]
fn verify_checks_a_token_cache_shard_of_16_bit_ids() {
    let dir = temp_dir("verify-token-shard");
    let (sequences, seq_len, vocab) = (6, 5, 50);
    let spec = TokenCacheSpec {
        teacher: TeacherHash::from_text("sha256:a-teacher"),
        tokenizer: TokenCacheSpec::tokenizer_identity(b"a tokenizer"),
        dataset: "a dataset".to_owned(),
        num_sequences: sequences,
        seq_len,
        vocab,
        encoding: TokenEncoding::top_k(4, 1.0),
    };
    assert_eq!(IdWidth::for_vocab(vocab), IdWidth::U16);
    TokenCacheWriter::new(&dir, spec)
        .write(3, |ids| {
            let logits = Tensor::arange(ids.len() as i64 * seq_len * vocab, (Kind::Float, Device::Cpu))
                .view([ids.len() as i64, seq_len, vocab])
                .sin();
            Ok((logits, None))
        })
        .unwrap();
    let shard = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "safetensors"))
        .expect("a shard");
    assert!(std::fs::read(&shard).unwrap().windows(5).any(|w| w == b"\"U16\""), "the shard holds U16 ids");
    checksum::verify(&shard).unwrap();
    flip_bytes(&shard, 3, 1);
    let error = checksum::verify(&shard).unwrap_err();
    assert!(
        matches!(&error, DistillError::Corrupt { file, reason } if file == &shard.display().to_string() && reason.contains("checksum")),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
