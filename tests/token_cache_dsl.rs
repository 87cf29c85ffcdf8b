//! A language-model distillation from a token cache through every front end: `distill!` with the
//! cache as the teacher (`for LlamaForCausalLM => TokenCache`), `Mapping` and a config. The loss
//! equals the criterion called by hand on the cached encoding with the batch's token mask, bit for
//! bit; the mask comes from the batch; and a pair the cache cannot serve (another encoding, another
//! temperature, an endpoint it does not store) is an error when the distillation is built. (That
//! such a model has no `forward_t` is a compile error: tests/ui/dsl_cache_teacher_has_no_forward.rs.)

use std::path::PathBuf;

use distill::cache::{CacheError, Precision};
use distill::cache::{TeacherHash, TokenCache, TokenCacheSpec, TokenCacheWriter, TokenEncoding};
use distill::config::Config;
use distill::criterion::{Cosine, Criterion, Mse, SampledKl, TopKKl};
use distill::nn::VarStore;
use distill::prelude::*;
use distill::text::LlamaInputs;
use distill::text::{LlamaConfig, LlamaForCausalLM};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

const VOCAB: i64 = 61;
const T: i64 = 9;
const SEQUENCES: usize = 6;
const K: i64 = 5;
const TEMPERATURE: f64 = 2.0;

distill! {
    /// Token-level KD with the teacher read from a token cache.
    struct LmKd for LlamaForCausalLM => TokenCache {
        kd: student => teacher with TopKKl::new(2.0);
    }
}

distill! {
    /// The cache stores top-k at T = 2; this criterion reads it at T = 1.
    struct OtherTemperature for LlamaForCausalLM => TokenCache {
        kd: student => teacher with TopKKl::new(1.0);
    }
}

distill! {
    /// The cache stores top-k; this criterion reads the sampled encoding.
    struct OtherEncoding for LlamaForCausalLM => TokenCache {
        kd: student => teacher with SampledKl::new(2.0);
    }
}

distill! {
    /// A criterion that reads the teacher's logits as they are, which a token cache does not hold.
    struct PlainLogits for LlamaForCausalLM => TokenCache {
        kd: student => teacher with Mse;
    }
}

distill! {
    /// The shape of a language-model distillation: the distribution from the cache, and a hidden
    /// state the cache stores beside it.
    struct LmHintKd for LlamaForCausalLM => TokenCache {
        kd: student => teacher with TopKKl::new(2.0);
        h: student.model.layers[0] => teacher["model.layers.1"] with Cosine;
    }
}

distill! {
    /// A hidden state the cache does not store.
    struct NotStored for LlamaForCausalLM => TokenCache {
        kd: student => teacher with TopKKl::new(2.0);
        h: student.model.layers[0] => teacher["model.layers.2"] with Mse;
    }
}

distill! {
    /// A stored hidden state read as if it were a distribution.
    struct HiddenAsTopK for LlamaForCausalLM => TokenCache {
        h: student.model.layers[0] => teacher["model.layers.1"] with TopKKl::new(2.0);
    }
}

distill! {
    /// A criterion that reads an encoded distribution, over a teacher that runs.
    struct LiveSampled for LlamaForCausalLM => LlamaForCausalLM {
        kd: student => teacher with SampledKl::new(1.0);
    }
}

fn config(layers: i64) -> LlamaConfig {
    LlamaConfig {
        vocab_size: VOCAB,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 1e4,
        ..Default::default()
    }
}

/// Sequence `id`'s token ids: fixed, in range.
fn tokens(ids: &[usize]) -> Tensor {
    let flat: Vec<i64> = ids.iter().flat_map(|&id| (0..T).map(move |t| (id as i64 * 13 + t * 7) % VOCAB)).collect();
    Tensor::from_slice(&flat).view([ids.len() as i64, T])
}

/// Sequence `id` has `T − id % 3` real tokens, then padding.
fn mask(ids: &[usize]) -> Tensor {
    let flat: Vec<i64> = ids.iter().flat_map(|&id| (0..T).map(move |t| i64::from(t < T - (id % 3) as i64))).collect();
    Tensor::from_slice(&flat).view([ids.len() as i64, T])
}

/// The spec of a test cache of `teacher`'s top-k at T = 2 (f32 values) over the dataset `dataset`.
fn spec(teacher: &VarStore, dataset: &str) -> TokenCacheSpec {
    TokenCacheSpec {
        teacher: TeacherHash::of_var_store(teacher).unwrap(),
        tokenizer: TokenCacheSpec::tokenizer_identity(b"test tokens"),
        dataset: format!("{dataset}-{SEQUENCES}x{T}"),
        num_sequences: SEQUENCES,
        seq_len: T,
        vocab: VOCAB,
        encoding: TokenEncoding::top_k(K, TEMPERATURE).with_values(Precision::F32),
    }
}

/// An empty scratch folder for the cache `name` of this process.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-token-dsl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct Fixture {
    dir: PathBuf,
    cache: TokenCache,
    teacher: LlamaForCausalLM,
    student: LlamaForCausalLM,
    vs: VarStore,
    _teacher_vs: VarStore,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A random teacher's top-k (f32 values, T = 2) and its second layer's output written into a token
/// cache, and a smaller student.
fn fixture(name: &str) -> Fixture {
    tch::manual_seed(5);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = LlamaForCausalLM::new(teacher_vs.root(), &config(3)).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let student = LlamaForCausalLM::new(vs.root() / "student", &config(1)).unwrap();
    let dir = scratch_dir(name);
    TokenCacheWriter::new(&dir, spec(&teacher_vs, "test"))
        .shards(2)
        .hidden_state("model.layers.1", 32, Precision::F32)
        .write(2, |ids| {
            let logits = tch::no_grad(|| teacher.forward(&tokens(ids)))?;
            let hidden = tch::no_grad(|| teacher.forward_hidden(&LlamaInputs::new(&tokens(ids))))?;
            Ok((logits, Some(mask(ids)), vec![hidden.layers[1].shallow_clone()]))
        })
        .unwrap();
    let cache = TokenCache::open(&dir).unwrap();
    Fixture { dir, cache, teacher, student, vs, _teacher_vs: teacher_vs }
}

/// The error of a `new()` that must fail (the generated models have no `Debug` for `unwrap_err`).
fn error<M>(built: Result<M, DistillError>) -> DistillError {
    match built {
        Ok(_) => panic!("expected an error"),
        Err(error) => error,
    }
}

fn bits(loss: &Tensor) -> u32 {
    (loss.double_value(&[]) as f32).to_bits()
}

/// The top-k KL of the student's logits to the batch's cached top-k over its valid tokens, with the
/// criterion called by hand.
fn by_hand(f: &Fixture, ids: &[usize]) -> Tensor {
    let batch = f.cache.batch(ids).unwrap();
    let logits = f.student.forward(&tokens(ids)).unwrap();
    TopKKl::new(TEMPERATURE).f_loss_masked(&logits, batch.top_k().unwrap(), Some(batch.valid())).unwrap()
}

#[test]
fn a_distill_model_over_a_token_cache_computes_the_masked_top_k_kl() {
    let f = fixture("dsl");
    let kd = LmKd::new(f.vs.root() / "kd", &f.student, &f.cache).unwrap();
    let ids = [4usize, 1, 5];
    let batch = f.cache.batch(&ids).unwrap();
    let out = kd.forward_cached(&tokens(&ids), &batch, true).unwrap();
    let loss = out.f_loss().unwrap();
    let expected = by_hand(&f, &ids);
    assert_eq!(bits(&loss), bits(&expected), "{} vs {}", loss.double_value(&[]), expected.double_value(&[]));

    // The mask came from the batch: padded tokens (sequences 4 and 5 have them) are left out. Over
    // every token the loss differs.
    let logits = f.student.forward(&tokens(&ids)).unwrap();
    let unmasked = TopKKl::new(TEMPERATURE).f_loss_masked(&logits, batch.top_k().unwrap(), None).unwrap();
    assert_ne!(bits(&loss), bits(&unmasked));

    // The gradient reaches the student, as by hand.
    loss.backward();
    let grad = f.student.lm_head.ws.grad();
    assert!(grad.defined() && grad.abs().sum(Kind::Double).double_value(&[]) > 0.0);
}

#[test]
fn given_labels_replace_the_batch_mask() {
    let f = fixture("labels");
    let kd = LmKd::new(f.vs.root() / "kd", &f.student, &f.cache).unwrap();
    let ids = [2usize, 3];
    let batch = f.cache.batch(&ids).unwrap();
    // Labels that also leave out the first two tokens of every sequence (a prompt).
    let labels = mask(&ids).where_scalarother(&mask(&ids).ne(0), -100);
    let _ = labels.narrow(1, 0, 2).fill_(-100);
    let out = kd.forward_cached(&tokens(&ids), &batch, true).unwrap().with_targets(&labels);
    let logits = f.student.forward(&tokens(&ids)).unwrap();
    let expected =
        TopKKl::new(TEMPERATURE).f_loss_masked(&logits, batch.top_k().unwrap(), Some(&labels.ne(-100))).unwrap();
    assert_eq!(bits(&out.f_loss().unwrap()), bits(&expected));
}

#[test]
fn a_dry_run_from_a_token_batch_reports_the_pair() {
    let f = fixture("dry-run");
    let kd = LmKd::new(f.vs.root() / "kd", &f.student, &f.cache).unwrap();
    let ids = [0usize, 1];
    let report = kd.dry_run_cached(&tokens(&ids), &f.cache.batch(&ids).unwrap()).unwrap();
    assert_eq!(report.pairs.len(), 1);
    assert_eq!(report.pairs[0].student, [2, T, VOCAB]);
    assert_eq!(report.pairs[0].teacher, [2, T, 2 * K + 1]);
}

#[test]
fn token_ids_of_another_shape_than_the_batch_are_an_error() {
    let f = fixture("shape");
    let kd = LmKd::new(f.vs.root() / "kd", &f.student, &f.cache).unwrap();
    let batch = f.cache.batch(&[0, 1]).unwrap();
    let err = kd.forward_cached(&tokens(&[0, 1, 2]), &batch, true).unwrap_err();
    assert!(matches!(err, DistillError::CacheMismatch { .. }), "{err}");
    assert!(err.to_string().contains("token ids"), "{err}");
}

#[test]
fn a_pair_the_cache_cannot_serve_is_an_error_at_new() {
    let f = fixture("new");
    let temperature = error(OtherTemperature::new(f.vs.root() / "a", &f.student, &f.cache));
    let text = temperature.to_string();
    assert!(matches!(temperature, DistillError::CacheMismatch { .. }), "{text}");
    assert!(text.contains("`kd`") && text.contains("temperature 2") && text.contains("temperature 1"), "{text}");

    let encoding = error(OtherEncoding::new(f.vs.root() / "b", &f.student, &f.cache));
    assert!(encoding.to_string().contains("sampled tokens at temperature 2"), "{encoding}");

    let plain = error(PlainLogits::new(f.vs.root() / "c", &f.student, &f.cache));
    assert!(plain.to_string().contains("the teacher's tensor as it is"), "{plain}");

    let missing = error(NotStored::new(f.vs.root() / "d", &f.student, &f.cache));
    assert!(matches!(missing, DistillError::CacheMismatch { .. }), "{missing}");
    let text = missing.to_string();
    assert!(text.contains("`model.layers.2`") && text.contains("`model.layers.1`"), "{text}");

    let as_top_k = error(HiddenAsTopK::new(f.vs.root() / "e", &f.student, &f.cache));
    assert!(as_top_k.to_string().contains("the teacher's tensor as it is (a hidden state)"), "{as_top_k}");
}

#[test]
fn the_mapping_front_end_reads_the_same_batch() {
    let f = fixture("mapping");
    let mut mapping = Mapping::new(&f.student, &f.cache);
    mapping.add("", "", TopKKl::new(TEMPERATURE)).unwrap();
    let model = distill::distill(&f.student, &f.cache, mapping);
    let ids = [5usize, 0];
    let batch = f.cache.batch(&ids).unwrap();
    let out = model.forward_cached(&tokens(&ids), &batch, true).unwrap();
    let (student, teacher, criterion) = out.pairs().next().unwrap();
    let labels = distill::cache::TeacherBatch::token_labels(&batch).unwrap().unwrap();
    let loss = criterion.f_loss_with_targets(student, teacher, Some(&labels)).unwrap();
    assert_eq!(bits(&loss), bits(&by_hand(&f, &ids)));

    // Criteria as payloads make a `Distillation`: the token mask reaches the pair as its labels.
    let mut mapping = Mapping::new(&f.student, &f.cache);
    mapping.add("", "", TopKKl::new(TEMPERATURE)).unwrap();
    let distillation = Distillation::from_mapping(&f.student, mapping).unwrap();
    let out = distillation.forward_cached(&tokens(&ids), &batch, true).unwrap();
    assert_eq!(bits(&out.f_loss().unwrap()), bits(&by_hand(&f, &ids)));

    let mut wrong = Mapping::new(&f.student, &f.cache);
    wrong.add("", "", TopKKl::new(1.0)).unwrap();
    let err = Distillation::from_mapping(&f.student, wrong).unwrap_err();
    assert!(matches!(err, DistillError::CacheMismatch { .. }), "{err}");
}

#[test]
fn a_config_over_a_token_cache_gives_the_same_loss_and_checks_the_encoding() {
    let f = fixture("config");
    let text = |temperature: f64| {
        format!("[[pair]]\nname = \"kd\"\nstudent = \"\"\nteacher = \"\"\ncriterion = {{ kind = \"TopKKl\", temperature = {temperature:?} }}\n")
    };
    let config = Config::parse(&text(TEMPERATURE), "kd.toml").unwrap();
    let model = config.distill(&(f.vs.root() / "cfg"), &f.student, &f.cache).unwrap();
    let ids = [3usize, 4];
    let batch = f.cache.batch(&ids).unwrap();
    let out = model.forward_cached(&tokens(&ids), &batch, true).unwrap();
    // The batch's token mask reached the pair as its labels.
    let labels = distill::cache::TeacherBatch::token_labels(&batch).unwrap().unwrap();
    assert!(out.get("kd").unwrap().targets().unwrap().equal(&labels));
    let losses = out.f_losses().unwrap();
    assert_eq!(bits(&losses.total()), bits(&by_hand(&f, &ids)));

    let err = Config::parse(&text(1.0), "kd.toml")
        .unwrap()
        .distill(&(f.vs.root() / "bad"), &f.student, &f.cache)
        .unwrap_err();
    let shown = format!("{err:?}");
    assert!(shown.contains("temperature 2") && shown.contains("temperature 1"), "{shown}");
}

/// `[B, T, …]` → the valid tokens `[N, …]` of `ids`, in batch order.
fn valid_tokens(tensor: &Tensor, ids: &[usize]) -> Tensor {
    let rows = mask(ids).view([-1]).nonzero().view([-1]);
    tensor.flatten(0, 1).index_select(0, &rows)
}

#[test]
fn a_stored_hidden_state_pairs_over_the_valid_tokens() {
    let f = fixture("hidden");
    let kd = LmHintKd::new(f.vs.root() / "kd", &f.student, &f.cache).unwrap();
    let ids = [5usize, 3, 1];
    let batch = f.cache.batch(&ids).unwrap();
    let out = kd.forward_cached(&tokens(&ids), &batch, true).unwrap();
    let losses = out.f_losses().unwrap();
    assert_eq!(bits(&losses.kd), bits(&by_hand(&f, &ids)));

    // The hidden pair: the student's first layer and the stored teacher layer, over the valid
    // tokens only, as Cosine by hand.
    let live = f.teacher.forward_hidden(&LlamaInputs::new(&tokens(&ids))).unwrap().layers[1].shallow_clone();
    let stored = batch.hidden("model.layers.1").unwrap();
    let valid = mask(&ids).unsqueeze(-1).ne(0);
    // The cache was written in batches of two consecutive sequences, this is one batch of three:
    // libtorch may block the matrix products differently, so the two agree to f32 rounding of a few
    // layers of O(1) values, not bit for bit.
    let difference = (stored - live.where_scalarother(&valid, 0.0)).abs().max().double_value(&[]);
    assert!(difference < 1e-4, "stored = live at the valid tokens, zeros elsewhere: {difference}");
    let student_layer = f.student.forward_hidden(&LlamaInputs::new(&tokens(&ids))).unwrap().layers[0].shallow_clone();
    let n = mask(&ids).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(out.h.student.size(), [n, 32]);
    assert_eq!(out.h.teacher.size(), [n, 32]);
    let expected = Cosine.f_loss(&valid_tokens(&student_layer, &ids), &valid_tokens(stored, &ids)).unwrap();
    assert_eq!(bits(&losses.h), bits(&expected));
    assert_eq!(batch.hidden("model.layers.0"), None);
}

#[test]
fn hidden_states_are_part_of_the_cache_identity_and_checked_when_written() {
    let f = fixture("identity");
    assert_eq!(f.cache.manifest().hidden.len(), 1);
    // The distribution's bytes per token, plus 32 f32 values of the hidden state.
    let without = f.cache.manifest().encoding.bytes_per_token(f.cache.manifest().ids);
    assert_eq!(f.cache.manifest().bytes_per_token(), without + 32 * 4);

    // The same cache without the hidden state is another cache: a mismatch, nothing written.
    let spec = TokenCacheSpec {
        teacher: TeacherHash::from_text(f.cache.manifest().teacher_hash.as_str()),
        tokenizer: f.cache.manifest().tokenizer.clone(),
        dataset: f.cache.manifest().dataset.clone(),
        num_sequences: SEQUENCES,
        seq_len: T,
        vocab: VOCAB,
        encoding: f.cache.manifest().encoding,
    };
    let err = TokenCacheWriter::new(&f.dir, spec.clone())
        .shards(2)
        .write(2, |_| -> distill::Result<Tensor> { unreachable!() })
        .unwrap_err();
    assert!(
        err.to_string().contains("the list of stored hidden states is [\"model.layers.1\"] in the cache, [] here"),
        "{err}"
    );

    // A batch with the wrong number of hidden states, or of the wrong width, is an error.
    let other = scratch_dir("count");
    let writer = TokenCacheWriter::new(&other, spec).hidden_state("model.layers.1", 32, Precision::F16);
    let logits = Tensor::zeros([2, T, VOCAB], (Kind::Float, Device::Cpu));
    let none = writer.write(2, |_| Ok((logits.shallow_clone(), None, Vec::new()))).unwrap_err();
    assert!(none.to_string().contains("stores 1 hidden states"), "{none}");
    let narrow = Tensor::zeros([2, T, 16], (Kind::Float, Device::Cpu));
    let err = writer.write(2, |_| Ok((logits.shallow_clone(), None, vec![narrow.shallow_clone()]))).unwrap_err();
    assert!(err.to_string().contains("must be [2, 9, 32]"), "{err}");

    // A hidden value that f16 would store as infinity (65520 rounds up; 65504 is f16's largest) is
    // refused with the value, where every loss on the stored state would be NaN; one that fits is not.
    let wide = |value: f64| {
        Tensor::zeros([2, T, 32], (Kind::Float, Device::Cpu)).fill_(0.5).index_fill(
            2,
            &Tensor::from_slice(&[7i64]),
            value,
        )
    };
    let err = writer.write(2, |_| Ok((logits.shallow_clone(), None, vec![wide(-70000.0)]))).unwrap_err();
    assert!(
        matches!(&err, DistillError::Cache(CacheError::HiddenOverflowsF16 { path, value }) if path == "model.layers.1" && *value == -70000.0),
        "{err}"
    );
    writer.write(2, |_| Ok((logits.shallow_clone(), None, vec![wide(65504.0)]))).unwrap();
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn an_encoded_criterion_over_a_teacher_that_runs_is_an_error_not_a_misread() {
    // V = 63 = 3 · 21: raw logits `[B, T, 63]` have the shape of a packed sampled encoding of 21
    // tokens, so only the encoding, not the shape, tells them apart.
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let odd = LlamaConfig { vocab_size: 63, ..config(1) };
    let student = LlamaForCausalLM::new(vs.root() / "s", &odd).unwrap();
    let teacher = LlamaForCausalLM::new(vs.root() / "t", &odd).unwrap();
    let kd = LiveSampled::new(vs.root() / "kd", &student, &teacher).unwrap();
    let ids = Tensor::from_slice2(&[[1i64, 5, 9, 2]]);
    let err = kd.forward_t(&ids, true).err().unwrap();
    assert!(matches!(&err, DistillError::InvalidCriterion { pair, .. } if pair == "kd"), "{err}");
    assert!(err.to_string().contains("sampled tokens at temperature 1") && err.to_string().contains("forward_cached"));
    assert!(kd.dry_run(&ids).is_err());
}

/// Two documents packed in each row: the first 4 tokens of one, the rest of the next.
fn documents(ids: &[usize]) -> Tensor {
    let flat: Vec<i64> = ids.iter().flat_map(|&id| (0..T).map(move |t| 2 * id as i64 + i64::from(t >= 4))).collect();
    Tensor::from_slice(&flat).view([ids.len() as i64, T])
}

#[test]
fn a_student_run_by_the_caller_sees_the_packed_documents_the_teacher_saw() {
    // The cache holds a teacher that attended within each document. The teacher itself as the
    // student, run on the same documents, reads its own distribution back (a KL of rounding only);
    // run on the token ids alone, the second document's tokens attend across the boundary.
    tch::manual_seed(9);
    let vs = VarStore::new(Device::Cpu);
    let model = LlamaForCausalLM::new(vs.root() / "model", &config(2)).unwrap();
    // Logits of a random initialisation are near 0, every distribution near uniform; ten times
    // larger, the distributions are peaked enough for attention across documents to show.
    tch::no_grad(|| {
        let _ = model.lm_head.ws.shallow_clone().f_mul_scalar_(10.0).unwrap();
    });
    let dir = scratch_dir("packed");
    TokenCacheWriter::new(&dir, spec(&vs, "packed"))
        .write(2, |ids| {
            let (ids, documents) = (tokens(ids), documents(ids));
            let logits = tch::no_grad(|| model.forward_inputs(&LlamaInputs::new(&ids).document_ids(&documents)))?;
            Ok((logits, None))
        })
        .unwrap();
    let cache = TokenCache::open(&dir).unwrap();
    let kd = LmKd::new(vs.root() / "kd", &model, &cache).unwrap();
    let ids = [3usize, 0, 5];
    let (input_ids, document_ids) = (tokens(&ids), documents(&ids));
    let batch = cache.batch(&ids).unwrap();
    let run = || model.forward_inputs(&LlamaInputs::new(&input_ids).document_ids(&document_ids));

    let by = kd.forward_cached_by(&input_ids, &batch, true, run).unwrap().f_loss().unwrap();
    let logits = run().unwrap();
    let expected =
        TopKKl::new(TEMPERATURE).f_loss_masked(&logits, batch.top_k().unwrap(), Some(batch.valid())).unwrap();
    assert_eq!(bits(&by), bits(&expected), "the criterion on what `forward` returned, with the batch's mask");
    let plain = kd.forward_cached(&input_ids, &batch, true).unwrap().f_loss().unwrap();
    let (by, plain) = (by.double_value(&[]), plain.double_value(&[]));
    // The cached log-probabilities are the teacher's in f32, the student's are recomputed from the
    // same logits along another path (logsumexp, gather): a difference of a few f32 ulps of values
    // of order 10, ~1e-6 per bucket, and a KL of such differences far below 1e-5 (2.5e-8 measured).
    // Across the boundary the KL is of the order of the distributions' spread (3.5e-3 measured).
    assert!(by.abs() < 1e-5, "the teacher reads its own documents back: KL {by}");
    assert!(plain > 1e-4, "across the boundary the distribution differs: KL {plain} vs {by}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_student_run_by_the_caller_is_captured_as_its_own_forward_would_be() {
    let f = fixture("by");
    let kd = LmHintKd::new(f.vs.root() / "kd", &f.student, &f.cache).unwrap();
    let ids = [2usize, 4];
    let (input_ids, batch) = (tokens(&ids), f.cache.batch(&ids).unwrap());
    let own = kd.forward_cached(&input_ids, &batch, true).unwrap().f_losses().unwrap();
    let by = kd
        .forward_cached_by(&input_ids, &batch, true, || f.student.forward_inputs(&LlamaInputs::new(&input_ids)))
        .unwrap()
        .f_losses()
        .unwrap();
    // The hidden pair reads the student's first layer, captured during the caller's forward.
    assert_eq!((bits(&by.kd), bits(&by.h)), (bits(&own.kd), bits(&own.h)));

    // The ENOT-shaped model of a `Mapping` hands its payloads the same captures.
    let mut mapping = Mapping::new(&f.student, &f.cache);
    mapping.add("model.layers.0", "model.layers.1", Cosine).unwrap();
    let model = distill::distill(&f.student, &f.cache, mapping);
    let own = model.forward_cached(&input_ids, &batch, true).unwrap();
    let by = model
        .forward_cached_by(&input_ids, &batch, || f.student.forward_inputs(&LlamaInputs::new(&input_ids)))
        .unwrap();
    let ((own_student, own_teacher, _), (by_student, by_teacher, _)) =
        (own.pairs().next().unwrap(), by.pairs().next().unwrap());
    assert!(own_student.equal(by_student) && own_teacher.equal(by_teacher));
    assert_eq!(by_student.size(), [mask(&ids).sum(Kind::Int64).int64_value(&[]), 32], "the valid tokens");

    // A `forward` that does not run the student leaves its layer uncaptured: an error, not a guess.
    let err = kd
        .forward_cached_by(&input_ids, &batch, true, || {
            Ok::<_, DistillError>(Tensor::zeros([2, T, VOCAB], (Kind::Float, Device::Cpu)))
        })
        .err()
        .unwrap();
    assert!(err.to_string().contains("`model.layers.0` was not recorded during the forward pass"), "{err}");
    // What `forward` fails with is the error.
    let err = kd
        .forward_cached_by(&input_ids, &batch, true, || {
            f.student.forward_inputs(&LlamaInputs::new(&tokens(&[0, 1, 2])))
        })
        .err()
        .unwrap();
    assert!(!err.to_string().is_empty());
}
