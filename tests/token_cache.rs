//! The token-level teacher cache: what it stores equals the live encodings of the teacher's logits,
//! the KD losses read from it equal the live ones bit for bit in f32, its storage is 4·k + 5 bytes
//! per token with 16-bit ids, and damaged, mismatched, interrupted and data-parallel uses behave.

use std::path::{Path, PathBuf};

use distill::cache::{
    CacheError, IdWidth, Precision, TeacherHash, TokenCache, TokenCacheSpec, TokenCacheWriter, TokenEncoding,
};
use distill::criterion::{Criterion, SampledKl, SampledLogits, TokenCriterion, TokenReduction, TopKKl, TopKTail};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

const SEQUENCES: usize = 10;
const T: i64 = 12;
const V: i64 = 97;
const K: i64 = 8;
const TEMPERATURE: f64 = 2.0;

/// SplitMix64, as the library draws with (reimplemented: the sampled encoding's seed rule is
/// part of the cache's contract).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Values uniform in [-1, 1) from `seed`, independent of libtorch's global generator.
fn uniform(seed: u64, count: usize) -> Vec<f32> {
    let mut state = seed;
    (0..count).map(|_| ((splitmix(&mut state) >> 40) as f32 / (1u64 << 23) as f32) - 1.0).collect()
}

/// The teacher: logits `[B, T, vocab]` that depend only on each sequence's id, with a few tokens
/// far ahead of the others (a small tail) and the rest spread.
fn teacher_logits_v(ids: &[usize], vocab: i64) -> Tensor {
    let rows: Vec<Tensor> = ids
        .iter()
        .map(|&id| {
            let values = uniform(1000 + id as u64, (T * vocab) as usize);
            let logits = Tensor::from_slice(&values).view([T, vocab]) * 4.0;
            // A peak per position: sharp distributions, as a language model's often are.
            let peak = (id as i64 * 7) % vocab;
            let _ = logits.narrow(1, peak, 1).g_add_scalar_(12.0);
            logits
        })
        .collect();
    Tensor::stack(&rows, 0)
}

fn teacher_logits(ids: &[usize]) -> Tensor {
    teacher_logits_v(ids, V)
}

/// Sequence `id` has `T − id % 4` tokens, then padding (sequences 0, 4, 8 are full).
fn mask(ids: &[usize]) -> Tensor {
    let rows: Vec<i64> = ids.iter().flat_map(|&id| (0..T).map(move |t| i64::from(t < T - (id % 4) as i64))).collect();
    Tensor::from_slice(&rows).view([ids.len() as i64, T])
}

fn spec(encoding: TokenEncoding) -> TokenCacheSpec {
    let sequences: Vec<Vec<u32>> = (0..SEQUENCES as u32).map(|s| (0..T as u32).map(|t| s * 31 + t).collect()).collect();
    TokenCacheSpec {
        teacher: TeacherHash::from_text("sha256:the-teacher"),
        tokenizer: TokenCacheSpec::tokenizer_identity(br#"{"model": {"type": "BPE"}}"#),
        dataset: TokenCacheSpec::dataset_identity(&sequences),
        num_sequences: SEQUENCES,
        seq_len: T,
        vocab: V,
        encoding,
    }
}

fn top_k_f32() -> TokenEncoding {
    TokenEncoding::top_k(K, TEMPERATURE).with_values(Precision::F32)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-token-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Writes `spec` into `dir` in `shards` shards, batches of 3.
fn write(dir: &Path, spec: &TokenCacheSpec, shards: usize) -> distill::cache::TokenWriteReport {
    TokenCacheWriter::new(dir, spec.clone())
        .shards(shards)
        .write(3, |ids| Ok((teacher_logits(ids), Some(mask(ids)))))
        .unwrap()
}

fn bits(loss: &Tensor) -> u32 {
    (loss.double_value(&[]) as f32).to_bits()
}

/// The student's logits for a batch, with gradients.
fn student(ids: &[usize]) -> Tensor {
    let values = uniform(77 + ids[0] as u64, ids.len() * (T * V) as usize);
    (Tensor::from_slice(&values).view([ids.len() as i64, T, V]) * 3.0).set_requires_grad(true)
}

// ---- what is stored equals the live encoding ------------------------------------------------

/// `t` (f32) as a cache of `values` stores it: rounded once to that precision, read back as f32.
fn rounded_to(values: Precision, t: &Tensor) -> Tensor {
    let kind = match values {
        Precision::F32 => return t.shallow_clone(),
        Precision::F16 => Kind::Half,
        Precision::Bf16 => Kind::BFloat16,
        other => panic!("a precision this test does not know: {other:?}"),
    };
    t.to_kind(kind).to_kind(Kind::Float)
}

#[test]
fn stored_top_k_equals_the_live_top_k_of_the_teacher_logits() {
    for values in [Precision::F32, Precision::F16, Precision::Bf16] {
        let dir = temp_dir(&format!("live-top-k-{values:?}"));
        let spec = spec(TokenEncoding::top_k(K, TEMPERATURE).with_values(values));
        write(&dir, &spec, 2);
        let cache = TokenCache::open(&dir).unwrap();
        cache.check(&spec).unwrap();
        let ids = [7usize, 2, 9, 4];
        let batch = cache.batch(&ids).unwrap();
        assert_eq!(batch.sequence_ids(), ids);
        let live = TopKTail::f_encode(&teacher_logits(&ids), K, TEMPERATURE).unwrap();
        let stored = batch.top_k().unwrap();
        let valid = mask(&ids).ne(0);
        assert!(batch.valid().equal(&valid));
        let at_valid = |t: &Tensor| t.masked_select(&valid.unsqueeze(-1).expand_as(t));
        assert_eq!(stored.ids.kind(), Kind::Int64);
        assert!(at_valid(&stored.ids).equal(&at_valid(&live.ids)), "{values:?}: ids");
        // One f16 (bf16) rounding of the live value, nothing else.
        let live_log_probs = rounded_to(values, &live.log_probs);
        assert_eq!(stored.log_probs.kind(), Kind::Float);
        assert!(at_valid(&stored.log_probs).equal(&at_valid(&live_log_probs)), "{values:?}: log-probabilities");
        // The tail is the f32 value computed from the excluded logits, whatever the values' precision.
        assert!(stored.tail.masked_select(&valid).equal(&live.tail.masked_select(&valid)), "{values:?}: tail");
        assert!(live.tail.masked_select(&valid).exp().min().double_value(&[]) > 0.0, "the tails are not empty");
        // Padding: a point mass on token 0.
        let padding = valid.logical_not();
        let pad_ids = stored.ids.masked_select(&padding.unsqueeze(-1).expand_as(&stored.ids)).view([-1, K]);
        assert!(pad_ids.get(0).equal(&Tensor::arange(K, (Kind::Int64, Device::Cpu))));
        let pad_log_probs = stored.log_probs.masked_select(&padding.unsqueeze(-1).expand_as(&stored.log_probs));
        assert_eq!(pad_log_probs.view([-1, K]).exp().sum_dim_intlist(-1, false, None).min().double_value(&[]), 1.0);
        assert!(stored.tail.masked_select(&padding).isneginf().all().int64_value(&[]) == 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_cached_kd_loss_equals_the_live_top_k_kd_loss_bit_for_bit_in_f32() {
    for values in [Precision::F32, Precision::F16, Precision::Bf16] {
        let dir = temp_dir(&format!("bit-for-bit-{values:?}"));
        write(&dir, &spec(TokenEncoding::top_k(K, TEMPERATURE).with_values(values)), 3);
        let cache = TokenCache::open(&dir).unwrap();
        cache.check_temperature(TEMPERATURE).unwrap();
        for ids in [vec![7usize, 2, 9], vec![0, 5, 3, 8, 1]] {
            let batch = cache.batch(&ids).unwrap();
            let mut live = TopKTail::f_encode(&teacher_logits(&ids), K, TEMPERATURE).unwrap();
            // The live encoding at the cache's precision: its log-probabilities rounded to f16 (bf16).
            live.log_probs = rounded_to(values, &live.log_probs);
            let valid = mask(&ids);
            for reduction in [TokenReduction::Token, TokenReduction::Sequence] {
                let kd = TopKKl::new(TEMPERATURE).with_reduction(reduction);
                let (s_live, s_cached) = (student(&ids), student(&ids));
                let live_loss = kd.f_loss_masked(&s_live, &live, Some(&valid)).unwrap();
                let cached_loss = kd.f_loss_masked(&s_cached, batch.top_k().unwrap(), Some(batch.valid())).unwrap();
                assert_eq!(bits(&cached_loss), bits(&live_loss), "{values:?} {reduction:?}");
                live_loss.backward();
                cached_loss.backward();
                assert!(s_cached.grad().equal(&s_live.grad()), "{values:?} {reduction:?}: gradients");
            }
            // As a criterion of a pair: the packed teacher tensor and token labels (−100 at padding).
            let labels = mask(&ids).ones_like().where_scalarother(&mask(&ids).ne(0), -100);
            let s = student(&ids);
            let live_packed = live.f_pack().unwrap();
            let a = TopKKl::new(TEMPERATURE).f_loss_with_targets(&s, &live_packed, Some(&labels)).unwrap();
            let b = TopKKl::new(TEMPERATURE).f_loss_with_targets(&s, &batch.packed().unwrap(), Some(&labels)).unwrap();
            assert_eq!(bits(&a), bits(&b), "{values:?}: packed");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn the_sampled_encoding_equals_the_live_one_of_each_sequence_and_its_loss_too() {
    let dir = temp_dir("sampled");
    let seed = 42;
    let encoding = TokenEncoding::sampled(6, TEMPERATURE, 1.5, seed).with_values(Precision::F32);
    write(&dir, &spec(encoding), 2);
    let cache = TokenCache::open(&dir).unwrap();
    let ids = [9usize, 0, 6];
    let batch = cache.batch(&ids).unwrap();
    assert!(matches!(batch.top_k(), Err(DistillError::CacheMismatch { .. })));
    let stored = batch.sampled().unwrap();
    // Sequence s is encoded alone, seeded by the first SplitMix64 draw from seed ^ s·0x9e3779b97f4a7c15.
    let live: Vec<SampledLogits> = ids
        .iter()
        .map(|&id| {
            let mut state = seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let sequence_seed = splitmix(&mut state);
            SampledLogits::f_encode(&teacher_logits(&[id]).get(0), 6, TEMPERATURE, 1.5, sequence_seed).unwrap()
        })
        .collect();
    let stack = |f: fn(&SampledLogits) -> &Tensor| Tensor::stack(&live.iter().map(f).collect::<Vec<_>>(), 0);
    let live = SampledLogits {
        ids: stack(|s| &s.ids),
        log_probs: stack(|s| &s.log_probs),
        weights: stack(|s| &s.weights),
        temperature: Some(TEMPERATURE),
    };
    let valid = mask(&ids).ne(0);
    let at_valid = |t: &Tensor| t.masked_select(&valid.unsqueeze(-1).expand_as(t));
    assert!(at_valid(&stored.ids).equal(&at_valid(&live.ids)));
    assert!(at_valid(&stored.log_probs).equal(&at_valid(&live.log_probs)));
    assert!(at_valid(&stored.weights).equal(&at_valid(&live.weights)));
    let s = student(&ids);
    let a = SampledKl::new(TEMPERATURE).f_loss_masked(&s, &live, Some(&valid)).unwrap();
    let b = SampledKl::new(TEMPERATURE).f_loss_masked(&s, stored, Some(batch.valid())).unwrap();
    assert_eq!(bits(&a), bits(&b));
    // The packed form is what a pair with `SampledKl` reads.
    assert_eq!(batch.packed().unwrap().size(), [3, T, 18]);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- storage ----------------------------------------------------------------------------------

#[test]
fn a_token_costs_4k_plus_5_bytes_with_16_bit_ids_and_the_shards_hold_exactly_that() {
    // The arithmetic: k u16 ids + k f16 log-probabilities + an f32 tail + a validity byte.
    assert_eq!(TokenEncoding::top_k(64, 1.0).bytes_per_token(IdWidth::U16), 4 * 64 + 5);
    assert!(TokenEncoding::top_k(64, 1.0).bytes_per_token(IdWidth::U16) <= 4 * 64 + 8);
    assert_eq!(TokenEncoding::top_k(64, 1.0).bytes_per_token(IdWidth::I32), 6 * 64 + 5);
    assert_eq!(TokenEncoding::top_k(64, 1.0).with_values(Precision::F32).bytes_per_token(IdWidth::U16), 6 * 64 + 5);
    assert_eq!(TokenEncoding::sampled(32, 1.0, 1.0, 0).bytes_per_token(IdWidth::U16), 6 * 32 + 1);
    assert_eq!(IdWidth::for_vocab(49_152), IdWidth::U16);
    assert_eq!(IdWidth::for_vocab(65_536), IdWidth::U16);
    assert_eq!(IdWidth::for_vocab(65_537), IdWidth::I32);

    // The files: each shard is its safetensors header plus exactly that per token.
    let dir = temp_dir("storage");
    let spec = spec(TokenEncoding::top_k(K, TEMPERATURE));
    let report = write(&dir, &spec, 2);
    assert_eq!(report.manifest.bytes_per_token(), 4 * K as usize + 5);
    assert_eq!(TokenCacheWriter::new(&dir, spec.clone()).manifest().bytes_per_token(), 4 * K as usize + 5);
    for shard in &report.manifest.shards {
        let bytes = std::fs::read(dir.join(&shard.file)).unwrap();
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let tokens = (shard.end - shard.start) * T as usize;
        assert_eq!(bytes.len() - header, tokens * (4 * K as usize + 5), "{}", shard.file);
    }
    assert_eq!(TokenCache::open(&dir).unwrap().manifest().bytes_per_token(), 4 * K as usize + 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_are_16_bit_up_to_a_vocabulary_of_65536_and_32_bit_beyond() {
    for (vocab, width) in [(65_536i64, IdWidth::U16), (70_000, IdWidth::I32)] {
        let dir = temp_dir(&format!("vocab-{vocab}"));
        let mut spec = spec(TokenEncoding::top_k(4, 1.0).with_values(Precision::F32));
        spec.num_sequences = 2;
        spec.vocab = vocab;
        let logits = |ids: &[usize]| {
            let logits = teacher_logits_v(ids, vocab);
            // The largest ids of the vocabulary are the most probable.
            let _ = logits.narrow(2, vocab - 2, 2).g_add_scalar_(40.0);
            logits
        };
        let report = TokenCacheWriter::new(&dir, spec.clone()).write(2, |ids| Ok((logits(ids), None))).unwrap();
        assert_eq!(report.manifest.ids, width);
        let batch = TokenCache::open(&dir).unwrap().batch(&[1, 0]).unwrap();
        let live = TopKTail::f_encode(&logits(&[1, 0]), 4, 1.0).unwrap();
        assert!(batch.top_k().unwrap().ids.equal(&live.ids), "{vocab}");
        assert_eq!(batch.top_k().unwrap().ids.max().int64_value(&[]), vocab - 1);
        assert!(batch.valid().all().int64_value(&[]) == 1, "no mask: every token valid");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

// ---- identities and mismatches --------------------------------------------------------------

#[test]
fn identities_hash_the_tokenizer_bytes_and_the_sequences_token_ids() {
    let a = TokenCacheSpec::tokenizer_identity(b"{}");
    assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
    assert_ne!(a, TokenCacheSpec::tokenizer_identity(b"{ }"));
    let path = std::env::temp_dir().join(format!("distill-tokenizer-{}.json", std::process::id()));
    std::fs::write(&path, b"{}").unwrap();
    assert_eq!(TokenCacheSpec::tokenizer_file_identity(&path).unwrap(), a);
    std::fs::remove_file(&path).unwrap();
    let whole = TokenCacheSpec::dataset_identity([vec![1u32, 2], vec![3]]);
    assert_eq!(whole, TokenCacheSpec::dataset_identity([[1u32, 2].as_slice(), &[3]]));
    assert_ne!(whole, TokenCacheSpec::dataset_identity([vec![1u32], vec![2, 3]]), "sequence boundaries count");
}

#[test]
fn a_cache_of_another_teacher_tokenizer_dataset_shape_or_encoding_is_a_mismatch_naming_it() {
    let dir = temp_dir("mismatch");
    let spec = spec(top_k_f32());
    write(&dir, &spec, 2);
    let cache = TokenCache::open(&dir).unwrap();
    type Change = Box<dyn Fn(&mut TokenCacheSpec)>;
    let cases: Vec<(&str, Change)> = vec![
        ("the teacher weights' hash", Box::new(|s| s.teacher = TeacherHash::from_text("sha256:other"))),
        ("the tokenizer (its identity)", Box::new(|s| s.tokenizer = TokenCacheSpec::tokenizer_identity(b"x"))),
        ("the token dataset (its identity)", Box::new(|s| s.dataset = "other-dataset".into())),
        ("the number of sequences", Box::new(|s| s.num_sequences = 11)),
        ("the sequence length", Box::new(|s| s.seq_len = 256)),
        ("the vocabulary size", Box::new(|s| s.vocab = 49_152)),
        ("the encoding", Box::new(|s| s.encoding = TokenEncoding::top_k(K, 1.0).with_values(Precision::F32))),
    ];
    for (what, change) in cases {
        let mut other = spec.clone();
        change(&mut other);
        let error = cache.check(&other).unwrap_err();
        assert!(matches!(&error, DistillError::CacheMismatch { what: w, .. } if w == what), "{what}: {error}");
        // A writer with that spec refuses to add to the cache, and writes nothing.
        let before = std::fs::read(dir.join("token-manifest.json")).unwrap();
        let error = TokenCacheWriter::new(&dir, other)
            .shards(2)
            .write(3, |_| -> distill::Result<Tensor> { unreachable!() })
            .unwrap_err();
        assert!(matches!(&error, DistillError::CacheMismatch { what: w, .. } if w == what), "{what}: {error}");
        assert_eq!(std::fs::read(dir.join("token-manifest.json")).unwrap(), before);
    }
    let error = TokenCacheWriter::new(&dir, spec.clone()).shards(3).pending().unwrap_err();
    assert!(error.to_string().contains("the number of shards is 2 in the cache, 3 here"), "{error}");
    let error = cache.check_temperature(1.0).unwrap_err();
    assert!(error.to_string().contains("temperature"), "{error}");
    assert!(matches!(cache.batch(&[0]).unwrap().sampled(), Err(DistillError::CacheMismatch { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- damaged and incomplete caches ----------------------------------------------------------

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn truncated_edited_incomplete_and_foreign_caches_are_errors_naming_the_file() {
    let dir = temp_dir("damaged");
    let spec = spec(TokenEncoding::top_k(K, TEMPERATURE));
    write(&dir, &spec, 2);
    let shard1 = dir.join("shard-00001-of-00002.safetensors");
    let original = std::fs::read(&shard1).unwrap();
    let names_shard1 = |error: &DistillError| matches!(error, DistillError::Corrupt { file, .. } if file.ends_with("shard-00001-of-00002.safetensors"));

    // Edited bytes: found by the checksum when a batch first reads the shard.
    flip_last_byte(&shard1);
    let cache = TokenCache::open(&dir).unwrap();
    cache.batch(&[0, 4]).unwrap();
    let error = cache.batch(&[0, 7]).unwrap_err();
    assert!(names_shard1(&error) && error.to_string().contains("checksum"), "{error}");
    assert!(names_shard1(&cache.verify().unwrap_err()));
    std::fs::write(&shard1, &original).unwrap();

    // Truncated: the header no longer accounts for the file.
    std::fs::write(&shard1, &original[..original.len() - 10]).unwrap();
    let error = TokenCache::open(&dir).unwrap_err();
    assert!(names_shard1(&error), "{error}");
    std::fs::write(&shard1, &original).unwrap();

    // Truncated while a job reads it.
    let cache = TokenCache::open(&dir).unwrap();
    cache.batch(&[6]).unwrap();
    std::fs::OpenOptions::new().write(true).open(&shard1).unwrap().set_len(100).unwrap();
    let error = cache.batch(&[6]).unwrap_err();
    assert!(names_shard1(&error) && error.to_string().contains("length changed"), "{error}");
    std::fs::write(&shard1, &original).unwrap();

    // An edited manifest: the shards were written for another one.
    let manifest = std::fs::read_to_string(dir.join("token-manifest.json")).unwrap();
    std::fs::write(dir.join("token-manifest.json"), manifest.replace(&spec.dataset, "edited")).unwrap();
    let error = TokenCache::open(&dir).unwrap_err();
    assert!(error.to_string().contains("edited after the cache was written"), "{error}");
    std::fs::write(dir.join("token-manifest.json"), &manifest).unwrap();

    // A missing shard: the writer did not finish it.
    std::fs::remove_file(&shard1).unwrap();
    let error = TokenCache::open(&dir).unwrap_err();
    assert!(matches!(error, DistillError::Cache(CacheError::Incomplete { shard: 1, shards: 2, .. })), "{error}");
    std::fs::write(&shard1, &original).unwrap();
    TokenCache::open(&dir).unwrap().verify().unwrap();

    // Ids out of range; the wrong kind of cache.
    let error = TokenCache::open(&dir).unwrap().batch(&[10]).unwrap_err();
    assert!(error.to_string().contains("sequence 10 is not in the token cache"), "{error}");
    let error = distill::cache::TeacherCache::open(&dir).unwrap_err();
    assert!(error.to_string().contains("TokenCache::open"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- interrupted and resumed writes ---------------------------------------------------------

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_write_interrupted_mid_shard_resumes_with_the_missing_shard_and_gives_the_same_cache() {
    let spec = spec(TokenEncoding::top_k(K, TEMPERATURE));
    let reference = temp_dir("uninterrupted");
    write(&reference, &spec, 2);
    let dir = temp_dir("interrupted");
    // The teacher fails on the second batch of shard 1 (sequences 5..10, batches of 3).
    let error = TokenCacheWriter::new(&dir, spec.clone())
        .shards(2)
        .write(3, |ids| {
            if ids.contains(&8) {
                let gone = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the teacher's machine went away");
                return Err(DistillError::Io { action: "read", path: "the teacher".into(), source: gone });
            }
            Ok((teacher_logits(ids), Some(mask(ids))))
        })
        .unwrap_err();
    assert!(error.to_string().contains("went away"), "{error}");
    let names: Vec<String> = files(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["shard-00000-of-00002.safetensors", "token-manifest.json"], "no part of shard 1 is left");
    let error = TokenCache::open(&dir).unwrap_err();
    assert!(matches!(error, DistillError::Cache(CacheError::Incomplete { shard: 1, .. })), "{error}");
    // What a writer killed while writing shard 1 leaves behind: its temporary file.
    std::fs::write(dir.join("shard-00001-of-00002.safetensors.tmp-999999-0"), b"partial").unwrap();
    let writer = TokenCacheWriter::new(&dir, spec.clone()).shards(2);
    assert_eq!(writer.pending().unwrap(), [1]);
    let report = writer.write(3, |ids| Ok((teacher_logits(ids), Some(mask(ids))))).unwrap();
    assert_eq!((report.written, report.skipped), (vec![1], vec![0]));
    assert!(files(&dir) == files(&reference), "the resumed cache differs from an uninterrupted one");
    assert!(writer.pending().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&reference);
}

#[test]
fn a_shard_truncated_after_it_was_written_is_written_again_and_an_image_cache_folder_is_refused() {
    let spec = spec(TokenEncoding::top_k(K, TEMPERATURE));
    let reference = temp_dir("written-once");
    write(&reference, &spec, 2);
    let dir = temp_dir("truncated-after");
    write(&dir, &spec, 2);
    let shard1 = dir.join("shard-00001-of-00002.safetensors");
    let whole = std::fs::read(&shard1).unwrap();
    std::fs::write(&shard1, &whole[..whole.len() / 2]).unwrap();
    let report = write(&dir, &spec, 2);
    assert_eq!((report.written, report.skipped), (vec![1], vec![0]));
    assert!(files(&dir) == files(&reference), "the repaired cache differs from the one written in one go");
    TokenCache::open(&dir).unwrap().verify().unwrap();

    // A folder holding an image teacher cache, whose shards are named alike: refused, unchanged.
    let images = temp_dir("holds-images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("manifest.json"), b"{}").unwrap();
    std::fs::write(images.join("shard-00000-of-00002.safetensors"), b"an image shard").unwrap();
    let before = files(&images);
    let error = TokenCacheWriter::new(&images, spec.clone())
        .shards(2)
        .write(3, |ids| Ok((teacher_logits(ids), Some(mask(ids)))))
        .unwrap_err();
    assert!(error.to_string().contains("it holds an image teacher cache (`manifest.json`)"), "{error}");
    assert!(files(&images) == before, "the folder changed");
    for dir in [&dir, &reference, &images] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn nan_logits_at_padding_are_stored_neutral_and_at_a_valid_token_refused() {
    let spec = spec(TokenEncoding::top_k(K, TEMPERATURE));
    let broken = |ids: &[usize], valid: bool| {
        let logits = teacher_logits(ids);
        let mask = mask(ids);
        // NaN at the first position whose mask says `valid`.
        let flat = logits.reshape([-1, V]);
        if let Some(at) = Vec::<i64>::try_from(mask.reshape([-1])).unwrap().iter().position(|&m| (m != 0) == valid) {
            let _ = flat.get(at as i64).fill_(f64::NAN);
        }
        (flat.reshape(logits.size()), Some(mask))
    };
    let dir = temp_dir("nan-padding");
    let reference = temp_dir("nan-padding-reference");
    write(&reference, &spec, 2);
    TokenCacheWriter::new(&dir, spec.clone()).shards(2).write(3, |ids| Ok(broken(ids, false))).unwrap();
    assert!(files(&dir) == files(&reference), "NaN at padding changed what is stored");
    let other = temp_dir("nan-valid");
    let err = TokenCacheWriter::new(&other, spec.clone()).shards(2).write(3, |ids| Ok(broken(ids, true))).unwrap_err();
    assert!(err.to_string().contains("have no distribution"), "{err}");
    for dir in [&dir, &reference, &other] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_shard_writer_takes_its_sequences_in_order_and_only_complete_shards_are_published() {
    let dir = temp_dir("shard-writer");
    let spec = spec(top_k_f32());
    let writer = TokenCacheWriter::new(&dir, spec.clone()).shards(2);
    let mut shard = writer.open_shard(1).unwrap().unwrap();
    assert_eq!(shard.sequences(), 5..10);
    let error = shard.push(&[6, 7], teacher_logits(&[6, 7])).unwrap_err();
    assert!(error.to_string().contains("the next are 5.."), "{error}");
    let error = shard.push(&[5], teacher_logits(&[5, 6])).unwrap_err();
    assert!(error.to_string().contains("must be [1, 12, 97]"), "{error}");
    let error = shard.push(&[5], (teacher_logits(&[5]), Some(mask(&[5, 6])))).unwrap_err();
    assert!(error.to_string().contains("token mask must be [1, 12]"), "{error}");
    // A second writer of the same shard is refused while the first holds it.
    let error = writer.open_shard(1).unwrap_err();
    assert!(error.to_string().contains("another writer is writing shard 1"), "{error}");
    shard.push(&[5, 6, 7], (teacher_logits(&[5, 6, 7]), Some(mask(&[5, 6, 7])))).unwrap();
    assert_eq!(shard.next_sequence(), 8);
    let error = shard.finish().unwrap_err();
    assert!(error.to_string().contains("only 5..8 were pushed"), "{error}");
    assert!(!dir.join("shard-00001-of-00002.safetensors").exists());
    // Written by hand, in two processes' worth of calls: the same cache as `write`.
    for index in writer.pending().unwrap() {
        let mut shard = writer.open_shard(index).unwrap().unwrap();
        for id in shard.sequences() {
            shard.push(&[id], (teacher_logits(&[id]), Some(mask(&[id])))).unwrap();
        }
        shard.finish().unwrap();
    }
    assert!(writer.open_shard(0).unwrap().is_none(), "complete");
    let reference = temp_dir("shard-writer-reference");
    write(&reference, &spec, 2);
    assert!(files(&dir) == files(&reference), "pushing one sequence at a time gives the same cache");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&reference);
}

// ---- data-parallel ranks and prefetching ----------------------------------------------------

#[test]
fn data_parallel_ranks_read_only_their_own_shards() {
    let dir = temp_dir("ranks");
    write(&dir, &spec(top_k_f32()), 4); // sequences 0..2, 2..5, 5..7, 7..10
    let whole = TokenCache::open(&dir).unwrap();
    let rank0 = TokenCache::open_rank(&dir, 0, 2).unwrap();
    let rank1 = TokenCache::open_rank(&dir, 1, 2).unwrap();
    assert_eq!((rank0.sequences(), rank1.sequences(), whole.sequences()), (0..5, 5..10, 0..10));
    assert_eq!(rank1.rank(), Some((1, 2)));
    let a = rank1.batch(&[9, 5]).unwrap();
    let b = whole.batch(&[9, 5]).unwrap();
    assert!(a.top_k().unwrap().log_probs.equal(&b.top_k().unwrap().log_probs));
    let error = rank0.batch(&[3, 6]).unwrap_err();
    assert!(error.to_string().contains("not read by rank 0 of 2, which reads sequences 0..5"), "{error}");
    // Each rank's epoch: its own sequences, shuffled, as many batches as the other rank's.
    for epoch in 0..3 {
        let (b0, b1) = (rank0.epoch_batches(2, 7, epoch).unwrap(), rank1.epoch_batches(2, 7, epoch).unwrap());
        assert_eq!(b0.len(), b1.len());
        let mut seen: Vec<usize> = b1.concat();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (5..10).collect::<Vec<_>>());
        assert!(b0.concat().iter().all(|id| (0..5).contains(id)));
    }
    // A rank needs only its own shards on its machine.
    std::fs::remove_file(dir.join("shard-00000-of-00004.safetensors")).unwrap();
    std::fs::remove_file(dir.join("shard-00001-of-00004.safetensors")).unwrap();
    TokenCache::open_rank(&dir, 1, 2).unwrap().batch(&[7]).unwrap();
    assert!(matches!(TokenCache::open(&dir), Err(DistillError::Cache(CacheError::Incomplete { shard: 0, .. }))));
    let error = TokenCache::open_rank(&dir, 0, 3).unwrap_err();
    assert!(error.to_string().contains("4 shards, which do not split evenly over 3 ranks"), "{error}");
    assert!(TokenCache::open_rank(&dir, 2, 2).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prefetched_token_batches_equal_direct_batches_in_order() {
    let dir = temp_dir("prefetch");
    write(&dir, &spec(TokenEncoding::top_k(K, TEMPERATURE)), 3);
    let cache = TokenCache::open(&dir).unwrap().with_resident_limit(0);
    let batches = cache.epoch_batches(3, 1, 0).unwrap();
    assert_eq!(batches.concat().len(), SEQUENCES);
    let prefetched: Vec<_> = cache.prefetch(batches.clone(), 2).collect();
    assert_eq!(prefetched.len(), batches.len());
    for (batch, ids) in prefetched.into_iter().zip(&batches) {
        let batch = batch.unwrap();
        let direct = cache.batch(ids).unwrap();
        assert_eq!(batch.sequence_ids(), ids.as_slice());
        assert!(batch.top_k().unwrap().log_probs.equal(&direct.top_k().unwrap().log_probs));
        assert!(batch.top_k().unwrap().tail.equal(&direct.top_k().unwrap().tail));
        assert!(batch.valid().equal(direct.valid()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- verification on demand, empty manifests, concurrent writers -----------------------------

#[test]
fn verify_checks_the_shards_again_even_after_a_batch_verified_them() {
    let dir = temp_dir("verify-again");
    let spec = spec(TokenEncoding::top_k(K, TEMPERATURE));
    write(&dir, &spec, 2);
    let shard1 = dir.join("shard-00001-of-00002.safetensors");
    let cache = TokenCache::open(&dir).unwrap();
    // A batch of shard 1 runs its checksum pass; `verify` passes while the shard is intact.
    cache.batch(&[6]).unwrap();
    cache.verify().unwrap();
    // Damaged afterwards: `verify` looks at the shard again and says so.
    flip_last_byte(&shard1);
    let error = cache.verify().unwrap_err();
    assert!(
        matches!(&error, DistillError::Corrupt { file, .. } if file.ends_with("shard-00001-of-00002.safetensors")),
        "{error}"
    );
    // And a batch of that shard is refused from then on.
    assert!(cache.batch(&[6]).is_err());
    cache.batch(&[1]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_manifest_of_no_sequences_is_an_error_for_every_reader_not_a_panic() {
    let dir = temp_dir("no-sequences");
    let spec = spec(TokenEncoding::top_k(K, TEMPERATURE));
    write(&dir, &spec, 2);
    let path = dir.join("token-manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["num_sequences"] = 0.into();
    manifest["shards"] = serde_json::Value::Array(Vec::new());
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let errors = [
        TokenCache::open(&dir).map(|_| ()).unwrap_err(),
        TokenCache::open_rank(&dir, 0, 1).map(|_| ()).unwrap_err(),
        TokenCache::open_rank(&dir, 1, 2).map(|_| ()).unwrap_err(),
    ];
    for error in errors {
        assert!(
            matches!(&error, DistillError::Cache(CacheError::File { path, .. }) if path.ends_with("token-manifest.json"))
        );
        assert!(error.to_string().contains("it holds 0 sequences"), "{error}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_writers_of_different_specs_never_both_publish_a_manifest() {
    // Each round, writers of three specs start together on an empty directory. The first manifest
    // published stands: its writer goes on, the others are told the cache is another one.
    for round in 0..8 {
        let dir = temp_dir(&format!("concurrent-specs-{round}"));
        let specs: Vec<TokenCacheSpec> = (0..3)
            .map(|i| TokenCacheSpec { dataset: format!("dataset-{i}"), ..spec(TokenEncoding::top_k(K, TEMPERATURE)) })
            .collect();
        let start = std::sync::Barrier::new(specs.len());
        let outcomes: Vec<Result<Vec<usize>, DistillError>> = std::thread::scope(|scope| {
            let threads: Vec<_> = specs
                .iter()
                .map(|spec| {
                    let (dir, start) = (&dir, &start);
                    scope.spawn(move || {
                        start.wait();
                        TokenCacheWriter::new(dir, spec.clone()).shards(2).pending()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let published = std::fs::read_to_string(dir.join("token-manifest.json")).unwrap();
        let winners: Vec<usize> = (0..specs.len()).filter(|&i| outcomes[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer goes on: {outcomes:?}");
        assert!(published.contains(&format!("\"dataset-{}\"", winners[0])), "round {round}: {published}");
        for (i, outcome) in outcomes.iter().enumerate().filter(|(i, _)| *i != winners[0]) {
            let error = outcome.as_ref().unwrap_err();
            assert!(
                matches!(error, DistillError::CacheMismatch { what, .. } if what.contains("dataset")),
                "round {round}, writer {i}: {error}"
            );
        }
        // Nothing but the manifest: no temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "round {round}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
