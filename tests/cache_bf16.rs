//! bf16 storage (`Precision::Bf16`): f32's range with 8 significant bits. What a cache stores in
//! bf16 reads back within one bf16 rounding of what an f32 cache of the same teacher stores — the
//! token cache's distributions and hidden states, the image cache's top-k log-probabilities —
//! values past bf16's range are refused, and manifests name it `"bf16"` beside the older names.

use std::path::{Path, PathBuf};

use distill::cache::{
    CacheError, CacheWriter, Encoding, Precision, StoredHidden, TeacherCache, TeacherHash, TokenCache, TokenCacheSpec,
    TokenCacheWriter, TokenEncoding,
};
use distill::prelude::*;
use distill::DistillError;
use tch::{Device, Kind, Tensor};

/// bf16 keeps 8 significant bits: round-to-nearest moves a value `x` of f32's normal range
/// (`|x| ≥ 2⁻¹²⁶`) by at most half a unit in its last place, `2⁻⁸·|x|`, and one below it by at most
/// half the spacing of bf16's subnormals, `2⁻¹³⁴`.
const U_BF16: f64 = 1.0 / 256.0;

/// f16's unit roundoff, `2⁻¹¹`: a relative error above it shows fewer significant bits than f16's.
const U_F16: f64 = 1.0 / 2048.0;

/// Whether `stored` is within one bf16 rounding of `written` everywhere (infinities equal), and
/// the largest relative error over the finite values of magnitude 1e-30 and more.
fn one_bf16_rounding(stored: &Tensor, written: &Tensor) -> (bool, f64) {
    let (s, w) = (stored.to_kind(Kind::Double), written.to_kind(Kind::Double));
    let finite = w.isfinite();
    if !s.isfinite().equal(&finite)
        || !s.masked_select(&finite.logical_not()).equal(&w.masked_select(&finite.logical_not()))
    {
        return (false, f64::INFINITY);
    }
    let (s, w) = (s.masked_select(&finite), w.masked_select(&finite));
    let error = (&s - &w).abs();
    let bound = (w.abs() * U_BF16).clamp_min(2f64.powi(-134));
    let within = error.le_tensor(&bound).all().int64_value(&[]) == 1;
    let relative = (error / w.abs().clamp_min(1e-30)).max().double_value(&[]);
    (within, relative)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-bf16-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

// ---- the token cache ---------------------------------------------------------------------------

const SEQUENCES: usize = 6;
const T: i64 = 5;
const V: i64 = 40;
const K: i64 = 5;
const WIDTH: i64 = 8;

fn spec(encoding: TokenEncoding) -> TokenCacheSpec {
    TokenCacheSpec {
        teacher: TeacherHash::from_text("sha256:a-teacher"),
        tokenizer: TokenCacheSpec::tokenizer_identity(b"a tokenizer"),
        dataset: "a dataset".to_owned(),
        num_sequences: SEQUENCES,
        seq_len: T,
        vocab: V,
        encoding,
    }
}

/// Logits `[B, T, V]` of each sequence id alone, with a sharp peak per sequence.
fn logits(ids: &[usize]) -> Tensor {
    let rows: Vec<Tensor> = ids
        .iter()
        .map(|&id| {
            let base = Tensor::arange(T * V, (Kind::Float, Device::Cpu)).view([T, V]);
            ((base * 0.37 + id as f64 * 1.3).sin() * 4.0).narrow(1, 0, V)
        })
        .collect();
    Tensor::stack(&rows, 0)
}

/// Hidden states `[B, T, WIDTH]` of magnitudes from 1e-30 to 1e30 — far past f16's range — and one
/// of 3.0e38, below bf16's largest value.
fn hidden(ids: &[usize]) -> Tensor {
    let n = ids.len() as i64 * T * WIDTH;
    let index = Tensor::arange(n, (Kind::Double, Device::Cpu));
    let exponent = index.remainder(13.0) * 5.0 - 30.0;
    let values = (&index + ids[0] as f64).sin() * (exponent * std::f64::consts::LN_10).exp();
    let values = values.to_kind(Kind::Float).view([ids.len() as i64, T, WIDTH]);
    let _ = values.get(0).get(0).narrow(0, 3, 1).fill_(3.0e38);
    values
}

fn mask(ids: &[usize]) -> Tensor {
    let rows: Vec<i64> = ids.iter().flat_map(|&id| (0..T).map(move |t| i64::from(t < T - (id % 3) as i64))).collect();
    Tensor::from_slice(&rows).view([ids.len() as i64, T])
}

/// A cache of `encoding`, storing the hidden state `m` in `hidden_values`.
fn token_cache(dir: &Path, encoding: TokenEncoding, hidden_values: Precision) -> TokenCache {
    TokenCacheWriter::new(dir, spec(encoding))
        .shards(2)
        .hidden_state("m", WIDTH, hidden_values)
        .write(2, |ids| Ok((logits(ids), Some(mask(ids)), vec![hidden(ids)])))
        .unwrap();
    TokenCache::open(dir).unwrap()
}

#[test]
fn a_token_cache_in_bf16_reads_within_one_bf16_rounding_of_the_f32_cache() {
    let ids = [4usize, 0, 5, 2];
    for encoding in [TokenEncoding::top_k(K, 1.5), TokenEncoding::sampled(6, 1.5, 1.25, 9)] {
        let (exact_dir, bf16_dir) = (temp_dir("token-f32"), temp_dir("token-bf16"));
        let exact = token_cache(&exact_dir, encoding.with_values(Precision::F32), Precision::F32);
        let bf16 = token_cache(&bf16_dir, encoding.with_values(Precision::Bf16), Precision::Bf16);
        let (exact, stored) = (exact.batch(&ids).unwrap(), bf16.batch(&ids).unwrap());
        assert!(stored.valid().equal(exact.valid()));
        let mut largest = 0f64;
        let mut check = |what: &str, stored: &Tensor, exact: &Tensor| {
            assert_eq!(stored.kind(), Kind::Float, "{what}: read back as f32");
            let (within, relative) = one_bf16_rounding(stored, exact);
            assert!(within, "{encoding:?} {what}: beyond one bf16 rounding (relative {relative:e})");
            largest = largest.max(relative);
        };
        match encoding {
            TokenEncoding::TopK { .. } => {
                let (s, e) = (stored.top_k().unwrap(), exact.top_k().unwrap());
                assert!(s.ids.equal(&e.ids), "the ids are exact");
                assert!(s.tail.equal(&e.tail), "the tail is f32 whatever the values' precision");
                check("log-probabilities", &s.log_probs, &e.log_probs);
            }
            TokenEncoding::Sampled { .. } => {
                let (s, e) = (stored.sampled().unwrap(), exact.sampled().unwrap());
                assert!(s.ids.equal(&e.ids), "the ids are exact");
                check("log-probabilities", &s.log_probs, &e.log_probs);
                check("weights", &s.weights, &e.weights);
            }
        }
        check("hidden state", stored.hidden("m").unwrap(), exact.hidden("m").unwrap());
        // Rounded to 8 significant bits, not stored in f32 nor in f16's 11.
        assert!(largest > U_F16, "{encoding:?}: the largest relative error is {largest:e}");
        let hidden = stored.hidden("m").unwrap();
        assert!((hidden.abs().max().double_value(&[]) - 3.0e38).abs() <= 3.0e38 * U_BF16, "3e38 is held");
        assert!(hidden.abs().max().double_value(&[]) > 1e30, "far past f16's range");

        // The manifest names it, the shards hold BF16 tensors of 2 bytes a value.
        let manifest = std::fs::read_to_string(bf16_dir.join("token-manifest.json")).unwrap();
        assert!(manifest.matches("\"values\": \"bf16\"").count() == 2, "{manifest}");
        let bytes = bf16.manifest().bytes_per_token();
        let f32_bytes = TokenCache::open(&exact_dir).unwrap().manifest().bytes_per_token();
        // Every value stored in the precision takes 2 bytes instead of 4 (the tail stays f32).
        let in_precision = match encoding {
            TokenEncoding::TopK { .. } => K + WIDTH,
            _ => 2 * 6 + WIDTH,
        };
        assert_eq!(f32_bytes - bytes, 2 * in_precision as usize);
        let shard = std::fs::read(bf16_dir.join("shard-00000-of-00002.safetensors")).unwrap();
        let header_len = u64::from_le_bytes(shard[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8_lossy(&shard[8..8 + header_len]);
        assert!(header.contains("\"BF16\"") && !header.contains("\"F16\""), "{header}");
        let _ = std::fs::remove_dir_all(&exact_dir);
        let _ = std::fs::remove_dir_all(&bf16_dir);
    }
}

/// Hidden states of 0.5 but one `value`, for sequences `ids`.
fn one_hidden_value(ids: &[usize], value: f32) -> Tensor {
    let hidden = Tensor::full([ids.len() as i64, T, WIDTH], 0.5, (Kind::Float, Device::Cpu));
    let _ = hidden.get(0).get(1).narrow(0, 2, 1).fill_(f64::from(value));
    hidden
}

#[test]
fn bf16_holds_up_to_its_largest_value_and_refuses_what_would_round_to_infinity() {
    // bf16's largest value is (2 − 2⁻⁷)·2¹²⁷ = 255·2¹²⁰; halfway to 2¹²⁸, 511·2¹¹⁹ (an f32),
    // rounds to even, 2¹²⁸: infinity. The f32 just below it rounds down to the largest value.
    let largest = 255.0 * 2f64.powi(120);
    let halfway = 511.0 * 2f32.powi(119);
    let below = f32::from_bits(halfway.to_bits() - 1);
    let dir = temp_dir("token-overflow");
    let writer =
        TokenCacheWriter::new(&dir, spec(TokenEncoding::top_k(K, 1.5))).hidden_state("m", WIDTH, Precision::Bf16);
    for value in [halfway, -halfway, f32::MAX] {
        let error = writer.write(3, |ids| Ok((logits(ids), None, vec![one_hidden_value(ids, value)]))).unwrap_err();
        assert!(
            matches!(&error, DistillError::Cache(CacheError::ValueOverflowsBf16 { what, value: v })
                if what == "the teacher hidden state `m`" && *v == f64::from(value)),
            "{error}"
        );
        assert!(error.to_string().contains("Precision::F32"), "{error}");
    }
    writer.write(3, |ids| Ok((logits(ids), None, vec![one_hidden_value(ids, below)]))).unwrap();
    let batch = TokenCache::open(&dir).unwrap().batch(&[3]).unwrap();
    let stored = batch.hidden("m").unwrap().double_value(&[0, 1, 2]);
    assert_eq!(stored, largest);
    let _ = std::fs::remove_dir_all(&dir);

    // The f16 overflows name bf16 as a way out.
    let hidden = CacheError::HiddenOverflowsF16 { path: "m".to_owned(), value: 7e4 }.to_string();
    assert!(hidden.contains("hidden_state(\"m\", width, Precision::Bf16)"), "{hidden}");
    let weight = CacheError::WeightOverflowsF16 { largest: 7e4 }.to_string();
    assert!(weight.contains("Precision::Bf16"), "{weight}");
}

#[test]
fn manifests_name_bf16_and_the_names_written_before_it_still_parse() {
    for (name, precision) in [("f32", Precision::F32), ("f16", Precision::F16), ("bf16", Precision::Bf16)] {
        assert_eq!(serde_json::to_string(&precision).unwrap(), format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<Precision>(&format!("\"{name}\"")).unwrap(), precision);
    }
    // As manifests wrote them before bf16.
    let old: TokenEncoding = serde_json::from_str(r#"{"topk":{"k":4,"temperature":1.0,"values":"f16"}}"#).unwrap();
    assert_eq!(old, TokenEncoding::top_k(4, 1.0));
    let hidden: StoredHidden = serde_json::from_str(r#"{"path":"m","width":3,"values":"f32"}"#).unwrap();
    assert_eq!(hidden.values, Precision::F32);
    let encoding: Encoding = serde_json::from_str(r#"{"topk":{"k":5,"temperature":4.0,"values":"f16"}}"#).unwrap();
    assert_eq!(encoding, Encoding::top_k(5, 4.0, Precision::F16));
    let bf16 = serde_json::to_string(&Encoding::top_k(5, 4.0, Precision::Bf16)).unwrap();
    assert_eq!(bf16, r#"{"topk":{"k":5,"temperature":4.0,"values":"bf16"}}"#);
}

// ---- the image cache ---------------------------------------------------------------------------

/// A teacher whose output is its input: the cache stores the logits it is given.
#[derive(Debug, Distillable)]
struct Identity {
    #[distill(skip)]
    _classes: i64,
}

impl ModuleT for Identity {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.shallow_clone()
    }
}

/// Writes the logits `inputs` (`[N, C]`) into `dir` with the teacher's output stored as `encoding`.
fn image_cache(dir: &Path, encoding: Encoding, inputs: &Tensor) -> distill::Result<TeacherCache> {
    let (student, teacher) = (Identity { _classes: 0 }, Identity { _classes: 0 });
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("", "", "logits").unwrap();
    let kd = distill(&student, &teacher, mapping);
    CacheWriter::new(dir, TeacherHash::from_text("identity")).batch_size(3).endpoint_encoding("", encoding).write(
        kd.distillation(),
        &teacher,
        inputs,
    )?;
    TeacherCache::open(dir)
}

#[test]
fn image_cache_top_k_log_probabilities_in_bf16_read_within_one_bf16_rounding() {
    let logits = (Tensor::arange(8 * 7, (Kind::Float, Device::Cpu)).view([8, 7]) * 0.9).sin() * 6.0;
    let (exact_dir, bf16_dir) = (temp_dir("image-f32"), temp_dir("image-bf16"));
    let exact = image_cache(&exact_dir, Encoding::top_k(3, 2.0, Precision::F32), &logits).unwrap();
    let bf16 = image_cache(&bf16_dir, Encoding::top_k(3, 2.0, Precision::Bf16), &logits).unwrap();
    let ids = Tensor::from_slice(&[5i64, 1, 6, 0]);
    let exact = exact.batch(&ids, 0).unwrap().endpoint("").unwrap().copy();
    let stored = bf16.batch(&ids, 0).unwrap().endpoint("").unwrap().copy();
    assert_eq!(stored.size(), [4, 2, 3]);
    assert!(stored.select(1, 1).equal(&exact.select(1, 1)), "the class indices are exact");
    let (within, relative) = one_bf16_rounding(&stored.select(1, 0), &exact.select(1, 0));
    assert!(within && relative > U_F16, "relative error {relative:e}");
    assert_eq!(bf16.manifest().bytes_per_sample_view(), 3 * (2 + 4), "three bf16 values, three i32 indices");
    let manifest = std::fs::read_to_string(bf16_dir.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"values\": \"bf16\""), "{manifest}");
    let _ = std::fs::remove_dir_all(&exact_dir);
    let _ = std::fs::remove_dir_all(&bf16_dir);

    // Values stored as bf16 past its range are refused, naming the endpoint.
    let dir = temp_dir("image-overflow");
    let loud = logits.copy();
    let _ = loud.get(4).narrow(0, 2, 1).fill_(-3.4e38);
    let error = image_cache(&dir, Encoding::Bf16, &loud).map(drop).unwrap_err();
    assert!(
        matches!(&error, DistillError::Cache(CacheError::ValueOverflowsBf16 { what, value })
            if what == "the teacher's own output" && *value == f64::from(-3.4e38f32)),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
